-- The rules for a service's meeting platform and settings, in the database, so that an app that
-- writes `services` itself follows the same rules as PUT /api/services/{id}/meeting (which calls
-- the same function).
--
-- The database cannot know what the deployment offers (which platforms are configured, which
-- meeting options each honours): every daemon publishes it at start-up into meetingd.platforms,
-- one row per platform meetingd knows, from the same data GET /api/platforms answers. Until a
-- daemon has published, a named platform is refused with `platforms_unpublished`.

-- Every platform meetingd knows, as the last daemon to start published it.
CREATE TABLE meetingd.platforms (
  platform       TEXT PRIMARY KEY,              -- services.meeting_platform's value
  display_name   TEXT NOT NULL,
  needs_account  BOOLEAN NOT NULL,              -- a provider must connect an account first
  offered        BOOLEAN NOT NULL,              -- meetings are made on it in this deployment
  options        TEXT[] NOT NULL DEFAULT '{}',  -- the meeting options it honours (GET /api/platforms)
  -- Every option it honours, with the values it honours: {"recording": ["none", "cloud"], ...}.
  -- An option absent here, or set to a value not listed, is `unsupported_option`.
  option_values  JSONB NOT NULL DEFAULT '{}',
  connect_path   TEXT,                          -- POST here to connect an account (platforms with accounts)
  fallback       BOOLEAN NOT NULL DEFAULT false,-- bookings asking for an unusable platform get this one
  published_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
  published_by   TEXT NOT NULL                  -- 'daemon:<instance>'
);

-- What a platform selector offers.
CREATE VIEW meetingd.offered_platforms AS
  SELECT platform, display_name, needs_account, options, option_values, connect_path, fallback, published_at
    FROM meetingd.platforms WHERE offered;

-- Whether `p_settings` (services.meeting_settings) is acceptable, by exactly the rules of the
-- daemon's settings.rs (`settings::parse`), checked in the same order with the same sentences:
-- NULL key and message when it is; else the key at fault ('settings' for the value as a whole)
-- and the sentence. A test compares the two on generated settings, as the daemon reads them back.
CREATE FUNCTION meetingd.meeting_settings_error(p_settings JSONB, OUT key TEXT, OUT message TEXT)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  c_keys CONSTANT TEXT[] := ARRAY['title', 'description', 'waiting_room', 'recording', 'passcode', 'mute_on_entry'];
  v_unknown TEXT[];
  v_text    TEXT;
  v_rest    TEXT;
  v_at      INTEGER;
  v_name    TEXT;
  v_key     TEXT;
  v_limit   INTEGER;
BEGIN
  IF p_settings IS NULL OR jsonb_typeof(p_settings) = 'null' THEN
    RETURN;
  END IF;
  IF jsonb_typeof(p_settings) <> 'object' THEN
    key := 'settings';
    message := 'The service''s meeting settings must be a JSON object.';
    RETURN;
  END IF;
  -- In jsonb's order of keys, as the daemon reads stored settings.
  SELECT array_agg(k ORDER BY n) INTO v_unknown
    FROM jsonb_object_keys(p_settings) WITH ORDINALITY AS o(k, n) WHERE k <> ALL (c_keys);
  IF v_unknown IS NOT NULL THEN
    key := v_unknown[1];
    message := format('The service''s meeting settings have unknown keys (%s); the keys allowed are %s.',
                      array_to_string(v_unknown, ', '), array_to_string(c_keys, ', '));
    RETURN;
  END IF;
  -- The texts: the title (then its template), then the description.
  FOREACH v_key IN ARRAY ARRAY['title', 'description'] LOOP
    v_limit := CASE v_key WHEN 'title' THEN 300 ELSE 8000 END;
    CASE jsonb_typeof(p_settings -> v_key)
      WHEN 'null' THEN CONTINUE;
      WHEN 'string' THEN
        v_text := p_settings ->> v_key;
        IF char_length(v_text) > v_limit THEN
          key := v_key;
          message := format('The meeting setting "%s" is longer than %s characters.', v_key, v_limit);
          RETURN;
        END IF;
      ELSE
        IF p_settings ? v_key THEN
          key := v_key;
          message := format('The meeting setting "%s" must be text.', v_key);
          RETURN;
        END IF;
        CONTINUE;
    END CASE;
    IF v_key = 'title' THEN
      v_rest := v_text;
      LOOP
        v_at := strpos(v_rest, '{');
        EXIT WHEN v_at = 0;
        v_rest := substr(v_rest, v_at + 1);
        v_at := strpos(v_rest, '}');
        IF v_at = 0 THEN
          key := 'title';
          message := 'The meeting title template has a "{" without a closing "}".';
          RETURN;
        END IF;
        v_name := substr(v_rest, 1, v_at - 1);
        IF v_name <> ALL (ARRAY['service', 'customer', 'provider']) THEN
          key := 'title';
          message := format('The meeting title template uses {%s}; the placeholders available are {service}, {customer} and {provider}.', v_name);
          RETURN;
        END IF;
        v_rest := substr(v_rest, v_at + 1);
      END LOOP;
    END IF;
  END LOOP;
  -- The meeting options: recording, then the flags.
  IF jsonb_typeof(p_settings -> 'recording') <> 'null'
     AND (jsonb_typeof(p_settings -> 'recording') <> 'string'
          OR (p_settings ->> 'recording') NOT IN ('none', 'local', 'cloud')) THEN
    key := 'recording';
    message := 'The meeting setting "recording" must be "none", "local" or "cloud".';
    RETURN;
  END IF;
  FOREACH v_key IN ARRAY ARRAY['waiting_room', 'passcode', 'mute_on_entry'] LOOP
    IF p_settings ? v_key AND jsonb_typeof(p_settings -> v_key) NOT IN ('null', 'boolean') THEN
      key := v_key;
      message := format('The meeting setting "%s" must be true or false.', v_key);
      RETURN;
    END IF;
  END LOOP;
END $$;

-- Why service `p_service` may not have meeting platform `p_platform` (NULL or blank: none) and
-- settings `p_settings`: no row when it may; else one row, the first refusal in the order
-- PUT /api/services/{id}/meeting checks them:
--   not_found               there is no such service
--   invalid_settings        the settings break a rule (key: the setting at fault)
--   platform_required       an online service must name a platform
--   platforms_unpublished   no daemon has published the platforms yet (meetingd.platforms is empty)
--   unknown_platform        not a platform meetingd knows
--   platform_unavailable    not offered by this deployment
--   unsupported_option      an option (or its value) the platform does not honour (key: the option)
--   platform_not_connected  the service's provider has not connected the platform (connect_path:
--                           where their browser connects it)
-- `message` is a sentence for the provider. SECURITY DEFINER: the caller needs EXECUTE only.
CREATE FUNCTION meetingd.check_service_meeting(p_service UUID, p_platform TEXT, p_settings JSONB)
RETURNS TABLE (code TEXT, key TEXT, message TEXT, connect_path TEXT)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  v_name     TEXT := NULLIF(btrim(p_platform), '');
  v_online   BOOLEAN;
  v_provider UUID;
  v_problem  RECORD;
  v_p        meetingd.platforms%ROWTYPE;
  v_option   TEXT;
BEGIN
  SELECT COALESCE(s.is_online, false), s.provider_id INTO v_online, v_provider FROM services s WHERE s.id = p_service;
  IF NOT FOUND THEN
    RETURN QUERY SELECT 'not_found', 'service', 'service not found', NULL::TEXT;
    RETURN;
  END IF;
  SELECT * INTO v_problem FROM meetingd.meeting_settings_error(p_settings);
  IF v_problem.message IS NOT NULL THEN
    RETURN QUERY SELECT 'invalid_settings', v_problem.key, v_problem.message, NULL::TEXT;
    RETURN;
  END IF;
  IF v_name IS NULL THEN
    IF v_online THEN
      RETURN QUERY SELECT 'platform_required', 'platform',
        'An online service needs a meeting platform; GET /api/platforms lists the ones offered.', NULL::TEXT;
    END IF;
    RETURN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM meetingd.platforms) THEN
    RETURN QUERY SELECT 'platforms_unpublished', 'platform',
      'meetingd has not published the platforms this deployment offers yet: start the daemon once.', NULL::TEXT;
    RETURN;
  END IF;
  SELECT * INTO v_p FROM meetingd.platforms p WHERE p.platform = v_name;
  IF NOT FOUND THEN
    RETURN QUERY SELECT 'unknown_platform', 'platform',
      format('unknown meeting platform %s; the platforms are %s.', to_json(v_name),
             (SELECT string_agg(p.platform, ', ' ORDER BY p.platform) FROM meetingd.platforms p)), NULL::TEXT;
    RETURN;
  END IF;
  IF NOT v_p.offered THEN
    RETURN QUERY SELECT 'platform_unavailable', 'platform', format('%s is not offered on this server.', v_p.display_name), NULL::TEXT;
    RETURN;
  END IF;
  IF jsonb_typeof(p_settings) = 'object' THEN
    FOREACH v_option IN ARRAY ARRAY['waiting_room', 'recording', 'passcode', 'mute_on_entry'] LOOP
      IF jsonb_typeof(p_settings -> v_option) IS DISTINCT FROM 'null' AND p_settings ? v_option
         AND NOT COALESCE(v_p.option_values -> v_option @> jsonb_build_array(p_settings -> v_option), false) THEN
        RETURN QUERY SELECT 'unsupported_option', v_option,
          format('%s cannot honour the meeting option "%s"; remove it or choose another platform.', v_p.display_name, v_option),
          NULL::TEXT;
        RETURN;
      END IF;
    END LOOP;
  END IF;
  IF v_p.needs_account AND NOT EXISTS (
       SELECT 1 FROM user_meeting_integrations i
        WHERE i.user_id = v_provider AND i.platform = v_name
          AND COALESCE(i.is_active, false) AND i.access_token <> '') THEN
    RETURN QUERY SELECT 'platform_not_connected', 'platform',
      format('Connect %s under Integrations%s before choosing it.', v_p.display_name,
             COALESCE(format(' (POST %s)', v_p.connect_path), '')),
      v_p.connect_path;
  END IF;
END $$;

-- Sets service `p_service`'s meeting platform (NULL or blank: none) and settings (NULL: `{}`),
-- by the rules of check_service_meeting, and re-arms its upcoming confirmed bookings; returns how
-- many were re-armed. What PUT /api/services/{id}/meeting does, in the caller's transaction.
-- A refusal raises SQLSTATE MD422 (MD409 for platform_not_connected, MD404 for not_found, MD503
-- for platforms_unpublished) with the sentence as its message, the code as its DETAIL and the key
-- as its COLUMN. Each value takes the column's own type (text, varchar, an enum, json or jsonb).
CREATE FUNCTION meetingd.set_service_meeting(p_service UUID, p_platform TEXT, p_settings JSONB)
RETURNS BIGINT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  v_name     TEXT := NULLIF(btrim(p_platform), '');
  v_settings JSONB := CASE WHEN p_settings IS NULL OR jsonb_typeof(p_settings) = 'null' THEN '{}' ELSE p_settings END;
  v_refusal  RECORD;
  v_rearmed  BIGINT;
BEGIN
  -- The provider and is_online cannot change between the check and the write.
  PERFORM 1 FROM services s WHERE s.id = p_service FOR UPDATE;
  SELECT * INTO v_refusal FROM meetingd.check_service_meeting(p_service, v_name, v_settings) LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING
      ERRCODE = CASE v_refusal.code WHEN 'platform_not_connected' THEN 'MD409' WHEN 'not_found' THEN 'MD404'
                                    WHEN 'platforms_unpublished' THEN 'MD503' ELSE 'MD422' END,
      MESSAGE = v_refusal.message, DETAIL = v_refusal.code, COLUMN = v_refusal.key;
  END IF;
  UPDATE services s SET meeting_platform = r.meeting_platform, meeting_settings = r.meeting_settings
    FROM json_populate_record(NULL::services,
           json_build_object('meeting_platform', v_name, 'meeting_settings', v_settings::json)) r
   WHERE s.id = p_service;
  SELECT count(meetingd.touch_job(b.id)) INTO v_rearmed
    FROM bookings b
   WHERE b.service_id = p_service AND b.status::text = 'confirmed' AND b.start_time > now();
  RETURN v_rearmed;
END $$;

-- Only the roles granted EXECUTE (sql/grants.sql for the daemon; the app's role by the deployment).
REVOKE ALL ON FUNCTION meetingd.check_service_meeting(UUID, TEXT, JSONB) FROM PUBLIC;
REVOKE ALL ON FUNCTION meetingd.set_service_meeting(UUID, TEXT, JSONB) FROM PUBLIC;

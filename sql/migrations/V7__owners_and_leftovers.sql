-- Nothing left behind when the marketplace changes around a booking.
--
-- A meeting lives in the account that created it, so meetingd records that account with the
-- meeting, keeps a copy of the account's credentials when the marketplace deletes or replaces its
-- integration row while meetings may still live there, re-arms every booking it ever worked on
-- whatever its service looks like now, and records a meeting it cannot reach as orphaned instead
-- of pretending it was deleted.

-- The account a meeting lives in: the provider (user), the integration row and the platform's
-- account identity (platform_user_id, else platform_user_email) at the time it was created.
ALTER TABLE meetingd.meetings
  ADD COLUMN owner_id        UUID,
  ADD COLUMN integration_id  UUID,
  ADD COLUMN account         TEXT;

-- The provider a recorded create intent was made for: a booking deleted mid-create still has its
-- possible meeting deleted through the right account.
ALTER TABLE meetingd.jobs
  ADD COLUMN intent_owner UUID,
  -- and the account it was attempted in: after a reconnect to another account the meeting is
  -- deleted there, not adopted (or duplicated) in the new one.
  ADD COLUMN intent_integration UUID,
  ADD COLUMN intent_account TEXT;

-- Credentials of accounts that left user_meeting_integrations (the row was deleted, by cascade
-- from a deleted user too, or reconnected to another platform account) while meetings may still
-- live there. The token columns keep their ciphertext exactly: its AAD names integration_id, so it
-- still decrypts. Used only to update or delete those meetings; `meetingd prune` drops a copy no
-- live meeting or pending create refers to.
CREATE TABLE meetingd.retired_integrations (
  id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  integration_id       UUID NOT NULL,
  user_id              UUID,
  platform             TEXT NOT NULL,
  access_token         TEXT NOT NULL,
  refresh_token        TEXT,
  expires_at           TIMESTAMPTZ,
  platform_user_id     TEXT,
  platform_user_email  TEXT,
  is_active            BOOLEAN NOT NULL DEFAULT true,
  reason               TEXT NOT NULL,          -- 'deleted' or 'reconnected'
  retired_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX retired_integrations_lookup_idx ON meetingd.retired_integrations (integration_id, id);

CREATE FUNCTION meetingd.retire_integration() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
  IF coalesce(OLD.access_token, '') = '' THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'UPDATE' AND coalesce(OLD.platform_user_id, OLD.platform_user_email)
                          IS NOT DISTINCT FROM coalesce(NEW.platform_user_id, NEW.platform_user_email) THEN
    RETURN NULL;
  END IF;
  INSERT INTO meetingd.retired_integrations
      (integration_id, user_id, platform, access_token, refresh_token, expires_at,
       platform_user_id, platform_user_email, is_active, reason)
  VALUES (OLD.id, OLD.user_id, OLD.platform, OLD.access_token, OLD.refresh_token, OLD.expires_at,
          OLD.platform_user_id, OLD.platform_user_email, coalesce(OLD.is_active, false),
          CASE WHEN TG_OP = 'DELETE' THEN 'deleted' ELSE 'reconnected' END);
  RETURN NULL;
END $$;

CREATE TRIGGER meetingd_integration_retired AFTER DELETE ON user_meeting_integrations
  FOR EACH ROW EXECUTE FUNCTION meetingd.retire_integration();
CREATE TRIGGER meetingd_integration_reconnected AFTER UPDATE OF platform_user_id, platform_user_email
  ON user_meeting_integrations
  FOR EACH ROW EXECUTE FUNCTION meetingd.retire_integration();

-- Meetings that exist at a platform but that meetingd can no longer reach (the account that made
-- them was revoked or its credentials are gone). Reported (`meetingd status`, a meeting_orphaned
-- event), never counted as deleted.
CREATE TABLE meetingd.orphaned_meetings (
  id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  booking_id      UUID NOT NULL,
  platform        TEXT NOT NULL,
  external_id     TEXT NOT NULL,
  owner_id        UUID,
  integration_id  UUID,
  account         TEXT,
  reason          TEXT NOT NULL,
  found_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
  UNIQUE (platform, external_id)
);

-- A booking meetingd ever worked on (it has a job) is re-armed on every relevant change, whatever
-- its service looks like now: the service may have been deleted (ON DELETE CASCADE removes the
-- booking in the same statement), switched to in-person, or moved to another provider, and the
-- meeting made earlier must still go. One more primary-key lookup, on meetingd.jobs.
CREATE OR REPLACE FUNCTION meetingd.enqueue_booking() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  v_booking UUID := CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END;
  v_online  BOOLEAN := false;
BEGIN
  IF TG_OP = 'DELETE' THEN
    SELECT s.is_online INTO v_online FROM services s WHERE s.id = OLD.service_id;
  ELSE
    SELECT s.is_online INTO v_online FROM services s WHERE s.id = NEW.service_id;
  END IF;
  IF coalesce(v_online, false) OR EXISTS (SELECT 1 FROM meetingd.jobs j WHERE j.booking_id = v_booking) THEN
    PERFORM meetingd.touch_job(v_booking);
  END IF;
  RETURN NULL;
END $$;

-- A service that changes what its bookings' meetings depend on re-arms its upcoming bookings:
-- those meetingd worked on, and confirmed ones (which now may want a meeting). Runs in the app's
-- transaction that changes the service, never in a booking transaction. A bookings table whose
-- end_time cannot be compared with now() is skipped with a warning rather than failing the app.
CREATE FUNCTION meetingd.rearm_service() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  v_booking UUID;
BEGIN
  BEGIN
    FOR v_booking IN
      SELECT b.id FROM bookings b
       WHERE b.service_id = NEW.id AND b.end_time > now()
         AND (b.status::text = 'confirmed' OR EXISTS (SELECT 1 FROM meetingd.jobs j WHERE j.booking_id = b.id))
    LOOP
      PERFORM meetingd.touch_job(v_booking);
    END LOOP;
  EXCEPTION WHEN undefined_function OR datatype_mismatch OR invalid_datetime_format OR undefined_column THEN
    RAISE WARNING 'meetingd: cannot re-arm the bookings of service %: %', NEW.id, SQLERRM;
  END;
  RETURN NULL;
END $$;

CREATE TRIGGER meetingd_service_update AFTER UPDATE OF is_online, meeting_platform, provider_id ON services
  FOR EACH ROW WHEN (OLD.is_online IS DISTINCT FROM NEW.is_online
                  OR OLD.meeting_platform IS DISTINCT FROM NEW.meeting_platform
                  OR OLD.provider_id IS DISTINCT FROM NEW.provider_id)
  EXECUTE FUNCTION meetingd.rearm_service();

-- Write-backs that failed for a reason of the database's own (an app trigger or CHECK on bookings
-- refusing the meeting columns, a row locked for longer than lock_timeout), since the last booking
-- change. They count against worker.max_attempts: past it the job fails without calling the
-- platform again.
ALTER TABLE meetingd.jobs ADD COLUMN write_failures INTEGER NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION meetingd.touch_job(p_booking UUID) RETURNS BIGINT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  v_job BIGINT;
BEGIN
  INSERT INTO meetingd.jobs AS j (booking_id) VALUES (p_booking)
  ON CONFLICT (booking_id) DO UPDATE
    SET state = 'pending', version = j.version + 1, attempts = 0, write_failures = 0, run_at = now(),
        requested_at = clock_timestamp(), last_error = NULL, completed_at = NULL, updated_at = now()
  RETURNING j.id INTO v_job;
  PERFORM pg_notify('meetingd', v_job::text);
  RETURN v_job;
END $$;

-- When periodic work (the reconcile sweep) last ran, so that of many daemons one does it.
CREATE TABLE meetingd.maintenance (
  task      TEXT PRIMARY KEY,
  last_run  TIMESTAMPTZ NOT NULL
);

-- Whether a booking's link is meetingd's own (or there is none): the link of the meeting it
-- recorded for the booking. Anything else is the provider's or the app's, never replaced.
-- One primary-key lookup; the write-back calls it per booking.
CREATE FUNCTION meetingd.link_is_ours(p_booking UUID, p_link TEXT) RETURNS BOOLEAN
LANGUAGE sql STABLE AS $$
  SELECT COALESCE(p_link, '') = ''
      OR p_link = (SELECT m.join_url FROM meetingd.meetings m WHERE m.booking_id = p_booking)
$$;

-- meetingd's own objects: the outbox/job queue, the meetings it believes exist, the audit trail, the
-- events it tells the app about, and the trigger that turns booking changes into jobs.

-- What the app can show about a booking's meeting. NOT VALID + VALIDATE keeps the lock on a large
-- bookings table short (existing rows are all NULL).
ALTER TABLE bookings
  ADD COLUMN IF NOT EXISTS meeting_status TEXT,
  ADD COLUMN IF NOT EXISTS meeting_error TEXT;
ALTER TABLE bookings
  ADD CONSTRAINT bookings_meeting_status_check
  CHECK (meeting_status IN ('pending', 'ready', 'failed', 'manual', 'deleted')) NOT VALID;
ALTER TABLE bookings VALIDATE CONSTRAINT bookings_meeting_status_check;

CREATE SCHEMA IF NOT EXISTS meetingd;

-- One row per booking meetingd cares about. A row means "make this booking's meeting match the
-- booking as it is now"; the trigger re-arms it on every relevant change (version + 1).
CREATE TABLE meetingd.jobs (
  id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  booking_id    UUID NOT NULL UNIQUE,             -- no FK: a deleted booking still needs its meeting removed
  state         TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
  version       BIGINT NOT NULL DEFAULT 1,        -- bumped by every booking change
  attempts      INTEGER NOT NULL DEFAULT 0,       -- attempts since the last booking change
  run_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
  requested_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), -- when the latest change was recorded
  lease_owner   UUID,                             -- daemon instance holding the lease
  lease_until   TIMESTAMPTZ,                      -- database clock
  claim_seq     BIGINT NOT NULL DEFAULT 0,        -- fencing token: bumped by every claim
  last_error    TEXT,
  completed_at  TIMESTAMPTZ,
  created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX jobs_due_idx ON meetingd.jobs (run_at) WHERE state = 'pending';
CREATE INDEX jobs_failed_idx ON meetingd.jobs (updated_at) WHERE state = 'failed';

-- The meeting meetingd believes exists at the platform for a booking (or existed: state 'deleted').
-- generation counts the meetings created for the booking, so a re-confirmation after a cancel gets
-- a new platform-side identity (Google keeps deleted event ids reserved forever).
CREATE TABLE meetingd.meetings (
  booking_id          UUID PRIMARY KEY,
  platform            TEXT NOT NULL,
  requested_platform  TEXT,                        -- what the service asked for (differs on fallback)
  external_id         TEXT NOT NULL,
  join_url            TEXT NOT NULL,
  start_time          TIMESTAMPTZ NOT NULL,
  end_time            TIMESTAMPTZ NOT NULL,
  generation          INTEGER NOT NULL,
  state               TEXT NOT NULL CHECK (state IN ('live', 'deleted')),
  created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
  linked_at           TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
  updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every meeting and integration operation: who, what, which booking, outcome.
CREATE TABLE meetingd.audit_log (
  id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at           TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
  actor        TEXT NOT NULL,          -- 'daemon:<instance id>' or 'user:<uuid>' or 'admin'
  action       TEXT NOT NULL,          -- e.g. meeting.create, meeting.update, meeting.delete
  booking_id   UUID,
  user_id      UUID,
  platform     TEXT,
  outcome      TEXT NOT NULL,          -- ok, retry, failed, skipped
  attempt      INTEGER,
  duration_ms  INTEGER,
  detail       TEXT
);
CREATE INDEX audit_log_booking_idx ON meetingd.audit_log (booking_id, id);

-- Notifications for the app (meeting ready, meeting failed, integration needs reconnect). Each row is
-- also sent on channel 'meetingd_events' as compact JSON.
CREATE TABLE meetingd.events (
  id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind        TEXT NOT NULL,
  user_id     UUID,                    -- who should be told (usually the service's provider)
  booking_id  UUID,
  platform    TEXT,
  message     TEXT NOT NULL,
  created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX events_user_idx ON meetingd.events (user_id, id);

CREATE FUNCTION meetingd.notify_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('meetingd_events', json_build_object(
    'id', NEW.id, 'kind', NEW.kind, 'user_id', NEW.user_id,
    'booking_id', NEW.booking_id, 'platform', NEW.platform)::text);
  RETURN NULL;
END $$;

CREATE TRIGGER events_notify AFTER INSERT ON meetingd.events
  FOR EACH ROW EXECUTE FUNCTION meetingd.notify_event();

-- The outbox trigger. Runs inside the app's booking transaction, so it does O(1) work (two primary
-- key lookups and one upsert), never calls out, and for a booking of an in-person service does
-- nothing but read services. SECURITY DEFINER: the app's role needs no rights on schema meetingd.
CREATE FUNCTION meetingd.enqueue_booking() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  v_booking UUID;
  v_online  BOOLEAN := false;
  v_job     BIGINT;
BEGIN
  IF TG_OP = 'DELETE' THEN
    v_booking := OLD.id;
    SELECT s.is_online INTO v_online FROM services s WHERE s.id = OLD.service_id;
  ELSE
    v_booking := NEW.id;
    SELECT s.is_online INTO v_online FROM services s WHERE s.id = NEW.service_id;
    -- Moving a booking off an online service must remove the meeting it had.
    IF TG_OP = 'UPDATE' AND NOT coalesce(v_online, false) AND OLD.service_id IS DISTINCT FROM NEW.service_id THEN
      SELECT s.is_online INTO v_online FROM services s WHERE s.id = OLD.service_id;
    END IF;
  END IF;

  IF NOT coalesce(v_online, false) THEN
    RETURN NULL;
  END IF;

  INSERT INTO meetingd.jobs AS j (booking_id) VALUES (v_booking)
  ON CONFLICT (booking_id) DO UPDATE
    SET state = 'pending', version = j.version + 1, attempts = 0, run_at = now(),
        requested_at = clock_timestamp(), last_error = NULL, completed_at = NULL, updated_at = now()
  RETURNING j.id INTO v_job;

  PERFORM pg_notify('meetingd', v_job::text);
  RETURN NULL;
END $$;

-- A booking inserted as pending has nothing to do yet; one inserted confirmed does.
CREATE TRIGGER meetingd_booking_insert AFTER INSERT ON bookings
  FOR EACH ROW WHEN (NEW.status = 'confirmed')
  EXECUTE FUNCTION meetingd.enqueue_booking();

CREATE TRIGGER meetingd_booking_update AFTER UPDATE OF status, start_time, end_time, service_id ON bookings
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                  OR OLD.start_time IS DISTINCT FROM NEW.start_time
                  OR OLD.end_time IS DISTINCT FROM NEW.end_time
                  OR OLD.service_id IS DISTINCT FROM NEW.service_id)
  EXECUTE FUNCTION meetingd.enqueue_booking();

CREATE TRIGGER meetingd_booking_delete AFTER DELETE ON bookings
  FOR EACH ROW EXECUTE FUNCTION meetingd.enqueue_booking();

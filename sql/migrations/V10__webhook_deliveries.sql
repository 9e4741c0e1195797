-- Outbound Standard Webhooks: every row of meetingd.events POSTed to `[webhooks] url`.
--
-- One delivery row per event, written by a trigger in the transaction that inserts the event, so
-- no event can be skipped: event ids come from a sequence and can commit out of order, which a
-- "last delivered id" cursor would miss. The row holds the exact body that is signed and sent
-- (built once, so every retry sends the same bytes under the same webhook-id) and the delivery
-- state; daemons claim due rows with FOR UPDATE SKIP LOCKED and a lease, as they claim jobs.

-- Whether events are queued for delivery at all, and since when. A daemon started with
-- `[webhooks] url` sets it; `meetingd webhooks off` clears it. Events from before it was set are
-- never queued: a new receiver gets what happens from then on, not the history.
CREATE TABLE meetingd.webhook_feed (
  singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
  since      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE meetingd.webhook_deliveries (
  event_id     BIGINT PRIMARY KEY,            -- meetingd.events.id; no FK: events are pruned on their own schedule
  webhook_id   UUID NOT NULL DEFAULT gen_random_uuid(),  -- the webhook-id header, the same on every attempt
  payload      TEXT NOT NULL,                 -- the exact JSON body that is signed and sent
  state        TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
  queued_at    TIMESTAMPTZ NOT NULL DEFAULT now(),  -- the event's time, or its re-drive's: max_age counts from here
  attempts     INTEGER NOT NULL DEFAULT 0,
  run_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
  lease_owner  UUID,
  lease_until  TIMESTAMPTZ,                   -- database clock
  lease_token  UUID,                          -- drawn by every claim; the write-back is fenced on it
  last_status  INTEGER,                       -- the receiver's last HTTP status (NULL: no answer)
  last_error   TEXT,
  finished_at  TIMESTAMPTZ,                   -- delivered or dead-lettered
  updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 1000);
CREATE INDEX webhook_deliveries_due_idx ON meetingd.webhook_deliveries (run_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_delivered_idx ON meetingd.webhook_deliveries (finished_at) WHERE state = 'delivered';
CREATE INDEX webhook_deliveries_dead_idx ON meetingd.webhook_deliveries (finished_at) WHERE state = 'dead';

-- Queues the statement's new events while the feed is on: one set-based insert per statement
-- (the write-back inserts a batch's events in one). The body is a Standard Webhooks payload:
-- type, timestamp (UTC, whatever the session's TimeZone), data.
CREATE FUNCTION meetingd.queue_webhooks() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM meetingd.webhook_feed) THEN
    INSERT INTO meetingd.webhook_deliveries (event_id, payload, queued_at)
    SELECT e.id,
           json_build_object(
             'type', e.kind,
             'timestamp', to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
             'data', json_build_object(
               'event_id', e.id, 'kind', e.kind, 'user_id', e.user_id, 'booking_id', e.booking_id,
               'platform', e.platform, 'message', e.message,
               'created_at', to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))::text,
           e.created_at
      FROM new_events e
    ON CONFLICT (event_id) DO NOTHING;
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER events_queue_webhooks AFTER INSERT ON meetingd.events
  REFERENCING NEW TABLE AS new_events
  FOR EACH STATEMENT EXECUTE FUNCTION meetingd.queue_webhooks();

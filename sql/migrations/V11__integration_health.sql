-- What meetingd knows about each connection's grant that the app's table does not say, kept in
-- meetingd's own schema (the monitor, `monitor.rs`, reads and writes it): when the provider
-- consented (the connect flow), when a refresh last succeeded (a refresh resets Microsoft's
-- 90-day idle limit, and Zoom issues a new 90-day refresh token with each), when the monitor last
-- checked the connection, and the end of the lifetime the provider was last warned about with an
-- `integration_expiring` event (once per lifetime: a reconnect or a refresh starts a new one).
-- One row per integration; no foreign key, so no lock on the app's rows: the monitor deletes
-- rows whose integration is gone.
CREATE TABLE meetingd.integration_health (
  integration_id  UUID PRIMARY KEY,
  consented_at    TIMESTAMPTZ,
  refreshed_at    TIMESTAMPTZ,
  checked_at      TIMESTAMPTZ,
  warned_for      TIMESTAMPTZ
);

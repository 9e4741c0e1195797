-- The rights meetingd's daemon role needs, and no more. Run it as the owner of the marketplace
-- tables after `meetingd migrate` (which that owner runs too: migrations change `bookings` and
-- `services` and create schema meetingd), e.g.
--
--   psql "$OWNER_URL" -v role=meetingd -f /usr/share/meetingd/sql/grants.sql
--
-- The daemon then connects as that role: it reads the marketplace tables, writes only the
-- meeting columns of `bookings` and `services`, keeps the providers' integration rows, and works in schema
-- meetingd. The triggers run as their owner (SECURITY DEFINER), so the app's own role needs no
-- rights on schema meetingd. The webhook tables (V10) are covered by the schema-wide grants below:
-- the daemon inserts delivery rows (the trigger on meetingd.events runs as the inserting role),
-- claims, updates and prunes them, and sets or clears meetingd.webhook_feed.

GRANT USAGE ON SCHEMA public TO :"role";
GRANT SELECT ON users, services, bookings TO :"role";
GRANT UPDATE (meeting_link, meeting_id, meeting_platform, meeting_settings, meeting_status, meeting_error)
  ON bookings TO :"role";
GRANT SELECT, INSERT, UPDATE, DELETE ON user_meeting_integrations TO :"role";

GRANT USAGE ON SCHEMA meetingd TO :"role";
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA meetingd TO :"role";
GRANT USAGE ON ALL SEQUENCES IN SCHEMA meetingd TO :"role";
-- Among them meetingd.set_service_meeting (PUT /api/services/{id}/meeting), which writes a
-- service's meeting columns as its owner: the role needs no UPDATE on services. meetingd.platforms
-- is what the daemon publishes at start-up.
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA meetingd TO :"role";

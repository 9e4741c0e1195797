-- A claim commits asynchronously (it only promises a lease, nothing outside the database depends on
-- it before a later synchronous commit), so a server crash can lose it and the next claim can be
-- given the same claim_seq again. Each claim therefore also draws a random lease token, and a
-- write-back or create intent is fenced on both: the holder of a lost claim can never pass for
-- its successor.
ALTER TABLE meetingd.jobs ADD COLUMN lease_token UUID;

-- A claim changes no indexed column, so PostgreSQL can update the row in place (a HOT update:
-- no new index entries, nothing for the next claim's index scan to step over). That needs room
-- on the row's page, and failed jobs indexed by when they failed rather than by updated_at,
-- which every claim touches.
DROP INDEX meetingd.jobs_failed_idx;
CREATE INDEX jobs_failed_idx ON meetingd.jobs (completed_at) WHERE state = 'failed';
ALTER TABLE meetingd.jobs SET (fillfactor = 70);

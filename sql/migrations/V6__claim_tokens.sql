-- A claim commits asynchronously (it promises only a lease), so a server crash can lose it and the
-- next claim can be given the same claim_seq again. Each claim therefore also draws a random lease
-- token, and a write-back or create intent is fenced on both: the holder of a lost claim can never
-- pass for its successor. (A nullable column without a default: no table rewrite.)
ALTER TABLE meetingd.jobs ADD COLUMN lease_token UUID;

-- A claim changes no indexed column (not updated_at either, which jobs_failed_idx holds), so
-- PostgreSQL can update the row in place (a HOT update: no new index entries, nothing for the next
-- claim's index scan to step over) when its page has room. New pages keep 30 % free for that.
ALTER TABLE meetingd.jobs SET (fillfactor = 70);

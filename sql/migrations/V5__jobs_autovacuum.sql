-- meetingd.jobs is a queue: each booking change rewrites its row a few times (the trigger's
-- upsert, the claim, the write-back), leaving dead row versions and dead entries in the due-jobs
-- index that every claim walks. Vacuum it after a fixed number of changes rather than after a
-- fifth of a table that grows with every booking ever made.
ALTER TABLE meetingd.jobs SET (
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 1000,
  autovacuum_analyze_scale_factor = 0,
  autovacuum_analyze_threshold = 1000
);

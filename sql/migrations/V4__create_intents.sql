-- The create a job is about to attempt, recorded (and committed) before the platform call: a
-- platform may create the meeting and then lose its answer, or the daemon may die mid-call. Until a
-- write-back records that meeting (or its deletion), the booking's next reconcile knows it may
-- exist: a retry reuses the same platform-side identity, and a cancel deletes it.
-- The trigger never touches these columns, so a booking change keeps them.
ALTER TABLE meetingd.jobs
  ADD COLUMN intent_platform TEXT,       -- NULL once the write-back settled the intent
  ADD COLUMN intent_generation INTEGER;  -- kept after that: a generation is never used twice

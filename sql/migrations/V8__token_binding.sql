-- Token envelopes (version 2) bind each token to its integration id, column, user and platform,
-- so a row moved to another user or platform, or a ciphertext copied into one, does not decrypt.
-- Envelopes written before (version 1: integration id and column only) are re-encrypted by the
-- upgrade pass meetingd runs at start-up, in `meetingd migrate` and in `meetingd keys rotate`,
-- over user_meeting_integrations and meetingd.retired_integrations, row by row under the row lock.
-- The first pass that finds none left sets legacy_refused_at; from then on no version 1 envelope
-- is opened anywhere (one planted later, say from an old backup, is refused).
CREATE TABLE meetingd.token_format (
  only_row           BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
  legacy_refused_at  TIMESTAMPTZ
);
INSERT INTO meetingd.token_format DEFAULT VALUES;

-- A platform's daily allowance of requests per connected account, counted across daemons: Zoom
-- allows 100 meeting creations and updates per user per day and resets at 00:00 UTC. One row per
-- integration, platform and UTC day; `used` only grows, up to the configured limit (a platform
-- that answers "used up" sets it to the limit). Rows of past days are pruned.
CREATE TABLE meetingd.platform_quota (
  integration_id  UUID NOT NULL,
  platform        TEXT NOT NULL,
  day             DATE NOT NULL,
  used            INTEGER NOT NULL CHECK (used >= 0),
  PRIMARY KEY (integration_id, platform, day)
);
CREATE INDEX platform_quota_day_idx ON meetingd.platform_quota (day);

-- The feature specification's own schema change, column for column.
--
-- IF NOT EXISTS everywhere: a marketplace that already applied this change from the specification
-- keeps its table and columns, and meetingd adopts them as they are.

CREATE TABLE IF NOT EXISTS user_meeting_integrations (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id UUID REFERENCES users(id) ON DELETE CASCADE,
  platform VARCHAR(50) NOT NULL, -- 'google_meet', 'zoom', 'teams'
  access_token TEXT NOT NULL,    -- meetingd's ciphertext envelope, never plaintext
  refresh_token TEXT,            -- meetingd's ciphertext envelope, never plaintext
  expires_at TIMESTAMP WITH TIME ZONE,
  scope TEXT[],
  platform_user_id TEXT,
  platform_user_email TEXT,
  is_active BOOLEAN DEFAULT true,
  created_at TIMESTAMP WITH TIME ZONE DEFAULT now(),
  updated_at TIMESTAMP WITH TIME ZONE DEFAULT now(),
  UNIQUE(user_id, platform)
);

ALTER TABLE services
  ADD COLUMN IF NOT EXISTS meeting_platform VARCHAR(50), -- 'google_meet', 'zoom', 'teams', 'jitsi', null
  ADD COLUMN IF NOT EXISTS meeting_settings JSONB DEFAULT '{}';

ALTER TABLE bookings
  ADD COLUMN IF NOT EXISTS meeting_platform VARCHAR(50),
  ADD COLUMN IF NOT EXISTS meeting_id TEXT, -- external meeting ID
  ADD COLUMN IF NOT EXISTS meeting_settings JSONB DEFAULT '{}';

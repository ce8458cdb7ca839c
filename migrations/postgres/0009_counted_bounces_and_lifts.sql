-- A bounce counts against an address only when it is tied to a notification
-- we really sent to it (a verified bounces+TOKEN address, or our own
-- Message-ID in the returned copy) and names that address. Reports recorded
-- before this migration were tied by guessable ids: they stay, uncounted.
ALTER TABLE bounces ADD COLUMN counted BOOLEAN NOT NULL DEFAULT FALSE;
-- When an operator lifted the suppression this bounce was part of, and who.
ALTER TABLE bounces ADD COLUMN lifted_at BIGINT;
ALTER TABLE bounces ADD COLUMN lifted_by TEXT;
CREATE INDEX bounces_counted ON bounces(recipient, received_at) WHERE counted AND lifted_at IS NULL;

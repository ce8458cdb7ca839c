-- What an admin needs to answer "what happened to my mail" from one log
-- entry: the Subject; the held item the entry is about (its arrival, or an
-- admin's action on it); the refusal notice sent to the sender; and, for
-- refused mail, its header fields (never the body).
ALTER TABLE inbound_log ADD COLUMN subject TEXT;
ALTER TABLE inbound_log ADD COLUMN held_id INTEGER;
ALTER TABLE inbound_log ADD COLUMN notice_id INTEGER;
ALTER TABLE inbound_log ADD COLUMN headers TEXT;
CREATE INDEX inbound_log_held ON inbound_log(held_id) WHERE held_id IS NOT NULL;
-- The header fields of refused mail are kept as long as originals are
-- (retention.raw_days): the purge finds the ones to clear by this index.
CREATE INDEX inbound_log_headers ON inbound_log(received_at) WHERE headers IS NOT NULL;

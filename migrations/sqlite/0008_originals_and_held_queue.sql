-- Every message answered 250 is kept exactly as it arrived: its bytes,
-- compressed (lz4) by mailgate, stored once per content (SHA-256 of the raw
-- bytes) and referenced from the message, its inbound-log entry and, for held
-- mail, the held item. The base64 body of an attachment that is stored in
-- blobs anyway is left out (a "hole") and rebuilt from the blob on reading,
-- so a reply's attachment is not written twice. Retention (retention.raw_days) deletes rows by
-- stored_at; a reference whose row is gone means "purged".
CREATE TABLE originals (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256      TEXT NOT NULL UNIQUE,   -- of the raw bytes, lower-case hex
    size        INTEGER NOT NULL,       -- raw size in bytes
    compression TEXT NOT NULL,          -- lz4 | none
    content     BLOB NOT NULL,          -- the bytes, less the holes, compressed
    holes       TEXT,                   -- JSON: base64 bodies of stored attachments left out, rebuilt from blobs
    stored_at   INTEGER NOT NULL        -- Unix ms; a second delivery of the same bytes renews it
);
CREATE INDEX originals_stored ON originals(stored_at);
ALTER TABLE messages ADD COLUMN original TEXT;      -- originals.sha256; NULL for Dashboard messages
ALTER TABLE inbound_log ADD COLUMN original TEXT;   -- originals.sha256 of what was received, when kept

-- The held queue is a workflow: each item has a reason code, a state, and a
-- record of who acted on it and when. New items keep their bytes in
-- originals (raw stays empty); older items keep theirs in raw.
ALTER TABLE held_messages ADD COLUMN reason_code TEXT NOT NULL DEFAULT 'dmarc_fail';
ALTER TABLE held_messages ADD COLUMN status TEXT NOT NULL DEFAULT 'held';   -- held | released | discarded | noticed
ALTER TABLE held_messages ADD COLUMN original TEXT;
ALTER TABLE held_messages ADD COLUMN peer TEXT NOT NULL DEFAULT '';
ALTER TABLE held_messages ADD COLUMN helo TEXT;
ALTER TABLE held_messages ADD COLUMN from_address TEXT;
ALTER TABLE held_messages ADD COLUMN subject TEXT;
ALTER TABLE held_messages ADD COLUMN message_id TEXT;
ALTER TABLE held_messages ADD COLUMN auth TEXT NOT NULL DEFAULT '';
ALTER TABLE held_messages ADD COLUMN thread_id INTEGER;
ALTER TABLE held_messages ADD COLUMN acted_by TEXT;
ALTER TABLE held_messages ADD COLUMN acted_at INTEGER;
ALTER TABLE held_messages ADD COLUMN released_message INTEGER;
UPDATE held_messages SET reason_code = 'not_allowed' WHERE reason LIKE '%may not write%';
CREATE INDEX held_status ON held_messages(status, id);
CREATE INDEX held_original ON held_messages(original);

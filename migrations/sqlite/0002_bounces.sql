-- Delivery failure reports about mail we sent, tied to the notification when we can tell.
CREATE TABLE bounces (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at         INTEGER NOT NULL,
    outbox_id           INTEGER REFERENCES outbox(id),
    recipient           TEXT,              -- the address that failed, lower case
    status              TEXT,              -- enhanced status code, e.g. 5.1.1
    severity            TEXT,              -- hard | soft
    diagnostic          TEXT,
    original_message_id TEXT
);
CREATE INDEX bounces_recipient ON bounces(recipient);

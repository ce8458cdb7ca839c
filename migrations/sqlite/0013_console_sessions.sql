-- Sessions of the admin console (/admin/). The cookie's value is stored
-- nowhere: only its SHA-256. token_hash is the admin token's hash at login,
-- so that resetting the admin token ends every session made with the old one.
CREATE TABLE console_sessions (
    id_hash    TEXT PRIMARY KEY,
    csrf       TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    actor      TEXT NOT NULL,          -- who logged in, as they named themselves; recorded with their actions
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

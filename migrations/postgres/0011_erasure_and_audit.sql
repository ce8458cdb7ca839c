-- A user erased on request (GDPR): the row stays (messages and threads refer
-- to it) but carries no personal data; tokens issued to it stop working.
ALTER TABLE users ADD COLUMN erased_at BIGINT;
-- What was done to the directory that must stay on record (an erasure).
CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail  TEXT NOT NULL
);

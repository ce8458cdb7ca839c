-- Endpoints the operator registered for events (message.created, ...).
-- Deliveries are outbox rows of kind 'webhook' (retried, failed, retryable
-- like mail); the secret signs each delivery (HMAC-SHA256).
CREATE TABLE webhooks (
    id         BIGSERIAL PRIMARY KEY,
    url        TEXT NOT NULL,
    secret     TEXT NOT NULL,
    events     TEXT NOT NULL,          -- comma separated, or '*'
    created_at BIGINT NOT NULL,
    deleted_at BIGINT
);

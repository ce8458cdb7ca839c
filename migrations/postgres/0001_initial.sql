-- mailgate's schema on PostgreSQL: the same tables as migrations/sqlite, with
-- PostgreSQL's types. Times are Unix milliseconds (UTC) in BIGINT columns; every
-- integer is BIGINT because the Rust side reads i64.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- What each support plan includes. Data, not code: admins may edit these rows.
CREATE TABLE plans (
    id                       TEXT PRIMARY KEY,
    name                     TEXT NOT NULL,
    scope                    TEXT NOT NULL,    -- site | organization | account
    rank                     BIGINT NOT NULL,  -- orders site plans: business = 3
    chat                     BOOLEAN NOT NULL,
    tickets                  TEXT NOT NULL,    -- none | all | business_and_above
    phone                    TEXT NOT NULL,    -- none | scheduled | direct | premium
    on_call                  BOOLEAN NOT NULL,
    ticket_response_minutes  BIGINT,
    on_call_response_minutes BIGINT,
    support_hours            TEXT
);

INSERT INTO plans VALUES
 ('sandbox',             'Sandbox',                     'site',         0, TRUE, 'none', 'none',      FALSE, NULL, NULL, NULL),
 ('personal',            'Personal',                    'site',         1, TRUE, 'none', 'none',      FALSE, NULL, NULL, NULL),
 ('professional',        'Professional',                'site',         2, TRUE, 'none', 'none',      FALSE, NULL, NULL, NULL),
 ('business',            'Business',                    'site',         3, TRUE, 'none', 'scheduled', FALSE, NULL, NULL, NULL),
 ('elite',               'Elite',                       'site',         4, TRUE, 'all',  'direct',    TRUE, 120, 30, 'Mon-Fri 09:00-17:00 America/Los_Angeles'),
 ('agencies',            'Pantheon for Agencies',       'organization', 0, TRUE, 'business_and_above', 'none', FALSE, NULL, NULL, NULL),
 ('enterprise',          'Pantheon Enterprise',         'organization', 0, TRUE, 'business_and_above', 'none', FALSE, NULL, NULL, NULL),
 ('edu_plus',            'Pantheon for EDU+',           'organization', 0, TRUE, 'all',  'direct',    TRUE, 120, 30, 'Mon-Fri 09:00-17:00 America/Los_Angeles'),
 ('priority_enterprise', 'Priority Enterprise Support', 'organization', 0, TRUE, 'all',  'direct',    TRUE, 120, 30, 'Mon-Fri 09:00-17:00 America/Los_Angeles'),
 ('diamond',             'Diamond',                     'account',      0, TRUE, 'all',  'premium',   TRUE, 120, 30, 'Mon-Fri 09:00-17:00 America/Los_Angeles'),
 ('platinum',            'Platinum',                    'account',      0, TRUE, 'all',  'premium',   TRUE, 120, 30, 'Mon-Fri 09:00-17:00 America/Los_Angeles');

CREATE TABLE organizations (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL,
    plan_id    TEXT REFERENCES plans(id),
    created_at BIGINT NOT NULL
);

CREATE TABLE sites (
    id              BIGSERIAL PRIMARY KEY,
    name            TEXT NOT NULL,
    plan_id         TEXT NOT NULL REFERENCES plans(id),
    organization_id BIGINT REFERENCES organizations(id),
    created_at      BIGINT NOT NULL
);

CREATE TABLE users (
    id              BIGSERIAL PRIMARY KEY,
    email           TEXT NOT NULL UNIQUE,  -- lower case
    name            TEXT NOT NULL,
    role            TEXT NOT NULL,         -- owner | admin | member | unprivileged | agent
    organization_id BIGINT REFERENCES organizations(id),
    created_at      BIGINT NOT NULL
);
CREATE INDEX users_organization ON users(organization_id);

-- Chats and tickets: both are threads of messages.
CREATE TABLE threads (
    id                BIGSERIAL PRIMARY KEY,
    kind              TEXT NOT NULL,        -- chat | ticket
    site_id           BIGINT NOT NULL REFERENCES sites(id),
    customer_id       BIGINT NOT NULL REFERENCES users(id),
    ticket_number     BIGINT UNIQUE,        -- tickets only: the N of [Ticket #N]
    ticket_type       TEXT,
    subject           TEXT NOT NULL,
    status            TEXT NOT NULL,        -- open | closed
    assigned_agent_id BIGINT REFERENCES users(id),
    queue             TEXT,                 -- set by routing rules
    priority          TEXT NOT NULL DEFAULT 'normal', -- low | normal | high | urgent
    tags              TEXT NOT NULL DEFAULT '[]',     -- JSON array of strings
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

CREATE TABLE messages (
    id             BIGSERIAL PRIMARY KEY,
    thread_id      BIGINT NOT NULL REFERENCES threads(id),
    author_id      BIGINT NOT NULL REFERENCES users(id),
    body           TEXT NOT NULL,
    source         TEXT NOT NULL,           -- dashboard | email
    rfc_message_id TEXT,                    -- Message-ID of an emailed message
    created_at     BIGINT NOT NULL,
    -- The same mail delivered twice (to one instance or to two at once) is one message.
    UNIQUE (thread_id, rfc_message_id)
);
CREATE INDEX messages_thread ON messages(thread_id, id);
CREATE INDEX messages_thread_time ON messages(thread_id, created_at);
CREATE INDEX messages_author_time ON messages(author_id, created_at);

-- Attachment bytes, stored once per content (SHA-256).
CREATE TABLE blobs (
    sha256  TEXT PRIMARY KEY,
    content BYTEA NOT NULL
);

CREATE TABLE attachments (
    id           BIGSERIAL PRIMARY KEY,
    message_id   BIGINT NOT NULL REFERENCES messages(id),
    filename     TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         BIGINT NOT NULL,
    sha256       TEXT NOT NULL REFERENCES blobs(sha256)
);
CREATE INDEX attachments_message ON attachments(message_id);

-- One row per SMTP transaction, whatever its outcome.
CREATE TABLE inbound_log (
    id             BIGSERIAL PRIMARY KEY,
    received_at    BIGINT NOT NULL,
    peer           TEXT NOT NULL,
    helo           TEXT,
    mail_from      TEXT,
    rcpt_to        TEXT NOT NULL,           -- recipients, comma separated
    message_id     TEXT,
    decision       TEXT NOT NULL,           -- accepted | duplicate | dropped | rejected | held
    reason         TEXT NOT NULL,
    smtp_reply     TEXT NOT NULL,
    thread_id      BIGINT,
    stored_message BIGINT,
    rules          TEXT NOT NULL DEFAULT '', -- names of the routing rules that decided, comma separated
    auth           TEXT NOT NULL DEFAULT ''  -- SPF, DKIM and DMARC results
);
CREATE INDEX inbound_log_time ON inbound_log(received_at);

-- Mail held for an agent (a DMARC failure with auth.on_dmarc_fail = "hold").
CREATE TABLE held_messages (
    id          BIGSERIAL PRIMARY KEY,
    received_at BIGINT NOT NULL,
    mail_from   TEXT NOT NULL,
    rcpt_to     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    raw         BYTEA NOT NULL
);

-- Mail waiting to be sent (the outbox). Instances claim due rows with
-- FOR UPDATE SKIP LOCKED and a lease (claimed_until), so no row is sent twice
-- and none is stranded when an instance dies.
CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    kind            TEXT NOT NULL,
    thread_id       BIGINT REFERENCES threads(id),
    message_id      BIGINT REFERENCES messages(id),
    recipient_id    BIGINT REFERENCES users(id),
    to_address      TEXT NOT NULL,
    context         TEXT NOT NULL DEFAULT '{}',
    status          TEXT NOT NULL,          -- pending | sending | sent | failed | merged | skipped
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claimed_until   BIGINT,
    expires_at      BIGINT NOT NULL,
    last_error      TEXT,
    rfc_message_id  TEXT,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT
);
CREATE INDEX outbox_due ON outbox(status, next_attempt_at);
CREATE INDEX outbox_thread ON outbox(thread_id, recipient_id);

-- Refusal notices sent, to send at most one per address per hour.
CREATE TABLE notices_sent (
    address TEXT NOT NULL,
    kind    TEXT NOT NULL,
    sent_at BIGINT NOT NULL
);
CREATE INDEX notices_sent_address ON notices_sent(address, sent_at);

-- Kinds of notification a user chose not to receive (List-Unsubscribe).
CREATE TABLE notification_optouts (
    user_id    BIGINT NOT NULL REFERENCES users(id),
    kind       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, kind)
);

-- Delivery failure reports about mail we sent, tied to the notification when we can tell.
CREATE TABLE bounces (
    id                  BIGSERIAL PRIMARY KEY,
    received_at         BIGINT NOT NULL,
    outbox_id           BIGINT REFERENCES outbox(id),
    recipient           TEXT,
    status              TEXT,
    severity            TEXT,
    diagnostic          TEXT,
    original_message_id TEXT
);
CREATE INDEX bounces_recipient ON bounces(recipient);

-- mailgate's schema. Times are Unix milliseconds (UTC) in INTEGER columns, so the
-- same SQL works on PostgreSQL (BIGINT) later. Booleans are 0/1 integers.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- What each support plan includes. Data, not code: admins may edit these rows.
CREATE TABLE plans (
    id                       TEXT PRIMARY KEY,
    name                     TEXT NOT NULL,
    scope                    TEXT NOT NULL,   -- site | organization | account
    rank                     INTEGER NOT NULL, -- orders site plans: business = 3
    chat                     INTEGER NOT NULL,
    tickets                  TEXT NOT NULL,   -- none | all | business_and_above
    phone                    TEXT NOT NULL,   -- none | scheduled | direct | premium
    on_call                  INTEGER NOT NULL,
    ticket_response_minutes  INTEGER,
    on_call_response_minutes INTEGER,
    support_hours            TEXT
);

INSERT INTO plans VALUES
 ('sandbox',             'Sandbox',                     'site',         0, 1, 'none', 'none',      0, NULL, NULL, NULL),
 ('personal',            'Personal',                    'site',         1, 1, 'none', 'none',      0, NULL, NULL, NULL),
 ('professional',        'Professional',                'site',         2, 1, 'none', 'none',      0, NULL, NULL, NULL),
 ('business',            'Business',                    'site',         3, 1, 'none', 'scheduled', 0, NULL, NULL, NULL),
 ('elite',               'Elite',                       'site',         4, 1, 'all',  'direct',    1, 120, 30, 'Mon-Fri 09:00-17:00 America/Los_Angeles'),
 ('agencies',            'Pantheon for Agencies',       'organization', 0, 1, 'business_and_above', 'none', 0, NULL, NULL, NULL),
 ('enterprise',          'Pantheon Enterprise',         'organization', 0, 1, 'business_and_above', 'none', 0, NULL, NULL, NULL),
 ('edu_plus',            'Pantheon for EDU+',           'organization', 0, 1, 'all',  'direct',    1, 120, 30, 'Mon-Fri 09:00-17:00 America/Los_Angeles'),
 ('priority_enterprise', 'Priority Enterprise Support', 'organization', 0, 1, 'all',  'direct',    1, 120, 30, 'Mon-Fri 09:00-17:00 America/Los_Angeles'),
 ('diamond',             'Diamond',                     'account',      0, 1, 'all',  'premium',   1, 120, 30, 'Mon-Fri 09:00-17:00 America/Los_Angeles'),
 ('platinum',            'Platinum',                    'account',      0, 1, 'all',  'premium',   1, 120, 30, 'Mon-Fri 09:00-17:00 America/Los_Angeles');

CREATE TABLE organizations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    plan_id    TEXT REFERENCES plans(id),
    created_at INTEGER NOT NULL
);

CREATE TABLE sites (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT NOT NULL,
    plan_id         TEXT NOT NULL REFERENCES plans(id),
    organization_id INTEGER REFERENCES organizations(id),
    created_at      INTEGER NOT NULL
);

CREATE TABLE users (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    email           TEXT NOT NULL UNIQUE,  -- lower case
    name            TEXT NOT NULL,
    role            TEXT NOT NULL,         -- owner | admin | member | unprivileged | agent
    organization_id INTEGER REFERENCES organizations(id),
    created_at      INTEGER NOT NULL
);
CREATE INDEX users_organization ON users(organization_id);

-- Chats and tickets: both are threads of messages.
CREATE TABLE threads (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    kind              TEXT NOT NULL,        -- chat | ticket
    site_id           INTEGER NOT NULL REFERENCES sites(id),
    customer_id       INTEGER NOT NULL REFERENCES users(id),
    ticket_number     INTEGER UNIQUE,       -- tickets only: the N of [Ticket #N]
    ticket_type       TEXT,
    subject           TEXT NOT NULL,
    status            TEXT NOT NULL,        -- open | closed
    assigned_agent_id INTEGER REFERENCES users(id),
    queue             TEXT,                 -- set by routing rules
    priority          TEXT NOT NULL DEFAULT 'normal', -- low | normal | high | urgent
    tags              TEXT NOT NULL DEFAULT '[]',     -- JSON array of strings
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);

CREATE TABLE messages (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    thread_id      INTEGER NOT NULL REFERENCES threads(id),
    author_id      INTEGER NOT NULL REFERENCES users(id),
    body           TEXT NOT NULL,
    source         TEXT NOT NULL,           -- dashboard | email
    rfc_message_id TEXT,                    -- Message-ID of an emailed message
    created_at     INTEGER NOT NULL,
    UNIQUE (thread_id, rfc_message_id)      -- the same mail delivered twice is one message
);
CREATE INDEX messages_thread ON messages(thread_id, id);
CREATE INDEX messages_thread_time ON messages(thread_id, created_at);
CREATE INDEX messages_author_time ON messages(author_id, created_at);

-- Attachment bytes, stored once per content (SHA-256).
CREATE TABLE blobs (
    sha256  TEXT PRIMARY KEY,
    content BLOB NOT NULL
);

CREATE TABLE attachments (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   INTEGER NOT NULL REFERENCES messages(id),
    filename     TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL,
    sha256       TEXT NOT NULL REFERENCES blobs(sha256)
);
CREATE INDEX attachments_message ON attachments(message_id);

-- One row per SMTP transaction, whatever its outcome.
CREATE TABLE inbound_log (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at    INTEGER NOT NULL,
    peer           TEXT NOT NULL,
    helo           TEXT,
    mail_from      TEXT,
    rcpt_to        TEXT NOT NULL,           -- recipients, comma separated
    message_id     TEXT,
    decision       TEXT NOT NULL,           -- accepted | duplicate | dropped | rejected
    reason         TEXT NOT NULL,
    smtp_reply     TEXT NOT NULL,
    thread_id      INTEGER,
    stored_message INTEGER,
    rules          TEXT NOT NULL DEFAULT '', -- names of the routing rules that decided, comma separated
    auth           TEXT NOT NULL DEFAULT ''  -- SPF, DKIM and DMARC results
);

-- Mail held for an agent (a DMARC failure with auth.on_dmarc_fail = "hold").
CREATE TABLE held_messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    mail_from   TEXT NOT NULL,
    rcpt_to     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    raw         BLOB NOT NULL
);
CREATE INDEX inbound_log_time ON inbound_log(received_at);

-- Mail waiting to be sent (the outbox). Notifications about a message are
-- rendered when sent, so that they show the thread as it is then (and several
-- messages in quick succession become one notification).
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL,          -- the template: agent_replied, ticket_received, refusal_no_new_chat, ...
    thread_id       INTEGER REFERENCES threads(id),
    message_id      INTEGER REFERENCES messages(id),
    recipient_id    INTEGER REFERENCES users(id),
    to_address      TEXT NOT NULL,
    context         TEXT NOT NULL DEFAULT '{}', -- JSON: what the template needs beyond the thread
    status          TEXT NOT NULL,          -- pending | sending | sent | failed | merged
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    claimed_until   INTEGER,                -- a worker's lease while sending
    expires_at      INTEGER NOT NULL,       -- retries stop after this
    last_error      TEXT,
    rfc_message_id  TEXT,                   -- the Message-ID it went out with
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER
);
CREATE INDEX outbox_due ON outbox(status, next_attempt_at);
CREATE INDEX outbox_thread ON outbox(thread_id, recipient_id);

-- Refusal notices sent, to send at most one per address per hour.
CREATE TABLE notices_sent (
    address TEXT NOT NULL,
    kind    TEXT NOT NULL,
    sent_at INTEGER NOT NULL
);
CREATE INDEX notices_sent_address ON notices_sent(address, sent_at);

-- Kinds of notification a user chose not to receive (List-Unsubscribe).
CREATE TABLE notification_optouts (
    user_id    INTEGER NOT NULL REFERENCES users(id),
    kind       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, kind)
);

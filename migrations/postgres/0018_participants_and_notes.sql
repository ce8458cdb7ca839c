-- The people in a conversation besides its customer (issue 33): colleagues
-- copied on a reply, outsiders an agent let in, and whom an agent declined
-- or who left (neither is added again by a later copy). A participant who
-- is added gets a user row, so that their reply address is bound to them.
CREATE TABLE participants (
    id              BIGSERIAL PRIMARY KEY,
    thread_id       BIGINT NOT NULL REFERENCES threads(id),
    email           TEXT NOT NULL,              -- lower case
    name            TEXT NOT NULL,
    user_id         BIGINT REFERENCES users(id), -- set once added
    organization_id BIGINT,                     -- the conversation's organization, for the outsiders' limit
    outsider        BOOLEAN NOT NULL,           -- not of the conversation's organization
    status          TEXT NOT NULL,              -- active | pending | declined | left | removed
    added_by        BIGINT REFERENCES users(id),
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (thread_id, email)
);
CREATE INDEX participants_user ON participants(user_id, thread_id);
CREATE INDEX participants_outsiders ON participants(organization_id, created_at) WHERE outsider;
-- How many of them are active: a message reads the list only when there are some.
ALTER TABLE threads ADD COLUMN participants BIGINT NOT NULL DEFAULT 0;
CREATE INDEX participants_pending ON participants(status, id);

-- What a message is: a message of the conversation, an agent's internal
-- note (never mailed to the customer side), or a note of mailgate's own.
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'message';  -- message | note | system

-- The loop breaker counted a sender's and a thread's emailed messages of the
-- last hour from two indexes on messages, keyed by author and by thread: two
-- more pages written per stored reply, about a quarter of what the group
-- writer can store (ARCHITECTURE.md, "Speed"). It now keeps counts per hour
-- window instead: on the thread's row (which every reply updates anyway) and
-- in a small table per sender. A window starts with the first emailed message
-- after the previous one ended, and lasts an hour.
ALTER TABLE threads ADD COLUMN email_window_start BIGINT NOT NULL DEFAULT 0;
ALTER TABLE threads ADD COLUMN emails_in_window BIGINT NOT NULL DEFAULT 0;
CREATE TABLE sender_email_windows (
    author_id    BIGINT PRIMARY KEY REFERENCES users(id),
    window_start BIGINT NOT NULL,  -- Unix ms
    emails       BIGINT NOT NULL   -- emailed messages stored since window_start
);
-- A loop in progress keeps its count across the upgrade.
UPDATE threads SET
    email_window_start = (SELECT MIN(created_at) FROM messages m WHERE m.thread_id = threads.id AND m.source = 'email'
                          AND m.created_at >= CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT) - 3600000),
    emails_in_window = (SELECT COUNT(*) FROM messages m WHERE m.thread_id = threads.id AND m.source = 'email'
                        AND m.created_at >= CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT) - 3600000)
WHERE id IN (SELECT thread_id FROM messages WHERE source = 'email'
             AND created_at >= CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT) - 3600000);
INSERT INTO sender_email_windows (author_id, window_start, emails)
SELECT author_id, MIN(created_at), COUNT(*) FROM messages
WHERE source = 'email' AND created_at >= CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT) - 3600000
GROUP BY author_id;
DROP INDEX messages_author_time;
DROP INDEX messages_thread_time;

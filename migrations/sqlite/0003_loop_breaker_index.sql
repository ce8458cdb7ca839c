-- The loop breaker counts a sender's (and a thread's) emailed messages of the
-- last hour on every reply: with the source in the index, that count reads
-- the index alone instead of one table row per message counted.
DROP INDEX messages_author_time;
DROP INDEX messages_thread_time;
CREATE INDEX messages_author_time ON messages(author_id, source, created_at);
CREATE INDEX messages_thread_time ON messages(thread_id, source, created_at);

-- Every stored message adds one entry to each of its indexes, and each entry
-- keyed by thread lands on a page of its own: at commit, a page written to
-- the log per index per message. messages_thread_time already finds a
-- thread's messages (its first column is the thread), so the (thread_id, id)
-- index only saved sorting one thread's messages by id, which is cheap; the
-- group writer stores about a tenth more messages a second without it
-- (ARCHITECTURE.md, "Speed"). PostgreSQL keeps it: without it, its planner
-- read a notification's messages along the primary key while the table's
-- statistics were stale (1.5 ms a notification instead of 0.1).
DROP INDEX messages_thread;

-- Notifications to one person about one thread are found by address and
-- state: the outbound worker's claim asks, for each due item, whether an
-- older one to the same address is still pending or being sent; coalescing
-- reads the pending ones; References reads the sent ones. With the address
-- and the state in the index, each of those reads its own rows only, not the
-- thread's whole mail history.
DROP INDEX outbox_thread;
CREATE INDEX outbox_thread ON outbox(thread_id, to_address, status);

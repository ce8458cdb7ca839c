-- Which instance holds an outbox item's lease: at start, an instance takes
-- back at once what it had claimed before it was killed, instead of
-- waiting for the lease to run out.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;

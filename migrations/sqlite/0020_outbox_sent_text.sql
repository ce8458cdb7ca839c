-- The text of a notification as it was sent (issue 34), lz4-compressed: a
-- reply to the notification's reply address may bring it back without quote
-- marks, and it is removed by matching it. Kept as long as reply addresses
-- stay valid ([tokens] lifetime), then cleared by the purge.
ALTER TABLE outbox ADD COLUMN sent_text BLOB;
CREATE INDEX outbox_sent_text ON outbox(thread_id, recipient_id, id) WHERE sent_text IS NOT NULL;
CREATE INDEX outbox_sent_text_age ON outbox(sent_at) WHERE sent_text IS NOT NULL;

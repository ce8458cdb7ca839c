-- Notifications go out with random Message-IDs: a reply's In-Reply-To or
-- References, and a bounce's returned copy, are looked up by that ID.
CREATE INDEX outbox_rfc_message_id ON outbox(rfc_message_id) WHERE rfc_message_id IS NOT NULL;
-- One notification counts toward suppression once, whatever number of
-- reports about it arrive.
CREATE INDEX bounces_outbox ON bounces(outbox_id) WHERE outbox_id IS NOT NULL;

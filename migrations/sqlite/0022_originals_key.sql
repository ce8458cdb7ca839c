-- Originals are referred to by a key that starts with the time they were kept (Unix ms,
-- 12 hex digits) and ends with the SHA-256 of their bytes, instead of the SHA-256 alone:
-- new keys sort after every earlier one, so a reply's original goes at the end of the
-- key's index rather than on a random page of it (issue 36: a random page per message
-- cost a tenth of the messages per second). Keys written before stay as they are (the
-- SHA-256 alone); both end with the SHA-256 that the bytes are checked against.
ALTER TABLE originals RENAME COLUMN sha256 TO original_key;

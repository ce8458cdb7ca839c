-- Attachment contents are compressed with lz4 instead of PostgreSQL's own
-- pglz when stored out of line. pglz keeps going through a whole 36 KB
-- attachment once it finds any repetition near its start (most files have
-- some in their headers) and then gives up on an already compressed body:
-- under the benchmark at 50 KB it was half of PostgreSQL's CPU time. lz4 is
-- many times faster and still compresses text attachments (logs, CSV).
-- A server built without lz4 keeps the contents uncompressed instead.
-- (SQLite stores blobs as they are; it needs no counterpart.)
DO $$
BEGIN
    ALTER TABLE blobs ALTER COLUMN content SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    ALTER TABLE blobs ALTER COLUMN content SET STORAGE EXTERNAL;
END
$$;

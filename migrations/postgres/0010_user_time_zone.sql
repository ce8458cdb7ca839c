-- The IANA time zone a user reads times in (e.g. Europe/Berlin); NULL: the
-- desk's zone (`time_zone` in the configuration).
ALTER TABLE users ADD COLUMN time_zone TEXT;

-- The language a person's mail is written in (issue 33): a BCP 47 tag (`de`,
-- `pt-BR`); NULL: their organization's, then the desk's ([notify] locale), then English.
ALTER TABLE users ADD COLUMN locale TEXT;
ALTER TABLE organizations ADD COLUMN locale TEXT;

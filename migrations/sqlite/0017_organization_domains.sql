-- The mail domains of a customer organization (issue 33): a person writing
-- from one of them belongs to it. A domain belongs to one organization.
CREATE TABLE organization_domains (
    domain          TEXT PRIMARY KEY,
    organization_id INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    created_at      INTEGER NOT NULL
);
CREATE INDEX organization_domains_organization ON organization_domains(organization_id);

-- Found by the plan test (tests/it/plans.rs): an organization's sites were
-- read by scanning every site, and the console's list of unsubscribes
-- sorted every opt-out to show the newest page.
CREATE INDEX sites_organization ON sites(organization_id);
CREATE INDEX notification_optouts_created ON notification_optouts(created_at);

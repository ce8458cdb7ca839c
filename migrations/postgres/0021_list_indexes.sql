-- Found by the plan test (tests/it/plans.rs): an organization's sites were
-- read by scanning every site, the console's list of unsubscribes sorted
-- every opt-out to show the newest page, and a customer's or a site's chats
-- and tickets were found by walking every thread, newest first.
CREATE INDEX sites_organization ON sites(organization_id);
CREATE INDEX notification_optouts_created ON notification_optouts(created_at);
CREATE INDEX threads_customer ON threads(customer_id);
CREATE INDEX threads_site ON threads(site_id);

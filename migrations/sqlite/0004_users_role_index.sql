-- Every reply asks who the agents are (to notify them): without an index on
-- the role, that read every user, customers included.
CREATE INDEX users_role ON users(role);

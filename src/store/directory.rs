//! The directory: plans, organizations, sites and users (kept in memory once read, see `cache.rs`), and who opted out of which notifications.

use super::{
    Backend, Organization, Plan, Readers, Role, Site, Store, StoreError, StoreResult, User, now_ms, postgres_writes,
    sqlite_writes, through_directory,
};

impl Store {
    /// Every plan, site plans first.
    pub async fn plans(&self) -> StoreResult<Vec<Plan>> {
        Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM plans ORDER BY scope DESC, rank, id")
            .fetch_all(db)
            .await)?)
    }

    /// One plan.
    pub async fn plan(&self, id: &str) -> StoreResult<Option<Plan>> {
        let read = async {
            Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM plans WHERE id = $1")
                .bind(id)
                .fetch_optional(db)
                .await)?)
        };
        through_directory(self.directory.plan(id), read, |plan| self.directory.keep_plan(plan)).await
    }

    /// Creates an organization.
    pub async fn create_organization(&self, name: &str, plan_id: Option<&str>) -> StoreResult<Organization> {
        Ok(writing!(self, |db| sqlx::query_as(
            "INSERT INTO organizations (name, plan_id, created_at) VALUES ($1, $2, $3) RETURNING *"
        )
        .bind(name)
        .bind(plan_id)
        .bind(now_ms())
        .fetch_one(db)
        .await)?)
    }

    /// One organization.
    pub async fn organization(&self, id: i64) -> StoreResult<Option<Organization>> {
        let read = async {
            Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM organizations WHERE id = $1")
                .bind(id)
                .fetch_optional(db)
                .await)?)
        };
        through_directory(self.directory.organization(id), read, |org| self.directory.keep_organization(org)).await
    }

    /// Creates a site.
    pub async fn create_site(&self, name: &str, plan_id: &str, organization_id: Option<i64>) -> StoreResult<Site> {
        Ok(writing!(self, |db| sqlx::query_as(
            "INSERT INTO sites (name, plan_id, organization_id, created_at) VALUES ($1, $2, $3, $4) RETURNING *",
        )
        .bind(name)
        .bind(plan_id)
        .bind(organization_id)
        .bind(now_ms())
        .fetch_one(db)
        .await)?)
    }

    /// One site.
    pub async fn site(&self, id: i64) -> StoreResult<Option<Site>> {
        let read = async {
            Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM sites WHERE id = $1")
                .bind(id)
                .fetch_optional(db)
                .await)?)
        };
        through_directory(self.directory.site(id), read, |site| self.directory.keep_site(site)).await
    }

    /// The sites of an organization, best plan first.
    pub async fn sites_of_organization(&self, organization_id: i64) -> StoreResult<Vec<Site>> {
        Ok(reading!(self, |db| {
            sqlx::query_as(
            "SELECT s.* FROM sites s JOIN plans p ON p.id = s.plan_id WHERE s.organization_id = $1 ORDER BY p.rank DESC, s.id",
        )
        .bind(organization_id)
        .fetch_all(db)
        .await
        })?)
    }

    /// Creates a user; the email must not be taken.
    pub async fn create_user(
        &self,
        email: &str,
        name: &str,
        role: Role,
        organization_id: Option<i64>,
    ) -> StoreResult<User> {
        self.create_user_in_zone(email, name, role, organization_id, None).await
    }

    /// [`Store::create_user`], with the IANA time zone the user reads times in.
    pub async fn create_user_in_zone(
        &self,
        email: &str,
        name: &str,
        role: Role,
        organization_id: Option<i64>,
        time_zone: Option<&str>,
    ) -> StoreResult<User> {
        let result = writing!(self, |db| {
            sqlx::query_as(
                "INSERT INTO users (email, name, role, organization_id, created_at, time_zone) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            )
            .bind(email)
            .bind(name)
            .bind(role.as_str())
            .bind(organization_id)
            .bind(now_ms())
            .bind(time_zone)
            .fetch_one(db)
            .await
        });
        self.subscribed_agents.clear();
        match result {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!("a user with email {email} already exists")))
            }
            other => Ok(other?),
        }
    }

    /// One user.
    pub async fn user(&self, id: i64) -> StoreResult<Option<User>> {
        let read = async {
            Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(db)
                .await)?)
        };
        through_directory(self.directory.user_by_id(id), read, |user| self.directory.keep_user(&user.email, user)).await
    }

    /// The user with this (lower-case) email.
    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let read = async {
            Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM users WHERE email = $1")
                .bind(email)
                .fetch_optional(db)
                .await)?)
        };
        through_directory(self.directory.user(email), read, |user| self.directory.keep_user(email, user)).await
    }

    /// Members of an organization who may see its tickets (not Unprivileged).
    pub async fn ticket_viewers(&self, organization_id: i64) -> StoreResult<Vec<i64>> {
        Ok(reading!(self, |db| sqlx::query_scalar(
            "SELECT id FROM users WHERE organization_id = $1 AND role IN ('owner', 'admin', 'member') ORDER BY id",
        )
        .bind(organization_id)
        .fetch_all(db)
        .await)?)
    }

    /// Support agents who have not opted out of notifications of `kind`, in
    /// one query, at most a second old (every reply asks; see [`cache::Recent`]).
    pub async fn subscribed_agents(&self, kind: &str) -> StoreResult<Vec<i64>> {
        if let Some(agents) = self.subscribed_agents.get(kind) {
            return Ok(agents);
        }
        let agents: Vec<i64> = reading!(self, |db| sqlx::query_scalar(
            "SELECT id FROM users u WHERE role = 'agent' \
             AND NOT EXISTS (SELECT 1 FROM notification_optouts o WHERE o.user_id = u.id AND o.kind = $1) ORDER BY id",
        )
        .bind(kind)
        .fetch_all(db)
        .await)?;
        self.subscribed_agents.put(kind, agents.clone());
        Ok(agents)
    }

    /// Every support agent.
    pub async fn agents(&self) -> StoreResult<Vec<User>> {
        Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM users WHERE role = 'agent' ORDER BY id")
            .fetch_all(db)
            .await)?)
    }
}

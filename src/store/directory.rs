//! The directory: plans, organizations, sites and users (kept in memory once
//! read, see `cache.rs`), their changes (every instance forgets its copy at
//! once: `directory_changed`), and who opted out of which notifications.

use super::{
    Backend, Connection, Organization, Plan, Readers, Role, Site, Store, StoreError, StoreResult, User, now_ms,
    postgres_writes, sqlite_writes, through_directory,
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
        through_directory(&self.directory, self.directory.plan(id), read, |plan| self.directory.keep_plan(plan)).await
    }

    /// Creates plan `plan.id` or replaces what it includes (an admin edits
    /// the plans: they are data). Every instance reads the change at once.
    pub async fn save_plan(&self, plan: &Plan) -> StoreResult<Plan> {
        let saved = writing!(self, |db| sqlx::query_as(
            "INSERT INTO plans (id, name, scope, rank, chat, tickets, phone, on_call, ticket_response_minutes, \
             on_call_response_minutes, support_hours) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, scope = excluded.scope, rank = excluded.rank, \
             chat = excluded.chat, tickets = excluded.tickets, phone = excluded.phone, on_call = excluded.on_call, \
             ticket_response_minutes = excluded.ticket_response_minutes, \
             on_call_response_minutes = excluded.on_call_response_minutes, support_hours = excluded.support_hours \
             RETURNING *"
        )
        .bind(&plan.id)
        .bind(&plan.name)
        .bind(&plan.scope)
        .bind(plan.rank)
        .bind(plan.chat)
        .bind(&plan.tickets)
        .bind(&plan.phone)
        .bind(plan.on_call)
        .bind(plan.ticket_response_minutes)
        .bind(plan.on_call_response_minutes)
        .bind(&plan.support_hours)
        .fetch_one(db)
        .await)?;
        self.directory_changed().await;
        Ok(saved)
    }

    /// How many sites and how many organizations name plan `id`.
    pub async fn plan_users(&self, id: &str) -> StoreResult<(i64, i64)> {
        Ok(reading!(self, |db| {
            sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM sites WHERE plan_id = $1), (SELECT COUNT(*) FROM organizations WHERE plan_id = $1)"
        )
        .bind(id)
        .fetch_one(db)
        .await
        })?)
    }

    /// Creates an organization.
    pub async fn create_organization(&self, name: &str, plan_id: Option<&str>) -> StoreResult<Organization> {
        self.create_organization_with_domains(name, plan_id, &[]).await
    }

    /// Creates an organization with its mail domains (lower case, checked
    /// by the caller); a domain another organization has is a conflict
    /// naming it, and nothing is created.
    pub async fn create_organization_with_domains(
        &self,
        name: &str,
        plan_id: Option<&str>,
        domains: &[String],
    ) -> StoreResult<Organization> {
        let mut organization: Organization = writing!(self, |db, w| {
            let mut tx = db.begin().await?;
            let organization: Organization =
                sqlx::query_as("INSERT INTO organizations (name, plan_id, created_at) VALUES ($1, $2, $3) RETURNING *")
                    .bind(name)
                    .bind(plan_id)
                    .bind(now_ms())
                    .fetch_one(&mut *tx)
                    .await?;
            if let Some(conflict) = w::claim_domains(&mut tx, organization.id, domains).await? {
                return Err(StoreError::Conflict(conflict));
            }
            tx.commit().await?;
            organization
        });
        organization.domains = sorted(domains);
        Ok(organization)
    }

    /// The organization a mail domain belongs to, if any.
    pub async fn organization_of_domain(&self, domain: &str) -> StoreResult<Option<i64>> {
        Ok(reading!(self, |db| sqlx::query_scalar(
            "SELECT organization_id FROM organization_domains WHERE domain = $1"
        )
        .bind(domain.to_ascii_lowercase())
        .fetch_optional(db)
        .await)?)
    }

    /// One organization.
    pub async fn organization(&self, id: i64) -> StoreResult<Option<Organization>> {
        let read = async {
            let organization: Option<Organization> =
                reading!(self, |db| sqlx::query_as("SELECT * FROM organizations WHERE id = $1")
                    .bind(id)
                    .fetch_optional(db)
                    .await)?;
            let Some(mut organization) = organization else { return Ok(None) };
            organization.domains = reading!(self, |db| sqlx::query_scalar(
                "SELECT domain FROM organization_domains WHERE organization_id = $1 ORDER BY domain"
            )
            .bind(id)
            .fetch_all(db)
            .await)?;
            Ok(Some(organization))
        };
        through_directory(&self.directory, self.directory.organization(id), read, |org| {
            self.directory.keep_organization(org);
        })
        .await
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
        through_directory(&self.directory, self.directory.site(id), read, |site| self.directory.keep_site(site)).await
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
        through_directory(&self.directory, self.directory.user_by_id(id), read, |user| {
            self.directory.keep_user(&user.email, user);
        })
        .await
    }

    /// The user with this (lower-case) email.
    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let read = async {
            Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM users WHERE email = $1")
                .bind(email)
                .fetch_optional(db)
                .await)?)
        };
        through_directory(&self.directory, self.directory.user(email), read, |user| {
            self.directory.keep_user(email, user);
        })
        .await
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

/// The PostgreSQL channel a directory change is announced on.
const CHANGES: &str = "mailgate_directory";

/// What a change to a user sets; `None` leaves a field as it is (for the
/// nullable ones, `Some(None)` clears it).
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    /// A new display name.
    pub name: Option<String>,
    /// A new (lower-case) email address.
    pub email: Option<String>,
    /// A new role.
    pub role: Option<Role>,
    /// A new organization, or none.
    pub organization_id: Option<Option<i64>>,
    /// A new time zone, or none (the desk's).
    pub time_zone: Option<Option<String>>,
    /// A new language (BCP 47, checked by the caller), or none.
    pub locale: Option<Option<String>>,
}

/// What a change to a site sets.
#[derive(Debug, Clone, Default)]
pub struct SiteChanges {
    /// A new name.
    pub name: Option<String>,
    /// A new plan.
    pub plan_id: Option<String>,
    /// A new organization, or none.
    pub organization_id: Option<Option<i64>>,
}

/// What a change to an organization sets.
#[derive(Debug, Clone, Default)]
pub struct OrganizationChanges {
    /// A new name.
    pub name: Option<String>,
    /// A new plan, or none.
    pub plan_id: Option<Option<String>>,
    /// Its mail domains, replacing the ones it had (lower case, checked by
    /// the caller).
    pub domains: Option<Vec<String>>,
    /// A new language for its members' mail (BCP 47, checked by the caller), or none.
    pub locale: Option<Option<String>>,
}

impl Store {
    /// Changes a user; `None` when there is no such user. Takes effect at
    /// once on every instance (who is notified, who may write where).
    pub async fn update_user(&self, id: i64, changes: &UserChanges) -> StoreResult<Option<User>> {
        let before = self.user(id).await?;
        let (set_org, org) = split(changes.organization_id);
        let (set_zone, zone) = split(changes.time_zone.clone());
        let (set_locale, locale) = split(changes.locale.clone());
        let result = writing!(self, |db| sqlx::query_as(
            "UPDATE users SET name = COALESCE($1, name), email = COALESCE($2, email), role = COALESCE($3, role), \
             organization_id = CASE WHEN $4 THEN $5 ELSE organization_id END, \
             time_zone = CASE WHEN $6 THEN $7 ELSE time_zone END, \
             locale = CASE WHEN $9 THEN $10 ELSE locale END WHERE id = $8 RETURNING *"
        )
        .bind(&changes.name)
        .bind(&changes.email)
        .bind(changes.role.map(Role::as_str))
        .bind(set_org)
        .bind(org)
        .bind(set_zone)
        .bind(zone)
        .bind(id)
        .bind(set_locale)
        .bind(locale)
        .fetch_optional(db)
        .await);
        let user = match result {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!(
                    "a user with email {} already exists",
                    changes.email.as_deref().unwrap_or("")
                )));
            }
            other => other?,
        };
        if let (Some(before), Some(after)) = (&before, &user) {
            self.participants_follow_standing(before, after).await?;
        }
        self.directory_changed().await;
        Ok(user)
    }

    /// A participant's standing follows their directory entry: someone made
    /// an agent leaves every conversation they were copied into (agents are
    /// in all of them); someone who left their organization, those they
    /// joined as its member; someone made Unprivileged, its tickets.
    async fn participants_follow_standing(&self, before: &User, after: &User) -> StoreResult<()> {
        let agent = after.role() == Role::Agent && before.role() != Role::Agent;
        let left = before.organization_id.is_some() && after.organization_id != before.organization_id;
        let unprivileged = after.role() == Role::Unprivileged && before.role() != Role::Unprivileged;
        if !(agent || left || unprivileged) {
            return Ok(());
        }
        writing!(self, |db, w| {
            let mut tx = db.begin().await?;
            let threads: Vec<i64> = sqlx::query_scalar(
                "UPDATE participants SET status = 'removed', updated_at = $1 WHERE user_id = $2 AND status = 'active' \
                 AND ($3 OR (outsider = $4 AND ($5 OR ($6 AND thread_id IN \
                 (SELECT id FROM threads WHERE kind = 'ticket'))))) RETURNING thread_id",
            )
            .bind(now_ms())
            .bind(after.id)
            .bind(agent)
            .bind(false)
            .bind(left)
            .bind(unprivileged)
            .fetch_all(&mut *tx)
            .await?;
            for thread_id in threads {
                w::count_participants(&mut tx, thread_id).await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Changes a site; `None` when there is no such site.
    pub async fn update_site(&self, id: i64, changes: &SiteChanges) -> StoreResult<Option<Site>> {
        let (set_org, org) = split(changes.organization_id);
        let site = writing!(self, |db| sqlx::query_as(
            "UPDATE sites SET name = COALESCE($1, name), plan_id = COALESCE($2, plan_id), \
             organization_id = CASE WHEN $3 THEN $4 ELSE organization_id END WHERE id = $5 RETURNING *"
        )
        .bind(&changes.name)
        .bind(&changes.plan_id)
        .bind(set_org)
        .bind(org)
        .bind(id)
        .fetch_optional(db)
        .await)?;
        self.directory_changed().await;
        Ok(site)
    }

    /// Changes an organization; `None` when there is no such organization.
    pub async fn update_organization(
        &self,
        id: i64,
        changes: &OrganizationChanges,
    ) -> StoreResult<Option<Organization>> {
        let (set_plan, plan) = split(changes.plan_id.clone());
        let (set_locale, locale) = split(changes.locale.clone());
        let updated: Option<Organization> = writing!(self, |db, w| {
            let mut tx = db.begin().await?;
            let updated: Option<Organization> = sqlx::query_as(
                "UPDATE organizations SET name = COALESCE($1, name), \
                 plan_id = CASE WHEN $2 THEN $3 ELSE plan_id END, \
                 locale = CASE WHEN $5 THEN $6 ELSE locale END WHERE id = $4 RETURNING *",
            )
            .bind(&changes.name)
            .bind(set_plan)
            .bind(plan)
            .bind(id)
            .bind(set_locale)
            .bind(locale)
            .fetch_optional(&mut *tx)
            .await?;
            if let (Some(_), Some(domains)) = (&updated, &changes.domains) {
                sqlx::query("DELETE FROM organization_domains WHERE organization_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                if let Some(conflict) = w::claim_domains(&mut tx, id, domains).await? {
                    return Err(StoreError::Conflict(conflict));
                }
            }
            tx.commit().await?;
            updated
        });
        self.directory_changed().await;
        match updated {
            Some(_) => self.organization(id).await,
            None => Ok(None),
        }
    }

    /// After a directory row changed: this instance forgets its copy now,
    /// and (PostgreSQL) tells every other instance to forget theirs. A
    /// failed announcement is logged; the change itself is committed.
    pub(super) async fn directory_changed(&self) {
        self.directory.clear();
        self.subscribed_agents.clear();
        if let Backend::Postgres { pool, .. } = &self.backend {
            let announced = sqlx::query("SELECT pg_notify($1, '')").bind(CHANGES).execute(pool).await;
            if let Err(error) = announced {
                tracing::warn!(%error, "announcing a directory change to the other instances failed");
            }
        }
    }
}

/// `domains` sorted, without repeats.
fn sorted(domains: &[String]) -> Vec<String> {
    let mut sorted = domains.to_vec();
    sorted.sort();
    sorted.dedup();
    sorted
}

/// (whether to set, the value) for a nullable column's `CASE WHEN`.
fn split<T>(change: Option<Option<T>>) -> (bool, Option<T>) {
    match change {
        Some(value) => (true, value),
        None => (false, None),
    }
}

/// Listens for other instances' directory changes and forgets this
/// instance's copy on each (and whenever the listening connection was lost,
/// as a change may have gone unheard). Ends when the pool closes.
pub(super) async fn follow_changes(
    pool: sqlx::PgPool,
    directory: std::sync::Arc<super::cache::Directory>,
    agents: std::sync::Arc<super::cache::Recent<Vec<i64>>>,
) {
    let forget = || {
        directory.clear();
        agents.clear();
    };
    loop {
        let listening = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.listen(CHANGES).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listening.await {
            Ok(mut listener) => {
                forget();
                while let Ok(heard) = listener.try_recv().await {
                    // `None`: the connection was lost and is being made again.
                    let _ = heard;
                    forget();
                }
            }
            Err(error) if !pool.is_closed() => {
                tracing::warn!(%error, "listening for directory changes failed; trying again");
            }
            Err(_) => {}
        }
        if pool.is_closed() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// What happens to an erased user's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErasedMessages {
    /// They stay in their conversations, by "Erased user".
    Anonymise,
    /// They are removed from their conversations.
    Remove,
}

/// What an erasure removed, as recorded in the audit log.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Erasure {
    /// The erased user.
    pub user_id: i64,
    /// Messages left in place by "Erased user".
    pub messages_anonymised: u64,
    /// Messages removed.
    pub messages_removed: u64,
    /// Attachments removed.
    pub attachments_removed: u64,
    /// Kept originals (messages as they arrived) removed.
    pub originals_removed: u64,
    /// Held messages from them removed.
    pub held_removed: u64,
    /// Outgoing mail to them that was still waiting, now skipped.
    pub notifications_skipped: u64,
}

impl Store {
    /// Erases a user (GDPR): in one transaction, removes the originals and
    /// attachments of their messages, anonymises or removes the messages,
    /// removes held mail from them and bounces about them, skips mail still
    /// waiting to go to them, takes their address out of the inbound log
    /// and the outbox, and leaves the user row with no personal data (threads
    /// and messages still refer to it; the tokens issued to it stop
    /// working). The erasure is recorded in `audit_log` with `actor`.
    /// `None` when there is no such user, or it was erased already.
    pub async fn erase_user(&self, id: i64, messages: ErasedMessages, actor: &str) -> StoreResult<Option<Erasure>> {
        let Some(user) = self.user(id).await?.filter(|u| u.erased_at.is_none()) else { return Ok(None) };
        let email = user.email.to_lowercase();
        let erased = format!("erased-{id}@erased.invalid");
        let mut report = Erasure { user_id: id, ..Erasure::default() };
        let now = now_ms();
        let detail_mode = match messages {
            ErasedMessages::Anonymise => "anonymise",
            ErasedMessages::Remove => "remove",
        };
        writing!(self, |db, w| {
            let mut tx = db.begin().await?;
            let theirs = "SELECT id FROM messages WHERE author_id = $1";
            let blobs: Vec<String> =
                sqlx::query_scalar(&format!("SELECT DISTINCT sha256 FROM attachments WHERE message_id IN ({theirs})"))
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
            report.attachments_removed =
                sqlx::query(&format!("DELETE FROM attachments WHERE message_id IN ({theirs})"))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            for sha256 in &blobs {
                sqlx::query(
                    "DELETE FROM blobs WHERE sha256 = $1 AND NOT EXISTS (SELECT 1 FROM attachments WHERE sha256 = $1)",
                )
                .bind(sha256)
                .execute(&mut *tx)
                .await?;
            }
            // Originals: of their messages, and of mail from them held or logged.
            let originals: Vec<String> = sqlx::query_scalar(
                "SELECT original FROM messages WHERE author_id = $1 AND original IS NOT NULL \
                 UNION SELECT original FROM held_messages WHERE original IS NOT NULL \
                 AND (LOWER(mail_from) = $2 OR LOWER(COALESCE(from_address, '')) = $2) \
                 UNION SELECT original FROM inbound_log WHERE original IS NOT NULL AND LOWER(COALESCE(mail_from, '')) = $2",
            )
            .bind(id)
            .bind(&email)
            .fetch_all(&mut *tx)
            .await?;
            for sha256 in &originals {
                sqlx::query("UPDATE inbound_log SET original = NULL WHERE original = $1")
                    .bind(sha256)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE messages SET original = NULL WHERE original = $1")
                    .bind(sha256)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE held_messages SET original = NULL WHERE original = $1")
                    .bind(sha256)
                    .execute(&mut *tx)
                    .await?;
                report.originals_removed += sqlx::query("DELETE FROM originals WHERE original_key = $1")
                    .bind(sha256)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            report.held_removed = sqlx::query(
                "DELETE FROM held_messages WHERE LOWER(mail_from) = $1 OR LOWER(COALESCE(from_address, '')) = $1",
            )
            .bind(&email)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            match messages {
                ErasedMessages::Anonymise => {
                    report.messages_anonymised =
                        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM messages WHERE author_id = $1")
                            .bind(id)
                            .fetch_one(&mut *tx)
                            .await? as u64;
                }
                ErasedMessages::Remove => {
                    for statement in [
                        format!("UPDATE outbox SET message_id = NULL WHERE message_id IN ({theirs})"),
                        format!("UPDATE inbound_log SET stored_message = NULL WHERE stored_message IN ({theirs})"),
                        format!(
                            "UPDATE held_messages SET released_message = NULL WHERE released_message IN ({theirs})"
                        ),
                    ] {
                        sqlx::query(&statement).bind(id).execute(&mut *tx).await?;
                    }
                    report.messages_removed = sqlx::query("DELETE FROM messages WHERE author_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
            }
            report.notifications_skipped = sqlx::query(
                "UPDATE outbox SET status = 'skipped', last_error = 'skipped: the recipient was erased', \
                 claimed_until = NULL WHERE (recipient_id = $1 OR LOWER(to_address) = $2) AND status IN ('pending', 'failed')",
            )
            .bind(id)
            .bind(&email)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query("UPDATE outbox SET to_address = $3 WHERE recipient_id = $1 OR LOWER(to_address) = $2")
                .bind(id)
                .bind(&email)
                .bind(&erased)
                .execute(&mut *tx)
                .await?;
            // What they wrote goes with them: the Subject and the header
            // fields of their refused mail.
            sqlx::query(
                "UPDATE inbound_log SET mail_from = $2, subject = NULL, headers = NULL \
                 WHERE LOWER(COALESCE(mail_from, '')) = $1",
            )
            .bind(&email)
            .bind(&erased)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM bounces WHERE LOWER(COALESCE(recipient, '')) = $1")
                .bind(&email)
                .execute(&mut *tx)
                .await?;
            // The conversations they were copied into forget them, and
            // mailgate's own notes that named them name them no more.
            let copied_into: Vec<i64> =
                sqlx::query_scalar("SELECT DISTINCT thread_id FROM participants WHERE user_id = $1 OR email = $2")
                    .bind(id)
                    .bind(&email)
                    .fetch_all(&mut *tx)
                    .await?;
            sqlx::query("DELETE FROM participants WHERE user_id = $1 OR email = $2")
                .bind(id)
                .bind(&email)
                .execute(&mut *tx)
                .await?;
            for thread_id in copied_into {
                w::count_participants(&mut tx, thread_id).await?;
            }
            sqlx::query("UPDATE messages SET body = REPLACE(body, $1, $2) WHERE kind = 'system' AND body LIKE $3")
                .bind(&email)
                .bind(&erased)
                .bind(format!("%{email}%"))
                .execute(&mut *tx)
                .await?;
            for statement in [
                "DELETE FROM notification_optouts WHERE user_id = $1",
                "DELETE FROM sender_email_windows WHERE author_id = $1",
                "UPDATE threads SET assigned_agent_id = NULL WHERE assigned_agent_id = $1",
            ] {
                sqlx::query(statement).bind(id).execute(&mut *tx).await?;
            }
            sqlx::query(
                "UPDATE users SET email = $2, name = 'Erased user', role = 'unprivileged', organization_id = NULL, \
                 time_zone = NULL, locale = NULL, erased_at = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(&erased)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let detail = serde_json::json!({ "messages": detail_mode, "report": &report }).to_string();
            sqlx::query(
                "INSERT INTO audit_log (at, actor, action, subject, detail) VALUES ($1, $2, 'user.erased', $3, $4)",
            )
            .bind(now)
            .bind(actor)
            .bind(format!("user {id}"))
            .bind(&detail)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(())
        })?;
        self.directory_changed().await;
        Ok(Some(report))
    }
}

impl Store {
    /// The audit log, newest first, a page at a time (`before_id`).
    pub async fn audit_entries(
        &self,
        before_id: Option<i64>,
        limit: Option<i64>,
    ) -> StoreResult<Vec<super::AuditEntry>> {
        Ok(reading!(self, |db| sqlx::query_as(
            "SELECT * FROM audit_log WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"
        )
        .bind(before_id)
        .bind(super::lists::page(limit))
        .fetch_all(db)
        .await)?)
    }
}

//! The directory in the API: plans, organizations, sites and users (create,
//! read, change), and the notification kinds a user unsubscribed from. A
//! change takes effect at once on every instance.

use super::input::{body, ensure_organization, required};
use super::{ApiError, HttpState};
use crate::domain::{EmailAddress, Role};
use crate::store::{Organization, OrganizationChanges, Plan, Site, SiteChanges, User, UserChanges, UserFilter};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use std::sync::Arc;

type Shared = State<Arc<HttpState>>;
type ApiResult<T> = Result<T, ApiError>;

/// `GET /plans`
pub(super) async fn list_plans(State(state): Shared) -> ApiResult<Json<Vec<Plan>>> {
    Ok(Json(state.store.plans().await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct NewOrganization {
    name: String,
    plan: Option<String>,
    /// Its mail domains (`acme.example`), each belonging to this organization alone.
    domains: Option<Vec<String>>,
    /// The language of its members' mail (BCP 47: `de`, `pt-BR`).
    locale: Option<String>,
}

/// A language tag from a body, in its usual spelling, or a sentence saying why not.
fn locale_tag(tag: &str) -> ApiResult<String> {
    crate::notify::locale::canonical(tag)
        .ok_or_else(|| ApiError::BadRequest(format!("locale {tag:?} is not a language tag such as en, de or pt-BR")))
}

/// A locale change from a body: a tag, or `null` for none.
fn locale_change(change: Option<Option<String>>) -> ApiResult<Option<Option<String>>> {
    change.map(|tag| tag.as_deref().map(locale_tag).transpose()).transpose()
}

/// How many mail domains one organization may have.
const MAX_DOMAINS: usize = 50;

/// An organization's mail domains, checked: host names of two labels or more
/// (lower-cased, each once), never the desk's own domain or one under it.
fn organization_domains(state: &HttpState, domains: &[String]) -> ApiResult<Vec<String>> {
    if domains.len() > MAX_DOMAINS {
        return Err(ApiError::BadRequest(format!("domains: at most {MAX_DOMAINS} domains per organization")));
    }
    let mut checked = Vec::with_capacity(domains.len());
    for domain in domains {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |label: &str| {
            (1..=63).contains(&label.len())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        let labels: Vec<&str> = domain.split('.').collect();
        if domain.len() > 253 || labels.len() < 2 || !labels.iter().all(|l| label_ok(l)) {
            let shown: String = domain.chars().take(80).collect();
            return Err(ApiError::BadRequest(format!("domains: {shown:?} is not a mail domain such as acme.example")));
        }
        if domain == state.domain || domain.ends_with(&format!(".{}", state.domain)) {
            return Err(ApiError::BadRequest(format!(
                "domains: {domain} is this desk's own mail domain, not a customer's"
            )));
        }
        if !checked.contains(&domain) {
            checked.push(domain);
        }
    }
    checked.sort();
    Ok(checked)
}

/// `POST /organizations`
pub(super) async fn create_organization(
    State(state): Shared,
    json: Result<Json<NewOrganization>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Organization>)> {
    let new = body(json)?;
    if let Some(plan) = &new.plan {
        organization_plan(&state, plan).await?;
    }
    let domains = organization_domains(&state, new.domains.as_deref().unwrap_or_default())?;
    let locale = new.locale.as_deref().map(locale_tag).transpose()?;
    let mut org = state
        .store
        .create_organization_with_domains(&required(&new.name, "name")?, new.plan.as_deref(), &domains)
        .await?;
    if let Some(locale) = locale {
        let changes = OrganizationChanges { locale: Some(Some(locale)), ..OrganizationChanges::default() };
        org = state.store.update_organization(org.id, &changes).await?.unwrap_or(org);
    }
    Ok((StatusCode::CREATED, Json(org)))
}

/// `GET /organizations/{id}`
pub(super) async fn get_organization(State(state): Shared, Path(id): Path<i64>) -> ApiResult<Json<Organization>> {
    state
        .store
        .organization(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("organization {id} not found")))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct NewSite {
    name: String,
    plan: String,
    organization_id: Option<i64>,
}

/// `POST /sites`
pub(super) async fn create_site(
    State(state): Shared,
    json: Result<Json<NewSite>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Site>)> {
    let new = body(json)?;
    site_plan(&state, &new.plan).await?;
    ensure_organization(&state, new.organization_id).await?;
    let site = state.store.create_site(&required(&new.name, "name")?, &new.plan, new.organization_id).await?;
    Ok((StatusCode::CREATED, Json(site)))
}

/// `GET /sites/{id}`
pub(super) async fn get_site(State(state): Shared, Path(id): Path<i64>) -> ApiResult<Json<Site>> {
    state.store.site(id).await?.map(Json).ok_or_else(|| ApiError::NotFound(format!("site {id} not found")))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct NewUser {
    email: String,
    name: String,
    role: String,
    organization_id: Option<i64>,
    /// IANA time zone, e.g. `Europe/Berlin`.
    time_zone: Option<String>,
    /// The language of their mail (BCP 47: `de`, `pt-BR`); none: their organization's.
    locale: Option<String>,
}

/// `POST /users`
pub(super) async fn create_user(
    State(state): Shared,
    json: Result<Json<NewUser>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let new = body(json)?;
    let email = EmailAddress::parse(&new.email)
        .ok_or_else(|| ApiError::BadRequest(format!("{:?} is not a valid email address", new.email)))?;
    let role = Role::parse(&new.role).ok_or_else(|| {
        ApiError::BadRequest(format!("role {:?} is not one of owner, admin, member, unprivileged, agent", new.role))
    })?;
    if role == Role::Agent && new.organization_id.is_some() {
        return Err(ApiError::BadRequest("agents do not belong to a customer organization".to_owned()));
    }
    ensure_organization(&state, new.organization_id).await?;
    let name = crate::notify::render::header_safe(&required(&new.name, "name")?);
    if let Some(zone) = &new.time_zone
        && zone.parse::<chrono_tz::Tz>().is_err()
    {
        return Err(ApiError::BadRequest(format!(
            "time_zone {zone:?} is not an IANA time zone name such as Europe/Berlin"
        )));
    }
    let locale = new.locale.as_deref().map(locale_tag).transpose()?;
    let created = state
        .store
        .create_user_in_zone(email.as_str(), &name, role, new.organization_id, new.time_zone.as_deref())
        .await;
    match created {
        Ok(user) if locale.is_some() => {
            let changes = UserChanges { locale: Some(locale), ..UserChanges::default() };
            let user = state.store.update_user(user.id, &changes).await?.unwrap_or(user);
            Ok((StatusCode::CREATED, Json(user)))
        }
        Ok(user) => Ok((StatusCode::CREATED, Json(user))),
        // The Dashboard learns which user has the address, to link to it.
        Err(crate::store::StoreError::Conflict(message)) => match state.store.user_by_email(email.as_str()).await? {
            Some(existing) => Err(ApiError::Exists(message, existing.id)),
            None => Err(ApiError::Conflict(message)),
        },
        Err(other) => Err(other.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EraseQuery {
    /// `anonymise` (the default) or `remove`.
    messages: Option<String>,
    /// Who asked, for the audit log.
    by: Option<String>,
}

/// `DELETE /users/{id}?messages=anonymise|remove&by=NAME`: erases a user
/// (GDPR); answers what was removed. 404 for no such user, or one erased
/// already.
pub(super) async fn erase_user(
    State(state): Shared,
    Path(id): Path<i64>,
    Query(q): Query<EraseQuery>,
) -> ApiResult<Json<crate::store::Erasure>> {
    let messages = match q.messages.as_deref() {
        None | Some("anonymise" | "anonymize") => crate::store::ErasedMessages::Anonymise,
        Some("remove") => crate::store::ErasedMessages::Remove,
        Some(other) => {
            return Err(ApiError::BadRequest(format!("messages={other:?}: use anonymise or remove")));
        }
    };
    let actor = q.by.filter(|b| !b.trim().is_empty()).unwrap_or_else(|| "api".to_owned());
    let erased = state.store.erase_user(id, messages, &actor).await?;
    erased.map(Json).ok_or_else(|| ApiError::NotFound(format!("user {id} not found (or erased already)")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Page {
    before_id: Option<i64>,
    limit: Option<i64>,
}

/// `GET /admin/audit?before_id=&limit=`: erasures and who asked for them.
pub(super) async fn audit(
    State(state): Shared,
    Query(page): Query<Page>,
) -> ApiResult<Json<Vec<crate::store::AuditEntry>>> {
    Ok(Json(state.store.audit_entries(page.before_id, page.limit).await?))
}

/// `GET /users?email=&organization_id=&role=&before_id=&limit=`: users,
/// newest first (`email` finds one by address).
pub(super) async fn list_users(State(state): Shared, Query(filter): Query<UserFilter>) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(state.store.users_page(&filter).await?))
}

/// `GET /users/{id}`
pub(super) async fn get_user(State(state): Shared, Path(id): Path<i64>) -> ApiResult<Json<User>> {
    state.store.user(id).await?.map(Json).ok_or_else(|| ApiError::NotFound(format!("user {id} not found")))
}

/// One notification kind a user unsubscribed from.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Unsubscribe {
    kind: String,
    since: String,
}

/// `GET /users/{id}/unsubscribes`: the notification kinds the user opted out of.
pub(super) async fn list_unsubscribes(State(state): Shared, Path(id): Path<i64>) -> ApiResult<Json<Vec<Unsubscribe>>> {
    state.store.user(id).await?.ok_or_else(|| ApiError::NotFound(format!("user {id} not found")))?;
    let found = state.store.opt_outs(id).await?;
    Ok(Json(found.into_iter().map(|(kind, at)| Unsubscribe { kind, since: crate::store::rfc3339(at) }).collect()))
}

/// `DELETE /users/{id}/unsubscribes/{kind}`: undoes an unsubscribe (the
/// user gets notifications of that kind again); 404 when there was none.
pub(super) async fn undo_unsubscribe(
    State(state): Shared,
    Path((id, kind)): Path<(i64, String)>,
) -> ApiResult<StatusCode> {
    if !crate::notify::OPTIONAL_KINDS.contains(&kind.as_str()) {
        return Err(ApiError::NotFound(format!(
            "no notification kind {kind:?} to unsubscribe from; there are: {}",
            crate::notify::OPTIONAL_KINDS.join(", ")
        )));
    }
    match state.store.opt_in(id, &kind).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::NotFound(format!("user {id} is not unsubscribed from {kind}"))),
    }
}

/// For `Option<Option<T>>` fields: absent is `None`, `null` is `Some(None)`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A site plan that exists, or a 400 naming it and the site plans there are.
async fn site_plan(state: &HttpState, plan: &str) -> ApiResult<()> {
    match state.store.plan(plan).await? {
        Some(p) if p.scope == "site" => Ok(()),
        _ => Err(ApiError::BadRequest(format!(
            "{plan:?} is not a site plan; the site plans are: {}",
            plan_ids(state, |p| p.scope == "site").await?
        ))),
    }
}

/// An organization or account plan that exists, or a 400 naming it and
/// the ones there are.
async fn organization_plan(state: &HttpState, plan: &str) -> ApiResult<()> {
    match state.store.plan(plan).await? {
        Some(p) if p.scope != "site" => Ok(()),
        _ => Err(ApiError::BadRequest(format!(
            "{plan:?} is not an organization or account plan; those plans are: {}",
            plan_ids(state, |p| p.scope != "site").await?
        ))),
    }
}

/// The ids of the plans `which` chooses, comma separated.
async fn plan_ids(state: &HttpState, which: impl Fn(&Plan) -> bool) -> ApiResult<String> {
    let plans = state.store.plans().await?;
    Ok(plans.iter().filter(|p| which(p)).map(|p| p.id.as_str()).collect::<Vec<_>>().join(", "))
}

/// `PUT /admin/plans/{id}` `{name, scope, rank?, chat?, tickets?, phone?,
/// on_call?, ticket_response_minutes?, on_call_response_minutes?,
/// support_hours?}`: adds a plan or changes what it includes, on every
/// instance at once.
pub(super) async fn save_plan(
    State(state): Shared,
    Path(id): Path<String>,
    json: Result<Json<crate::http::plans::PlanBody>, JsonRejection>,
) -> ApiResult<Json<Plan>> {
    let plan: crate::http::plans::PlanBody = body(json)?;
    let plan = plan.validated(&id)?;
    Ok(Json(crate::http::plans::save(&state, &plan).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UserPatch {
    name: Option<String>,
    email: Option<String>,
    role: Option<String>,
    #[serde(default, deserialize_with = "present")]
    organization_id: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    time_zone: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    locale: Option<Option<String>>,
}

/// `PATCH /users/{id}` `{name?, email?, role?, organization_id?, time_zone?}`
/// (`null` clears the organization or the time zone).
pub(super) async fn update_user(
    State(state): Shared,
    Path(id): Path<i64>,
    json: Result<Json<UserPatch>, JsonRejection>,
) -> ApiResult<Json<User>> {
    let patch = body(json)?;
    let current = state.store.user(id).await?.ok_or_else(|| ApiError::NotFound(format!("user {id} not found")))?;
    let email = match &patch.email {
        Some(email) => Some(
            EmailAddress::parse(email)
                .ok_or_else(|| ApiError::BadRequest(format!("{email:?} is not a valid email address")))?
                .as_str()
                .to_owned(),
        ),
        None => None,
    };
    let role = match &patch.role {
        Some(role) => Some(Role::parse(role).ok_or_else(|| {
            ApiError::BadRequest(format!("role {role:?} is not one of owner, admin, member, unprivileged, agent"))
        })?),
        None => None,
    };
    let organization = patch.organization_id.unwrap_or(current.organization_id);
    if role.unwrap_or(current.role()) == Role::Agent && organization.is_some() {
        return Err(ApiError::BadRequest("agents do not belong to a customer organization".to_owned()));
    }
    if let Some(Some(org)) = patch.organization_id {
        ensure_organization(&state, Some(org)).await?;
    }
    if let Some(Some(zone)) = &patch.time_zone
        && zone.parse::<chrono_tz::Tz>().is_err()
    {
        return Err(ApiError::BadRequest(format!(
            "time_zone {zone:?} is not an IANA time zone name such as Europe/Berlin"
        )));
    }
    let name = patch.name.as_deref().map(|name| required(name, "name")).transpose()?;
    let name = name.map(|name| crate::notify::render::header_safe(&name));
    let changes = UserChanges {
        name,
        email,
        role,
        organization_id: patch.organization_id,
        time_zone: patch.time_zone,
        locale: locale_change(patch.locale)?,
    };
    let user = state.store.update_user(id, &changes).await?;
    user.map(Json).ok_or_else(|| ApiError::NotFound(format!("user {id} not found")))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SitePatch {
    name: Option<String>,
    plan: Option<String>,
    #[serde(default, deserialize_with = "present")]
    organization_id: Option<Option<i64>>,
}

/// `PATCH /sites/{id}` `{name?, plan?, organization_id?}`
pub(super) async fn update_site(
    State(state): Shared,
    Path(id): Path<i64>,
    json: Result<Json<SitePatch>, JsonRejection>,
) -> ApiResult<Json<Site>> {
    let patch = body(json)?;
    if let Some(plan) = &patch.plan {
        site_plan(&state, plan).await?;
    }
    if let Some(Some(org)) = patch.organization_id {
        ensure_organization(&state, Some(org)).await?;
    }
    let name = patch.name.as_deref().map(|name| required(name, "name")).transpose()?;
    let changes = SiteChanges { name, plan_id: patch.plan, organization_id: patch.organization_id };
    let site = state.store.update_site(id, &changes).await?;
    site.map(Json).ok_or_else(|| ApiError::NotFound(format!("site {id} not found")))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct OrganizationPatch {
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    plan: Option<Option<String>>,
    /// Its mail domains, replacing the ones it had (`[]` removes them all).
    domains: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    locale: Option<Option<String>>,
}

/// `PATCH /organizations/{id}` `{name?, plan?, domains?}` (`"plan": null`
/// removes it; `domains` replaces the list).
pub(super) async fn update_organization(
    State(state): Shared,
    Path(id): Path<i64>,
    json: Result<Json<OrganizationPatch>, JsonRejection>,
) -> ApiResult<Json<Organization>> {
    let patch = body(json)?;
    if let Some(Some(plan)) = &patch.plan {
        organization_plan(&state, plan).await?;
    }
    let name = patch.name.as_deref().map(|name| required(name, "name")).transpose()?;
    let domains = patch.domains.as_deref().map(|d| organization_domains(&state, d)).transpose()?;
    let changes = OrganizationChanges { name, plan_id: patch.plan, domains, locale: locale_change(patch.locale)? };
    let organization = state.store.update_organization(id, &changes).await?;
    organization.map(Json).ok_or_else(|| ApiError::NotFound(format!("organization {id} not found")))
}

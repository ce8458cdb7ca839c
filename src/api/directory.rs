//! The directory in the API: plans, organizations, sites and users, and the
//! notification kinds a user unsubscribed from.

use super::handlers::{body, ensure_organization, required};
use super::{ApiError, ApiState};
use crate::domain::{EmailAddress, Role};
use crate::store::{Organization, Plan, Site, User};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

type Shared = State<Arc<ApiState>>;
type ApiResult<T> = Result<T, ApiError>;

/// `GET /plans`
pub(super) async fn list_plans(State(state): Shared) -> ApiResult<Json<Vec<Plan>>> {
    Ok(Json(state.store.plans().await?))
}

#[derive(Deserialize)]
pub(super) struct NewOrganization {
    name: String,
    plan: Option<String>,
}

/// `POST /organizations`
pub(super) async fn create_organization(
    State(state): Shared,
    json: Result<Json<NewOrganization>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Organization>)> {
    let new = body(json)?;
    if let Some(plan) = &new.plan {
        match state.store.plan(plan).await? {
            Some(p) if p.scope != "site" => {}
            _ => {
                return Err(ApiError::BadRequest(format!("{plan:?} is not an organization or account plan")));
            }
        }
    }
    let org = state.store.create_organization(&required(&new.name, "name")?, new.plan.as_deref()).await?;
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

#[derive(Deserialize)]
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
    match state.store.plan(&new.plan).await? {
        Some(p) if p.scope == "site" => {}
        _ => {
            return Err(ApiError::BadRequest(format!("{:?} is not a site plan (see GET /api/v1/plans)", new.plan)));
        }
    }
    ensure_organization(&state, new.organization_id).await?;
    let site = state.store.create_site(&required(&new.name, "name")?, &new.plan, new.organization_id).await?;
    Ok((StatusCode::CREATED, Json(site)))
}

/// `GET /sites/{id}`
pub(super) async fn get_site(State(state): Shared, Path(id): Path<i64>) -> ApiResult<Json<Site>> {
    state.store.site(id).await?.map(Json).ok_or_else(|| ApiError::NotFound(format!("site {id} not found")))
}

#[derive(Deserialize)]
pub(super) struct NewUser {
    email: String,
    name: String,
    role: String,
    organization_id: Option<i64>,
    /// IANA time zone, e.g. `Europe/Berlin`.
    time_zone: Option<String>,
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
    let user = state
        .store
        .create_user_in_zone(email.as_str(), &name, role, new.organization_id, new.time_zone.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// `GET /users/{id}`
pub(super) async fn get_user(State(state): Shared, Path(id): Path<i64>) -> ApiResult<Json<User>> {
    state.store.user(id).await?.map(Json).ok_or_else(|| ApiError::NotFound(format!("user {id} not found")))
}

/// One notification kind a user unsubscribed from.
#[derive(Serialize)]
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

//! Webhooks in the admin API: register an endpoint (its signing secret is
//! answered once), list them, remove one. Deliveries are outbox rows of kind
//! `webhook` (`GET /api/v1/outbox?kind=webhook`, retry as any other).

use super::{ApiError, HttpState};
use crate::store::{EVENTS, Webhook};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

type Shared = State<Arc<HttpState>>;
type ApiResult<T> = Result<T, ApiError>;

/// `GET /admin/webhooks`
pub(super) async fn list(State(state): Shared) -> ApiResult<Json<Vec<Webhook>>> {
    Ok(Json(state.store.webhooks().await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewWebhook {
    url: String,
    /// The events wanted; all of them when left out.
    events: Option<Vec<String>>,
}

/// A registered endpoint with its secret, answered once.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Registered {
    #[serde(flatten)]
    webhook: Webhook,
    /// Keys the `Mailgate-Signature` of every delivery; shown only now.
    secret: String,
}

/// `POST /admin/webhooks` `{url, events?}`
pub(super) async fn create(
    State(state): Shared,
    json: Result<Json<NewWebhook>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Registered>)> {
    let Json(new) = json.map_err(|e| ApiError::from_json(&e))?;
    let url = new.url.trim();
    if !(url.starts_with("https://") || url.starts_with("http://")) || url.chars().any(char::is_whitespace) {
        return Err(ApiError::BadRequest(format!("url {url:?} must be an http:// or https:// URL")));
    }
    let events = match new.events {
        None => "*".to_owned(),
        Some(events) => {
            if let Some(unknown) = events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
                return Err(ApiError::BadRequest(format!("no event {unknown:?}; there are: {}", EVENTS.join(", "))));
            }
            if events.is_empty() {
                return Err(ApiError::BadRequest("events is empty: leave it out for all of them".to_owned()));
            }
            events.join(",")
        }
    };
    let secret = crate::http::credentials::new_token();
    let webhook = state.store.create_webhook(url, &events, &secret).await?;
    Ok((StatusCode::CREATED, Json(Registered { webhook, secret })))
}

/// `DELETE /admin/webhooks/{id}`: deliveries still waiting fail as removed.
pub(super) async fn delete(State(state): Shared, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    match state.store.delete_webhook(id).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::NotFound(format!("webhook {id} not found"))),
    }
}

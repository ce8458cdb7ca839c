//! The JSON HTTP API: the Dashboard's side of mailgate. Every route under
//! `/api/v1` needs `Authorization: Bearer TOKEN`; `/healthz` does not.

pub mod credentials;
mod directory;
mod error;
mod handlers;
mod held;
mod originals;
mod suppressions;
mod webhooks;

use crate::store::Store;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
pub use error::ApiError;
use std::sync::Arc;

/// What the handlers share.
#[derive(Debug)]
pub struct ApiState {
    /// The database.
    pub store: Store,
    /// The Dashboard's bearer token.
    pub api_token: credentials::Credential,
    /// Where on-call pages go.
    pub on_call_address: String,
    /// Verifies unsubscribe tokens.
    pub signer: crate::domain::TokenSigner,
    /// The admin bearer token.
    pub admin_token: credentials::Credential,
    /// Our mail domain (for dry runs).
    pub domain: String,
    /// The routing rules in force.
    pub rules: Arc<crate::rules::LiveRules>,
    /// The outbound worker's running totals.
    pub outbound: Arc<crate::outbound::OutboundCounters>,
    /// The inbound pipeline (to release held mail into its thread).
    pub pipeline: crate::pipeline::Pipeline,
    /// Counted hard bounces that suppress an address (`delivery.max_hard_bounces`).
    pub max_hard_bounces: u32,
    /// How many days a hard bounce counts (`delivery.suppression_days`, 0: ever).
    pub suppression_days: u32,
}

/// The API's routes.
pub fn router(state: Arc<ApiState>) -> Router {
    let api = Router::new()
        .route("/plans", get(directory::list_plans))
        .route("/organizations", post(directory::create_organization))
        .route("/organizations/{id}", get(directory::get_organization).patch(directory::update_organization))
        .route("/sites", post(directory::create_site))
        .route("/sites/{id}", get(directory::get_site).patch(directory::update_site))
        .route("/users", get(directory::list_users).post(directory::create_user))
        .route("/users/{id}", get(directory::get_user).patch(directory::update_user).delete(directory::erase_user))
        .route("/users/{id}/unsubscribes", get(directory::list_unsubscribes))
        .route("/users/{id}/unsubscribes/{kind}", axum::routing::delete(directory::undo_unsubscribe))
        .route("/chats", get(handlers::list_chats).post(handlers::open_chat))
        .route("/chats/{id}", get(handlers::get_chat))
        .route("/chats/{id}/messages", get(handlers::list_chat_messages).post(handlers::post_chat_message))
        .route("/chats/{id}/close", post(handlers::close_chat))
        .route("/tickets/{number}/close", post(handlers::close_ticket))
        .route("/chats/{id}/reopen", post(handlers::reopen_chat))
        .route("/tickets/{number}/reopen", post(handlers::reopen_ticket))
        .route("/tickets", get(handlers::list_tickets).post(handlers::open_ticket))
        .route("/tickets/{number}", get(handlers::get_ticket))
        .route("/tickets/{number}/messages", get(handlers::list_ticket_messages).post(handlers::post_ticket_message))
        .route("/attachments/{id}", get(handlers::download_attachment))
        .route("/messages/{id}", get(originals::get_message))
        .route("/messages/{id}/raw", get(originals::message_raw))
        .route("/inbound-log", get(handlers::inbound_log))
        .route("/inbound-log/{id}/raw", get(originals::log_raw))
        .route("/outbox", get(handlers::outbox))
        .route("/outbox/{id}/retry", post(handlers::retry_outbox))
        .route("/chats/{id}/transcript", post(handlers::send_transcript))
        .route("/bounces", get(handlers::bounces))
        .route("/held", get(handlers::held))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), require_token));
    let admin = Router::new()
        .route("/rules", get(handlers::current_rules))
        .route("/stats", get(handlers::stats))
        .route("/rules/check", post(handlers::check_rules))
        .route("/rules/test", post(handlers::test_rules))
        .route("/held", get(held::list))
        .route("/held/bulk", post(held::bulk))
        .route("/held/{id}", get(held::show))
        .route("/held/{id}/raw", get(held::raw))
        .route("/held/{id}/release", post(held::release))
        .route("/held/{id}/discard", post(held::discard))
        .route("/held/{id}/notice", post(held::notice))
        .route("/suppressions", get(suppressions::list))
        .route("/audit", get(directory::audit))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/webhooks/{id}", axum::routing::delete(webhooks::delete))
        .route("/suppressions/{address}/lift", post(suppressions::lift))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), require_admin));
    Router::new()
        .nest("/api/v1/admin", admin)
        .nest("/api/v1", api)
        .route("/healthz", get(|| async { "ok" }))
        // The token in the link is the credential: no bearer token here.
        .route("/unsubscribe/{token}", get(handlers::unsubscribe_page).post(handlers::unsubscribe))
        .with_state(state)
}

/// The SHA-256 of the request's bearer token, if it has one.
fn bearer_hash(request: &Request) -> Option<[u8; 32]> {
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(credentials::hash_token)
}

async fn require_token(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Result<Response, ApiError> {
    match bearer_hash(&request) {
        Some(given) if state.api_token.admits(&state.store, &given).await => Ok(next.run(request).await),
        _ => Err(ApiError::Unauthorized),
    }
}

async fn require_admin(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Result<Response, ApiError> {
    match bearer_hash(&request) {
        Some(given) if state.admin_token.admits(&state.store, &given).await => Ok(next.run(request).await),
        _ => Err(ApiError::Unauthorized),
    }
}

//! The JSON HTTP API: the Dashboard's side of mailgate. Every route under
//! `/api/v1` needs `Authorization: Bearer TOKEN`; `/healthz` does not.

mod error;
mod handlers;
mod held;
mod originals;
mod suppressions;

use crate::store::Store;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
pub use error::ApiError;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What the handlers share.
#[derive(Debug)]
pub struct ApiState {
    /// The database.
    pub store: Store,
    /// SHA-256 of the bearer token; compared in constant time.
    pub token_hash: [u8; 32],
    /// Where on-call pages go.
    pub on_call_address: String,
    /// Verifies unsubscribe tokens.
    pub signer: crate::domain::TokenSigner,
    /// SHA-256 of the admin bearer token.
    pub admin_hash: [u8; 32],
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
        .route("/plans", get(handlers::list_plans))
        .route("/organizations", post(handlers::create_organization))
        .route("/organizations/{id}", get(handlers::get_organization))
        .route("/sites", post(handlers::create_site))
        .route("/sites/{id}", get(handlers::get_site))
        .route("/users", post(handlers::create_user))
        .route("/users/{id}", get(handlers::get_user))
        .route("/chats", post(handlers::open_chat))
        .route("/chats/{id}", get(handlers::get_chat))
        .route("/chats/{id}/messages", get(handlers::list_chat_messages).post(handlers::post_chat_message))
        .route("/chats/{id}/close", post(handlers::close_chat))
        .route("/tickets/{number}/close", post(handlers::close_ticket))
        .route("/chats/{id}/reopen", post(handlers::reopen_chat))
        .route("/tickets/{number}/reopen", post(handlers::reopen_ticket))
        .route("/tickets", post(handlers::open_ticket))
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

/// Hash of a bearer token, as [`ApiState::token_hash`] stores it.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether the request's bearer token hashes to `expected`. Comparing
/// hashes keeps the comparison's time independent of the secret.
fn bearer_matches(request: &Request, expected: &[u8; 32]) -> bool {
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(hash_token);
    given.is_some_and(|g| g.iter().zip(expected.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0)
}

async fn require_token(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Result<Response, ApiError> {
    if !bearer_matches(&request, &state.token_hash) {
        return Err(ApiError::Unauthorized);
    }
    Ok(next.run(request).await)
}

async fn require_admin(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Result<Response, ApiError> {
    if !bearer_matches(&request, &state.admin_hash) {
        return Err(ApiError::Unauthorized);
    }
    Ok(next.run(request).await)
}

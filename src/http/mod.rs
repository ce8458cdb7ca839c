//! What the JSON API and the admin console share, below both: the server's
//! HTTP state, the credentials and the throttling of wrong ones, the
//! client's address (believed from trusted proxies only), errors, kept mail
//! as downloads, and the plans an admin edits. Neither `api` nor `console`
//! calls the other.

pub mod credentials;
pub mod downloads;
mod error;
pub mod plans;
pub mod throttle;

use crate::store::Store;
pub use error::ApiError;
pub(crate) use error::json_errors;
use std::sync::Arc;

/// What the handlers share.
#[derive(Debug)]
pub struct HttpState {
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
    /// The metrics `GET /metrics` shows.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Counted hard bounces that suppress an address (`delivery.max_hard_bounces`).
    pub max_hard_bounces: u32,
    /// How many days a hard bounce counts (`delivery.suppression_days`, 0: ever).
    pub suppression_days: u32,
    /// The folder of template overrides, if any (the console's previews).
    pub templates_dir: Option<std::path::PathBuf>,
    /// Failed credential checks per client address.
    pub throttle: throttle::Throttle,
    /// The reverse proxies whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: throttle::TrustedProxies,
    /// The DNS checks of `mailgate doctor`, for the console and the API;
    /// why not, when they could not be set up (no resolver configuration).
    pub doctor: Result<Arc<crate::doctor::Setup>, String>,
    /// Cancelled when the server begins to stop (`/readyz` then says so).
    pub stopping: tokio_util::sync::CancellationToken,
}

/// The client address of a request (see [`throttle::client_ip`]).
pub(crate) fn request_ip(
    state: &HttpState,
    extensions: &axum::http::Extensions,
    headers: &axum::http::HeaderMap,
) -> std::net::IpAddr {
    throttle::client_ip(peer_ip(extensions), headers, &state.trusted_proxies)
}

/// The address of the connection a request came on.
fn peer_ip(extensions: &axum::http::Extensions) -> std::net::IpAddr {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |info| info.0.ip())
}

/// Whether a request came through one of the trusted proxies, whose
/// `X-Forwarded-*` headers are believed.
pub(crate) fn via_trusted_proxy(state: &HttpState, extensions: &axum::http::Extensions) -> bool {
    state.trusted_proxies.trust(peer_ip(extensions))
}

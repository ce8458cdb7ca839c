//! The JSON HTTP API: the Dashboard's side of mailgate. Every route under
//! `/api/v1` needs `Authorization: Bearer TOKEN`; `/healthz` does not.

pub(crate) mod directory;
pub(crate) mod held;
mod input;
pub mod openapi;
pub(crate) mod originals;
mod participants;
mod records;
mod rules;
mod suppressions;
mod threads;
mod unsubscribe;
mod webhooks;

use crate::http::request_ip;
pub use crate::http::{ApiError, HttpState, credentials, throttle};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

/// One route as the API description lists it, with the types its body
/// and its answer are read and written as.
#[derive(Debug, Clone)]
pub struct RouteDoc {
    /// `get`, `post`, `patch` or `delete`.
    pub method: &'static str,
    /// The path under `/api/v1` (or `/api/v1/admin`), with `{name}` parameters.
    pub path: &'static str,
    /// What it does, in one line.
    pub summary: &'static str,
    /// Whether it needs the admin token (else the API token).
    pub admin: bool,
    /// The JSON body it takes, if any.
    pub request: Option<openapi::Body>,
    /// What it answers.
    pub response: openapi::Shape,
}

/// Declares routes once: each is added to the router and to the list the
/// API description (`GET /api/v1/openapi.json`) is written from, so that
/// the description cannot drift from what is served.
macro_rules! routes {
    ($router:expr, $docs:expr, $admin:expr; $($method:ident $path:literal => $handler:path, $summary:literal, $request:expr, $response:expr;)*) => {{
        #[allow(unused_imports, reason = "each table uses some of the shapes")]
        use openapi::{accepted, bytes, created, empty, json, list, none, object, objects, one};
        let mut router = $router;
        $(
            router = router.route($path, axum::routing::$method($handler));
            $docs.push(RouteDoc {
                method: stringify!($method),
                path: $path,
                summary: $summary,
                admin: $admin,
                request: $request,
                response: $response,
            });
        )*
        router
    }};
}

/// The routes of `/api/v1` and `/api/v1/admin`, with their description.
fn api_routes() -> (Router<Arc<HttpState>>, Router<Arc<HttpState>>, Vec<RouteDoc>) {
    let mut docs = Vec::new();
    let api = routes!(Router::new(), docs, false;
        get "/plans" => directory::list_plans, "Support plans and what they include", none(), list::<crate::store::Plan>();
        post "/organizations" => directory::create_organization, "Create an organization", json::<directory::NewOrganization>(), created::<crate::store::Organization>();
        get "/organizations/{id}" => directory::get_organization, "One organization", none(), one::<crate::store::Organization>();
        patch "/organizations/{id}" => directory::update_organization, "Rename an organization or change its plan", json::<directory::OrganizationPatch>(), one::<crate::store::Organization>();
        post "/sites" => directory::create_site, "Create a site", json::<directory::NewSite>(), created::<crate::store::Site>();
        get "/sites/{id}" => directory::get_site, "One site", none(), one::<crate::store::Site>();
        patch "/sites/{id}" => directory::update_site, "Rename a site, change its plan or organization", json::<directory::SitePatch>(), one::<crate::store::Site>();
        get "/users" => directory::list_users, "Users, by email, organization or role, a page at a time", none(), list::<crate::store::User>();
        post "/users" => directory::create_user, "Create a user (409 with the id when the address is taken)", json::<directory::NewUser>(), created::<crate::store::User>();
        get "/users/{id}" => directory::get_user, "One user", none(), one::<crate::store::User>();
        patch "/users/{id}" => directory::update_user, "Change a user's name, address, role, organization or time zone", json::<directory::UserPatch>(), one::<crate::store::User>();
        delete "/users/{id}" => directory::erase_user, "Erase a user (GDPR): anonymise or remove their messages", none(), one::<crate::store::Erasure>();
        get "/users/{id}/unsubscribes" => directory::list_unsubscribes, "The notification kinds a user unsubscribed from", none(), list::<directory::Unsubscribe>();
        delete "/users/{id}/unsubscribes/{kind}" => directory::undo_unsubscribe, "Undo an unsubscribe", none(), empty();
        get "/chats" => threads::list_chats, "Chats, by site, organization, customer, status, a page at a time", none(), list::<crate::store::Thread>();
        post "/chats" => threads::open_chat, "A customer opens a chat", json::<threads::NewChat>(), created::<threads::ThreadView>();
        get "/chats/{id}" => threads::get_chat, "One chat with its messages", none(), one::<threads::ThreadView>();
        get "/chats/{id}/messages" => threads::list_chat_messages, "A chat's messages", none(), list::<threads::MessageView>();
        post "/chats/{id}/messages" => threads::post_chat_message, "Post in a chat", json::<threads::PostMessage>(), created::<threads::MessageView>();
        post "/chats/{id}/close" => threads::close_chat, "Close a chat (emailed replies are refused)", none(), one::<crate::store::Thread>();
        post "/chats/{id}/reopen" => threads::reopen_chat, "Reopen a chat", none(), one::<crate::store::Thread>();
        post "/chats/{id}/transcript" => threads::send_transcript, "Mail a chat's transcript", json::<threads::TranscriptRequest>(), accepted();
        get "/tickets" => threads::list_tickets, "Tickets, by site, organization, customer, status, a page at a time", none(), list::<crate::store::Thread>();
        post "/tickets" => threads::open_ticket, "A customer opens a ticket (403 unless the plan includes tickets)", json::<threads::NewTicket>(), created::<threads::ThreadView>();
        get "/tickets/{number}" => threads::get_ticket, "One ticket with its messages", none(), one::<threads::ThreadView>();
        get "/tickets/{number}/messages" => threads::list_ticket_messages, "A ticket's messages", none(), list::<threads::MessageView>();
        post "/tickets/{number}/messages" => threads::post_ticket_message, "Post in a ticket", json::<threads::PostMessage>(), created::<threads::MessageView>();
        post "/tickets/{number}/close" => threads::close_ticket, "Close a ticket", none(), one::<crate::store::Thread>();
        post "/tickets/{number}/reopen" => threads::reopen_ticket, "Reopen a ticket", none(), one::<crate::store::Thread>();
        get "/chats/{id}/participants" => participants::list_of_chat, "The people copied into a chat, with their standing", none(), list::<crate::store::Participant>();
        post "/chats/{id}/participants" => participants::add_to_chat, "Add someone to a chat (their own reply address from the next notification)", json::<participants::NewPerson>(), created::<crate::store::Participant>();
        get "/tickets/{number}/participants" => participants::list_of_ticket, "The people copied into a ticket, with their standing", none(), list::<crate::store::Participant>();
        post "/tickets/{number}/participants" => participants::add_to_ticket, "Add someone to a ticket", json::<participants::NewPerson>(), created::<crate::store::Participant>();
        get "/participants/pending" => participants::pending, "People copied into conversations who wait for an agent", none(), list::<crate::store::Participant>();
        post "/participants/{id}/admit" => participants::admit, "Let a pending person in", none(), one::<crate::store::Participant>();
        post "/participants/{id}/decline" => participants::decline, "Decline a pending person", none(), one::<crate::store::Participant>();
        delete "/participants/{id}" => participants::remove, "Take someone out of a conversation", none(), one::<crate::store::Participant>();
        get "/attachments/{id}" => threads::download_attachment, "Download an attachment", none(), bytes();
        get "/messages/{id}" => originals::get_message, "One message with what extraction removed", none(), one::<originals::MessageDetail>();
        get "/messages/{id}/raw" => originals::message_raw, "The mail a message was read from, byte for byte", none(), bytes();
        get "/inbound-log" => records::inbound_log, "SMTP transactions and their outcome, with filters", none(), list::<crate::store::InboundLogEntry>();
        get "/inbound-log/{id}/raw" => originals::log_raw, "The mail of a logged transaction", none(), bytes();
        get "/outbox" => records::outbox, "Outgoing mail and webhook deliveries, with filters", none(), list::<crate::store::OutboxItem>();
        post "/outbox/{id}/retry" => records::retry_outbox, "Send a failed, skipped or waiting item now", none(), one::<crate::store::OutboxItem>();
        get "/bounces" => records::bounces, "Delivery reports about our mail", none(), list::<crate::store::Bounce>();
        get "/held" => records::held, "The held queue, read-only", none(), list::<crate::store::HeldItem>();
    );
    let admin = routes!(Router::new(), docs, true;
        get "/rules" => rules::current_rules, "The routing rules in force", none(), object();
        post "/rules/check" => rules::check_rules, "Check a rules file", json::<rules::RulesText>(), object();
        post "/rules/test" => rules::test_rules, "Dry-run a message against the rules", json::<rules::RulesTest>(), object();
        get "/stats" => records::stats, "Running totals since start", none(), object();
        get "/doctor" => records::doctor, "The DNS checks of mailgate doctor: MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, PTR", none(), object();
        get "/held" => held::list, "The held queue, with filters", none(), list::<crate::store::HeldItem>();
        post "/held/bulk" => held::bulk, "Release, discard or answer several held items", json::<held::Bulk>(), objects();
        get "/held/{id}" => held::show, "One held item, explained", none(), one::<held::HeldDetail>();
        get "/held/{id}/raw" => held::raw, "A held item as it arrived", none(), bytes();
        post "/held/{id}/release" => held::release, "Release a held item into its thread", json::<held::Actor>(), one::<crate::pipeline::held::Released>();
        put "/plans/{id}" => directory::save_plan, "Add a plan or change what it includes", json::<crate::http::plans::PlanBody>(), one::<crate::store::Plan>();
        post "/held/{id}/discard" => held::discard, "Discard a held item", json::<held::Actor>(), one::<crate::store::HeldItem>();
        post "/held/{id}/restore" => held::restore, "Put a discarded item back in the queue", json::<held::Actor>(), one::<crate::store::HeldItem>();
        post "/held/{id}/notice" => held::notice, "Send the sender the refusal notice", json::<held::Actor>(), one::<crate::store::HeldItem>();
        get "/suppressions" => suppressions::list, "Addresses mail has stopped to", none(), list::<crate::store::Suppression>();
        post "/suppressions/{address}/lift" => suppressions::lift, "Send mail to a suppressed address again", json::<held::Actor>(), one::<suppressions::Lifted>();
        get "/audit" => directory::audit, "Erasures and who asked for them", none(), list::<crate::store::AuditEntry>();
        get "/webhooks" => webhooks::list, "Registered webhook endpoints", none(), list::<crate::store::Webhook>();
        post "/webhooks" => webhooks::create, "Register a webhook endpoint (answers its secret once)", json::<webhooks::NewWebhook>(), created::<webhooks::Registered>();
        delete "/webhooks/{id}" => webhooks::delete, "Remove a webhook endpoint", none(), empty();
    );
    (api, admin, docs)
}

/// The API's routes.
pub fn router(state: Arc<HttpState>) -> Router {
    let (api, admin, docs) = api_routes();
    let description = Arc::new(openapi::document(&docs));
    let api = api
        .layer(middleware::from_fn_with_state(Arc::clone(&state), require_token))
        // The description is public, as a Dashboard developer needs it first.
        .route("/openapi.json", get(move || async move { axum::Json((*description).clone()) }));
    let admin = admin.layer(middleware::from_fn_with_state(Arc::clone(&state), require_admin));
    let apis = Router::new()
        .nest("/api/v1/admin", admin)
        .nest("/api/v1", api)
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(middleware::from_fn(crate::http::json_errors));
    Router::new()
        .merge(apis)
        .route("/", get(home))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics).route_layer(middleware::from_fn_with_state(Arc::clone(&state), require_admin)))
        // The token in the link is the credential: no bearer token here.
        .route("/unsubscribe/{token}", get(unsubscribe::unsubscribe_page).post(unsubscribe::unsubscribe))
        .route("/leave/{token}", get(unsubscribe::leave_page).post(unsubscribe::leave))
        .route("/download/{token}", get(unsubscribe::download))
        .with_state(state)
}

/// `GET /readyz`, for a load balancer or an orchestrator: `200` when this
/// instance takes mail (its listeners are up, which they are from before
/// the HTTP side answers until a stop, and the database answers within 2
/// seconds), `503` with the reason otherwise. No token.
async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let not_ready = |why: String| {
        let body = serde_json::json!({"ready": false, "why": why});
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    };
    if state.stopping.is_cancelled() {
        return not_ready("shutting down: new mail gets 421".to_owned());
    }
    match tokio::time::timeout(std::time::Duration::from_secs(2), state.store.setting("served_domain")).await {
        Ok(Ok(_)) => axum::Json(serde_json::json!({"ready": true})).into_response(),
        Ok(Err(error)) => not_ready(format!("the database does not answer: {error}")),
        Err(_) => not_ready("the database does not answer within 2 seconds".to_owned()),
    }
}

/// `GET /`: where things are, for a person or a client that found the port.
async fn home() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "name": "mailgate",
        "version": env!("CARGO_PKG_VERSION"),
        "console": "/admin/",
        "api": "/api/v1/",
        "description": "/api/v1/openapi.json",
        "health": "/healthz",
        "ready": "/readyz",
    }))
}

/// `GET /metrics` alone, without a token: for the separate metrics listener
/// (`metrics_listen`), which only a private network should reach.
pub fn metrics_router(state: Arc<HttpState>) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

/// Every route of `/api/v1` and `/api/v1/admin`, as the description lists them.
pub fn route_docs() -> Vec<RouteDoc> {
    api_routes().2
}

/// `GET /metrics` (admin token): Prometheus' text format.
async fn metrics(axum::extract::State(state): axum::extract::State<Arc<HttpState>>) -> Result<Response, ApiError> {
    let text = state.metrics.render(&state.store, &state.outbound).await.map_err(|error| {
        tracing::warn!(error = %format!("{error:#}"), "rendering the metrics failed");
        ApiError::BadRequest("the metrics could not be read now; try again".to_owned())
    })?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
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

async fn require_token(
    State(state): State<Arc<HttpState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    checked(&state, credentials::TokenKind::Api, request, next).await
}

async fn require_admin(
    State(state): State<Arc<HttpState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    checked(&state, credentials::TokenKind::Admin, request, next).await
}

/// Runs `request` when its bearer token is the `kind` credential; a wrong
/// token is counted against the client's address, answered later and
/// later, then with `429` (see [`throttle`]).
async fn checked(
    state: &HttpState,
    kind: credentials::TokenKind,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let ip = request_ip(state, request.extensions(), request.headers());
    if let throttle::Verdict::Locked(wait) = state.throttle.verdict(ip) {
        state.metrics.credential_failure(kind.name(), "locked");
        return Err(ApiError::TooManyAttempts(wait));
    }
    let Some(given) = bearer_hash(&request) else { return Err(ApiError::Unauthorized) };
    let credential = match kind {
        credentials::TokenKind::Api => &state.api_token,
        credentials::TokenKind::Admin => &state.admin_token,
    };
    if credential.admits(&state.store, &given).await {
        state.throttle.succeeded(ip);
        return Ok(next.run(request).await);
    }
    let wait = state.throttle.failed(ip);
    state.metrics.credential_failure(kind.name(), "wrong");
    tracing::warn!(client = %ip, credential = kind.name(), wait_ms = wait.as_millis() as u64, "a wrong bearer token");
    tokio::time::sleep(wait).await;
    Err(ApiError::Unauthorized)
}

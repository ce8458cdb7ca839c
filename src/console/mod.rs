//! The admin console: HTML pages under `/admin/` over the same store and
//! pipeline the JSON API uses. Server-rendered with minijinja (every value
//! HTML-escaped), no JavaScript.
//!
//! Login takes the admin token once and gives a session cookie (HttpOnly,
//! SameSite=Strict, Secure behind a TLS proxy that says so). Sessions live in
//! the database, so every instance knows them and logout ends them; a reset
//! of the admin token ends every session made with the old one. Every form
//! carries the session's CSRF token, and a POST whose `Origin` is another
//! site is refused.

mod pages;
mod playground;

use crate::http::HttpState;
use crate::http::credentials::hash_token;
use crate::store::{StoreError, hex};
use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use minijinja::Environment;
use serde::Deserialize;
use std::sync::{Arc, LazyLock};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "mailgate_console";
/// The cookie that carries one message to the next page (after a form).
const FLASH_COOKIE: &str = "mailgate_console_flash";
/// How long a login lasts.
const SESSION_HOURS: i64 = 12;

/// The pages' templates, compiled once; `.html` names escape every value.
static PAGES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    env.add_filter("when", when);
    for (name, source) in [
        ("layout.html", include_str!("templates/layout.html")),
        ("login.html", include_str!("templates/login.html")),
        ("error.html", include_str!("templates/error.html")),
        ("explanation.html", include_str!("templates/explanation.html")),
        ("log.html", include_str!("templates/log.html")),
        ("log_entry.html", include_str!("templates/log_entry.html")),
        ("held.html", include_str!("templates/held.html")),
        ("held_item.html", include_str!("templates/held_item.html")),
        ("outbox.html", include_str!("templates/outbox.html")),
        ("outbox_item.html", include_str!("templates/outbox_item.html")),
        ("bounces.html", include_str!("templates/bounces.html")),
        ("unsubscribes.html", include_str!("templates/unsubscribes.html")),
        ("participants.html", include_str!("templates/participants.html")),
        ("rules.html", include_str!("templates/rules.html")),
        ("plans.html", include_str!("templates/plans.html")),
        ("doctor.html", include_str!("templates/doctor.html")),
        ("templates.html", include_str!("templates/templates.html")),
    ] {
        env.add_template(name, source).unwrap_or_else(|e| panic!("console template {name}: {e}"));
    }
    env
});

/// `{{ time|when }}`: an RFC 3339 time as `2026-12-04 10:30:05 UTC` (text
/// that is not a time is shown as it is).
fn when(value: String) -> String {
    match chrono::DateTime::parse_from_rfc3339(&value) {
        Ok(time) => time.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => value,
    }
}

/// The console's routes, to be served beside the API.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/admin", get(|| async { redirect("/admin/log") }))
        .route("/admin/", get(|| async { redirect("/admin/log") }))
        .route("/admin/login", get(login_page).post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/log", get(pages::log))
        .route("/admin/log/{id}", get(pages::log_entry))
        .route("/admin/log/{id}/raw", get(pages::log_raw))
        .route("/admin/held", get(pages::held))
        .route("/admin/held/bulk", post(pages::act_on_held_items))
        .route("/admin/held/{id}", get(pages::held_item))
        .route("/admin/held/{id}/raw", get(pages::held_raw))
        .route("/admin/held/{id}/{action}", post(pages::act_on_held))
        .route("/admin/outbox", get(pages::outbox))
        .route("/admin/outbox/retry", post(pages::retry_outbox))
        .route("/admin/outbox/{id}", get(pages::outbox_item))
        .route("/admin/bounces", get(pages::bounces))
        .route("/admin/bounces/lift", post(pages::lift_suppression))
        .route("/admin/unsubscribes", get(pages::unsubscribes))
        .route("/admin/unsubscribes/undo", post(pages::undo_unsubscribe))
        .route("/admin/participants", get(pages::participants))
        .route("/admin/participants/{action}", post(pages::decide_participant))
        .route("/admin/rules", get(playground::rules_page).post(playground::rules_action))
        .route("/admin/templates", get(playground::templates_page))
        .route("/admin/plans", get(pages::plans).post(pages::save_plan))
        .route("/admin/doctor", get(pages::doctor))
        .layer(axum::middleware::map_response(protect))
        .with_state(state)
}

/// Headers every console answer carries: no caching, no framing, no
/// scripts, no referrer to other sites (URLs hold filters with addresses).
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // Same-origin: forms keep a real `Origin` (with no-referrer, browsers send "null").
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    response
}

/// A failed page, shown as an HTML page with a fitting status.
#[derive(Debug)]
pub(crate) enum ConsoleError {
    /// Not logged in (or the session ended): back to the login page.
    LoggedOut,
    /// A form without this session's CSRF token, or from another site.
    Forged,
    /// What the API would have answered.
    Api(crate::http::ApiError),
}

impl From<StoreError> for ConsoleError {
    fn from(error: StoreError) -> Self {
        ConsoleError::Api(error.into())
    }
}

impl From<crate::http::ApiError> for ConsoleError {
    fn from(error: crate::http::ApiError) -> Self {
        ConsoleError::Api(error)
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ConsoleError::LoggedOut => return redirect("/admin/login"),
            ConsoleError::Forged => (
                StatusCode::FORBIDDEN,
                "This form did not come from this console's page (its security token is missing or stale). \
                 Go back, reload the page and try again."
                    .to_owned(),
            ),
            ConsoleError::Api(error) => (error.status(), error.to_string()),
        };
        let page = render("error.html", minijinja::context! { title => "Error", message, status => status.as_u16() });
        (status, page).into_response()
    }
}

/// A console page's result.
pub(crate) type Page = Result<Response, ConsoleError>;

/// A `303 See Other` to `to`.
fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to.to_owned())]).into_response()
}

/// Adds a console cookie (`max_age` 0 removes it) to `response`.
fn set_cookie(response: &mut Response, name: &str, value: &str, max_age: i64, secure: bool) {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!("{name}={value}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
}

/// A `303` to `to` that shows `message` there once.
pub(crate) fn redirect_with(to: &str, message: &str, secure: bool) -> Response {
    let mut response = redirect(to);
    set_cookie(&mut response, FLASH_COOKIE, &data_encoding::BASE64URL_NOPAD.encode(message.as_bytes()), 60, secure);
    response
}

/// The message a form left for this page, if any.
fn flash(headers: &HeaderMap) -> Option<String> {
    cookie(headers, FLASH_COOKIE)
        .and_then(|v| data_encoding::BASE64URL_NOPAD.decode(v.as_bytes()).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|text| !text.is_empty())
}

/// Renders a page template; a template error (ours, not the user's) shows as
/// a plain page rather than a panic.
pub(crate) fn render(name: &str, context: minijinja::Value) -> Response {
    let page = PAGES.get_template(name).and_then(|template| template.render(context));
    match page {
        Ok(html) => ([(CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), page = name, "rendering a console page failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "this page could not be shown; the server log says why").into_response()
        }
    }
}

/// The value of cookie `name` in a request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Whether the request came through a TLS proxy that says so (`proxied`:
/// it came from one of the trusted proxies; anyone else's word is ignored).
fn behind_tls(headers: &HeaderMap, proxied: bool) -> bool {
    proxied
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A logged-in admin's session, taken from the request's cookie.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The token the session's forms carry.
    pub(crate) csrf: String,
    id_hash: String,
    /// Whether cookies set now must be `Secure`.
    pub(crate) secure: bool,
    /// The message left by the last form, shown once.
    pub(crate) flash: Option<String>,
    /// Held items waiting and failed outbox items, for the menu (pages only),
    /// each counted up to `MENU_COUNT_CAP` + 1.
    waiting: (i64, i64),
    /// Who is logged in, as recorded with their actions.
    pub(crate) actor: String,
}

impl Session {
    /// Refuses a form that does not carry this session's CSRF token.
    pub(crate) fn check(&self, csrf: &str) -> Result<(), ConsoleError> {
        let (given, expected) = (hash_token(csrf), hash_token(&self.csrf));
        if given == expected { Ok(()) } else { Err(ConsoleError::Forged) }
    }

    /// What every page's template needs: the CSRF token and the flash.
    pub(crate) fn context(&self, page: &str) -> minijinja::Value {
        minijinja::context! { csrf => self.csrf, flash => self.flash, page, held_waiting => menu_count(self.waiting.0), failed => menu_count(self.waiting.1), actor => self.actor }
    }

    /// A page with the flash cookie cleared when one was shown.
    pub(crate) fn page(&self, name: &str, context: minijinja::Value) -> Response {
        let mut response = render(name, minijinja::context! { ..self.context(name), ..context });
        if self.flash.is_some() {
            set_cookie(&mut response, FLASH_COOKIE, "", 0, self.secure);
        }
        response
    }

    /// A `303` to `to` showing `message` there.
    pub(crate) fn done(&self, to: &str, message: &str) -> Response {
        redirect_with(to, message, self.secure)
    }
}

impl FromRequestParts<Arc<HttpState>> for Session {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<HttpState>) -> Result<Self, Self::Rejection> {
        let proxied = crate::http::via_trusted_proxy(state, &parts.extensions);
        if parts.method != Method::GET && parts.method != Method::HEAD && !same_origin(&parts.headers, proxied) {
            return Err(ConsoleError::Forged);
        }
        let value = cookie(&parts.headers, SESSION_COOKIE).ok_or(ConsoleError::LoggedOut)?;
        let id_hash = hex(&hash_token(value));
        let stored = state.store.console_session(&id_hash).await?.ok_or(ConsoleError::LoggedOut)?;
        let token_hash: [u8; 32] = data_encoding::HEXLOWER
            .decode(stored.token_hash.as_bytes())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(ConsoleError::LoggedOut)?;
        // The admin token was reset since this login: the session is over.
        if !state.admin_token.admits(&state.store, &token_hash).await {
            return Err(ConsoleError::LoggedOut);
        }
        let flash = flash(&parts.headers);
        let waiting = if parts.method == Method::GET { state.store.waiting_for_an_admin().await? } else { (0, 0) };
        Ok(Session {
            csrf: stored.csrf,
            id_hash,
            secure: behind_tls(&parts.headers, proxied),
            flash,
            waiting,
            actor: stored.actor,
        })
    }
}

/// Whether a form post comes from this site: its `Origin` (sent by every
/// browser on a POST) names the host it was sent to, as the client asked
/// for it (`X-Forwarded-Host` from a trusted proxy, else `Host`). A request
/// without an `Origin` is not from a browser page, and still needs the
/// session and its token.
fn same_origin(headers: &HeaderMap, proxied: bool) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let forwarded = if proxied { headers.get("x-forwarded-host") } else { None };
    let asked = forwarded.or_else(|| headers.get(HOST)).and_then(|v| v.to_str().ok());
    let host = asked.and_then(|v| v.split(',').next()).unwrap_or_default().trim();
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

/// `GET /admin/login`
async fn login_page(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
) -> Response {
    let mut page =
        render("login.html", minijinja::context! { title => "Log in", flash => flash(&headers), page => "login" });
    let proxied = crate::http::via_trusted_proxy(&state, &extensions);
    set_cookie(&mut page, FLASH_COOKIE, "", 0, behind_tls(&headers, proxied));
    page
}

/// The login form.
#[derive(Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    /// Who logs in, for the record (optional).
    #[serde(default)]
    name: String,
}

/// How an admin's actions are recorded: `NAME (console)`, or `admin-console`
/// when they gave no name.
fn actor(name: &str) -> String {
    let name: String = crate::notify::render::header_safe(name).chars().take(60).collect();
    if name.is_empty() { "admin-console".to_owned() } else { format!("{name} (console)") }
}

/// `POST /admin/login` `token=...`: the admin token, once; a session cookie back.
///
/// Wrong tokens are counted against the client's address like wrong Bearer
/// tokens (`api::throttle`): answered later and later, then `429` with
/// `Retry-After` and a page that says so.
async fn login(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    axum::Form(form): axum::Form<LoginForm>,
) -> Result<Response, ConsoleError> {
    let proxied = crate::http::via_trusted_proxy(&state, &extensions);
    let secure = behind_tls(&headers, proxied);
    if !same_origin(&headers, proxied) {
        return Err(ConsoleError::Forged);
    }
    let ip = crate::http::request_ip(&state, &extensions, &headers);
    if let crate::http::throttle::Verdict::Locked(wait) = state.throttle.verdict(ip) {
        state.metrics.credential_failure("console", "locked");
        return Ok(too_many_attempts(wait));
    }
    let given = hash_token(form.token.trim());
    if !state.admin_token.admits(&state.store, &given).await {
        let wait = state.throttle.failed(ip);
        state.metrics.credential_failure("console", "wrong");
        tracing::warn!(client = %ip, wait_ms = wait.as_millis() as u64, "a console login with a wrong admin token");
        tokio::time::sleep(wait).await;
        return Ok(redirect_with("/admin/login", "That is not the admin token.", secure));
    }
    state.throttle.succeeded(ip);
    let session = crate::domain::token::random_hex(32);
    let csrf = crate::domain::token::random_hex(32);
    let expires_at = crate::store::now_ms() + SESSION_HOURS * 3_600_000;
    let actor = actor(&form.name);
    state.store.start_console_session(&hex(&hash_token(&session)), &csrf, &hex(&given), &actor, expires_at).await?;
    let mut response = redirect("/admin/log");
    set_cookie(&mut response, SESSION_COOKIE, &session, SESSION_HOURS * 3600, secure);
    Ok(response)
}

/// The login page's answer to an address locked out for too many wrong
/// tokens: `429`, `Retry-After`, and a sentence.
fn too_many_attempts(wait: std::time::Duration) -> Response {
    let seconds = wait.as_secs().max(1);
    let flash = format!("Too many wrong tokens from your address. Try again in {seconds} seconds.");
    let page = render("login.html", minijinja::context! { title => "Log in", flash => flash, page => "login" });
    let mut response = (axum::http::StatusCode::TOO_MANY_REQUESTS, page).into_response();
    if let Ok(value) = axum::http::HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, value);
    }
    response
}

/// A form that only proves where it came from.
#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    csrf: String,
}

/// `POST /admin/logout`: ends the session here and on every instance.
async fn logout(
    State(state): State<Arc<HttpState>>,
    session: Session,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    session.check(&form.csrf)?;
    state.store.end_console_session(&session.id_hash).await?;
    let mut response = redirect_with("/admin/login", "Logged out.", session.secure);
    set_cookie(&mut response, SESSION_COOKIE, "", 0, session.secure);
    Ok(response)
}

/// A count for the menu: none, the number, or `999+` past the cap.
fn menu_count(count: i64) -> Option<String> {
    match count {
        ..=0 => None,
        n if n > crate::store::MENU_COUNT_CAP => Some(format!("{}+", crate::store::MENU_COUNT_CAP)),
        n => Some(n.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::{menu_count, same_origin};
    use axum::http::HeaderMap;

    #[test]
    fn the_menu_counts_up_to_the_cap_then_says_more() {
        assert_eq!(menu_count(0), None);
        assert_eq!(menu_count(2).as_deref(), Some("2"));
        assert_eq!(menu_count(999).as_deref(), Some("999"));
        assert_eq!(menu_count(1000).as_deref(), Some("999+"));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn a_form_is_ours_when_its_origin_is_the_host_the_browser_asked_for() {
        let direct = |pairs: &[(&'static str, &str)]| same_origin(&headers(pairs), false);
        assert!(direct(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")]));
        assert!(direct(&[("host", "127.0.0.1:8080")]), "no Origin: not a browser form");
        assert!(!direct(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")]));
        assert!(!direct(&[("host", "127.0.0.1:8080"), ("origin", "null")]));
        // Behind a proxy that passes the host the browser asked for.
        let proxied = [
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-host", "desk.example.com"),
            ("origin", "https://desk.example.com"),
        ];
        assert!(same_origin(&headers(&proxied), true));
        // The same headers from a client that is not a trusted proxy: its
        // X-Forwarded-Host is not believed.
        assert!(!same_origin(&headers(&proxied), false));
        let elsewhere =
            [("host", "127.0.0.1:8080"), ("x-forwarded-host", "desk.example.com"), ("origin", "https://evil.example")];
        assert!(!same_origin(&headers(&elsewhere), true));
    }
}

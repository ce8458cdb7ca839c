use crate::store::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API failure, answered as `{"error": "..."}` with a fitting status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong bearer token.
    #[error("missing or invalid API token (send Authorization: Bearer TOKEN)")]
    Unauthorized,
    /// The request is malformed or names something invalid.
    #[error("{0}")]
    BadRequest(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Not allowed by the product's rules.
    #[error("{0}")]
    Forbidden(String),
    /// Clashes with what is stored.
    #[error("{0}")]
    Conflict(String),
    /// Clashes with a row that exists: its id is in the answer (`{"error", "id"}`).
    #[error("{0}")]
    Exists(String, i64),
    /// Existed, and is gone for good (purged after its retention).
    #[error("{0}")]
    Gone(String),
    /// The request's body is larger than the API takes.
    #[error("{0}")]
    TooLarge(String),
    /// Too many wrong credentials from this client: try again after this long.
    #[error("too many wrong tokens from your address; try again in {} seconds", .0.as_secs().max(1))]
    TooManyAttempts(std::time::Duration),
    /// Cannot be done on this instance as it is set up (a `503`).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else; details go to the log, not the client.
    #[error("internal error")]
    Internal(#[source] StoreError),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(message) => ApiError::Conflict(message),
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            other => ApiError::Internal(other),
        }
    }
}

impl ApiError {
    /// A JSON body that could not be read: `413` when it was too large,
    /// else `400` with what was wrong.
    pub fn from_json(rejection: &axum::extract::rejection::JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!("the request body is larger than the API takes ({})", rejection.body_text()))
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) | ApiError::Exists(..) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(error) => {
                tracing::error!(error = %error, "API request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Exists(_, id) => (status, Json(json!({ "error": self.to_string(), "id": id }))).into_response(),
            ApiError::TooManyAttempts(wait) => {
                let retry_after = wait.as_secs().max(1).to_string();
                (status, [(axum::http::header::RETRY_AFTER, retry_after)], Json(json!({ "error": self.to_string() })))
                    .into_response()
            }
            ApiError::Unauthorized => (
                status,
                [(axum::http::header::WWW_AUTHENTICATE, "Bearer realm=\"mailgate\"")],
                Json(json!({ "error": self.to_string() })),
            )
                .into_response(),
            _ => (status, Json(json!({ "error": self.to_string() }))).into_response(),
        }
    }
}

/// Makes every error the API answers JSON, as docs/api.md promises: an
/// answer of 400 or more without a JSON body (axum's own answers to a path
/// that is not a number, a bad query, an unknown route or method) becomes
/// `{"error": "..."}` with a sentence.
pub(crate) async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.map(|b| String::from_utf8_lossy(&b).into_owned());
    let text = text.unwrap_or_default();
    let error = match status {
        StatusCode::NOT_FOUND if text.is_empty() => {
            format!("no such route: {method} {path}; the API is described at /api/v1/openapi.json")
        }
        StatusCode::METHOD_NOT_ALLOWED => format!("{method} is not a method of {path}"),
        _ => plain_words(&text),
    };
    let mut answer = (status, Json(json!({ "error": error }))).into_response();
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            answer.headers_mut().append(name.clone(), value.clone());
        }
    }
    answer
}

/// axum's rejection texts in plain words: ``Invalid URL: Cannot parse `abc`
/// to a `i64` `` becomes "`abc` in the path is not a number".
fn plain_words(text: &str) -> String {
    let text = text.trim();
    if let Some(rest) = text.split("Cannot parse `").nth(1)
        && let Some((value, kind)) = rest.split_once("` to a `")
    {
        let expected = match kind.trim_end_matches('`') {
            kind if kind.starts_with(['i', 'u']) => "a whole number".to_owned(),
            kind => format!("a {kind}"),
        };
        return format!("{value:?} in the path is not {expected}");
    }
    if let Some(rest) = text.strip_prefix("Failed to deserialize query string: ") {
        return format!("the query is not valid: {rest}");
    }
    if text.is_empty() { "the request could not be answered".to_owned() } else { text.to_owned() }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rejections_read_as_sentences() {
        assert_eq!(
            super::plain_words("Invalid URL: Cannot parse `abc` to a `i64`"),
            "\"abc\" in the path is not a whole number"
        );
        assert_eq!(super::plain_words(""), "the request could not be answered");
    }
}

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
    /// Too many wrong credentials from this client: try again after this long.
    #[error("too many wrong tokens from your address; try again in {} seconds", .0.as_secs().max(1))]
    TooManyAttempts(std::time::Duration),
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
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) | ApiError::Exists(..) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
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
            _ => (status, Json(json!({ "error": self.to_string() }))).into_response(),
        }
    }
}

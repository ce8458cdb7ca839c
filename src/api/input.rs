//! Reading a request's input, for every handler: a JSON body (a body too
//! large is `413`), a required text field, an organization that must exist.

use super::{ApiError, HttpState};
use axum::Json;
use axum::extract::rejection::JsonRejection;

type ApiResult<T> = Result<T, ApiError>;

/// A JSON body, or the error that says what is wrong with it.
pub(super) fn body<T>(json: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    json.map(|Json(v)| v).map_err(|e| ApiError::from_json(&e))
}

/// A text field that must not be blank, trimmed.
pub(super) fn required(value: &str, field: &str) -> ApiResult<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::BadRequest(format!("{field} must not be empty")));
    }
    Ok(value.to_owned())
}

/// Refuses an organization id that does not exist.
pub(super) async fn ensure_organization(state: &HttpState, id: Option<i64>) -> ApiResult<()> {
    if let Some(org) = id {
        state
            .store
            .organization(org)
            .await?
            .ok_or_else(|| ApiError::BadRequest(format!("organization {org} not found")))?;
    }
    Ok(())
}

//! Suppressed addresses in the admin API: which addresses mail has stopped
//! to because they hard-bounced, and lifting a suppression (the bounces stay
//! recorded, marked lifted, with who lifted them).

use super::held::Actor;
use super::{ApiError, HttpState};
use crate::store::Suppression;
use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use std::sync::Arc;

type Shared = State<Arc<HttpState>>;
type ApiResult<T> = Result<T, ApiError>;

/// `GET /admin/suppressions`: addresses mail has stopped to, latest first.
pub(super) async fn list(State(state): Shared) -> ApiResult<Json<Vec<Suppression>>> {
    Ok(Json(state.store.suppressions(state.max_hard_bounces, state.suppression_days).await?))
}

/// What lifting did.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Lifted {
    address: String,
    /// How many counted bounces stopped counting.
    lifted_bounces: u64,
}

/// `POST /admin/suppressions/{address}/lift` `{by?}`: mail to the address
/// is sent again; 404 when it has no counted bounces to lift.
pub(super) async fn lift(
    State(state): Shared,
    Path(address): Path<String>,
    json: Option<Json<Actor>>,
) -> ApiResult<Json<Lifted>> {
    let by = Actor::of(json);
    let address = address.trim().to_lowercase();
    let lifted_bounces = state.store.lift_suppression(&address, &by).await?;
    if lifted_bounces == 0 {
        return Err(ApiError::NotFound(format!("{address} has no counted bounces to lift")));
    }
    tracing::info!(%address, %by, lifted_bounces, "suppression lifted");
    Ok(Json(Lifted { address, lifted_bounces }))
}

//! The held queue in the admin API: list with filters, open one item (its
//! headers, sender checks, why it is held, how it would be read), download
//! it, and release, discard or answer it, one at a time or in bulk. Every
//! action records who did it (`by`, default `admin-api`).

use super::{ApiError, HttpState};
use crate::store::{HeldAction, HeldFilter, HeldItem};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

type Shared = State<Arc<HttpState>>;
type ApiResult<T> = Result<T, ApiError>;

/// `GET /admin/held?status=&reason=&sender=&since=&before_id=&limit=`
pub(super) async fn list(State(state): Shared, Query(filter): Query<HeldFilter>) -> ApiResult<Json<Vec<HeldItem>>> {
    Ok(Json(state.store.held_items(&filter).await?))
}

/// One held item opened.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct HeldDetail {
    #[serde(flatten)]
    item: HeldItem,
    /// The header fields, in order.
    #[schema(value_type = Vec<Vec<String>>)]
    headers: Vec<(String, String)>,
    /// How mailgate reads it today: threading signals, authorization,
    /// extraction, and the decision with every rule considered.
    #[schema(value_type = Option<Object>)]
    explanation: Option<crate::pipeline::explain::Explanation>,
    /// Where to download it.
    raw: String,
}

/// `GET /admin/held/{id}`
pub(super) async fn show(State(state): Shared, Path(id): Path<i64>) -> ApiResult<Json<HeldDetail>> {
    let item = find(&state, id).await?;
    let raw = state.store.held_raw(&item).await?;
    let parsed = raw.as_deref().and_then(crate::pipeline::parse::parse);
    let explanation = match &raw {
        Some(raw) => state.pipeline.explain(item.as_received(), raw, None).await?,
        None => None,
    };
    Ok(Json(HeldDetail {
        headers: parsed.map(|p| p.headers).unwrap_or_default(),
        explanation,
        raw: format!("/api/v1/admin/held/{id}/raw"),
        item,
    }))
}

/// `GET /admin/held/{id}/raw`: the held mail as it arrived.
pub(super) async fn raw(State(state): Shared, Path(id): Path<i64>) -> ApiResult<Response> {
    crate::http::downloads::held_raw(&state, id).await
}

/// Who acts, for the record.
#[derive(Deserialize, Default, utoipa::ToSchema)]
pub(super) struct Actor {
    by: Option<String>,
}

impl Actor {
    /// The name recorded for an action whose body is `json`, if any.
    pub(super) fn of(json: Option<Json<Actor>>) -> String {
        json.map(|Json(a)| a).unwrap_or_default().name()
    }

    /// The name recorded for the action (`admin-api` when none is given):
    /// one line of at most 60 characters, as the console records its names.
    pub(super) fn name(self) -> String {
        let name: String = self
            .by
            .map(|b| crate::notify::render::header_safe(&b).trim().chars().take(60).collect())
            .unwrap_or_default();
        if name.is_empty() { "admin-api".to_owned() } else { name }
    }
}

/// `POST /admin/held/{id}/release` `{by?}`: into its thread.
pub(super) async fn release(
    State(state): Shared,
    Path(id): Path<i64>,
    json: Option<Json<Actor>>,
) -> ApiResult<Json<serde_json::Value>> {
    let by = Actor::of(json);
    Ok(Json(serde_json::to_value(state.pipeline.release(id, &by).await?).unwrap_or_default()))
}

/// `POST /admin/held/{id}/discard` `{by?}`
pub(super) async fn discard(
    State(state): Shared,
    Path(id): Path<i64>,
    json: Option<Json<Actor>>,
) -> ApiResult<Json<HeldItem>> {
    let by = Actor::of(json);
    Ok(Json(state.pipeline.discard(id, &by).await?))
}

/// `POST /admin/held/{id}/restore` `{by?}`: a discarded item back in the queue.
pub(super) async fn restore(
    State(state): Shared,
    Path(id): Path<i64>,
    json: Option<Json<Actor>>,
) -> ApiResult<Json<HeldItem>> {
    let by = Actor::of(json);
    Ok(Json(state.pipeline.restore(id, &by).await?))
}

/// `POST /admin/held/{id}/notice` `{by?}`: the sender gets the refusal notice.
pub(super) async fn notice(
    State(state): Shared,
    Path(id): Path<i64>,
    json: Option<Json<Actor>>,
) -> ApiResult<Json<HeldItem>> {
    let by = Actor::of(json);
    Ok(Json(state.pipeline.notice(id, &by).await?))
}

/// A bulk action.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct Bulk {
    ids: Vec<i64>,
    action: HeldAction,
    by: Option<String>,
}

/// `POST /admin/held/bulk` `{ids, action: release|discard|notice|restore, by?}`:
/// each item acted on alone; the answer says, per id, what happened.
pub(super) async fn bulk(
    State(state): Shared,
    json: Result<Json<Bulk>, JsonRejection>,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    let Json(bulk) = json.map_err(|e| ApiError::from_json(&e))?;
    if bulk.ids.len() > 1000 {
        return Err(ApiError::BadRequest("at most 1000 ids at once".to_owned()));
    }
    let by = Actor { by: bulk.by }.name();
    let mut results = Vec::with_capacity(bulk.ids.len());
    for id in bulk.ids {
        let outcome = state.pipeline.act_on_held(bulk.action, id, &by).await;
        results.push(match outcome {
            Ok(done) => serde_json::json!({ "id": id, "ok": true, "result": done }),
            Err(error) => serde_json::json!({ "id": id, "ok": false, "error": ApiError::from(error).to_string() }),
        });
    }
    Ok(Json(results))
}

async fn find(state: &HttpState, id: i64) -> ApiResult<HeldItem> {
    state.store.held_item(id).await?.ok_or_else(|| ApiError::NotFound(format!("held item {id} not found")))
}

//! The routing rules over the admin API: the rules in force, a check of a
//! rules text, and a dry run of a message.

use super::input::body;
use super::{ApiError, HttpState};
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use serde::Deserialize;
use std::sync::Arc;

type Shared = State<Arc<HttpState>>;
type ApiResult<T> = Result<T, ApiError>;

/// `GET /admin/rules`: the rules in force.
pub(super) async fn current_rules(State(state): Shared) -> Json<serde_json::Value> {
    let rules = state.rules.current();
    let names: Vec<&str> = rules.rules.iter().map(|r| r.name.as_str()).collect();
    Json(serde_json::json!({ "source": rules.source, "rules": names, "ticket_addresses": rules.ticket_addresses }))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct RulesText {
    rules: String,
}

/// `POST /admin/rules/check` `{rules}`: validates a rules file's text.
pub(super) async fn check_rules(json: Result<Json<RulesText>, JsonRejection>) -> ApiResult<Json<serde_json::Value>> {
    let text = body(json)?.rules;
    Ok(Json(match crate::rules::compile(&text, "rules.toml") {
        Ok(rules) => serde_json::json!({ "ok": true, "rules": rules.rules.len(), "errors": [] }),
        Err(errors) => serde_json::json!({ "ok": false, "errors": errors }),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct RulesTest {
    /// The message, as raw RFC 5322 text.
    message: String,
    /// Rules to try instead of the ones in force.
    rules: Option<String>,
    mail_from: Option<String>,
    #[serde(default)]
    rcpt: Vec<String>,
}

/// `POST /admin/rules/test` `{message, rules?, mail_from?, rcpt?}`: a dry run
/// against the live database, storing nothing.
pub(super) async fn test_rules(
    State(state): Shared,
    json: Result<Json<RulesTest>, JsonRejection>,
) -> ApiResult<Json<crate::pipeline::DryRun>> {
    let request = body(json)?;
    let rules = match &request.rules {
        Some(text) => {
            Arc::new(crate::rules::LiveRules::new(crate::rules::compile(text, "rules.toml").map_err(|errors| {
                ApiError::BadRequest(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
            })?))
        }
        None => Arc::clone(&state.rules),
    };
    // The instance's own pipeline (its limits and holding policy), other rules.
    let pipeline = state.pipeline.with_rules(rules);
    let pasted = crate::pipeline::PastedMessage::new(
        &request.message,
        request.mail_from.as_deref(),
        request.rcpt,
        &state.domain,
    );
    let envelope = pipeline.envelope("rules test", pasted.mail_from, &pasted.rcpt).await;
    Ok(Json(pipeline.dry_run(&envelope, &pasted.raw).await))
}

//! The plans an admin adds and changes (they are data): what a plan body
//! may say, checked, for the API's `PUT /admin/plans/{id}` and the console's
//! plans page alike.

use super::ApiError;
use crate::store::Plan;
use serde::Deserialize;

/// What a plan includes, as `PUT /admin/plans/{id}` takes it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    /// Display name, e.g. `Gold`.
    pub name: String,
    /// `site`, `organization` or `account`: what the plan is bought for.
    pub scope: String,
    /// Orders site plans (Business is 3); default 0.
    #[serde(default)]
    pub rank: i64,
    /// Chat support; default yes.
    #[serde(default = "yes")]
    pub chat: bool,
    /// `none` (the default), `all` or `business_and_above`.
    #[serde(default = "none")]
    pub tickets: String,
    /// `none` (the default), `scheduled`, `direct` or `premium`.
    #[serde(default = "none")]
    pub phone: String,
    /// Whether emergencies page on-call; default no.
    #[serde(default)]
    pub on_call: bool,
    /// Promised first response to a ticket, in minutes.
    pub ticket_response_minutes: Option<i64>,
    /// Promised response to an emergency, in minutes.
    pub on_call_response_minutes: Option<i64>,
    /// When the ticket response time applies, in words.
    pub support_hours: Option<String>,
}

fn yes() -> bool {
    true
}

fn none() -> String {
    "none".to_owned()
}

impl PlanBody {
    /// The plan `id` this body describes, or why it cannot be one.
    pub fn validated(self, id: &str) -> Result<Plan, ApiError> {
        let bad = |what: String| Err(ApiError::BadRequest(what));
        if id.is_empty()
            || id.len() > 40
            || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return bad(format!("plan id {id:?} must be 1 to 40 lower-case letters, digits or underscores"));
        }
        let one_of = |field: &str, value: &str, allowed: &[&str]| -> Result<(), ApiError> {
            if allowed.contains(&value) {
                Ok(())
            } else {
                Err(ApiError::BadRequest(format!("{field}: {value:?} is not one of {}", allowed.join(", "))))
            }
        };
        one_of("scope", &self.scope, &["site", "organization", "account"])?;
        one_of("tickets", &self.tickets, &["none", "all", "business_and_above"])?;
        one_of("phone", &self.phone, &["none", "scheduled", "direct", "premium"])?;
        if self.tickets == "business_and_above" && self.scope == "site" {
            return bad("tickets: business_and_above is for organization and account plans (it names which of \
                 their sites may open tickets); a site plan has tickets all or none"
                .to_owned());
        }
        for (field, minutes) in [
            ("ticket_response_minutes", self.ticket_response_minutes),
            ("on_call_response_minutes", self.on_call_response_minutes),
        ] {
            if minutes.is_some_and(|m| m <= 0) {
                return bad(format!("{field} must be a number of minutes above 0"));
            }
        }
        let name = self.name.trim();
        if name.is_empty() || name.chars().any(char::is_control) {
            return bad("name must be a line of text".to_owned());
        }
        Ok(Plan {
            id: id.to_owned(),
            name: name.to_owned(),
            scope: self.scope,
            rank: self.rank,
            chat: self.chat,
            tickets: self.tickets,
            phone: self.phone,
            on_call: self.on_call,
            ticket_response_minutes: self.ticket_response_minutes,
            on_call_response_minutes: self.on_call_response_minutes,
            support_hours: self.support_hours.filter(|h| !h.trim().is_empty()),
        })
    }
}

/// Saves `plan` (new, or replacing what it includes), unless it would
/// change the scope of a plan that sites or organizations use: they would
/// be left on a plan of the wrong kind.
pub async fn save(state: &super::HttpState, plan: &Plan) -> Result<Plan, ApiError> {
    if let Some(old) = state.store.plan(&plan.id).await?
        && old.scope != plan.scope
    {
        let (sites, organizations) = state.store.plan_users(&plan.id).await?;
        if sites + organizations > 0 {
            return Err(ApiError::Conflict(format!(
                "plan {} is a {} plan used by {sites} site(s) and {organizations} organization(s); \
                 move them to another plan before making it a {} plan",
                plan.id, old.scope, plan.scope
            )));
        }
    }
    Ok(state.store.save_plan(plan).await?)
}

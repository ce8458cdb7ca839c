//! The console's workbenches: the rules playground (edit, check, dry-run a
//! message, compare decisions over recent mail) and the template preview.
//! Nothing here changes what the server does: edited rules live only in
//! the form.

use super::{ConsoleError, Page, Session};
use crate::http::{ApiError, HttpState};
use crate::notify::render::{KINDS, Renderer, sample_context};
use crate::pipeline::{PastedMessage, Pipeline};
use crate::rules::{DEFAULT_RULES, LiveRules, RuleError, compile};
use crate::store::InboundLogEntry;
use axum::Form;
use axum::extract::{Query, State};
use minijinja::context;
use serde::Deserialize;
use std::sync::Arc;

type Shared = State<Arc<HttpState>>;

/// How many recent messages a comparison reads by default, and at most.
const DIFF_DEFAULT: i64 = 200;
const DIFF_MAX: i64 = 2000;

/// The rules in force as text: the file they were read from (as it reads
/// now) or the built-in rules.
fn rules_in_force(state: &HttpState) -> (String, String) {
    let source = state.rules.current().source.clone();
    if source == "built-in" {
        return (source, DEFAULT_RULES.to_owned());
    }
    let text = std::fs::read_to_string(&source).unwrap_or_else(|e| {
        format!("# {source} cannot be read now: {e}\n# (the rules loaded from it are still in force)\n")
    });
    (source, text)
}

/// The page's query: a message to pick from the log.
#[derive(Deserialize, Default)]
pub(crate) struct PickQuery {
    log: Option<i64>,
}

/// The playground's form.
#[derive(Deserialize, Default)]
pub(crate) struct PlaygroundForm {
    csrf: String,
    /// `check`, `run` or `diff`.
    action: String,
    rules: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    log: String,
    #[serde(default)]
    mail_from: String,
    #[serde(default)]
    rcpt: String,
    #[serde(default)]
    last: String,
}

/// Messages to pick from: the newest kept ones.
async fn pickable(state: &HttpState) -> Result<Vec<InboundLogEntry>, ConsoleError> {
    Ok(state.store.recent_replayable(30).await?)
}

/// `GET /admin/rules[?log=ID]`: the editor, holding the rules in force.
pub(crate) async fn rules_page(State(state): Shared, session: Session, Query(q): Query<PickQuery>) -> Page {
    let (rules_source, rules) = rules_in_force(&state);
    let recent = pickable(&state).await?;
    let log = q.log.map(|id| id.to_string()).unwrap_or_default();
    Ok(session.page(
        "rules.html",
        context! { title => "Rules playground", rules_source, rules, recent, form => context! { log, last => DIFF_DEFAULT } },
    ))
}

/// Each line of a rules text, with the errors found on it.
fn annotated(text: &str, errors: &[RuleError]) -> Vec<minijinja::Value> {
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let here: Vec<String> = errors.iter().filter(|e| e.line == i + 1).map(|e| e.message.clone()).collect();
            context! { number => i + 1, line, errors => here }
        })
        .collect()
}

/// The message the form names: pasted, or picked from the log by id; with
/// the transaction it is read as.
async fn message_of(state: &HttpState, form: &PlaygroundForm) -> Result<(InboundLogEntry, Vec<u8>), ConsoleError> {
    if form.message.trim().is_empty() {
        let id: i64 = form.log.trim().parse().map_err(|_| {
            ApiError::BadRequest("paste a message, or pick one from the log, to run the rules on".to_owned())
        })?;
        return Ok(crate::http::downloads::logged_mail(state, id).await?);
    }
    let mail_from = Some(form.mail_from.trim()).filter(|m| !m.is_empty());
    let rcpt = form.rcpt.split([',', ' ', '\n']).map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned).collect();
    let pasted = PastedMessage::new(&form.message, mail_from, rcpt, &state.domain);
    let entry = InboundLogEntry {
        peer: "playground".to_owned(),
        mail_from: Some(pasted.mail_from),
        rcpt_to: pasted.rcpt.join(","),
        ..InboundLogEntry::default()
    };
    Ok((entry, pasted.raw))
}

/// One message whose decision the edited rules change.
fn changed_row(
    live: &crate::pipeline::explain::Replayed,
    edited: &crate::pipeline::explain::Replayed,
) -> Option<minijinja::Value> {
    let (a, b) = (&live.after, &edited.after);
    ((&a.decision, a.thread_id, &a.rules, &a.effects) != (&b.decision, b.thread_id, &b.rules, &b.effects)).then(|| {
        context! { log_id => live.log_id, from => live.from, subject => live.subject, live => a, edited => b }
    })
}

/// `POST /admin/rules`: check the edited rules; run them on one message;
/// or compare their decisions with the live rules' over recent mail.
pub(crate) async fn rules_action(State(state): Shared, session: Session, Form(form): Form<PlaygroundForm>) -> Page {
    session.check(&form.csrf)?;
    let (rules_source, _) = rules_in_force(&state);
    let recent = pickable(&state).await?;
    let known: Vec<String> = state.store.plans().await?.into_iter().map(|p| p.id).collect();
    let compiled = compile(&form.rules, "rules.toml").and_then(|rules| {
        let unknown = rules.unknown_plans(&known);
        if unknown.is_empty() { Ok(rules) } else { Err(unknown) }
    });
    let errors = compiled.as_ref().err().cloned().unwrap_or_default();
    let mut result = context! {
        title => "Rules playground", rules_source, recent, rules => form.rules, action => form.action,
        form => context! { message => form.message, log => form.log, mail_from => form.mail_from, rcpt => form.rcpt, last => form.last },
        errors => errors.iter().map(|e| e.to_string().replacen("rules.toml:", "line ", 1)).collect::<Vec<_>>(),
        listing => if errors.is_empty() { Vec::new() } else { annotated(&form.rules, &errors) },
    };
    let Ok(edited_rules) = compiled else { return Ok(session.page("rules.html", result)) };
    let rule_count = edited_rules.rules.len();
    let edited = state.pipeline.with_rules(Arc::new(LiveRules::new(edited_rules)));
    match form.action.as_str() {
        "check" => {
            result = context! { checked => format!("{rule_count} rules, all good"), ..result };
        }
        "run" => {
            let (entry, raw) = message_of(&state, &form).await?;
            let live = state.pipeline.explain(entry.clone(), &raw, None).await?;
            let explanation = edited.explain(entry, &raw, None).await?;
            if explanation.is_none() {
                return Err(ApiError::BadRequest(
                    "mailgate cannot read this as mail (is the header there?)".to_owned(),
                )
                .into());
            }
            let live = live.map(|e| e.now);
            let (source, source_note) = super::pages::shown_source(&raw);
            result = context! { explanation, live, source, source_note, ..result };
        }
        "diff" => {
            let last = form.last.trim().parse().unwrap_or(DIFF_DEFAULT).clamp(1, DIFF_MAX);
            let (read, changed) = compare(&state, &edited, last).await?;
            result = context! { compared => context! { read, changed, last }, ..result };
        }
        other => return Err(ApiError::BadRequest(format!("no playground action {other:?}")).into()),
    }
    Ok(session.page("rules.html", result))
}

/// Reads the newest `last` kept messages with the live rules and with
/// `edited`; the ones whose decision differs.
async fn compare(
    state: &HttpState,
    edited: &Pipeline,
    last: i64,
) -> Result<(usize, Vec<minijinja::Value>), ConsoleError> {
    let entries = state.store.recent_replayable(last).await?;
    let mut read = 0;
    let mut changed = Vec::new();
    for entry in entries {
        let Some(raw) = state.store.original(entry.original.as_deref().unwrap_or_default()).await? else { continue };
        read += 1;
        let live = state.pipeline.replay(&entry, &raw, None).await;
        let after = edited.replay(&entry, &raw, None).await;
        changed.extend(changed_row(&live, &after));
    }
    Ok((read, changed))
}

/// `GET /admin/templates`: every notification rendered with sample data,
/// subject, text and HTML, and what `templates check` finds.
pub(crate) async fn templates_page(State(state): Shared, session: Session) -> Page {
    let folder = state.templates_dir.as_ref().map(|d| d.display().to_string());
    let renderer = match Renderer::load(state.templates_dir.as_deref()) {
        Ok(renderer) => renderer,
        Err(error) => {
            let errors = vec![format!("{error:#}")];
            return Ok(session.page("templates.html", context! { title => "Templates", folder, errors }));
        }
    };
    let mut warnings = renderer.warnings();
    warnings.extend(renderer.gaps());
    let errors = renderer.check();
    let overridden: Vec<String> = renderer.overridden().map(|(name, _)| name.to_owned()).collect();
    let previews: Vec<minijinja::Value> = KINDS
        .iter()
        .map(|kind| match renderer.render(kind, &sample_context(kind)) {
            Ok(r) => context! { kind, subject => r.subject, text => r.text, html => r.html },
            Err(error) => context! { kind, error => format!("{error:#}") },
        })
        .collect();
    Ok(session
        .page("templates.html", context! { title => "Templates", folder, warnings, errors, overridden, previews }))
}

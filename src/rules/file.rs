//! The rules file: TOML in, a compiled [`RuleSet`] out, or every error
//! found, each naming the rule, the field and the line.

use super::{Actions, Condition, Field, Outcome, Rule, RuleSet, SupportHours, build_sets};
use crate::domain::MailKind;
use regex::Regex;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use toml::Spanned;

/// One problem in a rules file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleError {
    /// The file, as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// The rule's name, when the problem is inside a rule.
    pub rule: Option<String>,
    /// The field, e.g. `when.subject`.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        if let Some(rule) = &self.rule {
            write!(f, "rule {rule:?}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    support_hours: Option<Spanned<RawHours>>,
    #[serde(default)]
    ticket_addresses: Vec<String>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHours {
    days: Vec<String>,
    start: String,
    end: String,
    timezone: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    #[serde(default, rename = "continue")]
    cont: bool,
    #[serde(default)]
    when: RawConditions,
    #[serde(default)]
    unless: RawConditions,
    #[serde(default)]
    then: RawActions,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConditions {
    sender: Option<Spanned<String>>,
    recipient: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    to: Option<Spanned<String>>,
    subject: Option<Spanned<String>>,
    text: Option<Spanned<String>>,
    header: Option<Spanned<BTreeMap<String, String>>>,
    kind: Option<Spanned<OneOrMany>>,
    thread: Option<Spanned<OneOrMany>>,
    plan: Option<Spanned<OneOrMany>>,
    feature: Option<Spanned<OneOrMany>>,
    role: Option<Spanned<OneOrMany>>,
    support_hours: Option<bool>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn values(&self) -> Vec<String> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawActions {
    queue: Option<String>,
    assign: Option<Spanned<String>>,
    priority: Option<Spanned<String>>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    page_on_call: bool,
    open_ticket: Option<Spanned<RawOpenTicket>>,
    reject: Option<Spanned<RawReject>>,
    #[serde(default)]
    drop: bool,
    #[serde(default)]
    accept: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpenTicket {
    #[serde(rename = "type")]
    ticket_type: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReject {
    #[serde(default = "default_code")]
    code: u16,
    #[serde(default = "default_status")]
    status: String,
    text: String,
    notice: Option<String>,
}

fn default_code() -> u16 {
    550
}

fn default_status() -> String {
    "5.7.1".to_owned()
}

/// Notice templates a reject action may name.
const NOTICES: &[&str] =
    &["refusal_no_new_chat", "refusal_tickets_not_in_plan", "refusal_thread_closed", "refusal_not_allowed"];
const KINDS: &[&str] = &["human", "auto_reply", "bounce"];
const THREADS: &[&str] = &["chat", "ticket", "none"];
const FEATURES: &[&str] = &["tickets", "on_call"];
const ROLES: &[&str] = &["owner", "admin", "member", "unprivileged", "agent", "unknown"];
const PRIORITIES: &[&str] = &["low", "normal", "high", "urgent"];
const DAYS: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

struct Compiler<'a> {
    text: &'a str,
    file: &'a str,
    errors: Vec<RuleError>,
    /// Patterns per field, in [`Field::ALL`] order.
    patterns: Vec<Vec<String>>,
}

impl Compiler<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())].bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn error(&mut self, offset: usize, rule: Option<&str>, field: Option<&str>, message: impl Into<String>) {
        let line = self.line(offset);
        self.errors.push(RuleError {
            file: self.file.to_owned(),
            line,
            rule: rule.map(str::to_owned),
            field: field.map(str::to_owned),
            message: message.into(),
        });
    }

    fn choices(&mut self, value: &Spanned<OneOrMany>, allowed: &[&str], rule: &str, field: &str) -> Vec<String> {
        let values = value.get_ref().values();
        for v in &values {
            if !allowed.contains(&v.as_str()) {
                self.error(
                    value.span().start,
                    Some(rule),
                    Some(field),
                    format!("{v:?} is not one of {}", allowed.join(", ")),
                );
            }
        }
        if values.is_empty() {
            self.error(value.span().start, Some(rule), Some(field), "the list is empty");
        }
        values
    }

    fn conditions(&mut self, raw: &RawConditions, rule: &str, part: &str) -> Vec<Condition> {
        let mut out = Vec::new();
        let regexes = [
            (Field::Sender, &raw.sender),
            (Field::Recipient, &raw.recipient),
            (Field::From, &raw.from),
            (Field::To, &raw.to),
            (Field::Subject, &raw.subject),
            (Field::Text, &raw.text),
        ];
        for (field, value) in regexes {
            let Some(value) = value else { continue };
            let name = format!("{part}.{}", field.key());
            match Regex::new(value.get_ref()) {
                Ok(_) => {
                    let slot = Field::ALL.iter().position(|f| *f == field).unwrap_or(0);
                    let index = self.patterns[slot].len();
                    self.patterns[slot].push(value.get_ref().clone());
                    out.push(Condition::Matches { field, index, pattern: value.get_ref().clone() });
                }
                Err(e) => self.error(value.span().start, Some(rule), Some(&name), format!("bad regex: {e}")),
            }
        }
        if let Some(headers) = &raw.header {
            for (name, pattern) in headers.get_ref() {
                match Regex::new(pattern) {
                    Ok(regex) => out.push(Condition::Header { name: name.to_ascii_lowercase(), regex }),
                    Err(e) => self.error(
                        headers.span().start,
                        Some(rule),
                        Some(&format!("{part}.header.{name}")),
                        format!("bad regex: {e}"),
                    ),
                }
            }
        }
        if let Some(kind) = &raw.kind {
            let kinds = self.choices(kind, KINDS, rule, &format!("{part}.kind"));
            out.push(Condition::Kind(
                kinds
                    .iter()
                    .filter_map(|k| match k.as_str() {
                        "human" => Some(MailKind::Human),
                        "auto_reply" => Some(MailKind::AutoReply),
                        "bounce" => Some(MailKind::Bounce),
                        _ => None,
                    })
                    .collect(),
            ));
        }
        if let Some(thread) = &raw.thread {
            out.push(Condition::Thread(self.choices(thread, THREADS, rule, &format!("{part}.thread"))));
        }
        if let Some(plan) = &raw.plan {
            out.push(Condition::Plan(plan.get_ref().values()));
        }
        if let Some(feature) = &raw.feature {
            out.push(Condition::Feature(self.choices(feature, FEATURES, rule, &format!("{part}.feature"))));
        }
        if let Some(role) = &raw.role {
            out.push(Condition::Role(self.choices(role, ROLES, rule, &format!("{part}.role"))));
        }
        if let Some(inside) = raw.support_hours {
            out.push(Condition::SupportHours(inside));
        }
        out
    }

    fn actions(&mut self, raw: &RawActions, rule: &str, at: usize, has_tickets_addresses: bool) -> Actions {
        let mut outcomes = Vec::new();
        if raw.accept {
            outcomes.push(Outcome::Accept);
        }
        if raw.drop {
            outcomes.push(Outcome::Drop);
        }
        if let Some(reject) = &raw.reject {
            let r = reject.get_ref();
            let at = reject.span().start;
            if !(400..600).contains(&r.code) {
                self.error(
                    at,
                    Some(rule),
                    Some("then.reject.code"),
                    format!("{} is not a 4xx or 5xx SMTP code", r.code),
                );
            }
            let status_ok = r.status.split('.').count() == 3
                && r.status.split('.').all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
                && r.status.starts_with(&(r.code / 100).to_string());
            if !status_ok {
                self.error(
                    at,
                    Some(rule),
                    Some("then.reject.status"),
                    format!(
                        "{:?} is not an enhanced status code of the code's class (like {}.7.1)",
                        r.status,
                        r.code / 100
                    ),
                );
            }
            if r.text.trim().is_empty() || r.text.len() > 400 || r.text.chars().any(char::is_control) {
                self.error(at, Some(rule), Some("then.reject.text"), "must be one line of 1 to 400 characters");
            }
            if let Some(notice) = &r.notice
                && !NOTICES.contains(&notice.as_str())
            {
                self.error(
                    at,
                    Some(rule),
                    Some("then.reject.notice"),
                    format!("{notice:?} is not one of {}", NOTICES.join(", ")),
                );
            }
            outcomes.push(Outcome::Reject {
                code: r.code,
                status: r.status.clone(),
                text: r.text.trim().to_owned(),
                notice: r.notice.clone(),
            });
        }
        if let Some(open) = &raw.open_ticket {
            if !has_tickets_addresses {
                self.error(
                    open.span().start,
                    Some(rule),
                    Some("then.open_ticket"),
                    "needs ticket_addresses at the top of the file (the addresses that may open tickets)",
                );
            }
            if open.get_ref().ticket_type.trim().is_empty() {
                self.error(open.span().start, Some(rule), Some("then.open_ticket.type"), "must not be empty");
            }
            outcomes.push(Outcome::OpenTicket { ticket_type: open.get_ref().ticket_type.trim().to_owned() });
        }
        if outcomes.len() > 1 {
            self.error(at, Some(rule), Some("then"), "at most one of accept, drop, reject, open_ticket");
        }
        if let Some(priority) = &raw.priority
            && !PRIORITIES.contains(&priority.get_ref().as_str())
        {
            self.error(
                priority.span().start,
                Some(rule),
                Some("then.priority"),
                format!("{:?} is not one of {}", priority.get_ref(), PRIORITIES.join(", ")),
            );
        }
        if let Some(assign) = &raw.assign
            && crate::domain::EmailAddress::parse(assign.get_ref()).is_none()
        {
            self.error(assign.span().start, Some(rule), Some("then.assign"), "must be an agent's email address");
        }
        Actions {
            queue: raw.queue.clone(),
            assign: raw.assign.as_ref().map(|a| a.get_ref().to_lowercase()),
            priority: raw.priority.as_ref().map(|p| p.get_ref().clone()),
            tags: raw.tags.clone(),
            page_on_call: raw.page_on_call,
            outcome: outcomes.into_iter().next(),
        }
    }

    fn hours(&mut self, raw: &Spanned<RawHours>) -> SupportHours {
        let at = raw.span().start;
        let h = raw.get_ref();
        let minutes = |text: &str| -> Option<u32> {
            let (hh, mm) = text.split_once(':')?;
            let (hh, mm): (u32, u32) = (hh.parse().ok()?, mm.parse().ok()?);
            (hh <= 24 && mm < 60 && hh * 60 + mm <= 24 * 60).then_some(hh * 60 + mm)
        };
        let mut hours = SupportHours::default();
        match (minutes(&h.start), minutes(&h.end)) {
            (Some(start), Some(end)) if start < end => (hours.start, hours.end) = (start, end),
            _ => self.error(
                at,
                None,
                Some("support_hours"),
                format!("{:?} to {:?} is not a range like 09:00 to 17:00", h.start, h.end),
            ),
        }
        let mut days = Vec::new();
        for day in &h.days {
            match DAYS.iter().position(|d| d.eq_ignore_ascii_case(day)) {
                Some(i) => days.push(i as u32),
                None => self.error(
                    at,
                    None,
                    Some("support_hours.days"),
                    format!("{day:?} is not one of {}", DAYS.join(", ")),
                ),
            }
        }
        hours.days = days;
        match h.timezone.parse::<chrono_tz::Tz>() {
            Ok(tz) => hours.timezone = tz,
            Err(_) => self.error(
                at,
                None,
                Some("support_hours.timezone"),
                format!("{:?} is not a time zone like America/Los_Angeles", h.timezone),
            ),
        }
        hours
    }
}

/// The error a TOML reader reports at `span` of `text`, with its line.
fn toml_error(text: &str, file: &str, first_line: usize, e: &toml::de::Error) -> RuleError {
    let line = e.span().map_or(1, |s| text[..s.start.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1);
    RuleError {
        file: file.to_owned(),
        line: first_line + line - 1,
        rule: None,
        field: None,
        message: e.message().to_owned(),
    }
}

/// Every error of a file the TOML reader stops at (it reports only its
/// first): each `[[rules]]` block, and what comes before the first, is read
/// on its own; the blocks that fail are blanked out (their lines kept, so
/// that line numbers hold) and the rest is compiled for the errors of
/// meaning (a bad pattern, an unknown notice) in the other rules.
fn every_file_error(text: &str, file: &str, whole: &toml::de::Error) -> Vec<RuleError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut starts: Vec<usize> =
        lines.iter().enumerate().filter(|(_, l)| l.trim_start().starts_with("[[rules]]")).map(|(i, _)| i).collect();
    starts.insert(0, 0);
    starts.dedup();
    let mut errors = Vec::new();
    let mut kept: Vec<&str> = lines.clone();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        let block = lines[start..end].join("\n");
        if let Err(e) = toml::from_str::<RawFile>(&block) {
            errors.push(toml_error(&block, file, start + 1, &e));
            kept[start..end].iter_mut().for_each(|line| *line = "");
        }
    }
    if errors.is_empty() {
        // Each block reads alone; together they clash (a key given twice).
        return vec![toml_error(text, file, 1, whole)];
    }
    if let Err(more) = compile(&kept.join("\n"), file) {
        let more: Vec<RuleError> =
            more.into_iter().filter(|e| !errors.iter().any(|seen| seen.line == e.line)).collect();
        errors.extend(more);
    }
    errors.sort_by_key(|e| e.line);
    errors
}

/// Compiles a rules file; `file` names it in errors.
pub fn compile(text: &str, file: &str) -> Result<RuleSet, Vec<RuleError>> {
    let raw: RawFile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => return Err(every_file_error(text, file, &e)),
    };
    let mut compiler = Compiler { text, file, errors: Vec::new(), patterns: vec![Vec::new(); Field::ALL.len()] };
    let support_hours = raw.support_hours.as_ref().map(|h| compiler.hours(h)).unwrap_or_default();
    let mut rules = Vec::new();
    let mut names = std::collections::HashSet::new();
    for spanned in &raw.rules {
        let raw_rule = spanned.get_ref();
        let at = spanned.span().start;
        let name = raw_rule.name.get_ref().trim().to_owned();
        if name.is_empty() {
            compiler.error(raw_rule.name.span().start, None, Some("name"), "a rule needs a name");
        } else if !names.insert(name.clone()) {
            compiler.error(raw_rule.name.span().start, Some(&name), Some("name"), "another rule has this name");
        }
        let when = compiler.conditions(&raw_rule.when, &name, "when");
        let unless = compiler.conditions(&raw_rule.unless, &name, "unless");
        let then = compiler.actions(&raw_rule.then, &name, at, !raw.ticket_addresses.is_empty());
        rules.push(Rule { name, cont: raw_rule.cont, when, unless, then, line: compiler.line(at) });
    }
    if !compiler.errors.is_empty() {
        return Err(compiler.errors);
    }
    let sets = build_sets(&compiler.patterns).map_err(|e| {
        vec![RuleError { file: file.to_owned(), line: 1, rule: None, field: None, message: format!("regex set: {e}") }]
    })?;
    Ok(RuleSet {
        rules,
        sets,
        support_hours,
        ticket_addresses: raw.ticket_addresses.iter().map(|a| a.to_ascii_lowercase()).collect(),
        source: file.to_owned(),
    })
}

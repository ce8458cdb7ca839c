//! Routing rules: what admins decide about inbound mail.
//!
//! A rules file (TOML) holds an ordered list of named rules. Each has
//! conditions (`when`, all must hold; `unless`, none may hold) and actions
//! (`then`). The first matching rule decides, unless it says `continue`: then
//! its actions are kept and the next rules are considered too.
//!
//! Rules are compiled once ([`file::compile`]): every regular expression of
//! one field (sender, recipient, From, To/Cc, Subject, reply text) goes into
//! one `RegexSet`, so a message is scanned once per field whatever the number
//! of rules, and each rule's conditions are then bit look-ups. Evaluation is
//! pure; [`RuleInput`] carries what it needs.
//!
//! Rules run after the security checks: they can not let a sender into a
//! thread that `authorize` refused, and bounces never reach them.

pub mod file;

use crate::domain::MailKind;
use crate::domain::Role;
use chrono::{DateTime, Datelike, Timelike, Utc};
use regex::{Regex, RegexSet};
use serde::Serialize;

pub use file::{RuleError, compile};

/// The fields a regular expression can look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// The envelope sender (MAIL FROM).
    Sender,
    /// Any envelope recipient (RCPT TO).
    Recipient,
    /// The From address.
    From,
    /// Any To or Cc address.
    To,
    /// The Subject.
    Subject,
    /// The extracted reply text.
    Text,
}

impl Field {
    /// Every field, in the order of [`RuleSet::sets`].
    pub const ALL: [Field; 6] = [Field::Sender, Field::Recipient, Field::From, Field::To, Field::Subject, Field::Text];

    /// The key in the rules file.
    pub fn key(self) -> &'static str {
        match self {
            Field::Sender => "sender",
            Field::Recipient => "recipient",
            Field::From => "from",
            Field::To => "to",
            Field::Subject => "subject",
            Field::Text => "text",
        }
    }
}

/// The rules in force, swapped atomically on reload: a message is judged by
/// the set that was current when its evaluation began.
#[derive(Debug)]
pub struct LiveRules(std::sync::RwLock<std::sync::Arc<RuleSet>>);

impl LiveRules {
    /// Starts with `rules`.
    pub fn new(rules: RuleSet) -> Self {
        Self(std::sync::RwLock::new(std::sync::Arc::new(rules)))
    }

    /// The current rules.
    pub fn current(&self) -> std::sync::Arc<RuleSet> {
        std::sync::Arc::clone(&self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Puts `rules` in force.
    pub fn replace(&self, rules: RuleSet) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(rules);
    }
}

/// A compiled rules file.
#[derive(Debug)]
pub struct RuleSet {
    /// The rules, in order.
    pub rules: Vec<Rule>,
    /// One set per [`Field::ALL`] entry, over every rule's pattern for that field.
    sets: Vec<RegexSet>,
    /// When support is staffed.
    pub support_hours: SupportHours,
    /// Local parts (e.g. `downtime`) that accept mail which may open a ticket.
    pub ticket_addresses: Vec<String>,
    /// Where the rules came from (a path, or `built-in`).
    pub source: String,
}

/// One rule.
#[derive(Debug)]
pub struct Rule {
    /// Its name, unique in the file.
    pub name: String,
    /// Keep evaluating after this rule matched.
    pub cont: bool,
    /// All must hold.
    pub when: Vec<Condition>,
    /// None may hold.
    pub unless: Vec<Condition>,
    /// What it does.
    pub then: Actions,
    /// Line of the rule in its file.
    pub line: usize,
}

/// One condition.
#[derive(Debug)]
pub enum Condition {
    /// A pattern of the field's `RegexSet` matches.
    Matches {
        /// The field.
        field: Field,
        /// The pattern's index in that field's set.
        index: usize,
        /// The pattern, for explanations.
        pattern: String,
    },
    /// A named header matches.
    Header {
        /// Lower-case header name.
        name: String,
        /// The compiled pattern.
        regex: Regex,
    },
    /// The message kind is one of these.
    Kind(Vec<MailKind>),
    /// The thread kind (`chat`, `ticket`, `none`) is one of these.
    Thread(Vec<String>),
    /// The site's plan is one of these.
    Plan(Vec<String>),
    /// The plan includes every one of these features (`tickets`, `on_call`).
    Feature(Vec<String>),
    /// The sender's role is one of these (`unknown` for a sender we do not know).
    Role(Vec<String>),
    /// Inside (true) or outside (false) support hours.
    SupportHours(bool),
}

impl Condition {
    /// How the condition reads, for explanations.
    pub fn describe(&self) -> String {
        match self {
            Condition::Matches { field, pattern, .. } => format!("{} ~ /{pattern}/", field.key()),
            Condition::Header { name, regex } => format!("header {name} ~ /{}/", regex.as_str()),
            Condition::Kind(kinds) => {
                let kinds: Vec<&str> = kinds.iter().map(|k| k.label()).collect();
                one_of("kind", &kinds)
            }
            Condition::Thread(v) => one_of("thread", v),
            Condition::Plan(v) => one_of("plan", v),
            Condition::Feature(v) => format!("the plan includes {}", v.join(" and ")),
            Condition::Role(v) => one_of("role", v),
            Condition::SupportHours(inside) => {
                if *inside {
                    "inside support hours".to_owned()
                } else {
                    "outside support hours".to_owned()
                }
            }
        }
    }
}

/// `kind is human`, or `kind is one of human, bounce`: a list condition in
/// the rules file's own words.
fn one_of(what: &str, values: &[impl AsRef<str>]) -> String {
    match values {
        [one] => format!("{what} is {}", one.as_ref()),
        many => format!("{what} is one of {}", many.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(", ")),
    }
}

/// What a rule does.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Actions {
    /// Route to this queue.
    pub queue: Option<String>,
    /// Assign to this agent (email).
    pub assign: Option<String>,
    /// Set the priority (`low`, `normal`, `high`, `urgent`).
    pub priority: Option<String>,
    /// Add these tags.
    pub tags: Vec<String>,
    /// Page the on-call address.
    pub page_on_call: bool,
    /// The terminal decision, if any.
    pub outcome: Option<Outcome>,
}

impl Actions {
    /// What the rules do to a message besides deciding it, in the rules
    /// file's words: `queue billing, priority urgent, tags vip emergency,
    /// page on-call`; empty when they do nothing of the kind.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(queue) = &self.queue {
            parts.push(format!("queue {queue}"));
        }
        if let Some(agent) = &self.assign {
            parts.push(format!("assign {agent}"));
        }
        if let Some(priority) = &self.priority {
            parts.push(format!("priority {priority}"));
        }
        if !self.tags.is_empty() {
            parts.push(format!("tags {}", self.tags.join(" ")));
        }
        if self.page_on_call {
            parts.push("page on-call".to_owned());
        }
        parts.join(", ")
    }
}

/// A rule's final word on a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Outcome {
    /// Take it (the normal pipeline goes on).
    Accept,
    /// Record it and answer 250 without posting it.
    Drop,
    /// Refuse it with this SMTP answer, and maybe a notice to the sender.
    Reject {
        /// 4xx or 5xx.
        code: u16,
        /// Enhanced status code, e.g. `5.7.1`.
        status: String,
        /// The text of the answer.
        text: String,
        /// A refusal template to mail the sender (known senders, once an hour).
        notice: Option<String>,
    },
    /// Open a ticket of this type from the mail (ticket addresses only, for
    /// senders whose site's plan includes tickets).
    OpenTicket {
        /// The ticket type.
        ticket_type: String,
    },
}

/// When support is staffed.
#[derive(Debug, Clone)]
pub struct SupportHours {
    /// Days, Monday = 0.
    pub days: Vec<u32>,
    /// Opening, minutes after midnight.
    pub start: u32,
    /// Closing, minutes after midnight.
    pub end: u32,
    /// The time zone the hours are in.
    pub timezone: chrono_tz::Tz,
}

impl Default for SupportHours {
    /// 9-5 PST, Monday to Friday, as the seeds say.
    fn default() -> Self {
        Self { days: vec![0, 1, 2, 3, 4], start: 9 * 60, end: 17 * 60, timezone: chrono_tz::America::Los_Angeles }
    }
}

impl SupportHours {
    /// Whether `now` falls inside the hours.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.timezone);
        let minute = local.hour() * 60 + local.minute();
        self.days.contains(&local.weekday().num_days_from_monday()) && minute >= self.start && minute < self.end
    }
}

/// What the rules look at in one message.
#[derive(Debug, Clone, Default)]
pub struct RuleInput {
    /// MAIL FROM.
    pub sender: String,
    /// RCPT TO addresses.
    pub recipients: Vec<String>,
    /// From address.
    pub from: String,
    /// To and Cc addresses.
    pub to: Vec<String>,
    /// Subject.
    pub subject: String,
    /// Header fields (lower-case name, value).
    pub headers: Vec<(String, String)>,
    /// The extracted reply text.
    pub text: String,
    /// Message kind.
    pub kind: Option<MailKind>,
    /// `chat`, `ticket` or `none`.
    pub thread: String,
    /// The site's plan id, if known.
    pub plan: Option<String>,
    /// Whether that plan includes tickets.
    pub has_tickets: bool,
    /// Whether that plan includes on-call.
    pub has_on_call: bool,
    /// The sender's role, if we know the sender.
    pub role: Option<Role>,
    /// The time to judge support hours by.
    pub now: DateTime<Utc>,
}

/// The result of evaluating the rules on one message.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Decision {
    /// Names of the rules that matched, in order.
    pub rules: Vec<String>,
    /// The accumulated actions; `outcome` is the deciding rule's, if any.
    pub actions: Actions,
    /// Every rule considered, with each condition's result (dry runs only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<RuleTrace>,
}

/// How one rule fared.
#[derive(Debug, Clone, Serialize)]
pub struct RuleTrace {
    /// The rule.
    pub rule: String,
    /// Whether it matched.
    pub matched: bool,
    /// Each condition and whether it held (`unless` ones prefixed `not`).
    pub conditions: Vec<(String, bool)>,
}

/// The text of the rules shipped in `rules/default.toml`.
pub const DEFAULT_RULES: &str = include_str!("../../rules/default.toml");

impl RuleSet {
    /// A rule's `plan =` conditions that name no plan in `known` (the plans
    /// table's ids): such a condition never holds, which is a mistake.
    pub fn unknown_plans(&self, known: &[String]) -> Vec<RuleError> {
        let mut errors = Vec::new();
        for rule in &self.rules {
            let conditions = rule.when.iter().map(|c| ("when", c)).chain(rule.unless.iter().map(|c| ("unless", c)));
            for (part, condition) in conditions {
                let Condition::Plan(plans) = condition else { continue };
                for plan in plans.iter().filter(|p| !known.contains(p)) {
                    errors.push(RuleError {
                        file: self.source.clone(),
                        line: rule.line,
                        rule: Some(rule.name.clone()),
                        field: Some(format!("{part}.plan")),
                        message: format!("{plan:?} is not a plan; the plans are: {}", known.join(", ")),
                    });
                }
            }
        }
        errors
    }

    /// The rules shipped in `rules/default.toml`.
    pub fn built_in() -> Self {
        compile(DEFAULT_RULES, "built-in").expect("the shipped rules compile")
    }

    /// Evaluates the rules on a message; `explain` records every condition.
    pub fn evaluate(&self, input: &RuleInput, explain: bool) -> Decision {
        let matches = self.field_matches(input);
        let inside_hours = self.support_hours.contains(input.now);
        let mut decision = Decision::default();
        for rule in &self.rules {
            let mut conditions = Vec::new();
            let mut holds = true;
            for condition in &rule.when {
                let ok = check(condition, input, &matches, inside_hours);
                holds &= ok;
                if explain {
                    conditions.push((condition.describe(), ok));
                } else if !holds {
                    break;
                }
            }
            for condition in &rule.unless {
                if !holds && !explain {
                    break;
                }
                let ok = !check(condition, input, &matches, inside_hours);
                holds &= ok;
                if explain {
                    conditions.push((format!("not {}", condition.describe()), ok));
                }
            }
            if explain {
                decision.trace.push(RuleTrace { rule: rule.name.clone(), matched: holds, conditions });
            }
            if !holds {
                continue;
            }
            decision.rules.push(rule.name.clone());
            let actions = &mut decision.actions;
            actions.queue = rule.then.queue.clone().or(actions.queue.take());
            actions.assign = rule.then.assign.clone().or(actions.assign.take());
            actions.priority = rule.then.priority.clone().or(actions.priority.take());
            actions.tags.extend(rule.then.tags.iter().cloned());
            actions.page_on_call |= rule.then.page_on_call;
            if rule.then.outcome.is_some() {
                actions.outcome = rule.then.outcome.clone();
            }
            if !rule.cont {
                if !explain {
                    break;
                }
                // Show the remaining rules as not reached.
                for rest in self.rules.iter().skip_while(|r| r.name != rule.name).skip(1) {
                    decision.trace.push(RuleTrace { rule: rest.name.clone(), matched: false, conditions: Vec::new() });
                }
                break;
            }
        }
        decision
    }

    fn field_matches(&self, input: &RuleInput) -> Vec<Vec<bool>> {
        Field::ALL
            .iter()
            .zip(&self.sets)
            .map(|(field, set)| {
                let mut hit = vec![false; set.len()];
                if set.is_empty() {
                    return hit;
                }
                let mut scan = |value: &str| {
                    for i in &set.matches(value) {
                        hit[i] = true;
                    }
                };
                match field {
                    Field::Sender => scan(&input.sender),
                    Field::Recipient => input.recipients.iter().for_each(|r| scan(r)),
                    Field::From => scan(&input.from),
                    Field::To => input.to.iter().for_each(|t| scan(t)),
                    Field::Subject => scan(&input.subject),
                    Field::Text => scan(&input.text),
                }
                hit
            })
            .collect()
    }
}

fn check(condition: &Condition, input: &RuleInput, matches: &[Vec<bool>], inside_hours: bool) -> bool {
    match condition {
        Condition::Matches { field, index, .. } => {
            let slot = Field::ALL.iter().position(|f| f == field).unwrap_or(0);
            matches[slot].get(*index).copied().unwrap_or(false)
        }
        Condition::Header { name, regex } => {
            input.headers.iter().any(|(n, v)| n.eq_ignore_ascii_case(name) && regex.is_match(v))
        }
        Condition::Kind(kinds) => input.kind.is_some_and(|k| kinds.contains(&k)),
        Condition::Thread(kinds) => kinds.contains(&input.thread),
        Condition::Plan(plans) => input.plan.as_ref().is_some_and(|p| plans.contains(p)),
        Condition::Feature(features) => features.iter().all(|f| match f.as_str() {
            "tickets" => input.has_tickets,
            "on_call" => input.has_on_call,
            _ => false,
        }),
        Condition::Role(roles) => {
            let role = input.role.map_or("unknown", Role::as_str);
            roles.iter().any(|r| r == role)
        }
        Condition::SupportHours(inside) => *inside == inside_hours,
    }
}

/// Builds the per-field regex sets (used by the compiler).
fn build_sets(patterns: &[Vec<String>]) -> Result<Vec<RegexSet>, regex::Error> {
    patterns.iter().map(RegexSet::new).collect()
}

#[cfg(test)]
mod tests {
    use super::SupportHours;
    use chrono::TimeZone;

    #[test]
    fn support_hours_are_nine_to_five_pacific_on_weekdays() {
        let hours = SupportHours::default();
        // Monday 2026-11-23 10:00 PST = 18:00 UTC.
        assert!(hours.contains(chrono::Utc.with_ymd_and_hms(2026, 11, 23, 18, 0, 0).unwrap()));
        // Monday 08:59 PST.
        assert!(!hours.contains(chrono::Utc.with_ymd_and_hms(2026, 11, 23, 16, 59, 0).unwrap()));
        // Saturday noon PST.
        assert!(!hours.contains(chrono::Utc.with_ymd_and_hms(2026, 11, 28, 20, 0, 0).unwrap()));
    }
}

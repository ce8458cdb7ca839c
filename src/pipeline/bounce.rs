//! What a bounce says: which recipient failed, with which status, and which
//! of our notifications it is about. Standard delivery status notifications
//! (RFC 3464) are read field by field; the common non-standard shapes
//! (Exchange, qmail, Gmail, Yahoo, Exim) by the sentences they use. Pure.

use super::parse::ParsedMail;
use regex::Regex;
use serde::Serialize;
use std::sync::LazyLock;

/// What a bounce reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BounceReport {
    /// The address that could not be reached.
    pub failed_recipient: Option<String>,
    /// The enhanced status code, e.g. `5.1.1`.
    pub status: Option<String>,
    /// `hard` (5.x.x: give up) or `soft` (4.x.x: temporary).
    pub severity: Option<String>,
    /// The remote server's words, if given.
    pub diagnostic: Option<String>,
    /// Message-ID of the returned message (ours, when it is about a notification).
    pub original_message_id: Option<String>,
}

static FIELD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?im)^(final-recipient|original-recipient|status|diagnostic-code|action)\s*:\s*(.+)$")
        .expect("valid regex")
});
static STATUS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b").expect("valid regex"));
static BASIC_CODE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b([45])[0-5]\d\b").expect("valid regex"));
static ADDRESS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"<?([A-Za-z0-9._%+\-=]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,})>?").expect("valid regex"));
/// Sentences of non-standard bounces followed (on the same or next lines) by the failed address.
static RECIPIENT_SENTENCES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?is)(delivery to the following recipients? failed permanently:|",
        r"the following addresses? had permanent fatal errors|",
        r"the following address(?:es|\(es\))? failed:|",
        r"your message to (?P<exch>\S+@\S+) couldn't be delivered|",
        r"couldn't be delivered to the following recipients?|",
        r"could not be delivered to one or more recipients|",
        r"sorry, we were unable to deliver your message to the following address|",
        r"i'm afraid i wasn't able to deliver your message to the following addresses|",
        r"this is the qmail-send program)"
    ))
    .expect("valid regex")
});
static QMAIL_RECIPIENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^<([^>\s]+@[^>\s]+)>:").expect("valid regex"));

/// Reads a bounce.
pub fn read(mail: &ParsedMail) -> BounceReport {
    let mut report =
        BounceReport { original_message_id: mail.returned_message_ids.first().cloned(), ..Default::default() };
    if let Some(dsn) = &mail.delivery_status {
        for capture in FIELD.captures_iter(dsn) {
            let value = capture[2].trim();
            match capture[1].to_ascii_lowercase().as_str() {
                "final-recipient" | "original-recipient" if report.failed_recipient.is_none() => {
                    let address = value.rsplit(';').next().unwrap_or(value).trim();
                    report.failed_recipient = Some(address.trim_matches(['<', '>']).to_lowercase());
                }
                "status" if report.status.is_none() => {
                    report.status = STATUS.find(value).map(|m| m.as_str().to_owned());
                }
                "diagnostic-code" if report.diagnostic.is_none() => {
                    let text = value.split_once(';').map_or(value, |(_, t)| t).trim();
                    report.diagnostic = Some(text.chars().take(500).collect());
                }
                _ => {}
            }
        }
    }
    let body = &mail.readable_text;
    if report.failed_recipient.is_none() {
        report.failed_recipient = recipient_from_prose(body);
    }
    if report.status.is_none() {
        report.status = STATUS.find(body).map(|m| m.as_str().to_owned());
    }
    if report.diagnostic.is_none() {
        report.diagnostic = body
            .lines()
            .find(|l| STATUS.is_match(l) || BASIC_CODE.is_match(l) && l.to_lowercase().contains("said"))
            .map(|l| l.trim().chars().take(500).collect());
    }
    let class = report.status.as_deref().and_then(|s| s.chars().next()).or_else(|| {
        let diagnostic = report.diagnostic.as_deref()?;
        BASIC_CODE.captures(diagnostic).and_then(|c| c[1].chars().next())
    });
    report.severity = match class {
        Some('5') => Some("hard".to_owned()),
        Some('4') => Some("soft".to_owned()),
        _ => None,
    };
    report
}

fn recipient_from_prose(body: &str) -> Option<String> {
    if let Some(capture) = QMAIL_RECIPIENT.captures(body) {
        return Some(capture[1].to_lowercase());
    }
    let found = RECIPIENT_SENTENCES.captures(body)?;
    if let Some(address) = found.name("exch") {
        return ADDRESS.captures(address.as_str()).map(|c| c[1].to_lowercase());
    }
    let after = &body[found.get(0)?.end()..];
    ADDRESS.captures(after).map(|c| c[1].to_lowercase())
}

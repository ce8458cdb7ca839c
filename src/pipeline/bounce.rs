//! What a bounce says: which recipient failed, with which status, and which
//! of our notifications it is about. Standard delivery status notifications
//! (RFC 3464) are read field by field; the common non-standard shapes
//! (Exchange, qmail, Gmail, Yahoo, Exim, Postfix, Sendmail, InterScan, SMTP32,
//! Lotus Notes, ...) by the sentences they use: the failed address is the one
//! a failure sentence names (on its line or just below it), before the copy
//! of the returned message. Also here: whether a message that carries no
//! standard report still reads as a delivery failure ([`failure_report`]).
//! Pure.

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
    LazyLock::new(|| Regex::new(r"<?([A-Za-z0-9._%+\-=]+@[A-Za-z0-9.\-]+\.[A-Za-z]+)>?").expect("valid regex"));
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
        r"addressed to (?:the )?(?:e-?mail )?address\s*:|did not reach the following recipient\(s\):|",
        r"to\s+which\s+your\s+message\s+was\s+addressed,|",
        r"the following recipients? (?:were|was) affected:|",
        r"the following recipient\(s\) could not be reached:|",
        r"following list of recipients:|error delivering your mail to|was not delivered to:|",
        r"you sent mail to|",
        r"this is the qmail-send program)"
    ))
    .expect("valid regex")
});
static QMAIL_RECIPIENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^<([^>\s]+@[^>\s]+)>:").expect("valid regex"));

/// Words of a delivery failure, in the languages mail systems write them.
static FAILURE_WORDS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)(could ?n[o']t be (delivered|sent)|could not deliver|unable to deliver|was not delivered|",
        r"did not reach the following|did not receive your message|not delivered to the following|",
        r"delivery has failed to|message not delivered|did not reach some or all|could not be reached|",
        r"error has occurred while attempting to deliver|error delivering your mail|",
        r"not a valid (user|recipient|mailbox)|no mailbox here|not listed in (the )?(domino|public name)|",
        r"recipient not found|user not found|account (is|has been) disabled|host unknown|",
        r"wasn't delivered|not be delivered|undeliverable|undelivered|non-?deliver|delivery (has )?failed|",
        r"delivery to the following|failed permanently|permanent (fatal )?error|fatal errors?|",
        r"user unknown|unknown user|no such (user|mailbox|address|recipient)|mailbox (is )?unavailable|",
        r"mailbox (not found|does not exist|is full|full)|addressee unknown|unknown (recipient|address)|",
        r"recipient address rejected|invalid (recipient|mailbox|address|final delivery)|does not exist|",
        r"message (was )?rejected|returned mail|failed recipients?|delivery status notification|",
        r"mail delivery (failed|failure|system)|failure notice|delivery failure|over quota|quota exceeded|",
        r"n'a pas pu (être|etre) (remis|d[ée]livr)|non remis|konnte nicht zugestellt|nicht zugestellt|",
        r"unzustellbar|no se pudo entregar|no se ha podido entregar|non [èe] stato possibile recapitare|",
        r"kon niet (worden )?(bezorgd|afgeleverd)|não foi possível entregar|не может быть доставлено|",
        r"не удалось доставить|配信できません|无法投递|送達できませんでした)"
    ))
    .expect("valid failure regex")
});

/// Subjects of delivery failure reports (anywhere in the subject).
static FAILURE_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)(undeliver|undelivered|not delivered|delivery (status|failure|failed|notification|problem|report)|",
        r"failure notice|returned mail|mail delivery|could not be delivered|delivery has failed|non remis|",
        r"nondeliverable|non-delivery|returned to sender|mail system error|unzustellbar|nicht zustellbar|",
        r"no se puede entregar|onbestelbaar|impossibile recapitare|niedostarczalne|недоставлен|配信不能|无法投递|",
        r"warning: could not send|delayed mail|delivery delayed|failed mail|mail system error)"
    ))
    .expect("valid subject regex")
});

/// Where the copy of the returned message (or its headers) starts in a
/// report's text: addresses below it are the original's, not the failed one.
static RETURNED_COPY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?im)^\s*(-+ ?(original message|returned mail|below this line|this is a copy|the header of the original|",
        r"original message follows|unsent message below|message text follows)|original message follows|",
        r"-+ ?(returned|original) message|------ this is a copy of the message|received: from )"
    ))
    .expect("valid returned-copy regex")
});

/// Reply and forward prefixes: a person answering about a failure.
static REPLY_PREFIX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^\s*(re|aw|sv|vs|fw|fwd|wg|tr|rv|r|antw|odp)\s*:").expect("valid regex"));

/// Whether a subject starts with a reply or forward prefix (`Re:`, `Fwd:`,
/// `AW:`, ...): a person answering about something.
pub(super) fn is_reply_subject(subject: &str) -> bool {
    REPLY_PREFIX.is_match(subject)
}

/// Display names and local parts mail systems send their reports as.
fn sender_is_mail_system(mail: &ParsedMail) -> bool {
    let local = mail.from.as_deref().and_then(|f| f.split('@').next()).unwrap_or("").to_ascii_lowercase();
    let name = mail.from_name.as_deref().unwrap_or("").to_ascii_lowercase();
    matches!(
        local.as_str(),
        "mailer-daemon" | "mailerdaemon" | "mailer_daemon" | "postmaster" | "mail-daemon" | "maildaemon"
    ) || local.starts_with("microsoftexchange")
        || local.starts_with("mail.delivery")
        || local.contains("mailer-daemon")
        || [
            "mail delivery",
            "mailer-daemon",
            "mailer daemon",
            "postmaster",
            "mail administrator",
            "mail system",
            "system administrator",
            "mail service",
            "mail_service",
        ]
        .iter()
        .any(|n| name.contains(n) || local.replace(['.', '_', '-'], " ").contains(n))
}

/// Whether a message with no standard delivery report still reads as one:
/// the signal that says so, or `None`. A person writing about a failed
/// delivery (a reply or forward, from no mail system, with no automatic
/// header) is not one.
pub fn failure_report(mail: &ParsedMail, automatic: bool) -> Option<&'static str> {
    if mail.header("x-failed-recipients").is_some() {
        return Some("X-Failed-Recipients header");
    }
    let subject = mail.subject.as_deref().unwrap_or("");
    let replying = REPLY_PREFIX.is_match(subject);
    let system = sender_is_mail_system(mail);
    let failure_subject = FAILURE_SUBJECT.is_match(subject);
    // A person's ordinary reply needs no look at its text.
    if !(system || failure_subject || automatic) {
        return None;
    }
    let failure_text = FAILURE_WORDS.is_match(report_text(&mail.readable_text));
    match (system, failure_subject && !replying, failure_text, automatic) {
        (true, true, _, _) => Some("delivery failure subject from the mail system"),
        (true, _, true, _) => Some("delivery failure report from the mail system"),
        (false, true, true, _) => Some("delivery failure subject and wording"),
        (false, _, true, true) if !replying => Some("automatic message reporting a delivery failure"),
        _ => None,
    }
}

/// The part of a report's text above the copy of the returned message.
fn report_text(body: &str) -> &str {
    let head = &body[..floor_char_boundary(body, 8000)];
    match RETURNED_COPY.find(head) {
        Some(found) if found.start() > 0 => &head[..found.start()],
        _ => head,
    }
}

/// The largest char boundary at or below `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

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
        report.failed_recipient = mail
            .header("x-failed-recipients")
            .and_then(|value| ADDRESS.captures(value))
            .map(|c| c[1].to_lowercase())
            .or_else(|| recipient_from_prose(body, mail));
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

/// The failed address in a report's prose: after one of the known sentences;
/// else the first address a failure sentence names on its line or the two
/// lines below it; else the only address in the report. Never the report's
/// own sender, the address it is sent to (the returned message's sender) or
/// a mail system's address.
fn recipient_from_prose(body: &str, mail: &ParsedMail) -> Option<String> {
    let text = report_text(body);
    let eligible = |address: &str| {
        // Exchange's X.400 form: `dda:SMTP=user@example.com`.
        let address = address.to_lowercase();
        let address = address.strip_prefix("smtp=").map(str::to_owned).unwrap_or(address);
        let local = address.split('@').next().unwrap_or("");
        let system = matches!(local, "postmaster" | "mailer-daemon" | "mailerdaemon" | "root" | "abuse");
        let ours = mail.from.as_deref() == Some(address.as_str()) || mail.to.contains(&address);
        (!system && !ours).then_some(address)
    };
    // The original's sender ("not accepting mail from x@y") is not the failed address.
    let first_in = |text: &str| {
        ADDRESS.captures_iter(text).find_map(|c| {
            let before = text[..c.get(0).map_or(0, |m| m.start())].trim_end().to_ascii_lowercase();
            if before.ends_with("mail from") || before.ends_with("mail from:") { None } else { eligible(&c[1]) }
        })
    };
    if let Some(capture) = QMAIL_RECIPIENT.captures(text) {
        return Some(capture[1].to_lowercase());
    }
    if let Some(found) = RECIPIENT_SENTENCES.captures(text) {
        if let Some(address) = found.name("exch").and_then(|a| first_in(a.as_str())) {
            return Some(address);
        }
        if let Some(address) = first_in(&text[found.get(0).map_or(0, |m| m.end())..]) {
            return Some(address);
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if FAILURE_WORDS.is_match(line) || line.to_ascii_lowercase().contains("rcpt to") {
            let near = lines[i..].iter().filter(|l| !l.trim().is_empty()).take(4).copied().collect::<Vec<_>>();
            let near = near.join("\n");
            if let Some(address) = first_in(&near) {
                return Some(address);
            }
        }
    }
    let only = first_in(text)?;
    ADDRESS.captures_iter(text).filter_map(|c| eligible(&c[1])).all(|other| other == only).then_some(only)
}

//! The SMTP reply for each pipeline outcome: the mapping from a recipient
//! refusal or a message's disposition to a code, an enhanced status code
//! (RFC 3463) and a sentence a person can act on. Makes no decisions. The
//! protocol's own replies (the greeting, `354`, `452`, syntax errors, the
//! listener's `421`) are written where the protocol is spoken, in `smtp`.

use super::outcome::{DeferCause, Disposition, RcptRefusal, Refusal};
use std::fmt;

/// One SMTP reply line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    /// Basic status code, e.g. 550.
    pub code: u16,
    /// Enhanced status code, e.g. `5.7.1`.
    pub enhanced: String,
    /// Human-readable text.
    pub text: String,
}

impl SmtpReply {
    /// A reply from its parts.
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Self {
        Self { code, enhanced: enhanced.to_owned(), text: text.into() }
    }

    /// A reply whose codes come from configuration (a routing rule).
    pub fn dynamic(code: u16, status: &str, text: &str) -> Self {
        Self { code, enhanced: status.to_owned(), text: text.to_owned() }
    }

    /// Whether this reply accepts (2xx/3xx).
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }
}

impl fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.enhanced, self.text)
    }
}

/// The reply to the end of DATA.
pub fn for_disposition(disposition: &Disposition) -> SmtpReply {
    match disposition {
        Disposition::Accepted { thread_label, duplicate: false, .. } => {
            SmtpReply::new(250, "2.0.0", format!("Message added to {thread_label}"))
        }
        Disposition::Accepted { duplicate: true, .. } => {
            SmtpReply::new(250, "2.0.0", "Message already received; this repeated delivery is ignored")
        }
        Disposition::Dropped { reason } => {
            SmtpReply::new(250, "2.0.0", format!("Message recorded, not posted ({reason})"))
        }
        Disposition::Held { .. } => SmtpReply::new(250, "2.0.0", "Message received; it is held for review"),
        Disposition::Rejected(refusal) => for_refusal(refusal),
        Disposition::Deferred { cause: DeferCause::LoopBreaker, .. } => {
            SmtpReply::new(451, "4.7.1", "Too many messages in a short time (a mail loop?); please try again later")
        }
        Disposition::Deferred { cause: DeferCause::Dns, .. } => SmtpReply::new(
            451,
            "4.4.3",
            "The sender's domain could not be checked: its DMARC or SPF record did not come from DNS; please try again later",
        ),
        Disposition::TempFail { busy: true, .. } => {
            SmtpReply::new(451, "4.3.2", "The system is busy storing mail; please try again later")
        }
        Disposition::TempFail { .. } => {
            SmtpReply::new(451, "4.3.0", "Temporary problem storing the message; please try again later")
        }
    }
}

/// The sentence that tells a customer with on-call where an emergency goes
/// (empty when they have no such route).
fn emergency_route(address: Option<&str>) -> String {
    match address {
        Some(address) => format!(
            ". For an outage or another emergency, write to {address}: it opens a ticket and pages the \
             on-call engineers at once"
        ),
        None => String::new(),
    }
}

fn for_refusal(refusal: &Refusal) -> SmtpReply {
    match refusal {
        Refusal::NoNewChat { emergency } => SmtpReply::new(
            550,
            "5.7.1",
            format!(
                "A chat can not be started by email. Please start a new chat from your Dashboard \
                 (Support > Launch Chat); to continue a conversation, reply to its notification email{}",
                emergency_route(emergency.as_deref())
            ),
        ),
        Refusal::NotAllowed(reason) => SmtpReply::new(
            550,
            "5.7.1",
            format!(
                "You are not allowed to write in this conversation ({reason}). Reply from the address \
                 the notification was sent to, or write in the Dashboard"
            ),
        ),
        Refusal::UnknownThread => SmtpReply::new(
            550,
            "5.7.1",
            "This message does not continue any conversation we know. Start a chat from your Dashboard \
             (Support > Launch Chat), or reply to a notification email",
        ),
        Refusal::ThreadClosed => SmtpReply::new(
            550,
            "5.7.1",
            "This conversation is closed, so your reply was not added. If you still need help, start a new \
             chat from your Dashboard (Support > Launch Chat)",
        ),
        Refusal::Rule { code, status, text, emergency, .. } => {
            SmtpReply::dynamic(*code, status, &format!("{text}{}", emergency_route(emergency.as_deref())))
        }
        Refusal::TooComplex(why) => SmtpReply::new(552, "5.3.4", format!("Message too complex: {why}")),
        Refusal::AmbiguousAuthor(why) => SmtpReply::new(
            550,
            "5.7.1",
            format!(
                "Your message does not have exactly one author ({why}), so it cannot be posted as anyone's. \
                 Send it again with a single address in From, or write in the Dashboard"
            ),
        ),
        Refusal::Unauthenticated(author) => SmtpReply::new(
            550,
            "5.7.1",
            format!(
                "We could not verify that this message comes from {author} (its domain passed neither DMARC nor \
                 an aligned SPF or DKIM check). Reply to the notification's own reply address, or write in the \
                 Dashboard"
            ),
        ),
        Refusal::DmarcFailed(domain) => SmtpReply::new(
            550,
            "5.7.1",
            format!(
                "Your message failed DMARC authentication for {domain}, so it may be forged. Send it through \
                 your domain's own mail servers, or write in the Dashboard"
            ),
        ),
        Refusal::EmptyReply => SmtpReply::new(
            550,
            "5.6.0",
            "Your reply has no new text above the quoted message, so nothing was added to the conversation",
        ),
        Refusal::Unparseable => SmtpReply::new(
            550,
            "5.6.0",
            "The message could not be read as an email: it has no header section, or its MIME structure is broken",
        ),
    }
}

/// The reply to a refused RCPT.
pub fn for_rcpt_refusal(refusal: &RcptRefusal, domain: &str) -> SmtpReply {
    match refusal {
        RcptRefusal::RelayDenied => {
            SmtpReply::new(550, "5.7.1", format!("Relay denied: this server only accepts mail for {domain}"))
        }
        RcptRefusal::UnknownMailbox => SmtpReply::new(
            550,
            "5.1.1",
            format!("No such mailbox. Reply to a notification email, or write to support@{domain}"),
        ),
        RcptRefusal::BadToken(crate::domain::TokenError::Expired) => SmtpReply::new(
            550,
            "5.1.1",
            "This reply address has expired. Reply to a newer notification, or write in the Dashboard",
        ),
        RcptRefusal::BadToken(crate::domain::TokenError::Retired) => SmtpReply::new(
            550,
            "5.7.1",
            "This reply address was withdrawn for your security. Please answer the latest notification \
             email you received from us instead, or write in the Dashboard",
        ),
        RcptRefusal::BadToken(_) => SmtpReply::new(
            550,
            "5.1.1",
            "This reply address is not valid (damaged or forged). Reply to the notification email itself, \
             or write in the Dashboard",
        ),
        RcptRefusal::Revoked => {
            SmtpReply::new(550, "5.1.1", "This reply address was issued to someone no longer in our directory")
        }
        RcptRefusal::UnknownThread => {
            SmtpReply::new(550, "5.1.1", "This reply address belongs to a conversation that no longer exists")
        }
        RcptRefusal::Unavailable => {
            SmtpReply::new(451, "4.3.0", "Temporary problem checking this address; please try again later")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender told "a mail loop?" when DNS failed would look for the
    /// wrong problem: each cause of a deferral has its own answer.
    #[test]
    fn a_deferral_says_what_tripped() {
        let deferred = |cause| Disposition::Deferred { reason: "for the log".to_owned(), cause };
        let dns = for_disposition(&deferred(DeferCause::Dns)).to_string();
        assert!(dns.starts_with("451 4.4.3 ") && dns.contains("DMARC") && dns.contains("DNS"), "{dns}");
        assert!(!dns.contains("loop") && !dns.contains("for the log"), "{dns}");
        let looping = for_disposition(&deferred(DeferCause::LoopBreaker)).to_string();
        assert!(looping.starts_with("451 4.7.1 ") && looping.contains("mail loop"), "{looping}");
    }
}

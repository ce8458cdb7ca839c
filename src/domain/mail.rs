//! Words about mail that several steps share: what kind a message is, and
//! the line above which a reply's new text stands.

use serde::Serialize;

/// The kind of an inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    /// Written by a person.
    Human,
    /// Out-of-office, vacation responder, list or bulk mail (RFC 3834 and friends).
    AutoReply,
    /// A delivery status notification.
    Bounce,
}

impl MailKind {
    /// The word the rules file uses for it (`kind = "auto_reply"`).
    pub fn label(self) -> &'static str {
        match self {
            MailKind::Human => "human",
            MailKind::AutoReply => "auto_reply",
            MailKind::Bounce => "bounce",
        }
    }
}

/// The line above which customers are asked to write.
pub const REPLY_ABOVE_MARKER: &str = "-- Reply above this line --";

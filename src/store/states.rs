//! The states rows go through, as types: an outbox item's delivery, a held
//! item's review, a thread's, and what an admin does to held mail. Each
//! knows its own database text (and the API's, which is the same); rows
//! read and write them as that text through sqlx, so no other Rust code
//! spells them. Here, beside the rows, because they are the database's words.

use serde::{Deserialize, Serialize};

/// Declares a state enum stored as text: its variants with their text,
/// `as_str`, `parse`, `ALL`, `Display`, serde, and sqlx on every backend
/// whose text type it reads and writes.
macro_rules! text_state {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every state, in the order of the lifecycle.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// Its text, in the database and the API.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The state this text names.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// Every state's text, comma separated (for error messages).
            pub fn names() -> String {
                Self::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse(text).ok_or_else(|| format!("{text:?} is not one of {}", Self::names()))
            }
        }

        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            str: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&'r str as sqlx::Decode<'r, DB>>::decode(value)?;
                Ok(text.parse::<$name>()?)
            }
        }

        // Written as an owned string: a `&'static str` would tie the whole
        // query's borrows to 'static on SQLite.
        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            String: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer<'q>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <String as sqlx::Encode<'q, DB>>::encode(self.as_str().to_owned(), buf)
            }
        }
    };
}

text_state! {
    /// Where an outbox item (a notification or a webhook delivery) stands.
    OutboxStatus {
        /// Waiting to be sent (maybe waiting out a backoff).
        Pending = "pending",
        /// Claimed by an instance, being sent.
        Sending = "sending",
        /// Delivered to the relay, folder or webhook.
        Sent = "sent",
        /// Carried by another notification to the same person about the same thread.
        Merged = "merged",
        /// Not sent on purpose (a suppressed or erased address, an opt-out).
        Skipped = "skipped",
        /// Given up on after its retries.
        Failed = "failed",
    }
}

impl OutboxStatus {
    /// Whether an admin may send it again (or now).
    pub fn retryable(self) -> bool {
        matches!(self, OutboxStatus::Failed | OutboxStatus::Skipped | OutboxStatus::Pending)
    }
}

text_state! {
    /// Where a held item stands.
    HeldStatus {
        /// Waiting for an admin.
        Held = "held",
        /// Posted into its conversation.
        Released = "released",
        /// Not posted; restorable while its message is kept.
        Discarded = "discarded",
        /// Its sender was sent the refusal notice.
        Noticed = "noticed",
    }
}

text_state! {
    /// What an admin does to a held item.
    HeldAction {
        /// Post it into its conversation.
        Release = "release",
        /// Set it aside (restorable while its message is kept).
        Discard = "discard",
        /// Answer its sender with the refusal notice.
        Notice = "notice",
        /// Put a discarded item back in the queue.
        Restore = "restore",
    }
}

text_state! {
    /// Whether a chat or ticket takes replies.
    ThreadStatus {
        /// Replies are posted.
        Open = "open",
        /// Emailed replies are refused until it reopens.
        Closed = "closed",
    }
}

text_state! {
    /// A person's standing in a conversation they were copied into.
    ParticipantStatus {
        /// In the conversation: notified, and may write.
        Active = "active",
        /// Waiting for an agent to let them in or decline.
        Pending = "pending",
        /// An agent declined them; a later copy does not bring them back.
        Declined = "declined",
        /// They left (their one-click link); a later copy does not bring them back.
        Left = "left",
        /// An agent removed them.
        Removed = "removed",
    }
}

text_state! {
    /// What a stored message is.
    #[derive(Default)]
    MessageKind {
        /// A message of the conversation, seen by everyone in it.
        #[default]
        Message = "message",
        /// An agent's internal note: seen by agents, never mailed to the customer side.
        Note = "note",
        /// A note of mailgate's own (a participant limit reached), seen by agents.
        System = "system",
    }
}

/// For a filter's `status=`: a state by its text, and none for `all` or an
/// empty value (every state). Anything else is refused naming the states.
pub fn any_or<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr<Err = String>,
{
    let text = Option::<String>::deserialize(deserializer)?;
    state_filter(text.as_deref().unwrap_or("")).map_err(serde::de::Error::custom)
}

/// A state filter as text (the API's query, the console's field, the
/// CLI's flag): a state's name, or `all` (or nothing) for every state.
pub fn state_filter<T: std::str::FromStr<Err = String>>(text: &str) -> Result<Option<T>, String> {
    match text.trim() {
        "" | "all" => Ok(None),
        text => text.parse().map(Some).map_err(|why: String| format!("{why}, all")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_from_its_text_and_its_schema_names_it() {
        let schema = serde_json::to_value(<OutboxStatus as utoipa::PartialSchema>::schema()).unwrap();
        let named: Vec<&str> = schema["enum"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
        assert_eq!(named, OutboxStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        for s in OutboxStatus::ALL {
            assert_eq!(OutboxStatus::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in HeldStatus::ALL {
            assert_eq!(s.as_str().parse::<HeldStatus>(), Ok(*s));
        }
        assert_eq!(ThreadStatus::parse("closed"), Some(ThreadStatus::Closed));
        assert_eq!(
            "keep".parse::<HeldAction>(),
            Err("\"keep\" is not one of release, discard, notice, restore".to_owned())
        );
    }
}

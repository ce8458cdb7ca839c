//! Plain domain types shared by every step of the pipeline.
//!
//! Nothing here knows about sockets, SQL or MIME: these are values with
//! parse constructors, so that the rest of the code can rely on them being
//! valid, the outcomes of the pipeline (`outcome`) and the SMTP answer for
//! each (`reply`), which the SMTP session and the pipeline's log share.

mod address;
mod mail;
pub mod networks;
pub mod outcome;
pub mod reply;
mod role;
pub mod token;

pub use address::EmailAddress;
pub use mail::{MailKind, REPLY_ABOVE_MARKER};
pub use networks::Networks;
pub use role::{Role, Source, ThreadKind};
pub use token::{ReplyToken, TokenError, TokenSigner};

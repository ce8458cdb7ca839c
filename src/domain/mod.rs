//! Plain domain types shared by every step of the pipeline.
//!
//! Nothing here knows about sockets, SQL or MIME: these are values with
//! parse constructors, so that the rest of the code can rely on them being valid.

mod address;
mod role;
pub mod token;

pub use address::EmailAddress;
pub use role::{Role, Source, ThreadKind};
pub use token::{ReplyToken, TokenError, TokenSigner};

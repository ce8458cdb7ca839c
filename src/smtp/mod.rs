//! The SMTP side: the listener accepts connections, each session speaks the
//! protocol (with smtp-proto's parsers) and hands complete messages to the
//! pipeline; every answer we give is in `domain::reply`.

pub mod listener;
pub mod session;

//! The SMTP side: the listener accepts connections, each session speaks the
//! protocol (with smtp-proto's parsers) and hands complete messages to the
//! pipeline. The answers about a recipient or a message come from
//! `domain::reply`; the protocol's own (greeting, `354`, `452`, syntax
//! errors, `421`) are written here.

pub mod listener;
pub mod proxy;
pub mod session;

//! The SMTP side: the listener accepts connections, each session speaks the
//! protocol (with smtp-proto's parsers) and hands complete messages to the
//! pipeline; `reply` holds every answer we give.

pub mod listener;
pub mod reply;
pub mod session;

//! mailgate: an email-to-ticket mail gateway.
//!
//! Customers' email replies are threaded into the right support chat or
//! ticket; mail that would start a new chat is refused; notifications go out
//! from templates. See ARCHITECTURE.md for the path one message takes
//! through these modules.

pub mod api;
pub mod app;
pub mod config;
pub mod console;
pub mod deliver;
pub mod doctor;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod outbound;
pub mod pipeline;
pub mod policy;
pub mod rules;
pub mod service;
pub mod smtp;
pub mod store;
pub mod telemetry;

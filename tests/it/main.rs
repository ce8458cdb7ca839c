//! mailgate's integration tests: one binary, real sockets, real SQLite files
//! and a real PostgreSQL server.
#![allow(unreachable_pub, reason = "test helpers are shared between the modules of this one binary")]
#![allow(clippy::print_stderr, reason = "the fixture score table is meant to be read")]

mod api;
mod capture;
mod cli;
mod commands;
mod console;
mod crash;
mod delivery;
mod directory;
mod doctor;
mod fixtures;
mod forgery;
mod fuzz;
mod held;
mod hostile;
mod locales;
mod operations;
mod originals;
mod participants;
mod pipe;
mod plans;
mod postfix;
mod postgres;
mod pressure;
mod reading;
mod relay;
mod replay;
mod roundtrip;
mod rules;
mod security;
mod service;
mod slow;
mod smtp;
mod store;
mod support;
mod templates;
mod webhooks;

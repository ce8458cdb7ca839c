//! Logging: a tracing subscriber writing to stderr, filtered by `RUST_LOG`
//! (default `info`), as text for people or as JSON lines for log shippers.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, for people.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the
    /// event's fields at the top level, and `spans` (the session's peer and
    /// the transaction's `id`), for log shippers.
    Json,
}

/// Installs the global subscriber; a second call does nothing.
pub fn init(format: LogFormat) {
    init_with("info,sqlx=warn", format);
}

/// Installs the global subscriber with `default` as the filter when
/// `RUST_LOG` does not set one (`deliver` logs nothing by default: its
/// stderr is the one line the mail server reports).
pub fn init_with(default: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Its fallback is eprintln!, which panics when stderr is closed.
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(true).try_init(),
    };
}

//! Logging: a tracing subscriber writing to stderr, filtered by `RUST_LOG`
//! (default `info`).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; a second call does nothing.
pub fn init() {
    init_with("info,sqlx=warn");
}

/// Installs the global subscriber with `default` as the filter when
/// `RUST_LOG` does not set one (`deliver` logs nothing by default: its
/// stderr is the one line the mail server reports).
pub fn init_with(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // Its fallback is eprintln!, which panics when stderr is closed.
        .log_internal_errors(false)
        .try_init();
}

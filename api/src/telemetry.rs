//! Logging through tracing: readable lines for people, JSON lines for machines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber, keeping the lines `filter` selects.
/// Logs go to stderr so command output on stdout stays clean.
pub fn init(format: LogFormat, filter: &str) {
    let (filter, rejected) = match EnvFilter::try_new(filter) {
        Ok(filter) => (filter, None),
        Err(err) => (EnvFilter::new("info"), Some(err)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal; in files they are noise.
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests start many apps in one process) is harmless.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            // The request's fields once, under "span", not twice.
            .with_span_list(false)
            .try_init(),
    };
    if let Some(err) = rejected {
        tracing::warn!(error = %err, "invalid log filter (RUST_LOG / --log); logging at info");
    }
}

//! Logging setup: `tracing` to stderr, human-readable or JSON, filtered by `RUST_LOG` or the
//! level given on the command line. Colour only on a terminal (and never with `NO_COLOR`); in
//! JSON mode every line on stderr is a JSON object, so messages meant for people go through
//! [`say`] and [`fail`], which turn into log events there.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Installs the global subscriber. `RUST_LOG` wins over `default_level`.
pub fn init(default_level: &str, format: LogFormat) {
    let _ = FORMAT.set(format);
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false);
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// Whether logs are JSON lines (nothing else may then be written to stderr).
pub fn json() -> bool {
    FORMAT.get() == Some(&LogFormat::Json)
}

/// A message for the operator on stderr: a `bowline: …` line, or an info event in JSON mode.
pub fn say(message: &str) {
    if json() {
        tracing::info!("{message}");
    } else {
        eprintln!("bowline: {message}");
    }
}

/// The error that ends the command: a `bowline: …` line, or an error event in JSON mode.
pub fn fail(message: &str) {
    if json() {
        tracing::error!(error = message, "bowline failed");
    } else {
        eprintln!("bowline: {message}");
    }
}

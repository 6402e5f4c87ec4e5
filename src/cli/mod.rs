//! Command implementations behind `main`: argument types shared by several commands and one
//! file per command group. This is CLI glue, so `anyhow` is used here and nowhere in the library.

pub mod canary;
pub mod live;
pub mod pipeline;
pub mod repo;
pub mod serve;

use std::process::ExitCode;

use clap::ValueEnum;

/// Output format of commands that print a report.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    Text,
    /// Machine-readable JSON.
    Json,
}

/// A command line asking for something that does not exist (an unknown `--app` or `--env`):
/// told apart from failures so `plan --exit-code` can give it its own exit code.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Exit 0 when there are no errors, 1 otherwise.
pub fn exit_for(errors: usize) -> ExitCode {
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

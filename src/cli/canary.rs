//! `bowline canary …`: judge a request file, import a Kayenta config, run a live analysis.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use bowline::canary::{input, judge, kayenta};

/// Canary subcommands.
#[derive(Subcommand)]
pub enum CanaryCommand {
    /// Judge metric data offline: FILE is JSON {config, thresholds?, data}; prints the result
    /// JSON and exits 0 whatever the verdict (2 on a configuration error).
    Judge {
        /// The request file.
        file: PathBuf,
    },
    /// Convert a Kayenta canary config (JSON) to a bowline CanaryConfig (YAML on stdout);
    /// what could not be converted is listed on stderr and makes the exit status 1.
    ImportKayenta {
        /// The Kayenta config file.
        file: PathBuf,
    },
}

/// Runs a canary subcommand.
pub fn run(command: CanaryCommand) -> anyhow::Result<ExitCode> {
    match command {
        CanaryCommand::Judge { file } => Ok(judge_file(&file)),
        CanaryCommand::ImportKayenta { file } => import_kayenta(&file),
    }
}

fn error_json(message: &str) -> ExitCode {
    println!("{}", serde_json::json!({ "error": message }));
    ExitCode::from(2)
}

fn judge_file(file: &PathBuf) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return error_json(&format!("cannot read {}: {e}", file.display())),
    };
    let request = match input::parse_request(&text) {
        Ok(r) => r,
        Err(e) => return error_json(&e.to_string()),
    };
    match judge::judge(&request.config, request.thresholds, &request.pairs) {
        Ok(result) => match serde_json::to_string_pretty(&result) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => error_json(&e.to_string()),
        },
        Err(e) => error_json(&e.to_string()),
    }
}

fn import_kayenta(file: &PathBuf) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let value: serde_json::Value = serde_json::from_str(&input::relax_json(&text))
        .with_context(|| format!("{} is not JSON", file.display()))?;
    let imported = kayenta::import(&value)?;
    print!("{}", imported.yaml);
    for w in &imported.warnings {
        eprintln!("warning: {w}");
    }
    Ok(if imported.warnings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

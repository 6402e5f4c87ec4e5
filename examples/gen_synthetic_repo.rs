//! Writes a synthetic bowline config repository, for benchmarks and profiling.
//!
//! ```text
//! cargo run --release --example gen_synthetic_repo -- [--apps N] DIR
//! ```
//!
//! DIR must not exist or be empty. Each app has an app.yaml and six templated manifests; see
//! `benches/support/synthetic.rs` for the layout.

use std::path::PathBuf;
use std::process::ExitCode;

#[path = "../benches/support/synthetic.rs"]
mod synthetic;

const USAGE: &str = "usage: gen_synthetic_repo [--apps N] DIR  (default: 1000 apps)";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("gen_synthetic_repo: {message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut apps = 1000usize;
    let mut dir: Option<PathBuf> = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--apps") => {
                let value = args.next().ok_or("--apps needs a number")?;
                apps = value
                    .to_str()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("--apps: not a number: {}", value.to_string_lossy()))?;
            }
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return Ok(());
            }
            Some(flag) if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            _ if dir.is_none() => dir = Some(PathBuf::from(arg)),
            _ => return Err("more than one DIR given".to_string()),
        }
    }
    let dir = dir.ok_or("missing DIR")?;
    if let Ok(mut entries) = std::fs::read_dir(&dir) {
        if entries.next().is_some() {
            return Err(format!("{} exists and is not empty", dir.display()));
        }
    }
    let summary = synthetic::generate(&dir, apps)
        .map_err(|e| format!("cannot write {}: {e}", dir.display()))?;
    println!(
        "{}: {} apps, {} files, {:.1} MiB",
        dir.display(),
        summary.apps,
        summary.files,
        summary.bytes as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

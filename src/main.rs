//! The `bowline` command line.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use bowline::telemetry::{self, LogFormat};
use cli::OutputFormat;
use cli::repo::RepoArgs;

/// bowline: GitOps reconciler and promotion engine for Kubernetes.
#[derive(Parser)]
#[command(name = "bowline", version, about, long_about = None)]
struct Cli {
    /// Log level when RUST_LOG is not set (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "warn", env = "BOWLINE_LOG_LEVEL")]
    log_level: String,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormatArg::Text, env = "BOWLINE_LOG_FORMAT")]
    log_format: LogFormatArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check every document, reference and manifest; report all problems with file:line:column.
    Validate {
        #[command(flatten)]
        repo: RepoArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Print the rendered Kubernetes objects as a YAML stream.
    Render {
        #[command(flatten)]
        repo: RepoArgs,
        /// Only this application.
        #[arg(long)]
        app: Option<String>,
        /// Only this environment.
        #[arg(long)]
        env: Option<String>,
    },
    /// Show, per application and environment, validity, object count and pipeline stages.
    Plan {
        #[command(flatten)]
        repo: RepoArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

fn main() -> ExitCode {
    // One TLS crypto provider for every client (kube, reqwest): ring. Fails only when a provider
    // is already installed, which is the state we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    telemetry::init(
        &cli.log_level,
        match cli.log_format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        },
    );
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bowline: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate { repo, format } => cli::repo::validate(repo, format),
        Command::Render { repo, app, env } => cli::repo::render(repo, app, env),
        Command::Plan { repo, format } => cli::repo::plan(repo, format),
    }
}

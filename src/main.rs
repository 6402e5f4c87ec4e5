//! The `bowline` command line.

mod cli;

/// jemalloc returns freed memory to the kernel (see `.cargo/config.toml` for its settings), so
/// a long-running daemon's RSS follows what it holds instead of its peak; glibc's malloc
/// keeps the pages of a large burst, such as a pull request planned over a big repository.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Memory, in MiB, that evaluating the repository's own policies may use (a separate
    /// process, killed beyond it).
    #[arg(long, global = true, default_value_t = bowline::policy::sandbox::DEFAULT_MEMORY_LIMIT / (1024 * 1024), env = "BOWLINE_POLICY_MEMORY_LIMIT")]
    policy_memory_limit: u64,
    /// Longest evaluation of one repository policy on one object.
    #[arg(long, global = true, default_value = "5s", value_parser = humantime::parse_duration, env = "BOWLINE_POLICY_TIME_LIMIT")]
    policy_time_limit: std::time::Duration,
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
    /// Canary analysis: judge metric data, import Kayenta configs, run against Prometheus.
    Canary {
        #[command(subcommand)]
        command: cli::canary::CanaryCommand,
    },
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
    /// Show, per application and environment, validity, pipeline stages and what would change
    /// in each cluster (server-side dry-run against live objects).
    Plan {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        clusters: cli::live::ClusterArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// Only this application.
        #[arg(long)]
        app: Option<String>,
        /// Only this environment.
        #[arg(long)]
        env: Option<String>,
        /// Exit 0 when everything is in sync, 2 when changes exist, 1 on errors, 3 on a usage
        /// error (as `terraform plan -detailed-exitcode`, with usage errors kept apart).
        #[arg(long)]
        exit_code: bool,
    },
    /// Run an application's promotion pipeline in the foreground, with a progress line per
    /// stage; resumes the app's execution left running by a stopped process.
    Run(Box<RunArgs>),
    /// Run the daemon: follow the config repository, deploy changed apps through their
    /// pipelines, plan pull requests, and serve webhooks, the API, health and metrics.
    Serve(Box<cli::serve::ServeArgs>),
    /// List, show, approve, reject or cancel executions in the state store.
    Executions {
        #[command(flatten)]
        state: cli::pipeline::StateArgs,
        #[command(subcommand)]
        command: cli::pipeline::ExecutionsCommand,
    },
    /// Apply one application to one environment (server-side apply, cluster by cluster in wave
    /// order), prune what is no longer rendered, and wait until it is healthy.
    Sync {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        clusters: cli::live::ClusterArgs,
        /// Application to sync.
        #[arg(long)]
        app: String,
        /// Environment to sync to.
        #[arg(long)]
        env: String,
        /// Show what would change without changing anything (server-side dry-run).
        #[arg(long)]
        dry_run: bool,
        /// Delete objects bowline created for the app that are no longer rendered (also on when
        /// the app's syncPolicy.prune is true).
        #[arg(long)]
        prune: bool,
        /// Longest wait for the rollout to become healthy.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Do not wait for health after applying.
        #[arg(long)]
        no_wait: bool,
    },
    /// Evaluates repository policies for a parent bowline process (JSON lines on standard
    /// input and output), within a memory limit in bytes.
    #[command(name = "policy-worker", hide = true)]
    PolicyWorker {
        #[arg(long)]
        memory_limit: u64,
    },
}

/// The command-line options of `bowline run`.
#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    repo: RepoArgs,
    #[command(flatten)]
    clusters: cli::live::ClusterArgs,
    #[command(flatten)]
    state: cli::pipeline::StateArgs,
    /// Application whose pipeline runs.
    #[arg(long)]
    app: String,
    /// Only the stages of this environment.
    #[arg(long)]
    env: Option<String>,
    /// Config-repository revision being delivered (default: the Git HEAD of the repository).
    #[arg(long)]
    revision: Option<String>,
    /// Prometheus URL for canary analysis instead of the environment's.
    #[arg(long)]
    prometheus: Option<String>,
    /// Directory of secret files for templates (`secrets.<file name>`).
    #[arg(long, env = "BOWLINE_SECRETS_DIR")]
    secrets_dir: Option<std::path::PathBuf>,
    /// Let webhook stages and `http_ok` reach link-local and cloud metadata addresses
    /// (169.254.0.0/16, fe80::/10, fd00:ec2::254), refused by default.
    #[arg(long, env = "BOWLINE_ALLOW_LINK_LOCAL_EGRESS")]
    allow_link_local_egress: bool,
}

/// Exit code of a usage error (unknown flag or value, unknown `--app` or `--env`) under
/// `--exit-code`, where 2 means "changes pending"; 2 otherwise, like every error that stops a
/// command before it runs.
const USAGE_WITH_EXIT_CODE: u8 = 3;

fn main() -> ExitCode {
    // One TLS crypto provider for every client (kube, reqwest): ring. Fails only when a provider
    // is already installed, which is the state we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if !e.use_stderr() {
                0
            } else if std::env::args().any(|a| a == "--exit-code") {
                USAGE_WITH_EXIT_CODE
            } else {
                2
            });
        }
    };
    telemetry::init(
        &cli.log_level,
        match cli.log_format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        },
    );
    // Repository policies run in a child process of this program, within these limits.
    match std::env::current_exe() {
        Ok(program) => {
            bowline::policy::sandbox::isolate(
                program,
                bowline::policy::sandbox::Limits {
                    memory_bytes: cli.policy_memory_limit.saturating_mul(1024 * 1024),
                    time: cli.policy_time_limit,
                },
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "repository policies run in this process: its executable is not found")
        }
    }
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            telemetry::fail(&format!("{e:#}"));
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Canary { command } => cli::canary::run(command),
        Command::Validate { repo, format } => cli::repo::validate(repo, format),
        Command::Render { repo, app, env } => cli::repo::render(repo, app, env),
        Command::Plan {
            repo,
            clusters,
            format,
            app,
            env,
            exit_code,
        } => match cli::live::plan(repo, clusters, format, exit_code, app, env) {
            // With --exit-code, 2 means "changes pending": a plan that cannot run is 1, a
            // usage error 3.
            Err(e) if exit_code => {
                telemetry::fail(&format!("{e:#}"));
                Ok(ExitCode::from(
                    if e.downcast_ref::<cli::UsageError>().is_some() {
                        USAGE_WITH_EXIT_CODE
                    } else {
                        1
                    },
                ))
            }
            result => result,
        },
        Command::Run(args) => {
            let RunArgs {
                repo,
                clusters,
                state,
                app,
                env,
                revision,
                prometheus,
                secrets_dir,
                allow_link_local_egress,
            } = *args;
            cli::pipeline::run(
                repo,
                clusters,
                state,
                app,
                env,
                revision,
                prometheus,
                secrets_dir,
                allow_link_local_egress,
            )
        }
        Command::Executions { state, command } => cli::pipeline::executions(state, command),
        Command::Serve(args) => cli::serve::serve(*args),
        Command::Sync {
            repo,
            clusters,
            app,
            env,
            dry_run,
            prune,
            timeout,
            no_wait,
        } => cli::live::sync(repo, clusters, app, env, dry_run, prune, timeout, no_wait),
        Command::PolicyWorker { memory_limit } => Ok(ExitCode::from(
            bowline::policy::sandbox::worker_main(memory_limit),
        )),
    }
}

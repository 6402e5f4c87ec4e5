//! `bowline run` (an app's pipeline in the foreground) and `bowline executions` (the store).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;

use bowline::diagnostic;
use bowline::pipeline::{self, Engine, Progress, Services, operations};
use bowline::store::postgres::PostgresStore;
use bowline::store::{
    Decision, Durability, ExecutionFilter, ExecutionStatus, SqliteStore, Store, StoreError,
};

use super::live::ClusterArgs;
use super::repo::{RepoArgs, load};

/// Where execution state lives.
#[derive(clap::Args)]
pub struct StateArgs {
    /// Where state lives: a SQLite file (created when missing), or a PostgreSQL URL such as
    /// `postgres://bowline@db.internal:5432/bowline?sslmode=require`, a database the daemon
    /// and `bowline run`/`executions` can share. The password goes in --state-password-file,
    /// never in the URL.
    #[arg(
        long,
        global = true,
        default_value = "bowline.db",
        env = "BOWLINE_STATE"
    )]
    pub state: String,
    /// File holding the PostgreSQL password (a mounted Secret, say).
    #[arg(long, global = true, env = "BOWLINE_STATE_PASSWORD_FILE")]
    pub state_password_file: Option<PathBuf>,
    /// File holding the key that masks secret values in diffs (hex; generated, mode 0600, when
    /// missing). Default: beside the SQLite file. With PostgreSQL state it is required, and
    /// every replica must read the same file, so that masks agree.
    #[arg(long, global = true, env = "BOWLINE_MASK_KEY_FILE")]
    pub mask_key_file: Option<PathBuf>,
    /// `normal`: committed state survives crashes and restarts of bowline; `full`: every
    /// commit is synced to disk and survives power loss too (one fsync per transition).
    /// SQLite only: PostgreSQL's durability is the server's.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = DurabilityArg::Normal,
        env = "BOWLINE_STATE_DURABILITY"
    )]
    pub state_durability: DurabilityArg,
}

/// `--state-durability` values.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum DurabilityArg {
    /// WAL, synced at checkpoints.
    Normal,
    /// Every commit synced.
    Full,
}

impl StateArgs {
    /// The PostgreSQL URL, when `--state` is one.
    fn postgres_url(&self) -> Option<&str> {
        (self.state.starts_with("postgres://") || self.state.starts_with("postgresql://"))
            .then_some(self.state.as_str())
    }

    /// Whether the state is a database several processes share (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.postgres_url().is_some()
    }

    pub fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        if let Some(url) = self.postgres_url() {
            let parsed = url::Url::parse(url).context("--state is not a valid PostgreSQL URL")?;
            if parsed.password().is_some() {
                anyhow::bail!(
                    "--state carries a password: put it in --state-password-file instead (a URL shows in process lists and logs)"
                );
            }
            let password = match &self.state_password_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?
                        .trim_end_matches(['\n', '\r'])
                        .to_string(),
                ),
                None => None,
            };
            return Ok(Arc::new(PostgresStore::connect(url, password)?));
        }
        if self.state_password_file.is_some() {
            anyhow::bail!(
                "--state-password-file is for PostgreSQL state; --state is a SQLite file"
            );
        }
        let durability = match self.state_durability {
            DurabilityArg::Normal => Durability::Normal,
            DurabilityArg::Full => Durability::Full,
        };
        Ok(Arc::new(SqliteStore::open_with(
            Path::new(&self.state),
            durability,
        )?))
    }

    /// The key that masks secret values: from --mask-key-file, else kept beside the SQLite
    /// file.
    pub fn mask_key(&self) -> anyhow::Result<[u8; 32]> {
        match (&self.mask_key_file, self.postgres_url()) {
            (Some(path), _) => Ok(bowline::store::files::mask_key_at(path)?),
            (None, None) => Ok(bowline::store::files::mask_key(Path::new(&self.state))?),
            (None, Some(_)) => anyhow::bail!(
                "with PostgreSQL state, set --mask-key-file to a file every replica reads (a Kubernetes Secret): the key must be the same for all of them"
            ),
        }
    }
}

/// `bowline executions` subcommands.
#[derive(clap::Subcommand)]
pub enum ExecutionsCommand {
    /// List executions, newest first.
    List {
        /// Only this application.
        #[arg(long)]
        app: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show one execution: stages, outputs and its event log.
    Show {
        /// Execution id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a manual judgment.
    Approve(JudgeArgs),
    /// Reject a manual judgment.
    Reject(JudgeArgs),
    /// Cancel an execution (running stages stop at their next check).
    Cancel {
        /// Execution id.
        id: String,
        /// Who cancels (default: $USER).
        #[arg(long, env = "USER", default_value = "unknown")]
        user: String,
    },
}

/// Which judgment to resolve.
#[derive(clap::Args)]
pub struct JudgeArgs {
    /// Execution id.
    id: String,
    /// Stage name (default: the only stage waiting for a judgment).
    #[arg(long)]
    stage: Option<String>,
    /// The chosen input, when the stage offers choices.
    #[arg(long)]
    input: Option<String>,
    /// Who decides (default: $USER).
    #[arg(long, env = "USER", default_value = "unknown")]
    user: String,
}

fn print_progress(p: &Progress) {
    let now = Utc::now().format("%H:%M:%S");
    let line = match p {
        Progress::Stage {
            stage,
            status,
            message,
        } => match message {
            Some(m) => format!("{now}  {stage:<24} {:<9} {m}", status.as_str()),
            None => format!("{now}  {stage:<24} {}", status.as_str()),
        },
        Progress::Note { stage, message } => format!("{now}  {stage:<24}           {message}"),
        Progress::Resumed {
            execution,
            previous,
        } => match previous {
            Some(p) => {
                format!("{now}  resuming execution {execution}: its owner {p} stopped heartbeating")
            }
            None => format!("{now}  resuming execution {execution}"),
        },
        Progress::Finished(status) => format!("{now}  execution {status}"),
    };
    let mut out = std::io::stdout().lock();
    // Progress is best effort: a closed stdout must not stop the pipeline.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The commit of a Git working copy (HEAD), without running git.
pub(super) fn git_head(repo: &Path) -> Option<String> {
    let git = repo.join(".git");
    let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref: ") else {
        return Some(head.to_string());
    };
    if let Ok(sha) = std::fs::read_to_string(git.join(reference)) {
        return Some(sha.trim().to_string());
    }
    let packed = std::fs::read_to_string(git.join("packed-refs")).ok()?;
    packed
        .lines()
        .find_map(|l| l.strip_suffix(reference).map(|sha| sha.trim().to_string()))
}

pub fn secrets(dir: Option<&Path>) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if let Some(dir) = dir {
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("secrets dir {}", dir.display()))?
        {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                let name = entry.file_name().to_string_lossy().to_string();
                let value = std::fs::read_to_string(entry.path())?;
                out.insert(name, value.trim_end_matches(['\n', '\r']).to_string());
            }
        }
    }
    Ok(out)
}

/// `bowline run`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    repo: RepoArgs,
    clusters: ClusterArgs,
    state: StateArgs,
    app: String,
    env: Option<String>,
    revision: Option<String>,
    prometheus: Option<String>,
    secrets_dir: Option<PathBuf>,
    allow_link_local_egress: bool,
) -> anyhow::Result<ExitCode> {
    let store = state.open()?;
    let mut services = Services::new(super::live::connect_options(&clusters))
        .with_link_local_egress(allow_link_local_egress);
    services.secrets = secrets(secrets_dir.as_deref())?;
    services.prometheus_override = prometheus;
    services.progress = Arc::new(print_progress);
    if let Ok(ms) = std::env::var("BOWLINE_POLL_MS")
        && let Ok(ms) = ms.parse::<u64>()
    {
        services.poll = Duration::from_millis(ms.max(10));
        services.retry_delay = Duration::from_millis(ms.max(10));
    }
    // How long this process's ownership of a running execution lasts without a heartbeat
    // (tests shorten it; heartbeats come six times per period).
    if let Ok(ms) = std::env::var("BOWLINE_OWNERSHIP_TTL_MS")
        && let Ok(ms) = ms.parse::<u64>()
    {
        services.ownership_ttl = Duration::from_millis(ms.max(60));
        services.heartbeat = services.ownership_ttl / 6;
    }
    let engine = Engine::new(store.clone(), services);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    let mut stdout = std::io::stdout().lock();
    // An execution of this app left running by a process that stopped resumes first.
    let interrupted = engine.interrupted(Some(&app))?;
    let id = if let Some(execution) = interrupted.into_iter().next() {
        writeln!(
            stdout,
            "resuming execution {} of {} ({}, revision {}), interrupted while running",
            execution.id, execution.app, execution.pipeline, execution.revision
        )?;
        execution.id
    } else {
        let loaded = load(&repo, Some(&app), env.as_deref())?;
        let errors = diagnostic::error_count(&loaded.diagnostics);
        if errors > 0 {
            for d in &loaded.diagnostics {
                writeln!(stdout, "{d}")?;
            }
            writeln!(
                stdout,
                "run refused: {} in the config repository",
                diagnostic::count(errors, "error")
            )?;
            return Ok(ExitCode::from(1));
        }
        let revision = revision
            .or_else(|| git_head(&repo.repo))
            .unwrap_or_else(|| "working-tree".to_string());
        let user = std::env::var("USER").unwrap_or_else(|_| "cli".to_string());
        let new = pipeline::prepare(&loaded.repo, &app, env.as_deref(), &revision, &user)?;
        match engine.create(new) {
            Ok(execution) => {
                writeln!(
                    stdout,
                    "execution {} of {} ({}, revision {}): {} stages",
                    execution.id,
                    execution.app,
                    execution.pipeline,
                    execution.revision,
                    store.stages(&execution.id)?.len()
                )?;
                execution.id
            }
            // The same change is already being delivered (by another `run` or the daemon):
            // follow that execution instead of delivering it twice.
            Err(pipeline::EngineError::Store(StoreError::Duplicate {
                existing, status, ..
            })) => {
                let owner = store
                    .execution(&existing)?
                    .owner
                    .map(|o| format!(" by {o}"))
                    .unwrap_or_default();
                writeln!(
                    stdout,
                    "execution {existing} of {app} at revision {revision} is already {}{owner}: waiting for it to end (resuming it if its owner stops)",
                    status.as_str().to_ascii_lowercase()
                )?;
                existing
            }
            Err(e) => return Err(e.into()),
        }
    };
    drop(stdout);
    let status = rt.block_on(engine.run(&id))?;
    let execution = store.execution(&id)?;
    let mut stdout = std::io::stdout().lock();
    match &execution.error {
        Some(e) => writeln!(stdout, "execution {id} {status}: {e}")?,
        None => writeln!(stdout, "execution {id} {status}")?,
    }
    Ok(ExitCode::from(match status {
        ExecutionStatus::Succeeded => 0,
        _ => 1,
    }))
}

/// `bowline executions …`.
pub fn executions(state: StateArgs, command: ExecutionsCommand) -> anyhow::Result<ExitCode> {
    let store = state.open()?;
    let mut stdout = std::io::stdout().lock();
    match command {
        ExecutionsCommand::List { app, limit } => {
            let list = store.executions(&ExecutionFilter {
                app,
                statuses: vec![],
                limit: Some(limit),
            })?;
            writeln!(
                stdout,
                "{:<26}  {:<20}  {:<18}  {:<10}  {:<12}  CREATED",
                "ID", "APP", "PIPELINE", "STATUS", "REVISION"
            )?;
            for e in list {
                writeln!(
                    stdout,
                    "{:<26}  {:<20}  {:<18}  {:<10}  {:<12}  {}",
                    e.id,
                    e.app,
                    e.pipeline,
                    e.status.as_str(),
                    e.revision.chars().take(12).collect::<String>(),
                    e.created_at.format("%Y-%m-%d %H:%M:%S")
                )?;
            }
        }
        ExecutionsCommand::Show { id, json } => {
            let execution = store.execution(&id)?;
            let stages = store.stages(&id)?;
            let events = store.events(&id)?;
            if json {
                let mut execution = serde_json::to_value(&execution)?;
                // The snapshot holds every rendered object; `show` keeps the summary readable.
                if let Some(map) = execution.as_object_mut() {
                    map.remove("trigger");
                }
                serde_json::to_writer_pretty(
                    &mut stdout,
                    &serde_json::json!({"execution": execution, "stages": stages, "events": events}),
                )?;
                writeln!(stdout)?;
            } else {
                writeln!(
                    stdout,
                    "execution {} of {}: {} ({}, revision {})",
                    execution.id,
                    execution.app,
                    execution.status,
                    execution.pipeline,
                    execution.revision
                )?;
                if let Some(e) = &execution.error {
                    writeln!(stdout, "error: {e}")?;
                }
                if execution.status == ExecutionStatus::Running {
                    match (&execution.owner, execution.owned_until) {
                        (Some(owner), Some(until)) if !execution.is_orphaned(Utc::now()) => {
                            writeln!(
                                stdout,
                                "owner: {owner} (heartbeat valid until {})",
                                until.format("%H:%M:%S%.3f")
                            )?
                        }
                        _ => writeln!(
                            stdout,
                            "owner: none alive (the next `bowline run` or `serve` resumes it)"
                        )?,
                    }
                }
                writeln!(stdout)?;
                for s in &stages {
                    writeln!(
                        stdout,
                        "  {:<24} {:<12} {:<10} attempts {}{}",
                        s.name,
                        s.stage_type,
                        s.status.as_str(),
                        s.attempts,
                        s.error
                            .as_ref()
                            .map(|e| format!("  {e}"))
                            .unwrap_or_default()
                    )?;
                }
                writeln!(stdout)?;
                for e in &events {
                    writeln!(
                        stdout,
                        "  {}  {:<24} {}",
                        e.at.format("%H:%M:%S%.3f"),
                        e.stage.as_deref().unwrap_or("-"),
                        e.message
                    )?;
                }
            }
        }
        ExecutionsCommand::Approve(args) => return judge(&*store, args, Decision::Approve),
        ExecutionsCommand::Reject(args) => return judge(&*store, args, Decision::Reject),
        ExecutionsCommand::Cancel { id, user } => {
            operations::cancel(&*store, &id, &user)?;
            writeln!(stdout, "cancellation of {id} requested")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn judge(store: &dyn Store, args: JudgeArgs, decision: Decision) -> anyhow::Result<ExitCode> {
    let target = operations::waiting_in(store, &args.id, args.stage.as_deref())?;
    let stage = target.stage.clone();
    super::live::runtime()?.block_on(operations::judge(
        store,
        &[target],
        decision,
        &args.user,
        args.input,
        |_| async { Ok(()) },
    ))?;
    writeln!(
        std::io::stdout().lock(),
        "{} {} of execution {} as {}",
        match decision {
            Decision::Approve => "approved",
            Decision::Reject => "rejected",
        },
        stage,
        args.id,
        args.user
    )?;
    Ok(ExitCode::SUCCESS)
}

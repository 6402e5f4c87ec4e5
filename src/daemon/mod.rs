//! The long-running side of bowline (`bowline serve`): follows the tracked branch of the config
//! repository (polling with jitter, at once when a webhook says so), starts the pipelines of
//! the apps a commit changed and reports their progress as commit statuses, answers pull
//! requests with a plan (one sticky comment, a `bowline/plan` status), resolves manual
//! judgments from ChatOps commands, and compares the live clusters with what was deployed.
//!
//! Triggers (the poll and drift timers, webhooks, ChatOps comments, the file watch) only
//! enqueue jobs on one keyed work queue ([`queue`], with the jobs in `work.rs`): one run per
//! key at a time, coalesced while it runs, bounded in number, drained on shutdown. Executions
//! run beside it on the engine; shutdown stops at once those that only wait.
//!
//! The HTTP surface is in [`crate::server`]; this module holds the behaviour behind it.

mod approvals;
mod chatops;
mod drift;
mod identity;
mod metrics;
mod outbox;
mod pull_request;
mod push;
pub mod queue;
mod removal;
pub mod replicas;
pub mod watch;
mod work;

use std::collections::HashSet;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::cluster::ConnectOptions;
use crate::config::StageType;
use crate::forge::{CommitState, CommitStatus, ForgeError, GitHub, RepoRef};
use crate::pipeline::{self, Engine, Progress, Services};
use crate::source::Limits;
use crate::source::git::{GitError, GitSource};
use crate::store::{Execution, ExecutionFilter, ExecutionStatus, StageStatus, Store, StoreError};

pub use crate::pipeline::operations::{
    SELF_APPROVAL_REFUSED, allows_self_approval, is_author, recorded_author,
};
pub use chatops::ChatOpsOutcome;
pub use drift::TargetDrift;
pub use identity::ConfigRepository;
pub use metrics::Metrics;
pub use outbox::OutboxConfig;
pub use pull_request::{PlanComment, PlanQueued, PlanRequest, Platform, pr_comment};
pub use push::Reconciled;
pub use queue::Enqueued;

/// Status context of pull-request plans.
pub const PLAN_CONTEXT: &str = "bowline/plan";

/// Status context of an app's deployment.
pub fn deploy_context(app: &str) -> String {
    format!("bowline/deploy/{app}")
}

/// Status context of the removal of an app deleted from the tracked branch.
pub fn removal_context(app: &str) -> String {
    format!("bowline/remove/{app}")
}

/// The pending status of an execution from its unfinished stages (stage, status, text; in
/// the order they got there): a judgment or window someone waits on first, then a failure or
/// rejection, then the stage that started last.
fn pending_description(shown: &[(String, StageStatus, String)]) -> Option<String> {
    let last = |wanted: &[StageStatus]| {
        shown
            .iter()
            .rev()
            .find(|(_, status, _)| wanted.contains(status))
            .map(|(_, _, text)| text.clone())
    };
    last(&[StageStatus::Waiting])
        .or_else(|| last(&[StageStatus::Failed, StageStatus::Rejected]))
        .or_else(|| last(&[StageStatus::Running]))
}

/// The deploy status description of a rejected execution: who rejected it where, from its
/// rejected stages ("rejected by maria at approve-production").
pub fn rejected_description(stages: &[crate::store::StageState]) -> String {
    let parts: Vec<String> = stages
        .iter()
        .filter(|s| s.status == StageStatus::Rejected)
        .map(|s| {
            let reason = s.outputs.get("reason").and_then(serde_json::Value::as_str);
            format!("{} at {}", reason.unwrap_or("rejected"), s.name)
        })
        .collect();
    if parts.is_empty() {
        "execution rejected".to_string()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod outcome_tests {
    use super::*;
    use crate::store::StageState;
    use serde_json::json;

    #[test]
    fn a_wait_is_shown_over_stages_running_beside_it() {
        let row = |stage: &str, status: StageStatus, text: &str| {
            (stage.to_string(), status, format!("{stage}: {text}"))
        };
        let mut shown = vec![
            row(
                "approve-production",
                StageStatus::Waiting,
                "awaiting judgment",
            ),
            row("remove-staging", StageStatus::Running, "running"),
        ];
        assert_eq!(
            pending_description(&shown).as_deref(),
            Some("approve-production: awaiting judgment")
        );
        shown.remove(0);
        assert_eq!(
            pending_description(&shown).as_deref(),
            Some("remove-staging: running")
        );
        shown.push(row("verify", StageStatus::Failed, "failed"));
        assert_eq!(
            pending_description(&shown).as_deref(),
            Some("verify: failed")
        );
        assert_eq!(pending_description(&[]), None);
    }

    fn stage(name: &str, status: StageStatus, outputs: serde_json::Value) -> StageState {
        StageState {
            name: name.into(),
            stage_type: "manualJudgment".into(),
            environment: None,
            status,
            attempts: 1,
            inputs: json!({}),
            outputs,
            started_at: None,
            finished_at: None,
            error: None,
        }
    }

    #[test]
    fn a_rejection_says_who_and_where() {
        let stages = [
            stage("deploy-staging", StageStatus::Succeeded, json!({})),
            stage(
                "approve-production",
                StageStatus::Rejected,
                json!({"reason": "rejected by maria"}),
            ),
            stage("canary-production", StageStatus::Skipped, json!({})),
        ];
        assert_eq!(
            rejected_description(&stages),
            "rejected by maria at approve-production"
        );
        assert_eq!(rejected_description(&[]), "execution rejected");
    }
}

/// Why a daemon step failed. The daemon logs it, counts it in `/metrics`, shows it in
/// `/readyz`, and goes on with the last good commit.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Fetching or reading the repository failed.
    #[error(transparent)]
    Git(#[from] GitError),
    /// GitHub refused or failed.
    #[error(transparent)]
    Forge(#[from] ForgeError),
    /// The engine could not carry on.
    #[error(transparent)]
    Engine(#[from] pipeline::EngineError),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An operation on an execution (approve, retry, …) did nothing.
    #[error(transparent)]
    Operation(#[from] pipeline::operations::OperationError),
    /// A built-in policy does not compile (a defect of bowline).
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// The commit does not validate; nothing of it is deployed.
    #[error("commit {commit} has {errors} error(s) (first: {first}); keeping {kept}")]
    Invalid {
        /// The refused commit.
        commit: String,
        /// How many errors.
        errors: usize,
        /// The first of them, `file:line:col: …`.
        first: String,
        /// The commit still in use (or `nothing`).
        kept: String,
    },
    /// An execution could not be prepared for an app.
    #[error("{app}: {message}")]
    Prepare {
        /// The app.
        app: String,
        /// Why.
        message: String,
    },
    /// The action needs GitHub, and no token is configured.
    #[error("no GitHub token configured")]
    NoGitHub,
    /// The metrics registry refused a metric (a defect of bowline).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The daemon is shutting down: the work was not done.
    #[error("the daemon is shutting down")]
    Stopped,
    /// The error of a run that several callers waited for.
    #[error(transparent)]
    Shared(Arc<DaemonError>),
}

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Time between fetches; a jitter of up to a tenth is added, and the interval doubles
    /// after each failed fetch (up to 16 times).
    pub poll_interval: Duration,
    /// Time between drift checks (`None`: no drift detection).
    pub drift_interval: Option<Duration>,
    /// GitHub repository of the config repo (default: bowline.yaml's `forge.github`).
    pub github_repo: Option<RepoRef>,
    /// Base URL of this daemon, for the target links of commit statuses.
    pub public_url: Option<String>,
    /// Limits on what is read from the repository.
    pub limits: Limits,
    /// How to reach clusters (also in the engine's services).
    pub connect: ConnectOptions,
    /// How Secret values are masked in PR comments.
    pub masker: crate::diff::Masker,
    /// Jobs of the work queue running at once, at most (reconciles, pull-request plans,
    /// ChatOps commands, drift checks; each key runs one at a time).
    pub max_concurrent_work: usize,
    /// How statuses and comments are retried until GitHub has them.
    pub outbox: OutboxConfig,
    /// With several replicas on one store: what this one holds (the leader Lease, shards of
    /// apps), kept by a [`replicas::Coordinator`]. `None`: one process does everything.
    pub replicas: Option<Arc<replicas::Holdings>>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            poll_interval: Duration::from_secs(60),
            drift_interval: Some(Duration::from_secs(300)),
            github_repo: None,
            public_url: None,
            limits: Limits::default(),
            connect: ConnectOptions::default(),
            masker: crate::diff::Masker::default(),
            max_concurrent_work: 4,
            outbox: OutboxConfig::default(),
            replicas: None,
        }
    }
}

/// What the daemon knows about its source, as `/readyz` and the API show it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceState {
    /// Last commit of the tracked branch that was read and reconciled.
    pub last_good: Option<String>,
    /// The last fetch or read error, cleared by the next success.
    pub last_error: Option<String>,
    /// When the last fetch happened.
    pub last_fetch: Option<DateTime<Utc>>,
    /// Failed reconciles in a row.
    pub failures: u32,
    /// Apps of the last good commit with their input digests.
    #[serde(skip)]
    pub inputs: BTreeMap<String, String>,
    /// The Git ids of the input roots of the last good commit.
    #[serde(skip)]
    pub roots: Vec<String>,
    /// The GitHub repository statuses go to.
    #[serde(skip)]
    pub github_repo: Option<RepoRef>,
}

/// Store key of the last reconciled commit, so a restart does not redeploy every app.
pub const CURSOR_KEY: &str = "source.lastReconciled";

/// The daemon: source, store, engine services, GitHub client and state.
pub struct Daemon {
    config: DaemonConfig,
    source: GitSource,
    store: Arc<dyn Store>,
    services: Services,
    github: Option<GitHub>,
    /// Metrics for `/metrics`.
    pub metrics: Metrics,
    /// The webhook secret; deliveries are refused when it is not set.
    pub webhook_secret: Option<Vec<u8>>,
    state: Mutex<SourceState>,
    drift: Mutex<BTreeMap<String, Vec<TargetDrift>>>,
    /// Pull requests by merge commit, learnt from `pull_request` `closed` deliveries.
    merged: Mutex<HashMap<String, push::MergedPullRequest>>,
    /// Recent team membership answers, for `@org/team` approvers.
    teams: approvals::TeamCache,
    /// Every reconcile, plan, ChatOps command and drift check, by key.
    queue: queue::WorkQueue<work::Work>,
    /// Running execution tasks (awaited on shutdown).
    tasks: Mutex<ExecutionTasks>,
    /// Set once shutdown starts: the timers stop enqueueing.
    stopping: tokio::sync::watch::Sender<bool>,
    /// The outbox sender, stopped on shutdown.
    outbox_task: Mutex<Option<tokio::task::AbortHandle>>,
    /// The config repository's GitHub id, learnt once.
    repo_id: Mutex<identity::RepositoryId>,
    /// What bowline means GitHub to show, recorded before it is sent.
    outbox: outbox::Outbox,
    /// Set while GitHub rate-limits the outbox.
    outbox_pause: outbox::Pause,
    /// Each app's validation, render and policy results by its inputs, so a commit or pull
    /// request costs work for the apps it changes only.
    checker: crate::check::Checker,
    /// Asks the shard-work task to look for executions of this replica's shards.
    shard_work: Arc<tokio::sync::Notify>,
    /// The settings of the last good commit, as pull-request plans last read them.
    trusted: Mutex<Option<Arc<pull_request::Trusted>>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("source", &self.source)
            .field("github", &self.github.as_ref().map(GitHub::api_url))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data behind these locks: a panic elsewhere cannot leave it half-written.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Daemon {
    /// A daemon over `source` and `store`, running stages with `services`, writing to GitHub
    /// when `github` is given and accepting webhooks signed with `webhook_secret`. The last
    /// reconciled commit is read back from the store. Inside a tokio runtime, the outbox
    /// sender starts at once (it delivers what an earlier process left pending) and stops
    /// when the daemon is dropped.
    pub fn new(
        config: DaemonConfig,
        source: GitSource,
        store: Arc<dyn Store>,
        mut services: Services,
        github: Option<GitHub>,
        webhook_secret: Option<Vec<u8>>,
    ) -> Result<Arc<Daemon>, DaemonError> {
        let cursor = store.meta(CURSOR_KEY)?;

        let max_concurrent_work = config.max_concurrent_work;
        let outbox = outbox::Outbox::new(store.clone(), github.is_some());
        let metrics = Metrics::new()?;
        metrics.leader.set(i64::from(config.replicas.is_none()));
        if let Some(holdings) = &config.replicas {
            services.owner = holdings.holder().to_string();
            services.fencing = Some(holdings.clone());
        }
        services.transition_seconds = Some(metrics.transition_seconds.clone());
        let failures = metrics.github_failures.clone();
        let github = github.map(|g| {
            g.with_failure_hook(Arc::new(move |failure: crate::forge::client::Failure| {
                failures.with_label_values(&[failure.label()]).inc();
            }))
        });
        let daemon = Arc::new_cyclic(|weak| Daemon {
            state: Mutex::new(SourceState {
                github_repo: config.github_repo.clone(),
                ..SourceState::default()
            }),
            config,
            source,
            store,
            services,
            github,
            metrics,
            webhook_secret,
            drift: Mutex::new(BTreeMap::new()),
            merged: Mutex::new(HashMap::new()),
            teams: approvals::TeamCache::new(
                approvals::TEAM_CACHE_TTL,
                approvals::TEAM_CACHE_CAPACITY,
            ),
            queue: queue::WorkQueue::new(max_concurrent_work, work::handler(weak.clone())),
            tasks: Mutex::new(ExecutionTasks::default()),
            stopping: tokio::sync::watch::Sender::new(false),
            outbox_task: Mutex::new(None),
            repo_id: Mutex::new(identity::RepositoryId::default()),
            outbox,
            outbox_pause: Mutex::new(None),
            checker: crate::check::Checker::default(),
            shard_work: Arc::new(tokio::sync::Notify::new()),
            trusted: Mutex::new(None),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let sender = runtime.spawn(outbox::run(
                Arc::downgrade(&daemon),
                daemon.outbox.wake_handle(),
            ));
            *lock(&daemon.outbox_task) = Some(sender.abort_handle());
            if daemon.config.replicas.is_some() {
                runtime.spawn(replicas::shard_work_loop(
                    Arc::downgrade(&daemon),
                    daemon.shard_work.clone(),
                ));
                if let Some(notices) = daemon.store.subscribe() {
                    runtime.spawn(replicas::listen(Arc::downgrade(&daemon), notices));
                }
            }
        }
        if let Some(sha) = cursor {
            // The digests of the last reconciled commit; when it is gone from the mirror (a new
            // cache directory), the next commit is compared with nothing known and every app
            // counts as changed only if it has no execution at that commit already.
            if let Err(e) = daemon.restore_cursor(&sha) {
                tracing::warn!(commit = %sha, error = %e, "last reconciled commit not readable");
            }
        }
        Ok(daemon)
    }

    /// The tracked branch.
    pub fn branch(&self) -> &str {
        self.source.branch()
    }

    /// The store of executions.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// What the daemon knows about its source.
    pub fn source_state(&self) -> SourceState {
        lock(&self.state).clone()
    }

    /// The last drift check per app.
    pub fn drift(&self) -> BTreeMap<String, Vec<TargetDrift>> {
        lock(&self.drift).clone()
    }

    /// Starts every execution left queued or running by an earlier process; each continues
    /// from its last committed stage state.
    pub fn resume(self: &Arc<Self>) -> Result<usize, DaemonError> {
        let left = self.store.executions(&ExecutionFilter {
            statuses: vec![ExecutionStatus::Running, ExecutionStatus::Queued],
            ..ExecutionFilter::default()
        })?;
        let n = left.len();
        // Oldest first, so the one-running-per-app rule keeps their order.
        for execution in left.into_iter().rev() {
            tracing::info!(execution = %execution.id, app = %execution.app, "resuming execution");
            self.spawn_execution(execution);
        }
        Ok(n)
    }

    /// Runs `execution` in the background, reporting its progress as the
    /// `bowline/deploy/<app>` status of its revision.
    ///
    /// With several replicas, only the holder of the app's shard runs it: elsewhere the
    /// execution stays queued in the store and the holder is woken.
    pub(crate) fn spawn_execution(self: &Arc<Self>, execution: Execution) {
        if let Some(holdings) = &self.config.replicas
            && !holdings.runs(&execution.app)
        {
            if let Err(e) = self
                .store
                .notify(crate::store::WAKE_EXECUTIONS, &execution.app)
            {
                tracing::warn!(execution = %execution.id, error = %e, "could not wake the replica running the app");
            }
            return;
        }
        if lock(&self.tasks).runs(&execution.id) {
            return;
        }
        let target_url = self.config.public_url.as_ref().map(|u| {
            format!(
                "{}/api/v1/executions/{}",
                u.trim_end_matches('/'),
                execution.id
            )
        });
        let repo_ref = lock(&self.state).github_repo.clone();
        let removal = execution.pipeline == crate::pipeline::snapshot::REMOVAL_PIPELINE;
        let context = if removal {
            removal_context(&execution.app)
        } else {
            deploy_context(&execution.app)
        };
        let sha = execution.revision.clone();
        // Each update is recorded in the outbox, which sends the newest one per context.
        let outbox = self.outbox.clone();
        let report = Arc::new(move |state: CommitState, description: String| {
            let Some(repo_ref) = &repo_ref else {
                return;
            };
            let status = CommitStatus {
                context: context.clone(),
                state,
                description,
                target_url: target_url.clone(),
            };
            outbox.status_or_log(repo_ref, &sha, &status);
        });
        let progress_report = report.clone();
        // What each unfinished stage shows; the status says the one that matters most, so a
        // stage finishing beside a waiting judgment does not hide the wait.
        #[allow(clippy::type_complexity)]
        let shown: Arc<Mutex<(Vec<(String, StageStatus, String)>, Option<String>)>> =
            Arc::default();
        let services = Services {
            progress: Arc::new(move |p: &Progress| {
                let Progress::Stage {
                    stage,
                    status,
                    message,
                } = p
                else {
                    return;
                };
                let text = match status {
                    StageStatus::Waiting => message.as_deref().unwrap_or("waiting").to_string(),
                    StageStatus::Running => "running".to_string(),
                    StageStatus::Failed => "failed".to_string(),
                    StageStatus::Rejected => message.as_deref().unwrap_or("rejected").to_string(),
                    _ => String::new(),
                };
                let description = {
                    let mut guard = lock(&shown);
                    let (stages, reported) = &mut *guard;
                    stages.retain(|(s, _, _)| s != stage);
                    if !text.is_empty() {
                        stages.push((stage.clone(), *status, format!("{stage}: {text}")));
                    }
                    // Only a change is worth a status.
                    pending_description(stages).filter(|d| {
                        let new = reported.as_deref() != Some(d.as_str());
                        if new {
                            *reported = Some(d.clone());
                        }
                        new
                    })
                };
                if let Some(description) = description {
                    progress_report(CommitState::Pending, description);
                }
            }),
            ..self.services.clone()
        };
        let engine = Engine::new(self.store.clone(), services);
        let fresh = execution.status == ExecutionStatus::Queued;
        let id = execution.id.clone();
        let app = execution.app.clone();
        let daemon = Arc::downgrade(self);
        let store = self.store.clone();
        let runner = async move {
            // A resumed execution said so already.
            if fresh {
                report(CommitState::Pending, format!("execution {id} started"));
            }
            let outcome = engine.run(&id).await;
            let (state, description) = match &outcome {
                Ok(ExecutionStatus::Succeeded) if removal => (
                    CommitState::Success,
                    "removed from its clusters".to_string(),
                ),
                Ok(ExecutionStatus::Succeeded) => (CommitState::Success, "deployed".to_string()),
                Ok(ExecutionStatus::Superseded) => (
                    CommitState::Success,
                    "superseded by a newer commit".to_string(),
                ),
                // Not deployed, on purpose: `failure` (so branch protection and dashboards
                // read "not delivered") with who rejected it; `error` stays for bowline itself
                // failing to run the execution.
                Ok(ExecutionStatus::Rejected) => (
                    CommitState::Failure,
                    rejected_description(&store.stages(&id).unwrap_or_default()),
                ),
                Ok(other) => (
                    CommitState::Failure,
                    format!("execution {}", other.as_str().to_ascii_lowercase()),
                ),
                Err(e) => (CommitState::Error, e.to_string()),
            };
            if let Err(pipeline::EngineError::Lost { .. } | pipeline::EngineError::Fenced { .. }) =
                &outcome
            {
                // Another process carries it on and reports it.
                tracing::info!(execution = %id, app = %app, "execution carried on elsewhere");
                return;
            }
            match &outcome {
                Ok(status) => {
                    tracing::info!(execution = %id, app = %app, status = status.as_str(), "execution ended")
                }
                Err(e) => {
                    tracing::warn!(execution = %id, app = %app, error = %e, "execution stopped")
                }
            }
            if let Some(daemon) = daemon.upgrade() {
                daemon.record_canary_score(&id);
            }
            report(state, description);
        };
        let mut tasks = lock(&self.tasks);
        if tasks.closed {
            // Shutting down: the execution is in the store and starts on the next start.
            tracing::info!(execution = %execution.id, "shutting down: execution left for the next start");
            return;
        }
        tasks.reap();
        let handle = tasks.set.spawn(runner);
        tasks.executions.insert(execution.id.clone());
        tasks.ids.insert(
            handle.id(),
            RunningExecution {
                execution: execution.id,
                app: execution.app,
                handle,
            },
        );
    }

    fn record_canary_score(&self, id: &str) {
        let (Ok(execution), Ok(stages)) = (self.store.execution(id), self.store.stages(id)) else {
            return;
        };
        for stage in stages
            .iter()
            .filter(|s| s.kind() == Some(StageType::CanaryAnalysis))
        {
            if let Some(score) = stage
                .outputs
                .get("score")
                .and_then(serde_json::Value::as_f64)
            {
                self.metrics
                    .canary_score
                    .with_label_values(&[
                        &execution.app,
                        stage.environment.as_deref().unwrap_or(""),
                    ])
                    .set(score);
            }
        }
    }

    /// Executions still running in this process.
    pub fn running_tasks(&self) -> usize {
        let mut tasks = lock(&self.tasks);
        tasks.reap();
        tasks.set.len()
    }

    /// Stops the daemon: the timers stop enqueueing; queued work (reconciles, plans, ChatOps
    /// commands, drift checks) gets up to `grace` to finish and is cancelled after it;
    /// executions actively running stages get up to `grace` too, while executions that are
    /// only waiting (for a judgment, an execution window, a `wait` stage, or their turn) are
    /// stopped at once — every stage transition is committed, so a stopped execution resumes
    /// where it was on the next start, and its ownership is released as it stops. Returns how
    /// many executions were stopped (left to resume).
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.stopping.send_replace(true);
        let deadline = tokio::time::Instant::now() + grace;
        let (work, stopped) =
            tokio::join!(self.queue.shutdown(grace), self.stop_executions(deadline));
        if let Some(sender) = lock(&self.outbox_task).take() {
            // What it has not sent yet stays in the store for the next start.
            sender.abort();
        }
        tracing::info!(
            cancelled_work = work,
            executions = stopped,
            "daemon stopped; stopped executions resume on the next start"
        );
        stopped
    }

    /// Lets executions run until `deadline`, stopping each one as soon as all it does is wait
    /// durably; stops the rest at `deadline`. Returns how many were stopped.
    async fn stop_executions(&self, deadline: tokio::time::Instant) -> usize {
        let mut tasks = {
            let mut tasks = lock(&self.tasks);
            let running = std::mem::take(&mut *tasks);
            tasks.closed = true;
            running
        };
        let mut parked = HashSet::new();
        loop {
            tasks.reap();
            if tasks.set.is_empty() {
                break;
            }
            for (task, running) in &tasks.ids {
                if !parked.contains(task) && self.durably_waiting(&running.execution) {
                    tracing::info!(execution = %running.execution, "stopping an execution that only waits");
                    running.handle.abort();
                    parked.insert(*task);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::info!(
                    executions = tasks.set.len(),
                    "grace period over: stopping the executions still running"
                );
                parked.extend(tasks.ids.keys().copied());
                tasks.set.abort_all();
                while tasks.set.join_next().await.is_some() {}
                break;
            }
            let next_look = (tokio::time::Instant::now() + SHUTDOWN_POLL).min(deadline);
            tokio::select! {
                done = tasks.set.join_next_with_id() => {
                    if let Some(done) = done {
                        tasks.forget(done);
                    }
                }
                _ = tokio::time::sleep_until(next_look) => {}
            }
        }
        parked.len()
    }

    /// Whether execution `id` only waits durably (see [`only_waits`]).
    fn durably_waiting(&self, id: &str) -> bool {
        only_waits(self.store.as_ref(), id)
    }

    /// Resolves once shutdown has started.
    async fn stopped(&self) {
        let mut stopping = self.stopping.subscribe();
        // The sender lives as long as the daemon, so this fails only if it were gone.
        let _ = stopping.wait_for(|s| *s).await;
    }

    /// The poll timer: asks for a reconcile of the tracked branch, then sleeps the poll
    /// interval (with jitter; doubled per failure in a row, up to 16 times); until shutdown
    /// or the task is dropped.
    pub async fn poll_loop(self: Arc<Self>) {
        loop {
            self.request_poll();
            let failures = lock(&self.state).failures;
            let base = self.config.poll_interval * 2u32.pow(failures.min(4));
            let jitter = base.mul_f64(rand_fraction() / 10.0);
            tokio::select! {
                _ = tokio::time::sleep(base + jitter) => {}
                _ = self.stopped() => return,
            }
        }
    }

    /// The drift timer: asks for a drift check every `drift_interval`, until shutdown or the
    /// task is dropped.
    pub async fn drift_loop(self: Arc<Self>) {
        let Some(interval) = self.config.drift_interval else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval + interval.mul_f64(rand_fraction() / 10.0)) => {}
                _ = self.stopped() => return,
            }
            // With several replicas the leader checks drift, once for all.
            if self.leads() {
                self.queue.enqueue(work::Work::Drift);
            }
        }
    }

    fn github(&self) -> Result<&GitHub, DaemonError> {
        self.github.as_ref().ok_or(DaemonError::NoGitHub)
    }
}

/// Whether execution `id` only waits in a way the store keeps across a restart: queued (for
/// its turn), or every started stage waiting (for a judgment or an execution window) or in a
/// `wait` stage whose end is recorded. A store error counts as not waiting.
fn only_waits(store: &dyn Store, id: &str) -> bool {
    let Ok(execution) = store.execution(id) else {
        return false;
    };
    match execution.status {
        ExecutionStatus::Queued => return true,
        ExecutionStatus::Running => {}
        _ => return false,
    }
    let Ok(stages) = store.stages(id) else {
        return false;
    };
    let mut active = stages
        .iter()
        .filter(|s| matches!(s.status, StageStatus::Running | StageStatus::Waiting))
        .peekable();
    active.peek().is_some()
        && active.all(|s| {
            s.status == StageStatus::Waiting
                || (s.kind() == Some(StageType::Wait) && s.outputs.get("until").is_some())
        })
}

#[cfg(test)]
mod shutdown_tests {
    use super::*;
    use crate::store::{NewExecution, NewStage, SqliteStore, StageUpdate};
    use serde_json::json;

    fn stage(name: &str, stage_type: &str) -> NewStage {
        NewStage {
            name: name.into(),
            stage_type: stage_type.into(),
            environment: None,
            inputs: json!({"name": name, "type": stage_type}),
        }
    }

    fn set(
        store: &SqliteStore,
        id: &str,
        name: &str,
        status: StageStatus,
        outputs: serde_json::Value,
    ) {
        store
            .update_stage(
                id,
                name,
                StageUpdate {
                    status: Some(status),
                    outputs: Some(outputs),
                    ..StageUpdate::default()
                },
            )
            .expect("update");
    }

    #[test]
    fn only_durable_waits_count_as_waiting() {
        let dir = tempfile::tempdir().expect("dir");
        let store = SqliteStore::open(&dir.path().join("state.db")).expect("store");
        let execution = store
            .create_execution(NewExecution {
                app: "a".into(),
                environments: vec!["production".into()],
                revision: "0123456789abcdef0123456789abcdef01234567".into(),
                pipeline: "p".into(),
                trigger: json!({}),
                stages: vec![
                    stage("deploy", "deploy"),
                    stage("approve", "manualJudgment"),
                    stage("soak", "wait"),
                ],
            })
            .expect("execution");
        let id = execution.id.as_str();
        // Queued: waiting for its turn.
        assert!(only_waits(&store, id));
        assert!(store.try_start(id).expect("start"));
        // Running, nothing started yet: between stages, not a wait.
        assert!(!only_waits(&store, id));
        set(
            &store,
            id,
            "approve",
            StageStatus::Waiting,
            json!({"waitingFor": "judgment"}),
        );
        assert!(only_waits(&store, id));
        set(&store, id, "soak", StageStatus::Running, json!({}));
        assert!(
            !only_waits(&store, id),
            "a wait stage whose end is not recorded yet"
        );
        set(
            &store,
            id,
            "soak",
            StageStatus::Running,
            json!({"until": "2030-01-01T00:00:00Z"}),
        );
        assert!(only_waits(&store, id));
        set(&store, id, "deploy", StageStatus::Running, json!({}));
        assert!(!only_waits(&store, id), "a deploy is applying");
        assert!(!only_waits(&store, "no-such-execution"));
    }
}

/// How often shutdown looks whether the executions left only wait.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);

/// Execution tasks of this process, with the execution each one runs.
#[derive(Default)]
struct ExecutionTasks {
    set: JoinSet<()>,
    /// The execution of each task, and how to stop it alone.
    ids: HashMap<tokio::task::Id, RunningExecution>,
    /// The executions of those tasks.
    executions: HashSet<String>,
    /// Set on shutdown: no execution starts any more in this process.
    closed: bool,
}

/// An execution task of this process.
struct RunningExecution {
    execution: String,
    app: String,
    handle: tokio::task::AbortHandle,
}

impl ExecutionTasks {
    /// Whether execution `id` runs in this process.
    fn runs(&mut self, id: &str) -> bool {
        self.reap();
        self.executions.contains(id)
    }

    /// Forgets the tasks that ended.
    fn reap(&mut self) {
        while let Some(done) = self.set.try_join_next_with_id() {
            self.forget(done);
        }
    }

    /// Forgets the task that ended with `done`.
    fn forget(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            Err(e) => e.id(),
        };
        if let Some(running) = self.ids.remove(&id) {
            self.executions.remove(&running.execution);
        }
    }
}

/// A fraction in [0, 1) from the random part of a fresh ULID (jitter needs no more).
fn rand_fraction() -> f64 {
    (ulid::Ulid::new().random() & 0xffff) as f64 / 65536.0
}

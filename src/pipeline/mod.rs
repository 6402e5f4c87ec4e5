//! Promotion pipelines: a PipelineTemplate instantiated for an application becomes an
//! **execution** whose stages run as a DAG (independent branches concurrently), honouring
//! `dependsOn`, `when`, `timeout`, `retries`, cancellation and execution windows. Every stage
//! transition is committed to the [`crate::store`] before its effect is reported, and an
//! execution interrupted by a crash resumes from its last committed stage state.
//!
//! The execution keeps a snapshot of everything it needs (rendered objects per environment,
//! clusters, parameters, canary config), so resuming never depends on the repository having
//! stayed the same.

pub mod egress;
pub mod error;
pub mod expr;
pub mod operations;
pub mod snapshot;
pub mod stages;
pub mod window;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinSet;

use crate::cluster::{ClusterPool, ConnectOptions};
use crate::config::Stage;
use crate::store::{
    Claim, Execution, ExecutionStatus, NewExecution, StageState, StageStatus, StageUpdate, Store,
    StoreError,
};
pub use error::StageError;
pub use snapshot::{Snapshot, prepare};

/// Why the engine could not carry on (stage failures are not errors: they fail the stage).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// Another process took the execution over (this one's heartbeat had expired); this
    /// process stopped working on it.
    #[error("execution {id}: taken over by another process; stopped working on it here")]
    Lost {
        /// Execution id.
        id: String,
    },
    /// Another replica took over the shard of the execution's app; this replica stopped
    /// working on it (or never started: it does not hold the shard).
    #[error("shard {shard} is held by another replica; stopped working on its execution here")]
    Fenced {
        /// The app's shard.
        shard: u32,
    },
    /// The execution's stored data is not usable.
    #[error("execution {id}: {message}")]
    Invalid {
        /// Execution id.
        id: String,
        /// Why.
        message: String,
    },
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> EngineError {
        match e {
            // A fenced write refused: another process owns the execution now.
            StoreError::NotOwner { execution, .. } => EngineError::Lost { id: execution },
            // A fenced write refused: another replica holds the app's shard now.
            StoreError::Fenced { shard, .. } => EngineError::Fenced { shard },
            other => EngineError::Store(other),
        }
    }
}

/// Something worth telling the person watching an execution.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A stage changed status.
    Stage {
        /// Stage name.
        stage: String,
        /// New status.
        status: StageStatus,
        /// Details (error, skip reason, wait reason).
        message: Option<String>,
    },
    /// A stage reports what it is doing.
    Note {
        /// Stage name.
        stage: String,
        /// What.
        message: String,
    },
    /// This process took over a running execution whose owner stopped heartbeating (or
    /// had released it).
    Resumed {
        /// Execution id.
        execution: String,
        /// The previous owner, if any.
        previous: Option<String>,
    },
    /// The execution ended.
    Finished(ExecutionStatus),
}

/// Where progress goes.
pub type ProgressSink = Arc<dyn Fn(&Progress) + Send + Sync>;

/// What stages need from the outside world.
#[derive(Clone)]
pub struct Services {
    /// How to reach clusters.
    pub connect: ConnectOptions,
    /// The connections to them, shared by every stage (and by the daemon's plans and drift).
    pub clusters: Arc<ClusterPool>,
    /// HTTP client for webhooks and `http_ok` (see [`egress`]).
    pub http: reqwest::Client,
    /// Let webhooks and `http_ok` reach link-local and metadata addresses.
    pub allow_link_local_egress: bool,
    /// Secrets for templates (`secrets.<name>`), never logged.
    pub secrets: BTreeMap<String, String>,
    /// How often running stages look at the world (health, judgments, cancellation).
    pub poll: Duration,
    /// Base delay of stage retries (doubles per attempt, at most a minute).
    pub retry_delay: Duration,
    /// Prometheus URL used instead of the environment's (tests, port-forwards).
    pub prometheus_override: Option<String>,
    /// Progress output.
    pub progress: ProgressSink,
    /// Who runs executions through these services: this process (see [`owner_id`]).
    pub owner: String,
    /// How often the owner of a running execution renews its heartbeat.
    pub heartbeat: Duration,
    /// How long a heartbeat stays valid: another process resumes a running execution only
    /// after its owner has not renewed it for this long.
    pub ownership_ttl: Duration,
    /// Which app declares which object at the newest good commit, once known: deploys never
    /// prune an object another app now declares, and take over one its old app gave up.
    pub declarations: crate::check::SharedDeclarations,
    /// With several replicas: which shards this one holds. An execution runs only on the
    /// holder of its app's shard, and every transition carries that hold as a fencing token.
    /// `None`: one process, no shards.
    pub fencing: Option<Arc<dyn Fencing>>,
    /// Where the time of each committed stage transition (claims, stage updates, ends) is
    /// observed (`/metrics` of the daemon).
    pub transition_seconds: Option<prometheus::Histogram>,
}

/// The shards a replica holds, as the engine asks: the hold on an app's shard, if any.
pub trait Fencing: Send + Sync {
    /// The shard of `app`.
    fn shard_of(&self, app: &str) -> u32;
    /// This replica's hold on the shard of `app`, when it holds it.
    fn fence(&self, app: &str) -> Option<crate::store::Fence>;
}

/// Default interval of heartbeats on running executions.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Default validity of a heartbeat (six missed heartbeats).
pub const OWNERSHIP_TTL: Duration = Duration::from_secs(30);

/// An owner id for this process: host name, process id and a random part (unique even when
/// a process id is reused, or several engines share a host name).
pub fn owner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    let random = ulid::Ulid::new().random() as u32;
    format!("{host}:{}:{random:08x}", std::process::id())
}

impl Services {
    /// Services with defaults and no progress output.
    pub fn new(connect: ConnectOptions) -> Services {
        // reqwest is built without a default TLS provider; ring is bowline's one. A no-op when
        // the process installed it already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Services {
            clusters: Arc::new(ClusterPool::new(connect.clone())),
            connect,
            http: egress::client(false, EGRESS_TIMEOUT),
            allow_link_local_egress: false,
            secrets: BTreeMap::new(),
            poll: Duration::from_secs(1),
            retry_delay: Duration::from_secs(2),
            prometheus_override: None,
            progress: Arc::new(|_| {}),
            owner: owner_id(),
            heartbeat: HEARTBEAT,
            ownership_ttl: OWNERSHIP_TTL,
            declarations: Arc::default(),
            fencing: None,
            transition_seconds: None,
        }
    }
}

impl Services {
    /// Lets webhooks and `http_ok` reach link-local and metadata addresses (or not).
    pub fn with_link_local_egress(mut self, allow: bool) -> Services {
        self.allow_link_local_egress = allow;
        self.http = egress::client(allow, EGRESS_TIMEOUT);
        self
    }
}

/// Longest outgoing request of webhooks and `http_ok`.
const EGRESS_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs executions against a store.
#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    services: Arc<Services>,
    /// The shard hold of the execution being run, carried by each of its transitions.
    fence: Option<crate::store::Fence>,
}

/// What one stage attempt produced: its outputs, or why it failed and whether another
/// attempt could help.
pub(crate) type StageResult = Result<Value, StageError>;

/// How a stage ended that neither succeeded nor failed: rejected by a person, or skipped
/// because it had nothing to do. The stage sets it before returning its outputs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ending {
    /// [`StageStatus::Rejected`] or [`StageStatus::Skipped`].
    pub status: StageStatus,
    /// Why, as it reads in the event log ("rejected by maria").
    pub reason: String,
}

impl Engine {
    /// An engine over `store` using `services`.
    pub fn new(store: Arc<dyn Store>, services: Services) -> Engine {
        Engine {
            store,
            services: Arc::new(services),
            fence: None,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Creates a queued execution.
    pub fn create(&self, new: NewExecution) -> Result<Execution, EngineError> {
        Ok(self.store.create_execution(new)?)
    }

    /// Runs the store call `f`, observing its time as a stage transition.
    pub(crate) fn timed<T>(&self, f: impl FnOnce() -> T) -> T {
        let started = std::time::Instant::now();
        let result = f();
        if let Some(histogram) = &self.services.transition_seconds {
            histogram.observe(started.elapsed().as_secs_f64());
        }
        result
    }

    fn progress(&self, p: Progress) {
        (self.services.progress)(&p);
    }

    /// Runs execution `id` to its end: waits for its turn (one running execution per app and
    /// environment) or, when another process runs it, for that one to end or to stop
    /// heartbeating; then owns it, runs or resumes its stages and renews its heartbeat.
    /// Returns the final status; [`EngineError::Lost`] when another process took it over.
    /// With several replicas ([`Services::fencing`]) it runs only on the holder of the app's
    /// shard ([`EngineError::Fenced`] elsewhere), and takes the execution over at once from a
    /// replica that lost the shard.
    #[tracing::instrument(level = "info", skip(self), fields(owner = %self.services.owner))]
    pub async fn run(&self, id: &str) -> Result<ExecutionStatus, EngineError> {
        let Some(fencing) = &self.services.fencing else {
            return self.run_owned(id).await;
        };
        let app = self.store.execution(id)?.app;
        let Some(fence) = fencing.fence(&app) else {
            return Err(EngineError::Fenced {
                shard: fencing.shard_of(&app),
            });
        };
        tracing::Span::current().record("owner", tracing::field::display(&fence.holder));
        let engine = Engine {
            fence: Some(fence),
            ..self.clone()
        };
        engine.run_owned(id).await
    }

    async fn run_owned(&self, id: &str) -> Result<ExecutionStatus, EngineError> {
        let owner = self.services.owner.clone();
        let ttl = self.services.ownership_ttl;
        let mut told = false;
        loop {
            let execution = self.store.execution(id)?;
            if execution.status.is_final() {
                return Ok(execution.status);
            }
            match self.timed(|| {
                self.store
                    .claim_fenced(id, &owner, ttl, self.fence.as_ref())
            })? {
                Claim::Started => break,
                Claim::TakenOver { previous } => {
                    tracing::info!(
                        previous = previous.as_deref().unwrap_or("none"),
                        "took over the execution"
                    );
                    self.progress(Progress::Resumed {
                        execution: id.to_string(),
                        previous,
                    });
                    break;
                }
                Claim::Blocked => {}
                Claim::Owned {
                    owner: other,
                    until,
                } => {
                    if !told {
                        tracing::info!(other = %other, until = %until, "running in another process: waiting for it to end or to stop heartbeating");
                        told = true;
                    }
                }
            }
            tokio::time::sleep(self.services.poll).await;
        }
        // Gives the ownership up however this returns (end, error, or the task being aborted
        // by a shutdown), so a next process need not wait for the heartbeat to expire.
        let _owned = Owned {
            store: self.store.clone(),
            id: id.to_string(),
            owner: owner.clone(),
        };
        let mut last_beat = tokio::time::Instant::now();
        let execution = self.store.execution(id)?;
        let snapshot: Arc<Snapshot> = Arc::new(
            serde_json::from_value(execution.trigger.clone()).map_err(|e| {
                EngineError::Invalid {
                    id: id.to_string(),
                    message: format!("snapshot: {e}"),
                }
            })?,
        );
        let mut tasks: JoinSet<(String, StageResult, Option<Ending>)> = JoinSet::new();
        let mut running: HashSet<String> = HashSet::new();
        // A cancellation was handled and only `canceled()` stages are left to run.
        let mut canceling = false;
        loop {
            if last_beat.elapsed() >= self.services.heartbeat {
                if !self.store.heartbeat(id, &owner, ttl)? {
                    tracing::warn!(
                        "the execution was taken over by another process: stopping here"
                    );
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    return Err(EngineError::Lost { id: id.to_string() });
                }
                last_beat = tokio::time::Instant::now();
            }
            let execution = self.store.execution(id)?;
            let states = self.store.stages(id)?;
            if execution.cancel_requested && !canceling {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                running.clear();
                // Stages meant for a cancellation (`when` calling `canceled()`) still run;
                // everything else stops here.
                let mut cleanup = false;
                for s in states.iter().filter(|s| !s.status.is_final()) {
                    if runs_on_cancel(s) {
                        cleanup = true;
                        continue;
                    }
                    self.transition(
                        id,
                        &s.name,
                        StageStatus::Canceled,
                        None,
                        Some("canceled".into()),
                    )?;
                }
                if !cleanup {
                    return self
                        .finish(id, &snapshot, ExecutionStatus::Canceled, None)
                        .await;
                }
                canceling = true;
                continue;
            }
            if states.iter().all(|s| s.status.is_final()) && tasks.is_empty() {
                let (status, error) = if canceling {
                    (ExecutionStatus::Canceled, None)
                } else {
                    outcome(&states)
                };
                return self.finish(id, &snapshot, status, error.as_deref()).await;
            }
            let changed =
                self.schedule(&execution, &snapshot, &states, &mut tasks, &mut running)?;
            if tasks.is_empty() && changed {
                // Stages were skipped or failed without running: look at the states again.
                continue;
            }
            if tasks.is_empty() {
                // Nothing runnable and nothing running: only possible with a broken graph.
                return Err(EngineError::Invalid {
                    id: id.to_string(),
                    message: "no stage can start (dependency cycle or unknown dependency)".into(),
                });
            }
            tokio::select! {
                joined = tasks.join_next() => {
                    if let Some(joined) = joined {
                        match joined {
                            Ok((name, result, ending)) => {
                                running.remove(&name);
                                self.settle(id, &name, result, ending)?;
                            }
                            Err(e) if e.is_cancelled() => {}
                            Err(e) => {
                                return Err(EngineError::Invalid { id: id.to_string(), message: format!("stage task panicked: {e}") });
                            }
                        }
                    }
                }
                _ = tokio::time::sleep(self.services.poll.min(self.services.heartbeat)) => {}
            }
        }
    }

    /// Ends execution `id` with `status`, after removing what a strategy leaves running only
    /// while its execution runs (canary tracks).
    async fn finish(
        &self,
        id: &str,
        snapshot: &Snapshot,
        status: ExecutionStatus,
        error: Option<&str>,
    ) -> Result<ExecutionStatus, EngineError> {
        stages::remove_leftover_tracks(self, id, snapshot).await;
        // Only the owner ends it: a process whose execution was taken over stops here.
        self.store
            .finish_owned(id, status, error, &self.services.owner, self.fence.as_ref())?;
        self.progress(Progress::Finished(status));
        Ok(status)
    }

    /// Starts every stage that can start: not started with all dependencies final (or left
    /// running by an interrupted process). Skips the ones whose condition is false. Returns
    /// whether any stage changed status without being started (skipped, or failed on its
    /// condition).
    fn schedule(
        &self,
        execution: &Execution,
        snapshot: &Arc<Snapshot>,
        states: &[StageState],
        tasks: &mut JoinSet<(String, StageResult, Option<Ending>)>,
        running: &mut HashSet<String>,
    ) -> Result<bool, EngineError> {
        let mut changed = false;
        let by_name: HashMap<&str, &StageState> =
            states.iter().map(|s| (s.name.as_str(), s)).collect();
        for state in states {
            if running.contains(&state.name) || state.status.is_final() {
                continue;
            }
            let stage: Stage =
                serde_json::from_value(state.inputs.clone()).map_err(|e| EngineError::Invalid {
                    id: execution.id.clone(),
                    message: format!("stage {}: {e}", state.name),
                })?;
            let resumed = matches!(state.status, StageStatus::Running | StageStatus::Waiting);
            if !resumed {
                let deps: Vec<&StageState> = stage
                    .depends_on
                    .iter()
                    .filter_map(|d| by_name.get(d.as_str()).copied())
                    .collect();
                if deps.iter().any(|d| !d.status.is_final()) {
                    continue;
                }
                let ctx = snapshot.expr_context(&execution.id, &execution.revision, &stage, states);
                let run = match &stage.when {
                    Some(when) => match expr::eval_bool(when, &ctx, None) {
                        Ok(v) => v
                            .then_some(())
                            .ok_or_else(|| format!("when `{when}` is false")),
                        Err(e) => {
                            self.transition(
                                &execution.id,
                                &state.name,
                                StageStatus::Failed,
                                Some(e.to_string()),
                                None,
                            )?;
                            changed = true;
                            continue;
                        }
                    },
                    None => match deps.iter().find(|d| d.status != StageStatus::Succeeded) {
                        Some(d) => Err(format!(
                            "dependency {} {}",
                            d.name,
                            d.status.as_str().to_ascii_lowercase()
                        )),
                        None => Ok(()),
                    },
                };
                if let Err(reason) = run {
                    self.transition(
                        &execution.id,
                        &state.name,
                        StageStatus::Skipped,
                        None,
                        Some(format!("skipped: {reason}")),
                    )?;
                    changed = true;
                    continue;
                }
            }
            running.insert(state.name.clone());
            let runner = stages::StageRun {
                engine: self.clone(),
                execution: execution.id.clone(),
                revision: execution.revision.clone(),
                snapshot: snapshot.clone(),
                stage,
                resumed,
                state: state.clone(),
                ending: None,
            };
            tasks.spawn(async move {
                let name = runner.stage.name.clone();
                let (result, ending) = runner.run().await;
                (name, result, ending)
            });
        }
        Ok(changed)
    }

    fn settle(
        &self,
        id: &str,
        stage: &str,
        result: StageResult,
        ending: Option<Ending>,
    ) -> Result<(), EngineError> {
        match (result, ending) {
            (Ok(outputs), Some(ending)) => {
                let event = match ending.status {
                    // "rejected by maria" already says what happened.
                    StageStatus::Rejected => ending.reason.clone(),
                    other => format!("{}: {}", other.as_str().to_ascii_lowercase(), ending.reason),
                };
                self.timed(|| {
                    self.store.update_stage(
                        id,
                        stage,
                        StageUpdate {
                            status: Some(ending.status),
                            outputs: Some(merged(
                                &outputs,
                                serde_json::json!({"reason": ending.reason}),
                            )),
                            event: Some(event),
                            owner: Some(self.services.owner.clone()),
                            fence: self.fence.clone(),
                            ..StageUpdate::default()
                        },
                    )
                })?;
                self.progress(Progress::Stage {
                    stage: stage.to_string(),
                    status: ending.status,
                    message: Some(ending.reason),
                });
            }
            (Ok(outputs), None) => {
                self.timed(|| {
                    self.store.update_stage(
                        id,
                        stage,
                        StageUpdate {
                            status: Some(StageStatus::Succeeded),
                            outputs: Some(outputs),
                            event: Some("succeeded".into()),
                            owner: Some(self.services.owner.clone()),
                            fence: self.fence.clone(),
                            ..StageUpdate::default()
                        },
                    )
                })?;
                self.progress(Progress::Stage {
                    stage: stage.to_string(),
                    status: StageStatus::Succeeded,
                    message: None,
                });
            }
            (Err(error), _) => self.transition(
                id,
                stage,
                StageStatus::Failed,
                Some(error.to_string()),
                None,
            )?,
        }
        Ok(())
    }

    /// Commits a status change (with its error and event), then reports it.
    pub(crate) fn transition(
        &self,
        id: &str,
        stage: &str,
        status: StageStatus,
        error: Option<String>,
        event: Option<String>,
    ) -> Result<(), EngineError> {
        let message = error.clone().or(event.clone());
        self.timed(|| {
            self.store.update_stage(
                id,
                stage,
                StageUpdate {
                    status: Some(status),
                    error: error.clone().map(Some),
                    event: Some(event.unwrap_or_else(|| match &error {
                        Some(e) => format!("{}: {e}", status.as_str().to_ascii_lowercase()),
                        None => status.as_str().to_ascii_lowercase(),
                    })),
                    owner: Some(self.services.owner.clone()),
                    fence: self.fence.clone(),
                    ..StageUpdate::default()
                },
            )
        })?;
        self.progress(Progress::Stage {
            stage: stage.to_string(),
            status,
            message,
        });
        Ok(())
    }

    /// Executions left running by a process that stopped (no owner, or the owner's heartbeat
    /// expired), for resuming. Executions whose owner is alive are not included.
    pub fn interrupted(&self, app: Option<&str>) -> Result<Vec<Execution>, EngineError> {
        let now = chrono::Utc::now();
        let mut running = self.store.executions(&crate::store::ExecutionFilter {
            app: app.map(str::to_string),
            statuses: vec![ExecutionStatus::Running],
            limit: None,
        })?;
        running.retain(|e| e.is_orphaned(now) || e.owner.as_deref() == Some(&self.services.owner));
        Ok(running)
    }
}

/// Ownership of a running execution, given up when dropped.
struct Owned {
    store: Arc<dyn Store>,
    id: String,
    owner: String,
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Err(e) = self.store.release(&self.id, &self.owner) {
            tracing::warn!(execution = %self.id, error = %e, "could not release the execution");
        }
    }
}

/// Whether a stage still runs after a cancellation: its `when` calls `canceled()`.
fn runs_on_cancel(state: &StageState) -> bool {
    state
        .inputs
        .get("when")
        .and_then(Value::as_str)
        .is_some_and(|when| when.contains("canceled()"))
}

/// The final status of an execution whose stages are all final, and why it did not succeed:
/// a failed stage fails it; otherwise a rejected judgment rejects it (a rejection is a
/// decision, not a failure); otherwise it succeeded.
fn outcome(states: &[StageState]) -> (ExecutionStatus, Option<String>) {
    let named = |status: StageStatus| -> Vec<&StageState> {
        states.iter().filter(|s| s.status == status).collect()
    };
    let failed = named(StageStatus::Failed);
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|s| s.name.as_str()).collect();
        return (
            ExecutionStatus::Failed,
            Some(format!("stage {} failed", names.join(", "))),
        );
    }
    let rejected = named(StageStatus::Rejected);
    if !rejected.is_empty() {
        let why: Vec<String> = rejected
            .iter()
            .map(|s| match s.outputs.get("reason").and_then(Value::as_str) {
                Some(reason) => format!("stage {} {reason}", s.name),
                None => format!("stage {} rejected", s.name),
            })
            .collect();
        return (ExecutionStatus::Rejected, Some(why.join("; ")));
    }
    (ExecutionStatus::Succeeded, None)
}

/// Outputs merged with `extra` (objects only).
pub(crate) fn merged(outputs: &Value, extra: Value) -> Value {
    let mut out = match outputs {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    if let Value::Object(extra) = extra {
        out.extend(extra);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(name: &str, status: StageStatus, inputs: Value, outputs: Value) -> StageState {
        StageState {
            name: name.into(),
            stage_type: "wait".into(),
            environment: None,
            status,
            attempts: 0,
            inputs,
            outputs,
            started_at: None,
            finished_at: None,
            error: None,
        }
    }

    #[test]
    fn outcomes_put_failure_before_rejection_before_success() {
        let ok = state("a", StageStatus::Succeeded, json!({}), json!({}));
        let skipped = state("b", StageStatus::Skipped, json!({}), json!({}));
        let rejected = state(
            "approve",
            StageStatus::Rejected,
            json!({}),
            json!({"reason": "rejected by maria"}),
        );
        let failed = state("notify", StageStatus::Failed, json!({}), json!({}));
        assert_eq!(
            outcome(&[ok.clone(), skipped.clone()]),
            (ExecutionStatus::Succeeded, None)
        );
        assert_eq!(
            outcome(&[ok.clone(), rejected.clone(), skipped]),
            (
                ExecutionStatus::Rejected,
                Some("stage approve rejected by maria".into())
            )
        );
        assert_eq!(
            outcome(&[ok, rejected, failed]),
            (ExecutionStatus::Failed, Some("stage notify failed".into()))
        );
    }

    fn waiting(app: &str, duration: &str) -> NewExecution {
        NewExecution {
            app: app.into(),
            environments: vec!["staging".into()],
            revision: "rev1".into(),
            pipeline: "test".into(),
            trigger: json!({"user": "test", "app": {"name": app}, "parameters": {},
                            "environments": {}}),
            stages: vec![crate::store::NewStage {
                name: "soak".into(),
                stage_type: "wait".into(),
                environment: None,
                inputs: json!({"name": "soak", "type": "wait", "duration": duration}),
            }],
        }
    }

    fn engine(store: &Arc<crate::store::SqliteStore>, owner: &str, ttl_ms: u64) -> Engine {
        let mut services = Services::new(ConnectOptions::default());
        services.poll = Duration::from_millis(20);
        services.owner = owner.into();
        services.ownership_ttl = Duration::from_millis(ttl_ms);
        services.heartbeat = Duration::from_millis(ttl_ms / 4);
        Engine::new(store.clone(), services)
    }

    #[tokio::test]
    async fn an_owned_execution_is_resumed_elsewhere_only_after_its_heartbeat_expires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Arc::new(crate::store::SqliteStore::open(&dir.path().join("state.db")).expect("store"));
        let first = engine(&store, "host:1:a", 400);
        let id = first.create(waiting("web", "1s")).expect("create").id;
        let running = tokio::spawn({
            let first = first.clone();
            let id = id.clone();
            async move { first.run(&id).await }
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Alive and heartbeating: not interrupted, and a second engine only waits.
        let second = engine(&store, "host:2:b", 400);
        assert!(second.interrupted(Some("web")).expect("list").is_empty());
        let status = second.run(&id).await.expect("waited for the end");
        assert_eq!(status, ExecutionStatus::Succeeded);
        assert_eq!(
            running.await.expect("joined").expect("ran"),
            ExecutionStatus::Succeeded
        );
        let events: Vec<String> = store
            .events(&id)
            .expect("events")
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert!(
            !events.iter().any(|m| m.starts_with("resumed by")),
            "{events:?}"
        );
        assert_eq!(
            events.iter().filter(|m| m.as_str() == "started").count(),
            2,
            "the execution and its stage started once each: {events:?}"
        );
    }

    #[tokio::test]
    async fn a_process_whose_execution_was_taken_over_stops_working_on_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Arc::new(crate::store::SqliteStore::open(&dir.path().join("state.db")).expect("store"));
        // Heartbeats come less often than they expire: a stalled owner.
        let mut stalled = engine(&store, "host:1:a", 200);
        if let Some(services) = Arc::get_mut(&mut stalled.services) {
            services.heartbeat = Duration::from_millis(600);
        }
        let id = stalled.create(waiting("web", "30s")).expect("create").id;
        let running = tokio::spawn({
            let stalled = stalled.clone();
            let id = id.clone();
            async move { stalled.run(&id).await }
        });
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(
            store
                .claim(&id, "host:2:b", Duration::from_secs(30))
                .expect("claim"),
            Claim::TakenOver {
                previous: Some("host:1:a".into())
            }
        );
        let lost = tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("stopped in time")
            .expect("joined");
        assert!(matches!(lost, Err(EngineError::Lost { .. })), "{lost:?}");
        let execution = store.execution(&id).expect("execution");
        assert_eq!(
            execution.status,
            ExecutionStatus::Running,
            "not ended by the loser"
        );
        assert_eq!(execution.owner.as_deref(), Some("host:2:b"));
    }

    #[test]
    fn only_canceled_stages_run_on_cancel() {
        let with_when = |when: Option<&str>| {
            state(
                "s",
                StageStatus::NotStarted,
                json!({"name": "s", "when": when}),
                json!({}),
            )
        };
        assert!(runs_on_cancel(&with_when(Some("canceled()"))));
        assert!(runs_on_cancel(&with_when(Some("canceled() or failure()"))));
        assert!(!runs_on_cancel(&with_when(Some("always()"))));
        assert!(!runs_on_cancel(&with_when(Some("failure()"))));
        assert!(!runs_on_cancel(&with_when(None)));
    }
}

//! Durable state of executions, behind a trait: executions and their stage states (with inputs
//! and outputs), an event log, manual judgments, and per (app, environment, cluster) the
//! revisions applied with their rendered objects (for rollback).
//!
//! The default implementation is an embedded SQLite file ([`sqlite::SqliteStore`]); for several
//! replicas, a shared PostgreSQL database ([`postgres::PostgresStore`]) sits behind the same
//! trait. Every method is one transaction: when it returns `Ok`, the change is committed.

pub mod files;
pub mod postgres;
mod rows;
pub mod sqlite;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use postgres::PostgresStore;
pub use sqlite::{Durability, SqliteStore};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, migrated or queried.
    #[error("state store {path}: {source}")]
    Sqlite {
        /// Database file.
        path: String,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL database could not be reached, migrated or queried.
    #[error("state store {target}: {}", postgres::describe(.source))]
    Postgres {
        /// `host:port/dbname` (never the password).
        target: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// No connection to the PostgreSQL database could be had (pool, TLS or runtime setup).
    #[error("state store {target}: {message}")]
    PostgresPool {
        /// `host:port/dbname` (never the password).
        target: String,
        /// What failed.
        message: String,
    },
    /// The state file could not be made private.
    #[error("state store: {0}")]
    File(#[from] files::FileError),
    /// The schema migration failed.
    #[error("state store {path}: migrating the schema: {message}")]
    Migration {
        /// Database file.
        path: String,
        /// What failed.
        message: String,
    },
    /// No execution with this id.
    #[error("no execution {0}")]
    NoExecution(String),
    /// No stage of this name in the execution.
    #[error("execution {execution} has no stage \"{stage}\"")]
    NoStage {
        /// Execution id.
        execution: String,
        /// Stage name.
        stage: String,
    },
    /// A stored value is not what this version of bowline understands.
    #[error("state store: corrupt {what}: {message}")]
    Corrupt {
        /// Which value.
        what: String,
        /// Why.
        message: String,
    },
    /// The operation does not apply in the current state.
    #[error("{0}")]
    Conflict(String),
    /// The file exists but is not a bowline state store (empty, not SQLite, or SQLite without
    /// bowline's schema); it is left untouched.
    #[error(
        "state store {path}: {reason}; refusing to use it (remove it or point --state elsewhere)"
    )]
    NotAStore {
        /// The file.
        path: String,
        /// What it is instead.
        reason: String,
    },
    /// A fenced change by a process that no longer owns the execution.
    #[error("execution {execution} is no longer owned by {owner}")]
    NotOwner {
        /// Execution id.
        execution: String,
        /// The former owner that tried the change.
        owner: String,
    },
    /// A change by a replica whose hold on the app's shard is no longer the newest: another
    /// replica took the shard over, so this one must stop.
    #[error(
        "shard {shard}: fenced off (this replica holds generation {generation}, the store has {current})"
    )]
    Fenced {
        /// The shard.
        shard: u32,
        /// The generation the change carried.
        generation: i64,
        /// The newest generation recorded, with its holder.
        current: String,
    },
    /// An execution of this app and revision is already queued or running: a second one would
    /// deliver the same change twice.
    #[error("execution {existing} of {app} at revision {revision} is already {}", status.as_str().to_ascii_lowercase())]
    Duplicate {
        /// Application.
        app: String,
        /// Revision.
        revision: String,
        /// The execution already queued or running.
        existing: String,
        /// Its status.
        status: ExecutionStatus,
    },
}

/// The answer to claiming an execution ([`Store::try_start`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller owns it now: it was queued, or running under the caller already.
    Started,
    /// The caller took over a running execution whose owner's heartbeat had expired (or that
    /// had no owner).
    TakenOver {
        /// The previous owner, if any.
        previous: Option<String>,
    },
    /// Another execution of the app covering one of its environments is running.
    Blocked,
    /// Another process owns it and its heartbeat is fresh.
    Owned {
        /// The owner.
        owner: String,
        /// When its ownership lapses without a new heartbeat.
        until: DateTime<Utc>,
    },
}

impl Claim {
    /// Whether the caller now runs the execution.
    pub fn is_owned_by_caller(&self) -> bool {
        matches!(self, Claim::Started | Claim::TakenOver { .. })
    }
}

/// Lifecycle of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionStatus {
    /// Waiting for another execution of the same app and environments to finish.
    Queued,
    /// Stages are running or waiting.
    Running,
    /// Every stage succeeded or was skipped.
    Succeeded,
    /// A stage failed.
    Failed,
    /// A manual judgment was rejected (and no stage failed): the change was stopped on
    /// purpose, which is not a failure.
    Rejected,
    /// Canceled by a user.
    Canceled,
    /// A newer execution for the same app and environments replaced it while queued.
    Superseded,
}

/// Lifecycle of a stage within an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StageStatus {
    /// Not started yet.
    NotStarted,
    /// Started; its effect may be under way.
    Running,
    /// Waiting for something outside bowline (a judgment, an execution window).
    Waiting,
    /// Done.
    Succeeded,
    /// Done, unsuccessfully.
    Failed,
    /// A manual judgment that was rejected (by a user, or by its timeout when so configured).
    Rejected,
    /// Not run: its `when` was false, a dependency did not succeed, or it had nothing to do
    /// (a rollback with no earlier revision).
    Skipped,
    /// Stopped by a cancellation.
    Canceled,
}

macro_rules! text_enum {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            /// The stored and displayed name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }

            /// Parses a stored name.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($s => Some(Self::$v),)* _ => None }
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(ExecutionStatus {
    Queued => "QUEUED", Running => "RUNNING", Succeeded => "SUCCEEDED", Failed => "FAILED",
    Rejected => "REJECTED", Canceled => "CANCELED", Superseded => "SUPERSEDED",
});
text_enum!(StageStatus {
    NotStarted => "NOT_STARTED", Running => "RUNNING", Waiting => "WAITING",
    Succeeded => "SUCCEEDED", Failed => "FAILED", Rejected => "REJECTED", Skipped => "SKIPPED",
    Canceled => "CANCELED",
});

impl ExecutionStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [ExecutionStatus; 7] = [
        ExecutionStatus::Queued,
        ExecutionStatus::Running,
        ExecutionStatus::Succeeded,
        ExecutionStatus::Failed,
        ExecutionStatus::Rejected,
        ExecutionStatus::Canceled,
        ExecutionStatus::Superseded,
    ];

    /// True once nothing more will happen.
    pub fn is_final(self) -> bool {
        !matches!(self, ExecutionStatus::Queued | ExecutionStatus::Running)
    }
}

impl StageStatus {
    /// True once the stage will not change any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StageStatus::Succeeded
                | StageStatus::Failed
                | StageStatus::Rejected
                | StageStatus::Skipped
                | StageStatus::Canceled
        )
    }
}

/// An execution as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    /// Time-ordered unique id (ULID).
    pub id: String,
    /// Application.
    pub app: String,
    /// Environments the execution covers (its lock scope).
    pub environments: Vec<String>,
    /// Config-repository revision being delivered.
    pub revision: String,
    /// Pipeline template name.
    pub pipeline: String,
    /// Current status.
    pub status: ExecutionStatus,
    /// What started it (user, push, …) and the execution context (parameters, app).
    pub trigger: Value,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A user asked to cancel it.
    pub cancel_requested: bool,
    /// The process running it (while running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The owner's last heartbeat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// When the ownership lapses without a new heartbeat; after that another process may
    /// resume the execution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owned_until: Option<DateTime<Utc>>,
}

impl Execution {
    /// Whether a running execution is free to be resumed by another process at `now`: it has
    /// no owner, or its owner's heartbeat has expired.
    pub fn is_orphaned(&self, now: DateTime<Utc>) -> bool {
        self.owner.is_none() || self.owned_until.is_none_or(|until| until <= now)
    }
}

/// A stage of an execution as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageState {
    /// Stage name (unique in the execution).
    pub name: String,
    /// Stage type (`deploy`, `wait`, …).
    pub stage_type: String,
    /// Environment it acts on, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Current status.
    pub status: StageStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// The stage definition and resolved inputs.
    pub inputs: Value,
    /// Results and checkpoints (what already happened, so a resumed stage skips it).
    pub outputs: Value,
    /// When it started work (first attempt; not while it waited for an execution window).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a final status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StageState {
    /// The stage's type, or `None` for a type this version of bowline does not know.
    pub fn kind(&self) -> Option<crate::config::StageType> {
        crate::config::StageType::parse(&self.stage_type)
    }
}

/// A stage as created with its execution.
#[derive(Debug, Clone)]
pub struct NewStage {
    /// Stage name.
    pub name: String,
    /// Stage type.
    pub stage_type: String,
    /// Environment it acts on.
    pub environment: Option<String>,
    /// The stage definition.
    pub inputs: Value,
}

/// An execution to create.
#[derive(Debug, Clone)]
pub struct NewExecution {
    /// Application.
    pub app: String,
    /// Environments covered.
    pub environments: Vec<String>,
    /// Revision delivered.
    pub revision: String,
    /// Pipeline template.
    pub pipeline: String,
    /// Trigger and context.
    pub trigger: Value,
    /// Its stages.
    pub stages: Vec<NewStage>,
}

/// A change to a stage, committed together with an event.
#[derive(Debug, Clone, Default)]
pub struct StageUpdate {
    /// New status.
    pub status: Option<StageStatus>,
    /// Replace the outputs.
    pub outputs: Option<Value>,
    /// Count one more attempt.
    pub new_attempt: bool,
    /// Set (or clear with `Some(None)`) the error.
    pub error: Option<Option<String>>,
    /// Event message logged in the same transaction.
    pub event: Option<String>,
    /// Apply only while this owner owns the execution (a fencing token): a process whose
    /// execution was taken over cannot change it any more ([`StoreError::NotOwner`]).
    pub owner: Option<String>,
    /// Apply only while this shard hold is the newest recorded ([`Store::record_fence`]): a
    /// replica that lost the app's shard cannot change it any more ([`StoreError::Fenced`]).
    pub fence: Option<Fence>,
}

/// A replica's hold on a shard of apps: the fencing token every stage transition of the
/// shard's executions carries. Generations only grow; the newest recorded one wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The shard.
    pub shard: u32,
    /// The holding replica.
    pub holder: String,
    /// The shard Lease's `leaseTransitions` when the replica took it.
    pub generation: i64,
}

/// A queued or running execution, as [`Store::active`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveExecution {
    /// Execution id.
    pub id: String,
    /// Its app.
    pub app: String,
}

/// A wake-up sent between replicas through the store (PostgreSQL `NOTIFY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// What it is about ([`WAKE_EXECUTIONS`], [`WAKE_RECONCILE`]).
    pub channel: String,
    /// Details (an app, a branch); never needed for correctness, only for speed.
    pub payload: String,
}

/// Channel of notices that an execution was queued or let go: shard owners look for work.
pub const WAKE_EXECUTIONS: &str = "bowline_executions";

/// Channel of notices that the tracked branch should be reconciled: the leader looks.
pub const WAKE_RECONCILE: &str = "bowline_reconcile";

/// One entry of an execution's event log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Position in the execution's log.
    pub seq: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Stage concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// What happened.
    pub message: String,
}

/// A manual judgment decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Go on.
    Approve,
    /// Stop: the stage is rejected, and so is the execution.
    Reject,
}

impl Decision {
    /// The decision as it reads in a sentence: "approved", "rejected" (as in "rejected by maria").
    pub fn past_tense(self) -> &'static str {
        match self {
            Decision::Approve => "approved",
            Decision::Reject => "rejected",
        }
    }
}

/// A recorded manual judgment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Judgment {
    /// The decision.
    pub decision: Decision,
    /// Who decided.
    pub user: String,
    /// The chosen input option, if the stage offers a choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Objects applied for an app in one environment and cluster at one revision.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedRevision {
    /// Application.
    pub app: String,
    /// Environment.
    pub environment: String,
    /// Cluster.
    pub cluster: String,
    /// Config-repository revision.
    pub revision: String,
    /// The rendered objects applied.
    pub objects: Vec<Value>,
    /// The execution that applied them.
    pub execution: String,
    /// When.
    pub applied_at: DateTime<Utc>,
}

/// Which executions to list.
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    /// Only this application.
    pub app: Option<String>,
    /// Only these statuses (all when empty).
    pub statuses: Vec<ExecutionStatus>,
    /// At most this many, newest first (all when `None`).
    pub limit: Option<usize>,
}

/// What an outbox entry makes GitHub show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxKind {
    /// A commit status: the subject is the commit, the name its context.
    Status,
    /// A sticky comment: the subject is the pull request number, the name its marker.
    Comment,
}

text_enum!(OutboxKind {
    Status => "status",
    Comment => "comment",
});

/// The key of one thing bowline shows on GitHub; a newer desired state of the same key
/// supersedes the older one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutboxKey {
    /// Status or comment.
    pub kind: OutboxKind,
    /// `owner/name` of the repository.
    pub repo: String,
    /// The commit (statuses) or the pull request number (comments).
    pub subject: String,
    /// The context (statuses) or the marker (comments).
    pub name: String,
}

/// Where an outbox entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxState {
    /// Not delivered yet.
    Pending,
    /// GitHub accepted this version.
    Delivered,
    /// GitHub refused this version for good (a 4xx other than a rate limit).
    Failed,
}

text_enum!(OutboxState {
    Pending => "pending",
    Delivered => "delivered",
    Failed => "failed",
});

/// The newest desired state of one key, as the outbox holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// Row id.
    pub id: i64,
    /// The key.
    pub key: OutboxKey,
    /// What to send (JSON the sender understands).
    pub payload: String,
    /// Bumped by every recording; a delivery only counts for the version it sent.
    pub version: i64,
    /// Where it stands.
    pub state: OutboxState,
    /// Failed attempts of this version (rate limits not counted).
    pub attempts: u32,
    /// Not sent before this time.
    pub next_attempt_at: DateTime<Utc>,
    /// The last error of this version.
    pub last_error: Option<String>,
    /// When this version was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// What became of an attempt to deliver an outbox entry.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboxOutcome {
    /// GitHub accepted it.
    Delivered,
    /// Try again at `at`; `failure` counts the attempt (a rate limit does not).
    Retry {
        /// When to try again.
        at: DateTime<Utc>,
        /// Why it did not go through.
        error: String,
        /// Whether this counts as a failed attempt.
        failure: bool,
    },
    /// GitHub refused this version for good.
    Failed {
        /// Why.
        error: String,
    },
}

/// Pending outbox entries, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// How many.
    pub pending: u64,
    /// When the oldest of them was recorded.
    pub oldest: Option<DateTime<Utc>>,
}

/// Durable state of executions. Every method is atomic.
pub trait Store: Send + Sync {
    /// Creates a queued execution with its stages; queued executions of the same app covering
    /// any of the same environments become superseded. Refused with
    /// [`StoreError::Duplicate`] while an execution of the same app and revision is queued or
    /// running.
    fn create_execution(&self, new: NewExecution) -> Result<Execution, StoreError>;
    /// Claims execution `id` for `owner`, whose heartbeat stays valid for `ttl`: a queued one
    /// starts unless another execution of the same app covering one of its environments is
    /// running; a running one is the caller's when it owns it already or when its owner's
    /// heartbeat has expired. Ownership and the first heartbeat are taken in the same
    /// transaction as the claim.
    fn claim(&self, id: &str, owner: &str, ttl: Duration) -> Result<Claim, StoreError> {
        self.claim_fenced(id, owner, ttl, None)
    }
    /// [`Store::claim`] by a replica holding `fence` on the execution's shard: refused with
    /// [`StoreError::Fenced`] when the fence is not the newest; with it, a running execution
    /// is taken over at once (its owner lost the shard, so it may not write any more).
    fn claim_fenced(
        &self,
        id: &str,
        owner: &str,
        ttl: Duration,
        fence: Option<&Fence>,
    ) -> Result<Claim, StoreError>;
    /// Records `fence` as its shard's hold when its generation is newer than the one
    /// recorded (or the same hold again); `false` when a newer hold is recorded.
    fn record_fence(&self, fence: &Fence) -> Result<bool, StoreError>;
    /// Sends a wake-up to every replica listening (no-op for a single-process store).
    fn notify(&self, _channel: &str, _payload: &str) -> Result<(), StoreError> {
        Ok(())
    }
    /// Wake-ups from other replicas, when the store carries them (`None`: it does not).
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Notice>> {
        None
    }
    /// Refreshes `owner`'s heartbeat on running execution `id` for another `ttl`. `false`
    /// when `owner` no longer owns it (taken over, or ended): the caller must stop working on
    /// it.
    fn heartbeat(&self, id: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Gives up `owner`'s ownership of `id` (a clean stop), so another process may resume it
    /// at once.
    fn release(&self, id: &str, owner: &str) -> Result<(), StoreError>;
    /// Starts (or takes over) execution `id` for a caller that keeps no heartbeat (tools and
    /// tests): anyone may take it over. Returns whether it started.
    fn try_start(&self, id: &str) -> Result<bool, StoreError> {
        let owner = format!("untracked-{}", ulid::Ulid::new());
        Ok(self.claim(id, &owner, Duration::ZERO)?.is_owned_by_caller())
    }
    /// One execution.
    fn execution(&self, id: &str) -> Result<Execution, StoreError>;
    /// Executions, newest first.
    fn executions(&self, filter: &ExecutionFilter) -> Result<Vec<Execution>, StoreError>;
    /// The queued and running executions, oldest first, without their snapshots: what a
    /// replica looks through for the work of its shards.
    fn active(&self) -> Result<Vec<ActiveExecution>, StoreError>;
    /// The stages of an execution, in creation order.
    fn stages(&self, id: &str) -> Result<Vec<StageState>, StoreError>;
    /// Changes a stage (and logs the event) in one transaction.
    fn update_stage(
        &self,
        id: &str,
        stage: &str,
        update: StageUpdate,
    ) -> Result<StageState, StoreError>;
    /// Sets the final status of an execution.
    fn finish_execution(
        &self,
        id: &str,
        status: ExecutionStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError>;
    /// [`Store::finish_execution`] by `owner`, only while it owns the execution and, with
    /// `fence`, while that hold on the shard is the newest.
    fn finish_owned(
        &self,
        id: &str,
        status: ExecutionStatus,
        error: Option<&str>,
        owner: &str,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError>;
    /// Asks for cancellation on behalf of `user`; the engine stops at the next stage boundary
    /// or wait.
    fn request_cancel(&self, id: &str, user: &str) -> Result<(), StoreError>;
    /// Appends to the event log.
    fn log(&self, id: &str, stage: Option<&str>, message: &str) -> Result<(), StoreError>;
    /// The event log of an execution, oldest first.
    fn events(&self, id: &str) -> Result<Vec<Event>, StoreError>;
    /// Records the judgment of a manual-judgment stage (the first one wins).
    fn judge(&self, id: &str, stage: &str, judgment: &Judgment) -> Result<(), StoreError>;
    /// The judgment recorded for a stage, if any.
    fn judgment(&self, id: &str, stage: &str) -> Result<Option<Judgment>, StoreError>;
    /// Records objects applied for an app, environment and cluster.
    fn save_applied(&self, applied: &AppliedRevision) -> Result<(), StoreError>;
    /// A small named value kept across restarts (e.g. the last reconciled commit).
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Sets a named value.
    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Records a webhook delivery id: `true` the first time, `false` for a replay. Ids are kept
    /// across restarts, for a bounded time and number (the SQLite store: 7 days, 100,000 ids).
    fn record_delivery(&self, id: &str) -> Result<bool, StoreError>;
    /// How many executions the store holds per status (statuses with none are left out).
    fn execution_counts(&self) -> Result<Vec<(ExecutionStatus, u64)>, StoreError>;
    /// The latest objects applied for an app, environment and cluster by any execution,
    /// whatever its outcome (what may still run there: the scope of a removal).
    fn last_applied(
        &self,
        app: &str,
        environment: &str,
        cluster: &str,
    ) -> Result<Option<AppliedRevision>, StoreError>;
    /// The latest objects applied for an app, environment and cluster by an execution that
    /// succeeded (the last good revision); with `before_execution`, only by executions created
    /// before that one (ids are time-ordered).
    fn last_good(
        &self,
        app: &str,
        environment: &str,
        cluster: &str,
        before_execution: Option<&str>,
    ) -> Result<Option<AppliedRevision>, StoreError>;
    /// Records the desired state `payload` of `key` as a new pending version, superseding any
    /// earlier one (an unsent older version is never sent). Returns the entry.
    fn record_outbox(&self, key: &OutboxKey, payload: &str) -> Result<OutboxEntry, StoreError>;
    /// Pending entries due at `now` (their next attempt has come), oldest due first; entries
    /// due at the same time in the order they were recorded.
    fn outbox_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<OutboxEntry>, StoreError>;
    /// When the next pending entry falls due, if any is pending.
    fn outbox_next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Settles an attempt at version `version` of entry `id`; returns `false` (and changes
    /// nothing) when a newer version was recorded meanwhile.
    fn settle_outbox(
        &self,
        id: i64,
        version: i64,
        outcome: &OutboxOutcome,
    ) -> Result<bool, StoreError>;
    /// How many entries are pending, and the oldest.
    fn outbox_stats(&self) -> Result<OutboxStats, StoreError>;
    /// The entry of `key`, if any was recorded.
    fn outbox_entry(&self, key: &OutboxKey) -> Result<Option<OutboxEntry>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in ExecutionStatus::ALL {
            assert_eq!(ExecutionStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).expect("json"),
                serde_json::json!(status.as_str())
            );
        }
        assert_eq!(ExecutionStatus::Rejected.as_str(), "REJECTED");
        assert!(ExecutionStatus::Rejected.is_final());
        assert_eq!(StageStatus::parse("REJECTED"), Some(StageStatus::Rejected));
        assert!(StageStatus::Rejected.is_final());
    }

    #[test]
    fn stage_kinds_read_from_their_stored_names() {
        for kind in crate::config::StageType::ALL {
            let stored = serde_json::to_value(kind).expect("json");
            assert_eq!(stored, serde_json::json!(kind.as_str()));
            let state = StageState {
                name: "s".into(),
                stage_type: kind.as_str().into(),
                environment: None,
                status: StageStatus::NotStarted,
                attempts: 0,
                inputs: serde_json::json!({}),
                outputs: serde_json::json!({}),
                started_at: None,
                finished_at: None,
                error: None,
            };
            assert_eq!(state.kind(), Some(kind));
        }
        assert_eq!(crate::config::StageType::parse("deployment"), None);
    }

    #[test]
    fn decisions_read_as_words() {
        assert_eq!(Decision::Approve.past_tense(), "approved");
        assert_eq!(Decision::Reject.past_tense(), "rejected");
    }
}

//! The status outbox: every commit status and sticky comment bowline means GitHub to show is
//! first recorded in the store as the desired state of its key — (repo, commit, context) or
//! (repo, pull request, marker) — and a sender task delivers the newest pending version of
//! each key, across restarts and outages of any length.
//!
//! Failures are retried per entry with exponential backoff (capped); a rate limit pauses every
//! delivery until GitHub's reset without counting as a failure; any other `4xx` ends that
//! version (its error is kept). A version is marked delivered only if no newer one was
//! recorded while it was on its way, so the newest desired state is delivered at least once.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::Instrument;

use super::{Daemon, lock};
use crate::forge::client::Failure;
use crate::forge::{CommitState, CommitStatus, ForgeError, GitHub, RepoRef};
use crate::store::{OutboxEntry, OutboxKey, OutboxKind, OutboxOutcome, Store, StoreError};

/// How the outbox retries deliveries.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// The first delay after a failed delivery (default 1 s); it doubles per failure.
    pub min_backoff: Duration,
    /// The longest delay between attempts of one entry (default 60 s).
    pub max_backoff: Duration,
    /// The sender looks at the store at least this often (default 30 s), besides being woken
    /// whenever something is recorded.
    pub poll: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            poll: Duration::from_secs(30),
        }
    }
}

/// Entries read from the store per round.
const BATCH: usize = 50;

/// What an outbox entry asks GitHub to show (its key says where).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum Desired {
    /// A commit status.
    #[serde(rename_all = "camelCase")]
    Status {
        state: CommitState,
        description: String,
        target_url: Option<String>,
    },
    /// A sticky comment's body.
    Comment { body: String },
}

/// Records desired states and wakes the sender; cheap to clone into execution tasks.
#[derive(Clone)]
pub(crate) struct Outbox {
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
    /// Without a GitHub client nothing is recorded: nothing would ever deliver it.
    enabled: bool,
}

impl Outbox {
    pub(super) fn new(store: Arc<dyn Store>, enabled: bool) -> Outbox {
        Outbox {
            store,
            wake: Arc::new(Notify::new()),
            enabled,
        }
    }

    /// Wakes the sender (it looks at the store at once).
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }

    /// The notification that wakes the sender.
    pub(super) fn wake_handle(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Records `status` as what commit `sha` of `repo` should show under its context.
    pub(crate) fn status(
        &self,
        repo: &RepoRef,
        sha: &str,
        status: &CommitStatus,
    ) -> Result<(), StoreError> {
        let key = OutboxKey {
            kind: OutboxKind::Status,
            repo: repo.to_string(),
            subject: sha.to_string(),
            name: status.context.clone(),
        };
        self.record(
            key,
            &Desired::Status {
                state: status.state,
                description: status.description.clone(),
                target_url: status.target_url.clone(),
            },
        )
    }

    /// Records `body` as the sticky comment with `marker` on pull request `number`.
    pub(crate) fn comment(
        &self,
        repo: &RepoRef,
        number: u64,
        marker: &str,
        body: &str,
    ) -> Result<(), StoreError> {
        let key = OutboxKey {
            kind: OutboxKind::Comment,
            repo: repo.to_string(),
            subject: number.to_string(),
            name: marker.to_string(),
        };
        self.record(
            key,
            &Desired::Comment {
                body: body.to_string(),
            },
        )
    }

    /// Like [`Outbox::status`], logging a failure to record instead of returning it.
    pub(crate) fn status_or_log(&self, repo: &RepoRef, sha: &str, status: &CommitStatus) {
        if let Err(e) = self.status(repo, sha, status) {
            tracing::warn!(error = %e, context = %status.context, "could not record the status");
        }
    }

    fn record(&self, key: OutboxKey, desired: &Desired) -> Result<(), StoreError> {
        if !self.enabled {
            return Ok(());
        }
        let payload = serde_json::to_string(desired).map_err(|e| StoreError::Corrupt {
            what: "outbox payload".into(),
            message: e.to_string(),
        })?;
        // A status already recorded as it is (an execution resumed by another process says
        // "started" again) is not sent twice.
        if key.kind == OutboxKind::Status
            && self
                .store
                .outbox_entry(&key)?
                .is_some_and(|e| e.payload == payload)
        {
            return Ok(());
        }
        let entry = self.store.record_outbox(&key, &payload)?;
        tracing::debug!(kind = %key.kind, repo = %key.repo, subject = %key.subject,
            name = %key.name, version = entry.version, "recorded for GitHub");
        self.wake.notify_one();
        Ok(())
    }
}

/// Delivers outbox entries until the daemon is dropped: at once when something is recorded,
/// else when the next entry falls due (or every [`OutboxConfig::poll`]).
pub(super) async fn run(daemon: Weak<Daemon>, wake: Arc<Notify>) {
    loop {
        let wait = {
            let Some(daemon) = daemon.upgrade() else {
                return;
            };
            daemon.deliver_due().await
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
        }
    }
}

/// When rate limited, nothing is sent before this instant.
pub(super) type Pause = Mutex<Option<Instant>>;

impl Daemon {
    /// Delivers every due entry; returns how long to sleep before looking again.
    async fn deliver_due(&self) -> Duration {
        let poll = self.config.outbox.poll;
        let Some(github) = &self.github else {
            return poll;
        };
        // With several replicas the leader sends, alone, so nothing is sent twice at once.
        if !self.leads() {
            return poll;
        }
        if let Some(left) = self.paused_for() {
            return left;
        }
        // Each version is tried once per round, even if the store cannot settle it.
        let mut tried = std::collections::HashSet::new();
        loop {
            let due = match self.store.outbox_due(Utc::now(), BATCH) {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the outbox");
                    return poll;
                }
            };
            let due: Vec<OutboxEntry> = due
                .into_iter()
                .filter(|e| tried.insert((e.id, e.version)))
                .collect();
            if due.is_empty() {
                break;
            }
            for entry in due {
                self.deliver(github, &entry).await;
                if let Some(left) = self.paused_for() {
                    self.refresh_outbox_metrics();
                    return left;
                }
            }
        }
        self.refresh_outbox_metrics();
        match self.store.outbox_next_due() {
            Ok(Some(next)) => (next - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .clamp(Duration::from_millis(10), poll),
            Ok(None) => poll,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the outbox");
                poll
            }
        }
    }

    /// Time left of a rate-limit pause, if one is on.
    fn paused_for(&self) -> Option<Duration> {
        let mut pause = lock(&self.outbox_pause);
        let left = pause.and_then(|until| until.checked_duration_since(Instant::now()));
        if left.is_none() {
            *pause = None;
        }
        left
    }

    /// Sends one entry and settles it in the store.
    async fn deliver(&self, github: &GitHub, entry: &OutboxEntry) {
        let key = &entry.key;
        let span = tracing::info_span!("outbox.deliver", kind = %key.kind, repo = %key.repo,
            subject = %key.subject, name = %key.name, version = entry.version, attempts = entry.attempts);
        let outcome = async {
            let result = send(github, entry).await;
            match result {
                Ok(()) => OutboxOutcome::Delivered,
                Err(Refusal::Invalid(error)) => {
                    tracing::warn!(%error, "outbox entry cannot be sent; dropping this version");
                    OutboxOutcome::Failed { error }
                }
                Err(Refusal::GitHub(e)) => self.outcome_of(entry, &e),
            }
        }
        .instrument(span.clone())
        .await;
        let _entered = span.enter();
        match self.store.settle_outbox(entry.id, entry.version, &outcome) {
            Ok(true) => {
                if outcome == OutboxOutcome::Delivered {
                    tracing::debug!(
                        waited_ms = (Utc::now() - entry.recorded_at).num_milliseconds(),
                        "delivered to GitHub"
                    );
                }
            }
            // A newer version came meanwhile; it stays pending and goes next.
            Ok(false) => tracing::debug!("superseded while being sent"),
            Err(e) => tracing::warn!(error = %e, "could not settle the outbox entry"),
        }
    }

    /// What to do after GitHub refused or failed an entry (the client counted the failure).
    fn outcome_of(&self, entry: &OutboxEntry, e: &ForgeError) -> OutboxOutcome {
        let failure = e.failure();
        let error = e.to_string();
        match failure {
            Failure::RateLimited { retry_after } => {
                tracing::warn!(%error, ?retry_after, "rate limited by GitHub; waiting for the reset");
                *lock(&self.outbox_pause) = Some(Instant::now() + retry_after);
                OutboxOutcome::Retry {
                    at: after(retry_after),
                    error,
                    failure: false,
                }
            }
            Failure::ServerError | Failure::Network => {
                let delay = backoff(&self.config.outbox, entry.attempts);
                tracing::warn!(%error, kind = failure.label(), ?delay, "GitHub delivery failed; retrying later");
                OutboxOutcome::Retry {
                    at: after(delay),
                    error,
                    failure: true,
                }
            }
            Failure::ClientError => {
                tracing::warn!(%error, "GitHub refused the delivery; not retrying this version");
                OutboxOutcome::Failed { error }
            }
        }
    }

    /// Sets the outbox gauges from the store.
    pub(super) fn refresh_outbox_metrics(&self) {
        match self.store.outbox_stats() {
            Ok(stats) => {
                self.metrics
                    .outbox_depth
                    .set(i64::try_from(stats.pending).unwrap_or(i64::MAX));
                let age = stats.oldest.map_or(0.0, |t| {
                    (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
                });
                self.metrics.outbox_oldest_seconds.set(age);
            }
            Err(e) => tracing::warn!(error = %e, "could not read the outbox for /metrics"),
        }
    }
}

/// Why an entry was not delivered.
enum Refusal {
    /// The entry itself is unusable (a defect or a corrupt row): never retried.
    Invalid(String),
    /// GitHub refused or failed.
    GitHub(ForgeError),
}

async fn send(github: &GitHub, entry: &OutboxEntry) -> Result<(), Refusal> {
    let key = &entry.key;
    let desired: Desired = serde_json::from_str(&entry.payload)
        .map_err(|e| Refusal::Invalid(format!("corrupt outbox payload: {e}")))?;
    let repo = RepoRef::parse(&key.repo)
        .ok_or_else(|| Refusal::Invalid(format!("not a repository: {:?}", key.repo)))?;
    match (key.kind, desired) {
        (
            OutboxKind::Status,
            Desired::Status {
                state,
                description,
                target_url,
            },
        ) => {
            let status = CommitStatus {
                context: key.name.clone(),
                state,
                description,
                target_url,
            };
            github
                .set_status(&repo, &key.subject, &status)
                .await
                .map_err(Refusal::GitHub)
        }
        (OutboxKind::Comment, Desired::Comment { body }) => {
            let number: u64 = key
                .subject
                .parse()
                .map_err(|_| Refusal::Invalid(format!("not a number: {:?}", key.subject)))?;
            github
                .upsert_sticky_comment(&repo, number, &key.name, &body)
                .await
                .map(|_| ())
                .map_err(Refusal::GitHub)
        }
        (kind, _) => Err(Refusal::Invalid(format!(
            "a {kind} entry holds another kind of payload"
        ))),
    }
}

/// The delay after `attempts` failures: `min_backoff` doubled per failure, capped at
/// `max_backoff`, with up to a tenth of jitter.
fn backoff(config: &OutboxConfig, attempts: u32) -> Duration {
    let base = config
        .min_backoff
        .saturating_mul(2u32.saturating_pow(attempts.min(20)))
        .min(config.max_backoff);
    base + base.mul_f64(super::rand_fraction() / 10.0)
}

/// The time `d` from now (a day from now if that does not fit).
fn after(d: Duration) -> chrono::DateTime<Utc> {
    let now = Utc::now();
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(now + chrono::TimeDelta::days(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = OutboxConfig {
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            poll: Duration::from_secs(30),
        };
        // Up to a tenth of jitter on top of the doubled delay.
        let within = |n, base: u64| {
            let d = backoff(&config, n);
            assert!(
                d >= Duration::from_secs(base) && d <= Duration::from_secs(base).mul_f64(1.1),
                "{n}: {d:?}"
            );
        };
        within(0, 1);
        within(3, 8);
        within(6, 60);
        within(u32::MAX, 60);
    }

    #[test]
    fn payloads_round_trip() {
        let desired = Desired::Status {
            state: CommitState::Success,
            description: "deployed".into(),
            target_url: None,
        };
        let text = serde_json::to_string(&desired).expect("json");
        assert_eq!(
            text,
            r#"{"type":"status","state":"success","description":"deployed","targetUrl":null}"#
        );
        assert_eq!(
            serde_json::from_str::<Desired>(&text).expect("parse"),
            desired
        );
    }
}

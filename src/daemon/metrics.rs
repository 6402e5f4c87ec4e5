//! The daemon's Prometheus metrics, served as text on `/metrics`.

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use super::Daemon;
use crate::store::ExecutionStatus;

/// Every metric the daemon exposes.
pub struct Metrics {
    registry: Registry,
    /// Webhook deliveries by result (`accepted`, `bad_signature`, `duplicate`,
    /// `foreign_repository`, …).
    pub webhooks: IntCounterVec,
    /// Fetches of the config repository by result.
    pub fetches: IntCounterVec,
    /// Fetch durations.
    pub fetch_seconds: Histogram,
    /// Reconciles of the tracked branch by result.
    pub reconciles: IntCounterVec,
    /// Reconcile durations (fetch included).
    pub reconcile_seconds: Histogram,
    /// Failed reconciles in a row (0 when the last one worked).
    pub source_failures: IntGauge,
    /// Pull-request plans by result.
    pub plans: IntCounterVec,
    /// Apps whose checks (validation, render, policies) were computed or kept from before.
    pub checked_apps: IntCounterVec,
    /// Refused authentications to the JSON API by reason (`missing`, `unknown`, `throttled`).
    pub api_auth_failures: IntCounterVec,
    /// Executions in the store by status (set at scrape time).
    pub executions: IntGaugeVec,
    /// The last canary score per app and environment.
    pub canary_score: GaugeVec,
    /// Objects out of sync per app, environment and cluster at the last drift check.
    pub drift_objects: IntGaugeVec,
    /// When the last drift check ended (unix seconds).
    pub drift_checked: Gauge,
    /// Outbox entries not yet delivered to GitHub.
    pub outbox_depth: IntGauge,
    /// Age of the oldest undelivered outbox entry (0 when none).
    pub outbox_oldest_seconds: Gauge,
    /// Failed GitHub requests (each attempt) by kind (`server_error`, `rate_limited`,
    /// `client_error`, `network`).
    pub github_failures: IntCounterVec,
    /// 1 while this replica holds the leader Lease (always 1 for a single process).
    pub leader: IntGauge,
    /// Shards of apps this replica holds (0 for a single process, which runs every app).
    pub shards: IntGauge,
    /// Time of each committed stage transition (claim, stage update, end) in the store.
    pub transition_seconds: Histogram,
}

const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets of stage transitions: a local SQLite commit takes well under a millisecond, a
/// PostgreSQL one a few.
const TRANSITION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0,
];

impl Metrics {
    pub(super) fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let histogram = |name: &str, help: &str| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()))?;
            registry.register(Box::new(h.clone()))?;
            Ok::<_, prometheus::Error>(h)
        };
        let webhooks = counter(
            "bowline_webhook_deliveries_total",
            "GitHub webhook deliveries by result.",
            &["result"],
        )?;
        let fetches = counter(
            "bowline_git_fetches_total",
            "Fetches of the config repository by result.",
            &["result"],
        )?;
        let reconciles = counter(
            "bowline_reconciles_total",
            "Reconciles of the tracked branch by result.",
            &["result"],
        )?;
        let plans = counter(
            "bowline_pull_request_plans_total",
            "Pull-request plans by result.",
            &["result"],
        )?;
        let checked_apps = counter(
            "bowline_checked_apps_total",
            "Apps checked by reconciles and plans: computed anew, or kept because their inputs did not change.",
            &["outcome"],
        )?;
        let api_auth_failures = counter(
            "bowline_api_auth_failures_total",
            "Refused authentications to the JSON API by reason (missing, unknown, throttled).",
            &["reason"],
        )?;
        let github_failures = counter(
            "bowline_github_failures_total",
            "Failed GitHub requests, each attempt, by kind (server_error, rate_limited, client_error, network).",
            &["kind"],
        )?;
        let fetch_seconds = histogram(
            "bowline_git_fetch_duration_seconds",
            "Duration of fetches of the config repository.",
        )?;
        let reconcile_seconds = histogram(
            "bowline_reconcile_duration_seconds",
            "Duration of reconciles of the tracked branch, fetch included.",
        )?;
        let source_failures = IntGauge::new(
            "bowline_source_failures",
            "Failed reconciles of the tracked branch in a row.",
        )?;
        registry.register(Box::new(source_failures.clone()))?;
        let executions = IntGaugeVec::new(
            Opts::new("bowline_executions", "Executions in the store by status."),
            &["status"],
        )?;
        registry.register(Box::new(executions.clone()))?;
        let canary_score = GaugeVec::new(
            Opts::new(
                "bowline_canary_score",
                "Score of the last canary analysis per app and environment.",
            ),
            &["app", "environment"],
        )?;
        registry.register(Box::new(canary_score.clone()))?;
        let drift_objects = IntGaugeVec::new(
            Opts::new(
                "bowline_drift_objects",
                "Objects whose live state differs from the deployed revision, per app, environment and cluster.",
            ),
            &["app", "environment", "cluster"],
        )?;
        registry.register(Box::new(drift_objects.clone()))?;
        let drift_checked = Gauge::new(
            "bowline_drift_last_check_timestamp_seconds",
            "When the last drift check ended.",
        )?;
        registry.register(Box::new(drift_checked.clone()))?;
        let outbox_depth = IntGauge::new(
            "bowline_outbox_depth",
            "Statuses and comments recorded for GitHub and not delivered yet.",
        )?;
        registry.register(Box::new(outbox_depth.clone()))?;
        let outbox_oldest_seconds = Gauge::new(
            "bowline_outbox_oldest_seconds",
            "Age of the oldest status or comment not delivered to GitHub yet (0 when none).",
        )?;
        registry.register(Box::new(outbox_oldest_seconds.clone()))?;
        let leader = IntGauge::new(
            "bowline_leader",
            "1 while this replica follows the branch and sends the outbox.",
        )?;
        registry.register(Box::new(leader.clone()))?;
        let shards = IntGauge::new(
            "bowline_shards_held",
            "Shards of apps whose executions this replica runs.",
        )?;
        registry.register(Box::new(shards.clone()))?;
        let transition_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "bowline_stage_transition_duration_seconds",
                "Time to commit a stage transition (claim, stage update, end) to the state store.",
            )
            .buckets(TRANSITION_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(transition_seconds.clone()))?;
        Ok(Metrics {
            leader,
            shards,
            transition_seconds,
            registry,
            webhooks,
            fetches,
            fetch_seconds,
            reconciles,
            reconcile_seconds,
            source_failures,
            plans,
            checked_apps,
            api_auth_failures,
            executions,
            canary_score,
            drift_objects,
            drift_checked,
            outbox_depth,
            outbox_oldest_seconds,
            github_failures,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding only fails on invalid metric families, which registration rejected.
        let _ = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}

impl Daemon {
    /// Sets the execution gauges from the store (before each scrape): one counting query, not
    /// a read of every execution.
    pub fn refresh_metrics(&self) {
        self.refresh_outbox_metrics();
        let counts = match self.store.execution_counts() {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!(error = %e, "could not count executions for /metrics");
                return;
            }
        };
        for status in ExecutionStatus::ALL {
            let n = counts
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| *n);
            self.metrics
                .executions
                .with_label_values(&[status.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

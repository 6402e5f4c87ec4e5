//! 500 executions of a 6-stage pipeline with no-op waits through the engine and the SQLite
//! store (WAL, on the machine's disk, with each durability setting): executions per second, and the
//! latency of stage transitions (each one a committed `update_stage` transaction) at p50, p99
//! and max.
//!
//! The DAG is deploy-shaped without clusters: `a` → (`b1`, `b2` in parallel) → `c` → `d` → `e`,
//! all `wait 0s`. Executions run 8 at a time, each for its own app, so the engine, the DAG
//! scheduling and the store are all under load.
//!
//! Run: `cargo bench --bench pipeline` (prints a summary; not a criterion bench, as the figure
//! of interest is a latency distribution over one long run).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bowline::cluster::ConnectOptions;
use bowline::pipeline::{Engine, Services};
use bowline::store::{
    AppliedRevision, Claim, Durability, Event, Execution, ExecutionFilter, ExecutionStatus, Fence,
    Judgment, NewExecution, NewStage, OutboxEntry, OutboxKey, OutboxOutcome, OutboxStats,
    SqliteStore, StageState, StageUpdate, Store, StoreError,
};
use serde_json::json;

const EXECUTIONS: usize = 500;
const IN_FLIGHT: usize = 8;

/// The SQLite store, timing every stage transition.
struct Timed {
    inner: SqliteStore,
    transitions: Mutex<Vec<Duration>>,
}

impl Store for Timed {
    fn create_execution(&self, new: NewExecution) -> Result<Execution, StoreError> {
        self.inner.create_execution(new)
    }
    fn claim_fenced(
        &self,
        id: &str,
        owner: &str,
        ttl: Duration,
        fence: Option<&Fence>,
    ) -> Result<Claim, StoreError> {
        self.inner.claim_fenced(id, owner, ttl, fence)
    }
    fn record_fence(&self, fence: &Fence) -> Result<bool, StoreError> {
        self.inner.record_fence(fence)
    }
    fn finish_owned(
        &self,
        id: &str,
        status: ExecutionStatus,
        error: Option<&str>,
        owner: &str,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        self.inner.finish_owned(id, status, error, owner, fence)
    }
    fn heartbeat(&self, id: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.inner.heartbeat(id, owner, ttl)
    }
    fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        self.inner.release(id, owner)
    }
    fn execution(&self, id: &str) -> Result<Execution, StoreError> {
        self.inner.execution(id)
    }
    fn executions(&self, filter: &ExecutionFilter) -> Result<Vec<Execution>, StoreError> {
        self.inner.executions(filter)
    }
    fn active(&self) -> Result<Vec<bowline::store::ActiveExecution>, StoreError> {
        self.inner.active()
    }
    fn stages(&self, id: &str) -> Result<Vec<StageState>, StoreError> {
        self.inner.stages(id)
    }
    fn update_stage(
        &self,
        id: &str,
        stage: &str,
        update: StageUpdate,
    ) -> Result<StageState, StoreError> {
        let started = Instant::now();
        let result = self.inner.update_stage(id, stage, update);
        if let Ok(mut t) = self.transitions.lock() {
            t.push(started.elapsed());
        }
        result
    }
    fn finish_execution(
        &self,
        id: &str,
        status: ExecutionStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.inner.finish_execution(id, status, error)
    }
    fn request_cancel(&self, id: &str, user: &str) -> Result<(), StoreError> {
        self.inner.request_cancel(id, user)
    }
    fn log(&self, id: &str, stage: Option<&str>, message: &str) -> Result<(), StoreError> {
        self.inner.log(id, stage, message)
    }
    fn events(&self, id: &str) -> Result<Vec<Event>, StoreError> {
        self.inner.events(id)
    }
    fn judge(&self, id: &str, stage: &str, judgment: &Judgment) -> Result<(), StoreError> {
        self.inner.judge(id, stage, judgment)
    }
    fn judgment(&self, id: &str, stage: &str) -> Result<Option<Judgment>, StoreError> {
        self.inner.judgment(id, stage)
    }
    fn save_applied(&self, applied: &AppliedRevision) -> Result<(), StoreError> {
        self.inner.save_applied(applied)
    }
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.meta(key)
    }
    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.inner.set_meta(key, value)
    }
    fn record_delivery(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.record_delivery(id)
    }
    fn execution_counts(&self) -> Result<Vec<(ExecutionStatus, u64)>, StoreError> {
        self.inner.execution_counts()
    }
    fn last_good(
        &self,
        app: &str,
        environment: &str,
        cluster: &str,
        except: Option<&str>,
    ) -> Result<Option<AppliedRevision>, StoreError> {
        self.inner.last_good(app, environment, cluster, except)
    }
    fn last_applied(
        &self,
        app: &str,
        environment: &str,
        cluster: &str,
    ) -> Result<Option<AppliedRevision>, StoreError> {
        self.inner.last_applied(app, environment, cluster)
    }
    fn record_outbox(&self, key: &OutboxKey, payload: &str) -> Result<OutboxEntry, StoreError> {
        self.inner.record_outbox(key, payload)
    }
    fn outbox_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.outbox_due(now, limit)
    }
    fn outbox_next_due(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        self.inner.outbox_next_due()
    }
    fn settle_outbox(
        &self,
        id: i64,
        version: i64,
        outcome: &OutboxOutcome,
    ) -> Result<bool, StoreError> {
        self.inner.settle_outbox(id, version, outcome)
    }
    fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.inner.outbox_stats()
    }
    fn outbox_entry(&self, key: &OutboxKey) -> Result<Option<OutboxEntry>, StoreError> {
        self.inner.outbox_entry(key)
    }
}

fn stage(name: &str, deps: &[&str]) -> NewStage {
    NewStage {
        name: name.into(),
        stage_type: "wait".into(),
        environment: Some("staging".into()),
        inputs: json!({"name": name, "type": "wait", "environment": "staging", "dependsOn": deps, "duration": "0s"}),
    }
}

fn execution(i: usize) -> NewExecution {
    NewExecution {
        app: format!("app-{i}"),
        environments: vec!["staging".into()],
        revision: format!("rev{i}"),
        pipeline: "bench".into(),
        trigger: json!({"user": "bench", "app": {"name": format!("app-{i}")}, "parameters": {},
                        "environments": {}}),
        stages: vec![
            stage("a", &[]),
            stage("b1", &["a"]),
            stage("b2", &["a"]),
            stage("c", &["b1", "b2"]),
            stage("d", &["c"]),
            stage("e", &["d"]),
        ],
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn main() {
    for durability in [Durability::Normal, Durability::Full] {
        measure(durability);
    }
}

fn measure(durability: Durability) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(Timed {
        inner: SqliteStore::open_with(&dir.path().join("bench.db"), durability).expect("store"),
        transitions: Mutex::new(Vec::new()),
    });
    let mut services = Services::new(ConnectOptions::default());
    services.poll = Duration::from_millis(5);
    let engine = Engine::new(store.clone(), services);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    runtime.block_on(async {
        let mut next = 0;
        let mut running = tokio::task::JoinSet::new();
        while next < EXECUTIONS || !running.is_empty() {
            while next < EXECUTIONS && running.len() < IN_FLIGHT {
                let created = engine.create(execution(next)).expect("create");
                let engine = engine.clone();
                running.spawn(async move { engine.run(&created.id).await });
                next += 1;
            }
            if let Some(done) = running.join_next().await {
                let status = done.expect("task").expect("run");
                assert_eq!(status, ExecutionStatus::Succeeded);
            }
        }
    });
    let elapsed = started.elapsed();
    let mut transitions = store.transitions.lock().expect("lock").clone();
    transitions.sort();
    println!("durability {durability:?}:");
    println!(
        "  {EXECUTIONS} executions × 6 stages in {:.2} s: {:.0} executions/s, {:.0} stages/s",
        elapsed.as_secs_f64(),
        EXECUTIONS as f64 / elapsed.as_secs_f64(),
        (EXECUTIONS * 6) as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  stage transitions: {} committed; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        transitions.len(),
        percentile(&transitions, 0.50).as_secs_f64() * 1e3,
        percentile(&transitions, 0.99).as_secs_f64() * 1e3,
        transitions
            .last()
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3
    );
}

//! Latency of stage transitions in a state store, as the engine makes them: each transition is
//! one `update_stage` (status, outputs, an event, the owner check) committed before it returns.
//!
//! `store_latency <state> [transitions]`: `<state>` is a SQLite file or a `postgres://` URL.
//! Prints p50, p99 and the maximum in milliseconds. Run by `scripts/bench-store.sh`.

use std::time::{Duration, Instant};

use bowline::store::{
    ExecutionStatus, NewExecution, NewStage, PostgresStore, SqliteStore, StageStatus, StageUpdate,
    Store,
};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let state = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: store_latency <state> [transitions]"))?;
    let transitions: usize = args.next().map_or(Ok(2000), |n| n.parse())?;
    let store: Box<dyn Store> = if state.starts_with("postgres://") {
        Box::new(PostgresStore::connect(&state, None)?)
    } else {
        Box::new(SqliteStore::open(std::path::Path::new(&state))?)
    };
    let stages_per_execution = 5;
    let mut times = Vec::with_capacity(transitions);
    let mut n = 0;
    while times.len() < transitions {
        n += 1;
        let execution = store.create_execution(NewExecution {
            app: format!("app-{}", n % 50),
            environments: vec!["staging".into()],
            revision: format!("rev-{n}"),
            pipeline: "bench".into(),
            trigger: json!({"user": "bench"}),
            stages: (0..stages_per_execution)
                .map(|i| NewStage {
                    name: format!("stage-{i}"),
                    stage_type: "wait".into(),
                    environment: Some("staging".into()),
                    inputs: json!({"duration": "1s"}),
                })
                .collect(),
        })?;
        store.claim(&execution.id, "bench", Duration::from_secs(60))?;
        for i in 0..stages_per_execution {
            for status in [StageStatus::Running, StageStatus::Succeeded] {
                let update = StageUpdate {
                    status: Some(status),
                    outputs: Some(json!({"step": i})),
                    event: Some(format!("stage-{i} {status:?}")),
                    owner: Some("bench".into()),
                    ..StageUpdate::default()
                };
                let started = Instant::now();
                store.update_stage(&execution.id, &format!("stage-{i}"), update)?;
                times.push(started.elapsed());
            }
        }
        store.finish_execution(&execution.id, ExecutionStatus::Succeeded, None)?;
    }
    times.sort();
    let at = |q: f64| {
        let i = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1;
        times[i].as_secs_f64() * 1000.0
    };
    println!(
        "{} transitions: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        times.len(),
        at(0.50),
        at(0.99),
        at(1.0)
    );
    Ok(())
}

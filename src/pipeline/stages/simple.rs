//! `wait` and `checkPreconditions`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::StageRun;
use crate::config::{CheckPreconditionsStage, WaitStage};
use crate::pipeline::egress;
use crate::pipeline::expr::{self, HttpCheck};
use crate::pipeline::{StageError, StageResult};

/// Waits for the duration, counted from the stage's first start, so a restart does not make
/// the wait longer.
pub(super) async fn wait(run: &mut StageRun, stage: WaitStage) -> StageResult {
    let until: DateTime<Utc> = match run
        .state
        .outputs
        .get("until")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
    {
        Some(until) => until,
        None => {
            let until = Utc::now()
                + chrono::Duration::from_std(stage.duration.0)
                    .map_err(|e| StageError::terminal(format!("duration: {e}")))?;
            run.checkpoint(json!({"until": until}))?;
            until
        }
    };
    let left = (until - Utc::now()).to_std().unwrap_or_default();
    run.note(&format!(
        "waiting {}",
        humantime::format_duration(Duration::from_secs(left.as_secs()))
    ));
    tokio::time::sleep(left).await;
    Ok(run.state.outputs.clone())
}

/// Evaluates every precondition; fails with the messages of those that do not hold.
pub(super) async fn preconditions(
    run: &mut StageRun,
    stage: CheckPreconditionsStage,
) -> StageResult {
    let states = run.engine.store.stages(&run.execution)?;
    let ctx = run
        .snapshot
        .expr_context(&run.execution, &run.revision, &run.stage, &states);
    let http = run.engine.services.http.clone();
    let allow_link_local = run.engine.services.allow_link_local_egress;
    let handle = tokio::runtime::Handle::current();
    let check: HttpCheck = Arc::new(move |url: &str| {
        if let Err(e) = egress::check_url(url, allow_link_local) {
            tracing::warn!(error = %e, "http_ok refused");
            return false;
        }
        let http = http.clone();
        let url = url.to_string();
        handle.block_on(async move {
            matches!(
                http.get(&url).timeout(Duration::from_secs(10)).send().await,
                Ok(r) if r.status().is_success()
            )
        })
    });
    let preconditions = stage.preconditions.clone();
    let results = tokio::task::spawn_blocking(move || {
        preconditions
            .iter()
            .map(|p| {
                let outcome = expr::eval_bool(&p.expression, &ctx, Some(check.clone()));
                (p.clone(), outcome)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| StageError::terminal(format!("evaluating the preconditions: {e}")))?;
    let mut failed = Vec::new();
    // An expression that cannot be evaluated fails the same way every time; one that is
    // false may hold later (what it checks can change), so that is worth a retry.
    let mut invalid = false;
    let mut report = Vec::new();
    for (p, outcome) in results {
        let ok = match outcome {
            Ok(true) => true,
            Ok(false) => {
                failed.push(
                    p.message
                        .clone()
                        .unwrap_or_else(|| format!("`{}` is false", p.expression)),
                );
                false
            }
            Err(e) => {
                failed.push(e.to_string());
                invalid = true;
                false
            }
        };
        report.push(json!({"expression": p.expression, "ok": ok}));
    }
    if failed.is_empty() {
        Ok(json!({"preconditions": report}))
    } else {
        let message = format!("precondition failed: {}", failed.join("; "));
        Err(if invalid {
            StageError::terminal(message)
        } else {
            StageError::transient(message)
        })
    }
}

//! `manualJudgment`: waits for an approval or rejection recorded in the store (by the CLI,
//! the API or a ChatOps command), or for its timeout, which resolves to the configured
//! outcome. A rejection ends the stage (and its execution) `REJECTED`, not failed.

use chrono::Utc;
use serde_json::json;

use super::StageRun;
use crate::config::{ManualJudgmentStage, TimeoutOutcome};
use crate::pipeline::{StageError, StageResult};
use crate::store::{Decision, StageStatus, StageUpdate};

pub(super) async fn judgment(run: &mut StageRun, stage: ManualJudgmentStage) -> StageResult {
    let approvers = if stage.approvers.is_empty() {
        run.snapshot.approvers.clone()
    } else {
        stage.approvers.clone()
    };
    let message = format!(
        "awaiting judgment{}{}",
        if approvers.is_empty() {
            String::new()
        } else {
            format!(" from {}", approvers.join(", "))
        },
        if stage.inputs.is_empty() {
            String::new()
        } else {
            format!(" (choices: {})", stage.inputs.join(", "))
        }
    );
    // Resumed while already waiting for this judgment: nothing to announce again.
    let waiting = run.state.status == StageStatus::Waiting
        && run.state.outputs.get("waitingFor").and_then(|v| v.as_str()) == Some("judgment");
    if !waiting {
        run.commit(StageUpdate {
            status: Some(StageStatus::Waiting),
            outputs: Some(
                json!({"waitingFor": "judgment", "approvers": approvers, "inputs": stage.inputs,
                                 "instructions": stage.instructions}),
            ),
            event: Some(message.clone()),
            ..StageUpdate::default()
        })?;
        run.report(StageStatus::Waiting, Some(message));
    }
    let deadline = run
        .remaining()
        .map(|left| tokio::time::Instant::now() + left);
    loop {
        if let Some(j) = run.engine.store.judgment(&run.execution, &run.stage.name)? {
            if let Some(input) = &j.input
                && !stage.inputs.is_empty()
                && !stage.inputs.contains(input)
            {
                return Err(StageError::terminal(format!(
                    "{} chose \"{input}\", which is not one of: {}",
                    j.user,
                    stage.inputs.join(", ")
                )));
            }
            let outputs =
                json!({"judgment": j.decision, "user": j.user, "input": j.input, "at": j.at});
            if j.decision == Decision::Reject {
                run.end_as(StageStatus::Rejected, format!("rejected by {}", j.user));
            }
            return Ok(outputs);
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            let outputs = json!({"judgment": "timeout", "at": Utc::now()});
            return match stage.on_timeout {
                TimeoutOutcome::Approve => {
                    run.note("no judgment before the timeout: approved as configured");
                    Ok(outputs)
                }
                TimeoutOutcome::Reject => {
                    run.end_as(
                        StageStatus::Rejected,
                        "rejected: no judgment before the timeout",
                    );
                    Ok(outputs)
                }
            };
        }
        let mut sleep = run.engine.services.poll;
        if let Some(d) = deadline {
            sleep = sleep.min(d.saturating_duration_since(tokio::time::Instant::now()));
        }
        tokio::time::sleep(sleep).await;
    }
}

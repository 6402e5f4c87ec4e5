//! What people do to executions — approve, reject, cancel, retry, roll back — in one place that
//! the HTTP API, ChatOps and the CLI call, so they cannot drift apart. Every operation finds
//! all its targets and checks the caller may act on each of them (the self-approval rule here,
//! the front end's own rule through an `authorize` callback) before it writes anything: a
//! refusal never leaves some targets changed and others not.

use std::future::Future;

use chrono::Utc;
use serde_json::Value;

use crate::config::StageType;

use crate::store::{
    Decision, Execution, ExecutionStatus, Judgment, NewExecution, NewStage, StageStatus, Store,
    StoreError,
};

/// The refusal of an approval by the change's author.
pub const SELF_APPROVAL_REFUSED: &str =
    "you authored this change; another approver must approve it";

/// Why an operation did nothing.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    /// No stage of the execution waits for a judgment.
    #[error("no stage of execution {0} waits for a judgment")]
    NothingWaiting(String),
    /// Several stages wait and none was named.
    #[error("several stages of execution {execution} wait for a judgment: {stages}; name one")]
    SeveralWaiting {
        /// The execution.
        execution: String,
        /// The waiting stages, comma-separated.
        stages: String,
    },
    /// The named stage does not exist, is not a judgment, or is not waiting.
    #[error("execution {execution}: {message}")]
    NotJudgeable {
        /// The execution.
        execution: String,
        /// What is wrong with the stage named.
        message: String,
    },
    /// The execution is not in a state the operation applies to.
    #[error("execution {execution} is {status}: {message}")]
    WrongState {
        /// The execution.
        execution: String,
        /// Its status.
        status: String,
        /// What the operation needed.
        message: String,
    },
    /// The caller may not do this (to at least one target); nothing was written.
    #[error("{0}")]
    Refused(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `user` is the recorded author of the change (logins compare case-insensitively).
pub fn is_author(user: &str, author: Option<&str>) -> bool {
    let user = user.trim().trim_start_matches('@');
    author.is_some_and(|a| !user.is_empty() && a.trim().eq_ignore_ascii_case(user))
}

/// The author an execution's trigger records (`pullRequestAuthor`), if any.
pub fn recorded_author(trigger: &Value) -> Option<&str> {
    trigger
        .get("pullRequestAuthor")
        .and_then(Value::as_str)
        .filter(|a| !a.trim().is_empty())
}

/// Whether an execution's trigger lets the author approve (`allowSelfApproval`).
pub fn allows_self_approval(trigger: &Value) -> bool {
    trigger
        .get("allowSelfApproval")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The app's approvers an execution recorded when it was created.
pub fn approvers_of(execution: &Execution) -> Vec<String> {
    strings(&execution.trigger["approvers"])
}

/// A manual judgment waiting for a decision.
#[derive(Debug, Clone)]
pub struct Waiting {
    /// Its execution.
    pub execution: Execution,
    /// The stage.
    pub stage: String,
    /// Who may decide it: the stage's approvers, else the app's.
    pub approvers: Vec<String>,
}

/// The judgments waiting in running `executions`.
pub fn waiting_among(
    store: &dyn Store,
    executions: &[Execution],
) -> Result<Vec<Waiting>, OperationError> {
    let mut found = Vec::new();
    for execution in executions
        .iter()
        .filter(|e| e.status == ExecutionStatus::Running)
    {
        for stage in store.stages(&execution.id)? {
            if stage.kind() == Some(StageType::ManualJudgment)
                && stage.status == StageStatus::Waiting
            {
                let mut approvers = strings(&stage.outputs["approvers"]);
                if approvers.is_empty() {
                    approvers = approvers_of(execution);
                }
                found.push(Waiting {
                    execution: execution.clone(),
                    stage: stage.name,
                    approvers,
                });
            }
        }
    }
    Ok(found)
}

/// The judgment to decide in execution `id`: stage `stage`, or the only one waiting.
pub fn waiting_in(
    store: &dyn Store,
    id: &str,
    stage: Option<&str>,
) -> Result<Waiting, OperationError> {
    let execution = store.execution(id)?;
    if let Some(name) = stage {
        let stages = store.stages(id)?;
        let not = |message: String| OperationError::NotJudgeable {
            execution: id.to_string(),
            message,
        };
        let found = stages
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| not(format!("no stage \"{name}\"")))?;
        if found.kind() != Some(StageType::ManualJudgment) {
            return Err(not(format!(
                "stage \"{name}\" is a {} stage, not a manual judgment",
                found.stage_type
            )));
        }
        if found.status != StageStatus::Waiting {
            return Err(not(format!(
                "stage \"{name}\" is {}, not waiting for a judgment",
                found.status.as_str().to_ascii_lowercase()
            )));
        }
    }
    let mut waiting: Vec<Waiting> = waiting_among(store, std::slice::from_ref(&execution))?
        .into_iter()
        .filter(|w| stage.is_none_or(|n| n == w.stage))
        .collect();
    match waiting.len() {
        1 => Ok(waiting.remove(0)),
        0 => Err(OperationError::NothingWaiting(id.to_string())),
        _ => Err(OperationError::SeveralWaiting {
            execution: id.to_string(),
            stages: waiting
                .iter()
                .map(|w| w.stage.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Records `decision` by `user` on every target. First, for each: an approval by the change's
/// author is refused (unless the app allows it), then `authorize` must accept it; only when all
/// pass is anything written.
pub async fn judge<A, F>(
    store: &dyn Store,
    targets: &[Waiting],
    decision: Decision,
    user: &str,
    input: Option<String>,
    authorize: A,
) -> Result<(), OperationError>
where
    A: Fn(&Waiting) -> F,
    F: Future<Output = Result<(), String>>,
{
    for target in targets {
        let trigger = &target.execution.trigger;
        if decision == Decision::Approve
            && !allows_self_approval(trigger)
            && is_author(user, recorded_author(trigger))
        {
            return Err(OperationError::Refused(SELF_APPROVAL_REFUSED.into()));
        }
        authorize(target).await.map_err(OperationError::Refused)?;
    }
    for target in targets {
        store.judge(
            &target.execution.id,
            &target.stage,
            &Judgment {
                decision,
                user: user.to_string(),
                input: input.clone(),
                at: Utc::now(),
            },
        )?;
        tracing::info!(execution = %target.execution.id, stage = %target.stage, user, decision = ?decision, "judgment recorded");
    }
    Ok(())
}

/// Asks execution `id` to stop, on behalf of `user` (see [`Store::request_cancel`]).
pub fn cancel(store: &dyn Store, id: &str, user: &str) -> Result<(), OperationError> {
    store.request_cancel(id, user)?;
    tracing::info!(execution = %id, user, "cancellation requested");
    Ok(())
}

/// The newest execution of each app among `executions` (newest first).
pub fn latest_per_app(executions: &[Execution]) -> Vec<&Execution> {
    let mut latest: Vec<&Execution> = Vec::new();
    for e in executions {
        if !latest.iter().any(|l| l.app == e.app) {
            latest.push(e);
        }
    }
    latest
}

/// Whether `execution` may be retried: it ended without succeeding.
pub fn retryable(execution: &Execution) -> bool {
    matches!(
        execution.status,
        ExecutionStatus::Failed | ExecutionStatus::Rejected | ExecutionStatus::Canceled
    )
}

/// A new execution of the same stages, snapshot and revision as `failed`, started by `user`.
pub fn retry_of(
    store: &dyn Store,
    failed: &Execution,
    user: &str,
) -> Result<NewExecution, OperationError> {
    if !retryable(failed) {
        return Err(OperationError::WrongState {
            execution: failed.id.clone(),
            status: failed.status.as_str().to_ascii_lowercase(),
            message: "only a failed, rejected or canceled execution is retried".into(),
        });
    }
    let stages = store
        .stages(&failed.id)?
        .into_iter()
        .map(|s| NewStage {
            name: s.name,
            stage_type: s.stage_type,
            environment: s.environment,
            inputs: s.inputs,
        })
        .collect();
    let mut trigger = failed.trigger.clone();
    if let Some(t) = trigger.as_object_mut() {
        t.insert(
            "user".into(),
            format!("{user} (retry of {})", failed.id).into(),
        );
    }
    Ok(NewExecution {
        app: failed.app.clone(),
        environments: failed.environments.clone(),
        revision: failed.revision.clone(),
        pipeline: failed.pipeline.clone(),
        trigger,
        stages,
    })
}

/// An execution restoring, in every environment `execution` covered, what was applied
/// successfully before it (one `rollback` stage per environment), started by `user`.
pub fn rollback_of(execution: &Execution, user: &str) -> Result<NewExecution, OperationError> {
    if !execution.status.is_final() {
        return Err(OperationError::WrongState {
            execution: execution.id.clone(),
            status: execution.status.as_str().to_ascii_lowercase(),
            message: "only a finished execution is rolled back".into(),
        });
    }
    let mut trigger = execution.trigger.clone();
    if let Some(t) = trigger.as_object_mut() {
        t.insert(
            "user".into(),
            format!("{user} (rollback of {})", execution.id).into(),
        );
        t.insert("rollbackBefore".into(), execution.id.clone().into());
    }
    let stages = execution
        .environments
        .iter()
        .map(|env| {
            let name = format!("Rollback {env}");
            NewStage {
                inputs: serde_json::json!({"name": name, "environment": env, "type": "rollback"}),
                name,
                stage_type: "rollback".into(),
                environment: Some(env.clone()),
            }
        })
        .collect();
    Ok(NewExecution {
        app: execution.app.clone(),
        environments: execution.environments.clone(),
        revision: execution.revision.clone(),
        pipeline: "rollback".into(),
        trigger,
        stages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteStore, StageUpdate};
    use serde_json::json;

    #[test]
    fn authors() {
        assert!(is_author("Octo-Dev", Some("octo-dev")));
        assert!(is_author("@octo-dev", Some("octo-dev")));
        assert!(!is_author("maria", Some("octo-dev")));
        assert!(!is_author("maria", None));
        assert!(!is_author("", Some("")));
        let trigger =
            json!({"pullRequest": 7, "pullRequestAuthor": "octo-dev", "allowSelfApproval": true});
        assert_eq!(recorded_author(&trigger), Some("octo-dev"));
        assert!(allows_self_approval(&trigger));
        assert_eq!(recorded_author(&json!({"pullRequestAuthor": ""})), None);
        assert!(!allows_self_approval(&json!({})));
    }

    /// A running execution of `app` whose `approve` judgment waits for `approvers`.
    fn waiting(store: &SqliteStore, app: &str, approvers: &[&str]) -> String {
        let e = store
            .create_execution(NewExecution {
                app: app.into(),
                environments: vec!["production".into()],
                revision: format!("rev-{app}"),
                pipeline: "p".into(),
                trigger: json!({"user": "test", "approvers": approvers}),
                stages: vec![NewStage {
                    name: "approve".into(),
                    stage_type: "manualJudgment".into(),
                    environment: Some("production".into()),
                    inputs: json!({"name": "approve", "type": "manualJudgment"}),
                }],
            })
            .expect("execution");
        assert!(store.try_start(&e.id).expect("start"));
        store
            .update_stage(
                &e.id,
                "approve",
                StageUpdate {
                    status: Some(StageStatus::Waiting),
                    ..StageUpdate::default()
                },
            )
            .expect("waiting");
        e.id
    }

    #[tokio::test]
    async fn a_refusal_for_one_target_writes_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("store");
        let web = waiting(&store, "web", &["maria"]);
        let api = waiting(&store, "api", &["bob"]);
        let all = store
            .executions(&crate::store::ExecutionFilter::default())
            .expect("list");
        let targets = waiting_among(&store, &all).expect("waiting");
        assert_eq!(targets.len(), 2);
        let only_listed = |w: &Waiting| {
            let listed = w.approvers.iter().any(|a| a == "maria");
            async move {
                if listed {
                    Ok(())
                } else {
                    Err("maria is not an approver of api".to_string())
                }
            }
        };
        let err = judge(
            &store,
            &targets,
            Decision::Approve,
            "maria",
            None,
            only_listed,
        )
        .await
        .expect_err("refused");
        assert_eq!(err.to_string(), "maria is not an approver of api");
        assert!(store.judgment(&web, "approve").expect("read").is_none());
        assert!(store.judgment(&api, "approve").expect("read").is_none());

        // Named per execution, the one maria may decide is decided.
        let one = waiting_in(&store, &web, None).expect("one");
        judge(
            &store,
            &[one],
            Decision::Approve,
            "maria",
            None,
            only_listed,
        )
        .await
        .expect("approved");
        assert_eq!(
            store
                .judgment(&web, "approve")
                .expect("read")
                .expect("judged")
                .user,
            "maria"
        );
        let err = waiting_in(&store, &web, Some("deploy")).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            format!("execution {web}: no stage \"deploy\"")
        );
    }
}

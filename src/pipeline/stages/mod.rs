//! Stage implementations and what they share: execution windows, retries with backoff,
//! timeouts measured from the first start (so a resumed stage does not get a fresh timeout),
//! and checkpoints (outputs committed as the stage goes, so a resumed stage skips what it
//! already did).

mod deploy;
mod judgment;
pub(crate) mod outputs;
mod simple;
mod webhook;

pub(crate) use deploy::remove_leftover_tracks;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::snapshot::{EnvSnapshot, Snapshot};
use super::{Ending, Engine, Progress, StageError, StageResult, merged, window};
use crate::config::{Stage, StageAction};
use crate::store::{StageState, StageStatus, StageUpdate};

/// One stage being run (or resumed) by the engine.
pub(crate) struct StageRun {
    pub engine: Engine,
    pub execution: String,
    pub revision: String,
    pub snapshot: Arc<Snapshot>,
    pub stage: Stage,
    pub resumed: bool,
    pub state: StageState,
    /// Set by a stage that ends rejected or skipped rather than succeeded.
    pub ending: Option<Ending>,
}

impl StageRun {
    /// Runs the stage to a result, with how it ended when it neither succeeded nor failed.
    pub async fn run(mut self) -> (StageResult, Option<Ending>) {
        let result = self.run_attempts().await;
        (result, self.ending.take())
    }

    /// Says that the stage, about to return its outputs, ended `status` (rejected or skipped)
    /// for `reason` instead of succeeding.
    fn end_as(&mut self, status: StageStatus, reason: impl Into<String>) {
        self.ending = Some(Ending {
            status,
            reason: reason.into(),
        });
    }

    /// Waits for the stage's execution window, then attempts it (with its timeout), retrying
    /// transient failures as `retries:` allows; a terminal failure ends the stage at once.
    async fn run_attempts(&mut self) -> StageResult {
        self.wait_for_window().await?;
        let manual = matches!(self.stage.action, StageAction::ManualJudgment(_));
        let attempts = if manual { 1 } else { self.stage.retries + 1 };
        let mut delay = self.engine.services.retry_delay;
        let mut last_error = StageError::terminal("no attempt was made");
        for attempt in 0..attempts {
            // A stage interrupted within an attempt (running, or waiting for a judgment)
            // resumes that attempt; anything else starts a new one.
            let interrupted_attempt = attempt == 0
                && self.resumed
                && self.state.attempts > 0
                && matches!(
                    self.state.status,
                    StageStatus::Running | StageStatus::Waiting
                );
            if !interrupted_attempt {
                let event = if attempt == 0 {
                    "started".to_string()
                } else {
                    format!("retrying (attempt {}) after: {last_error}", attempt + 1)
                };
                match self.commit(StageUpdate {
                    status: Some(StageStatus::Running),
                    new_attempt: true,
                    event: Some(event),
                    ..StageUpdate::default()
                }) {
                    Ok(()) => self.report(
                        StageStatus::Running,
                        (attempt > 0).then(|| format!("attempt {}", attempt + 1)),
                    ),
                    Err(e) => return Err(e),
                }
            } else {
                self.note("resumed after a restart");
            }
            let result = match (manual, self.remaining()) {
                (false, Some(remaining)) => {
                    match tokio::time::timeout(remaining, self.attempt()).await {
                        Ok(r) => r,
                        // The timeout counts from the first start: another attempt would
                        // have no time left.
                        Err(_) => Err(StageError::terminal(format!(
                            "timed out after {}",
                            humantime::format_duration(
                                self.stage.timeout.map(|t| t.0).unwrap_or_default()
                            )
                        ))),
                    }
                }
                _ => self.attempt().await,
            };
            match result {
                Ok(outputs) => return Ok(outputs),
                Err(e) if !e.is_transient() => {
                    if attempt + 1 < attempts {
                        self.note(&format!(
                            "not retried: the failure is terminal (another attempt would fail the same way): {e}"
                        ));
                    }
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(execution = %self.execution, stage = %self.stage.name, attempt = attempt + 1, error = %e, "transient failure");
                    last_error = e;
                }
            }
            if attempt + 1 < attempts {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
                // A restart between attempts resumes as a fresh attempt.
                self.resumed = false;
            }
        }
        Err(last_error)
    }

    fn attempt(&mut self) -> Pin<Box<dyn Future<Output = StageResult> + Send + '_>> {
        match self.stage.action.clone() {
            StageAction::Deploy(d) => Box::pin(deploy::deploy(self, d)),
            StageAction::Promote {} => Box::pin(deploy::promote(self)),
            StageAction::Rollback {} => Box::pin(deploy::rollback(self)),
            StageAction::Remove {} => Box::pin(deploy::remove(self)),
            StageAction::CanaryAnalysis(a) => Box::pin(deploy::analysis(self, a)),
            StageAction::ManualJudgment(j) => Box::pin(judgment::judgment(self, j)),
            StageAction::Wait(w) => Box::pin(simple::wait(self, w)),
            StageAction::CheckPreconditions(p) => Box::pin(simple::preconditions(self, p)),
            StageAction::Webhook(w) => Box::pin(webhook::webhook(self, w)),
        }
    }

    /// Time left before the stage's timeout, counted from its first start, or from when its
    /// execution window opened if it waited for one later (time spent waiting for a window
    /// never counts).
    fn remaining(&self) -> Option<Duration> {
        let timeout = self.stage.timeout?.0;
        let window_opened = self
            .state
            .outputs
            .get("windowOpenedAt")
            .and_then(|v| serde_json::from_value::<chrono::DateTime<Utc>>(v.clone()).ok());
        let started = match (self.state.started_at, window_opened) {
            (Some(s), Some(w)) => s.max(w),
            (s, w) => s.or(w).unwrap_or_else(Utc::now),
        };
        let spent = (Utc::now() - started).to_std().unwrap_or_default();
        Some(timeout.saturating_sub(spent))
    }

    async fn wait_for_window(&mut self) -> Result<(), StageError> {
        let env = self.stage.environment.clone();
        let mut announced = false;
        loop {
            let next = window::next_opening(&self.snapshot.windows, env.as_deref(), Utc::now())
                .map_err(|e| StageError::terminal(e.to_string()))?;
            let Some(opens) = next else {
                if announced {
                    self.checkpoint(json!({"windowOpenedAt": Utc::now()}))?;
                }
                return Ok(());
            };
            if !announced {
                let message = format!(
                    "waiting for the execution window (opens {})",
                    opens.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
                self.commit(StageUpdate {
                    status: Some(StageStatus::Waiting),
                    outputs: Some(merged(
                        &self.state.outputs,
                        json!({"waitingFor": "window", "windowOpens": opens}),
                    )),
                    event: Some(message.clone()),
                    ..StageUpdate::default()
                })?;
                self.report(StageStatus::Waiting, Some(message));
                announced = true;
            }
            let wait = (opens - Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(
                wait.min(self.engine.services.poll.max(Duration::from_secs(1)) * 30),
            )
            .await;
        }
    }

    /// Commits a stage update; the returned state replaces the local copy.
    fn commit(&mut self, update: StageUpdate) -> Result<(), StageError> {
        let update = StageUpdate {
            owner: Some(self.engine.services.owner.clone()),
            fence: self.engine.fence.clone(),
            ..update
        };
        let state = self.engine.timed(|| {
            self.engine
                .store
                .update_stage(&self.execution, &self.stage.name, update)
        })?;
        self.state = state;
        Ok(())
    }

    /// Commits `extra` into the outputs (a checkpoint), before its effect is reported.
    fn checkpoint(&mut self, extra: Value) -> Result<(), StageError> {
        let outputs = merged(&self.state.outputs, extra);
        self.commit(StageUpdate {
            outputs: Some(outputs),
            ..StageUpdate::default()
        })
    }

    /// Commits the fields `extra` serializes to into the outputs (a typed checkpoint; fields
    /// it leaves out keep their value).
    fn checkpoint_as<T: Serialize>(&mut self, extra: &T) -> Result<(), StageError> {
        let value = serde_json::to_value(extra).map_err(|e| {
            StageError::terminal(format!("stage {}: outputs: {e}", self.stage.name))
        })?;
        self.checkpoint(value)
    }

    /// The stage's outputs so far, read as `T`.
    fn outputs_as<T: DeserializeOwned>(&self) -> Result<T, StageError> {
        outputs::read(&self.stage.name, &self.state.outputs)
    }

    fn report(&self, status: StageStatus, message: Option<String>) {
        self.engine.progress(Progress::Stage {
            stage: self.stage.name.clone(),
            status,
            message,
        });
    }

    /// Tells the watcher what the stage is doing (and logs it in the execution's events).
    fn note(&self, message: &str) {
        let _ = self
            .engine
            .store
            .log(&self.execution, Some(&self.stage.name), message);
        tracing::info!(execution = %self.execution, stage = %self.stage.name, "{message}");
        self.engine.progress(Progress::Note {
            stage: self.stage.name.clone(),
            message: message.to_string(),
        });
    }

    /// The snapshot of the stage's environment.
    fn environment(&self) -> Result<(&str, &EnvSnapshot), StageError> {
        let name = self.stage.environment.as_deref().ok_or_else(|| {
            StageError::terminal(format!("stage {} needs an environment", self.stage.name))
        })?;
        let env = self.snapshot.environments.get(name).ok_or_else(|| {
            StageError::terminal(format!(
                "environment \"{name}\" is not part of this execution"
            ))
        })?;
        Ok((name, env))
    }
}

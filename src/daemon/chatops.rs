//! ChatOps: `/bowline approve|reject|retry|rollback` in a pull-request comment acts on the
//! executions delivering that pull request's merge. Only users listed as approvers (of the
//! waiting stage, else of the app; by login or as members of an `@org/team`) who also have
//! write access may use it, and the pull request's author does not approve their own change
//! (unless the app sets `allowSelfApproval`); everyone else gets a reply saying so, and nothing
//! changes.
//!
//! `/bowline plan` asks for a plan of the pull request against the live clusters (also for a
//! pull request from a fork or by an author without write access): any collaborator with write
//! access may ask; GitHub not confirming the access refuses it.

use std::sync::Arc;

use serde_json::Value;

use super::approvals::ApproverCheck;
use super::{Daemon, DaemonError, PlanQueued, PlanRequest};
use crate::forge::{
    Command, CommentAction, IssueCommentEvent, PrAction, has_write_access, parse_command,
};
use crate::pipeline::operations::{
    self, OperationError, SELF_APPROVAL_REFUSED, Waiting, allows_self_approval, is_author,
};
use crate::store::{Decision, Execution, ExecutionFilter};

/// The refusal of users who are not approvers with write access.
const NOT_ALLOWED: &str = "you are not allowed to run `/bowline` commands here: approvers listed in the config repository with write access only";

/// How many recent executions are searched for a pull request's.
const SEARCH_LIMIT: usize = 500;

/// What a ChatOps comment led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatOpsOutcome {
    /// Not a command (or not on a pull request, or not a new comment).
    Ignored,
    /// Done; the reply says what.
    Done(String),
    /// Refused or impossible; the reply says why.
    Refused(String),
}

impl Daemon {
    /// Executions delivering pull request `number`, newest first.
    fn executions_of_pull_request(&self, number: u64) -> Result<Vec<Execution>, DaemonError> {
        Ok(self
            .store
            .executions(&ExecutionFilter {
                limit: Some(SEARCH_LIMIT),
                ..ExecutionFilter::default()
            })?
            .into_iter()
            .filter(|e| e.trigger.get("pullRequest").and_then(Value::as_u64) == Some(number))
            .collect())
    }

    /// Handles one `issue_comment` delivery: runs the command it holds when its author may,
    /// and replies on the pull request either way.
    #[tracing::instrument(level = "info", skip(self, comment), fields(pr = comment.issue_number, author = %comment.author))]
    pub async fn handle_comment(
        self: &Arc<Self>,
        comment: &IssueCommentEvent,
    ) -> Result<ChatOpsOutcome, DaemonError> {
        if comment.action != CommentAction::Created || !comment.is_pull_request {
            return Ok(ChatOpsOutcome::Ignored);
        }
        let command = match parse_command(&comment.body) {
            None => return Ok(ChatOpsOutcome::Ignored),
            Some(Ok(command)) => command,
            Some(Err(message)) => {
                return self.answer(comment, ChatOpsOutcome::Refused(message)).await;
            }
        };
        let outcome = match command {
            Command::Plan => self.plan_command(comment).await?,
            _ => self.run_command(comment, &command).await?,
        };
        tracing::info!(command = ?command, outcome = ?outcome, "ChatOps command");
        self.answer(comment, outcome).await
    }

    async fn answer(
        &self,
        comment: &IssueCommentEvent,
        outcome: ChatOpsOutcome,
    ) -> Result<ChatOpsOutcome, DaemonError> {
        let text = match &outcome {
            ChatOpsOutcome::Ignored => return Ok(outcome),
            ChatOpsOutcome::Done(t) | ChatOpsOutcome::Refused(t) => t,
        };
        self.github()?
            .reply(
                &comment.repo,
                comment.issue_number,
                &format!("@{} {text}", comment.author),
            )
            .await?;
        Ok(outcome)
    }

    /// Why the comment's author may not decide with `approvers`, or `None` when they may:
    /// they must be one of `approvers` (see [`Daemon::check_approver`]) and have write access
    /// to the repository.
    async fn refusal(
        &self,
        comment: &IssueCommentEvent,
        approvers: &[String],
    ) -> Result<Option<String>, DaemonError> {
        match self.check_approver(&comment.author, approvers).await? {
            ApproverCheck::Listed => {}
            ApproverCheck::NotListed => return Ok(Some(NOT_ALLOWED.to_string())),
            ApproverCheck::Unconfirmed(teams) => {
                return Ok(Some(format!(
                    "GitHub could not confirm your membership of {}, so you are not counted as an approver; try again later",
                    teams.join(", ")
                )));
            }
        }
        let permission = self
            .github()?
            .permission(&comment.repo, &comment.author)
            .await?;
        Ok((!has_write_access(&permission)).then(|| NOT_ALLOWED.to_string()))
    }

    async fn run_command(
        self: &Arc<Self>,
        comment: &IssueCommentEvent,
        command: &Command,
    ) -> Result<ChatOpsOutcome, DaemonError> {
        let executions = self.executions_of_pull_request(comment.issue_number)?;
        if executions.is_empty() {
            return Ok(ChatOpsOutcome::Refused(format!(
                "no execution delivers pull request #{} (yet)",
                comment.issue_number
            )));
        }
        match command {
            // Answered by `plan_command`, before any execution is looked for.
            Command::Plan => Ok(ChatOpsOutcome::Ignored),
            Command::Approve { .. } | Command::Reject => {
                let (decision, input) = match command {
                    Command::Approve { input } => (Decision::Approve, input.clone()),
                    _ => (Decision::Reject, None),
                };
                let waiting = operations::waiting_among(&*self.store, &executions)?;
                if waiting.is_empty() {
                    return Ok(ChatOpsOutcome::Refused(
                        "nothing is waiting for a judgment on this pull request".into(),
                    ));
                }
                // Every waiting judgment is checked before any is recorded.
                let authorize = |target: &Waiting| {
                    let approvers = target.approvers.clone();
                    let allows_self = allows_self_approval(&target.execution.trigger);
                    async move {
                        if decision == Decision::Approve
                            && !allows_self
                            && is_author(&comment.author, Some(&comment.issue_author))
                        {
                            return Err(SELF_APPROVAL_REFUSED.to_string());
                        }
                        match self.refusal(comment, &approvers).await {
                            Ok(None) => Ok(()),
                            Ok(Some(why)) => Err(why),
                            Err(e) => Err(format!(
                                "your access could not be confirmed ({e}); try again later"
                            )),
                        }
                    }
                };
                match operations::judge(
                    &*self.store,
                    &waiting,
                    decision,
                    &comment.author,
                    input,
                    authorize,
                )
                .await
                {
                    Ok(()) => {}
                    Err(OperationError::Refused(why)) => return Ok(ChatOpsOutcome::Refused(why)),
                    Err(e) => return Err(e.into()),
                }
                let done: Vec<String> = waiting
                    .iter()
                    .map(|w| format!("\"{}\" of `{}`", w.stage, w.execution.app))
                    .collect();
                let verb = if decision == Decision::Approve {
                    "approved"
                } else {
                    "rejected"
                };
                Ok(ChatOpsOutcome::Done(format!("{verb} {}", done.join(", "))))
            }
            Command::Retry | Command::Rollback => {
                let retry = matches!(command, Command::Retry);
                let chosen: Vec<&Execution> = operations::latest_per_app(&executions)
                    .into_iter()
                    .filter(|e| {
                        if retry {
                            operations::retryable(e)
                        } else {
                            e.status.is_final()
                        }
                    })
                    .collect();
                if chosen.is_empty() {
                    return Ok(ChatOpsOutcome::Refused(if retry {
                        "no failed execution to retry on this pull request".into()
                    } else {
                        "no finished execution to roll back on this pull request".into()
                    }));
                }
                // Every target is checked, and every new execution prepared, before any starts.
                let mut prepared = Vec::new();
                for e in &chosen {
                    if let Some(why) = self.refusal(comment, &operations::approvers_of(e)).await? {
                        return Ok(ChatOpsOutcome::Refused(why));
                    }
                    prepared.push(if retry {
                        operations::retry_of(&*self.store, e, &comment.author)?
                    } else {
                        operations::rollback_of(e, &comment.author)?
                    });
                }
                let mut started = Vec::new();
                for (e, new) in chosen.iter().zip(prepared) {
                    let created = match self.store.create_execution(new) {
                        Ok(created) => created,
                        Err(e @ crate::store::StoreError::Duplicate { .. }) => {
                            return Ok(ChatOpsOutcome::Refused(format!("{e}; wait for it to end")));
                        }
                        Err(e) => return Err(e.into()),
                    };
                    started.push(format!("`{}` ({})", e.app, created.id));
                    self.spawn_execution(created);
                }
                let what = if retry { "retrying" } else { "rolling back" };
                Ok(ChatOpsOutcome::Done(format!(
                    "{what} {}",
                    started.join(", ")
                )))
            }
        }
    }

    /// `/bowline plan`: a live plan of the pull request, when the commenter has write access.
    async fn plan_command(
        self: &Arc<Self>,
        comment: &IssueCommentEvent,
    ) -> Result<ChatOpsOutcome, DaemonError> {
        let github = self.github()?;
        let permission = match github.permission(&comment.repo, &comment.author).await {
            Ok(p) => p,
            Err(e) => {
                // Fail closed: no live plan unless GitHub confirms the access.
                tracing::warn!(error = %e, "could not read the commenter's permission");
                return Ok(ChatOpsOutcome::Refused(
                    "GitHub could not confirm that you have write access, so no live plan was started; try again later".into(),
                ));
            }
        };
        if !has_write_access(&permission) {
            return Ok(ChatOpsOutcome::Refused(format!(
                "only collaborators with write access to {} may ask for a live plan",
                comment.repo
            )));
        }
        let pull = match github
            .get_pull_request(&comment.repo, comment.issue_number)
            .await
        {
            Ok(pull) => pull,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the pull request");
                return Ok(ChatOpsOutcome::Refused(format!(
                    "could not read pull request #{} from GitHub, so no plan was started; try again later",
                    comment.issue_number
                )));
            }
        };
        if !pull.is_open() {
            return Ok(ChatOpsOutcome::Refused(format!(
                "pull request #{} is closed: nothing to plan",
                comment.issue_number
            )));
        }
        let pr = pull.to_event(
            &comment.repo,
            PrAction::Other("plan requested".into()),
            &comment.author,
        );
        tracing::info!(pr = pr.number, head = %pr.head_sha, requested_by = %comment.author, "live plan requested");
        let queued = self.request_plan(PlanRequest {
            pr,
            live_requested_by: Some(comment.author.clone()),
        });
        let when = match queued {
            PlanQueued::Started => "planning…",
            PlanQueued::Coalesced => "planning after the plan already running…",
            PlanQueued::Refused => {
                return Ok(ChatOpsOutcome::Refused(
                    "bowline is shutting down, so no plan was started; try again shortly".into(),
                ));
            }
        };
        Ok(ChatOpsOutcome::Done(format!(
            "live plan requested by @{}: {when}",
            comment.author
        )))
    }
}

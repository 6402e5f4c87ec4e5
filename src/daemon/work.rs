//! What the daemon puts on its work queue ([`super::queue`]): one job kind per trigger, each
//! under its key, and how waiting jobs of one key merge.

use std::fmt;
use std::sync::{Arc, Weak};

use tokio::sync::oneshot;

use super::queue::{Enqueued, Handler, Job};
use super::{Daemon, DaemonError, PlanRequest, Reconciled, pull_request};
use crate::forge::IssueCommentEvent;

/// The result of a reconcile, shared by everyone who waited for it.
pub(super) type Shared = Result<Reconciled, Arc<DaemonError>>;

/// A job of the daemon.
pub(super) enum Work {
    /// Fetch and reconcile the tracked branch (poll timer, push webhook, merge, file watch);
    /// whoever asked to hear the outcome is told.
    Reconcile(Vec<oneshot::Sender<Shared>>),
    /// Plan a pull request (its webhook, `/bowline plan`).
    Plan(Box<PlanRequest>),
    /// Handle ChatOps comments of one pull request, in the order they came.
    Comments(u64, Vec<IssueCommentEvent>),
    /// Compare the live clusters with what was deployed (drift timer).
    Drift,
    /// Learn the config repository's GitHub id.
    RepositoryId,
}

/// The key of a job: what is serialized and coalesced on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Key {
    /// `branch`: the tracked branch.
    Branch,
    /// `pr/<n>`: plans of pull request `n`.
    PullRequest(u64),
    /// `comments/<n>`: ChatOps comments on pull request `n`.
    Comments(u64),
    /// `drift`.
    Drift,
    /// `repository`: the config repository's id.
    Repository,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Branch => f.write_str("branch"),
            Key::PullRequest(n) => write!(f, "pr/{n}"),
            Key::Comments(n) => write!(f, "comments/{n}"),
            Key::Drift => f.write_str("drift"),
            Key::Repository => f.write_str("repository"),
        }
    }
}

impl Job for Work {
    type Key = Key;

    fn key(&self) -> Key {
        match self {
            Work::Reconcile(_) => Key::Branch,
            Work::Plan(request) => Key::PullRequest(request.pr.number),
            Work::Comments(n, _) => Key::Comments(*n),
            Work::Drift => Key::Drift,
            Work::RepositoryId => Key::Repository,
        }
    }

    /// Reconciles merge their waiters (one fetch serves them all); plans keep the newest
    /// request (a live request for the same head is kept); comments are all kept, in order.
    fn merge(self, newer: Work) -> Work {
        match (self, newer) {
            (Work::Reconcile(mut waiters), Work::Reconcile(more)) => {
                waiters.extend(more);
                Work::Reconcile(waiters)
            }
            (Work::Plan(old), Work::Plan(new)) => {
                Work::Plan(Box::new(pull_request::coalesce(Some(*old), *new)))
            }
            (Work::Comments(n, mut comments), Work::Comments(_, more)) => {
                comments.extend(more);
                Work::Comments(n, comments)
            }
            (_, newer) => newer,
        }
    }
}

/// Runs the daemon's jobs; holds the daemon weakly (the daemon owns the queue).
pub(super) fn handler(daemon: Weak<Daemon>) -> Handler<Work> {
    Arc::new(move |work: Work| {
        let daemon = daemon.clone();
        Box::pin(async move {
            let Some(daemon) = daemon.upgrade() else {
                return;
            };
            daemon.run_work(work).await;
        })
    })
}

impl Daemon {
    async fn run_work(self: &Arc<Self>, work: Work) {
        match work {
            Work::Reconcile(mut waiters) => {
                let result = self.reconcile_branch_now().await.map_err(Arc::new);
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "reconcile failed; keeping the last good commit");
                }
                // The last waiter gets the result itself, the others a copy.
                if let Some(last) = waiters.pop() {
                    for waiter in waiters {
                        let _ = waiter.send(result.clone());
                    }
                    let _ = last.send(result);
                }
                // GitHub being slow must not hold up the next fetch.
                self.queue.enqueue(Work::RepositoryId);
            }
            Work::Plan(request) => {
                if let Err(e) = self.plan_pull_request(&request).await {
                    tracing::warn!(error = %e, pr = request.pr.number, "pull request plan failed");
                }
            }
            Work::Comments(_, comments) => {
                for comment in comments {
                    if let Err(e) = self.handle_comment(&comment).await {
                        tracing::warn!(error = %e, "ChatOps command failed");
                    }
                }
            }
            Work::Drift => {
                self.check_drift().await;
            }
            Work::RepositoryId => {
                self.learn_repository_id().await;
            }
        }
    }

    /// Asks for a reconcile of the tracked branch (a push, a merge, a changed working copy);
    /// it runs after the one running, if any.
    ///
    /// On a replica that does not lead, the request is also handed to the leader through
    /// the store; this replica's own run only follows (fetches and checks).
    pub fn request_reconcile(&self) -> Enqueued {
        self.hand_reconcile_to_leader();
        self.queue.enqueue(Work::Reconcile(Vec::new()))
    }

    /// A reconcile asked for by this replica's own poll timer (never handed over).
    pub(super) fn request_poll(&self) -> Enqueued {
        self.queue.enqueue(Work::Reconcile(Vec::new()))
    }

    /// Asks for the config repository's GitHub id to be learnt, in the background.
    pub fn request_repository_id(&self) -> Enqueued {
        self.queue.enqueue(Work::RepositoryId)
    }

    /// Queues ChatOps comment `comment`: the comments of one pull request are handled one at
    /// a time, in order.
    pub fn request_comment(&self, comment: IssueCommentEvent) -> Enqueued {
        let number = comment.issue_number;
        self.queue.enqueue(Work::Comments(number, vec![comment]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::{CommentAction, PrAction, PullRequestEvent, RepoRef};

    fn plan(head: &str, live: Option<&str>) -> Work {
        Work::Plan(Box::new(PlanRequest {
            pr: PullRequestEvent {
                action: PrAction::Synchronize,
                repo: RepoRef::new("acme", "config"),
                number: 7,
                head_sha: head.into(),
                head_ref: "feature".into(),
                head_repo: None,
                base_ref: "main".into(),
                merge_commit_sha: None,
                sender: "dev".into(),
                author: "dev".into(),
            },
            live_requested_by: live.map(str::to_string),
        }))
    }

    fn comment(id: u64) -> IssueCommentEvent {
        IssueCommentEvent {
            action: CommentAction::Created,
            repo: RepoRef::new("acme", "config"),
            issue_number: 7,
            is_pull_request: true,
            comment_id: id,
            body: "/bowline approve".into(),
            author: "maria".into(),
            author_association: "MEMBER".into(),
            issue_author: "dev".into(),
        }
    }

    #[test]
    fn keys_name_what_is_serialized() {
        assert_eq!(plan("a", None).key().to_string(), "pr/7");
        assert_eq!(Work::Reconcile(Vec::new()).key().to_string(), "branch");
        assert_eq!(
            Work::Comments(7, Vec::new()).key().to_string(),
            "comments/7"
        );
        assert_eq!(Work::Drift.key().to_string(), "drift");
    }

    #[test]
    fn plans_keep_the_newest_head_and_a_live_request_for_the_same_head() {
        let Work::Plan(same) = plan("a", Some("maintainer")).merge(plan("a", None)) else {
            panic!("not a plan");
        };
        assert_eq!(same.live_requested_by.as_deref(), Some("maintainer"));
        let Work::Plan(newer) = plan("a", Some("maintainer")).merge(plan("b", None)) else {
            panic!("not a plan");
        };
        assert_eq!(
            (newer.pr.head_sha.as_str(), newer.live_requested_by),
            ("b", None)
        );
    }

    #[test]
    fn comments_and_reconcile_waiters_are_all_kept() {
        let Work::Comments(7, comments) =
            Work::Comments(7, vec![comment(1)]).merge(Work::Comments(7, vec![comment(2)]))
        else {
            panic!("not comments");
        };
        let ids: Vec<u64> = comments.iter().map(|c| c.comment_id).collect();
        assert_eq!(ids, vec![1, 2]);
        let (a, _ra) = oneshot::channel();
        let (b, _rb) = oneshot::channel();
        let Work::Reconcile(waiters) = Work::Reconcile(vec![a]).merge(Work::Reconcile(vec![b]))
        else {
            panic!("not a reconcile");
        };
        assert_eq!(waiters.len(), 2);
    }
}

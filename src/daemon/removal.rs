//! Applications deleted from the tracked branch. With `syncPolicy.prune` (and `automated`) in
//! the last commit that still had the app, a removal execution deletes what bowline created for
//! it, with its own commit status (`bowline/remove/<app>`); otherwise its objects are left
//! running and the status says so. A guard holds a removal for an explicit approval when one
//! commit would delete more than an environment's `maxDeletePercent` of the objects bowline
//! manages there.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::push::MergedPullRequest;
use super::{Daemon, DaemonError, lock, removal_context};
use crate::config::ConfigRepo;
use crate::forge::{CommitState, CommitStatus};
use crate::pipeline::snapshot::prepare_removal;
use crate::store::{Execution, ExecutionFilter, ExecutionStatus};

/// Objects bowline recorded as deployed, per environment: in total, and of the removed apps.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Objects of the removed apps (what the removals delete).
    pub removed: usize,
    /// Objects of every app of the environment.
    pub total: usize,
}

/// Why `share` needs an approval in an environment allowing `max_percent` (0–100) of its
/// managed objects to go in one commit, or `None` when it stays within.
pub fn guard(environment: &str, share: Share, max_percent: u8) -> Option<String> {
    if share.removed == 0 || share.removed * 100 <= usize::from(max_percent) * share.total {
        return None;
    }
    let percent = share.removed * 100 / share.total.max(1);
    Some(format!(
        "this commit deletes {} of the {} objects bowline manages in {environment} ({percent}%), more than the {max_percent}% one commit may delete without an approval",
        share.removed, share.total
    ))
}

impl Daemon {
    /// The objects bowline last applied for `app` in `environment` (by any execution: a
    /// failed one may have left them running), summed over its clusters.
    fn deployed_objects(&self, repo: &ConfigRepo, app: &str, environment: &str) -> usize {
        let Some(env) = repo.environment(environment) else {
            return 0;
        };
        env.clusters
            .iter()
            .filter_map(|c| {
                self.store
                    .last_applied(app, environment, &c.name)
                    .ok()
                    .flatten()
            })
            .map(|d| d.objects.len())
            .sum()
    }

    /// Starts the removals of the apps the last good commit `old_sha` had and commit `sha`
    /// (whose inputs are `inputs`) does not. Returns the executions created.
    pub(super) async fn start_removals(
        self: &Arc<Self>,
        old_sha: &str,
        inputs: &BTreeMap<String, String>,
        sha: &str,
        pull_request: Option<&MergedPullRequest>,
    ) -> Result<Vec<Execution>, DaemonError> {
        let removed: Vec<String> = lock(&self.state)
            .inputs
            .keys()
            .filter(|app| !inputs.contains_key(*app))
            .cloned()
            .collect();
        if removed.is_empty() {
            return Ok(Vec::new());
        }
        let (snapshot, _) = self.snapshot(old_sha)?;
        let old = self.checker.documents(&snapshot);
        let mut pruned: Vec<(&str, Vec<String>)> = Vec::new();
        for app in &removed {
            let Some(doc) = old.apps.get(app) else {
                continue;
            };
            self.cancel_executions_of(app)?;
            let policy = old.sync_policy(&doc.doc);
            let deployed: Vec<String> = old
                .app_environments(&doc.doc)
                .into_iter()
                .filter(|e| self.deployed_objects(&old, app, &e.name) > 0)
                .map(|e| e.name.clone())
                .collect();
            if deployed.is_empty() {
                tracing::info!(app = %app, "app removed from the repository; it was never deployed");
                continue;
            }
            if !(policy.prune && policy.automated) {
                tracing::warn!(app = %app, environments = ?deployed,
                    "app removed from the repository; its objects are left running (syncPolicy.prune and automated are not both on)");
                self.report_removal(
                    app,
                    sha,
                    CommitState::Success,
                    "removed from the repository; its objects are left running (prune is off)",
                );
                continue;
            }
            pruned.push((app, deployed));
        }
        // The guard counts every removal of this commit together, per environment.
        let mut shares: BTreeMap<String, Share> = BTreeMap::new();
        for (app, environments) in &pruned {
            for env in environments {
                shares.entry(env.clone()).or_default().removed +=
                    self.deployed_objects(&old, app, env);
            }
        }
        for (env, share) in &mut shares {
            share.total = old
                .apps
                .keys()
                .map(|app| self.deployed_objects(&old, app, env))
                .sum();
        }
        let guarded: BTreeMap<String, String> = shares
            .iter()
            .filter_map(|(env, share)| {
                let max = old.environment(env)?.max_delete_percent();
                guard(env, *share, max).map(|why| (env.clone(), why))
            })
            .collect();
        let mut started = Vec::new();
        for (app, environments) in pruned {
            let existing = self.store.executions(&ExecutionFilter {
                app: Some(app.to_string()),
                limit: Some(20),
                ..ExecutionFilter::default()
            })?;
            if existing.iter().any(|e| e.revision == sha) {
                continue; // created before a restart
            }
            let mut new = prepare_removal(&old, app, &environments, &guarded, sha, "push")
                .map_err(|e| DaemonError::Prepare {
                    app: app.to_string(),
                    message: e.to_string(),
                })?;
            if let (Some(pr), Some(trigger)) = (pull_request, new.trigger.as_object_mut()) {
                trigger.insert("pullRequest".into(), pr.number.into());
                if let Some(author) = &pr.author {
                    trigger.insert("pullRequestAuthor".into(), author.clone().into());
                }
            }
            let held: Vec<&String> = environments
                .iter()
                .filter(|e| guarded.contains_key(*e))
                .collect();
            tracing::info!(app, environments = ?environments, awaiting_approval = ?held,
                "app removed from the repository: removing its objects");
            match self.store.create_execution(new) {
                Ok(execution) => started.push(execution),
                // Already being removed at this revision (by another process).
                Err(crate::store::StoreError::Duplicate { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(started)
    }

    /// Cancels the queued and running executions of a removed app: what they would deploy is
    /// gone from the repository.
    fn cancel_executions_of(&self, app: &str) -> Result<(), DaemonError> {
        let active = self.store.executions(&ExecutionFilter {
            app: Some(app.to_string()),
            statuses: vec![ExecutionStatus::Queued, ExecutionStatus::Running],
            ..ExecutionFilter::default()
        })?;
        for execution in active {
            tracing::info!(app, execution = %execution.id, "canceling: the app was removed from the repository");
            self.store
                .request_cancel(&execution.id, "bowline (the app was removed)")?;
        }
        Ok(())
    }

    fn report_removal(&self, app: &str, sha: &str, state: CommitState, description: &str) {
        let repo_ref = lock(&self.state).github_repo.clone();
        let Some(repo_ref) = repo_ref else {
            return;
        };
        let status = CommitStatus {
            context: removal_context(app),
            state,
            description: description.to_string(),
            target_url: None,
        };
        self.outbox.status_or_log(&repo_ref, sha, &status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_holds_removals_above_the_share() {
        let share = |removed, total| Share { removed, total };
        assert_eq!(guard("production", share(0, 0), 50), None);
        assert_eq!(guard("production", share(5, 10), 50), None);
        let held = guard("production", share(6, 10), 50).expect("held");
        assert_eq!(
            held,
            "this commit deletes 6 of the 10 objects bowline manages in production (60%), more than the 50% one commit may delete without an approval"
        );
        assert!(guard("production", share(1, 10), 0).is_some());
        assert_eq!(guard("production", share(10, 10), 100), None);
    }
}

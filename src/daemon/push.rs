//! The push flow: fetch the tracked branch, find the apps a new commit changed (by the Git ids
//! of their inputs, so an untouched app costs nothing), and start their pipelines.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use super::queue::Enqueued;
use super::work::Work;
use super::{CURSOR_KEY, Daemon, DaemonError, PLAN_CONTEXT, lock};
use crate::config::ConfigRepo;
use crate::config::inputs::{self, changed_apps};
use crate::diagnostic;
use crate::forge::{CommitState, CommitStatus, RepoRef, merged_pull_request};
use crate::pipeline;
use crate::source::Snapshot;
use crate::store::{Execution, ExecutionFilter};

/// What one reconcile of the tracked branch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// The branch still points at the last reconciled commit.
    Unchanged,
    /// A new commit that changes no application's inputs.
    NoAppChanged {
        /// The commit.
        commit: String,
    },
    /// A new commit, read and checked by a replica that does not lead: the leader starts its
    /// executions.
    Followed {
        /// The commit.
        commit: String,
    },
    /// A new commit; executions were started for these apps.
    Started {
        /// The commit.
        commit: String,
        /// Apps whose inputs changed.
        changed: Vec<String>,
        /// Executions created, one per changed app with an automated pipeline.
        executions: Vec<String>,
    },
}

impl Daemon {
    /// Fetches `reference` (the tracked branch when `None`); returns its commit.
    pub(super) async fn fetch(&self, reference: Option<&str>) -> Result<String, DaemonError> {
        let started = Instant::now();
        let result = tokio::task::block_in_place(|| match reference {
            Some(r) => self.source.fetch_ref(r),
            None => self.source.fetch(),
        });
        self.metrics
            .fetch_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .fetches
            .with_label_values(&[if result.is_ok() { "ok" } else { "error" }])
            .inc();
        Ok(result?)
    }

    /// Reads commit `sha` with the repository limits.
    pub(super) fn snapshot(
        &self,
        sha: &str,
    ) -> Result<(Snapshot, Vec<diagnostic::Diagnostic>), DaemonError> {
        Ok(tokio::task::block_in_place(|| {
            self.source.snapshot(sha, &self.config.limits)
        })?)
    }

    /// The GitHub repository of `repo` (the configured one first).
    pub(super) fn github_repo_of(&self, repo: &ConfigRepo) -> Option<RepoRef> {
        self.config.github_repo.clone().or_else(|| {
            let forge = repo
                .repository
                .as_ref()?
                .doc
                .spec
                .forge
                .as_ref()?
                .github
                .as_ref()?;
            Some(RepoRef::new(forge.owner.clone(), forge.repository.clone()))
        })
    }

    /// Checks a snapshot with the daemon's [`crate::check::Checker`], counting the apps
    /// computed and kept.
    pub(super) fn check(&self, snapshot: &Snapshot) -> Result<crate::check::Checked, DaemonError> {
        let checked = tokio::task::block_in_place(|| self.checker.check(snapshot, None, None))?;
        let kept = checked.repo.apps.len().saturating_sub(checked.computed);
        let counter = &self.metrics.checked_apps;
        counter
            .with_label_values(&["computed"])
            .inc_by(checked.computed as u64);
        counter.with_label_values(&["kept"]).inc_by(kept as u64);
        Ok(checked)
    }

    /// After a restart the last good commit is known but nothing of it is checked yet: check
    /// it once, so the first push or pull request costs only the apps it changes.
    fn warm_checks(&self) {
        if self.checker.has_results() {
            return;
        }
        let Some(sha) = lock(&self.state).last_good.clone() else {
            return;
        };
        let started = Instant::now();
        match self
            .snapshot(&sha)
            .and_then(|(snapshot, _)| self.check(&snapshot))
        {
            Ok(checked) => {
                tracing::info!(
                    commit = %sha,
                    apps = checked.repo.apps.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "checked the last good commit"
                );
                crate::check::publish(&self.services.declarations, checked.declarations);
            }
            Err(e) => {
                tracing::warn!(commit = %sha, error = %e, "could not check the last good commit")
            }
        }
    }

    /// Reads back the digests of the last reconciled commit after a restart.
    pub(super) fn restore_cursor(&self, sha: &str) -> Result<(), DaemonError> {
        let roots = self.source.input_roots(sha)?;
        let (snapshot, _) = self.source.snapshot(sha, &self.config.limits)?;
        let repo = self.checker.documents(&snapshot);
        let inputs = inputs::digests(&repo, &self.source.tree_ids(sha)?, None);
        let mut state = lock(&self.state);
        state.last_good = Some(sha.to_string());
        state.roots = roots;
        state.inputs = inputs;
        if state.github_repo.is_none() {
            state.github_repo = self.github_repo_of(&repo);
        }
        Ok(())
    }

    /// Fetches the tracked branch; on a new commit that validates, starts the pipelines of
    /// the apps whose inputs changed (when their sync policy is automated). A commit that does
    /// not validate is refused as a whole (and gets a failing `bowline/plan` status); the last
    /// good commit stays in use.
    ///
    /// It runs as a job of the `branch` key of the work queue: after the reconcile already
    /// running, if any, and shared with every other request waiting for the same run.
    pub async fn reconcile_branch(self: &Arc<Self>) -> Result<Reconciled, DaemonError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.queue.enqueue(Work::Reconcile(vec![tx])) == Enqueued::Refused {
            return Err(DaemonError::Stopped);
        }
        match rx.await {
            Ok(result) => {
                result.map_err(|e| Arc::try_unwrap(e).unwrap_or_else(DaemonError::Shared))
            }
            // The run was cancelled by a shutdown.
            Err(_) => Err(DaemonError::Stopped),
        }
    }

    /// One reconcile of the tracked branch (see [`Daemon::reconcile_branch`]); only the work
    /// queue calls it, so two never run at once.
    #[tracing::instrument(level = "info", skip(self), fields(branch = %self.branch()))]
    pub(super) async fn reconcile_branch_now(self: &Arc<Self>) -> Result<Reconciled, DaemonError> {
        let started = Instant::now();
        let result = self.reconcile_branch_inner().await;
        self.metrics
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
        let mut state = lock(&self.state);
        state.last_fetch = Some(Utc::now());
        match &result {
            Ok(outcome) => {
                state.last_error = None;
                state.failures = 0;
                let label = match outcome {
                    Reconciled::Unchanged => "unchanged",
                    Reconciled::NoAppChanged { .. } => "no_app_changed",
                    Reconciled::Started { .. } => "started",
                    Reconciled::Followed { .. } => "followed",
                };
                self.metrics.reconciles.with_label_values(&[label]).inc();
            }
            Err(e) => {
                state.last_error = Some(crate::redact::urls(&e.to_string()));
                state.failures = state.failures.saturating_add(1);
                self.metrics.reconciles.with_label_values(&["error"]).inc();
            }
        }
        self.metrics.source_failures.set(i64::from(state.failures));
        result
    }

    async fn reconcile_branch_inner(self: &Arc<Self>) -> Result<Reconciled, DaemonError> {
        let sha = self.fetch(None).await?;
        let (last_good, last_roots) = {
            let state = lock(&self.state);
            (state.last_good.clone(), state.roots.clone())
        };
        if last_good.as_deref() == Some(sha.as_str()) {
            self.warm_checks();
            return Ok(Reconciled::Unchanged);
        }
        // The cheap path: nothing bowline reads changed (a README edit, say).
        let roots = tokio::task::block_in_place(|| self.source.input_roots(&sha))?;
        if !last_roots.is_empty() && roots == last_roots {
            tracing::info!(commit = %sha, "new commit changes no application");
            self.warm_checks();
            if !self.leads() {
                self.follow(&sha, roots, None);
                return Ok(Reconciled::Followed { commit: sha });
            }
            self.advance(&sha, roots, None)?;
            return Ok(Reconciled::NoAppChanged { commit: sha });
        }
        let (snapshot, mut diagnostics) = self.snapshot(&sha)?;
        let checked = self.check(&snapshot)?;
        diagnostics.extend(checked.diagnostics);
        diagnostic::sort_and_dedup(&mut diagnostics);
        let repo = checked.repo;
        let github_repo = self.github_repo_of(&repo);
        let errors = diagnostic::error_count(&diagnostics);
        if errors > 0 {
            let first = diagnostics
                .iter()
                .find(|d| d.severity == diagnostic::Severity::Error)
                .map(ToString::to_string)
                .unwrap_or_default();
            if let Some(repo_ref) = github_repo.as_ref().filter(|_| self.leads()) {
                let status = CommitStatus {
                    context: PLAN_CONTEXT.into(),
                    state: CommitState::Failure,
                    description: format!(
                        "{} in the config repository; not deployed",
                        diagnostic::count(errors, "error")
                    ),
                    target_url: None,
                };
                self.outbox.status_or_log(repo_ref, &sha, &status);
            }
            return Err(DaemonError::Invalid {
                commit: sha,
                errors,
                first,
                kept: last_good.unwrap_or_else(|| "nothing".into()),
            });
        }
        // Apps of earlier commits this one no longer has were removed: what they managed may
        // be taken over by the apps that declare it now.
        let before: Vec<String> = match crate::check::current(&self.services.declarations) {
            Some(previous) => previous.known_apps().collect(),
            None => lock(&self.state).inputs.keys().cloned().collect(),
        };
        crate::check::publish(
            &self.services.declarations,
            checked.declarations.after(before),
        );
        let inputs = tokio::task::block_in_place(|| self.source.tree_ids(&sha))
            .map(|ids| inputs::digests(&repo, &ids, None))?;
        if !self.leads() {
            if github_repo.is_some() {
                lock(&self.state).github_repo = github_repo;
            }
            self.follow(&sha, roots, Some(inputs));
            return Ok(Reconciled::Followed { commit: sha });
        }
        let previous = lock(&self.state).inputs.clone();
        let changed = changed_apps(&previous, &inputs);
        tracing::info!(commit = %sha, changed = changed.len(), apps = ?changed, "new commit on the tracked branch");
        {
            let mut state = lock(&self.state);
            if github_repo.is_some() {
                state.github_repo = github_repo;
            }
        }
        let pull_request = self.pull_request_of(&sha);
        let mut executions = Vec::new();
        for app in &changed {
            if let Some(execution) = self.start_app(&repo, app, &sha, pull_request.as_ref())? {
                executions.push(execution.id.clone());
                self.spawn_execution(execution);
            }
        }
        if let Some(old) = &last_good {
            for execution in self
                .start_removals(old, &inputs, &sha, pull_request.as_ref())
                .await?
            {
                executions.push(execution.id.clone());
                self.spawn_execution(execution);
            }
        }
        self.advance(&sha, roots, Some(inputs))?;
        Ok(Reconciled::Started {
            commit: sha,
            changed,
            executions,
        })
    }

    /// Makes `sha` the last good commit, in memory and in the store.
    fn advance(
        &self,
        sha: &str,
        roots: Vec<String>,
        inputs: Option<std::collections::BTreeMap<String, String>>,
    ) -> Result<(), DaemonError> {
        self.store.set_meta(CURSOR_KEY, sha)?;
        let mut state = lock(&self.state);
        state.last_good = Some(sha.to_string());
        state.roots = roots;
        if let Some(inputs) = inputs {
            state.inputs = inputs;
        }
        Ok(())
    }

    /// Makes `sha` the last good commit in memory only: a replica that does not lead follows
    /// the branch for its plans and API, and leaves the cursor to the leader.
    fn follow(
        &self,
        sha: &str,
        roots: Vec<String>,
        inputs: Option<std::collections::BTreeMap<String, String>>,
    ) {
        let mut state = lock(&self.state);
        state.last_good = Some(sha.to_string());
        state.roots = roots;
        if let Some(inputs) = inputs {
            state.inputs = inputs;
        }
    }

    /// The pull request commit `sha` merges, with its author when known: from a `closed`
    /// delivery, else (number only) from the commit message.
    fn pull_request_of(&self, sha: &str) -> Option<MergedPullRequest> {
        if let Some(merged) = lock(&self.merged).get(sha) {
            return Some(merged.clone());
        }
        // Learnt by another replica.
        if let Ok(Some(text)) = self.store.meta(&merge_key(sha))
            && let Some((number, author)) = text.split_once(' ')
            && let Ok(number) = number.parse()
        {
            let author = (!author.is_empty()).then(|| author.to_string());
            return Some(MergedPullRequest { number, author });
        }
        self.source
            .commit_message(sha)
            .ok()
            .and_then(|m| merged_pull_request(&m))
            .map(|number| MergedPullRequest {
                number,
                author: None,
            })
    }

    /// Creates the execution of `app` at `sha`, unless its sync policy is manual, it has no
    /// pipeline, or an execution at this commit exists already (a restart between creating
    /// executions and recording the commit).
    fn start_app(
        &self,
        repo: &ConfigRepo,
        app: &str,
        sha: &str,
        pull_request: Option<&MergedPullRequest>,
    ) -> Result<Option<Execution>, DaemonError> {
        let Some(doc) = repo.apps.get(app) else {
            return Ok(None);
        };
        if !repo.sync_policy(&doc.doc).automated {
            tracing::info!(app, "sync policy is manual: no execution started");
            return Ok(None);
        }
        if repo.pipeline_of(&doc.doc).is_none() {
            tracing::info!(app, "no pipeline: no execution started");
            return Ok(None);
        }
        let existing = self.store.executions(&ExecutionFilter {
            app: Some(app.to_string()),
            limit: Some(20),
            ..ExecutionFilter::default()
        })?;
        if existing.iter().any(|e| e.revision == sha) {
            return Ok(None);
        }
        // Rendering may run kustomize: off the async workers.
        let mut new =
            tokio::task::block_in_place(|| pipeline::prepare(repo, app, None, sha, "push"))
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
        match self.store.create_execution(new) {
            Ok(execution) => Ok(Some(execution)),
            // Another process (a `bowline run`) delivers this revision already.
            Err(crate::store::StoreError::Duplicate { existing, .. }) => {
                tracing::info!(app, execution = %existing, "an execution of this revision is already active");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Remembers that `sha` merges pull request `number`, opened by `author` (login; empty
    /// when unknown), from a `closed` delivery.
    pub fn note_merge(&self, sha: &str, number: u64, author: &str) {
        let mut merged = lock(&self.merged);
        if merged.len() > 10_000 {
            merged.clear();
        }
        let author = (!author.trim().is_empty()).then(|| author.trim().to_string());
        if self.config.replicas.is_some() {
            // The leader starts the executions and may not have seen this delivery.
            let text = format!("{number} {}", author.as_deref().unwrap_or(""));
            if let Err(e) = self.store.set_meta(&merge_key(sha), &text) {
                tracing::warn!(commit = %sha, error = %e, "could not record the merged pull request");
            }
        }
        merged.insert(sha.to_string(), MergedPullRequest { number, author });
    }
}

/// Store key of the pull request commit `sha` merges, for the replica that leads.
fn merge_key(sha: &str) -> String {
    format!("pullRequest.mergedBy.{sha}")
}

/// A merged pull request, as the executions delivering it record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MergedPullRequest {
    /// Its number.
    pub number: u64,
    /// Who opened it, when known (from the `closed` delivery).
    pub author: Option<String>,
}

//! The pull-request flow: check out the PR head, validate, render the apps it affects for
//! every environment, evaluate the policies, diff against the live clusters, and post one
//! sticky comment and a `bowline/plan` status.
//!
//! A pull request is untrusted input. Its plan runs under the platform settings of the last
//! good commit of the tracked branch (`bowline.yaml`, `policies/`), never its own; only a
//! change whose author has write access (and that does not come from a fork, unless the
//! repository opts in) — or one a write collaborator asked for with `/bowline plan` — is
//! compared with the live clusters; every other one is planned against an empty cluster.
//! Plans run on the daemon's work queue under the key `pr/<n>`: coalesced per pull request
//! (the newest request wins) and within `DaemonConfig::max_concurrent_work`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::queue::Enqueued;
use super::work::Work;
use super::{Daemon, DaemonError, PLAN_CONTEXT, lock};
use crate::config::ConfigRepo;
use crate::config::inputs::{self, changed_apps};
use crate::diagnostic::{self, Diagnostic};
use crate::diff::Action;
use crate::forge::{
    CommentSection, CommitState, CommitStatus, PullRequestEvent, SectionDiff, has_write_access,
    render_comment, sticky_marker,
};
use crate::plan::LiveDiff;
use crate::policy::PolicyReport;
use crate::source::{Snapshot, is_platform_path};
use crate::sync::{self, LiveState};

/// The last good commit of the tracked branch, its snapshot and documents: the settings pull
/// requests are planned under.
pub(super) type Trusted = (String, Snapshot, ConfigRepo);

/// Key of the sticky plan comment's hidden marker.
const COMMENT_KEY: &str = "plan";

/// One request to plan a pull request.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// The pull request as of the delivery (its head commit is fetched again when planning).
    pub pr: PullRequestEvent,
    /// The write collaborator who asked for the live plan with `/bowline plan` (their access
    /// was checked before the request was made).
    pub live_requested_by: Option<String>,
}

/// What became of a plan request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanQueued {
    /// A plan of the pull request starts (at once, or when a plan slot frees up).
    Started,
    /// A plan of the pull request is running or waiting; this request is merged into the one
    /// waiting behind it.
    Coalesced,
    /// The daemon is shutting down: no plan.
    Refused,
}

/// Merges a new request into the one waiting for the same pull request: the newest head
/// wins; for the same head, a live request is kept.
pub(super) fn coalesce(waiting: Option<PlanRequest>, new: PlanRequest) -> PlanRequest {
    match waiting {
        Some(old) if old.pr.head_sha == new.pr.head_sha && new.live_requested_by.is_none() => {
            PlanRequest {
                live_requested_by: old.live_requested_by,
                ..new
            }
        }
        _ => new,
    }
}

/// Why a plan is not compared with the live clusters, or `None` when it may be.
fn offline_reason(
    request: &PlanRequest,
    settings: Option<&ConfigRepo>,
    author_permission: Option<&str>,
) -> Option<String> {
    let pr = &request.pr;
    if request.live_requested_by.is_some() {
        return None;
    }
    let Some(settings) = settings else {
        return Some(
            "the tracked branch has no validated commit yet, so there are no trusted settings"
                .into(),
        );
    };
    let from_fork = !pr.head_repo.as_ref().is_some_and(|head| {
        head.owner.eq_ignore_ascii_case(&pr.repo.owner)
            && head.name.eq_ignore_ascii_case(&pr.repo.name)
    });
    let forks_opted_in = settings
        .repository
        .as_ref()
        .and_then(|r| r.doc.spec.forge.as_ref())
        .and_then(|f| f.github.as_ref())
        .is_some_and(|g| g.live_plan_forks);
    if from_fork && !forks_opted_in {
        return Some("the pull request comes from a fork".into());
    }
    match author_permission {
        Some(p) if has_write_access(p) => None,
        Some(_) if pr.author.is_empty() => Some("the pull request names no author".into()),
        Some(_) => Some(format!(
            "its author @{} has no write access to {}",
            pr.author, pr.repo
        )),
        None => Some(format!(
            "GitHub could not confirm that its author @{} has write access",
            pr.author
        )),
    }
}

/// The platform side of a plan: the settings it ran under and the change it proposes to them.
#[derive(Debug, Clone, Default)]
pub struct Platform {
    /// The tracked branch and its last good commit whose settings the plan used (`None`: the
    /// branch has no good commit yet, and the pull request's own settings were used, offline).
    pub settings_from: Option<(String, String)>,
    /// Platform files (`bowline.yaml`, `policies/`) the pull request changes.
    pub changed: Vec<String>,
}

impl Daemon {
    /// Queues a plan of a pull request (key `pr/<n>` of the work queue): it starts at once
    /// unless the pull request already has one running, in which case it waits behind it,
    /// merged with any request already waiting (the newest head wins).
    pub fn request_plan(&self, request: PlanRequest) -> PlanQueued {
        match self.queue.enqueue(Work::Plan(Box::new(request))) {
            Enqueued::Started => PlanQueued::Started,
            Enqueued::Coalesced => {
                self.metrics.plans.with_label_values(&["coalesced"]).inc();
                PlanQueued::Coalesced
            }
            Enqueued::Refused => PlanQueued::Refused,
        }
    }

    /// Plans a pull request and records the result in the outbox: a pending `bowline/plan`
    /// status at once, then the sticky comment (created or updated in place) and the final
    /// status.
    #[tracing::instrument(level = "info", skip(self, request), fields(pr = request.pr.number, head = %request.pr.head_sha, live_requested_by = request.live_requested_by.as_deref()))]
    pub async fn plan_pull_request(&self, request: &PlanRequest) -> Result<(), DaemonError> {
        let pr = &request.pr;
        let result = self.plan_pull_request_inner(request).await;
        self.metrics
            .plans
            .with_label_values(&[if result.is_ok() { "ok" } else { "error" }])
            .inc();
        if let (Err(e), Ok(_)) = (&result, self.github()) {
            // Tell the author instead of leaving the status pending forever.
            let status = CommitStatus {
                context: PLAN_CONTEXT.into(),
                state: CommitState::Error,
                description: format!("plan failed: {e}"),
                target_url: None,
            };
            self.outbox.status_or_log(&pr.repo, &pr.head_sha, &status);
        }
        result
    }

    /// The trusted settings for a plan: the last good commit of the tracked branch, its
    /// snapshot and loaded repository.
    /// Kept while the last good commit stays the same, so plans do not read it again.
    fn trusted_settings(&self) -> Result<Option<Arc<Trusted>>, DaemonError> {
        let Some(last_good) = lock(&self.state).last_good.clone() else {
            return Ok(None);
        };
        if let Some(kept) = lock(&self.trusted).as_ref()
            && kept.0 == last_good
        {
            return Ok(Some(kept.clone()));
        }
        let (snapshot, _) = self.snapshot(&last_good)?;
        let repo = self.checker.documents(&snapshot);
        let trusted = Arc::new((last_good, snapshot, repo));
        *lock(&self.trusted) = Some(trusted.clone());
        Ok(Some(trusted))
    }

    async fn plan_pull_request_inner(&self, request: &PlanRequest) -> Result<(), DaemonError> {
        let pr = &request.pr;
        let github = self.github()?;
        let pending = CommitStatus {
            context: PLAN_CONTEXT.into(),
            state: CommitState::Pending,
            description: "validating, rendering and diffing".into(),
            target_url: None,
        };
        self.outbox.status(&pr.repo, &pr.head_sha, &pending)?;
        let sha = self
            .fetch(Some(&format!("refs/pull/{}/head", pr.number)))
            .await?;
        let (head, mut diagnostics) = self.snapshot(&sha)?;
        let trusted = self.trusted_settings()?;
        let mut platform = Platform::default();
        let planned_snapshot = match trusted.as_deref() {
            Some((last_good, base, _)) => {
                let (planned, changed) = head.with_platform_of(base);
                platform.settings_from = Some((self.branch().to_string(), last_good.clone()));
                platform.changed = changed;
                planned
            }
            None => head.clone(),
        };
        if !platform.changed.is_empty() {
            // The proposed settings are checked as documents (and policies compiled, never
            // evaluated), so their author sees their errors; they take effect only once merged.
            diagnostics.extend(tokio::task::block_in_place(|| {
                proposed_platform_problems(&self.checker, &head)
            })?);
        }
        let checked = self.check(&planned_snapshot)?;
        diagnostics.extend(checked.diagnostics);
        diagnostic::sort_and_dedup(&mut diagnostics);
        // Who declares what once merged: a move between apps plans as a handover, also out of
        // an app the pull request removes.
        let declarations = checked.declarations.after(
            trusted.iter().flat_map(|t| t.2.apps.keys().cloned()).chain(
                crate::check::current(&self.services.declarations)
                    .iter()
                    .flat_map(|d| d.known_apps().collect::<Vec<_>>()),
            ),
        );
        let repo = checked.repo;
        let root = lock(&self.state)
            .roots
            .first()
            .cloned()
            .filter(|_| trusted.is_some());
        let head_inputs = tokio::task::block_in_place(|| self.source.tree_ids(&sha))
            .map(|ids| inputs::digests(&repo, &ids, root.as_deref()))?;
        let base_inputs = self.base_inputs(&pr.base_ref).await;
        let affected = match &base_inputs {
            Some(base) => changed_apps(base, &head_inputs),
            None => head_inputs.keys().cloned().collect(),
        };
        let permission = if request.live_requested_by.is_some() || trusted.is_none() {
            None
        } else {
            match github.permission(&pr.repo, &pr.author).await {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, author = %pr.author, "could not read the author's permission; planning offline");
                    None
                }
            }
        };
        let offline = offline_reason(
            request,
            trusted.as_ref().map(|t| &t.2),
            permission.as_deref(),
        );
        // Apps the pull request deletes, as the tracked branch describes them: planned with
        // nothing desired, so a removal's deletes show (with prune on).
        let removed: Vec<(String, bool)> = match (&base_inputs, trusted.as_deref()) {
            (Some(base), Some((_, _, base_repo))) => base
                .keys()
                .filter(|app| !head_inputs.contains_key(*app))
                .filter_map(|app| {
                    let doc = &base_repo.apps.get(app)?.doc;
                    let policy = base_repo.sync_policy(doc);
                    Some((app.clone(), policy.prune && policy.automated))
                })
                .collect(),
            _ => Vec::new(),
        };
        let base_repo = trusted.as_ref().map(|t| &t.2);
        // Rendering may run kustomize: off the async workers.
        let rendered: Vec<_> = tokio::task::block_in_place(|| {
            affected
                .iter()
                .flat_map(|app| sync::render_targets(&repo, Some(app), None))
                .collect()
        });
        let targets: Vec<_> = rendered
            .into_iter()
            .chain(
                removed
                    .iter()
                    .filter(|(_, prune)| *prune)
                    .flat_map(|(app, _)| {
                        base_repo
                            .map(|base| sync::removal_targets(base, app))
                            .unwrap_or_default()
                    }),
            )
            .collect();
        let affected: Vec<String> = affected
            .iter()
            .cloned()
            .chain(removed.iter().map(|(app, _)| app.clone()))
            .collect();
        let live = match &offline {
            None => {
                let configured = self.config.connect.configured();
                let planned = sync::plan_targets(
                    &targets,
                    &self.services.clusters,
                    configured.is_some(),
                    &self.config.masker,
                    &request.pr.head_sha,
                    Some(&declarations),
                )
                .await;
                LiveDiff::new(planned, None)
            }
            Some(reason) => {
                let mut planned = sync::plan_targets(
                    &targets,
                    &self.services.clusters,
                    false,
                    &self.config.masker,
                    &request.pr.head_sha,
                    None,
                )
                .await;
                for t in &mut planned {
                    t.live = LiveState::Empty {
                        reason: reason.clone(),
                    };
                }
                let mut live = LiveDiff::new(planned, None);
                live.compared_with = format!(
                    "Compared with an empty cluster: {reason}. A collaborator with write access can comment `/bowline plan` to compare with the live clusters."
                );
                live
            }
        };
        tracing::info!(
            live = offline.is_none(),
            reason = offline.as_deref(),
            platform_changes = platform.changed.len(),
            "pull request planned"
        );
        let mut policy = PolicyReport {
            results: checked
                .policy
                .results
                .into_iter()
                .filter(|r| affected.contains(&r.app))
                .collect(),
            exceptions: checked
                .policy
                .exceptions
                .into_iter()
                .filter(|e| affected.contains(&e.app))
                .collect(),
            problems: Vec::new(),
        };
        policy.sort();
        let body = pr_comment(&PlanComment {
            sha: &sha,
            affected: &affected,
            diagnostics: &diagnostics,
            policy: &policy,
            live: &live,
            platform: &platform,
            removed: &removed,
        });
        self.outbox
            .comment(&pr.repo, pr.number, &sticky_marker(COMMENT_KEY), &body)?;
        let errors = diagnostic::error_count(&diagnostics);
        let (state, description) = if errors > 0 {
            (
                CommitState::Failure,
                format!(
                    "{} (validation or policy)",
                    diagnostic::count(errors, "error")
                ),
            )
        } else if affected.is_empty() && platform.changed.is_empty() {
            (CommitState::Success, "no application changed".to_string())
        } else if affected.is_empty() {
            (
                CommitState::Success,
                "platform change only: needs platform review".to_string(),
            )
        } else if offline.is_some() {
            (
                CommitState::Success,
                format!("{} (against an empty cluster)", live.totals),
            )
        } else {
            (CommitState::Success, live.totals.to_string())
        };
        self.outbox.status(
            &pr.repo,
            &pr.head_sha,
            &CommitStatus {
                context: PLAN_CONTEXT.into(),
                state,
                description,
                target_url: None,
            },
        )?;
        Ok(())
    }

    /// The input digests of the base branch: the last good commit's for the tracked branch,
    /// else fetched. `None` when the base cannot be read (every app then counts as affected).
    async fn base_inputs(&self, base_ref: &str) -> Option<BTreeMap<String, String>> {
        if base_ref == self.branch() {
            let state = lock(&self.state);
            if state.last_good.is_some() {
                return Some(state.inputs.clone());
            }
        }
        let sha = self
            .fetch(Some(&format!("refs/heads/{base_ref}")))
            .await
            .ok()?;
        let (snapshot, _) = self.snapshot(&sha).ok()?;
        let repo = self.checker.documents(&snapshot);
        let root = lock(&self.state).roots.first().cloned();
        tokio::task::block_in_place(|| self.source.tree_ids(&sha))
            .ok()
            .map(|ids| inputs::digests(&repo, &ids, root.as_deref()))
    }
}

/// Problems of the platform files a pull request proposes: `bowline.yaml` loaded and checked
/// against its schema, repository policies parsed and compiled (never evaluated).
fn proposed_platform_problems(
    checker: &crate::check::Checker,
    head: &Snapshot,
) -> Result<Vec<Diagnostic>, DaemonError> {
    let mut problems = checker.platform_problems(head);
    problems.retain(|d| is_platform_path(&d.file));
    let (_, policy_problems) = crate::policy::load::from_snapshot(head)?;
    problems.extend(policy_problems);
    Ok(problems)
}

/// At most this many diagnostics are listed in the comment.
const MAX_DIAGNOSTICS: usize = 50;

fn fenced_lines<T: std::fmt::Display>(out: &mut String, items: &[T]) {
    out.push_str("```text\n");
    for item in items.iter().take(MAX_DIAGNOSTICS) {
        out.push_str(&format!("{item}\n"));
    }
    if items.len() > MAX_DIAGNOSTICS {
        out.push_str(&format!("… and {} more\n", items.len() - MAX_DIAGNOSTICS));
    }
    out.push_str("```\n\n");
}

/// What the sticky PR comment reports.
#[derive(Debug, Clone, Copy)]
pub struct PlanComment<'a> {
    /// The commit planned.
    pub sha: &'a str,
    /// Apps whose inputs the pull request changes.
    pub affected: &'a [String],
    /// Validation problems (of the planned commit and of proposed platform files).
    pub diagnostics: &'a [Diagnostic],
    /// Policy results and exceptions of the affected apps.
    pub policy: &'a PolicyReport,
    /// The diff per app, environment and cluster.
    pub live: &'a LiveDiff,
    /// The settings used and the platform change proposed.
    pub platform: &'a Platform,
    /// Apps the pull request deletes, with whether their objects are deleted (`prune`).
    pub removed: &'a [(String, bool)],
}

/// The sticky PR comment: the settings it was planned with and any platform change, what was
/// compared, validation problems, policy results and exceptions, a summary table per app,
/// environment and cluster, then a collapsible diff per target with changes (Secret values
/// already masked by the diff).
pub fn pr_comment(plan: &PlanComment<'_>) -> String {
    let PlanComment {
        sha,
        affected,
        diagnostics,
        policy,
        live,
        platform,
        removed,
    } = *plan;
    let short: String = sha.chars().take(7).collect();
    let mut header = format!("### bowline plan for `{short}`\n\n");
    match &platform.settings_from {
        Some((branch, commit)) => header.push_str(&format!(
            "Planned with the platform settings (`bowline.yaml`, `policies/`) of `{branch}` at `{}`.\n\n",
            commit.chars().take(7).collect::<String>()
        )),
        None => header.push_str(
            "Planned with this pull request's own platform settings: the tracked branch has no validated commit yet.\n\n",
        ),
    }
    if !platform.changed.is_empty() {
        header.push_str(&format!(
            "**Platform change — needs review by the platform team.** This pull request changes {}. The change is not used by this plan; it takes effect only once merged.\n\n",
            platform
                .changed
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let errors = diagnostic::error_count(diagnostics);
    if affected.is_empty() {
        header.push_str("No application's inputs changed.\n\n");
    } else {
        header.push_str(&format!(
            "{} affected: {}. {}\n\n",
            diagnostic::count(affected.len(), "application"),
            affected
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", "),
            live.compared_with
        ));
    }
    for (app, prune) in removed {
        if *prune {
            header.push_str(&format!(
                "**Removes `{app}`:** once merged, a removal execution deletes what bowline created for it (the deletes below), cluster by cluster; when that is more than an environment's `maxDeletePercent` of its objects, it waits for `/bowline approve`.\n\n"
            ));
        } else {
            header.push_str(&format!(
                "**Removes `{app}`:** its `syncPolicy.prune` is off, so its objects are left running in the clusters.\n\n"
            ));
        }
    }
    if !diagnostics.is_empty() {
        header.push_str(&format!(
            "**{}, {}**{}\n\n",
            diagnostic::count(errors, "error"),
            diagnostic::count(diagnostics.len() - errors, "warning"),
            if errors > 0 {
                " — this commit would not be deployed"
            } else {
                ""
            }
        ));
        fenced_lines(&mut header, diagnostics);
    }
    if policy.results.is_empty() {
        if !affected.is_empty() {
            header.push_str("**Policies:** all passed.\n\n");
        }
    } else {
        header.push_str(&format!(
            "**Policies:** {} denied, {} warned\n\n",
            policy.denied(),
            policy.results.len() - policy.denied()
        ));
        let lines: Vec<Diagnostic> = policy.results.iter().map(|r| r.to_diagnostic()).collect();
        fenced_lines(&mut header, &lines);
    }
    if !policy.exceptions.is_empty() {
        // Exceptions are annotations the change declares on its own objects: list the waived
        // built-in policies apart, so reviewers see what the change exempts itself from.
        let builtin: Vec<String> = crate::policy::PolicySet::builtin()
            .map(|set| {
                set.policies()
                    .iter()
                    .filter(|p| p.builtin)
                    .map(|p| p.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        let (of_builtin, of_repository): (Vec<_>, Vec<_>) = policy
            .exceptions
            .iter()
            .cloned()
            .partition(|e| builtin.contains(&e.policy));
        if !of_builtin.is_empty() {
            header.push_str(&format!(
                "**Exceptions to built-in policies** ({}), declared by annotations on the objects themselves — review each one:\n\n",
                of_builtin.len()
            ));
            fenced_lines(&mut header, &of_builtin);
        }
        if !of_repository.is_empty() {
            header.push_str(&format!(
                "**Exceptions to repository policies** ({}), declared by annotations on the objects themselves:\n\n",
                of_repository.len()
            ));
            fenced_lines(&mut header, &of_repository);
        }
    }
    if !live.targets.is_empty() {
        header.push_str(
            "| app | environment | cluster | create | update | delete | unchanged |\n|---|---|---|---:|---:|---:|---:|\n",
        );
        for t in &live.targets {
            header.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                t.app,
                t.environment,
                t.cluster,
                t.counts.create,
                t.counts.update,
                t.counts.delete,
                t.counts.unchanged
            ));
        }
        header.push('\n');
    }
    let sections: Vec<CommentSection> = live
        .targets
        .iter()
        .filter(|t| !t.counts.in_sync())
        .map(|t| CommentSection {
            title: format!("{} → {} ({})", t.app, t.environment, t.cluster),
            summary: t.counts.to_string(),
            diffs: t
                .objects
                .iter()
                .filter(|o| o.action != Action::Unchanged)
                .map(|o| SectionDiff {
                    object: o.key.to_string(),
                    text: o.unified.clone(),
                })
                .collect(),
        })
        .collect();
    let footer = format!(
        "{} across {}.",
        live.totals,
        diagnostic::count(live.targets.len(), "app/environment/cluster target")
    );
    render_comment(&sticky_marker(COMMENT_KEY), &header, &sections, &footer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::{PrAction, RepoRef};

    fn request(head: &str, author: &str, head_repo: Option<&str>) -> PlanRequest {
        PlanRequest {
            pr: PullRequestEvent {
                action: PrAction::Synchronize,
                repo: RepoRef::new("acme", "config"),
                number: 7,
                head_sha: head.into(),
                head_ref: "feature".into(),
                head_repo: head_repo.and_then(RepoRef::parse),
                base_ref: "main".into(),
                merge_commit_sha: None,
                sender: author.into(),
                author: author.into(),
            },
            live_requested_by: None,
        }
    }

    fn settings(live_plan_forks: bool) -> ConfigRepo {
        let snapshot = Snapshot::from_files([(
            "bowline.yaml",
            format!(
                "apiVersion: bowline/v1\nkind: Repository\nmetadata:\n  name: r\nspec:\n  environments:\n    - name: staging\n      namespace: s\n      clusters: [{{name: c, context: c}}]\n  forge:\n    github:\n      owner: acme\n      repository: config\n      livePlanForks: {live_plan_forks}\n"
            ),
        )]);
        let (repo, diagnostics) = crate::config::load(&snapshot);
        assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
        repo
    }

    #[test]
    fn only_writers_branches_are_planned_live() {
        let repo = settings(false);
        let own = request("a", "dev", Some("acme/config"));
        assert_eq!(offline_reason(&own, Some(&repo), Some("write")), None);
        assert_eq!(offline_reason(&own, Some(&repo), Some("admin")), None);
        assert_eq!(
            offline_reason(&own, Some(&repo), Some("read")).as_deref(),
            Some("its author @dev has no write access to acme/config")
        );
        assert_eq!(
            offline_reason(&own, Some(&repo), None).as_deref(),
            Some("GitHub could not confirm that its author @dev has write access")
        );
        let same_repo_other_case = request("a", "dev", Some("ACME/Config"));
        assert_eq!(
            offline_reason(&same_repo_other_case, Some(&repo), Some("write")),
            None
        );
        for fork in [
            request("a", "dev", Some("dev/config")),
            request("a", "dev", None),
        ] {
            assert_eq!(
                offline_reason(&fork, Some(&repo), Some("admin")).as_deref(),
                Some("the pull request comes from a fork")
            );
        }
        assert!(
            offline_reason(&own, None, Some("admin"))
                .is_some_and(|r| r.contains("no validated commit"))
        );
    }

    #[test]
    fn forks_of_writers_are_live_only_when_the_repository_opts_in() {
        let repo = settings(true);
        let fork = request("a", "dev", Some("dev/config"));
        assert_eq!(offline_reason(&fork, Some(&repo), Some("write")), None);
        assert!(offline_reason(&fork, Some(&repo), Some("read")).is_some());
    }

    #[test]
    fn a_collaborators_request_is_live() {
        let repo = settings(false);
        let mut fork = request("a", "stranger", Some("stranger/config"));
        fork.live_requested_by = Some("maintainer".into());
        assert_eq!(offline_reason(&fork, Some(&repo), Some("none")), None);
    }

    #[test]
    fn the_newest_request_wins_and_a_live_request_for_the_same_head_is_kept() {
        let mut live = request("a", "dev", None);
        live.live_requested_by = Some("maintainer".into());
        let same_head = coalesce(Some(live.clone()), request("a", "dev", None));
        assert_eq!(same_head.live_requested_by.as_deref(), Some("maintainer"));
        let newer = coalesce(Some(live), request("b", "dev", None));
        assert_eq!(newer.pr.head_sha, "b");
        assert_eq!(newer.live_requested_by, None);
        assert_eq!(coalesce(None, request("c", "dev", None)).pr.head_sha, "c");
    }
}

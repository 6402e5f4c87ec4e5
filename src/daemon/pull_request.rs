//! The pull-request flow: check out the PR head, validate, render the apps it affects for
//! every environment, evaluate the policies, diff against the live clusters, and post one
//! sticky comment and a `bowline/plan` status.

use std::collections::BTreeMap;

use super::{Daemon, DaemonError, PLAN_CONTEXT, lock};
use crate::diagnostic::{self, Diagnostic};
use crate::diff::Action;
use crate::forge::{
    CommentSection, CommitState, CommitStatus, PullRequestEvent, render_comment, sticky_marker,
};
use crate::plan::LiveDiff;
use crate::policy::PolicyReport;
use crate::source::git::changed_apps;
use crate::sync;

/// Key of the sticky plan comment's hidden marker.
const COMMENT_KEY: &str = "plan";

impl Daemon {
    /// Plans a pull request and posts the result: a pending `bowline/plan` status at once,
    /// then the sticky comment (created or updated in place) and the final status.
    #[tracing::instrument(level = "info", skip(self, pr), fields(pr = pr.number, head = %pr.head_sha))]
    pub async fn plan_pull_request(&self, pr: &PullRequestEvent) -> Result<(), DaemonError> {
        let result = self.plan_pull_request_inner(pr).await;
        self.metrics
            .plans
            .with_label_values(&[if result.is_ok() { "ok" } else { "error" }])
            .inc();
        if let (Err(e), Ok(github)) = (&result, self.github()) {
            // Tell the author instead of leaving the status pending forever.
            let status = CommitStatus {
                context: PLAN_CONTEXT.into(),
                state: CommitState::Error,
                description: format!("plan failed: {e}"),
                target_url: None,
            };
            if let Err(e) = github.set_status(&pr.repo, &pr.head_sha, &status).await {
                tracing::warn!(error = %e, "could not set the plan status");
            }
        }
        result
    }

    async fn plan_pull_request_inner(&self, pr: &PullRequestEvent) -> Result<(), DaemonError> {
        let github = self.github()?;
        let pending = CommitStatus {
            context: PLAN_CONTEXT.into(),
            state: CommitState::Pending,
            description: "rendering and diffing against the live clusters".into(),
            target_url: None,
        };
        github.set_status(&pr.repo, &pr.head_sha, &pending).await?;
        let sha = self
            .fetch(Some(&format!("refs/pull/{}/head", pr.number)))
            .await?;
        let (snapshot, mut diagnostics) = self.snapshot(&sha)?;
        let checked =
            tokio::task::block_in_place(|| crate::policy::check_snapshot(&snapshot, None, None))?;
        diagnostics.extend(checked.diagnostics);
        diagnostic::sort_and_dedup(&mut diagnostics);
        let repo = checked.repo;
        let head_inputs = tokio::task::block_in_place(|| self.source.input_ids(&sha, &repo))?;
        let base_inputs = self.base_inputs(&pr.base_ref).await;
        let affected = match &base_inputs {
            Some(base) => changed_apps(base, &head_inputs),
            None => head_inputs.keys().cloned().collect(),
        };
        let targets: Vec<_> = affected
            .iter()
            .flat_map(|app| sync::render_targets(&repo, Some(app), None))
            .collect();
        let configured = self.config.connect.configured();
        let planned = sync::plan_targets(
            &targets,
            &self.config.connect,
            configured.is_some(),
            &self.config.masker,
        )
        .await;
        let live = LiveDiff::new(planned, None);
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
        let body = pr_comment(&sha, &affected, &diagnostics, &policy, &live);
        github
            .upsert_sticky_comment(&pr.repo, pr.number, &sticky_marker(COMMENT_KEY), &body)
            .await?;
        let errors = diagnostic::error_count(&diagnostics);
        let (state, description) = if errors > 0 {
            (
                CommitState::Failure,
                format!(
                    "{} (validation or policy)",
                    diagnostic::count(errors, "error")
                ),
            )
        } else if affected.is_empty() {
            (CommitState::Success, "no application changed".to_string())
        } else {
            (CommitState::Success, live.totals.to_string())
        };
        github
            .set_status(
                &pr.repo,
                &pr.head_sha,
                &CommitStatus {
                    context: PLAN_CONTEXT.into(),
                    state,
                    description,
                    target_url: None,
                },
            )
            .await?;
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
        let (repo, _) = crate::config::load(&snapshot);
        tokio::task::block_in_place(|| self.source.input_ids(&sha, &repo)).ok()
    }
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

/// The sticky PR comment: what was compared, validation problems, policy results and
/// exceptions, a summary table per app, environment and cluster, then a collapsible diff per
/// target with changes (Secret values already masked by the diff).
pub fn pr_comment(
    sha: &str,
    affected: &[String],
    diagnostics: &[Diagnostic],
    policy: &PolicyReport,
    live: &LiveDiff,
) -> String {
    let short: String = sha.chars().take(7).collect();
    let mut header = format!("### bowline plan for `{short}`\n\n");
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
        header.push_str(&format!(
            "**Policy exceptions** ({}):\n\n",
            policy.exceptions.len()
        ));
        fenced_lines(&mut header, &policy.exceptions);
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
            body: t
                .objects
                .iter()
                .filter(|o| o.action != Action::Unchanged)
                .map(|o| o.unified.clone())
                .collect::<Vec<_>>()
                .join("\n"),
        })
        .collect();
    let footer = format!(
        "{} across {}.",
        live.totals,
        diagnostic::count(live.targets.len(), "app/environment/cluster target")
    );
    render_comment(&sticky_marker(COMMENT_KEY), &header, &sections, &footer)
}

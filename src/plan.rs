//! `bowline plan`: per application and environment, whether it validates, how many objects it
//! renders to, which pipeline stages would run there, and — per cluster — what would change
//! (the live diff, computed by [`crate::sync::plan`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde::Serialize;

use crate::config::instantiate::instantiate;
use crate::config::{ConfigRepo, Stage, StageAction};
use crate::diagnostic::{Diagnostic, count};
use crate::diff::{Action, Counts};
use crate::render::RenderSummary;
use crate::sync::{LiveState, TargetPlan};

/// One stage as shown in a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedStage {
    /// Stage name.
    pub name: String,
    /// Type, with the strategy for deploy stages (`deploy/canary`).
    pub kind: String,
    /// Run condition, when the stage has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
}

/// One row of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanRow {
    /// Application.
    pub app: String,
    /// Environment.
    pub environment: String,
    /// Target namespace.
    pub namespace: String,
    /// Clusters as `name (wave N)`.
    pub clusters: Vec<String>,
    /// Errors that concern this application in this environment.
    pub errors: usize,
    /// Rendered objects (none when rendering failed).
    pub objects: Option<usize>,
    /// Pipeline template, if any.
    pub pipeline: Option<String>,
    /// Stages that run for this environment, in dependency order.
    pub stages: Vec<PlannedStage>,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Rows in application, then promotion order.
    pub rows: Vec<PlanRow>,
    /// Errors in the repository as a whole.
    pub errors: usize,
    /// Warnings.
    pub warnings: usize,
}

/// Builds the plan from a loaded repository, its diagnostics and its rendered output.
pub fn build(repo: &ConfigRepo, diagnostics: &[Diagnostic], rendered: &[RenderSummary]) -> Plan {
    let by_target: HashMap<(&str, &str), &RenderSummary> = rendered
        .iter()
        .map(|r| ((r.app.as_str(), r.environment.as_str()), r))
        .collect();
    let render_errors: HashSet<&Diagnostic> = rendered
        .iter()
        .filter_map(|r| r.result.as_ref().err())
        .flatten()
        .collect();
    let mut rows = Vec::new();
    for (name, app) in &repo.apps {
        let pipeline = repo.pipeline_of(&app.doc).map(str::to_string);
        let template = pipeline.as_deref().and_then(|p| repo.pipelines.get(p));
        let stages = template.and_then(|t| instantiate(&t.doc, &app.doc).ok());
        let environments = repo.app_environments(&app.doc);
        let first_env = environments.first().map(|e| e.name.clone());
        let attributed = stages
            .as_ref()
            .map(|s| attribute(s, first_env.as_deref()))
            .unwrap_or_default();
        let own_files: Vec<String> = std::iter::once(format!("apps/{name}/"))
            .chain(template.map(|t| t.file.clone()))
            .chain(
                app.doc
                    .spec
                    .canary
                    .as_ref()
                    .and_then(|c| repo.canaries.get(&c.config))
                    .map(|c| c.file.clone()),
            )
            .collect();
        // Render errors are counted per environment below, not here.
        let file_errors = diagnostics
            .iter()
            .filter(|d| d.is_error() && !render_errors.contains(d))
            .filter(|d| own_files.iter().any(|f| d.file.starts_with(f.as_str())))
            .count();
        for env in environments {
            let rendered = by_target.get(&(name.as_str(), env.name.as_str()));
            let (objects, render_errors) = match rendered.map(|r| &r.result) {
                Some(Ok(objects)) => (Some(*objects), 0),
                Some(Err(errors)) => (None, errors.len()),
                None => (None, 0),
            };
            let namespace = app
                .doc
                .spec
                .environments
                .get(&env.name)
                .and_then(|e| e.as_ref())
                .and_then(|e| e.namespace.clone())
                .unwrap_or_else(|| env.namespace.clone());
            let stages = attributed
                .iter()
                .filter(|(e, _)| e.as_deref() == Some(env.name.as_str()))
                .map(|(_, s)| s.clone())
                .collect();
            rows.push(PlanRow {
                app: name.clone(),
                environment: env.name.clone(),
                namespace,
                clusters: env
                    .clusters
                    .iter()
                    .map(|c| format!("{} (wave {})", c.name, c.wave))
                    .collect(),
                errors: file_errors + render_errors,
                objects,
                pipeline: pipeline.clone(),
                stages,
            });
        }
    }
    Plan {
        rows,
        errors: crate::diagnostic::error_count(diagnostics),
        warnings: diagnostics.len() - crate::diagnostic::error_count(diagnostics),
    }
}

/// [`build`] for a repository whose diagnostics include policy results: those count as errors
/// (deny) or warnings (warn) of their own application and environment only, not of every
/// environment of the app as other problems in its files do.
pub fn build_with_policy(
    repo: &ConfigRepo,
    diagnostics: &[Diagnostic],
    rendered: &[RenderSummary],
    policy: &crate::policy::PolicyReport,
) -> Plan {
    let from_policy: HashSet<Diagnostic> = policy.diagnostics().into_iter().collect();
    let others: Vec<Diagnostic> = diagnostics
        .iter()
        .filter(|d| !from_policy.contains(d))
        .cloned()
        .collect();
    let mut plan = build(repo, &others, rendered);
    for row in &mut plan.rows {
        row.errors += policy
            .results
            .iter()
            .filter(|r| r.severity == crate::policy::PolicySeverity::Deny)
            .filter(|r| r.app == row.app && r.environment == row.environment)
            .count();
    }
    let policy_errors = from_policy.iter().filter(|d| d.is_error()).count();
    plan.errors += policy_errors;
    plan.warnings += from_policy.len() - policy_errors;
    plan
}

/// Stages in dependency order (declaration order among independent ones), each with the
/// environment it belongs to: its own, else that of the nearest stage depending on it, else
/// that of the nearest stage it depends on, else `fallback`.
fn attribute(stages: &[Stage], fallback: Option<&str>) -> Vec<(Option<String>, PlannedStage)> {
    let index: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); stages.len()];
    let mut indegree = vec![0usize; stages.len()];
    for (i, s) in stages.iter().enumerate() {
        for d in &s.depends_on {
            if let Some(&j) = index.get(d.as_str()) {
                dependents[j].push(i);
                indegree[i] += 1;
            }
        }
    }
    // Kahn's algorithm; a BTreeMap keyed by index keeps declaration order among ready stages.
    let mut ready: BTreeMap<usize, ()> = (0..stages.len())
        .filter(|&i| indegree[i] == 0)
        .map(|i| (i, ()))
        .collect();
    let mut order = Vec::new();
    while let Some((i, ())) = ready.pop_first() {
        order.push(i);
        for &k in &dependents[i] {
            indegree[k] -= 1;
            if indegree[k] == 0 {
                ready.insert(k, ());
            }
        }
    }
    let nearest = |start: usize, forward: bool| -> Option<String> {
        let mut queue = VecDeque::from([start]);
        let mut seen = vec![false; stages.len()];
        while let Some(i) = queue.pop_front() {
            if seen[i] {
                continue;
            }
            seen[i] = true;
            if let Some(env) = &stages[i].environment {
                return Some(env.clone());
            }
            if forward {
                queue.extend(dependents[i].iter().copied());
            } else {
                queue.extend(
                    stages[i]
                        .depends_on
                        .iter()
                        .filter_map(|d| index.get(d.as_str()).copied()),
                );
            }
        }
        None
    };
    order
        .into_iter()
        .map(|i| {
            let s = &stages[i];
            let env = nearest(i, true)
                .or_else(|| nearest(i, false))
                .or_else(|| fallback.map(str::to_string));
            let kind = match &s.action {
                StageAction::Deploy(d) => format!("deploy/{}", d.strategy.as_str()),
                other => other.stage_type().as_str().to_string(),
            };
            (
                env,
                PlannedStage {
                    name: s.name.clone(),
                    kind,
                    when: s.when.clone(),
                },
            )
        })
        .collect()
}

/// The plan as an aligned text table.
pub fn to_table(plan: &Plan) -> String {
    let header = [
        "APP",
        "ENVIRONMENT",
        "NAMESPACE",
        "CLUSTERS",
        "VALID",
        "OBJECTS",
        "STAGES",
    ];
    let mut lines: Vec<[String; 7]> = vec![header.map(str::to_string)];
    for row in &plan.rows {
        let stages = if row.stages.is_empty() {
            match &row.pipeline {
                Some(_) => "-".to_string(),
                None => "(sync only, no pipeline)".to_string(),
            }
        } else {
            row.stages
                .iter()
                .map(|s| match &s.when {
                    Some(w) => format!("{} [{}, when {w}]", s.name, s.kind),
                    None => format!("{} [{}]", s.name, s.kind),
                })
                .collect::<Vec<_>>()
                .join(" → ")
        };
        lines.push([
            row.app.clone(),
            row.environment.clone(),
            row.namespace.clone(),
            row.clusters.join(", "),
            if row.errors == 0 {
                "ok".to_string()
            } else {
                crate::diagnostic::count(row.errors, "error")
            },
            row.objects.map_or("-".to_string(), |n| n.to_string()),
            stages,
        ]);
    }
    let mut widths = [0usize; 7];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            if i + 1 == line.len() {
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    let objects: usize = plan.rows.iter().filter_map(|r| r.objects).sum();
    out.push_str(&format!(
        "\n{}, {}; {}, {}.\n",
        count(plan.rows.len(), "app/environment pair"),
        count(objects, "object"),
        count(plan.errors, "error"),
        count(plan.warnings, "warning")
    ));
    out
}

/// The live part of a plan: what would change, per application, environment and cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveDiff {
    /// One line saying what the desired state was compared with (live clusters, or an empty
    /// cluster and why).
    pub compared_with: String,
    /// Per target, in application, promotion and wave order.
    pub targets: Vec<TargetPlan>,
    /// Sum over all targets.
    pub totals: Counts,
}

impl LiveDiff {
    /// Collects target plans, with the line saying what they were compared with.
    pub fn new(targets: Vec<TargetPlan>, kubeconfig: Option<&str>) -> LiveDiff {
        let mut totals = Counts::default();
        for t in &targets {
            totals.add(t.counts);
        }
        // Distinct (cluster, reason) pairs of the targets compared with an empty cluster.
        let offline: std::collections::BTreeMap<&str, &str> = targets
            .iter()
            .filter_map(|t| match &t.live {
                LiveState::Empty { reason } => Some((t.cluster.as_str(), reason.as_str())),
                LiveState::Cluster => None,
            })
            .collect();
        let any_live = targets.iter().any(|t| t.live == LiveState::Cluster);
        let compared_with = if offline.is_empty() {
            format!(
                "Compared with the live clusters (server-side dry-run{}).",
                kubeconfig
                    .map(|k| format!(", kubeconfig {k}"))
                    .unwrap_or_default()
            )
        } else {
            let mut reasons: Vec<&str> = offline.values().copied().collect();
            reasons.dedup();
            let scope = if any_live {
                format!(
                    "{} compared with an empty cluster",
                    count(offline.len(), "cluster")
                )
            } else {
                "No cluster reachable: compared with an empty cluster".to_string()
            };
            format!("{scope} ({}).", reasons.join("; "))
        };
        LiveDiff {
            compared_with,
            targets,
            totals,
        }
    }

    /// True when no target has anything to create, update or delete.
    pub fn in_sync(&self) -> bool {
        self.totals.in_sync()
    }

    /// True when some target could not be compared with its cluster.
    pub fn has_offline_targets(&self) -> bool {
        self.targets
            .iter()
            .any(|t| matches!(t.live, LiveState::Empty { .. }))
    }
}

/// The live diff as text: a table of counts per target, then every changed object with its
/// unified diff (Secret values masked), then one closing line.
pub fn diff_text(live: &LiveDiff) -> String {
    let mut out = String::new();
    let header = [
        "APP",
        "ENVIRONMENT",
        "CLUSTER",
        "CREATE",
        "UPDATE",
        "DELETE",
        "UNCHANGED",
    ];
    let mut rows: Vec<[String; 7]> = vec![header.map(str::to_string)];
    for t in &live.targets {
        rows.push([
            t.app.clone(),
            t.environment.clone(),
            t.cluster.clone(),
            t.counts.create.to_string(),
            t.counts.update.to_string(),
            t.counts.delete.to_string(),
            t.counts.unchanged.to_string(),
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for t in &live.targets {
        if t.counts.in_sync() {
            continue;
        }
        out.push_str(&format!(
            "\n── {} · {} · {}: {}\n",
            t.app, t.environment, t.cluster, t.counts
        ));
        for o in t.objects.iter().filter(|o| o.action != Action::Unchanged) {
            if o.action == Action::Refuse {
                out.push_str(&o.unified);
                continue;
            }
            out.push_str(&format!(
                "{} {} ({})",
                o.action.sign(),
                o.key,
                o.action.as_str()
            ));
            if !o.changed.is_empty() {
                out.push_str(&format!(": {}", o.changed.join(", ")));
            }
            out.push('\n');
            out.push_str(&o.unified);
            if !o.unified.ends_with('\n') && !o.unified.is_empty() {
                out.push('\n');
            }
        }
    }
    out.push_str(&format!(
        "\nPlan: {} across {}. {}\n",
        live.totals,
        count(live.targets.len(), "app/environment/cluster target"),
        if live.in_sync() {
            "Everything is in sync."
        } else {
            "Changes pending."
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{DiffOptions, ObjectDiff, compare};
    use serde_json::json;

    fn target(cluster: &str, live: LiveState, objects: Vec<ObjectDiff>) -> TargetPlan {
        TargetPlan {
            app: "web".into(),
            environment: "production".into(),
            cluster: cluster.into(),
            live,
            counts: Counts::of(&objects),
            objects,
        }
    }

    fn config_map(value: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "web", "namespace": "shop"}, "data": {"k": value}})
    }

    #[test]
    fn first_line_says_what_was_compared() {
        let o = DiffOptions::default();
        let same = compare(Some(&config_map("a")), Some(&config_map("a")), &o);
        let changed = compare(Some(&config_map("a")), Some(&config_map("b")), &o);
        let live = LiveDiff::new(
            vec![target("eu", LiveState::Cluster, vec![same.clone()])],
            Some("kc.yaml"),
        );
        assert_eq!(
            live.compared_with,
            "Compared with the live clusters (server-side dry-run, kubeconfig kc.yaml)."
        );
        assert!(live.in_sync() && !live.has_offline_targets());

        let down = LiveState::Empty {
            reason: "cluster us is unreachable".into(),
        };
        let partial = LiveDiff::new(
            vec![
                target("eu", LiveState::Cluster, vec![changed]),
                target("us", down.clone(), vec![same]),
            ],
            None,
        );
        assert_eq!(
            partial.compared_with,
            "1 cluster compared with an empty cluster (cluster us is unreachable)."
        );
        assert!(!partial.in_sync() && partial.has_offline_targets());
        let text = diff_text(&partial);
        assert!(
            text.contains("── web · production · eu: 0 to create, 1 to update"),
            "{text}"
        );
        assert!(
            text.contains("~ v1 ConfigMap shop/web (update): /data/k\n"),
            "{text}"
        );
        assert!(text.ends_with("Changes pending.\n"), "{text}");

        let none = LiveDiff::new(vec![target("us", down, vec![])], None);
        assert_eq!(
            none.compared_with,
            "No cluster reachable: compared with an empty cluster (cluster us is unreachable)."
        );
    }
}

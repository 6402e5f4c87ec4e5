//! Markdown report for a pull-request comment: verdict and score first, then per group and per
//! metric the classification, reason, baseline and canary statistics, and the ratio of means.

use std::fmt::Write;

use crate::canary::analysis::{AnalysisReport, Status};
use crate::canary::judge::{Classification, JudgeResult, MetricResult};
use crate::canary::report::human_number as n;

fn icon(c: Classification) -> &'static str {
    match c {
        Classification::Pass => "✅",
        Classification::High | Classification::Low => "❌",
        Classification::Nodata => "⚪",
        Classification::NodataFailMetric => "❌",
        Classification::Error => "⚠️",
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn stats_cell(s: &crate::canary::preprocess::Stats) -> String {
    if s.count == 0 {
        "no data".to_string()
    } else {
        format!("{} · {} · {} · {}", s.count, n(s.mean), n(s.min), n(s.max))
    }
}

fn metric_label(r: &MetricResult) -> String {
    let mut label = format!("`{}`", r.name);
    if !r.tags.is_empty() {
        let tags: Vec<String> = r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        label.push_str(&format!(" ({})", tags.join(", ")));
    }
    if r.muted {
        label.push_str(" · muted");
    }
    if r.critical {
        label.push_str(" · **critical**");
    }
    label
}

/// The per-group sections of a judge result.
pub fn judge_sections(out: &mut String, result: &JudgeResult) {
    let _ = writeln!(out, "| Group | Score |\n| --- | ---: |");
    for g in &result.group_scores {
        let score = if g.no_data {
            "no data (counts as 100)".to_string()
        } else {
            n(g.score)
        };
        let _ = writeln!(out, "| {} | {} |", cell(&g.name), score);
    }
    let mut groups: Vec<&str> = result
        .group_scores
        .iter()
        .map(|g| g.name.as_str())
        .collect();
    // Muted metrics are not scored, so their groups may be missing from the scores.
    for r in &result.results {
        for g in &r.groups {
            if !groups.contains(&g.as_str()) {
                groups.push(g);
            }
        }
    }
    for group in groups {
        let _ = writeln!(out, "\n### Group `{}`\n", group);
        let _ = writeln!(
            out,
            "| Metric | Classification | Baseline (count · mean · min · max) | Canary (count · mean · min · max) | Ratio of means | Reason |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | ---: | --- |");
        for r in result
            .results
            .iter()
            .filter(|r| r.groups.iter().any(|g| g == group))
        {
            let ratio = r
                .result_metadata
                .map(|m| n(m.ratio))
                .unwrap_or_else(|| "—".to_string());
            let _ = writeln!(
                out,
                "| {} | {} {} | {} | {} | {} | {} |",
                metric_label(r),
                icon(r.classification),
                r.classification.as_str(),
                stats_cell(&r.control_metadata.stats),
                stats_cell(&r.experiment_metadata.stats),
                ratio,
                cell(r.classification_reason.as_deref().unwrap_or("")),
            );
        }
    }
}

/// Markdown for a single judge result.
pub fn judge_result(result: &JudgeResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Canary judgment: {} (score {})\n",
        result.score.classification.as_str(),
        n(result.score.score)
    );
    if !result.score.classification_reason.is_empty() {
        let _ = writeln!(out, "> {}\n", result.score.classification_reason);
    }
    judge_sections(&mut out, result);
    out
}

fn status_icon(s: Status) -> &'static str {
    match s {
        Status::Pass => "✅",
        Status::Marginal => "🟡",
        Status::Fail => "❌",
        Status::Error => "⚠️",
    }
}

/// Markdown for a live analysis.
pub fn analysis(report: &AnalysisReport) -> String {
    let mut out = String::new();
    let score = report
        .last_result()
        .map(|r| n(r.score.score))
        .unwrap_or_else(|| "—".to_string());
    let _ = writeln!(
        out,
        "## {} Canary analysis `{}`: {} (score {})\n",
        status_icon(report.status),
        report.config,
        report.status.as_str(),
        score
    );
    let _ = writeln!(out, "> {}\n", cell(&report.reason));
    let scope = |s: &crate::canary::retrieval::Scope| {
        if s.location.is_empty() {
            format!("`{}`", s.scope)
        } else {
            format!("`{}` in `{}`", s.scope, s.location)
        }
    };
    let _ = writeln!(
        out,
        "Baseline {} · canary {} · thresholds: pass ≥ {}, fail ≤ {} · Prometheus {}\n",
        scope(&report.baseline),
        scope(&report.canary),
        n(report.thresholds.pass),
        n(report.thresholds.marginal),
        report.prometheus
    );
    if report.judgments.len() > 1 || report.judgments.iter().any(|j| !j.errors.is_empty()) {
        let _ = writeln!(
            out,
            "| # | Canary window | Baseline window | Score | Result |"
        );
        let _ = writeln!(out, "| ---: | --- | --- | ---: | --- |");
        for (i, j) in report.judgments.iter().enumerate() {
            let w = |w: &crate::canary::retrieval::Window| {
                format!(
                    "{} – {}",
                    w.start.format("%Y-%m-%d %H:%M"),
                    w.end.format("%H:%M")
                )
            };
            let (score, result) = match &j.judge_result {
                Some(r) => (
                    n(r.score.score),
                    r.score.classification.as_str().to_string(),
                ),
                None => (
                    "—".to_string(),
                    format!("error: {}", cell(&j.errors.join("; "))),
                ),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                i + 1,
                w(&j.windows.experiment),
                w(&j.windows.control),
                score,
                result
            );
        }
        out.push('\n');
    }
    if let Some(result) = report.last_result() {
        judge_sections(&mut out, result);
    }
    out
}

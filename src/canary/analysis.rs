//! Live canary analysis: judgment windows over the analysis lifetime (pure [`schedule`]), metric
//! retrieval for both scopes, a judgment per window, early stop on failure ([`run`]).
//!
//! Two shapes: **side by side** (baseline and canary scopes over the same windows) and
//! **before/after release** (one scope; the baseline window is the canary window moved back by
//! an offset, e.g. the hour before the deploy).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::canary::judge::{self, JudgeResult, MetricSetPair, Verdict};
use crate::canary::retrieval::{self, PrometheusSource, RetrievalError, Scope, Series, Window};
use crate::canary::settings::{JudgeConfig, Thresholds};
use crate::config::model::{CanaryConfig, Lookback};

/// When and over what a live analysis judges.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Start of the analysis (deploy time for before/after).
    pub start: DateTime<Utc>,
    /// End of the analysis.
    pub end: DateTime<Utc>,
    /// Range query resolution.
    pub step: Duration,
    /// Judge every interval (None: once at the end).
    pub interval: Option<Duration>,
    /// Growing or sliding windows.
    pub lookback: Lookback,
    /// Warm-up before the first window.
    pub delay: Duration,
    /// Before/after release: the baseline window is the canary window moved back by this much.
    pub baseline_offset: Option<Duration>,
}

impl Plan {
    /// A plan from the config's `analysis` settings; `end` defaults to start + delay + lifetime.
    pub fn from_config(
        config: &CanaryConfig,
        start: DateTime<Utc>,
        end: Option<DateTime<Utc>>,
        baseline_offset: Option<Duration>,
    ) -> Plan {
        let a = &config.spec.analysis;
        let end = end.unwrap_or_else(|| start + chrono_duration(a.delay.0 + a.lifetime.0));
        Plan {
            start,
            end,
            step: a.step.0,
            interval: a.interval.map(|d| d.0),
            lookback: a.lookback,
            delay: a.delay.0,
            baseline_offset,
        }
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// One judgment's windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct JudgmentWindows {
    /// Canary window.
    pub experiment: Window,
    /// Baseline window.
    pub control: Window,
    /// The last judgment of the analysis.
    #[serde(rename = "final")]
    pub is_final: bool,
}

/// The judgment windows of a plan, in order (pure).
pub fn schedule(plan: &Plan) -> Vec<JudgmentWindows> {
    let t0 = plan.start + chrono_duration(plan.delay);
    let end = plan.end.max(t0);
    let mut times = Vec::new();
    if let Some(interval) = plan.interval.filter(|i| !i.is_zero()) {
        let step = chrono_duration(interval);
        let mut t = t0 + step;
        while t < end {
            times.push(t);
            t += step;
        }
    }
    times.push(end);
    let last = times.len() - 1;
    times
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let from = match (plan.lookback, plan.interval) {
                (Lookback::Sliding, Some(interval)) => (t - chrono_duration(interval)).max(t0),
                _ => t0,
            };
            let experiment = Window {
                start: from,
                end: t,
            };
            let control = match plan.baseline_offset {
                Some(offset) => experiment.shifted_back(offset),
                None => experiment,
            };
            JudgmentWindows {
                experiment,
                control,
                is_final: i == last,
            }
        })
        .collect()
}

/// Outcome of a live analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    /// The final judgment reached the pass threshold.
    Pass,
    /// Final score between marginal (exclusive) and pass: not promoted.
    Marginal,
    /// A score at or below marginal (interim or final).
    Fail,
    /// Metrics could not be retrieved: the analysis is inconclusive and never passes.
    Error,
}

impl Status {
    /// The label as written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "Pass",
            Status::Marginal => "Marginal",
            Status::Fail => "Fail",
            Status::Error => "Error",
        }
    }
}

/// The series behind one metric-set pair of the last judgment (for charts).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairSeries {
    /// Metric name.
    pub name: String,
    /// Labels of the pair.
    pub tags: std::collections::BTreeMap<String, String>,
    /// Baseline (seconds since its window start, value).
    pub control: Vec<(f64, f64)>,
    /// Canary (seconds since its window start, value).
    pub experiment: Vec<(f64, f64)>,
}

/// One judgment of the analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Judgment {
    /// Windows judged.
    pub windows: JudgmentWindows,
    /// The judge's result, when the metrics could be retrieved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge_result: Option<JudgeResult>,
    /// Retrieval errors of this judgment.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Result of a live analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisReport {
    /// CanaryConfig name.
    pub config: String,
    /// Baseline scope.
    pub baseline: Scope,
    /// Canary scope.
    pub canary: Scope,
    /// Prometheus URL.
    pub prometheus: String,
    /// Overall status.
    pub status: Status,
    /// Why the analysis ended as it did.
    pub reason: String,
    /// Thresholds used.
    pub thresholds: ThresholdsOut,
    /// Judgments in order (the last one decides).
    pub judgments: Vec<Judgment>,
    /// Series of the last judgment that has data (not serialized; written as charts).
    #[serde(skip)]
    pub series: Vec<PairSeries>,
}

impl AnalysisReport {
    /// The judge result of the last judgment that has one.
    pub fn last_result(&self) -> Option<&JudgeResult> {
        self.judgments
            .iter()
            .rev()
            .find_map(|j| j.judge_result.as_ref())
    }
}

/// Serializable thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ThresholdsOut {
    /// Pass threshold.
    pub pass: f64,
    /// Marginal threshold.
    pub marginal: f64,
}

/// What a live analysis compares.
#[derive(Debug, Clone)]
pub struct Request {
    /// The CanaryConfig.
    pub config: CanaryConfig,
    /// Baseline scope.
    pub baseline: Scope,
    /// Canary scope.
    pub canary: Scope,
    /// Windows.
    pub plan: Plan,
}

/// Fetches one metric's pairs for one judgment.
async fn fetch_metric(
    source: &PrometheusSource,
    request: &Request,
    metric_index: usize,
    windows: &JudgmentWindows,
) -> Result<(Vec<MetricSetPair>, Vec<PairSeries>), RetrievalError> {
    let spec = &request.config.spec;
    let metric = &spec.metrics[metric_index];
    let step = request.plan.step;
    let control_query = retrieval::render_query(spec, metric, &request.baseline)?;
    let experiment_query = retrieval::render_query(spec, metric, &request.canary)?;
    let (control, experiment) = futures::try_join!(
        source.range_query(&metric.name, &control_query, &windows.control, step),
        source.range_query(&metric.name, &experiment_query, &windows.experiment, step),
    )?;
    let pairs = retrieval::pair_series(
        &metric.name,
        &control,
        &experiment,
        &windows.control,
        &windows.experiment,
        step,
    );
    let relative =
        |side: &[Series], window: &Window, labels: &std::collections::BTreeMap<String, String>| {
            let pick = if side.len() == 1 {
                side.first()
            } else {
                side.iter().find(|s| &s.labels == labels)
            };
            pick.map(|s| {
                s.samples
                    .iter()
                    .map(|(t, v)| ((t - window.start.timestamp()) as f64, *v))
                    .collect()
            })
            .unwrap_or_default()
        };
    let series = pairs
        .iter()
        .map(|p| PairSeries {
            name: p.name.clone(),
            tags: p.tags.clone(),
            control: relative(&control, &windows.control, &p.tags),
            experiment: relative(&experiment, &windows.experiment, &p.tags),
        })
        .collect();
    Ok((pairs, series))
}

/// Runs the analysis: for each scheduled judgment, waits until its window has closed, retrieves
/// every metric for both scopes, and judges. Stops at the first retrieval error (status Error),
/// at an interim score at or below marginal (Fail, including critical failures), and otherwise
/// classifies the final score.
pub async fn run(source: &PrometheusSource, request: &Request) -> AnalysisReport {
    let spec = &request.config.spec;
    let judge_config = JudgeConfig::from_bowline(spec);
    let thresholds = Thresholds {
        pass: spec.classifier.score_thresholds.pass,
        marginal: spec.classifier.score_thresholds.marginal,
    };
    let mut report = AnalysisReport {
        config: request.config.metadata.name.clone(),
        baseline: request.baseline.clone(),
        canary: request.canary.clone(),
        prometheus: source.url().to_string(),
        status: Status::Error,
        reason: "no judgment ran".to_string(),
        thresholds: ThresholdsOut {
            pass: thresholds.pass,
            marginal: thresholds.marginal,
        },
        judgments: Vec::new(),
        series: Vec::new(),
    };
    for windows in schedule(&request.plan) {
        let now = Utc::now();
        if windows.experiment.end > now {
            let wait = (windows.experiment.end - now).to_std().unwrap_or_default();
            tracing::info!(seconds = wait.as_secs(), "waiting for the window to close");
            tokio::time::sleep(wait).await;
        }
        // Collected first so that the future holds no closure (keeps `run` Send for spawning).
        let mut fetches = Vec::with_capacity(spec.metrics.len());
        for i in 0..spec.metrics.len() {
            fetches.push(fetch_metric(source, request, i, &windows));
        }
        let outcomes = futures::future::join_all(fetches).await;
        let mut pairs = Vec::new();
        let mut series = Vec::new();
        let mut errors = Vec::new();
        for outcome in outcomes {
            match outcome {
                Ok((p, s)) => {
                    pairs.extend(p);
                    series.extend(s);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        if !errors.is_empty() {
            report.status = Status::Error;
            report.reason = format!(
                "analysis error: {} (a canary never passes without its metrics)",
                errors[0]
            );
            report.judgments.push(Judgment {
                windows,
                judge_result: None,
                errors,
            });
            return report;
        }
        let result = match judge::judge(&judge_config, thresholds, &pairs) {
            Ok(r) => r,
            Err(e) => {
                report.status = Status::Error;
                report.reason = format!("analysis error: {e}");
                report.judgments.push(Judgment {
                    windows,
                    judge_result: None,
                    errors: vec![e.to_string()],
                });
                return report;
            }
        };
        let score = result.score.score;
        let verdict = result.score.classification;
        let reason = result.score.classification_reason.clone();
        report.series = series;
        report.judgments.push(Judgment {
            windows,
            judge_result: Some(result),
            errors: Vec::new(),
        });
        let failed = score <= thresholds.marginal;
        if failed {
            report.status = Status::Fail;
            report.reason = if reason.is_empty() {
                format!(
                    "score {score} is at or below the marginal threshold {}",
                    thresholds.marginal
                )
            } else {
                reason
            };
            if !windows.is_final {
                report.reason.push_str(" (stopped early)");
            }
            return report;
        }
        if windows.is_final {
            (report.status, report.reason) = match verdict {
                Verdict::Pass => (
                    Status::Pass,
                    format!(
                        "score {score} reached the pass threshold {}",
                        thresholds.pass
                    ),
                ),
                _ => (
                    Status::Marginal,
                    format!(
                        "score {score} is below the pass threshold {}",
                        thresholds.pass
                    ),
                ),
            };
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600 + minute * 60, 0).expect("valid")
    }

    fn plan(interval: Option<u64>, lookback: Lookback) -> Plan {
        Plan {
            start: at(0),
            end: at(32),
            step: Duration::from_secs(60),
            interval: interval.map(|m| Duration::from_secs(m * 60)),
            lookback,
            delay: Duration::from_secs(120),
            baseline_offset: None,
        }
    }

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn run_is_send_for_spawned_tasks() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let source =
            PrometheusSource::new("http://127.0.0.1:9", Duration::from_secs(1)).expect("client");
        let config: CanaryConfig = serde_yaml::from_str(
            "metadata: {name: c}\nspec:\n  metrics: []\n  classifier: {groupWeights: {}, scoreThresholds: {marginal: 1, pass: 2}}\n",
        )
        .expect("config");
        let request = Request {
            plan: Plan::from_config(&config, at(0), None, None),
            config,
            baseline: Scope::default(),
            canary: Scope::default(),
        };
        let future = run(&source, &request);
        assert_send(&future);
        drop(future);
        // What a pipeline does: spawn the analysis on a multi-threaded runtime.
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let handle = runtime.spawn(async move {
            let _ = run(&source, &request).await;
        });
        handle.abort();
    }

    #[test]
    fn one_judgment_without_interval() {
        let s = schedule(&plan(None, Lookback::Growing));
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].experiment.start, s[0].experiment.end),
            (at(2), at(32))
        );
        assert!(s[0].is_final);
    }

    #[test]
    fn growing_and_sliding_windows() {
        let g = schedule(&plan(Some(10), Lookback::Growing));
        let ends: Vec<_> = g.iter().map(|w| w.experiment.end).collect();
        assert_eq!(ends, vec![at(12), at(22), at(32)]);
        assert!(g.iter().all(|w| w.experiment.start == at(2)));
        assert_eq!(g.iter().filter(|w| w.is_final).count(), 1);
        let s = schedule(&plan(Some(10), Lookback::Sliding));
        let starts: Vec<_> = s.iter().map(|w| w.experiment.start).collect();
        assert_eq!(starts, vec![at(2), at(12), at(22)]);
    }

    #[test]
    fn before_after_moves_the_baseline_window_back() {
        let mut p = plan(None, Lookback::Growing);
        p.delay = Duration::ZERO;
        p.baseline_offset = Some(Duration::from_secs(3600));
        let s = schedule(&p);
        assert_eq!(s[0].control.start, at(-60));
        assert_eq!(s[0].control.end, at(-28));
    }
}

//! Canary analysis against a real Prometheus (Debian package) loaded with generated history:
//! passing canary, latency regression, error spike on a critical metric, no data for the
//! canary, Prometheus down, and a before/after release comparison of one app.

#[path = "support/prometheus.rs"]
mod prometheus;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bowline::canary::Classification;
use bowline::canary::analysis::{self, AnalysisReport, Plan, Request, Status};
use bowline::canary::retrieval::{PrometheusSource, Scope};
use bowline::config::model::CanaryConfig;
use chrono::DateTime;
use prometheus::{App, Behaviour, Prometheus, closed_port_url, http_history};

/// 2026-01-01T00:00:00Z; history covers two hours, the "deploy" is at one hour.
const T0: i64 = 1_767_225_600;
const DEPLOY: i64 = T0 + 3600;
const NAMESPACE: &str = "shop";

const NORMAL: Behaviour = Behaviour {
    median_latency: 0.08,
    error_share: 0.01,
};
const SLOW: Behaviour = Behaviour {
    median_latency: 0.13,
    error_share: 0.01,
};
const FAILING: Behaviour = Behaviour {
    median_latency: 0.08,
    error_share: 0.12,
};

fn history() -> String {
    let app = |name, stretches| App {
        app: name,
        namespace: NAMESPACE,
        stretches,
    };
    http_history(
        &[
            app("checkout-baseline", vec![(T0, NORMAL)]),
            app("checkout-canary", vec![(T0, NORMAL)]),
            app("checkout-slow", vec![(T0, SLOW)]),
            app("checkout-errors", vec![(T0, FAILING)]),
            app("orders", vec![(T0, NORMAL)]),
            app("search", vec![(T0, NORMAL), (DEPLOY, SLOW)]),
        ],
        T0,
        7200,
        7,
    )
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/canary")
        .join(name)
}

fn config() -> CanaryConfig {
    let text = std::fs::read_to_string(fixture("checkout.yaml")).expect("fixture");
    serde_yaml::from_str(&text).expect("valid CanaryConfig")
}

fn scope(name: &str) -> Scope {
    Scope {
        scope: name.to_string(),
        location: NAMESPACE.to_string(),
        labels: Default::default(),
    }
}

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn analyse(url: &str, baseline: &str, canary: &str, offset: Option<u64>) -> AnalysisReport {
    install_crypto();
    let config = config();
    let start = DateTime::from_timestamp(DEPLOY, 0).expect("valid");
    let end = DateTime::from_timestamp(DEPLOY + 3600, 0).expect("valid");
    let plan = Plan::from_config(&config, start, Some(end), offset.map(Duration::from_secs));
    let request = Request {
        config,
        baseline: scope(baseline),
        canary: scope(canary),
        plan,
    };
    let source = PrometheusSource::new(url, Duration::from_secs(10)).expect("client");
    analysis::run(&source, &request).await
}

fn labels(report: &AnalysisReport) -> Vec<(String, Classification)> {
    report
        .last_result()
        .expect("a judgment")
        .results
        .iter()
        .map(|r| (r.name.clone(), r.classification))
        .collect()
}

fn label_of(report: &AnalysisReport, metric: &str) -> Classification {
    labels(report)
        .into_iter()
        .find(|(n, _)| n == metric)
        .map(|(_, c)| c)
        .expect("metric judged")
}

#[tokio::test]
async fn passing_canary_passes_every_interval() {
    let prom = Prometheus::start(&history());
    let report = analyse(&prom.url, "checkout-baseline", "checkout-canary", None).await;
    assert_eq!(report.status, Status::Pass, "{report:#?}");
    assert_eq!(report.judgments.len(), 3, "20m interval over 60m");
    for j in &report.judgments {
        let r = j.judge_result.as_ref().expect("judged");
        assert_eq!(r.score.score, 100.0);
    }
    let result = report.last_result().expect("judged");
    // 60 one-minute points per scope on a full window
    assert_eq!(result.results[1].control_metadata.stats.count, 61);
    assert_eq!(result.results[1].experiment_metadata.stats.count, 61);
}

#[tokio::test]
async fn latency_regression_is_high_and_fails() {
    let prom = Prometheus::start(&history());
    let report = analyse(&prom.url, "checkout-baseline", "checkout-slow", None).await;
    assert_eq!(label_of(&report, "p95-latency"), Classification::High);
    assert_eq!(label_of(&report, "error-rate"), Classification::Pass);
    assert_eq!(report.status, Status::Fail, "{}", report.reason);
    // latency group 0 of 1 scored (request-rate is muted) → 50·1 + 50·0
    assert_eq!(report.last_result().expect("judged").score.score, 50.0);
    // the first interim judgment already fails: stopped early
    assert_eq!(report.judgments.len(), 1);
    assert!(report.reason.contains("stopped early"), "{}", report.reason);
}

#[tokio::test]
async fn error_spike_on_critical_metric_fails_the_canary() {
    let prom = Prometheus::start(&history());
    let report = analyse(&prom.url, "checkout-baseline", "checkout-errors", None).await;
    let result = report.last_result().expect("judged").clone();
    let errors = &result.results[0];
    assert_eq!(errors.classification, Classification::High);
    assert!(errors.critical);
    assert_eq!(result.score.score, 0.0);
    assert_eq!(
        result.score.classification_reason,
        "Canary Failed: The metric error-rate was classified as High (Critical)"
    );
    assert_eq!(report.status, Status::Fail);
}

#[tokio::test]
async fn no_data_for_the_canary_never_passes() {
    let prom = Prometheus::start(&history());
    let report = analyse(&prom.url, "checkout-baseline", "checkout-ghost", None).await;
    assert_eq!(report.status, Status::Fail, "{}", report.reason);
    for (_, label) in labels(&report) {
        assert_eq!(label, Classification::Nodata);
    }
    let result = report.last_result().expect("judged");
    assert_eq!(result.score.score, 0.0);
    // the critical error-rate metric has no data: a critical failure
    assert_eq!(
        result.score.classification_reason,
        "Canary Failed: Missing data for error-rate"
    );
}

#[tokio::test]
async fn prometheus_down_is_an_analysis_error() {
    let url = closed_port_url();
    let report = analyse(&url, "checkout-baseline", "checkout-canary", None).await;
    assert_eq!(report.status, Status::Error);
    assert!(report.last_result().is_none());
    assert!(report.reason.contains("unreachable"), "{}", report.reason);
    assert_eq!(report.judgments.len(), 1);
}

#[tokio::test]
async fn query_error_is_an_analysis_error() {
    let prom = Prometheus::start("# EOF\n");
    install_crypto();
    let mut config = config();
    config.spec.metrics[0].query = "sum(rate(http_requests_total{ {{ templates.app }} }))".into();
    let start = DateTime::from_timestamp(DEPLOY, 0).expect("valid");
    let plan = Plan::from_config(&config, start, None, None);
    let request = Request {
        config,
        baseline: scope("a"),
        canary: scope("b"),
        plan,
    };
    let source = PrometheusSource::new(&prom.url, Duration::from_secs(10)).expect("client");
    let report = analysis::run(&source, &request).await;
    assert_eq!(report.status, Status::Error);
    assert!(report.reason.contains("query failed"), "{}", report.reason);
}

#[tokio::test]
async fn before_after_release_windows_of_one_app() {
    let prom = Prometheus::start(&history());
    let stable = analyse(&prom.url, "orders", "orders", Some(3600)).await;
    assert_eq!(stable.status, Status::Pass, "{}", stable.reason);
    let window = stable.judgments[0].windows;
    assert_eq!(
        window.control.end.timestamp(),
        window.experiment.end.timestamp() - 3600
    );
    let regressed = analyse(&prom.url, "search", "search", Some(3600)).await;
    assert_eq!(label_of(&regressed, "p95-latency"), Classification::High);
    assert_eq!(regressed.status, Status::Fail);
}

fn bowline() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bowline"))
}

fn run_args(url: &str, canary: &str) -> Vec<String> {
    [
        "canary",
        "run",
        "--config",
        fixture("checkout.yaml").to_str().expect("utf-8 path"),
        "--prometheus",
        url,
        "--baseline",
        "checkout-baseline",
        "--canary",
        canary,
        "--location",
        NAMESPACE,
        "--start",
        &DEPLOY.to_string(),
        "--end",
        "2026-01-01T02:00:00Z",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn cli_run_prints_markdown_and_writes_json_and_charts() {
    let prom = Prometheus::start(&history());
    let out_dir = prom.dir().join("report");
    let output = bowline()
        .args(run_args(&prom.url, "checkout-slow"))
        .arg("--out")
        .arg(&out_dir)
        .output()
        .expect("run bowline");
    let stdout = String::from_utf8_lossy(&output.stdout).replace(&prom.url, "http://PROMETHEUS");
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    insta::assert_snapshot!("canary_run_latency_regression_markdown", stdout);
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("result.json")).expect("result.json"),
    )
    .expect("JSON");
    assert_eq!(json["status"], "Fail");
    assert_eq!(
        json["result"]["judgeResult"]["judgeName"],
        "NetflixACAJudge-v1.0"
    );
    assert_eq!(
        json["result"]["judgeResult"]["results"][1]["classification"],
        "High"
    );
    for chart in ["error-rate.svg", "p95-latency.svg", "request-rate.svg"] {
        let svg = std::fs::read_to_string(out_dir.join(chart)).expect(chart);
        assert!(
            svg.starts_with("<svg") && svg.contains("class=\"canary\""),
            "{chart}"
        );
    }
    assert!(out_dir.join("report.md").is_file());

    let json_out = bowline()
        .args(run_args(&prom.url, "checkout-canary"))
        .arg("--json")
        .output()
        .expect("run bowline");
    assert_eq!(json_out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&json_out.stdout).expect("JSON");
    assert_eq!(json["status"], "Pass");
    assert_eq!(json["judgments"].as_array().map(Vec::len), Some(3));
}

#[test]
fn cli_run_with_prometheus_down_exits_3() {
    let url = closed_port_url();
    let output = bowline()
        .args(run_args(&url, "checkout-canary"))
        .output()
        .expect("run bowline");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("Error"), "{stdout}");
    assert!(stdout.contains("unreachable"), "{stdout}");
}

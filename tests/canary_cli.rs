//! `bowline canary judge` and `bowline canary import-kayenta` end to end, with the Markdown
//! report, an SVG chart and imported configs as snapshots.

use std::path::PathBuf;
use std::process::{Command, Output};

use bowline::canary::analysis::PairSeries;
use bowline::canary::input::bowline_config;
use bowline::canary::report::svg;

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/canary")
        .join(path)
}

fn bowline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bowline"))
        .args(args)
        .output()
        .expect("run bowline")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn judge_prints_result_json_and_exits_0_on_fail() {
    let file = fixture("judge-request.json");
    let out = bowline(&["canary", "judge", file.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["score"]["classification"], "Fail");
    insta::assert_snapshot!("canary_judge_result_json", stdout(&out));
}

#[test]
fn judge_markdown_report() {
    let file = fixture("judge-request.json");
    let out = bowline(&[
        "canary",
        "judge",
        "--markdown",
        file.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(0));
    insta::assert_snapshot!("canary_judge_markdown", stdout(&out));
}

#[test]
fn judge_configuration_errors_print_error_json_and_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "bool.json",
            r#"{"config": {"metrics": [{"name": "m", "groups": ["g"], "analysisConfigurations": {"canary": {"critical": "true"}}}]},
                "thresholds": {"pass": 95, "marginal": 75}, "data": {"m": {"control": [1], "experiment": [2]}}}"#,
        ),
        (
            "unknown.json",
            r#"{"config": {"metrics": []}, "thresholds": {"pass": 95, "marginal": 75}, "data": {"m": {}}}"#,
        ),
        ("broken.json", "{not json"),
    ];
    for (name, text) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let out = bowline(&["canary", "judge", path.to_str().expect("utf-8")]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("error JSON");
        assert!(json["error"].is_string(), "{name}: {json}");
    }
    let missing = bowline(&["canary", "judge", "/nonexistent/request.json"]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn import_kayenta_prometheus_config() {
    let file = fixture("kayenta/checkout-prometheus.json");
    let out = bowline(&["canary", "import-kayenta", file.to_str().expect("utf-8")]);
    let yaml = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a renamed template and a counter read as rate(): warnings"
    );
    insta::assert_snapshot!("canary_import_kayenta_checkout", yaml);
    let stderr = String::from_utf8_lossy(&out.stderr);
    insta::assert_snapshot!("canary_import_kayenta_checkout_warnings", stderr);
    // The result is a valid CanaryConfig (schema and model) with the same judge settings.
    let value: serde_json::Value = serde_yaml::from_str(&yaml).expect("YAML");
    let config = bowline_config(&value).expect("valid CanaryConfig");
    assert_eq!(config.metadata.name, "checkout-canary-config");
    assert_eq!(config.spec.metrics.len(), 3);
    let kayenta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("fixture")).expect("JSON");
    let from_kayenta = bowline::canary::kayenta::judge_config(&kayenta).expect("judge config");
    let from_bowline = bowline::canary::JudgeConfig::from_bowline(&config.spec);
    assert_eq!(from_kayenta, from_bowline);
}

#[test]
fn import_kayenta_reports_what_it_cannot_convert() {
    // `${region}` has no value in bowline: the import is refused, naming it.
    let file = fixture("kayenta/mixed-providers.json");
    let refused = bowline(&["canary", "import-kayenta", file.to_str().expect("utf-8")]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("placeholder ${region} has no bowline equivalent"),
        "{stderr}"
    );
    assert!(stdout(&refused).is_empty());

    // With the region written out, the rest converts, with a warning for each loss.
    let text = std::fs::read_to_string(&file).expect("fixture");
    let dir = tempfile::tempdir().expect("temp dir");
    let edited = dir.path().join("legacy.json");
    std::fs::write(&edited, text.replace("${region}", "eu-west-1")).expect("write");
    let out = bowline(&["canary", "import-kayenta", edited.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("query type \"stackdriver\" is not Prometheus"),
        "{stderr}"
    );
    assert!(
        stderr.contains("direction \"sideways\" is read as either"),
        "{stderr}"
    );
    assert!(stderr.contains("no classifier.scoreThresholds"), "{stderr}");
    assert!(stderr.contains("group weights sum to 90"), "{stderr}");
    let yaml = stdout(&out);
    assert!(yaml.contains("UNCONVERTED"), "{yaml}");
    assert!(yaml.contains("region=\\\"eu-west-1\\\""), "{yaml}");
    let value: serde_json::Value = serde_yaml::from_str(&yaml).expect("YAML");
    bowline_config(&value).expect("still a valid document");
}

/// What Kayenta's API refuses, or what bowline would judge differently, is refused by the
/// import; weights that leave metrics out or weigh nothing are warned about.
#[test]
fn import_kayenta_refuses_what_kayenta_refuses() {
    use bowline::canary::kayenta::import;
    let metric = |name: &str, group: &str| {
        serde_json::json!({
            "name": name,
            "query": {"type": "prometheus", "customInlineTemplate": "PromQL:up{job=\"${scope}\",namespace=\"${namespace}\"}"},
            "groups": [group],
            "analysisConfigurations": {"canary": {}},
        })
    };
    let config = |judge: &str, metrics: Vec<serde_json::Value>| {
        serde_json::json!({
            "name": "c",
            "judge": {"name": judge},
            "metrics": metrics,
            "classifier": {"groupWeights": {"a": 100}, "scoreThresholds": {"marginal": 75, "pass": 95}},
        })
    };
    let refusal = |value: serde_json::Value| import(&value).expect_err("refused").to_string();
    assert!(
        refusal(config("StaticBaselineJudge-v1.0", vec![metric("m", "a")]))
            .contains("judge \"StaticBaselineJudge-v1.0\" is not supported"),
    );
    assert!(refusal(config(JUDGE, vec![])).contains("no metrics"));
    assert!(
        refusal(config(JUDGE, vec![metric("m", "a"), metric("m", "a")]))
            .contains("two metrics are named \"m\"")
    );

    let imported =
        import(&config(JUDGE, vec![metric("m", "a"), metric("n", "b")])).expect("imports");
    assert!(
        imported.yaml.contains("namespace=\\\"{{ location }}\\\""),
        "{}",
        imported.yaml
    );
    let warnings = imported.warnings.join("\n");
    assert!(warnings.contains("group \"b\" has no weight"), "{warnings}");
    assert!(
        warnings.contains("${namespace} became {{ location }}"),
        "{warnings}"
    );
    let weighed_nothing =
        import(&serde_json::json!({"metrics": [metric("m", "a")], "classifier": {"groupWeights": {"a": 50, "z": 50}}}))
            .expect("imports");
    assert!(
        weighed_nothing
            .warnings
            .iter()
            .any(|w| w.contains("gives group \"z\" a weight, but no metric is in it")),
        "{:?}",
        weighed_nothing.warnings
    );
}

const JUDGE: &str = "NetflixACAJudge-v1.0";

#[test]
fn svg_chart_snapshot() {
    let series = PairSeries {
        name: "p95-latency".into(),
        tags: Default::default(),
        control: (0..10)
            .map(|i| (i as f64 * 60.0, 0.1 + (i % 3) as f64 * 0.002))
            .collect(),
        experiment: (0..10)
            .map(|i| {
                let v = if i == 4 {
                    f64::NAN
                } else {
                    0.15 + (i % 2) as f64 * 0.003
                };
                (i as f64 * 60.0, v)
            })
            .collect(),
    };
    insta::assert_snapshot!("canary_svg_chart", svg::chart(&series, "p95-latency: High"));
}

//! The real `bowline` binary: exit codes of `validate` (0 valid, 1 errors, 2 no repository),
//! its text output matching the library-driven fixtures, and the `--format json` report.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn bowline(args: &[&str], repo: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bowline"))
        .args(args)
        .arg(repo)
        .env_remove("BOWLINE_LOG_LEVEL")
        .env_remove("BOWLINE_LOG_FORMAT")
        .env_remove("RUST_LOG")
        // No cluster: plan compares with an empty cluster whatever the machine has configured.
        .env_remove("KUBECONFIG")
        .env_remove("BOWLINE_KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("the bowline binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The diagnostic lines of an expected.txt (without `#` comments).
fn expected_lines(case: &str) -> Vec<String> {
    let text = std::fs::read_to_string(common::case_dir(case).join("expected.txt"))
        .expect("expected.txt exists");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn valid_repository_exits_0_with_summary() {
    let repo = common::base_repo();
    let out = bowline(&["validate"], repo.path());
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "only the summary line: {text}");
    assert!(
        lines[0].ends_with(
            ": valid: 0 errors, 0 warnings (1 app, 1 pipeline template, 1 canary config; 2 app/environment renders, 4 objects)"
        ),
        "{text}"
    );
}

#[test]
fn invalid_repository_exits_1_and_prints_the_fixture_diagnostics() {
    for case in [
        "unknown-pipeline-template",
        "dependency-cycle",
        "manifest-undefined-variable",
        "weights-not-100",
    ] {
        let repo = common::case_repo(case);
        let out = bowline(&["validate"], repo.path());
        assert_eq!(out.status.code(), Some(1), "{case}: {}", stderr(&out));
        let text = stdout(&out);
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let summary = lines.pop().expect("a summary line");
        assert_eq!(lines, expected_lines(case), "{case}");
        let errors = lines.iter().filter(|l| l.contains(": error: ")).count();
        assert!(
            summary.contains(&format!(
                ": invalid: {}, 0 warnings (",
                bowline::diagnostic::count(errors, "error")
            )),
            "{case}: {summary}"
        );
    }
}

#[test]
fn warnings_alone_exit_0() {
    let repo = common::case_repo("no-manifests");
    let out = bowline(&["validate"], repo.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(": valid: 0 errors, 1 warning ("), "{text}");
}

#[test]
fn missing_repository_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-repo");
    let out = bowline(&["validate"], &missing);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("bowline: cannot read config repository") && err.contains("no-such-repo"),
        "{err}"
    );
}

#[test]
fn repository_path_that_is_a_file_exits_2() {
    let repo = common::base_repo();
    let file = repo.path().join("bowline.yaml");
    let out = bowline(&["validate"], &file);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("is not a directory"), "{err}");
}

#[test]
fn json_report_has_every_field_of_every_diagnostic() {
    let case = "variable-wrong-type";
    let repo = common::case_repo(case);
    let out = bowline(&["validate", "--format", "json"], repo.path());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).expect("stdout is JSON");
    assert_eq!(report["valid"], false);
    let diagnostics = report["diagnostics"].as_array().expect("diagnostics array");
    assert_eq!(report["errors"], diagnostics.len());
    assert_eq!(report["warnings"], 0);
    let mut as_text = Vec::new();
    for d in diagnostics {
        let file = d["file"].as_str().expect("file");
        let line = d["line"].as_u64().expect("line");
        let column = d["column"].as_u64().expect("column");
        let field = d["field"].as_str().expect("field");
        let message = d["message"].as_str().expect("message");
        assert_eq!(d["severity"], "error");
        assert!(line >= 1 && column >= 1, "{d}");
        let field = if field.is_empty() {
            String::new()
        } else {
            format!("{field}: ")
        };
        as_text.push(format!("{file}:{line}:{column}: error: {field}{message}"));
    }
    // The JSON carries the same diagnostics as the text output, field for field.
    let text_out = bowline(&["validate"], repo.path());
    let mut text_lines: Vec<String> = stdout(&text_out).lines().map(str::to_string).collect();
    text_lines.pop();
    assert_eq!(as_text, text_lines);
    // And a known diagnostic comes through with its position and field.
    assert!(
        diagnostics.iter().any(|d| d["file"] == "apps/api/app.yaml"
            && d["line"] == 25
            && d["column"] == 7
            && d["field"] == "spec.pipeline.variables.canaryWeight"
            && d["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("parameter \"canaryWeight\": expected a"))),
        "{diagnostics:#?}"
    );
}

#[test]
fn json_report_of_a_valid_repository() {
    let repo = common::base_repo();
    let out = bowline(&["validate", "--format", "json"], repo.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).expect("stdout is JSON");
    assert_eq!(
        report,
        serde_json::json!({"valid": true, "errors": 0, "warnings": 0, "diagnostics": [], "policy": {"results": [], "exceptions": []}})
    );
}

#[test]
fn max_file_size_option_applies_the_limit() {
    let repo = common::base_repo();
    let limit = 300;
    let out = bowline(
        &["validate", "--max-file-size", &limit.to_string()],
        repo.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    // Exactly the base files above the limit are refused, each with its size.
    let files = [
        "bowline.yaml",
        "apps/api/app.yaml",
        "apps/api/manifests/deployment.yaml",
        "apps/api/manifests/service.yaml",
        "pipelines/standard.yaml",
        "canary/api-canary.yaml",
    ];
    let mut refused = 0;
    for file in files {
        let size = std::fs::metadata(repo.path().join(file))
            .expect("base file")
            .len();
        let line =
            format!("{file}:1:1: error: file is {size} bytes, over the limit of {limit} bytes");
        let reported = text.lines().any(|l| l == line);
        assert_eq!(reported, size > limit, "{file} ({size} bytes) in\n{text}");
        refused += usize::from(reported);
    }
    assert!(refused >= 2 && refused < files.len(), "{text}");
}

#[test]
fn render_and_plan_fail_on_an_invalid_repository() {
    let repo = common::case_repo("duplicate-stage-names");
    let render = bowline(&["render"], repo.path());
    assert_eq!(render.status.code(), Some(1));
    assert!(render.stdout.is_empty(), "no objects on errors");
    let err = stderr(&render);
    for line in expected_lines("duplicate-stage-names") {
        assert!(err.contains(&line), "render stderr lacks {line:?}:\n{err}");
    }
    assert!(
        err.contains("render failed: 1 error in the config repository"),
        "{err}"
    );
    let plan = bowline(&["plan"], repo.path());
    assert_eq!(plan.status.code(), Some(1));
}

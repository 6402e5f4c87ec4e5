//! Repository policies (`policies/*.rego` of the config repository) through the binary:
//! loading, broken Rego reported with file and line, exceptions listed, `validate` and `plan`
//! failing on deny, JSON output.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn example_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo")
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/policy/repository")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A copy of example-repo with the named fixture policies in its `policies/`.
fn repo_with(policies: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    common::copy_tree(&example_repo(), dir.path(), &[]);
    for name in policies {
        common::write_file(dir.path(), &format!("policies/{name}"), fixture(name));
    }
    dir
}

fn bowline(args: &[&str], repo: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bowline"))
        .args(args)
        .arg(repo)
        .env_remove("KUBECONFIG")
        .env("HOME", repo)
        .output()
        .expect("bowline runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exempts the inventory worker's Deployment from `policy` with `reason`.
fn except_worker(repo: &Path, policy: &str, reason: &str) {
    let path = repo.join("apps/inventory-worker/manifests/worker.yaml");
    let text = fs::read_to_string(&path).expect("worker.yaml");
    let marker = "kind: Deployment\nmetadata:\n  name: {{ app.name }}\n";
    assert!(text.contains(marker), "{text}");
    let text = text.replace(
        marker,
        &format!("{marker}  annotations:\n    bowline.dev/policy-exception.{policy}: {reason:?}\n"),
    );
    fs::write(&path, text).expect("write worker.yaml");
}

#[test]
fn the_example_repository_has_no_policy_results() {
    let out = bowline(&["validate", "--format", "json"], &example_repo());
    assert!(out.status.success(), "{}", stdout(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["policy"]["results"], serde_json::json!([]));
    assert_eq!(report["policy"]["exceptions"], serde_json::json!([]));
    assert_eq!(report["warnings"], 0);
}

#[test]
fn repository_policies_deny_with_file_line_object_and_field() {
    let repo = repo_with(&["team_label.rego", "lib_helpers.rego"]);
    let out = bowline(&["validate"], repo.path());
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "apps/inventory-worker/manifests/cronjob.yaml:1:1: error: team-label: CronJob shop-staging/inventory-worker-reconcile in staging: metadata.labels.team: has no team label; label every workload with its owning team",
            "apps/inventory-worker/manifests/cronjob.yaml:1:1: error: team-label: CronJob shop/inventory-worker-reconcile in production: metadata.labels.team: has no team label; label every workload with its owning team",
            "apps/inventory-worker/manifests/worker.yaml:8:1: error: team-label: Deployment shop-staging/inventory-worker in staging: metadata.labels.team: has no team label; label every workload with its owning team",
            "apps/inventory-worker/manifests/worker.yaml:8:1: error: team-label: Deployment shop/inventory-worker in production: metadata.labels.team: has no team label; label every workload with its owning team",
        ],
        "{text}"
    );
    assert!(
        lines[4].starts_with("") && lines[4].contains(": invalid: 4 errors, 0 warnings"),
        "{text}"
    );
}

#[test]
fn exceptions_suppress_and_are_listed_in_text_and_json() {
    let repo = repo_with(&["team_label.rego"]);
    except_worker(
        repo.path(),
        "team-label",
        "owned by the fulfilment on-call rota until the team split (FUL-42)",
    );
    let out = bowline(&["validate"], repo.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        !text.contains("Deployment shop/inventory-worker in production: metadata.labels.team"),
        "{text}"
    );
    for line in [
        "apps/inventory-worker/manifests/worker.yaml:8:1: exception: team-label: Deployment shop-staging/inventory-worker in staging: \"owned by the fulfilment on-call rota until the team split (FUL-42)\" (1 result suppressed)",
        "apps/inventory-worker/manifests/worker.yaml:8:1: exception: team-label: Deployment shop/inventory-worker in production: \"owned by the fulfilment on-call rota until the team split (FUL-42)\" (1 result suppressed)",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?}:\n{text}");
    }

    let out = bowline(&["validate", "--format", "json"], repo.path());
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let results = report["policy"]["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "{report:#}");
    assert_eq!(results[0]["policy"], "team-label");
    assert_eq!(results[0]["severity"], "deny");
    assert_eq!(results[0]["environment"], "production");
    assert_eq!(
        results[0]["object"],
        "CronJob shop/inventory-worker-reconcile"
    );
    assert_eq!(results[0]["field"], "metadata.labels.team");
    assert_eq!(
        results[0]["file"],
        "apps/inventory-worker/manifests/cronjob.yaml"
    );
    let exceptions = report["policy"]["exceptions"]
        .as_array()
        .expect("exceptions");
    assert_eq!(exceptions.len(), 2, "{report:#}");
    assert_eq!(exceptions[0]["environment"], "production");
    assert_eq!(exceptions[0]["object"], "Deployment shop/inventory-worker");
    assert_eq!(
        exceptions[0]["reason"],
        "owned by the fulfilment on-call rota until the team split (FUL-42)"
    );
    assert_eq!(exceptions[0]["suppressed"], 1);
}

#[test]
fn broken_rego_is_reported_with_file_and_line_and_the_rest_still_runs() {
    let repo = repo_with(&[
        "broken.rego",
        "phone_home.rego",
        "shadow.rego",
        "team_label.rego",
    ]);
    let out = bowline(&["validate"], repo.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let policy_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("policies/"))
        .collect();
    assert_eq!(policy_lines.len(), 3, "{text}");
    assert_eq!(
        policy_lines[0],
        "policies/broken.rego:5:1: error: invalid Rego policy: invalid character in string"
    );
    assert_eq!(
        policy_lines[1],
        "policies/phone_home.rego:5:1: error: invalid Rego policy: http.send is not available: policies have no network access"
    );
    assert_eq!(
        policy_lines[2],
        "policies/shadow.rego:1:1: error: invalid Rego policy: package bowline.policies.image_tag belongs to the built-in policy \"image-tag\"; choose another name"
    );
    // The valid policy next to the broken ones still runs.
    assert!(
        text.contains("error: team-label: CronJob shop/inventory-worker-reconcile"),
        "{text}"
    );
}

#[test]
fn plan_fails_on_deny_and_reports_policy_results_in_json() {
    let repo = repo_with(&["team_label.rego"]);
    let out = bowline(&["plan"], repo.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("apps/inventory-worker/manifests/worker.yaml:8:1: error: team-label: Deployment shop/inventory-worker in production: metadata.labels.team: has no team label"),
        "{text}"
    );
    except_worker(repo.path(), "team-label", "FUL-42");
    let out = bowline(&["plan", "--format", "json"], repo.path());
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        report["policy"]["results"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(report["policy"]["exceptions"][0]["reason"], "FUL-42");
}

#[test]
fn a_warn_only_policy_keeps_validate_green() {
    let repo = repo_with(&[]);
    common::write_file(
        repo.path(),
        "policies/annotations.rego",
        "package bowline.policies.owner_annotation\n\nwarn contains {\"field\": \"metadata.annotations\", \"msg\": \"names no owner\"} if {\n\tinput.object.kind == \"Service\"\n\tnot input.object.metadata.annotations[\"acme.example/owner\"]\n}\n",
    );
    let out = bowline(&["validate"], repo.path());
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("apps/checkout-api/manifests/service.yaml:1:1: warning: owner-annotation: Service shop/checkout-api in production: metadata.annotations: names no owner"),
        "{text}"
    );
}

#[test]
fn a_policy_failing_at_run_time_is_reported_once_at_its_line() {
    let repo = repo_with(&[]);
    common::write_file(
        repo.path(),
        "policies/typo.rego",
        "package bowline.policies.typo\n\ndeny contains msg if {\n\tinput.object.kind == \"Deployment\"\n\tmsg := strings.no_such_function(input.object.kind)\n}\n",
    );
    let out = bowline(&["validate"], repo.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("policies/typo.rego:5:1: error: policy \"typo\" failed: ")
            && lines[0].contains("strings.no_such_function"),
        "{text}"
    );
}

#[test]
fn the_worker_process_gives_the_results_of_the_in_process_interpreter() {
    // The binary evaluates repository policies in its bounded worker process; the library,
    // unless told otherwise, in its own process. Both must report the same.
    let repo = repo_with(&[
        "broken.rego",
        "lib_helpers.rego",
        "phone_home.rego",
        "shadow.rego",
        "team_label.rego",
    ]);
    except_worker(
        repo.path(),
        "team-label",
        "batch job owned by the platform team",
    );
    let out = bowline(&["validate"], repo.path());
    let printed: Vec<String> = stdout(&out)
        .lines()
        .filter(|l| l.contains(": error: ") || l.contains(": warning: "))
        .map(str::to_string)
        .collect();
    let limits = bowline::source::Limits::default();
    let (snapshot, mut diagnostics) =
        bowline::source::Snapshot::from_dir(repo.path(), &limits).expect("snapshot");
    let checked = bowline::check::check_snapshot(&snapshot, None, None).expect("checked");
    assert!(!checked.policy.results.is_empty());
    diagnostics.extend(checked.diagnostics);
    bowline::diagnostic::sort_and_dedup(&mut diagnostics);
    let in_process = common::lines(&diagnostics);
    assert!(!in_process.is_empty());
    assert_eq!(printed, in_process);
}

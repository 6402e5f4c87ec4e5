//! How a repository tunes policies: `bowline.yaml` sets a policy's severity (everywhere or per
//! environment) or leaves apps out, and an app declares its own exceptions with a reason.
//! Each is checked through the one check `validate`, `plan` and the daemon share.

mod common;

use std::path::Path;

use bowline::check::{Checked, check_snapshot};
use bowline::policy::PolicySeverity;
use bowline::source::{Limits, Snapshot};

fn check(root: &Path) -> Checked {
    let (snapshot, _) = Snapshot::from_dir(root, &Limits::default()).expect("snapshot");
    check_snapshot(&snapshot, None, None).expect("check")
}

/// `(environment, severity)` of each `resources` result.
fn resources(checked: &Checked) -> Vec<(String, PolicySeverity)> {
    let mut found: Vec<(String, PolicySeverity)> = checked
        .policy
        .results
        .iter()
        .filter(|r| r.policy == "resources")
        .map(|r| (r.environment.clone(), r.severity))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.dedup();
    found
}

fn append(root: &Path, file: &str, text: &str) {
    let path = root.join(file);
    let mut content = std::fs::read_to_string(&path).expect("read");
    content.push_str(text);
    std::fs::write(&path, content).expect("write");
}

/// The base repository with a Deployment that sets no resources.
fn without_resources() -> tempfile::TempDir {
    let repo = common::base_repo();
    let deployment = repo.path().join("apps/api/manifests/deployment.yaml");
    let text = std::fs::read_to_string(&deployment).expect("read");
    let trimmed = text.replace(
        "          resources:\n            requests: {cpu: 100m, memory: 128Mi}\n            limits: {cpu: 500m, memory: 256Mi}\n",
        "",
    );
    assert_ne!(text, trimmed, "the base Deployment sets resources");
    std::fs::write(&deployment, trimmed).expect("write");
    repo
}

#[test]
fn severity_per_environment_and_excluded_apps() {
    let repo = without_resources();
    let before = resources(&check(repo.path()));
    assert_eq!(
        before.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(),
        ["production", "staging"],
        "{before:?}"
    );

    append(
        repo.path(),
        "bowline.yaml",
        "  policies:\n    resources:\n      severity: warn\n      environments:\n        production: deny\n",
    );
    let checked = check(repo.path());
    assert_eq!(
        resources(&checked),
        [
            ("production".to_string(), PolicySeverity::Deny),
            ("staging".to_string(), PolicySeverity::Warn)
        ]
    );

    let tuned = without_resources();
    append(
        tuned.path(),
        "bowline.yaml",
        "  policies:\n    resources:\n      excludeApps: [api, gone]\n    image-tag:\n      environments:\n        staging: off\n",
    );
    let checked = check(tuned.path());
    assert!(resources(&checked).is_empty(), "{:?}", checked.policy);
    let lines: Vec<String> = checked
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("warning")
            && l.contains("spec.policies.resources.excludeApps[1]")
            && l.contains("no application \"gone\"")),
        "{lines:#?}"
    );
}

#[test]
fn an_app_declares_its_exceptions_with_a_reason() {
    let repo = without_resources();
    append(
        repo.path(),
        "apps/api/app.yaml",
        "  policyExceptions:\n    - policy: resources\n      reason: sized by the vertical pod autoscaler in staging\n      environments: [staging]\n",
    );
    let checked = check(repo.path());
    assert_eq!(
        resources(&checked),
        [("production".to_string(), PolicySeverity::Deny)]
    );
    let exception = checked
        .policy
        .exceptions
        .iter()
        .find(|e| e.policy == "resources")
        .unwrap_or_else(|| panic!("{:?}", checked.policy.exceptions));
    assert_eq!(exception.environment, "staging");
    assert_eq!(exception.file, "apps/api/app.yaml");
    assert!(exception.suppressed > 0);
    assert!(exception.reason.contains("vertical pod autoscaler"));
    assert!(
        exception.line > 20,
        "points at the exception: {exception:?}"
    );
}

#[test]
fn unknown_policies_and_environments_are_errors_naming_the_field() {
    let repo = common::base_repo();
    append(
        repo.path(),
        "bowline.yaml",
        "  policies:\n    resource:\n      severity: off\n    probes:\n      environments:\n        qa: warn\n",
    );
    append(
        repo.path(),
        "apps/api/app.yaml",
        "  policyExceptions:\n    - policy: image-tags\n      reason: pinned by digest elsewhere\n",
    );
    let checked = check(repo.path());
    let errors: Vec<String> = checked
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    for expected in [
        "bowline.yaml:",
        "spec.policies.resource: unknown policy \"resource\" (did you mean \"resources\"?)",
        "spec.policies.probes.environments.qa: unknown environment \"qa\"",
        "apps/api/app.yaml:",
        "spec.policyExceptions[0].policy: unknown policy \"image-tags\" (did you mean \"image-tag\"?)",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{expected}\n{errors:#?}"
        );
    }
}

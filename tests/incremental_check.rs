//! The daemon's incremental checks give what a check from scratch gives. One `Checker` checks
//! every validation fixture case in turn, and the base repository between them, keeping each
//! app's results from one check to the next; every result must equal a fresh check of the same
//! snapshot: diagnostics, renders and policy results.

mod common;

use std::path::Path;

use bowline::check::{Checked, Checker, check_snapshot};
use bowline::source::{Limits, Snapshot};
use common::{base_repo, case_names, case_repo};

fn snapshot(root: &Path) -> Snapshot {
    Snapshot::from_dir(root, &Limits::default())
        .expect("fixture repository is readable")
        .0
}

/// Everything a check reports, as text.
fn report(checked: Result<Checked, bowline::policy::PolicyError>) -> Vec<String> {
    match checked {
        Err(e) => vec![format!("policy error: {e}")],
        Ok(c) => c
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .chain(c.rendered.iter().map(|r| {
                format!(
                    "render {} {}: {:?} {:?}",
                    r.app, r.environment, r.result, r.warnings
                )
            }))
            .chain(c.policy.results.iter().map(|r| format!("policy {r:?}")))
            .chain(
                c.policy
                    .exceptions
                    .iter()
                    .map(|e| format!("exception {e:?}")),
            )
            .collect(),
    }
}

#[test]
fn every_fixture_case_checks_the_same_with_kept_results() {
    let checker = Checker::default();
    let base = base_repo();
    let base_snapshot = snapshot(base.path());
    let cases = case_names();
    assert!(cases.len() > 50, "{cases:?}");
    let mut base_kept = 0;
    for case in &cases {
        let repo = case_repo(case);
        let case_snapshot = snapshot(repo.path());
        for (what, s) in [(case.as_str(), &case_snapshot), ("base", &base_snapshot)] {
            let kept = checker.check(s, None, None);
            // Back on the base, the app is computed again only when the case changed its files
            // (the base's platform results are kept beside the case's).
            if what == "base" && !touches_apps(case) {
                let computed = kept.as_ref().map_or(1, |k| k.computed);
                assert_eq!(computed, 0, "base after {case}");
                base_kept += 1;
            }
            assert_eq!(
                report(kept),
                report(check_snapshot(s, None, None)),
                "{what} after {case}"
            );
        }
    }
    assert!(base_kept > 20, "{base_kept}");
}

/// Whether fixture case `case` adds, changes or deletes files under `apps/`.
fn touches_apps(case: &str) -> bool {
    let dir = common::case_dir(case);
    dir.join("apps").exists()
        || std::fs::read_to_string(dir.join("_delete"))
            .is_ok_and(|list| list.lines().any(|l| l.trim().starts_with("apps")))
}

#[test]
fn the_example_repository_checks_the_same_after_edits_to_one_app() {
    let dir = tempfile::tempdir().expect("temp dir");
    common::copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo"),
        dir.path(),
        &[],
    );
    let checker = Checker::default();
    let first = checker
        .check(&snapshot(dir.path()), None, None)
        .expect("check");
    assert_eq!(first.computed, first.repo.apps.len());

    let app = dir.path().join("apps/checkout-api/app.yaml");
    let text = std::fs::read_to_string(&app).expect("read");
    let edits = [
        text.replacen("tag: \"2.14.1\"", "tag: \"2.15.0\"", 1),
        text.replacen("replicas: 3", "replicas: 30", 1),
        text.replacen("tag: \"2.14.1\"", "tag: latest", 1),
        text.clone(),
    ];
    for edited in edits {
        std::fs::write(&app, &edited).expect("write");
        let s = snapshot(dir.path());
        let kept = checker.check(&s, None, None).expect("check");
        assert!(kept.computed <= 1, "{}", kept.computed);
        assert_eq!(
            report(Ok(kept)),
            report(check_snapshot(&s, None, None)),
            "{edited}"
        );
    }
}

//! The bundled example-repo: it validates cleanly, and its rendered output and plan match the
//! reviewed snapshots in tests/snapshots/.

use std::path::Path;
use std::process::Command;

use bowline::config;
use bowline::plan;
use bowline::render;
use bowline::source::{Limits, Snapshot};

fn example_repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/example-repo"))
}

fn load() -> (config::ConfigRepo, Vec<bowline::diagnostic::Diagnostic>) {
    let (snapshot, mut diagnostics) =
        Snapshot::from_dir(example_repo(), &Limits::default()).expect("example-repo readable");
    let (repo, more) = config::load(&snapshot);
    diagnostics.extend(more);
    (repo, diagnostics)
}

fn rendered_stream(repo: &config::ConfigRepo) -> String {
    let mut out = String::new();
    for r in render::render_repo(repo, None, None) {
        let objects = r
            .result
            .unwrap_or_else(|e| panic!("{}/{}: {e:?}", r.app, r.environment));
        out.push_str(&format!("### {} in {}\n", r.app, r.environment));
        out.push_str(&render::to_yaml_stream(&objects));
    }
    out
}

#[test]
fn example_repo_has_no_diagnostics() {
    let (repo, diagnostics) = load();
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    assert_eq!(repo.apps.len(), 3);
    assert_eq!(repo.pipelines.len(), 3);
    assert_eq!(repo.canaries.len(), 1);
}

#[test]
fn example_repo_render_matches_snapshot() {
    let (repo, _) = load();
    insta::assert_snapshot!("example_repo_render", rendered_stream(&repo));
}

#[test]
fn render_is_deterministic() {
    let (repo, _) = load();
    let first = rendered_stream(&repo);
    for _ in 0..5 {
        let (again, _) = load();
        assert_eq!(rendered_stream(&again), first);
    }
}

#[test]
fn example_repo_plan_matches_snapshot() {
    let (repo, diagnostics) = load();
    let rendered = render::render_summaries(&repo, None, None);
    let plan = plan::build(&repo, &diagnostics, &rendered);
    insta::assert_snapshot!("example_repo_plan", plan::to_table(&plan));
}

#[test]
fn rendered_objects_are_ordered_and_labelled() {
    let (repo, _) = load();
    for r in render::render_repo(&repo, None, None) {
        let objects = r.result.expect("renders");
        let ranks: Vec<usize> = objects
            .iter()
            .map(|o| bowline::object::kind_rank(&o.kind))
            .collect();
        assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
        for o in &objects {
            let labels = &o.object["metadata"]["labels"];
            assert_eq!(labels[render::MANAGED_BY_LABEL], "bowline");
            assert_eq!(labels[render::APP_KEY], r.app.as_str());
            assert_eq!(
                o.object["metadata"]["annotations"][render::APP_KEY],
                r.app.as_str()
            );
            assert!(o.namespace.is_some(), "{} has no namespace", o.id());
        }
    }
}

#[test]
fn cli_render_selects_app_and_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_bowline"))
        .args(["render"])
        .arg(example_repo())
        .args(["--app", "inventory-worker", "--env", "production"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(text.matches("\n---\n").count() + 1, 4, "{text}");
    assert!(text.contains("image: ghcr.io/acme/inventory-worker:0.31.3"));
    assert!(!text.contains("bowline.dev/environment: staging"));

    let out = Command::new(env!("CARGO_BIN_EXE_bowline"))
        .args(["render"])
        .arg(example_repo())
        .args(["--app", "nope"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown application \"nope\""));
}

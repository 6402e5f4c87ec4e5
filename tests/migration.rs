//! A repository as a team migrating to bowline brings it (`tests/fixtures/migration/`): a JSON
//! manifest and an upper-case `.YML` one, YAML written for kubectl (anchors, merge keys, octal
//! file modes), an app whose manifests carry their own image, and policies relaxed in
//! `bowline.yaml` for the migration. It goes through `validate`, `plan`, `sync` and `plan`
//! again against the Kubernetes API test server; then someone runs `kubectl set image`, and
//! then two apps claim one object.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use kube_api_test_server::{TestServer, kubeconfig_for};
use serde_json::{Value, json};

struct World {
    repo: tempfile::TempDir,
    cluster: TestServer,
}

impl World {
    fn new() -> World {
        let repo = tempfile::tempdir().expect("temp dir");
        common::copy_tree(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/migration"),
            repo.path(),
            &[],
        );
        let cluster = TestServer::start();
        fs::write(
            repo.path().join("kubeconfig.yaml"),
            kubeconfig_for(&[("migrate", &cluster)]),
        )
        .expect("kubeconfig");
        World { repo, cluster }
    }

    fn bowline(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_bowline"))
            .args(args)
            .arg(self.repo.path())
            .arg("--kubeconfig")
            .arg(self.repo.path().join("kubeconfig.yaml"))
            .output()
            .expect("bowline runs")
    }

    fn plan(&self) -> (Option<i32>, Value) {
        let out = self.bowline(&["plan", "--format", "json", "--exit-code"]);
        let plan = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("plan JSON: {e}\n{}", text(&out)));
        (out.status.code(), plan)
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_migrating_repository_validates_plans_syncs_and_stays_in_sync() {
    let world = World::new();
    let validate = Command::new(env!("CARGO_BIN_EXE_bowline"))
        .arg("validate")
        .arg(world.repo.path())
        .output()
        .expect("validate");
    assert_eq!(validate.status.code(), Some(0), "{}", text(&validate));
    assert!(
        text(&validate).contains("3 apps") && text(&validate).contains("5 objects"),
        "every manifest is read: {}",
        text(&validate)
    );

    let (code, plan) = world.plan();
    assert_eq!(code, Some(2), "{plan:#}");
    assert_eq!(
        plan["totals"]["create"], 8,
        "5 objects, and the namespace in each of the 3 apps' plans: {plan:#}"
    );

    for app in ["catalog", "worker", "legacy"] {
        let out = world.bowline(&["sync", "--app", app, "--env", "staging"]);
        assert!(out.status.success(), "sync {app}: {}", text(&out));
    }
    let worker = world
        .cluster
        .get("apps/v1", "Deployment", Some("shop"), "worker")
        .expect("worker deployed");
    let template = &worker["spec"]["template"];
    assert_eq!(
        template["spec"]["volumes"][0]["configMap"]["defaultMode"], 493,
        "0755 is octal, as kubectl sends it"
    );
    assert_eq!(
        template["metadata"]["labels"],
        json!({"app": "worker", "tier": "batch", "track": "stable"})
    );
    assert!(
        world
            .cluster
            .get("v1", "Service", Some("shop"), "catalog")
            .is_some(),
        "the .YML manifest is applied"
    );

    let (code, plan) = world.plan();
    assert_eq!(code, Some(0), "in sync after the sync: {plan:#}");

    // Someone runs `kubectl set image`: the plan shows the image change, marked as a conflict.
    world.cluster.patch_as(
        "kubectl-set",
        "apps/v1",
        "Deployment",
        Some("shop"),
        "catalog",
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "catalog", "image": "ghcr.io/acme/catalog:3.1.1-hotfix", "ports": [{"containerPort": 8080}]}
        ]}}}}),
    );
    let (code, plan) = world.plan();
    assert_eq!(code, Some(2), "{plan:#}");
    assert_eq!(plan["totals"]["update"], 1, "{plan:#}");
    assert!(
        plan.to_string().contains("kubectl-set"),
        "the conflict names the manager: {plan:#}"
    );

    // Two apps claim one object: an error naming both, before anything reaches the cluster.
    fs::write(
        world.repo.path().join("apps/legacy/manifests/service.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: catalog\nspec:\n  ports:\n    - port: 80\n",
    )
    .expect("colliding service");
    let validate = Command::new(env!("CARGO_BIN_EXE_bowline"))
        .arg("validate")
        .arg(world.repo.path())
        .output()
        .expect("validate");
    assert_eq!(validate.status.code(), Some(1), "{}", text(&validate));
    let report = text(&validate);
    assert!(
        report.contains("apps/legacy/manifests/service.yaml")
            && report.contains("also rendered by app \"catalog\""),
        "{report}"
    );
    assert!(
        report.contains("apps/catalog/manifests/Service.YML")
            && report.contains("also rendered by app \"legacy\""),
        "{report}"
    );
}

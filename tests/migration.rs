//! A repository as a team migrating to bowline brings it (`tests/fixtures/migration/`): a JSON
//! manifest and an upper-case `.YML` one, YAML written for kubectl (anchors, merge keys, octal
//! file modes), an app whose manifests carry their own image, policies relaxed in
//! `bowline.yaml` for the migration, and an app kept as a Kustomize base with an overlay per
//! environment (built by the kustomize in `kubectl`). It goes through `validate`, `render`,
//! `plan`, `sync` and `plan` again against the Kubernetes API test server; then someone runs
//! `kubectl set image`, and then two apps claim one object. Further tests: a Kustomize
//! generator's input changing, no usable `kubectl`, and an object moved between apps.

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
        self.plan_with(&[])
    }

    fn plan_app(&self, app: &str, env: &str) -> (Option<i32>, Value) {
        self.plan_with(&["--app", app, "--env", env])
    }

    fn plan_with(&self, selection: &[&str]) -> (Option<i32>, Value) {
        let mut args = vec!["plan", "--format", "json", "--exit-code"];
        args.extend_from_slice(selection);
        let out = self.bowline(&args);
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
        text(&validate).contains("4 apps") && text(&validate).contains("11 objects"),
        "every manifest is read: {}",
        text(&validate)
    );

    // The Kustomize app renders with each object attributed to the file it came from.
    let render = Command::new(env!("CARGO_BIN_EXE_bowline"))
        .args(["render", "--app", "storefront", "--env", "production"])
        .arg(world.repo.path())
        .output()
        .expect("render");
    assert!(render.status.success(), "{}", text(&render));
    let stream = String::from_utf8_lossy(&render.stdout);
    for source in [
        "# Source: apps/storefront/manifests/base/deployment.yaml",
        "# Source: apps/storefront/manifests/base/service.yaml",
        "# Source: apps/storefront/manifests/base/kustomization.yaml",
    ] {
        assert!(stream.contains(source), "{source}\n{stream}");
    }
    assert!(
        stream.contains("replicas: 3") && stream.contains("image: ghcr.io/acme/storefront:1.4.0")
    );
    assert!(!stream.contains("config.kubernetes.io/origin"), "{stream}");

    let (code, plan) = world.plan();
    assert_eq!(code, Some(2), "{plan:#}");
    assert_eq!(
        plan["totals"]["create"], 16,
        "11 objects, and the namespace in each of the 5 app/environment plans: {plan:#}"
    );

    for (app, env) in [
        ("catalog", "staging"),
        ("worker", "staging"),
        ("legacy", "staging"),
        ("storefront", "staging"),
        ("storefront", "production"),
    ] {
        let out = world.bowline(&["sync", "--app", app, "--env", env]);
        assert!(out.status.success(), "sync {app} {env}: {}", text(&out));
    }
    // The Kustomize app: the overlay's replicas and patch, the base's generated ConfigMap
    // (with its content hash in the name), the image tag from app.yaml.
    for (namespace, replicas, requests) in [
        ("shop", 1, json!({"cpu": "100m", "memory": "128Mi"})),
        ("shop-prod", 3, Value::Null),
    ] {
        let storefront = world
            .cluster
            .get("apps/v1", "Deployment", Some(namespace), "storefront")
            .expect("storefront deployed");
        assert_eq!(storefront["spec"]["replicas"], replicas, "{storefront:#}");
        let container = &storefront["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "ghcr.io/acme/storefront:1.4.0");
        assert_eq!(container["resources"]["requests"], requests);
        let volume = &storefront["spec"]["template"]["spec"]["volumes"][0]["configMap"];
        assert_eq!(volume["defaultMode"], 292, "0444 is octal");
        let config = volume["name"].as_str().expect("config map name");
        assert!(config.starts_with("storefront-config-"), "{config}");
        let map = world
            .cluster
            .get("v1", "ConfigMap", Some(namespace), config)
            .expect("generated config map applied");
        assert!(
            map["data"]["app.properties"]
                .as_str()
                .is_some_and(|p| p.contains("currency=EUR")),
            "{map:#}"
        );
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

#[test]
fn a_kustomize_config_change_replaces_its_generated_config_map() {
    let world = World::new();
    let out = world.bowline(&["sync", "--app", "storefront", "--env", "staging"]);
    assert!(out.status.success(), "{}", text(&out));
    fs::write(
        world
            .repo
            .path()
            .join("apps/storefront/manifests/base/config/app.properties"),
        "currency=USD\ncheckout.url=http://checkout\n",
    )
    .expect("edit the generator's file");
    let out = world.bowline(&[
        "plan",
        "--app",
        "storefront",
        "--env",
        "staging",
        "--format",
        "json",
        "--exit-code",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    // A new ConfigMap (new content hash), the Deployment pointing at it, the old one pruned.
    assert_eq!(
        (
            &plan["totals"]["create"],
            &plan["totals"]["update"],
            &plan["totals"]["delete"]
        ),
        (&json!(1), &json!(1), &json!(1)),
        "{plan:#}"
    );
    let out = world.bowline(&["sync", "--app", "storefront", "--env", "staging"]);
    assert!(out.status.success(), "{}", text(&out));
    let maps = world.cluster.list("v1", "ConfigMap", Some("shop"));
    let names: Vec<&str> = maps
        .iter()
        .filter_map(|m| m["metadata"]["name"].as_str())
        .filter(|n| n.starts_with("storefront-config-"))
        .collect();
    assert_eq!(
        names.len(),
        1,
        "the old generated ConfigMap is pruned: {names:?}"
    );
    let (code, plan) = world.plan_app("storefront", "staging");
    assert_eq!(code, Some(0), "{plan:#}");
}

#[test]
fn without_a_usable_kubectl_a_kustomize_app_fails_validation_saying_so() {
    let world = World::new();
    let out = Command::new(env!("CARGO_BIN_EXE_bowline"))
        .arg("validate")
        .arg(world.repo.path())
        .env("BOWLINE_KUBECTL", world.repo.path().join("no-such-kubectl"))
        .output()
        .expect("validate");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = text(&out);
    assert!(
        report.contains("apps/storefront/manifests/overlays/staging/kustomization.yaml")
            && report.contains("cannot run")
            && report.contains("no-such-kubectl"),
        "{report}"
    );
    // The apps kept as templates still render.
    assert!(
        !report.contains("apps/catalog/manifests/deployment.json:1:1: error"),
        "{report}"
    );
}

#[test]
fn an_object_moved_between_apps_is_handed_over_and_never_pruned() {
    for first in ["catalog", "legacy"] {
        let world = World::new();
        for app in ["catalog", "legacy"] {
            let out = world.bowline(&["sync", "--app", app, "--env", "staging"]);
            assert!(out.status.success(), "sync {app}: {}", text(&out));
        }
        // One commit moves the Service from catalog to legacy.
        let repo = world.repo.path();
        fs::rename(
            repo.join("apps/catalog/manifests/Service.YML"),
            repo.join("apps/legacy/manifests/service.yaml"),
        )
        .expect("move the manifest");
        let validate = Command::new(env!("CARGO_BIN_EXE_bowline"))
            .arg("validate")
            .arg(repo)
            .output()
            .expect("validate");
        assert_eq!(validate.status.code(), Some(0), "{}", text(&validate));

        let (_, plan) = world.plan_app("catalog", "staging");
        assert_eq!(
            plan["totals"]["delete"], 0,
            "catalog's prune leaves the Service legacy declares: {plan:#}"
        );
        let (_, plan) = world.plan_app("legacy", "staging");
        let service = plan["targets"][0]["objects"]
            .as_array()
            .and_then(|objects| objects.iter().find(|o| o["key"]["kind"] == "Service"))
            .cloned()
            .unwrap_or_else(|| panic!("the Service is planned: {plan:#}"));
        assert_eq!(service["action"], "update", "{service:#}");
        assert_eq!(service["takenOverFrom"], "catalog", "{service:#}");

        // In either order, the Service ends up legacy's and is never deleted.
        let second = if first == "catalog" {
            "legacy"
        } else {
            "catalog"
        };
        for app in [first, second] {
            let out = world.bowline(&["sync", "--app", app, "--env", "staging"]);
            assert!(out.status.success(), "sync {app}: {}", text(&out));
            let live = world
                .cluster
                .get("v1", "Service", Some("shop"), "catalog")
                .unwrap_or_else(|| panic!("the Service was deleted by the sync of {app}"));
            let owner = &live["metadata"]["labels"]["bowline.dev/app"];
            let expected = if app == "legacy" || first == "legacy" {
                "legacy"
            } else {
                "catalog"
            };
            assert_eq!(owner, expected, "after syncing {app}");
        }
        assert!(
            !world
                .cluster
                .requests()
                .iter()
                .any(|r| r.method == "DELETE" && r.path.contains("/services/")),
            "no Service was ever deleted"
        );
        for app in ["catalog", "legacy"] {
            let (code, plan) = world.plan_app(app, "staging");
            assert_eq!(code, Some(0), "{plan:#}");
        }
    }
}

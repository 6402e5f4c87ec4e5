//! `bowline plan` and `bowline sync` against the in-repo Kubernetes API test server
//! (`tests/kube-api-server`): the real binary, a real kubeconfig, the real wire protocol.
//!
//! The headline property: after `sync`, `plan` finds nothing to change (no false drift from
//! defaulting, managedFields or server-written metadata).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kube_api_test_server::{TestServer, kubeconfig_for};
use serde_json::{Value, json};
use tempfile::TempDir;

/// The contexts example-repo's bowline.yaml names.
const STAGING: &str = "gke_acme-shop_europe-west1_staging";
const PROD_EU: &str = "gke_acme-shop_europe-west1_prod";
const PROD_US: &str = "gke_acme-shop_us-east1_prod";

/// A copy of example-repo and three clusters (one API test server each) with the namespaces
/// and the ServiceMonitor CRD that a real cluster running the Prometheus operator would have.
struct World {
    repo: TempDir,
    kubeconfig: PathBuf,
    staging: TestServer,
    prod_eu: TestServer,
    prod_us: TestServer,
}

impl World {
    fn new() -> World {
        World::build(true)
    }

    /// Fresh clusters: the CRD, but none of the environments' namespaces.
    fn without_namespaces() -> World {
        World::build(false)
    }

    fn build(with_namespaces: bool) -> World {
        let repo = tempfile::tempdir().expect("temp dir");
        common::copy_tree(&example_repo(), repo.path(), &[]);
        let crd: Value = serde_json::from_str(
            &fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures/crds/servicemonitor.json"),
            )
            .expect("CRD fixture"),
        )
        .expect("CRD fixture is JSON");
        let server = |namespace: &str| {
            let s = TestServer::start();
            if with_namespaces {
                s.create(
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
                );
            }
            s.create(crd.clone());
            s
        };
        let staging = server("shop-staging");
        let prod_eu = server("shop");
        let prod_us = server("shop");
        let kubeconfig = repo.path().join("kubeconfig.yaml");
        fs::write(
            &kubeconfig,
            kubeconfig_for(&[
                (STAGING, &staging),
                (PROD_EU, &prod_eu),
                (PROD_US, &prod_us),
            ]),
        )
        .expect("write kubeconfig");
        World {
            repo,
            kubeconfig,
            staging,
            prod_eu,
            prod_us,
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.repo.path().join(relative)
    }

    fn edit(&self, relative: &str, from: &str, to: &str) {
        let path = self.path(relative);
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.contains(from), "{relative} has no {from:?}");
        fs::write(&path, text.replacen(from, to, 1)).expect("write");
    }

    /// Runs bowline with `args`, then the repository, then the kubeconfig.
    fn bowline(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_bowline"))
            .args(args)
            .arg(self.repo.path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env_remove("KUBECONFIG")
            .env_remove("RUST_LOG")
            .env_remove("BOWLINE_LOG_LEVEL")
            .output()
            .expect("bowline runs")
    }

    fn validate(&self) -> Output {
        Command::new(env!("CARGO_BIN_EXE_bowline"))
            .arg("validate")
            .arg(self.repo.path())
            .output()
            .expect("bowline runs")
    }

    fn sync(&self, app: &str, env: &str, extra: &[&str]) -> Output {
        let mut args = vec!["sync", "--app", app, "--env", env, "--timeout", "20s"];
        args.extend_from_slice(extra);
        self.bowline(&args)
    }

    fn sync_all(&self) {
        for app in ["checkout-api", "inventory-worker", "storefront-web"] {
            for env in ["staging", "production"] {
                let out = self.sync(app, env, &[]);
                assert_success(&out, &format!("sync {app} {env}"));
            }
        }
    }

    fn plan_json(&self) -> (Option<i32>, Value) {
        let out = self.bowline(&["plan", "--format", "json", "--exit-code"]);
        let json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("plan JSON: {e}\n{}", text(&out)));
        (out.status.code(), json)
    }
}

fn example_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_success(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", text(out));
}

/// The object diffs of one target in a plan JSON.
fn target<'p>(plan: &'p Value, app: &str, env: &str, cluster: &str) -> &'p Value {
    plan["targets"]
        .as_array()
        .and_then(|ts| {
            ts.iter()
                .find(|t| t["app"] == app && t["environment"] == env && t["cluster"] == cluster)
        })
        .unwrap_or_else(|| panic!("no target {app}/{env}/{cluster} in {plan:#}"))
}

fn changed_objects(target: &Value) -> Vec<&Value> {
    target["objects"]
        .as_array()
        .map(|objects| {
            objects
                .iter()
                .filter(|o| o["action"] != "unchanged")
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn sync_then_plan_finds_nothing_to_change() {
    let world = World::new();
    let (code, before) = world.plan_json();
    assert_eq!(
        code,
        Some(2),
        "changes pending before the first sync: {before:#}"
    );
    assert_eq!(before["totals"]["create"], 45, "{before:#}");

    world.sync_all();

    let (code, plan) = world.plan_json();
    assert_eq!(code, Some(0), "in sync after sync: {plan:#}");
    assert_eq!(plan["inSync"], true);
    assert_eq!(plan["totals"]["unchanged"], 45);
    assert!(
        plan["comparedWith"]
            .as_str()
            .is_some_and(|s| s.starts_with("Compared with the live clusters")),
        "{}",
        plan["comparedWith"]
    );
    let text_plan = world.bowline(&["plan", "--exit-code"]);
    assert_eq!(text_plan.status.code(), Some(0), "{}", text(&text_plan));
    let stdout = String::from_utf8_lossy(&text_plan.stdout);
    assert!(stdout.contains("Everything is in sync."), "{stdout}");

    // The objects really are in the clusters, carrying bowline's labels and field manager.
    let deployment = world
        .prod_us
        .get("apps/v1", "Deployment", Some("shop"), "checkout-api")
        .expect("checkout-api deployed to the second production cluster");
    assert_eq!(
        deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "bowline"
    );
    let managers: Vec<&str> = deployment["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"bowline"), "{managers:?}");
    assert!(
        world
            .staging
            .get(
                "monitoring.coreos.com/v1",
                "ServiceMonitor",
                Some("shop-staging"),
                "checkout-api"
            )
            .is_some(),
        "custom resources are applied through discovery"
    );
}

#[test]
fn an_image_change_is_exactly_one_changed_field() {
    let world = World::new();
    world.sync_all();
    world.edit(
        "apps/storefront-web/app.yaml",
        "tag: \"5.3.0\"",
        "tag: \"5.4.0\"",
    );
    let (code, plan) = world.plan_json();
    assert_eq!(code, Some(2), "{plan:#}");
    assert_eq!(
        plan["totals"]["update"], 3,
        "one Deployment per cluster: {:#}",
        plan["totals"]
    );
    let staging = target(&plan, "storefront-web", "staging", "staging-eu-west-1");
    let changed = changed_objects(staging);
    assert_eq!(changed.len(), 1, "{staging:#}");
    assert_eq!(changed[0]["key"]["kind"], "Deployment");
    assert_eq!(
        changed[0]["changed"],
        json!(["/spec/template/spec/containers/0/image"])
    );
    let unified = changed[0]["unified"].as_str().unwrap_or_default();
    assert!(
        unified.contains("-        image: ghcr.io/acme/storefront-web:5.3.0"),
        "{unified}"
    );
    assert!(
        unified.contains("+        image: ghcr.io/acme/storefront-web:5.4.0"),
        "{unified}"
    );
    assert_eq!(
        unified
            .lines()
            .filter(|l| l.starts_with(['+', '-']) && !l.starts_with("+++") && !l.starts_with("---"))
            .count(),
        2,
        "{unified}"
    );
}

/// Someone ran `kubectl set image`: the image field now has another field manager. The plan
/// is still compared with the live cluster and shows the image update, marked as a conflict
/// naming that manager and saying what `forceConflicts` does; the sync without it fails.
#[test]
fn a_field_owned_by_another_manager_plans_as_a_marked_update() {
    let world = World::new();
    assert_success(&world.sync("checkout-api", "staging", &[]), "first sync");
    world.staging.patch_as(
        "kubectl-set",
        "apps/v1",
        "Deployment",
        Some("shop-staging"),
        "checkout-api",
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "api", "image": "ghcr.io/acme/checkout-api:hotfix"}
        ]}}}}),
    );
    let (code, plan) = world.plan_json();
    assert_eq!(code, Some(2), "{plan:#}");
    assert!(
        plan["comparedWith"]
            .as_str()
            .is_some_and(|s| s.starts_with("Compared with the live clusters")),
        "{plan:#}"
    );
    let staging = target(&plan, "checkout-api", "staging", "staging-eu-west-1");
    let deployment = changed_objects(staging)
        .into_iter()
        .find(|o| o["key"]["kind"] == "Deployment")
        .unwrap_or_else(|| panic!("{staging:#}"));
    assert_eq!(deployment["action"], "update", "{deployment:#}");
    let conflict = deployment["conflict"].as_str().unwrap_or_default();
    assert!(conflict.contains("kubectl-set"), "{deployment:#}");
    assert!(conflict.contains("image"), "{deployment:#}");
    let unified = deployment["unified"].as_str().unwrap_or_default();
    assert!(unified.starts_with("! conflict: "), "{unified}");
    assert!(unified.contains("forceConflicts"), "{unified}");
    assert!(
        unified
            .lines()
            .any(|l| l.starts_with('-') && l.ends_with("image: ghcr.io/acme/checkout-api:hotfix")),
        "{unified}"
    );

    let refused = world.sync("checkout-api", "staging", &[]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("kubectl-set"), "{}", text(&refused));
}

#[test]
fn removing_a_manifest_prunes_exactly_that_object() {
    let world = World::new();
    assert_success(&world.sync("checkout-api", "staging", &[]), "first sync");
    // Objects bowline must never touch: unmanaged, and managed by bowline for another app.
    world
        .staging
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "hand-made", "namespace": "shop-staging"}, "data": {"k": "v"}}));
    world.staging.create(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "other-app", "namespace": "shop-staging",
            "labels": {"app.kubernetes.io/managed-by": "bowline", "bowline.dev/app": "someone-else"},
            "annotations": {"bowline.dev/app": "someone-else", "bowline.dev/environment": "staging"}},
        "data": {"k": "v"}}));
    fs::remove_file(world.path("apps/checkout-api/manifests/pdb.yaml")).expect("remove pdb");

    let out = world.sync("checkout-api", "staging", &["--prune"]);
    assert_success(&out, "sync --prune");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pruned: Vec<&str> = stdout.lines().filter(|l| l.starts_with("  - ")).collect();
    assert_eq!(
        pruned,
        vec!["  - policy/v1 PodDisruptionBudget shop-staging/checkout-api pruned"],
        "{stdout}"
    );
    assert!(
        world
            .staging
            .get(
                "policy/v1",
                "PodDisruptionBudget",
                Some("shop-staging"),
                "checkout-api"
            )
            .is_none()
    );
    assert!(
        world
            .staging
            .get("v1", "ConfigMap", Some("shop-staging"), "hand-made")
            .is_some()
    );
    assert!(
        world
            .staging
            .get("v1", "ConfigMap", Some("shop-staging"), "other-app")
            .is_some()
    );
    assert!(
        world
            .staging
            .get(
                "apps/v1",
                "Deployment",
                Some("shop-staging"),
                "checkout-api"
            )
            .is_some()
    );
}

#[test]
fn secret_values_never_appear_in_any_output() {
    let world = World::new();
    let secret = |value: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: checkout-api-db\ntype: Opaque\nstringData:\n  password: {value}\n"
        )
    };
    let first = "first-Sup3rSecret-value";
    let second = "second-Sup3rSecret-value";
    fs::write(
        world.path("apps/checkout-api/manifests/secret.yaml"),
        secret(first),
    )
    .expect("write");
    let mut outputs = vec![
        world.bowline(&["plan"]),
        world.bowline(&["plan", "--format", "json"]),
    ];
    outputs.push(world.sync("checkout-api", "staging", &["--log-level", "trace"]));
    fs::write(
        world.path("apps/checkout-api/manifests/secret.yaml"),
        secret(second),
    )
    .expect("write");
    outputs.push(world.bowline(&["plan", "--log-level", "debug"]));
    let (code, plan) = world.plan_json();
    assert_eq!(code, Some(2));
    let changed = changed_objects(target(
        &plan,
        "checkout-api",
        "staging",
        "staging-eu-west-1",
    ));
    assert_eq!(changed.len(), 1, "{changed:#?}");
    assert_eq!(
        changed[0]["changed"],
        json!(["/data/password"]),
        "a change is still visible"
    );
    outputs.push(world.sync(
        "checkout-api",
        "staging",
        &["--dry-run", "--log-level", "debug"],
    ));

    use base64::Engine as _;
    let encoded = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    for out in &outputs {
        let all = text(out);
        for clear in [first, second] {
            for form in [clear.to_string(), encoded(clear)] {
                assert!(!all.contains(&form), "secret {form:?} leaked:\n{all}");
            }
        }
    }
    assert!(plan.to_string().contains("<masked hmac:"));
}

#[test]
fn replicas_owned_by_the_autoscaler_are_ignored() {
    let world = World::new();
    assert_success(&world.sync("checkout-api", "staging", &[]), "first sync");
    // The HorizontalPodAutoscaler controller scales the Deployment.
    world.staging.patch_as(
        "kube-controller-manager",
        "apps/v1",
        "Deployment",
        Some("shop-staging"),
        "checkout-api",
        json!({"spec": {"replicas": 5}}),
    );
    let (_, plan) = world.plan_json();
    let staging = target(&plan, "checkout-api", "staging", "staging-eu-west-1");
    assert_eq!(
        staging["counts"],
        json!({"create": 0, "update": 0, "delete": 0, "unchanged": 7}),
        "{staging:#}"
    );
    assert_success(&world.sync("checkout-api", "staging", &[]), "second sync");
    let deployment = world
        .staging
        .get(
            "apps/v1",
            "Deployment",
            Some("shop-staging"),
            "checkout-api",
        )
        .expect("deployment");
    assert_eq!(
        deployment["spec"]["replicas"], 5,
        "bowline left the autoscaler's replicas alone"
    );
}

#[test]
fn a_failing_rollout_exits_non_zero_naming_the_reason() {
    let world = World::new();
    world
        .staging
        .fail_rollouts("storefront-web:9.9.9-broken", "ImagePullBackOff");
    world.edit(
        "apps/storefront-web/app.yaml",
        "tag: \"5.3.0\"",
        "tag: \"9.9.9-broken\"",
    );
    let out = world.sync("storefront-web", "staging", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        // storefront-web deploys blue/green: its Deployment runs versioned (the copy has no
        // Git history, so its revision is `new`).
        last.starts_with("sync failed: rollout of apps/v1 Deployment shop-staging/storefront-web-new failed: ProgressDeadlineExceeded"),
        "{stdout}"
    );
    assert!(last.contains("ImagePullBackOff"), "{last}");
}

#[test]
fn server_errors_are_retried_then_reported() {
    let world = World::new();
    world
        .staging
        .fail_next(Some("PATCH"), "/deployments/", 500, 2);
    assert_success(
        &world.sync("inventory-worker", "staging", &[]),
        "sync through two 500s",
    );
    let patches = world
        .staging
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/deployments/") && r.status == 500)
        .count();
    assert_eq!(patches, 2, "both failures were seen and retried");

    world.edit(
        "apps/inventory-worker/app.yaml",
        "tag: \"0.31.3\"",
        "tag: \"0.31.5\"",
    );
    world
        .staging
        .fail_next(Some("PATCH"), "/deployments/", 500, 1000);
    let out = world.sync("inventory-worker", "staging", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("sync failed: cluster staging-eu-west-1: dry-run apply apps/v1 Deployment shop-staging/inventory-worker:"),
        "{stdout}"
    );
    assert!(stdout.contains("500"), "{stdout}");
}

#[test]
fn an_unreachable_cluster_gives_a_clear_error() {
    let world = World::new();
    // A port nothing listens on: a privileged one, so no test server binds it (a free port
    // picked and released here could be taken by another test's server meanwhile).
    let port = 1;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something listens on port {port}"
    );
    let kubeconfig = fs::read_to_string(&world.kubeconfig).expect("kubeconfig");
    let url = world.staging.url();
    fs::write(
        &world.kubeconfig,
        kubeconfig.replace(&url, &format!("http://127.0.0.1:{port}")),
    )
    .expect("write");

    let out = world.sync("checkout-api", "staging", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "sync failed: cluster staging-eu-west-1 (context {STAGING}) is unreachable at http://127.0.0.1:{port}/"
        )),
        "{stdout}"
    );

    let plan = world.bowline(&["plan", "--exit-code"]);
    assert_eq!(plan.status.code(), Some(1), "{}", text(&plan));
    let first = String::from_utf8_lossy(&plan.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        first.starts_with(
            "1 cluster compared with an empty cluster (cluster staging-eu-west-1 (context"
        ),
        "{first}"
    );
}

#[test]
fn plan_without_any_cluster_says_so_first() {
    let world = World::new();
    let out = Command::new(env!("CARGO_BIN_EXE_bowline"))
        .args(["plan"])
        .arg(world.repo.path())
        .env_remove("KUBECONFIG")
        .env_remove("BOWLINE_KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", world.repo.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(
            "No cluster reachable: compared with an empty cluster (no cluster configured"
        ),
        "{stdout}"
    );
    let _ = (&world.prod_eu, &world.prod_us);
}

#[test]
fn plan_that_cannot_run_exits_1_with_exit_code_and_2_without() {
    let missing = std::env::temp_dir().join("bowline-no-such-repo-for-plan");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bowline"))
            .arg("plan")
            .args(extra)
            .arg(&missing)
            .env_remove("KUBECONFIG")
            .env_remove("BOWLINE_KUBECONFIG")
            .output()
            .expect("runs")
    };
    // `--exit-code` keeps 2 for "changes pending", so an error must not look like one.
    let detailed = run(&["--exit-code"]);
    assert_eq!(detailed.status.code(), Some(1), "{}", text(&detailed));
    assert!(
        String::from_utf8_lossy(&detailed.stderr).contains("bowline-no-such-repo-for-plan"),
        "{}",
        text(&detailed)
    );
    let plain = run(&[]);
    assert_eq!(plain.status.code(), Some(2), "{}", text(&plain));
}

/// `plan --app A --env E` plans that selection only; usage errors (an unknown flag, app or
/// environment) exit 3 under `--exit-code`, where 2 means "changes pending", and 2 without.
#[test]
fn plan_selects_an_app_and_environment_and_keeps_usage_errors_apart() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bowline"))
            .arg("plan")
            .args(args)
            .arg(&example)
            .env_remove("KUBECONFIG")
            .env_remove("BOWLINE_KUBECONFIG")
            .output()
            .expect("runs")
    };
    let selected = run(&[
        "--app",
        "inventory-worker",
        "--env",
        "staging",
        "--format",
        "json",
    ]);
    assert_eq!(selected.status.code(), Some(0), "{}", text(&selected));
    let json: Value = serde_json::from_slice(&selected.stdout).expect("json");
    let rows = json["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{json:#}");
    assert_eq!(
        (rows[0]["app"].as_str(), rows[0]["environment"].as_str()),
        (Some("inventory-worker"), Some("staging"))
    );
    let targets = json["targets"].as_array().expect("targets");
    assert!(!targets.is_empty(), "{json:#}");
    assert!(
        targets
            .iter()
            .all(|t| t["app"] == "inventory-worker" && t["environment"] == "staging"),
        "{json:#}"
    );

    for (args, code) in [
        (&["--exit-code", "--no-such-flag"][..], 3),
        (&["--exit-code", "--app", "no-such-app"][..], 3),
        (&["--exit-code", "--env", "no-such-env"][..], 3),
        (&["--no-such-flag"][..], 2),
        (&["--app", "no-such-app"][..], 2),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
    }
    let unknown = run(&["--app", "no-such-app"]);
    assert!(
        String::from_utf8_lossy(&unknown.stderr)
            .contains("unknown application \"no-such-app\" (known: checkout-api, inventory-worker, storefront-web)"),
        "{}",
        text(&unknown)
    );
}

/// A cluster-scoped custom kind bowline does not know offline: rendering takes it for a
/// namespaced one, so only the cluster's discovery can tell.
fn cluster_issuer_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "clusterissuers.cert-manager.io"},
        "spec": {
            "group": "cert-manager.io",
            "names": {"kind": "ClusterIssuer", "listKind": "ClusterIssuerList",
                "plural": "clusterissuers", "singular": "clusterissuer"},
            "scope": "Cluster",
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    })
}

#[test]
fn objects_outside_the_destinations_are_refused_before_any_request() {
    let world = World::new();
    fs::write(
        world.path("apps/checkout-api/manifests/admin.yaml"),
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: checkout-admin\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n  - kind: ServiceAccount\n    name: default\n    namespace: shop-staging\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: peek\n  namespace: kube-system\n",
    )
    .expect("manifest");
    let out = world.validate();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = text(&out);
    assert!(
        stdout.contains(
            "apps/checkout-api/manifests/admin.yaml:1:1: error: kind: rbac.authorization.k8s.io/v1 ClusterRoleBinding checkout-admin is outside the destinations of environment \"staging\": cluster-scoped kind ClusterRoleBinding.rbac.authorization.k8s.io is not in its clusterResources (none allowed)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("v1 ConfigMap kube-system/peek is outside the destinations of environment \"staging\": namespace \"kube-system\" is not among its namespaces (shop-staging)"),
        "{stdout}"
    );
    world.staging.clear_requests();
    let out = world.sync("checkout-api", "staging", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("sync refused"), "{}", text(&out));
    assert!(world.staging.requests().is_empty(), "no request was sent");

    // The app cannot move itself to another namespace either.
    fs::remove_file(world.path("apps/checkout-api/manifests/admin.yaml")).expect("rm");
    world.edit(
        "apps/checkout-api/app.yaml",
        "    staging:\n",
        "    staging:\n      namespace: kube-system\n",
    );
    let out = world.validate();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("apps/checkout-api/app.yaml:27:7: error: spec.environments.staging.namespace: namespace \"kube-system\" is outside the destinations of environment \"staging\""),
        "{}",
        text(&out)
    );
    world.edit(
        "apps/checkout-api/app.yaml",
        "    staging:\n      namespace: kube-system\n",
        "    staging:\n",
    );

    // A cluster-scoped custom kind: discovery tells, and the object is refused before it is
    // read or dry-run.
    world.staging.create(cluster_issuer_crd());
    fs::write(
        world.path("apps/checkout-api/manifests/issuer.yaml"),
        "apiVersion: cert-manager.io/v1\nkind: ClusterIssuer\nmetadata:\n  name: everyone\nspec:\n  selfSigned: {}\n",
    )
    .expect("manifest");
    assert_success(&world.validate(), "validate");
    world.staging.clear_requests();
    let out = world.sync("checkout-api", "staging", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("cluster-scoped kind ClusterIssuer.cert-manager.io is not in its clusterResources (none allowed)"),
        "{}",
        text(&out)
    );
    let touched: Vec<String> = world
        .staging
        .requests()
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .filter(|r| r.contains("/clusterissuers") || r.starts_with("PATCH"))
        .collect();
    assert!(touched.is_empty(), "{touched:?}");

    // The platform team widens the destinations: now it goes through.
    world.edit(
        "bowline.yaml",
        "      namespace: shop-staging\n",
        "      namespace: shop-staging\n      destinations:\n        clusterResources:\n          - group: cert-manager.io\n            kind: ClusterIssuer\n",
    );
    assert_success(
        &world.sync("checkout-api", "staging", &["--no-wait"]),
        "sync with the kind allowed",
    );
    assert!(
        world
            .staging
            .get("cert-manager.io/v1", "ClusterIssuer", None, "everyone")
            .is_some()
    );
}

/// A kind the cluster does not serve is reported on its object, and the rest of the target is
/// still compared with the live cluster; the sync fails before applying anything. Once the app
/// renders the kind's CustomResourceDefinition, the object plans as a creation without a
/// dry-run.
#[test]
fn an_unserved_kind_is_reported_on_its_object() {
    let world = World::new();
    fs::write(
        world.path("apps/checkout-api/manifests/widget.yaml"),
        "apiVersion: widgets.acme.example/v1\nkind: Widget\nmetadata:\n  name: checkout\nspec:\n  size: 3\n",
    )
    .expect("widget");
    let (_, plan) = world.plan_json();
    let staging = target(&plan, "checkout-api", "staging", "staging-eu-west-1");
    assert_eq!(staging["live"]["kind"], "cluster", "{staging:#}");
    let objects = staging["objects"].as_array().expect("objects");
    let widget = objects
        .iter()
        .find(|o| o["key"]["kind"] == "Widget")
        .unwrap_or_else(|| panic!("{staging:#}"));
    assert_eq!(widget["action"], "refuse", "{widget:#}");
    let unified = widget["unified"].as_str().unwrap_or_default();
    assert!(
        unified.contains("does not serve kind Widget in widgets.acme.example/v1"),
        "{unified}"
    );
    assert!(
        objects
            .iter()
            .any(|o| o["key"]["kind"] == "Deployment" && o["action"] == "create"),
        "{staging:#}"
    );
    let out = world.sync("checkout-api", "staging", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("nothing was applied"), "{}", text(&out));
    assert!(
        world
            .staging
            .get(
                "apps/v1",
                "Deployment",
                Some("shop-staging"),
                "checkout-api"
            )
            .is_none()
    );

    fs::write(
        world.path("apps/checkout-api/manifests/widget-crd.yaml"),
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.widgets.acme.example\nspec:\n  group: widgets.acme.example\n  names: {kind: Widget, listKind: WidgetList, plural: widgets, singular: widget}\n  scope: Namespaced\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      schema:\n        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n",
    )
    .expect("crd");
    world.edit(
        "bowline.yaml",
        "      namespace: shop-staging\n",
        "      namespace: shop-staging\n      destinations:\n        clusterResources:\n          - group: apiextensions.k8s.io\n            kind: CustomResourceDefinition\n",
    );
    let (_, plan) = world.plan_json();
    let staging = target(&plan, "checkout-api", "staging", "staging-eu-west-1");
    let widget = staging["objects"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["key"]["kind"] == "Widget"))
        .unwrap_or_else(|| panic!("{staging:#}"));
    assert_eq!(widget["action"], "create", "{widget:#}");
    assert!(
        widget["unified"]
            .as_str()
            .is_some_and(|u| u.starts_with("! not dry-run: the cluster serves widgets.acme.example/v1 Widget once CustomResourceDefinition widgets.widgets.acme.example")),
        "{widget:#}"
    );
}

/// An object a bowline app of another repository owns: the plan names that app, and the sync
/// refuses it.
#[test]
fn an_object_another_bowline_app_owns_is_refused_naming_it() {
    let world = World::new();
    world.staging.create(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "checkout-api-config", "namespace": "shop-staging",
            "labels": {"app.kubernetes.io/managed-by": "bowline", "bowline.dev/app": "payments-api"},
            "annotations": {"bowline.dev/app": "payments-api", "bowline.dev/environment": "staging"}},
        "data": {"k": "v"}}));
    let plan = text(&world.bowline(&["plan"]));
    assert!(
        plan.contains("! v1 ConfigMap shop-staging/checkout-api-config: exists, owned by bowline app payments-api, not checkout-api: would be refused"),
        "{plan}"
    );
    let out = world.sync("checkout-api", "staging", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let live = world
        .staging
        .get(
            "v1",
            "ConfigMap",
            Some("shop-staging"),
            "checkout-api-config",
        )
        .expect("still there");
    assert_eq!(
        live["metadata"]["labels"]["bowline.dev/app"],
        "payments-api"
    );
}

#[test]
fn an_existing_object_the_app_does_not_manage_is_never_shown_or_taken_over() {
    let world = World::new();
    const SECRET_LOOKING: &str = "hand-made-value-owned-by-another-team";
    world
        .staging
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "checkout-api-config", "namespace": "shop-staging"},
        "data": {"owner": SECRET_LOOKING}}));
    let out = world.bowline(&["plan"]);
    let stdout = text(&out);
    assert!(
        stdout.contains("! v1 ConfigMap shop-staging/checkout-api-config: exists, not managed by checkout-api: would be refused"),
        "{stdout}"
    );
    assert!(!stdout.contains(SECRET_LOOKING), "{stdout}");
    let (_, plan) = world.plan_json();
    assert!(!plan.to_string().contains(SECRET_LOOKING));

    let out = world.sync("checkout-api", "staging", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("v1 ConfigMap shop-staging/checkout-api-config already exists and is not managed by checkout-api: refusing to take it over"),
        "{}",
        text(&out)
    );
    let live = world
        .staging
        .get(
            "v1",
            "ConfigMap",
            Some("shop-staging"),
            "checkout-api-config",
        )
        .expect("still there");
    assert_eq!(live["data"]["owner"], SECRET_LOOKING);
    assert!(live["metadata"]["labels"].get("bowline.dev/app").is_none());
}

/// The objects of one target in a plan JSON whose kind is Namespace.
fn namespace_entries(target: &Value) -> Vec<&Value> {
    target["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["key"]["kind"] == "Namespace")
        .collect()
}

#[test]
fn a_fresh_cluster_gets_the_namespace_first_then_everything() {
    let world = World::without_namespaces();
    let (code, plan) = world.plan_json();
    assert_eq!(code, Some(2), "{plan:#}");
    assert!(
        plan["comparedWith"]
            .as_str()
            .is_some_and(|s| s.starts_with("Compared with the live clusters")),
        "{}",
        plan["comparedWith"]
    );
    // The 45 objects, plus the namespace for each of the 3 apps on each of the 3 clusters.
    assert_eq!(plan["totals"]["create"], 45 + 9, "{plan:#}");
    assert_eq!(plan["totals"]["update"], 0, "{plan:#}");
    let staging = target(&plan, "checkout-api", "staging", "staging-eu-west-1");
    let first = &staging["objects"][0];
    assert_eq!(first["action"], "create", "{staging:#}");
    assert_eq!(
        first["key"],
        json!({"apiVersion": "v1", "kind": "Namespace", "name": "shop-staging"})
    );
    assert!(
        changed_objects(staging)
            .iter()
            .all(|o| o["action"] == "create"),
        "{staging:#}"
    );
    // No dry-run was sent into the missing namespace.
    assert!(
        world
            .staging
            .requests()
            .iter()
            .all(|r| !(r.dry_run && r.path.contains("/namespaces/shop-staging/"))),
        "dry-run into the missing namespace"
    );
    let text_plan = world.bowline(&["plan"]);
    let stdout = String::from_utf8_lossy(&text_plan.stdout);
    assert!(
        stdout.contains("+ v1 Namespace shop-staging (create)"),
        "{stdout}"
    );
    assert!(!stdout.contains("No cluster reachable"), "{stdout}");

    let out = world.sync("checkout-api", "staging", &[]);
    assert_success(&out, "sync into a fresh cluster");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let namespace_line = stdout
        .lines()
        .position(|l| l.contains("v1 Namespace shop-staging created"))
        .unwrap_or_else(|| panic!("no namespace line: {stdout}"));
    let deployment_line = stdout
        .lines()
        .position(|l| l.contains("Deployment shop-staging/checkout-api"))
        .unwrap_or_else(|| panic!("no deployment line: {stdout}"));
    assert!(namespace_line < deployment_line, "{stdout}");
    let namespace = world
        .staging
        .get("v1", "Namespace", None, "shop-staging")
        .expect("namespace created");
    assert_eq!(
        namespace["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "bowline"
    );
    assert_eq!(
        namespace["metadata"]["labels"]["bowline.dev/app"],
        "checkout-api"
    );
    assert_eq!(
        namespace["metadata"]["annotations"]["bowline.dev/environment"],
        "staging"
    );
    assert!(
        namespace["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["manager"] == "bowline" && m["operation"] == "Apply"),
        "{namespace:#}"
    );
    assert!(
        world
            .staging
            .get(
                "apps/v1",
                "Deployment",
                Some("shop-staging"),
                "checkout-api"
            )
            .is_some()
    );

    // Everything else syncs into the namespaces, and then nothing is left to change: the
    // namespace stays desired by the app that created it, and the other apps simply use it.
    world.sync_all();
    let (code, plan) = world.plan_json();
    assert_eq!(code, Some(0), "in sync after sync: {plan:#}");
    assert_eq!(plan["totals"]["unchanged"], 45 + 3, "{plan:#}");
    let staging = target(&plan, "checkout-api", "staging", "staging-eu-west-1");
    assert_eq!(namespace_entries(staging).len(), 1, "{staging:#}");
    let other = target(&plan, "inventory-worker", "staging", "staging-eu-west-1");
    assert!(namespace_entries(other).is_empty(), "{other:#}");
}

#[test]
fn without_create_namespace_a_missing_namespace_is_a_clear_error() {
    let world = World::without_namespaces();
    world.edit(
        "bowline.yaml",
        "      selfHeal: true\n",
        "      selfHeal: true\n      createNamespace: false\n",
    );
    assert_success(&world.validate(), "validate");
    let (code, plan) = world.plan_json();
    assert_eq!(code, Some(2), "{plan:#}");
    assert!(
        plan["comparedWith"]
            .as_str()
            .is_some_and(|s| s.starts_with("Compared with the live clusters")),
        "{}",
        plan["comparedWith"]
    );
    let staging = target(&plan, "checkout-api", "staging", "staging-eu-west-1");
    let entries = namespace_entries(staging);
    assert_eq!(entries.len(), 1, "{staging:#}");
    assert_eq!(entries[0]["action"], "refuse");
    assert!(
        entries[0]["unified"]
            .as_str()
            .is_some_and(|u| u.contains("syncPolicy.createNamespace is false")),
        "{staging:#}"
    );

    let out = world.sync("checkout-api", "staging", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "namespace \"shop-staging\" does not exist in cluster staging-eu-west-1 and syncPolicy.createNamespace is false"
        ),
        "{stdout}"
    );
    assert!(
        world
            .staging
            .get("v1", "Namespace", None, "shop-staging")
            .is_none()
    );
    assert!(
        world
            .staging
            .requests()
            .iter()
            .all(|r| r.dry_run || r.method == "GET"),
        "nothing was written"
    );

    // Once the platform team creates it, the sync uses it as it is.
    world.staging.create(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-staging"}}),
    );
    assert_success(&world.sync("checkout-api", "staging", &[]), "sync");
    let namespace = world
        .staging
        .get("v1", "Namespace", None, "shop-staging")
        .expect("namespace");
    assert!(
        namespace["metadata"]["labels"]
            .get("app.kubernetes.io/managed-by")
            .is_none(),
        "{namespace:#}"
    );
}

#[test]
fn a_namespace_another_app_uses_is_never_pruned() {
    let world = World::without_namespaces();
    world.edit(
        "bowline.yaml",
        "      namespace: shop-staging\n",
        "      namespace: shop-staging\n      destinations:\n        namespaces: [shop-staging, shop-old]\n",
    );
    for app in ["checkout-api", "inventory-worker"] {
        world.edit(
            &format!("apps/{app}/app.yaml"),
            "    staging:\n",
            "    staging:\n      namespace: shop-old\n",
        );
    }
    assert_success(&world.validate(), "validate");
    // checkout-api creates shop-old; inventory-worker then finds it and uses it.
    assert_success(
        &world.sync("checkout-api", "staging", &[]),
        "sync checkout-api",
    );
    assert_success(
        &world.sync("inventory-worker", "staging", &[]),
        "sync inventory-worker",
    );
    let namespace = world
        .staging
        .get("v1", "Namespace", None, "shop-old")
        .expect("namespace created");
    assert_eq!(
        namespace["metadata"]["labels"]["bowline.dev/app"],
        "checkout-api"
    );

    // checkout-api moves to the environment's namespace and prunes what it left behind: its
    // objects in shop-old go, the namespace stays, for inventory-worker lives in it.
    world.edit(
        "apps/checkout-api/app.yaml",
        "      namespace: shop-old\n",
        "",
    );
    let out = world.sync("checkout-api", "staging", &["--prune"]);
    assert_success(&out, "sync --prune");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("apps/v1 Deployment shop-old/checkout-api pruned"),
        "{stdout}"
    );
    assert!(!stdout.contains("Namespace shop-old pruned"), "{stdout}");
    assert!(
        world
            .staging
            .get("v1", "Namespace", None, "shop-old")
            .is_some(),
        "the namespace another app uses was pruned"
    );
    assert!(
        world
            .staging
            .get(
                "apps/v1",
                "Deployment",
                Some("shop-old"),
                "inventory-worker"
            )
            .is_some()
    );
    assert!(
        world
            .staging
            .get("apps/v1", "Deployment", Some("shop-old"), "checkout-api")
            .is_none()
    );
    assert!(
        world
            .staging
            .get(
                "apps/v1",
                "Deployment",
                Some("shop-staging"),
                "checkout-api"
            )
            .is_some()
    );
}

/// Commits the working copy of the world's repository; returns the commit id.
fn commit(world: &World, message: &str) -> String {
    let repo = git2::Repository::open(world.repo.path())
        .or_else(|_| git2::Repository::init(world.repo.path()))
        .expect("repository");
    let mut index = repo.index().expect("index");
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .expect("add");
    index.write().expect("index");
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("tree");
    let sig = git2::Signature::now("Test", "test@example.com").expect("signature");
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .expect("commit")
        .to_string()
}

#[test]
fn a_blue_green_plan_shows_the_new_revision_beside_the_active_one() {
    let world = World::new();
    let first = commit(&world, "first");
    let out = world.sync("storefront-web", "staging", &[]);
    assert_success(&out, "first sync");
    let active = first[..12].to_string();
    let service = world
        .staging
        .get("v1", "Service", Some("shop-staging"), "storefront-web")
        .expect("active Service");
    assert_eq!(service["spec"]["selector"]["bowline.dev/revision"], active);
    let (code, plan) = world.plan_json();
    let staging = target(&plan, "storefront-web", "staging", "staging-eu-west-1");
    assert!(changed_objects(staging).is_empty(), "{code:?} {staging:#}");

    world.edit(
        "apps/storefront-web/app.yaml",
        "tag: \"5.3.0\"",
        "tag: \"5.4.0\"",
    );
    let second = commit(&world, "bump");
    let next = second[..12].to_string();
    let (_, plan) = world.plan_json();
    let staging = target(&plan, "storefront-web", "staging", "staging-eu-west-1");
    let changed: Vec<(String, String, String)> = changed_objects(staging)
        .iter()
        .map(|o| {
            (
                o["action"].as_str().unwrap_or_default().to_string(),
                o["key"]["kind"].as_str().unwrap_or_default().to_string(),
                o["key"]["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        changed,
        vec![
            (
                "update".into(),
                "Service".into(),
                "storefront-web-preview".into()
            ),
            (
                "create".into(),
                "Deployment".into(),
                format!("storefront-web-{next}")
            ),
        ],
        "{staging:#}"
    );
    let preview = changed_objects(staging)
        .into_iter()
        .find(|o| o["key"]["name"] == "storefront-web-preview")
        .expect("preview");
    assert_eq!(
        preview["changed"],
        json!(["/spec/selector/bowline.dev~1revision"])
    );
}

//! kubectl fidelity: the real `kubectl` (picked by the server's `/version`) against the test
//! server. Skipped, loudly, when kubectl is not on PATH.

use std::path::{Path, PathBuf};
use std::process::Command;

use kube_api_test_server::TestServer;

struct Kubectl {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    /// `None` when kubectl is not installed.
    fn new(server: &TestServer) -> Option<Kubectl> {
        let found = Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("SKIPPED: kubectl not found");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, server.kubeconfig("test")).expect("write kubeconfig");
        Some(Kubectl { dir, kubeconfig })
    }

    fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("write manifest");
        path
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG")
            .output()
            .expect("run kubectl");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.code, 0,
            "kubectl {args:?} failed: {}{}",
            out.stdout, out.stderr
        );
        out.stdout
    }
}

fn wait_rolled_out(server: &TestServer, name: &str) {
    for _ in 0..100 {
        let done = server
            .get("apps/v1", "Deployment", Some("default"), name)
            .is_some_and(|d| {
                d["status"]["observedGeneration"] == d["metadata"]["generation"]
                    && d["status"]["availableReplicas"] == d["spec"]["replicas"]
            });
        if done {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("deployment {name} did not roll out");
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: x
  namespace: default
  labels:
    app: x
spec:
  replicas: 2
  selector:
    matchLabels:
      app: x
  template:
    metadata:
      labels:
        app: x
    spec:
      containers:
      - name: app
        image: nginx:1.27
        ports:
        - containerPort: 80
        resources:
          requests:
            cpu: \"0.5\"
            memory: 1024Mi
";

#[test]
fn kubectl_server_side_apply_get_diff_delete() {
    let server = TestServer::start();
    let Some(k) = Kubectl::new(&server) else {
        return;
    };
    let manifest = k.file("deployment.yaml", DEPLOYMENT);
    let changed = k.file(
        "changed.yaml",
        &DEPLOYMENT.replace("nginx:1.27", "nginx:1.28"),
    );
    let manifest = path_str(&manifest);

    let out = k.ok(&["apply", "--server-side", "-f", manifest]);
    assert_eq!(out.trim(), "deployment.apps/x serverside-applied");
    let apply = server
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("apply request");
    assert_eq!(
        apply.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert!(
        apply.query.contains("fieldManager=kubectl"),
        "{}",
        apply.query
    );

    let yaml = k.ok(&["get", "deployment", "x", "-o", "yaml"]);
    for expected in [
        "progressDeadlineSeconds: 600",
        "revisionHistoryLimit: 10",
        "imagePullPolicy: IfNotPresent",
        "terminationMessagePath: /dev/termination-log",
        "protocol: TCP",
        "cpu: 500m",
        "memory: 1Gi",
        "maxSurge: 25%",
        "generation: 1",
    ] {
        assert!(yaml.contains(expected), "missing {expected:?} in\n{yaml}");
    }
    assert!(
        !yaml.contains("managedFields"),
        "kubectl hides managedFields:\n{yaml}"
    );
    let with_managed = k.ok(&[
        "get",
        "deployment",
        "x",
        "-o",
        "yaml",
        "--show-managed-fields",
    ]);
    assert!(with_managed.contains("manager: kubectl") && with_managed.contains("operation: Apply"));

    let unchanged = k.run(&["diff", "--server-side", "-f", manifest]);
    assert_eq!(
        unchanged.code, 0,
        "{}{}",
        unchanged.stdout, unchanged.stderr
    );
    assert!(unchanged.stdout.is_empty(), "{}", unchanged.stdout);
    let diff = k.run(&["diff", "--server-side", "-f", path_str(&changed)]);
    assert_eq!(diff.code, 1, "{}{}", diff.stdout, diff.stderr);
    assert!(
        diff.stdout.contains("-      - image: nginx:1.27"),
        "{}",
        diff.stdout
    );
    assert!(
        diff.stdout.contains("+      - image: nginx:1.28"),
        "{}",
        diff.stdout
    );
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.dry_run && r.method == "PATCH")
    );
    let live = server
        .get("apps/v1", "Deployment", Some("default"), "x")
        .expect("live");
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );

    // Table output once the simulated controller has rolled out.
    wait_rolled_out(&server, "x");
    let table = k.ok(&["get", "deployment", "x"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{table}"
    );
    assert!(table.contains("2/2"), "{table}");

    let out = k.ok(&["delete", "-f", manifest]);
    assert_eq!(out.trim(), "deployment.apps \"x\" deleted");
    let missing = k.run(&["get", "deployment", "x"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing
            .stderr
            .contains("Error from server (NotFound): deployments.apps \"x\" not found"),
        "{}",
        missing.stderr
    );
}

#[test]
fn kubectl_client_side_apply_and_custom_resources() {
    let server = TestServer::start();
    let Some(k) = Kubectl::new(&server) else {
        return;
    };
    let manifest = k.file("deployment.yaml", DEPLOYMENT);
    let changed = k.file(
        "changed.yaml",
        &DEPLOYMENT.replace("nginx:1.27", "nginx:1.28"),
    );
    let out = k.ok(&["apply", "-f", path_str(&manifest)]);
    assert_eq!(out.trim(), "deployment.apps/x created");
    // Client-side diff: a strategic merge patch with dryRun.
    // Let the simulated controller settle first: kubectl diff patches with the resource
    // version it read and backs off for seconds when the object changes in between.
    wait_rolled_out(&server, "x");
    let unchanged = k.run(&["diff", "-f", path_str(&manifest)]);
    assert_eq!(
        unchanged.code, 0,
        "{}{}",
        unchanged.stdout, unchanged.stderr
    );
    let diff = k.run(&["diff", "-f", path_str(&changed)]);
    assert_eq!(diff.code, 1, "{}{}", diff.stdout, diff.stderr);
    assert!(
        diff.stdout.contains("+      - image: nginx:1.28"),
        "{}",
        diff.stdout
    );
    let out = k.ok(&["apply", "-f", path_str(&changed)]);
    assert_eq!(out.trim(), "deployment.apps/x configured");
    let live = server
        .get("apps/v1", "Deployment", Some("default"), "x")
        .expect("live");
    let container = &live["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.28");
    assert_eq!(container["ports"].as_array().map(Vec::len), Some(1));
    let managers: Vec<&str> = live["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(
        managers.contains(&"kubectl-client-side-apply"),
        "{managers:?}"
    );
    let out = k.ok(&["scale", "deployment", "x", "--replicas=3"]);
    assert_eq!(out.trim(), "deployment.apps/x scaled");
    let live = server
        .get("apps/v1", "Deployment", Some("default"), "x")
        .expect("live");
    assert_eq!(live["spec"]["replicas"], 3);
    let scale_entry = live["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["subresource"] == "scale")
        .expect("scale manager")
        .clone();
    assert_eq!(scale_entry["manager"], "kubectl");

    let crd = k.file(
        "crd.yaml",
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, plural: servicemonitors, singular: servicemonitor, listKind: ServiceMonitorList, shortNames: [smon]}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: v1
kind: Namespace
metadata:
  name: mon
",
    );
    let out = k.ok(&["apply", "--server-side", "-f", path_str(&crd)]);
    assert!(out.contains("customresourcedefinition.apiextensions.k8s.io/servicemonitors.monitoring.coreos.com serverside-applied"), "{out}");
    let monitor = k.file(
        "monitor.yaml",
        "apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: web, namespace: mon}
spec:
  endpoints: [{port: http}]
",
    );
    let out = k.ok(&["apply", "--server-side", "-f", path_str(&monitor)]);
    assert_eq!(
        out.trim(),
        "servicemonitor.monitoring.coreos.com/web serverside-applied"
    );
    let listed = k.ok(&["get", "smon", "-A", "-o", "name"]);
    assert_eq!(listed.trim(), "servicemonitor.monitoring.coreos.com/web");
    let missing = k.run(&["get", "configmap", "nope", "-n", "mon"]);
    assert!(
        missing.stderr.contains("configmaps \"nope\" not found"),
        "{}",
        missing.stderr
    );

    // Like the real server: a write or server-side dry-run into a missing namespace is refused.
    let orphan = k.file(
        "orphan.yaml",
        "apiVersion: v1
kind: ConfigMap
metadata: {name: orphan, namespace: nowhere}
data: {a: b}
",
    );
    for args in [
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            path_str(&orphan),
        ][..],
        &["apply", "--server-side", "-f", path_str(&orphan)][..],
        &["create", "--dry-run=server", "-f", path_str(&orphan)][..],
    ] {
        let refused = k.run(args);
        assert_ne!(refused.code, 0, "kubectl {args:?}: {}", refused.stdout);
        assert!(
            refused.stderr.starts_with("Error from server (NotFound): ")
                && refused
                    .stderr
                    .trim_end()
                    .ends_with("namespaces \"nowhere\" not found"),
            "kubectl {args:?}: {}",
            refused.stderr
        );
    }
}

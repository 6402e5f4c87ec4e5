//! The example-repo canary pipeline end to end: staging deploy, a precondition calling the
//! staging health endpoint, a manual judgment approved through the CLI, a production canary
//! (baseline + canary Deployments) in two clusters, canary analysis against a real Prometheus,
//! then promote (or roll back), and the Grafana annotation webhook.

mod common;
#[path = "support/prometheus.rs"]
mod prometheus;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bowline::store::{ExecutionFilter, ExecutionStatus, SqliteStore, StageStatus, Store};
use kube_api_test_server::{TestServer, kubeconfig_for};
use prometheus::{App, Behaviour, Prometheus, http_history};
use serde_json::{Value, json};
use tempfile::TempDir;

const NORMAL: Behaviour = Behaviour {
    median_latency: 0.08,
    error_share: 0.01,
};
const SLOW: Behaviour = Behaviour {
    median_latency: 0.16,
    error_share: 0.01,
};

/// A webhook receiver answering 200 and keeping each request's head and body.
struct Receiver {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

fn receiver() -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/api/annotations",
        listener.local_addr().expect("addr")
    );
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            head.push_str(&String::from_utf8_lossy(&body));
            seen.lock().expect("lock").push(head);
            let mut stream = reader.into_inner();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
        }
    });
    Receiver { url, requests }
}

struct World {
    repo: TempDir,
    kubeconfig: PathBuf,
    state: PathBuf,
    secrets: PathBuf,
    prod_eu: TestServer,
    prod_us: TestServer,
    _staging: TestServer,
    prometheus: Prometheus,
    grafana: Receiver,
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(path).expect("read");
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    fs::write(path, text.replacen(from, to, 1)).expect("write");
}

impl World {
    fn new(canary: Option<Behaviour>) -> World {
        let repo = tempfile::tempdir().expect("temp dir");
        let root = repo.path();
        common::copy_tree(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo"),
            root,
            &[],
        );
        let crd: Value = serde_json::from_str(
            &fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures/crds/servicemonitor.json"),
            )
            .expect("CRD"),
        )
        .expect("CRD JSON");
        let server = |ns: &str| {
            let s = TestServer::start();
            s.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
            s.create(crd.clone());
            s
        };
        let staging = server("shop-staging");
        let prod_eu = server("shop");
        let prod_us = server("shop");
        let kubeconfig = root.join("kubeconfig.yaml");
        fs::write(
            &kubeconfig,
            kubeconfig_for(&[
                ("gke_acme-shop_europe-west1_staging", &staging),
                ("gke_acme-shop_europe-west1_prod", &prod_eu),
                ("gke_acme-shop_us-east1_prod", &prod_us),
            ]),
        )
        .expect("kubeconfig");

        // Test-sized settings: no office-hours window, a short analysis on a fine step, local
        // endpoints for the smoke test and the Grafana annotation.
        let grafana = receiver();
        let pipeline = root.join("pipelines/canary-release.yaml");
        let text = fs::read_to_string(&pipeline).expect("pipeline");
        let start = text.find("  executionWindows:").expect("windows");
        let end = text.find("  stages:").expect("stages");
        fs::write(&pipeline, format!("{}{}", &text[..start], &text[end..])).expect("write");
        edit(
            &pipeline,
            "https://grafana.acme.example/api/annotations",
            &grafana.url,
        );
        let config = root.join("canary/checkout-latency-errors.yaml");
        edit(&config, "step: 1m", "step: 2s");
        edit(&config, "interval: 10m", "interval: 10s");
        edit(&config, "delay: 2m", "delay: 0s");
        let app = root.join("apps/checkout-api/app.yaml");
        edit(&app, "analysisLifetime: 30m", "analysisLifetime: 20s");
        edit(
            &app,
            "smokeTestUrl: https://checkout.staging.acme.example/healthz",
            &format!("smokeTestUrl: {}/healthz", staging.url()),
        );
        let secrets = root.join("secrets");
        fs::create_dir(&secrets).expect("secrets dir");
        fs::write(secrets.join("grafana_token"), "glsa_test-token\n").expect("secret");

        // Metrics from ten minutes ago to ten minutes ahead: the analysis window is "now".
        let now = chrono::Utc::now().timestamp();
        // A healthy canary behaves like the baseline (the same simulated traffic); a bad one
        // has its own behaviour.
        let baseline = App {
            app: "checkout-api-baseline",
            namespace: "shop",
            stretches: vec![(now - 600, NORMAL)],
        };
        let history: String = match canary {
            None => http_history(&[baseline], now - 600, 1200, 11)
                .lines()
                .flat_map(|line| {
                    let twin = line
                        .contains("checkout-api-baseline")
                        .then(|| line.replace("checkout-api-baseline", "checkout-api-canary"));
                    std::iter::once(line.to_string()).chain(twin)
                })
                .map(|line| line + "\n")
                .collect(),
            Some(behaviour) => http_history(
                &[
                    baseline,
                    App {
                        app: "checkout-api-canary",
                        namespace: "shop",
                        stretches: vec![(now - 600, behaviour)],
                    },
                ],
                now - 600,
                1200,
                11,
            ),
        };
        let prometheus = Prometheus::start(&history);
        World {
            state: root.join("state.db"),
            repo,
            kubeconfig,
            secrets,
            prod_eu,
            prod_us,
            _staging: staging,
            prometheus,
            grafana,
        }
    }

    fn bowline(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bowline"));
        c.args(args)
            .arg("--state")
            .arg(&self.state)
            .env("BOWLINE_POLL_MS", "100")
            .env_remove("KUBECONFIG")
            .env_remove("RUST_LOG");
        c
    }

    fn with_repo(&self, args: &[&str]) -> Command {
        let mut c = self.bowline(args);
        c.arg(self.repo.path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig);
        c
    }

    fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.state).expect("store")
    }

    fn image(&self, server: &TestServer, name: &str) -> Option<String> {
        server
            .get("apps/v1", "Deployment", Some("shop"), name)
            .and_then(|d| {
                d["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .map(str::to_string)
            })
    }

    /// Deploys 2.14.1 to production, moves the app to 2.15.0, runs the whole pipeline and
    /// approves production when asked.
    fn release(&self) -> (String, Output) {
        let sync = Command::new(env!("CARGO_BIN_EXE_bowline"))
            .args([
                "sync",
                "--app",
                "checkout-api",
                "--env",
                "production",
                "--timeout",
                "30s",
            ])
            .arg(self.repo.path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env_remove("KUBECONFIG")
            .output()
            .expect("sync");
        assert!(sync.status.success(), "{}", text(&sync));
        edit(
            &self.repo.path().join("apps/checkout-api/app.yaml"),
            "tag: \"2.14.1\"",
            "tag: \"2.15.0\"",
        );
        let child = self
            .with_repo(&["run", "--app", "checkout-api", "--revision", "rev2"])
            .arg("--prometheus")
            .arg(&self.prometheus.url)
            .arg("--secrets-dir")
            .arg(&self.secrets)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run");
        let started = Instant::now();
        let id = loop {
            let found = self.state.exists().then(|| self.store()).and_then(|s| {
                let e = s
                    .executions(&ExecutionFilter::default())
                    .ok()?
                    .into_iter()
                    .next()?;
                let waiting =
                    s.stages(&e.id).ok()?.into_iter().any(|st| {
                        st.name == "approve-production" && st.status == StageStatus::Waiting
                    });
                waiting.then_some(e.id)
            });
            if let Some(id) = found {
                break id;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "production approval never asked"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let approve = self
            .bowline(&["executions", "approve", &id, "--user", "maria-payments"])
            .output()
            .expect("approve");
        assert!(approve.status.success(), "{}", text(&approve));
        (id, child.wait_with_output().expect("run finishes"))
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn statuses(world: &World, id: &str) -> Vec<(String, StageStatus)> {
    world
        .store()
        .stages(id)
        .expect("stages")
        .into_iter()
        .map(|s| (s.name, s.status))
        .collect()
}

impl World {
    /// `bowline <args> <repo> --kubeconfig …`, for commands without a state store.
    fn on_repo(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bowline"));
        c.args(args)
            .arg(self.repo.path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env_remove("KUBECONFIG")
            .env_remove("RUST_LOG");
        c
    }

    /// What a live `plan` of checkout-api in production would change, per cluster:
    /// `action Kind name` of every object not unchanged.
    fn production_changes(&self) -> Vec<String> {
        let out = self
            .on_repo(&["plan", "--format", "json"])
            .output()
            .expect("plan");
        let plan: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("plan JSON: {e}\n{}", text(&out)));
        plan["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["app"] == "checkout-api" && t["environment"] == "production")
            .flat_map(|t| {
                assert_eq!(t["live"]["kind"], "cluster", "{t:#}");
                t["objects"].as_array().cloned().unwrap_or_default()
            })
            .filter(|o| o["action"] != "unchanged")
            .map(|o| format!("{} {} {}", o["action"], o["key"]["kind"], o["key"]["name"]))
            .collect()
    }
}

#[test]
fn a_healthy_canary_is_promoted_in_every_production_cluster() {
    let world = World::new(None);
    let (id, out) = world.release();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        world.prometheus.log()
    );
    // Promoted, production is exactly the desired state: nothing to change, no track left.
    assert_eq!(world.production_changes(), Vec::<String>::new());
    for server in [&world.prod_eu, &world.prod_us] {
        assert_eq!(
            world.image(server, "checkout-api").as_deref(),
            Some("ghcr.io/acme/checkout-api:2.15.0")
        );
        assert!(
            world.image(server, "checkout-api-canary").is_none(),
            "canary removed after promotion"
        );
        assert!(
            world.image(server, "checkout-api-baseline").is_none(),
            "baseline removed after promotion"
        );
    }
    let stages = statuses(&world, &id);
    assert!(
        stages.contains(&("analyse-production".into(), StageStatus::Succeeded)),
        "{stages:?}"
    );
    assert!(
        stages.contains(&("rollback-production".into(), StageStatus::Skipped)),
        "{stages:?}"
    );
    let analysis = world
        .store()
        .stages(&id)
        .expect("stages")
        .into_iter()
        .find(|s| s.name == "analyse-production")
        .expect("analysis stage");
    assert_eq!(
        analysis.outputs["status"], "Pass",
        "{:#}",
        analysis.outputs["reason"]
    );
    let requests = world.grafana.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].starts_with("POST /api/annotations"),
        "{}",
        requests[0]
    );
    assert!(
        requests[0].contains("Bearer glsa_test-token"),
        "{}",
        requests[0]
    );
    assert!(
        requests[0].contains("checkout-api promoted in production"),
        "{}",
        requests[0]
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("glsa_test-token"),
        "secrets stay out of the output"
    );
}

#[test]
fn a_latency_regression_fails_the_canary_and_leaves_production_untouched() {
    let world = World::new(Some(SLOW));
    // A verdict is terminal: retries do not ask the same metrics again.
    edit(
        &world.repo.path().join("pipelines/canary-release.yaml"),
        "      lifetime: \"{{ parameters.analysisLifetime }}\"\n",
        "      lifetime: \"{{ parameters.analysisLifetime }}\"\n      retries: 3\n",
    );
    let (id, out) = world.release();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for server in [&world.prod_eu, &world.prod_us] {
        assert_eq!(
            world.image(server, "checkout-api").as_deref(),
            Some("ghcr.io/acme/checkout-api:2.14.1")
        );
        assert!(
            world.image(server, "checkout-api-canary").is_none(),
            "canary removed by the rollback"
        );
        assert!(
            world.image(server, "checkout-api-baseline").is_none(),
            "baseline removed by the rollback"
        );
    }
    let stages = statuses(&world, &id);
    for (name, status) in [
        ("analyse-production", StageStatus::Failed),
        ("promote-production", StageStatus::Skipped),
        ("rollback-production", StageStatus::Succeeded),
        ("annotate-grafana", StageStatus::Skipped),
    ] {
        assert!(
            stages.contains(&(name.into(), status)),
            "{name}: {stages:?}"
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("canary fail"), "{stdout}");
    assert!(world.grafana.requests.lock().expect("lock").is_empty());
    let analysis = world
        .store()
        .stages(&id)
        .expect("stages")
        .into_iter()
        .find(|s| s.name == "analyse-production")
        .expect("analysis stage");
    assert_eq!(analysis.attempts, 1, "a Fail verdict is not retried");
    assert_eq!(analysis.inputs["retries"], 3, "{:#}", analysis.inputs);
    let events = world.store().events(&id).expect("events");
    assert!(
        events
            .iter()
            .any(|e| e.stage.as_deref() == Some("analyse-production")
                && e.message
                    .starts_with("not retried: the failure is terminal")
                && e.message.contains("canary fail")),
        "{events:?}"
    );
}

/// While the analysis runs, the canary tracks are the strategy's: a plan (prune on) neither
/// deletes nor changes them. A canceled execution removes them as it ends, and production is
/// then exactly what it was.
#[test]
fn a_running_canary_is_left_alone_and_removed_when_its_execution_ends() {
    let world = World::new(None);
    edit(
        &world.repo.path().join("apps/checkout-api/app.yaml"),
        "analysisLifetime: 20s",
        "analysisLifetime: 10m",
    );
    let child = {
        let sync = world
            .on_repo(&[
                "sync",
                "--app",
                "checkout-api",
                "--env",
                "production",
                "--timeout",
                "30s",
            ])
            .output()
            .expect("sync");
        assert!(sync.status.success(), "{}", text(&sync));
        assert_eq!(world.production_changes(), Vec::<String>::new());
        edit(
            &world.repo.path().join("apps/checkout-api/app.yaml"),
            "tag: \"2.14.1\"",
            "tag: \"2.15.0\"",
        );
        world
            .with_repo(&["run", "--app", "checkout-api", "--revision", "rev2"])
            .arg("--prometheus")
            .arg(&world.prometheus.url)
            .arg("--secrets-dir")
            .arg(&world.secrets)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run")
    };
    let stage_is = |name: &str, status: StageStatus| -> Option<String> {
        let store = world.state.exists().then(|| world.store())?;
        let e = store
            .executions(&ExecutionFilter::default())
            .ok()?
            .into_iter()
            .next()?;
        let found = store
            .stages(&e.id)
            .ok()?
            .into_iter()
            .any(|st| st.name == name && st.status == status);
        found.then_some(e.id)
    };
    let wait_for = |name: &str, status: StageStatus| -> String {
        let started = Instant::now();
        loop {
            if let Some(id) = stage_is(name, status) {
                return id;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{name} never {status:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let id = wait_for("approve-production", StageStatus::Waiting);
    let approve = world
        .bowline(&["executions", "approve", &id, "--user", "maria-payments"])
        .output()
        .expect("approve");
    assert!(approve.status.success(), "{}", text(&approve));
    wait_for("analyse-production", StageStatus::Running);
    for server in [&world.prod_eu, &world.prod_us] {
        assert_eq!(
            world.image(server, "checkout-api-canary").as_deref(),
            Some("ghcr.io/acme/checkout-api:2.15.0")
        );
        assert_eq!(
            world.image(server, "checkout-api-baseline").as_deref(),
            Some("ghcr.io/acme/checkout-api:2.14.1")
        );
    }
    // The plan of the new commit: production's own Deployment would change; the tracks are
    // neither pruned nor touched.
    let changes = world.production_changes();
    assert!(
        changes
            .iter()
            .all(|c| !c.contains("-canary") && !c.contains("-baseline")),
        "{changes:?}"
    );
    assert!(
        changes.contains(&"\"update\" \"Deployment\" \"checkout-api\"".to_string()),
        "{changes:?}"
    );

    let cancel = world
        .bowline(&["executions", "cancel", &id, "--user", "maria-payments"])
        .output()
        .expect("cancel");
    assert!(cancel.status.success(), "{}", text(&cancel));
    let out = child.wait_with_output().expect("run ends");
    assert!(!out.status.success(), "{}", text(&out));
    let execution = world.store().execution(&id).expect("execution");
    assert_eq!(execution.status, ExecutionStatus::Canceled);
    for server in [&world.prod_eu, &world.prod_us] {
        assert!(world.image(server, "checkout-api-canary").is_none());
        assert!(world.image(server, "checkout-api-baseline").is_none());
        assert_eq!(
            world.image(server, "checkout-api").as_deref(),
            Some("ghcr.io/acme/checkout-api:2.14.1"),
            "production untouched"
        );
    }
    let events: Vec<String> = world
        .store()
        .events(&id)
        .expect("events")
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert!(
        events.iter().any(|m| m
            == "prod-us-east-1: removed apps/v1 Deployment shop/checkout-api-canary: the execution ended without promoting or rolling back"),
        "{events:?}"
    );
    // Back at the production version, nothing differs.
    edit(
        &world.repo.path().join("apps/checkout-api/app.yaml"),
        "tag: \"2.15.0\"",
        "tag: \"2.14.1\"",
    );
    assert_eq!(world.production_changes(), Vec::<String>::new());
}

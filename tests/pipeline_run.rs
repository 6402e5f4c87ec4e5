//! `bowline run` and `bowline executions` end to end: the real binary, the SQLite store and the
//! Kubernetes API test server.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bowline::store::{ExecutionFilter, ExecutionStatus, SqliteStore, StageStatus, Store};
use kube_api_test_server::{Options, TestServer, kubeconfig_for};
use serde_json::json;
use tempfile::TempDir;

const STAGING: &str = "gke_acme-shop_europe-west1_staging";

struct World {
    repo: TempDir,
    kubeconfig: PathBuf,
    state: PathBuf,
    staging: TestServer,
}

impl World {
    fn new(controller_delay: Duration) -> World {
        World::with_namespace(controller_delay, true)
    }

    /// A world whose staging cluster has no namespace yet (`with_namespace` false).
    fn with_namespace(controller_delay: Duration, namespace: bool) -> World {
        let repo = tempfile::tempdir().expect("temp dir");
        common::copy_tree(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo"),
            repo.path(),
            &[],
        );
        let staging = TestServer::start_with(Options {
            controller_delay,
            ..Options::default()
        });
        if namespace {
            staging.create(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-staging"}}),
            );
        }
        let kubeconfig = repo.path().join("kubeconfig.yaml");
        fs::write(&kubeconfig, kubeconfig_for(&[(STAGING, &staging)])).expect("kubeconfig");
        let state = repo.path().join("state.db");
        World {
            repo,
            kubeconfig,
            state,
            staging,
        }
    }

    fn edit(&self, relative: &str, from: &str, to: &str) {
        let path = self.repo.path().join(relative);
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.contains(from), "{relative} has no {from:?}");
        fs::write(&path, text.replacen(from, to, 1)).expect("write");
    }

    fn write(&self, relative: &str, text: &str) {
        fs::write(self.repo.path().join(relative), text).expect("write");
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bowline"));
        c.args(args)
            .arg("--state")
            .arg(&self.state)
            .env("BOWLINE_POLL_MS", "50")
            // A killed run's execution may be resumed one second after its last heartbeat.
            .env("BOWLINE_OWNERSHIP_TTL_MS", "1000")
            .env_remove("KUBECONFIG")
            .env_remove("RUST_LOG");
        c
    }

    fn run_command(&self, app: &str) -> Command {
        let mut c = self.command(&[
            "run",
            "--app",
            app,
            "--env",
            "staging",
            "--revision",
            "rev1",
        ]);
        c.arg(self.repo.path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig);
        c
    }

    fn run(&self, app: &str) -> Output {
        self.run_command(app).output().expect("bowline runs")
    }

    fn spawn(&self, app: &str) -> Child {
        self.run_command(app)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bowline starts")
    }

    fn executions(&self, args: &[&str]) -> Output {
        let mut full = vec!["executions"];
        full.extend_from_slice(args);
        self.command(&full).output().expect("bowline runs")
    }

    fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.state).expect("store")
    }

    fn latest(&self) -> String {
        self.store()
            .executions(&ExecutionFilter::default())
            .expect("list")
            .first()
            .expect("an execution")
            .id
            .clone()
    }

    /// Waits until `stage` of the latest execution has `status`.
    fn wait_for(&self, stage: &str, status: StageStatus) -> String {
        let started = Instant::now();
        loop {
            if self.state.exists()
                && let Ok(list) = self.store().executions(&ExecutionFilter::default())
                && let Some(e) = list.first()
                && let Ok(stages) = self.store().stages(&e.id)
                && stages.iter().any(|s| s.name == stage && s.status == status)
            {
                return e.id.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{stage} never became {status:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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

/// Real (not dry-run) writes to Deployments seen by the API server.
fn deployment_writes(server: &TestServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| {
            r.method == "PATCH" && r.path.contains("/deployments/") && !r.dry_run && r.status < 300
        })
        .count()
}

#[test]
fn rolling_pipeline_runs_to_the_end_and_is_recorded() {
    let world = World::new(Duration::from_millis(100));
    world.edit(
        "apps/inventory-worker/app.yaml",
        "  pipeline:\n",
        "  pipeline:\n    variables: {soakTime: 1s}\n",
    );
    let out = world.run("inventory-worker");
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        "deploy-staging           RUNNING",
        "deploy-staging           SUCCEEDED",
        "soak-staging             SUCCEEDED",
        "execution SUCCEEDED",
    ] {
        assert!(stdout.contains(line), "missing {line:?}:\n{stdout}");
    }
    assert!(
        world
            .staging
            .get(
                "apps/v1",
                "Deployment",
                Some("shop-staging"),
                "inventory-worker"
            )
            .is_some()
    );
    let id = world.latest();
    let show = world.executions(&["show", &id]);
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        shown.contains(&format!(
            "execution {id} of inventory-worker: SUCCEEDED (rolling-release, revision rev1)"
        )),
        "{shown}"
    );
    let list = world.executions(&["list"]);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("SUCCEEDED"),
        "{}",
        text(&list)
    );
}

#[test]
fn a_killed_run_resumes_without_repeating_a_stage() {
    let world = World::new(Duration::from_millis(100));
    world.edit(
        "apps/inventory-worker/app.yaml",
        "  pipeline:\n",
        "  pipeline:\n    variables: {soakTime: 3s}\n",
    );
    let mut child = world.spawn("inventory-worker");
    let id = world.wait_for("soak-staging", StageStatus::Running);
    let writes_before = deployment_writes(&world.staging);
    assert_eq!(
        writes_before, 1,
        "the deploy stage applied the Deployment once"
    );
    child.kill().expect("kill");
    child.wait().expect("reaped");

    let out = world.run("inventory-worker");
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("resuming execution {id}")),
        "{stdout}"
    );
    assert_eq!(deployment_writes(&world.staging), 1, "no stage ran twice");
    let stages = world.store().stages(&id).expect("stages");
    for s in &stages {
        assert_eq!(s.status, StageStatus::Succeeded, "{s:?}");
    }
    let deploy = stages
        .iter()
        .find(|s| s.name == "deploy-staging")
        .expect("deploy stage");
    assert_eq!(deploy.attempts, 1, "the deploy stage started once");
}

const JUDGED: &str = "apiVersion: bowline/v1
kind: PipelineTemplate
metadata:
  name: judged
spec:
  parameters:
    - name: previewService
      type: string
  stages:
    - name: approve
      type: manualJudgment
      environment: staging
      timeout: TIMEOUT
      onTimeout: OUTCOME
      inputs: [fast, slow]
    - name: deploy-staging
      type: deploy
      environment: staging
      dependsOn: [approve]
      strategy: rolling
    - name: cleanup
      type: wait
      environment: staging
      dependsOn: [approve]
      when: failure()
      duration: 1s
    - name: on-rejection
      type: wait
      environment: staging
      dependsOn: [approve]
      when: rejected()
      duration: 1s
";

fn judged(world: &World, timeout: &str, outcome: &str) {
    world.write(
        "pipelines/judged.yaml",
        &JUDGED
            .replace("TIMEOUT", timeout)
            .replace("OUTCOME", outcome),
    );
    world.edit(
        "apps/storefront-web/app.yaml",
        "template: blue-green-release",
        "template: judged",
    );
}

#[test]
fn manual_judgment_approve_reject_and_timeout() {
    // Approve with an input choice.
    let world = World::new(Duration::from_millis(50));
    judged(&world, "1m", "reject");
    let child = world.spawn("storefront-web");
    let id = world.wait_for("approve", StageStatus::Waiting);
    let wrong = world.executions(&["approve", &id, "--stage", "deploy-staging"]);
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong));
    let ok = world.executions(&["approve", &id, "--input", "fast", "--user", "maria"]);
    assert!(ok.status.success(), "{}", text(&ok));
    let out = child.wait_with_output().expect("finishes");
    assert!(out.status.success(), "{}", text(&out));
    let stages = world.store().stages(&id).expect("stages");
    let approve = &stages[0];
    assert_eq!(approve.outputs["user"], "maria");
    assert_eq!(approve.outputs["input"], "fast");
    assert_eq!(
        stages[2].status,
        StageStatus::Skipped,
        "cleanup runs only on failure"
    );
    assert_eq!(
        stages[3].status,
        StageStatus::Skipped,
        "on-rejection runs only on rejection"
    );
    let events = world.store().events(&id).expect("events");
    assert!(
        events.iter().any(|e| e.message == "approved by maria"),
        "{events:?}"
    );

    // Reject: the deploy is skipped, the failure branch is not run (a rejection is not a
    // failure), the rejected() branch runs, and the execution is REJECTED.
    let world = World::new(Duration::from_millis(50));
    judged(&world, "1m", "reject");
    let child = world.spawn("storefront-web");
    let id = world.wait_for("approve", StageStatus::Waiting);
    assert!(
        world
            .executions(&["reject", &id, "--user", "maria"])
            .status
            .success()
    );
    let out = child.wait_with_output().expect("finishes");
    assert_eq!(out.status.code(), Some(1));
    let execution = world.store().execution(&id).expect("execution");
    assert_eq!(execution.status, ExecutionStatus::Rejected);
    assert_eq!(
        execution.error.as_deref(),
        Some("stage approve rejected by maria")
    );
    let stages = world.store().stages(&id).expect("stages");
    assert_eq!(stages[0].status, StageStatus::Rejected, "{:?}", stages[0]);
    assert_eq!(stages[0].error, None, "a rejection is not an error");
    assert_eq!(stages[0].outputs["reason"], "rejected by maria");
    assert_eq!(stages[1].status, StageStatus::Skipped);
    assert_eq!(stages[2].status, StageStatus::Skipped, "failure() is false");
    assert_eq!(
        stages[3].status,
        StageStatus::Succeeded,
        "rejected() is true"
    );
    let events = world.store().events(&id).expect("events");
    let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    assert!(messages.contains(&"rejected by maria"), "{messages:?}");
    assert!(
        messages.contains(&"REJECTED: stage approve rejected by maria"),
        "{messages:?}"
    );
    assert!(
        !messages.iter().any(|m| m.contains("rejectd")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("skipped: when `failure()` is false")),
        "{messages:?}"
    );
    assert!(
        world
            .staging
            .get(
                "apps/v1",
                "Deployment",
                Some("shop-staging"),
                "storefront-web"
            )
            .is_none()
    );

    // Nobody decides and the timeout rejects: REJECTED too.
    let world = World::new(Duration::from_millis(50));
    judged(&world, "1s", "reject");
    let out = world.run("storefront-web");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let execution = world.store().execution(&world.latest()).expect("execution");
    assert_eq!(execution.status, ExecutionStatus::Rejected);
    assert_eq!(
        execution.error.as_deref(),
        Some("stage approve rejected: no judgment before the timeout")
    );

    // Nobody decides: the timeout resolves to the configured outcome.
    let world = World::new(Duration::from_millis(50));
    judged(&world, "1s", "approve");
    let out = world.run("storefront-web");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("no judgment before the timeout: approved as configured")
    );
}

const BLUE_GREEN: &str = "apiVersion: bowline/v1
kind: PipelineTemplate
metadata:
  name: bg
spec:
  parameters:
    - name: previewService
      type: string
  stages:
    - name: deploy-staging
      type: deploy
      environment: staging
      strategy: blueGreen
      blueGreen:
        previewService: \"{{ parameters.previewService }}\"
        scaleDownDelay: 1s
    - name: approve-switch
      type: manualJudgment
      environment: staging
      dependsOn: [deploy-staging]
      timeout: 1s
      onTimeout: OUTCOME
    - name: switch
      type: promote
      environment: staging
      dependsOn: [approve-switch]
    - name: rollback
      type: rollback
      environment: staging
      dependsOn: [approve-switch]
      when: failure() or rejected()
";

/// Switches, then a post-switch check fails: the rollback routes traffic back.
const BLUE_GREEN_VERIFY: &str = "apiVersion: bowline/v1
kind: PipelineTemplate
metadata:
  name: bg
spec:
  parameters:
    - name: previewService
      type: string
  stages:
    - name: deploy-staging
      type: deploy
      environment: staging
      strategy: blueGreen
      blueGreen:
        previewService: \"{{ parameters.previewService }}\"
        scaleDownDelay: 1s
    - name: switch
      type: promote
      environment: staging
      dependsOn: [deploy-staging]
    - name: verify
      type: checkPreconditions
      environment: staging
      dependsOn: [switch]
      preconditions:
        - expression: \"false\"
          message: error budget burnt after the switch
    - name: rollback
      type: rollback
      environment: staging
      dependsOn: [verify]
      when: failure()
";

/// The objects among `deployed` that differ in the cluster, as the daemon's drift check
/// computes it (a plan of the recorded objects, taking fields back as their owner).
fn drift(world: &World, deployed: &[serde_json::Value]) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let options = bowline::cluster::ConnectOptions {
            kubeconfig: Some(world.kubeconfig.clone()),
            ..bowline::cluster::ConnectOptions::default()
        };
        let cluster = bowline::cluster::Cluster::connect("staging-eu-west-1", STAGING, &options)
            .await
            .expect("connect");
        let objects: Vec<bowline::render::RenderedObject> = deployed
            .iter()
            .cloned()
            .map(bowline::render::RenderedObject::from_value)
            .collect();
        let destinations = bowline::destination::Destinations::from_spec(
            "staging",
            &bowline::config::DestinationsSpec::default(),
            "shop-staging",
        );
        let target = bowline::sync::AppTarget {
            app: "storefront-web",
            environment: "staging",
            cluster: "staging-eu-west-1",
            namespace: "shop-staging",
            destinations: &destinations,
            objects: &objects,
            prune: false,
            force_conflicts: true,
            context: "staging-eu-west-1",
            declarations: None,
        };
        let plan = bowline::sync::plan(&cluster, &target, &bowline::diff::DiffOptions::default())
            .await
            .expect("plan");
        plan.objects
            .iter()
            .filter(|o| o.action != bowline::diff::Action::Unchanged)
            .map(|o| format!("{} {}: {:?}", o.action.as_str(), o.key, o.changed))
            .collect()
    })
}

fn selector_revision(world: &World, service: &str) -> Option<String> {
    world
        .staging
        .get("v1", "Service", Some("shop-staging"), service)
        .and_then(|s| {
            s["spec"]["selector"]["bowline.dev/revision"]
                .as_str()
                .map(str::to_string)
        })
}

fn replicas(world: &World, deployment: &str) -> Option<i64> {
    world
        .staging
        .get("apps/v1", "Deployment", Some("shop-staging"), deployment)
        .and_then(|d| d["spec"]["replicas"].as_i64())
}

#[test]
fn blue_green_switches_scales_down_the_old_revision_and_rolls_back() {
    let world = World::new(Duration::from_millis(50));
    world.edit(
        "apps/storefront-web/app.yaml",
        "template: blue-green-release",
        "template: bg",
    );
    let run = |revision: &str, outcome: &str| {
        world.write("pipelines/bg.yaml", &BLUE_GREEN.replace("OUTCOME", outcome));
        let mut c = world.command(&[
            "run",
            "--app",
            "storefront-web",
            "--env",
            "staging",
            "--revision",
            revision,
        ]);
        c.arg(world.repo.path())
            .arg("--kubeconfig")
            .arg(&world.kubeconfig);
        c.output().expect("runs")
    };

    let first = run("rev1", "approve");
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(
        selector_revision(&world, "storefront-web").as_deref(),
        Some("rev1")
    );
    assert_eq!(
        selector_revision(&world, "storefront-web-preview").as_deref(),
        Some("rev1")
    );
    assert!(replicas(&world, "storefront-web-rev1").is_some_and(|r| r > 0));

    let second = run("rev2", "approve");
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(
        selector_revision(&world, "storefront-web").as_deref(),
        Some("rev2")
    );
    assert_eq!(
        replicas(&world, "storefront-web-rev1"),
        Some(0),
        "old revision scaled down after the delay"
    );
    assert!(replicas(&world, "storefront-web-rev2").is_some_and(|r| r > 0));
    // What drift and self-heal compare with is the switched blue/green state: checking drift
    // now finds nothing to change, so self-heal never routes the Service to every revision.
    let deployed = world
        .store()
        .last_good("storefront-web", "staging", "staging-eu-west-1", None)
        .expect("store")
        .expect("recorded");
    let names: Vec<String> = deployed
        .objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .map(|o| {
            o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["storefront-web-rev2"]);
    for service in deployed.objects.iter().filter(|o| o["kind"] == "Service") {
        assert_eq!(
            service["spec"]["selector"]["bowline.dev/revision"], "rev2",
            "{service}"
        );
    }
    assert_eq!(drift(&world, &deployed.objects), Vec::<String>::new());
    assert_eq!(
        selector_revision(&world, "storefront-web").as_deref(),
        Some("rev2")
    );

    // The switch is rejected (timeout → reject): traffic stays on rev2, rev3 is scaled away.
    let third = run("rev3", "reject");
    assert_eq!(third.status.code(), Some(1), "{}", text(&third));
    assert_eq!(
        selector_revision(&world, "storefront-web").as_deref(),
        Some("rev2")
    );
    assert_eq!(
        selector_revision(&world, "storefront-web-preview").as_deref(),
        Some("rev3")
    );
    assert_eq!(replicas(&world, "storefront-web-rev3"), Some(0));
    let stages = world.store().stages(&world.latest()).expect("stages");
    let rollback = stages
        .iter()
        .find(|s| s.name == "rollback")
        .expect("rollback");
    assert_eq!(rollback.status, StageStatus::Succeeded, "{rollback:?}");

    // After a switch, a failing check rolls back: traffic returns to rev2 (scaled up again
    // after its keep-alive window), and rev4 is scaled away.
    world.write("pipelines/bg.yaml", BLUE_GREEN_VERIFY);
    let mut c = world.command(&[
        "run",
        "--app",
        "storefront-web",
        "--env",
        "staging",
        "--revision",
        "rev4",
    ]);
    c.arg(world.repo.path())
        .arg("--kubeconfig")
        .arg(&world.kubeconfig);
    let fourth = c.output().expect("runs");
    assert_eq!(fourth.status.code(), Some(1), "{}", text(&fourth));
    assert_eq!(
        selector_revision(&world, "storefront-web").as_deref(),
        Some("rev2"),
        "{}",
        text(&fourth)
    );
    assert_eq!(replicas(&world, "storefront-web-rev4"), Some(0));
    assert!(replicas(&world, "storefront-web-rev2").is_some_and(|r| r > 0));
    let stages = world.store().stages(&world.latest()).expect("stages");
    let rollback = stages
        .iter()
        .find(|s| s.name == "rollback")
        .expect("rollback");
    assert_eq!(rollback.status, StageStatus::Succeeded, "{rollback:?}");
    assert_eq!(rollback.outputs["restored"], "rev2", "{rollback:?}");
}

#[test]
fn a_stage_waits_for_its_window_and_can_be_canceled() {
    let world = World::new(Duration::from_millis(50));
    // A one-minute window two hours from now, every day: closed now.
    let opens = chrono::Utc::now() + chrono::Duration::hours(2);
    let window = format!(
        "  executionWindows:\n    - days: [mon, tue, wed, thu, fri, sat, sun]\n      start: \"{}\"\n      end: \"{}\"\n      timezone: UTC\n      environments: [staging]\n  stages:\n",
        opens.format("%H:%M"),
        (opens + chrono::Duration::minutes(1)).format("%H:%M"),
    );
    world.edit("pipelines/rolling-release.yaml", "  stages:\n", &window);
    let child = world.spawn("inventory-worker");
    let id = world.wait_for("deploy-staging", StageStatus::Waiting);
    let stages = world.store().stages(&id).expect("stages");
    assert_eq!(stages[0].outputs["waitingFor"], "window");
    let events = world.store().events(&id).expect("events");
    assert!(
        events.iter().any(|e| e
            .message
            .starts_with("waiting for the execution window (opens ")),
        "{events:?}"
    );
    assert_eq!(
        deployment_writes(&world.staging),
        0,
        "nothing deployed outside the window"
    );
    let cancel = world.executions(&["cancel", &id]);
    assert!(cancel.status.success(), "{}", text(&cancel));
    let out = child.wait_with_output().expect("finishes");
    assert_eq!(out.status.code(), Some(1));
    let execution = world.store().execution(&id).expect("execution");
    assert_eq!(execution.status, ExecutionStatus::Canceled);
    let stages = world.store().stages(&id).expect("stages");
    assert!(
        stages.iter().all(|s| s.status == StageStatus::Canceled),
        "{stages:?}"
    );
}

#[test]
fn a_killed_blue_green_deploy_resumes_without_applying_again() {
    // A slow controller keeps the deploy stage waiting for health after it applied.
    let world = World::new(Duration::from_secs(3));
    world.edit(
        "pipelines/blue-green-release.yaml",
        "      duration: 10m",
        "      duration: 1s",
    );
    let mut child = world.spawn("storefront-web");
    world.wait_for("deploy-staging", StageStatus::Running);
    let started = Instant::now();
    while deployment_writes(&world.staging) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "applied in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the checkpoint of what was applied be committed, then stop the process hard.
    std::thread::sleep(Duration::from_millis(300));
    child.kill().expect("kill");
    child.wait().expect("reaped");
    assert_eq!(deployment_writes(&world.staging), 1);

    let out = world.run("storefront-web");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        deployment_writes(&world.staging),
        1,
        "the resumed deploy did not apply its revision again"
    );
}

/// Deploys, then a check fails: a first delivery has nothing to roll back to.
const FIRST_FAILS: &str = "apiVersion: bowline/v1
kind: PipelineTemplate
metadata:
  name: first-fails
spec:
  stages:
    - name: deploy-staging
      type: deploy
      environment: staging
      strategy: rolling
    - name: verify
      type: checkPreconditions
      environment: staging
      dependsOn: [deploy-staging]
      preconditions:
        - expression: \"false\"
          message: error budget burnt
    - name: rollback
      type: rollback
      environment: staging
      dependsOn: [verify]
      when: failure()
    - name: on-rejection
      type: wait
      environment: staging
      dependsOn: [verify]
      when: rejected()
      duration: 1s
";

#[test]
fn a_failure_runs_failure_stages_and_a_rollback_with_nothing_before_is_skipped() {
    let world = World::new(Duration::from_millis(50));
    world.write("pipelines/first-fails.yaml", FIRST_FAILS);
    world.edit(
        "apps/inventory-worker/app.yaml",
        "template: rolling-release",
        "template: first-fails",
    );
    let out = world.run("inventory-worker");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let id = world.latest();
    let execution = world.store().execution(&id).expect("execution");
    assert_eq!(execution.status, ExecutionStatus::Failed);
    assert_eq!(
        execution.error.as_deref(),
        Some("stage verify failed"),
        "the skipped rollback is not a failure"
    );
    let stages = world.store().stages(&id).expect("stages");
    let rollback = stages
        .iter()
        .find(|s| s.name == "rollback")
        .expect("rollback");
    assert_eq!(rollback.status, StageStatus::Skipped, "{rollback:?}");
    assert_eq!(rollback.attempts, 1, "failure() ran it: {rollback:?}");
    assert_eq!(
        rollback.outputs["reason"],
        "staging-eu-west-1: no earlier successful revision to roll back to",
        "{rollback:?}"
    );
    let rejection = stages
        .iter()
        .find(|s| s.name == "on-rejection")
        .expect("on-rejection");
    assert_eq!(rejection.status, StageStatus::Skipped, "{rejection:?}");
    let events = world.store().events(&id).expect("events");
    assert!(
        events.iter().any(|e| e.stage.as_deref() == Some("rollback")
            && e.message
                == "skipped: staging-eu-west-1: no earlier successful revision to roll back to"),
        "{events:?}"
    );
}

/// Waits for a window that is closed; canceling it still runs the `canceled()` stage.
const CANCELED_CLEANUP: &str = "apiVersion: bowline/v1
kind: PipelineTemplate
metadata:
  name: canceled-cleanup
spec:
  executionWindows:
    - days: [mon, tue, wed, thu, fri, sat, sun]
      start: \"START\"
      end: \"END\"
      timezone: UTC
      environments: [staging]
  stages:
    - name: deploy-staging
      type: deploy
      environment: staging
      strategy: rolling
    - name: on-failure
      type: checkPreconditions
      dependsOn: [deploy-staging]
      when: failure()
      preconditions:
        - expression: \"true\"
    - name: on-cancel
      type: checkPreconditions
      dependsOn: [deploy-staging]
      when: canceled()
      preconditions:
        - expression: \"true\"
";

#[test]
fn a_cancellation_runs_canceled_stages_only() {
    let world = World::new(Duration::from_millis(50));
    let opens = chrono::Utc::now() + chrono::Duration::hours(2);
    world.write(
        "pipelines/canceled-cleanup.yaml",
        &CANCELED_CLEANUP
            .replace("START", &opens.format("%H:%M").to_string())
            .replace(
                "END",
                &(opens + chrono::Duration::minutes(1))
                    .format("%H:%M")
                    .to_string(),
            ),
    );
    world.edit(
        "apps/inventory-worker/app.yaml",
        "template: rolling-release",
        "template: canceled-cleanup",
    );
    let child = world.spawn("inventory-worker");
    let id = world.wait_for("deploy-staging", StageStatus::Waiting);
    let cancel = world.executions(&["cancel", &id, "--user", "maria"]);
    assert!(cancel.status.success(), "{}", text(&cancel));
    let out = child.wait_with_output().expect("finishes");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let execution = world.store().execution(&id).expect("execution");
    assert_eq!(execution.status, ExecutionStatus::Canceled);
    let events = world.store().events(&id).expect("events");
    assert!(
        events
            .iter()
            .any(|e| e.message == "cancellation requested by maria"),
        "{events:?}"
    );
    let stages = world.store().stages(&id).expect("stages");
    let status = |name: &str| {
        stages
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.status)
            .expect("stage")
    };
    assert_eq!(status("deploy-staging"), StageStatus::Canceled);
    assert_eq!(status("on-failure"), StageStatus::Canceled, "{stages:?}");
    assert_eq!(status("on-cancel"), StageStatus::Succeeded, "{stages:?}");
}

#[test]
fn deploys_of_every_strategy_create_a_missing_namespace() {
    for app in ["inventory-worker", "storefront-web"] {
        let world = World::with_namespace(Duration::from_millis(50), false);
        world.edit(
            "pipelines/blue-green-release.yaml",
            "      duration: 10m",
            "      duration: 1s",
        );
        world.edit(
            "apps/inventory-worker/app.yaml",
            "  pipeline:\n",
            "  pipeline:\n    variables: {soakTime: 1s}\n",
        );
        let out = world.run(app);
        assert!(out.status.success(), "{app}: {}", text(&out));
        let namespace = world
            .staging
            .get("v1", "Namespace", None, "shop-staging")
            .expect("created");
        assert_eq!(
            namespace["metadata"]["labels"]["app.kubernetes.io/managed-by"], "bowline",
            "{namespace}"
        );
    }
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
struct Received {
    /// Header names in lower case.
    headers: std::collections::BTreeMap<String, String>,
    body: serde_json::Value,
}

/// A webhook receiver on 127.0.0.1 that records every request and answers 200, holding
/// the first `hold_first` answers for `hold` (so a test can kill the sender meanwhile).
struct Receiver {
    url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(hold_first: usize, hold: Duration) -> Receiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Received>::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut headers = std::collections::BTreeMap::new();
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                        }
                    }
                    let length: usize = headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let n = {
                        let mut log = log.lock().expect("log");
                        log.push(Received {
                            headers,
                            body: serde_json::from_slice(&body).unwrap_or_default(),
                        });
                        log.len()
                    };
                    if n <= hold_first {
                        std::thread::sleep(hold);
                    }
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                });
            }
        });
        Receiver { url, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("log").clone()
    }

    /// Waits until `n` requests arrived.
    fn wait_for(&self, n: usize) {
        let started = Instant::now();
        while self.received().len() < n {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} request(s) received, expected {n}",
                self.received().len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Deploy, notify a receiver, soak: the pipeline of the ownership tests.
const NOTIFIED: &str = "apiVersion: bowline/v1
kind: PipelineTemplate
metadata:
  name: notified
spec:
  stages:
    - name: deploy-staging
      type: deploy
      environment: staging
      strategy: rolling
    - name: notify
      type: webhook
      environment: staging
      dependsOn: [deploy-staging]
      url: \"URL\"
      body:
        execution: \"{{ execution.id }}\"
        revision: \"{{ revision }}\"
        app: \"{{ app.name }}\"
    - name: soak-staging
      type: wait
      environment: staging
      dependsOn: [notify]
      duration: 1s
";

fn notified(world: &World, receiver: &Receiver) {
    world.write(
        "pipelines/notified.yaml",
        &NOTIFIED.replace("URL", &receiver.url),
    );
    world.edit(
        "apps/inventory-worker/app.yaml",
        "template: rolling-release",
        "template: notified",
    );
}

#[test]
fn two_runs_on_one_state_file_deliver_the_revision_once() {
    let world = World::new(Duration::from_millis(100));
    let receiver = Receiver::start(0, Duration::ZERO);
    notified(&world, &receiver);
    let spawn = || {
        world
            .run_command("inventory-worker")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bowline starts")
    };
    let (first, second) = (spawn(), spawn());
    let outs = [
        first.wait_with_output().expect("first"),
        second.wait_with_output().expect("second"),
    ];
    for out in &outs {
        assert!(out.status.success(), "{}", text(out));
    }
    let executions = world
        .store()
        .executions(&ExecutionFilter::default())
        .expect("list");
    assert_eq!(executions.len(), 1, "one execution of rev1: {executions:?}");
    let id = &executions[0].id;
    assert_eq!(executions[0].status, ExecutionStatus::Succeeded);
    let waited: Vec<&Output> = outs
        .iter()
        .filter(|o| {
            String::from_utf8_lossy(&o.stdout).contains(&format!(
                "execution {id} of inventory-worker at revision rev1 is already"
            ))
        })
        .collect();
    assert_eq!(
        waited.len(),
        1,
        "one run followed the other's execution:\n{}\n{}",
        text(&outs[0]),
        text(&outs[1])
    );
    assert_eq!(deployment_writes(&world.staging), 1, "applied once");
    let received = receiver.received();
    assert_eq!(received.len(), 1, "one webhook delivery: {received:?}");
    assert_eq!(received[0].body["execution"], id.as_str());
    assert_eq!(received[0].body["revision"], "rev1");
    assert_eq!(received[0].body["app"], "inventory-worker");
    assert_eq!(
        received[0]
            .headers
            .get("idempotency-key")
            .map(String::as_str),
        Some(format!("{id}:notify").as_str())
    );
    let stages = world.store().stages(id).expect("stages");
    assert!(stages.iter().all(|s| s.attempts == 1), "{stages:?}");
    // A deliberate second run after the first ended starts a new execution.
    let again = world.run("inventory-worker");
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(
        world
            .store()
            .executions(&ExecutionFilter::default())
            .expect("list")
            .len(),
        2
    );
}

#[test]
fn a_run_killed_during_a_webhook_resends_it_with_the_same_idempotency_key() {
    let world = World::new(Duration::from_millis(50));
    let receiver = Receiver::start(1, Duration::from_secs(20));
    notified(&world, &receiver);
    let mut child = world.spawn("inventory-worker");
    receiver.wait_for(1);
    let id = world.latest();
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    let started = Instant::now();
    let out = world.run("inventory-worker");
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("resuming execution {id}")),
        "{stdout}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "resumed after the heartbeat expired, not after the held answer: {:?}",
        started.elapsed()
    );
    let received = receiver.received();
    assert_eq!(received.len(), 2, "sent, then resent once: {received:?}");
    let keys: Vec<Option<&String>> = received
        .iter()
        .map(|r| r.headers.get("idempotency-key"))
        .collect();
    let expected = format!("{id}:notify");
    assert_eq!(keys, vec![Some(&expected), Some(&expected)]);
    assert_eq!(deployment_writes(&world.staging), 1, "deployed once");
}

#[test]
fn a_run_killed_while_waiting_for_a_judgment_records_no_new_attempt() {
    let world = World::new(Duration::from_millis(50));
    judged(&world, "1m", "reject");
    let mut child = world.spawn("storefront-web");
    let id = world.wait_for("approve", StageStatus::Waiting);
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    let resumed = world
        .run_command("storefront-web")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bowline starts");
    // The resumed run takes the execution over once the killed one's heartbeat expired.
    let started = Instant::now();
    while !world
        .store()
        .events(&id)
        .expect("events")
        .iter()
        .any(|e| e.message.starts_with("resumed by "))
    {
        assert!(started.elapsed() < Duration::from_secs(20), "never resumed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let show = world.executions(&["show", &id]);
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        shown.contains("owner: ") && shown.contains("heartbeat valid until"),
        "{shown}"
    );
    let ok = world.executions(&["approve", &id, "--input", "fast", "--user", "maria"]);
    assert!(ok.status.success(), "{}", text(&ok));
    let out = resumed.wait_with_output().expect("finishes");
    assert!(out.status.success(), "{}", text(&out));
    let approve = world
        .store()
        .stages(&id)
        .expect("stages")
        .into_iter()
        .find(|s| s.name == "approve")
        .expect("approve");
    assert_eq!(approve.status, StageStatus::Succeeded);
    assert_eq!(
        approve.attempts, 1,
        "resuming a judgment is not a new attempt"
    );
    let events = world.store().events(&id).expect("events");
    let of_approve = |prefix: &str| {
        events
            .iter()
            .filter(|e| e.stage.as_deref() == Some("approve") && e.message.starts_with(prefix))
            .count()
    };
    assert_eq!(of_approve("started"), 1, "{events:?}");
    assert_eq!(of_approve("awaiting judgment"), 1, "{events:?}");
}

#[test]
fn waiting_for_an_execution_window_does_not_count_against_a_stage_timeout() {
    let world = World::new(Duration::from_millis(50));
    // A window opening at the next full minute at least 4 s away, longer than the timeout.
    let mut now = chrono::Utc::now();
    if 60 - chrono::Timelike::second(&now) < 4 {
        std::thread::sleep(Duration::from_secs(5));
        now = chrono::Utc::now();
    }
    let opens = now + chrono::Duration::minutes(1);
    let window = format!(
        "  executionWindows:\n    - days: [mon, tue, wed, thu, fri, sat, sun]\n      start: \"{}\"\n      end: \"{}\"\n      timezone: UTC\n      environments: [staging]\n  stages:\n",
        opens.format("%H:%M"),
        (opens + chrono::Duration::minutes(2)).format("%H:%M"),
    );
    world.edit("pipelines/rolling-release.yaml", "  stages:\n", &window);
    world.edit(
        "pipelines/rolling-release.yaml",
        "      strategy: rolling\n    - name: soak-staging",
        "      strategy: rolling\n      timeout: 3s\n    - name: soak-staging",
    );
    world.edit(
        "apps/inventory-worker/app.yaml",
        "  pipeline:\n",
        "  pipeline:\n    variables: {soakTime: 1s}\n",
    );
    let started = Instant::now();
    let out = world.run("inventory-worker");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "the window wait was longer than the timeout: {:?}",
        started.elapsed()
    );
    let stages = world.store().stages(&world.latest()).expect("stages");
    let deploy = &stages[0];
    assert_eq!(deploy.status, StageStatus::Succeeded, "{deploy:?}");
    assert!(deploy.outputs.get("windowOpenedAt").is_some(), "{deploy:?}");
    assert_eq!(deployment_writes(&world.staging), 1);
}

#[test]
fn an_empty_or_foreign_state_file_is_refused() {
    let world = World::new(Duration::from_millis(50));
    fs::write(&world.state, b"").expect("empty state");
    let out = world.run("inventory-worker");
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&world.state.display().to_string()) && stderr.contains("empty (0 bytes)"),
        "{}",
        text(&out)
    );
    assert_eq!(fs::metadata(&world.state).expect("kept").len(), 0);
    fs::write(&world.state, b"{\"not\": \"a store\"}").expect("json state");
    let out = world.executions(&["list"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an SQLite database"),
        "{}",
        text(&out)
    );
    assert_eq!(deployment_writes(&world.staging), 0);
}

/// A promote with no deploy stage before it: nothing to promote, on every attempt.
const NOTHING_TO_PROMOTE: &str = "apiVersion: bowline/v1
kind: PipelineTemplate
metadata:
  name: nothing-to-promote
spec:
  stages:
    - name: promote-staging
      type: promote
      environment: staging
      retries: 3
";

#[test]
fn a_terminal_failure_is_not_retried() {
    let world = World::new(Duration::from_millis(50));
    world.write("pipelines/nothing-to-promote.yaml", NOTHING_TO_PROMOTE);
    world.edit(
        "apps/inventory-worker/app.yaml",
        "template: rolling-release",
        "template: nothing-to-promote",
    );
    let out = world.run("inventory-worker");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let id = world.latest();
    let stages = world.store().stages(&id).expect("stages");
    let promote = stages
        .iter()
        .find(|s| s.name == "promote-staging")
        .expect("promote stage");
    assert_eq!(promote.status, StageStatus::Failed, "{promote:?}");
    assert_eq!(promote.attempts, 1, "not retried: {promote:?}");
    assert_eq!(
        promote.error.as_deref(),
        Some("nothing to promote: no successful deploy stage for this environment")
    );
    let events: Vec<String> = world
        .store()
        .events(&id)
        .expect("events")
        .into_iter()
        .filter(|e| e.stage.as_deref() == Some("promote-staging"))
        .map(|e| e.message)
        .collect();
    assert!(
        events.iter().any(|m| m
            == "not retried: the failure is terminal (another attempt would fail the same way): nothing to promote: no successful deploy stage for this environment"),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|m| m.starts_with("retrying")),
        "{events:?}"
    );
}

/// A precondition that does not hold (yet) is worth retrying: what it checks may change.
const RETRIED_PRECONDITION: &str = "apiVersion: bowline/v1
kind: PipelineTemplate
metadata:
  name: retried-precondition
spec:
  stages:
    - name: verify
      type: checkPreconditions
      environment: staging
      retries: 2
      preconditions:
        - expression: \"false\"
          message: error budget burnt
";

#[test]
fn a_transient_failure_is_retried_as_often_as_allowed() {
    let world = World::new(Duration::from_millis(50));
    world.write("pipelines/retried-precondition.yaml", RETRIED_PRECONDITION);
    world.edit(
        "apps/inventory-worker/app.yaml",
        "template: rolling-release",
        "template: retried-precondition",
    );
    let out = world.run("inventory-worker");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let id = world.latest();
    let stages = world.store().stages(&id).expect("stages");
    let verify = stages
        .iter()
        .find(|s| s.name == "verify")
        .expect("verify stage");
    assert_eq!(verify.status, StageStatus::Failed, "{verify:?}");
    assert_eq!(
        verify.attempts, 3,
        "the first attempt and two retries: {verify:?}"
    );
    assert_eq!(
        verify.error.as_deref(),
        Some("precondition failed: error budget burnt")
    );
    let events: Vec<String> = world
        .store()
        .events(&id)
        .expect("events")
        .into_iter()
        .filter(|e| e.stage.as_deref() == Some("verify"))
        .map(|e| e.message)
        .collect();
    for attempt in [2, 3] {
        assert!(
            events.iter().any(|m| m
                == &format!(
                    "retrying (attempt {attempt}) after: precondition failed: error budget burnt"
                )),
            "{events:?}"
        );
    }
    assert!(
        !events.iter().any(|m| m.starts_with("not retried")),
        "{events:?}"
    );
}

/// A rolling deploy allowed one retry.
const RETRIED_DEPLOY: &str = "apiVersion: bowline/v1
kind: PipelineTemplate
metadata:
  name: retried-deploy
spec:
  stages:
    - name: deploy-staging
      type: deploy
      environment: staging
      strategy: rolling
      retries: 1
";

#[test]
fn a_server_error_is_retried_and_the_next_attempt_succeeds() {
    let world = World::new(Duration::from_millis(50));
    world.write("pipelines/retried-deploy.yaml", RETRIED_DEPLOY);
    world.edit(
        "apps/inventory-worker/app.yaml",
        "template: rolling-release",
        "template: retried-deploy",
    );
    // One apply of the Deployment fails with 500 through all of the client's own retries
    // (the first request and four more): the attempt fails transiently, the next succeeds.
    world
        .staging
        .fail_next(Some("PATCH"), "/deployments/", 500, 5);
    let out = world.run("inventory-worker");
    assert!(out.status.success(), "{}", text(&out));
    let id = world.latest();
    let stages = world.store().stages(&id).expect("stages");
    let deploy = stages
        .iter()
        .find(|s| s.name == "deploy-staging")
        .expect("deploy stage");
    assert_eq!(deploy.status, StageStatus::Succeeded, "{deploy:?}");
    assert_eq!(deploy.attempts, 2, "retried once: {deploy:?}");
    let events: Vec<String> = world
        .store()
        .events(&id)
        .expect("events")
        .into_iter()
        .filter(|e| e.stage.as_deref() == Some("deploy-staging"))
        .map(|e| e.message)
        .collect();
    assert!(
        events
            .iter()
            .any(|m| m.starts_with("retrying (attempt 2) after: cluster staging-eu-west-1: ")),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|m| m.starts_with("not retried")),
        "{events:?}"
    );
}

//! Three `bowline serve` replicas on one PostgreSQL database, coordinated by Leases on the
//! Kubernetes API test server, reporting to the GitHub API test server: webhooks spread over
//! every replica, the leader and a shard owner killed (SIGKILL) in the middle of executions,
//! a replica paused (SIGSTOP) past its lease and resumed. Every execution finishes, no stage
//! ends twice, no status or comment is sent twice, and the takeover times are printed.

mod common;
#[path = "support/soak_repo.rs"]
mod soak_repo;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bowline::forge::webhook::sign;
use bowline::store::{ExecutionFilter, ExecutionStatus, PostgresStore, Store};
use chrono::{DateTime, Utc};
use git2::Repository;
use github_api_test_server::TestServer as GitHubServer;
use kube_api_test_server::TestServer as KubeServer;
use serde_json::{Value, json};

use common::postgres::pg;
use soak_repo::{commit_all, commit_to, write_repo};

const SECRET: &str = "replica test secret";
const REPO: &str = "acme/shop-config";
const REPO_ID: u64 = 27_182_818;
/// Apps: 18 names put at least one app in each of the six shards, so every replica runs some.
const APPS: usize = 18;
const SHARDS: &str = "6";
/// Lease duration of the replicas.
const LEASE: Duration = Duration::from_secs(2);

struct World {
    dir: tempfile::TempDir,
    url: String,
    kube: KubeServer,
    github: GitHubServer,
    replicas: Vec<Replica>,
}

struct Replica {
    id: String,
    child: Option<Child>,
    url: String,
    log: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = signal(child, "CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(child: &Child, name: &str) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
}

impl World {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Starts replica `id` and waits until it serves.
    fn start(&mut self, id: &str) {
        let log = self.path(&format!("{id}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_bowline"))
            .arg("serve")
            .args(["--repo", self.path("repo").to_str().expect("utf-8")])
            .args(["--listen", "127.0.0.1:0"])
            .args(["--state", &self.url])
            .args([
                "--mask-key-file",
                self.path("mask.key").to_str().expect("utf-8"),
            ])
            .args([
                "--cache-dir",
                self.path(&format!("cache-{id}")).to_str().expect("utf-8"),
            ])
            .args([
                "--kubeconfig",
                self.path("kubeconfig").to_str().expect("utf-8"),
            ])
            .args(["--lease-namespace", "bowline", "--lease-context", "test"])
            .args([
                "--lease-duration",
                "2s",
                "--shards",
                SHARDS,
                "--replica-id",
                id,
            ])
            .args(["--github-api", &self.github.url(), "--github-repo", REPO])
            .args([
                "--github-token-file",
                self.path("github-token").to_str().expect("utf-8"),
            ])
            .args([
                "--webhook-secret-file",
                self.path("webhook-secret").to_str().expect("utf-8"),
            ])
            .args(["--poll-interval", "1h", "--drift-interval", "0s"])
            .args(["--stage-poll", "100ms", "--shutdown-grace", "2s"])
            .env_remove("KUBECONFIG")
            .env("RUST_LOG", "bowline=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bowline serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log_path = log.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(&log_path).expect("log");
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                use std::io::Write as _;
                let _ = writeln!(file, "{line}");
                if !sent && let Some(at) = line.split("serving on ").nth(1) {
                    let _ = tx.send(at.trim().to_string());
                    sent = true;
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{id} did not start: {}", read(&log)));
        self.replicas.push(Replica {
            id: id.to_string(),
            child: Some(child),
            url,
            log,
        });
    }

    fn replica(&self, id: &str) -> &Replica {
        self.replicas.iter().find(|r| r.id == id).expect("replica")
    }

    fn alive(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.iter().filter(|r| r.child.is_some())
    }

    fn kill(&mut self, id: &str) -> DateTime<Utc> {
        let replica = self
            .replicas
            .iter_mut()
            .find(|r| r.id == id)
            .expect("replica");
        let mut child = replica.child.take().expect("running");
        let at = Utc::now();
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        at
    }

    fn logs(&self) -> String {
        self.replicas
            .iter()
            .map(|r| format!("--- {} ---\n{}", r.id, read(&r.log)))
            .collect()
    }

    /// The replica holding the leader Lease and the shards each replica holds, from the
    /// Leases on the API server.
    fn holders(&self) -> (Option<String>, BTreeMap<String, usize>) {
        let now = Utc::now();
        let mut leader = None;
        let mut shards = BTreeMap::new();
        for lease in self
            .kube
            .list("coordination.k8s.io/v1", "Lease", Some("bowline"))
        {
            let name = lease["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
            let renewed = lease["spec"]["renewTime"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            let seconds = lease["spec"]["leaseDurationSeconds"].as_i64().unwrap_or(0);
            let live = renewed.is_some_and(|r| r + chrono::TimeDelta::seconds(seconds) > now);
            if holder.is_empty() || !live {
                continue;
            }
            if name == "bowline-leader" {
                leader = Some(holder.to_string());
            } else if name.starts_with("bowline-shard-") {
                *shards.entry(holder.to_string()).or_default() += 1;
            }
        }
        (leader, shards)
    }

    async fn deliver(&self, replica: &Replica, event: &str, delivery: &str, payload: &Value) {
        let body = serde_json::to_vec(payload).expect("payload");
        let response = reqwest::Client::new()
            .post(format!("{}/webhooks/github", replica.url))
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", delivery)
            .header("X-Hub-Signature-256", sign(SECRET.as_bytes(), &body))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("delivery");
        assert_eq!(
            response.status().as_u16(),
            202,
            "{event} to {}: {}",
            replica.id,
            response.text().await.unwrap_or_default()
        );
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn shared_payload(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/github/webhooks")
        .join(name);
    let mut payload: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("payload")).expect("JSON");
    payload["repository"]["id"] = REPO_ID.into();
    payload["repository"]["full_name"] = REPO.into();
    payload["repository"]["name"] = "shop-config".into();
    payload["repository"]["owner"]["login"] = "acme".into();
    payload
}

async fn eventually(w: &World, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            w.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first event at or after `after` saying an execution was resumed by a replica other than
/// `dead`, with the time it took.
fn first_resume_after(
    store: &PostgresStore,
    ids: &[String],
    dead: &str,
    after: DateTime<Utc>,
) -> Option<Duration> {
    ids.iter()
        .flat_map(|id| store.events(id).unwrap_or_default())
        .filter(|e| {
            e.at >= after
                && e.message.starts_with("resumed by ")
                && e.message.contains(&format!("from {dead}"))
        })
        .map(|e| (e.at - after).to_std().unwrap_or_default())
        .min()
}

/// Waits until `dead` owns no unfinished execution any more; then the time from `since` to the
/// first takeover of one of `ids` from it.
async fn taken_over(
    w: &World,
    store: &PostgresStore,
    ids: &[String],
    dead: &str,
    since: DateTime<Utc>,
) -> Option<Duration> {
    eventually(
        w,
        &format!("the executions of {dead} taken over"),
        Duration::from_secs(30),
        || {
            store
                .executions(&ExecutionFilter::default())
                .unwrap_or_default()
                .iter()
                .all(|e| e.status.is_final() || e.owner.as_deref() != Some(dead))
        },
    )
    .await;
    first_resume_after(store, ids, dead, since)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_survive_kills_and_a_pause_without_doing_anything_twice() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("temp dir");
    let url = tokio::task::block_in_place(|| pg().database());
    let kube = KubeServer::start();
    for ns in ["shop", "bowline"] {
        kube.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    std::fs::write(dir.path().join("kubeconfig"), kube.kubeconfig("test")).expect("kubeconfig");
    let github = GitHubServer::start();
    github.set_repository(REPO, REPO_ID);
    std::fs::write(dir.path().join("github-token"), "ghs_replica_test\n").expect("token");
    std::fs::write(dir.path().join("webhook-secret"), format!("{SECRET}\n")).expect("secret");
    let repo_dir = dir.path().join("repo");
    write_repo(&repo_dir, 0, "1.0.0", "30s", true);
    let git = Repository::init(&repo_dir).expect("init");
    git.set_head("refs/heads/main").expect("head");
    commit_all(&git, "initial: no apps yet");
    let mut w = World {
        dir,
        url: url.clone(),
        kube,
        github,
        replicas: Vec::new(),
    };
    for id in ["r0", "r1", "r2"] {
        w.start(id);
    }
    let store = PostgresStore::connect(&url, None).expect("store");

    // One leader; the six shards split two by two.
    let started = Instant::now();
    eventually(
        &w,
        "one leader and two shards per replica",
        Duration::from_secs(30),
        || {
            let (leader, shards) = w.holders();
            leader.is_some() && shards.len() == 3 && shards.values().all(|n| *n == 2)
        },
    )
    .await;
    eprintln!("replicas settled in {:?}", started.elapsed());

    // A commit adding every app: the push reaches a replica that is not the leader; it hands
    // the reconcile over through the store and the leader starts every app.
    write_repo(&w.path("repo"), APPS, "1.0.0", "20s", true);
    let first = commit_all(&git, "the apps");
    let (leader, _) = w.holders();
    let leader = leader.expect("leader");
    let follower = w.alive().find(|r| r.id != leader).expect("follower");
    let mut push = shared_payload("push.branch-created.octokit.json");
    push["ref"] = "refs/heads/main".into();
    push["after"] = first.clone().into();
    w.deliver(follower, "push", "push-1", &push).await;
    eventually(
        &w,
        "an execution per app, all in their soak",
        Duration::from_secs(60),
        || {
            let running = store
                .executions(&ExecutionFilter::default())
                .unwrap_or_default();
            running.len() == APPS
                && running.iter().all(|e| {
                    store.stages(&e.id).unwrap_or_default().iter().any(|s| {
                        s.name == "soak" && s.status == bowline::store::StageStatus::Running
                    })
                })
        },
    )
    .await;
    let executions = store
        .executions(&ExecutionFilter::default())
        .expect("executions");
    let ids: Vec<String> = executions.iter().map(|e| e.id.clone()).collect();
    // Every replica runs some of them.
    let owners: std::collections::BTreeSet<String> =
        executions.iter().filter_map(|e| e.owner.clone()).collect();
    assert_eq!(owners.len(), 3, "owners: {owners:?}\n{}", w.logs());
    // Any replica answers the API and the same delivery is refused by every other one.
    for replica in w.alive() {
        let response = reqwest::Client::new()
            .post(format!("{}/webhooks/github", replica.url))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "push-1")
            .header(
                "X-Hub-Signature-256",
                sign(SECRET.as_bytes(), &serde_json::to_vec(&push).expect("push")),
            )
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(&push).expect("push"))
            .send()
            .await
            .expect("redelivery");
        assert_ne!(
            response.status().as_u16(),
            202,
            "{} took a replay",
            replica.id
        );
    }

    // SIGKILL a shard owner that is not the leader.
    let victim = w
        .alive()
        .find(|r| r.id != leader)
        .map(|r| r.id.clone())
        .expect("victim");
    let killed = w.kill(&victim);
    w.start("r3");
    let shard_takeover = taken_over(&w, &store, &ids, &victim, killed)
        .await
        .expect("resumed");
    eprintln!(
        "shard owner killed: first execution resumed after {shard_takeover:?} (lease {LEASE:?})"
    );

    // SIGKILL the leader; another replica leads within about a lease duration.
    let killed = w.kill(&leader);
    w.start("r4");
    let before = Instant::now();
    eventually(&w, "a new leader", Duration::from_secs(30), || {
        w.holders().0.is_some_and(|l| l != leader)
    })
    .await;
    eprintln!(
        "leader killed: a new leader after at most {:?}",
        before.elapsed()
    );
    let leader_takeover = taken_over(&w, &store, &ids, &leader, killed)
        .await
        .expect("resumed");
    eprintln!("leader killed: first execution resumed after {leader_takeover:?}");

    // SIGSTOP a replica that runs executions past its lease; the others take its shards; once
    // resumed it writes nothing (the fence) and rejoins.
    let paused_id = store
        .executions(&ExecutionFilter {
            statuses: vec![ExecutionStatus::Running],
            ..ExecutionFilter::default()
        })
        .expect("running")
        .iter()
        .find_map(|e| e.owner.clone())
        .expect("an owner of a running execution");
    let paused = w.replica(&paused_id).child.as_ref().expect("alive");
    signal(paused, "STOP").expect("SIGSTOP");
    let stopped_at = Utc::now();
    let pause_takeover = taken_over(&w, &store, &ids, &paused_id, stopped_at).await;
    eprintln!("replica paused: first execution resumed after {pause_takeover:?}");
    tokio::time::sleep(LEASE).await;
    signal(w.replica(&paused_id).child.as_ref().expect("alive"), "CONT").expect("SIGCONT");

    // A second commit while all this settles, through a push to the replica that was paused.
    write_repo(&w.path("repo"), APPS, "1.0.1", "3s", true);
    let second = commit_all(&git, "second");
    push["after"] = second.clone().into();
    let resumed = w.replica(&paused_id);
    w.deliver(resumed, "push", "push-2", &push).await;

    eventually(
        &w,
        "every execution of both commits finished",
        Duration::from_secs(120),
        || {
            let all = store
                .executions(&ExecutionFilter::default())
                .unwrap_or_default();
            all.len() == 2 * APPS && all.iter().all(|e| e.status.is_final())
        },
    )
    .await;
    let all = store
        .executions(&ExecutionFilter::default())
        .expect("executions");
    for e in &all {
        let events: Vec<String> = store
            .events(&e.id)
            .expect("events")
            .into_iter()
            .map(|ev| format!("{}: {}", ev.stage.unwrap_or_default(), ev.message))
            .collect();
        assert!(
            matches!(
                e.status,
                ExecutionStatus::Succeeded | ExecutionStatus::Superseded
            ),
            "{} {}: {:?}\n{events:#?}\n{}",
            e.app,
            e.status,
            e.error,
            w.logs()
        );
        if e.status == ExecutionStatus::Superseded {
            continue;
        }
        // No stage ended twice, and the deploy, done before any replica died, never ran again.
        for stage in ["deploy-staging", "soak", "settle"] {
            let ended = events
                .iter()
                .filter(|m| *m == &format!("{stage}: succeeded"))
                .count();
            assert_eq!(ended, 1, "{} {stage}: {events:#?}", e.app);
        }
        let deploys = events
            .iter()
            .filter(|m| *m == "deploy-staging: started")
            .count();
        assert_eq!(deploys, 1, "{}: {events:#?}", e.app);
    }

    // A pull request opened at one replica and updated at another: one sticky comment.
    write_repo(&w.path("repo"), APPS, "1.0.2", "3s", true);
    let head = commit_to(
        &git,
        "refs/pull/7/head",
        "refs/heads/main",
        "bump every app",
    );
    let pull_request = |action: &str| {
        let mut p = shared_payload("pull_request.opened.octokit.json");
        p["action"] = action.into();
        p["number"] = 7.into();
        p["pull_request"]["number"] = 7.into();
        p["pull_request"]["head"]["sha"] = head.clone().into();
        p["pull_request"]["base"]["ref"] = "main".into();
        for side in ["head", "base"] {
            p["pull_request"][side]["repo"]["full_name"] = REPO.into();
            p["pull_request"][side]["repo"]["name"] = "shop-config".into();
            p["pull_request"][side]["repo"]["owner"]["login"] = "acme".into();
        }
        p
    };
    let planners: Vec<&Replica> = w.alive().take(2).collect();
    w.deliver(planners[0], "pull_request", "pr-1", &pull_request("opened"))
        .await;
    w.deliver(
        planners[1],
        "pull_request",
        "pr-2",
        &pull_request("synchronize"),
    )
    .await;
    eventually(&w, "the plan comment", Duration::from_secs(60), || {
        w.github.comments(REPO, 7).len() == 1
            && w.github
                .statuses(REPO, &head)
                .iter()
                .filter(|s| s.context == "bowline/plan" && s.state != "pending")
                .count()
                >= 1
    })
    .await;

    // GitHub got each status once: one success per app and commit, and no status twice in a
    // row for any context.
    eventually(&w, "the outbox delivered", Duration::from_secs(30), || {
        store.outbox_stats().is_ok_and(|s| s.pending == 0)
    })
    .await;
    for sha in [&first, &second, &head] {
        let statuses = w.github.statuses(REPO, sha);
        let mut by_context: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for s in statuses {
            by_context
                .entry(s.context.clone())
                .or_default()
                .push((s.state.clone(), s.description.clone().unwrap_or_default()));
        }
        for (context, sent) in &by_context {
            let successes = sent.iter().filter(|(state, _)| state == "success").count();
            assert!(successes <= 1, "{context} at {sha}: {sent:#?}");
            for pair in sent.windows(2) {
                assert_ne!(pair[0], pair[1], "{context} at {sha} sent twice: {sent:#?}");
            }
        }
    }
    let second_successes = w
        .github
        .statuses(REPO, &second)
        .into_iter()
        .filter(|s| s.state == "success")
        .count();
    assert_eq!(second_successes, APPS, "{}", w.logs());

    assert_eq!(w.github.comments(REPO, 7).len(), 1, "{}", w.logs());
    assert!(
        w.github.comments(REPO, 7)[0].body.contains("app-00"),
        "{:?}",
        w.github.comments(REPO, 7)
    );

    // The paused replica noticed it had lost its shards, and wrote nothing after that.
    let paused_log = read(&w.replica(&paused_id).log);
    assert!(
        paused_log.contains("shard lease not renewed in time")
            || paused_log.contains("lost the shard lease")
            || paused_log.contains("carried on elsewhere"),
        "{paused_log}"
    );
}

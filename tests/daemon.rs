//! The daemon end to end: a real Git repository with commits made during the test, fetched
//! over a local path; Kubernetes API test servers for the three clusters of example-repo; the
//! GitHub API test server, which checks every request body against the OpenAPI description and
//! records calls; and webhook deliveries derived from GitHub's published payloads
//! (`../shared/github/webhooks/`), re-signed with a test secret and sent over HTTP to the
//! daemon's router.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bowline::cluster::ConnectOptions;
use bowline::daemon::{CURSOR_KEY, Daemon, DaemonConfig, OutboxConfig, Reconciled, deploy_context};
use bowline::forge::GitHub;
use bowline::forge::client::RetryPolicy;
use bowline::forge::webhook::sign;
use bowline::pipeline::Services;
use bowline::server::{self, ApiTokens, ServerLimits};
use bowline::source::git::{GitAuth, GitSource};
use bowline::store::{
    ExecutionFilter, ExecutionStatus, NewExecution, NewStage, OutboxKey, OutboxKind, OutboxState,
    SqliteStore, StageStatus, StageUpdate, Store,
};
use git2::{Repository, Signature};
use github_api_test_server::{PullRequestSeed, RateLimit, TestServer as GitHubServer};
use kube_api_test_server::{TestServer as KubeServer, kubeconfig_for};
use serde_json::{Value, json};

const SECRET: &[u8] = b"daemon test secret";
const REPO: &str = "acme/shop-config";
/// GitHub's numeric id of the config repository.
const REPO_ID: u64 = 31_415_926;
const API_TOKEN: &str = "0123456789abcdef-ci-token";
const PR: u64 = 7;
const SECRET_VALUE: &str = "hunter2-never-shown";
/// The author of the test pull request, a collaborator with write access.
const AUTHOR: &str = "octo-dev";

const CONTEXTS: [&str; 3] = [
    "gke_acme-shop_europe-west1_staging",
    "gke_acme-shop_europe-west1_prod",
    "gke_acme-shop_us-east1_prod",
];

fn shared(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/github/webhooks")
        .join(name);
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("payload JSON")
}

/// Points a payload's repository at the config repository.
fn retarget(payload: &mut Value) {
    payload["repository"]["id"] = REPO_ID.into();
    payload["repository"]["full_name"] = REPO.into();
    payload["repository"]["name"] = "shop-config".into();
    payload["repository"]["owner"]["login"] = "acme".into();
}

fn commit_all(repo: &Repository, reference: &str, message: &str, parent: Option<&str>) -> String {
    let mut index = repo.index().expect("index");
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .expect("add");
    index.update_all(["*"], None).expect("update");
    index.write().expect("write index");
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("tree");
    let sig = Signature::now("Test", "test@example.com").expect("signature");
    let parent = parent.map(|p| {
        repo.find_commit(git2::Oid::from_str(p).expect("oid"))
            .expect("parent")
    });
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some(reference), &sig, &sig, message, &tree, &parents)
        .expect("commit")
        .to_string()
}

struct World {
    work: tempfile::TempDir,
    git: Repository,
    _kube: Vec<KubeServer>,
    kube: Vec<KubeServer>,
    github: GitHubServer,
    daemon: Arc<Daemon>,
    url: String,
    http: reqwest::Client,
    state: tempfile::TempDir,
}

impl World {
    fn edit(&self, relative: &str, from: &str, to: &str) {
        let path = self.work.path().join(relative);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains(from), "{relative} has no {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
    }

    async fn deliver(&self, event: &str, delivery: &str, payload: &Value) -> (u16, String) {
        let body = serde_json::to_vec(payload).expect("payload");
        let signature = sign(SECRET, &body);
        self.deliver_signed(event, delivery, body, &signature).await
    }

    async fn deliver_signed(
        &self,
        event: &str,
        delivery: &str,
        body: Vec<u8>,
        signature: &str,
    ) -> (u16, String) {
        let response = self
            .http
            .post(format!("{}/webhooks/github", self.url))
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", delivery)
            .header("X-Hub-Signature-256", signature)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("delivery");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    fn pull_request(&self, action: &str, head: &str) -> Value {
        let file = if action == "closed" {
            "pull_request.closed.octokit.json"
        } else {
            "pull_request.opened.octokit.json"
        };
        let mut p = shared(file);
        retarget(&mut p);
        p["action"] = action.into();
        p["number"] = PR.into();
        p["pull_request"]["number"] = PR.into();
        p["pull_request"]["head"]["sha"] = head.into();
        p["pull_request"]["base"]["ref"] = "main".into();
        // A branch of the config repository itself (not a fork), by an author with write access.
        for side in ["head", "base"] {
            p["pull_request"][side]["repo"]["full_name"] = REPO.into();
            p["pull_request"][side]["repo"]["name"] = "shop-config".into();
            p["pull_request"][side]["repo"]["owner"]["login"] = "acme".into();
        }
        p["pull_request"]["user"]["login"] = AUTHOR.into();
        p
    }

    fn comment(&self, author: &str, body: &str) -> Value {
        let mut p = shared("issue_comment.created.on-pr.octocrab-pr811.json");
        retarget(&mut p);
        p["issue"]["number"] = PR.into();
        p["comment"]["body"] = body.into();
        p["comment"]["user"]["login"] = author.into();
        p["sender"]["login"] = author.into();
        p
    }

    fn plan_statuses(&self, sha: &str) -> Vec<(String, String)> {
        self.github
            .statuses(REPO, sha)
            .into_iter()
            .filter(|s| s.context == "bowline/plan")
            .map(|s| (s.state, s.description.unwrap_or_default()))
            .collect()
    }

    fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.state.path().join("bowline.db")).expect("store")
    }

    async fn api_post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(API_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("api");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn api(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.url));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.expect("api");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// example-repo with only inventory-worker automated, a 1 s soak, `maria` as its approver.
fn prepare_repo(dir: &Path) {
    common::copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo"),
        dir,
        &[],
    );
    let edit = |relative: &str, from: &str, to: &str| {
        let path = dir.join(relative);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains(from), "{relative} has no {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
    };
    edit(
        "apps/inventory-worker/app.yaml",
        "  pipeline:\n    template: rolling-release",
        "  approvers: [maria]\n  pipeline:\n    template: rolling-release\n    variables:\n      soakTime: 1s",
    );
    let checkout = dir.join("apps/checkout-api/app.yaml");
    let mut text = std::fs::read_to_string(&checkout).expect("read");
    text.push_str("  syncPolicy:\n    automated: false\n");
    std::fs::write(&checkout, text).expect("write");
    edit(
        "apps/storefront-web/app.yaml",
        "  syncPolicy:\n    prune: false",
        "  syncPolicy:\n    prune: false\n    automated: false",
    );
}

/// Everything the daemon logs in this test binary, at debug level, for "never logged"
/// assertions.
fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().expect("logs")).into_owned()
}

fn log_buffer() -> &'static Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer: Arc<std::sync::Mutex<Vec<u8>>> = Arc::default();
        let sink = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .try_init();
        buffer
    })
}

struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A daemon over the state directory `state` (store, mirror, kubeconfig) of `remote`, writing
/// to the GitHub test server: what `bowline serve` builds, here and after a restart.
fn daemon_over(state: &Path, remote: &str, github: &GitHubServer) -> Arc<Daemon> {
    let client = GitHub::with_retry(
        &github.url(),
        "ghs_test_token".into(),
        RetryPolicy {
            min_backoff: Duration::from_millis(5),
            max_rate_limit_wait: Duration::from_secs(2),
            ..RetryPolicy::default()
        },
    )
    .expect("client");
    let connect = ConnectOptions {
        kubeconfig: Some(state.join("kubeconfig.yaml")),
        timeout: Duration::from_secs(5),
        ..ConnectOptions::default()
    };
    let mut services = Services::new(connect.clone());
    services.poll = Duration::from_millis(50);
    services.retry_delay = Duration::from_millis(50);
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&state.join("bowline.db")).expect("store"));
    let source =
        GitSource::open(remote, "main", &state.join("mirror"), GitAuth::default()).expect("source");
    let config = DaemonConfig {
        // Only webhooks wake the poll loop in this test.
        poll_interval: Duration::from_secs(3600),
        drift_interval: None,
        public_url: Some("https://bowline.example.com".into()),
        connect,
        // Short delays, so what an outage held back arrives soon after it.
        outbox: OutboxConfig {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            poll: Duration::from_secs(1),
        },
        ..DaemonConfig::default()
    };
    Daemon::new(
        config,
        source,
        store,
        services,
        Some(client),
        Some(SECRET.to_vec()),
    )
    .expect("daemon")
}

/// Serves `daemon` (router and poll loop) on a random local port; returns its base URL.
async fn serve(daemon: &Arc<Daemon>, limits: ServerLimits) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let tokens = ApiTokens::parse("tokens", &format!("ci:{API_TOKEN}\n")).expect("tokens");
    let router = server::router_with(daemon.clone(), tokens, limits);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    tokio::spawn(daemon.clone().poll_loop());
    url
}

async fn start() -> (World, String) {
    log_buffer();
    let work = tempfile::tempdir().expect("work dir");
    prepare_repo(work.path());
    let git = Repository::init(work.path()).expect("init");
    git.set_head("refs/heads/main").expect("head");
    let first = commit_all(&git, "refs/heads/main", "initial", None);

    let kube: Vec<KubeServer> = CONTEXTS.iter().map(|_| KubeServer::start()).collect();
    kube[0].create(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-staging"}}),
    );
    for k in &kube[1..] {
        k.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
    }
    let state = tempfile::tempdir().expect("state dir");
    let kubeconfig = state.path().join("kubeconfig.yaml");
    let pairs: Vec<(&str, &KubeServer)> = CONTEXTS.iter().copied().zip(kube.iter()).collect();
    std::fs::write(&kubeconfig, kubeconfig_for(&pairs)).expect("kubeconfig");

    let github = GitHubServer::start();
    github.set_permission("maria", "write");
    github.set_permission("mallory", "read");
    github.set_permission(AUTHOR, "write");
    github.set_repository(REPO, REPO_ID);

    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&state.path().join("bowline.db")).expect("store"));
    let mirror = state.path().join("mirror");
    let remote = work.path().to_str().expect("utf-8").to_string();
    // A daemon that already reconciled the initial commit before a restart.
    GitSource::open(&remote, "main", &mirror, GitAuth::default())
        .expect("mirror")
        .fetch()
        .expect("fetch");
    store.set_meta(CURSOR_KEY, &first).expect("cursor");
    drop(store);
    let daemon = daemon_over(state.path(), &remote, &github);
    assert_eq!(
        daemon.source_state().last_good.as_deref(),
        Some(first.as_str())
    );
    let url = serve(&daemon, ServerLimits::default()).await;
    // The poll loop asks GitHub for the repository's id once; wait for it so the calls the
    // tests count are their own.
    eventually("the repository id", Duration::from_secs(10), || {
        daemon.config_repository().and_then(|r| r.id) == Some(REPO_ID)
    })
    .await;
    let world = World {
        work,
        git,
        _kube: Vec::new(),
        kube,
        github,
        daemon,
        url,
        http: reqwest::Client::new(),
        state,
    };
    (world, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_request_merge_chatops_and_drift() {
    let (w, first) = start().await;

    // Ping, forged and unsigned deliveries.
    let (code, body) = w
        .deliver("ping", "d-ping", &shared("ping.repo-hook.octokit.json"))
        .await;
    assert_eq!((code, body.trim()), (200, "pong"));
    let calls_before = w.github.calls().len();
    let forged = serde_json::to_vec(&w.pull_request("opened", &first)).expect("json");
    let (code, _) = w
        .deliver_signed(
            "pull_request",
            "d-forged",
            forged.clone(),
            &sign(b"wrong secret", &forged),
        )
        .await;
    assert_eq!(code, 401);
    let (code, _) = w
        .deliver_signed("pull_request", "d-unsigned", forged, "")
        .await;
    assert_eq!(code, 401);

    // The pull request: a new image tag and a Secret whose value must never be shown.
    w.edit(
        "apps/inventory-worker/app.yaml",
        "tag: \"0.31.4\"",
        "tag: \"0.32.0\"",
    );
    std::fs::write(
        w.work.path().join("apps/inventory-worker/manifests/secret.yaml"),
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: worker-credentials\nstringData:\n  password: {SECRET_VALUE}\n"),
    )
    .expect("secret");
    let head = commit_all(&w.git, "refs/pull/7/head", "bump worker", Some(&first));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        w.github.calls().len(),
        calls_before,
        "forged deliveries did nothing"
    );

    // GitHub fails once and rate-limits once: both are retried.
    w.github.fail_next(Some("POST"), "/statuses/", 502, 1);
    w.github.rate_limit_next(
        "/comments",
        RateLimit::TooMany {
            retry_after_secs: 1,
        },
        1,
    );
    let (code, _) = w
        .deliver("pull_request", "d-open", &w.pull_request("opened", &head))
        .await;
    assert_eq!(code, 202);
    eventually("the plan status", Duration::from_secs(30), || {
        w.plan_statuses(&head).iter().any(|(s, _)| s != "pending")
    })
    .await;
    let statuses = w.plan_statuses(&head);
    assert_eq!(statuses.first().map(|s| s.0.as_str()), Some("pending"));
    assert_eq!(
        statuses.last().map(|s| s.0.as_str()),
        Some("success"),
        "{statuses:?}"
    );
    let comments = w.github.comments(REPO, PR);
    assert_eq!(comments.len(), 1, "one sticky comment");
    let first_comment = comments[0].id;
    let comment = &comments[0].body;
    assert!(comment.starts_with("<!-- bowline:plan -->"), "{comment}");
    assert!(
        comment.contains("1 application affected: `inventory-worker`"),
        "{comment}"
    );
    assert!(
        comment.contains("| inventory-worker | staging | staging-eu-west-1 |"),
        "{comment}"
    );
    assert!(
        comment.contains("| inventory-worker | production | prod-us-east-1 |"),
        "{comment}"
    );
    assert!(
        !comment.contains("checkout-api"),
        "unaffected apps are left out: {comment}"
    );
    assert!(
        comment.contains("ghcr.io/acme/inventory-worker:0.32.0"),
        "{comment}"
    );
    assert!(comment.contains("worker-credentials"), "{comment}");
    assert!(
        !comment.contains(SECRET_VALUE),
        "Secret values are masked: {comment}"
    );
    assert!(
        w.github
            .calls()
            .iter()
            .all(|c| c.validation_errors.is_empty())
    );

    // A duplicate delivery changes nothing.
    let calls = w.github.calls().len();
    let (code, body) = w
        .deliver("pull_request", "d-open", &w.pull_request("opened", &head))
        .await;
    assert_eq!((code, body.trim()), (200, "duplicate delivery ignored"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.github.calls().len(), calls);

    // Synchronize: the same comment is updated in place.
    w.edit(
        "apps/inventory-worker/app.yaml",
        "tag: \"0.32.0\"",
        "tag: \"0.32.1\"",
    );
    let head2 = commit_all(&w.git, "refs/pull/7/head", "bump again", Some(&head));
    let (code, _) = w
        .deliver(
            "pull_request",
            "d-sync",
            &w.pull_request("synchronize", &head2),
        )
        .await;
    assert_eq!(code, 202);
    eventually("the second plan", Duration::from_secs(30), || {
        w.plan_statuses(&head2).iter().any(|(s, _)| s != "pending")
    })
    .await;
    let comments = w.github.comments(REPO, PR);
    assert_eq!(comments.len(), 1, "still one comment");
    assert!(
        comments[0].body.contains("inventory-worker:0.32.1"),
        "{}",
        comments[0].body
    );
    assert_eq!(comments[0].id, first_comment, "the same comment");
    assert_eq!(w.github.calls_to("issues/update-comment").len(), 1);

    // Merge: the merge commit reaches main; the closed delivery triggers the fetch.
    let merge = commit_all(
        &w.git,
        "refs/heads/main",
        "Merge pull request #7 from acme/bump-worker\n\nbump worker",
        Some(&first),
    );
    let mut closed = w.pull_request("closed", &head2);
    closed["pull_request"]["merged"] = true.into();
    closed["pull_request"]["merge_commit_sha"] = merge.clone().into();
    let (code, _) = w.deliver("pull_request", "d-merge", &closed).await;
    assert_eq!(code, 202);
    let store = w.store();
    let waiting = || {
        let list = store.executions(&ExecutionFilter::default()).expect("list");
        let e = list.first()?;
        let stages = store.stages(&e.id).expect("stages");
        stages
            .iter()
            .any(|s| s.name == "approve-production" && s.status == StageStatus::Waiting)
            .then(|| e.clone())
    };
    eventually(
        "the execution to wait for approval",
        Duration::from_secs(60),
        || waiting().is_some(),
    )
    .await;
    let execution = waiting().expect("waiting execution");
    assert_eq!(execution.app, "inventory-worker");
    assert_eq!(execution.revision, merge);
    assert_eq!(execution.trigger["pullRequest"], json!(PR));
    assert_eq!(
        execution.trigger["pullRequestAuthor"],
        json!(AUTHOR),
        "the merged pull request's author is recorded"
    );
    assert_eq!(
        store
            .executions(&ExecutionFilter::default())
            .expect("list")
            .len(),
        1,
        "only the automated app"
    );
    let deploy = || -> Vec<_> {
        w.github
            .statuses(REPO, &merge)
            .into_iter()
            .filter(|s| s.context == deploy_context("inventory-worker"))
            .collect()
    };
    // The status follows the stored stage state a moment later.
    eventually(
        "the awaiting-judgment status",
        Duration::from_secs(10),
        || {
            deploy().iter().any(|s| {
                s.description
                    .as_deref()
                    .unwrap_or("")
                    .starts_with("approve-production: awaiting judgment")
            })
        },
    )
    .await;
    let deploy = deploy();
    assert!(deploy.iter().all(|s| s.state == "pending"), "{deploy:?}");
    assert_eq!(
        deploy[0].target_url.as_deref(),
        Some(
            format!(
                "https://bowline.example.com/api/v1/executions/{}",
                execution.id
            )
            .as_str()
        )
    );

    // ChatOps from someone who is not an approver: refused with a reply.
    let (code, _) = w
        .deliver(
            "issue_comment",
            "d-c1",
            &w.comment("mallory", "/bowline approve"),
        )
        .await;
    assert_eq!(code, 202);
    eventually("the refusal", Duration::from_secs(10), || {
        w.github.comments(REPO, PR).len() == 2
    })
    .await;
    let refusal = &w.github.comments(REPO, PR)[1].body;
    assert!(
        refusal.starts_with("@mallory you are not allowed"),
        "{refusal}"
    );
    assert!(
        store
            .judgment(&execution.id, "approve-production")
            .expect("judgment")
            .is_none()
    );

    // From the approver: the judgment resumes the pipeline to production.
    let (code, _) = w
        .deliver(
            "issue_comment",
            "d-c2",
            &w.comment("maria", "/bowline approve"),
        )
        .await;
    assert_eq!(code, 202);
    eventually("the execution to succeed", Duration::from_secs(60), || {
        store.execution(&execution.id).map(|e| e.status).ok() == Some(ExecutionStatus::Succeeded)
    })
    .await;
    let reply = &w.github.comments(REPO, PR)[2].body;
    assert!(
        reply.contains("approved \"approve-production\" of `inventory-worker`"),
        "{reply}"
    );
    let judgment = store
        .judgment(&execution.id, "approve-production")
        .expect("read")
        .expect("one");
    assert_eq!(judgment.user, "maria");
    eventually("the success status", Duration::from_secs(10), || {
        w.github
            .statuses(REPO, &merge)
            .iter()
            .any(|s| s.context == deploy_context("inventory-worker") && s.state == "success")
    })
    .await;
    let image = |k: &KubeServer, namespace: &str| {
        k.get("apps/v1", "Deployment", Some(namespace), "inventory-worker")
            .expect("deployed")["spec"]["template"]["spec"]["containers"][0]["image"]
            .clone()
    };
    assert_eq!(
        image(&w.kube[0], "shop-staging"),
        json!("ghcr.io/acme/inventory-worker:0.32.1")
    );
    for k in &w.kube[1..] {
        // Production pins its own tag in app.yaml.
        assert_eq!(
            image(k, "shop"),
            json!("ghcr.io/acme/inventory-worker:0.31.3")
        );
    }

    // The API needs a token.
    let (code, _) = w.api("/api/v1/executions", None).await;
    assert_eq!(code, 401);
    let (code, list) = w.api("/api/v1/executions", Some(API_TOKEN)).await;
    assert_eq!(code, 200);
    assert_eq!(list["executions"][0]["id"], json!(execution.id));
    assert_eq!(list["executions"][0]["pullRequest"], json!(PR));
    let (code, one) = w
        .api(
            &format!("/api/v1/executions/{}", execution.id),
            Some(API_TOKEN),
        )
        .await;
    assert_eq!(code, 200);
    assert!(
        !one.to_string().contains(SECRET_VALUE),
        "the API never shows Secret values"
    );
    // A finished execution cannot be canceled; an unknown one cannot be judged.
    let (code, body) = w
        .api_post(
            &format!("/api/v1/executions/{}/cancel", execution.id),
            json!({}),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("already SUCCEEDED")),
        "{body}"
    );
    let (code, body) = w
        .api_post(
            "/api/v1/executions/01NOSUCHEXECUTION/judgment",
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(code, 404, "{body}");
    let (code, _) = w.api("/healthz", None).await;
    assert_eq!(code, 200);

    // Drift: none after the deploy; a hand edit in staging is found and corrected (selfHeal).
    let report = w.daemon.check_drift().await;
    let drift = &report["inventory-worker"];
    assert_eq!(drift.len(), 3, "{drift:?}");
    assert!(
        drift
            .iter()
            .all(|d| d.out_of_sync == 0 && d.error.is_none()),
        "{drift:?}"
    );
    w.kube[0].patch_as(
        "kubectl-edit",
        "v1",
        "ConfigMap",
        Some("shop-staging"),
        "inventory-worker",
        json!({"data": {"WORKER_CONCURRENCY": "64"}}),
    );
    let report = w.daemon.check_drift().await;
    let staging = report["inventory-worker"]
        .iter()
        .find(|d| d.environment == "staging")
        .expect("staging");
    assert_eq!(staging.out_of_sync, 1, "{staging:?}");
    assert_eq!(
        staging.objects,
        vec!["v1 ConfigMap shop-staging/inventory-worker".to_string()]
    );
    // Per object, with the field that differs, in the API as well.
    assert_eq!(staging.changes.len(), 1, "{staging:?}");
    assert_eq!(staging.changes[0].action, "update");
    assert_eq!(
        staging.changes[0].fields,
        vec!["/data/WORKER_CONCURRENCY".to_string()]
    );
    let (_, apps) = w.api("/api/v1/apps", Some(API_TOKEN)).await;
    assert!(
        apps.to_string().contains("/data/WORKER_CONCURRENCY"),
        "{apps}"
    );
    assert!(staging.healed, "{staging:?}");
    let cm = w.kube[0]
        .get("v1", "ConfigMap", Some("shop-staging"), "inventory-worker")
        .expect("cm");
    assert_eq!(cm["data"]["WORKER_CONCURRENCY"], json!("2"));
    let metrics = w
        .http
        .get(format!("{}/metrics", w.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("bowline_executions{status=\"SUCCEEDED\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bowline_webhook_deliveries_total{result=\"bad_signature\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bowline_webhook_deliveries_total{result=\"duplicate\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("bowline_drift_objects{app=\"inventory-worker\",cluster=\"staging-eu-west-1\",environment=\"staging\"} 0"), "{metrics}");

    // The remote goes away: the last good commit is kept and the failure is visible.
    let moved = w.work.path().with_extension("gone");
    std::fs::rename(w.work.path(), &moved).expect("move the remote away");
    let failed = w.daemon.reconcile_branch().await;
    std::fs::rename(&moved, w.work.path()).expect("move it back");
    assert!(failed.is_err(), "{failed:?}");
    let state = w.daemon.source_state();
    assert_eq!(state.last_good.as_deref(), Some(merge.as_str()));
    assert!(state.last_error.is_some());
    let (code, ready) = w.api("/readyz", None).await;
    assert_eq!(code, 200, "still serving the last good commit");
    assert_eq!(ready["source"]["lastGood"], json!(merge));
    assert_eq!(ready["source"]["failures"], json!(1));
    assert_eq!(
        w.daemon.reconcile_branch().await.expect("back"),
        Reconciled::Unchanged
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_changes_no_app_starts_nothing_and_a_bad_commit_is_refused() {
    let (w, first) = start().await;
    std::fs::write(w.work.path().join("README.md"), "notes\n").expect("readme");
    let readme = commit_all(&w.git, "refs/heads/main", "docs", Some(&first));
    assert_eq!(
        w.daemon.reconcile_branch().await.expect("reconcile"),
        Reconciled::NoAppChanged {
            commit: readme.clone()
        }
    );
    assert_eq!(
        w.store().meta(CURSOR_KEY).expect("cursor").as_deref(),
        Some(readme.as_str())
    );

    w.edit(
        "apps/inventory-worker/app.yaml",
        "tag: \"0.31.4\"",
        "tag: [not, a, tag]",
    );
    let bad = commit_all(&w.git, "refs/heads/main", "broken", Some(&readme));
    let err = w.daemon.reconcile_branch().await.expect_err("refused");
    let message = err.to_string();
    assert!(message.contains(&format!("commit {bad}")), "{message}");
    assert!(
        message.contains("apps/inventory-worker/app.yaml:"),
        "{message}"
    );
    assert_eq!(
        w.daemon.source_state().last_good.as_deref(),
        Some(readme.as_str())
    );
    assert!(
        w.store()
            .executions(&ExecutionFilter::default())
            .expect("list")
            .is_empty()
    );
    // The status goes through the outbox: it arrives shortly after.
    eventually("the failure status", Duration::from_secs(10), || {
        !w.github.statuses(REPO, &bad).is_empty()
    })
    .await;
    let failure = w.github.statuses(REPO, &bad);
    assert_eq!(failure.len(), 1, "{failure:?}");
    assert_eq!(
        (failure[0].context.as_str(), failure[0].state.as_str()),
        ("bowline/plan", "failure")
    );
}

/// Edits `relative` under `root`, replacing the first `from` with `to`.
fn edit_in(root: &Path, relative: &str, from: &str, to: &str) {
    let path = root.join(relative);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(from), "{relative} has no {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
}

/// Delivers one pull-request event and waits for its plan: the sticky comment, the final
/// `bowline/plan` status of `head`, and every request the Kubernetes servers received meanwhile.
async fn plan_once(
    w: &World,
    head: &str,
    delivery: &str,
    payload: Value,
) -> (String, (String, String), Vec<String>) {
    for k in &w.kube {
        k.clear_requests();
    }
    let before = w.plan_statuses(head).len();
    let (code, _) = w.deliver("pull_request", delivery, &payload).await;
    assert_eq!(code, 202);
    eventually("the plan", Duration::from_secs(30), || {
        let statuses = w.plan_statuses(head);
        statuses.len() > before && statuses.last().is_some_and(|(s, _)| s != "pending")
    })
    .await;
    let requests: Vec<String> = w
        .kube
        .iter()
        .flat_map(|k| k.requests())
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let comment = w.github.comments(REPO, PR)[0].body.clone();
    let status = w.plan_statuses(head).last().cloned().expect("status");
    (comment, status, requests)
}

/// A pull request that tries to reach another namespace through a new environment of its
/// own `bowline.yaml`, and brings a repository policy: planned under the tracked branch's
/// settings, shown as a platform change, and — from a fork, or by an author without write
/// access — never compared with the live clusters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_pull_requests_plan_under_the_branch_settings_against_an_empty_cluster() {
    let (w, first) = start().await;
    const LEAKED: &str = "payments-db-password-never-shown";
    w.kube[1]
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments"}}));
    w.kube[1].create(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "payments-config", "namespace": "payments"},
        "data": {"password": LEAKED},
    }));
    let root = w.work.path();
    edit_in(
        root,
        "bowline.yaml",
        "  defaults:",
        "    - name: leak\n      namespace: payments\n      clusters:\n        - name: other\n          context: gke_acme-shop_europe-west1_prod\n  defaults:",
    );
    edit_in(
        root,
        "apps/inventory-worker/app.yaml",
        "tag: \"0.31.4\"",
        "tag: \"0.32.0\"",
    );
    edit_in(
        root,
        "apps/inventory-worker/app.yaml",
        "  environments:\n",
        "  environments:\n    leak: {}\n",
    );
    std::fs::write(
        root.join("apps/inventory-worker/manifests/peek.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: payments-config\n  namespace: payments\ndata:\n  password: probe\n",
    )
    .expect("manifest");
    std::fs::write(
        root.join("policies/allow_all.rego"),
        "package bowline.policies.allow_all\n\nwarn contains msg if {\n  false\n  msg := \"never\"\n}\n",
    )
    .expect("policy");
    let head = commit_all(&w.git, "refs/pull/7/head", "widen the reach", Some(&first));

    // From a fork, by a stranger: validation, rendering and policies only.
    let mut fork = w.pull_request("opened", &head);
    fork["pull_request"]["head"]["repo"]["full_name"] = "stranger/shop-config".into();
    fork["pull_request"]["head"]["repo"]["owner"]["login"] = "stranger".into();
    fork["pull_request"]["user"]["login"] = "stranger".into();
    let (comment, status, requests) = plan_once(&w, &head, "d-fork", fork).await;
    assert!(
        requests.is_empty(),
        "no cluster was contacted: {requests:?}"
    );
    assert!(
        comment.contains("Compared with an empty cluster: the pull request comes from a fork."),
        "{comment}"
    );
    assert!(
        comment.contains("**Platform change — needs review by the platform team.** This pull request changes `bowline.yaml`, `policies/allow_all.rego`."),
        "{comment}"
    );
    assert!(
        comment.contains(&format!(
            "Planned with the platform settings (`bowline.yaml`, `policies/`) of `main` at `{}`",
            &first[..7]
        )),
        "{comment}"
    );
    // The proposed environment is not one of the tracked branch's: the app may not use it.
    assert!(comment.contains("leak"), "{comment}");
    assert!(
        !comment.contains("| inventory-worker | leak |"),
        "{comment}"
    );
    assert!(!comment.contains(LEAKED), "{comment}");
    assert_eq!(status.0, "failure", "{status:?}");

    // A branch of the repository by an author without write access: the same.
    let mut reader = w.pull_request("synchronize", &head);
    reader["pull_request"]["user"]["login"] = "mallory".into();
    let (comment, _, requests) = plan_once(&w, &head, "d-reader", reader).await;
    assert!(
        requests.is_empty(),
        "no cluster was contacted: {requests:?}"
    );
    assert!(
        comment.contains("its author @mallory has no write access to acme/shop-config"),
        "{comment}"
    );

    // By a collaborator with write access: live, but still under the branch's settings, so
    // the proposed environment's namespace is never read.
    let (comment, _, requests) =
        plan_once(&w, &head, "d-writer", w.pull_request("synchronize", &head)).await;
    assert!(
        requests.iter().all(|r| !r.contains("payments")),
        "{requests:?}"
    );
    // The object in another namespace is outside the environments' destinations: refused
    // at the file and line that declares it, before any request.
    assert!(
        comment.contains("apps/inventory-worker/manifests/peek.yaml:1"),
        "{comment}"
    );
    assert!(
        comment.contains(
            "v1 ConfigMap payments/payments-config is outside the destinations of environment"
        ),
        "{comment}"
    );
    assert!(!comment.contains(LEAKED), "{comment}");

    // Within its namespace but over an object it does not manage: live, and the object is
    // reported as existing without any of its content.
    const UNMANAGED: &str = "shop-owned-by-someone-else";
    w.kube[0].create(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "platform-settings", "namespace": "shop-staging"},
        "data": {"token": UNMANAGED},
    }));
    std::fs::remove_file(root.join("apps/inventory-worker/manifests/peek.yaml")).expect("rm");
    std::fs::write(
        root.join("apps/inventory-worker/manifests/takeover.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: platform-settings\n  annotations:\n    bowline.dev/policy-exception.namespace: \"the platform said so\"\ndata:\n  token: mine\n",
    )
    .expect("manifest");
    let head = commit_all(&w.git, "refs/pull/7/head", "take over", Some(&head));
    let (comment, _, requests) = plan_once(
        &w,
        &head,
        "d-takeover",
        w.pull_request("synchronize", &head),
    )
    .await;
    assert!(!requests.is_empty(), "compared with the live clusters");
    assert!(
        comment.contains("Compared with the live clusters"),
        "{comment}"
    );
    assert!(
        comment.contains(
            "! v1 ConfigMap shop-staging/platform-settings: exists, not managed by inventory-worker: would be refused"
        ),
        "{comment}"
    );
    assert!(!comment.contains(UNMANAGED), "{comment}");
    // The exception the change declares for itself is listed for review as such.
    assert!(
        comment.contains("**Exceptions to built-in policies** ("),
        "{comment}"
    );
    assert!(comment.contains("exception: namespace:"), "{comment}");
    let logs = captured_logs();
    assert!(!logs.is_empty(), "logs are captured");
    for never in [LEAKED, UNMANAGED] {
        assert!(!logs.contains(never), "{never} in the logs");
        for status in w.github.calls() {
            assert!(!status.raw_body.contains(never), "{never} sent to GitHub");
        }
    }
    assert!(
        requests
            .iter()
            .all(|r| r != "PATCH /api/v1/namespaces/shop-staging/configmaps/platform-settings"),
        "never dry-run over an unmanaged object: {requests:?}"
    );

    // From a fork, a file that nests 200 KB deep: refused at its file, fast, and the plan
    // still reports.
    std::fs::remove_file(root.join("apps/inventory-worker/manifests/takeover.yaml")).expect("rm");
    std::fs::write(
        root.join("apps/inventory-worker/manifests/deep.yaml"),
        "[".repeat(200 * 1024),
    )
    .expect("manifest");
    let head = commit_all(&w.git, "refs/pull/7/head", "nest", Some(&head));
    let mut fork = w.pull_request("synchronize", &head);
    fork["pull_request"]["head"]["repo"]["full_name"] = "stranger/shop-config".into();
    fork["pull_request"]["user"]["login"] = "stranger".into();
    let started = Instant::now();
    let (comment, status, requests) = plan_once(&w, &head, "d-deep", fork).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(requests.is_empty(), "{requests:?}");
    assert!(
        comment.contains("apps/inventory-worker/manifests/deep.yaml:1:"),
        "{comment}"
    );
    assert!(comment.contains("nest deeper than the limit"), "{comment}");
    assert_eq!(status.0, "failure", "{status:?}");
    std::fs::remove_file(root.join("apps/inventory-worker/manifests/deep.yaml")).expect("rm");
    let head = commit_all(&w.git, "refs/pull/7/head", "unnest", Some(&head));

    // Six deliveries in a burst: one plan runs, the others coalesce into one more.
    let planned = |result: &str| w.daemon.metrics.plans.with_label_values(&[result]).get();
    let (ok_before, error_before) = (planned("ok"), planned("error"));
    // The first plan waits out a rate limit (reading the author's permission; statuses go
    // through the outbox), so the burst arrives while it runs.
    w.github.rate_limit_next(
        "/permission",
        RateLimit::TooMany {
            retry_after_secs: 1,
        },
        1,
    );
    let mut answers = Vec::new();
    for i in 0..6 {
        let payload = w.pull_request("synchronize", &head);
        answers.push(
            w.deliver("pull_request", &format!("d-burst-{i}"), &payload)
                .await,
        );
    }
    assert_eq!(answers[0], (202, "planning\n".to_string()));
    assert!(
        answers[1..]
            .iter()
            .all(|a| a.1.starts_with("planning after the plan already running")),
        "{answers:?}"
    );
    assert_eq!(planned("coalesced"), 5);
    eventually("the coalesced plans", Duration::from_secs(30), || {
        planned("ok") + planned("error") - ok_before - error_before >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        planned("ok") + planned("error") - ok_before - error_before,
        2
    );
    assert!(
        w.github
            .calls()
            .iter()
            .all(|c| c.validation_errors.is_empty())
    );
}

/// Points a payload's repository at another one: same secret, another repository.
fn foreign(payload: &mut Value, full_name: &str, id: u64) {
    let (owner, name) = full_name.split_once('/').expect("owner/name");
    payload["repository"]["id"] = id.into();
    payload["repository"]["full_name"] = full_name.into();
    payload["repository"]["name"] = name.into();
    payload["repository"]["owner"]["login"] = owner.into();
}

/// An execution of pull request `PR` whose `approve-production` judgment waits for `maria`.
fn waiting_judgment(store: &SqliteStore) -> String {
    let e = store
        .create_execution(NewExecution {
            app: "inventory-worker".into(),
            environments: vec!["production".into()],
            revision: "0123456789abcdef0123456789abcdef01234567".into(),
            pipeline: "rolling-release".into(),
            trigger: json!({"user": "test", "pullRequest": PR, "approvers": ["maria"]}),
            stages: vec![NewStage {
                name: "approve-production".into(),
                stage_type: "manualJudgment".into(),
                environment: Some("production".into()),
                inputs: json!({"name": "approve-production", "type": "manualJudgment"}),
            }],
        })
        .expect("execution");
    assert!(store.try_start(&e.id).expect("start"));
    store
        .update_stage(
            &e.id,
            "approve-production",
            StageUpdate {
                status: Some(StageStatus::Waiting),
                outputs: Some(json!({"approvers": ["maria"]})),
                ..StageUpdate::default()
            },
        )
        .expect("waiting");
    e.id
}

async fn metrics(w: &World) -> String {
    w.http
        .get(format!("{}/metrics", w.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Deliveries signed with the right secret but naming another repository (an organization
/// hook, a secret shared between repositories) are answered and counted, and nothing else:
/// no plan, no status, no comment, no judgment, no fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_for_another_repository_do_nothing() {
    let (w, first) = start().await;
    assert_eq!(w.daemon.learn_repository_id().await, Some(REPO_ID));
    let store = w.store();
    let execution = waiting_judgment(&store);
    let head = commit_all(&w.git, "refs/pull/7/head", "a change", Some(&first));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let calls = w.github.calls().len();
    let fetches = || w.daemon.metrics.fetches.with_label_values(&["ok"]).get();
    let fetches_before = fetches();

    let mut pr = w.pull_request("opened", &head);
    foreign(&mut pr, "evil/shop-config", 666);
    let mut approve = w.comment("maria", "/bowline approve");
    foreign(&mut approve, "evil/shop-config", 666);
    let mut push = shared("push.branch-created.octokit.json");
    foreign(&mut push, "evil/shop-config", 666);
    push["ref"] = "refs/heads/main".into();
    // The same name under another id: the repository was deleted and re-created by someone
    // else, or the payload lies about its name.
    let mut same_name = w.comment("maria", "/bowline approve");
    same_name["repository"]["id"] = 666.into();
    for (event, delivery, payload) in [
        ("pull_request", "f-pr", &pr),
        ("issue_comment", "f-approve", &approve),
        ("push", "f-push", &push),
        ("issue_comment", "f-same-name", &same_name),
    ] {
        let (code, body) = w.deliver(event, delivery, payload).await;
        assert_eq!(
            (code, body.trim()),
            (200, "not this repository"),
            "{delivery}"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.github.calls().len(), calls, "GitHub was not called");
    assert!(w.plan_statuses(&head).is_empty());
    assert!(w.github.comments(REPO, PR).is_empty());
    assert!(w.github.comments("evil/shop-config", PR).is_empty());
    assert_eq!(fetches(), fetches_before, "no fetch");
    assert!(
        store
            .judgment(&execution, "approve-production")
            .expect("judgment")
            .is_none(),
        "the judgment still waits"
    );
    let text = metrics(&w).await;
    assert!(
        text.contains("bowline_webhook_deliveries_total{result=\"foreign_repository\"} 4"),
        "{text}"
    );
    // A foreign delivery is not recorded: the same id from the config repository is handled.
    let mut ours = w.comment("maria", "/bowline approve");
    ours["repository"]["full_name"] = "ACME/Shop-Config".into();
    let (code, body) = w.deliver("issue_comment", "f-approve", &ours).await;
    assert_eq!((code, body.trim()), (202, "comment received"));
    eventually("the judgment", Duration::from_secs(10), || {
        store
            .judgment(&execution, "approve-production")
            .expect("judgment")
            .is_some()
    })
    .await;

    // A daemon that does not know its repository yet (first start, nothing reconciled, no
    // --github-repo) acts on no delivery naming one.
    let fresh = tempfile::tempdir().expect("state dir");
    let remote = w.work.path().to_str().expect("utf-8").to_string();
    let daemon = daemon_over(fresh.path(), &remote, &w.github);
    assert_eq!(daemon.config_repository(), None);
    let body = serde_json::to_vec(&w.pull_request("opened", &head)).expect("payload");
    let request = axum::http::Request::post("/webhooks/github")
        .header("X-GitHub-Event", "pull_request")
        .header("X-GitHub-Delivery", "f-unknown")
        .header("X-Hub-Signature-256", sign(SECRET, &body))
        .body(axum::body::Body::from(body))
        .expect("request");
    let tokens = ApiTokens::parse("tokens", &format!("ci:{API_TOKEN}\n")).expect("tokens");
    let mut router = server::router(daemon.clone(), tokens);
    let response = tower::Service::call(&mut router, request)
        .await
        .expect("infallible");
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(
        daemon
            .metrics
            .webhooks
            .with_label_values(&["unknown_repository"])
            .get(),
        1
    );
}

/// A delivery id is kept in the store: replayed after a restart on the same state, it is
/// still a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_deliveries_are_refused_after_a_restart() {
    let (mut w, _) = start().await;
    let mut push = shared("push.branch-created.octokit.json");
    retarget(&mut push);
    push["ref"] = "refs/heads/feature".into();
    let (code, body) = w.deliver("push", "r-1", &push).await;
    assert_eq!((code, body.trim()), (200, "not the tracked branch"));
    let (code, body) = w.deliver("push", "r-1", &push).await;
    assert_eq!((code, body.trim()), (200, "duplicate delivery ignored"));

    let remote = w.work.path().to_str().expect("utf-8").to_string();
    w.daemon = daemon_over(w.state.path(), &remote, &w.github);
    w.url = serve(&w.daemon, ServerLimits::default()).await;
    let (code, body) = w.deliver("push", "r-1", &push).await;
    assert_eq!((code, body.trim()), (200, "duplicate delivery ignored"));
    let (code, body) = w.deliver("push", "r-2", &push).await;
    assert_eq!((code, body.trim()), (200, "not the tracked branch"));
}

/// Sends only the request head of a webhook delivery announcing `length` bytes over a raw
/// connection; returns the status line of the answer and when it came.
async fn send_head(url: &str, length: usize) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.strip_prefix("http://").expect("http URL");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: {addr}\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: huge\r\nX-Hub-Signature-256: sha256=00\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.expect("head");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    (
        text.lines().next().unwrap_or_default().to_string(),
        started.elapsed(),
    )
}

/// Sends the request head of a signed webhook delivery over a raw connection, then `body`
/// one byte per `pace`; returns the status line of the answer and when it came.
async fn trickle(url: &str, body: &[u8], pace: Duration) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.strip_prefix("http://").expect("http URL");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: {addr}\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: slow\r\nX-Hub-Signature-256: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        sign(SECRET, body),
        body.len()
    );
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.expect("head");
    let (mut read, mut write) = stream.into_split();
    let body = body.to_vec();
    let sender = tokio::spawn(async move {
        for byte in body {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(pace).await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match tokio::time::timeout(Duration::from_secs(20), read.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let elapsed = started.elapsed();
    sender.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    (text.lines().next().unwrap_or_default().to_string(), elapsed)
}

/// Webhook bodies up to GitHub's 25 MB are read, larger ones refused with 413; a sender that
/// trickles its body is cut off with 408; requests over the concurrency limit get 503; a
/// connection over the connection limit waits for a free slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_bodies_and_requests_are_bounded() {
    let (w, _) = start().await;
    let mut push = shared("push.branch-created.octokit.json");
    retarget(&mut push);
    push["ref"] = "refs/heads/feature".into();
    push["padding"] = "x".repeat(3 * 1024 * 1024).into();
    let (code, body) = w.deliver("push", "big-3", &push).await;
    assert_eq!((code, body.trim()), (200, "not the tracked branch"));
    // 26 MB: refused on its Content-Length, before any of it is read (over a raw connection:
    // a client still sending when the server answers and closes may see a reset instead).
    let (status, _) = send_head(&w.url, 26 * 1024 * 1024).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    // 26 MB without a Content-Length (chunked): refused once 25 MiB were read.
    push["padding"] = "x".repeat(26 * 1024 * 1024).into();
    let body = serde_json::to_vec(&push).expect("payload");
    let signature = sign(SECRET, &body);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(1 << 20).map(|c| Ok(c.to_vec())).collect();
    let request = axum::http::Request::post("/webhooks/github")
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "big-26-chunked")
        .header("X-Hub-Signature-256", signature)
        .body(axum::body::Body::from_stream(futures::stream::iter(chunks)))
        .expect("request");
    let tokens = ApiTokens::parse("tokens", &format!("ci:{API_TOKEN}\n")).expect("tokens");
    let mut router = server::router(w.daemon.clone(), tokens);
    let response = tower::Service::call(&mut router, request)
        .await
        .expect("infallible");
    assert_eq!(response.status().as_u16(), 413);

    // One request at a time, bodies within 1 s.
    let limits = ServerLimits {
        max_concurrent_requests: 1,
        body_timeout: Duration::from_secs(1),
        ..ServerLimits::default()
    };
    let url = serve(&w.daemon, limits).await;
    let slow = {
        let url = url.clone();
        tokio::spawn(async move { trickle(&url, &[b' '; 200], Duration::from_millis(100)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = w
        .http
        .get(format!("{url}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(busy.status().as_u16(), 503, "the one slot is taken");
    let (status, elapsed) = slow.await.expect("slow sender");
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    eprintln!("a sender trickling its body was cut off after {elapsed:?} (limit 1 s)");
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    let free = w
        .http
        .get(format!("{url}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(free.status().as_u16(), 200);

    // One connection at a time: a second waits until the first closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let tokens = ApiTokens::parse("tokens", &format!("ci:{API_TOKEN}\n")).expect("tokens");
    let router = server::router(w.daemon.clone(), tokens);
    tokio::spawn(async move {
        let _ = axum::serve(server::LimitedListener::new(listener, 1), router).await;
    });
    let idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiting = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(waiting.is_err(), "not served while the slot is taken");
    drop(idle);
    let served = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("served once the slot is free");
    assert_eq!(served.status().as_u16(), 200);

    let text = metrics(&w).await;
    assert!(
        text.contains("bowline_webhook_deliveries_total{result=\"too_large\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("bowline_webhook_deliveries_total{result=\"body_timeout\"} 1"),
        "{text}"
    );
}

/// `/bowline plan` on a pull request from a fork: refused for a reader and when GitHub cannot
/// confirm the access; from a collaborator with write access, a plan against the live clusters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_plans_on_request_of_a_write_collaborator() {
    let (w, first) = start().await;
    w.edit(
        "apps/inventory-worker/app.yaml",
        "tag: \"0.31.4\"",
        "tag: \"0.32.0\"",
    );
    let head = commit_all(&w.git, "refs/pull/7/head", "from a fork", Some(&first));
    let mut pull = PullRequestSeed::open(REPO, PR, "stranger", &head);
    pull.head_repo = Some("stranger/shop-config".into());
    w.github.set_pull_request(REPO, pull);
    let replies = || {
        w.github
            .comments(REPO, PR)
            .into_iter()
            .filter(|c| !c.body.starts_with("<!-- bowline:plan -->"))
            .map(|c| c.body)
            .collect::<Vec<_>>()
    };

    let (code, _) = w
        .deliver(
            "issue_comment",
            "p-1",
            &w.comment("mallory", "/bowline plan"),
        )
        .await;
    assert_eq!(code, 202);
    eventually("the refusal", Duration::from_secs(10), || {
        replies().len() == 1
    })
    .await;
    assert_eq!(
        replies()[0],
        "@mallory only collaborators with write access to acme/shop-config may ask for a live plan"
    );

    // GitHub cannot tell: refused, fail closed.
    w.github
        .fail_next(Some("GET"), "/collaborators/maria/permission", 502, 5);
    let (code, _) = w
        .deliver("issue_comment", "p-2", &w.comment("maria", "/bowline plan"))
        .await;
    assert_eq!(code, 202);
    eventually("the second refusal", Duration::from_secs(20), || {
        replies().len() == 2
    })
    .await;
    assert!(
        replies()[1].starts_with("@maria GitHub could not confirm that you have write access"),
        "{:?}",
        replies()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(w.plan_statuses(&head).is_empty(), "no plan was started");

    for k in &w.kube {
        k.clear_requests();
    }
    let (code, _) = w
        .deliver("issue_comment", "p-3", &w.comment("maria", "/bowline plan"))
        .await;
    assert_eq!(code, 202);
    eventually("the live plan", Duration::from_secs(30), || {
        w.plan_statuses(&head)
            .last()
            .is_some_and(|(s, _)| s != "pending")
    })
    .await;
    assert_eq!(
        replies()[2],
        "@maria live plan requested by @maria: planning…"
    );
    let plan = w
        .github
        .comments(REPO, PR)
        .into_iter()
        .find(|c| c.body.starts_with("<!-- bowline:plan -->"))
        .expect("the plan comment")
        .body;
    assert!(plan.contains("Compared with the live clusters"), "{plan}");
    assert!(
        w.kube.iter().any(|k| !k.requests().is_empty()),
        "the live clusters were read"
    );
    assert_eq!(w.github.calls_to("pulls/get").len(), 1);
    assert!(
        w.github
            .calls()
            .iter()
            .all(|c| c.validation_errors.is_empty() && c.response_errors.is_empty())
    );
}

/// A rejected judgment ends the execution REJECTED: the deploy status is a failure saying who
/// rejected it where, the API and `/metrics` show REJECTED, and the event log reads right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_judgment_reads_rejected_everywhere() {
    let (w, first) = start().await;
    w.edit(
        "apps/inventory-worker/app.yaml",
        "tag: \"0.31.4\"",
        "tag: \"0.31.5\"",
    );
    let commit = commit_all(&w.git, "refs/heads/main", "bump worker", Some(&first));
    w.daemon.reconcile_branch().await.expect("reconcile");
    let store = w.store();
    let waiting = || {
        let list = store.executions(&ExecutionFilter::default()).expect("list");
        let e = list.first()?;
        let stages = store.stages(&e.id).expect("stages");
        stages
            .iter()
            .any(|s| s.name == "approve-production" && s.status == StageStatus::Waiting)
            .then(|| e.id.clone())
    };
    eventually(
        "the execution to wait for approval",
        Duration::from_secs(60),
        || waiting().is_some(),
    )
    .await;
    let id = waiting().expect("waiting");
    let (code, body) = w
        .api_post(
            &format!("/api/v1/executions/{id}/judgment"),
            json!({"decision": "reject"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    eventually("the execution to end", Duration::from_secs(30), || {
        store.execution(&id).map(|e| e.status.is_final()).ok() == Some(true)
    })
    .await;
    let user = store
        .judgment(&id, "approve-production")
        .expect("read")
        .expect("judged")
        .user;
    let execution = store.execution(&id).expect("execution");
    assert_eq!(execution.status, ExecutionStatus::Rejected);
    assert_eq!(
        execution.error.as_deref(),
        Some(format!("stage approve-production rejected by {user}").as_str())
    );
    let stages = store.stages(&id).expect("stages");
    let status = |name: &str| stages.iter().find(|s| s.name == name).map(|s| s.status);
    assert_eq!(status("approve-production"), Some(StageStatus::Rejected));
    assert_eq!(status("deploy-production"), Some(StageStatus::Skipped));
    let events = store.events(&id).expect("events");
    assert!(
        events
            .iter()
            .any(|e| e.message == format!("rejected by {user}")),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e.message.contains("rejectd")),
        "{events:?}"
    );

    let expected = format!("rejected by {user} at approve-production");
    eventually(
        "the rejected deploy status",
        Duration::from_secs(10),
        || {
            w.github.statuses(REPO, &commit).iter().any(|s| {
                s.context == deploy_context("inventory-worker")
                    && s.state == "failure"
                    && s.description.as_deref() == Some(expected.as_str())
            })
        },
    )
    .await;

    let (code, list) = w
        .api("/api/v1/executions?status=rejected", Some(API_TOKEN))
        .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["executions"][0]["id"], json!(id), "{list}");
    assert_eq!(list["executions"][0]["status"], json!("REJECTED"), "{list}");
    let text = metrics(&w).await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("bowline_executions{status=\"REJECTED\"} 1")),
        "{text}"
    );

    // Retried through the API: a new execution of the same revision, once at a time.
    let (code, body) = w
        .api_post(&format!("/api/v1/executions/{id}/retry"), json!({}))
        .await;
    assert_eq!(code, 202, "{body}");
    let retry = body["execution"].as_str().expect("new id").to_string();
    assert_ne!(retry, id);
    assert_eq!(store.execution(&retry).expect("retry").revision, commit);
    let (code, body) = w
        .api_post(&format!("/api/v1/executions/{id}/retry"), json!({}))
        .await;
    assert_eq!(code, 409, "a second retry while the first runs: {body}");
    let (code, body) = w
        .api_post(&format!("/api/v1/executions/{retry}/rollback"), json!({}))
        .await;
    assert_eq!(code, 409, "a running execution is not rolled back: {body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("only a finished execution")),
        "{body}"
    );
    let (code, _) = w
        .api_post(&format!("/api/v1/executions/{retry}/cancel"), json!({}))
        .await;
    assert_eq!(code, 202);
}

/// The objects of inventory-worker in a cluster.
fn worker_objects(k: &KubeServer, namespace: &str) -> Vec<String> {
    [
        ("apps/v1", "Deployment", "inventory-worker"),
        ("batch/v1", "CronJob", "inventory-worker-reconcile"),
        ("v1", "ServiceAccount", "inventory-worker"),
        ("v1", "ConfigMap", "inventory-worker"),
    ]
    .iter()
    .filter(|(v, kind, name)| k.get(v, kind, Some(namespace), name).is_some())
    .map(|(_, kind, _)| (*kind).to_string())
    .collect()
}

/// The first execution of inventory-worker waiting at judgment `stage`.
fn waiting_at(store: &SqliteStore, stage: &str) -> Option<String> {
    store
        .executions(&ExecutionFilter::default())
        .expect("list")
        .into_iter()
        .find(|e| {
            store
                .stages(&e.id)
                .expect("stages")
                .iter()
                .any(|s| s.name == stage && s.status == StageStatus::Waiting)
        })
        .map(|e| e.id)
}

/// inventory-worker deployed to staging and (approved) production.
async fn deploy_worker(w: &World, parent: &str) -> String {
    w.edit(
        "apps/inventory-worker/app.yaml",
        "tag: \"0.31.4\"",
        "tag: \"0.31.5\"",
    );
    let commit = commit_all(&w.git, "refs/heads/main", "bump worker", Some(parent));
    w.daemon.reconcile_branch().await.expect("reconcile");
    let store = w.store();
    eventually("the production approval", Duration::from_secs(60), || {
        waiting_at(&store, "approve-production").is_some()
    })
    .await;
    let id = waiting_at(&store, "approve-production").expect("waiting");
    let (code, body) = w
        .api_post(
            &format!("/api/v1/executions/{id}/judgment"),
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    eventually("the deploy", Duration::from_secs(60), || {
        store.execution(&id).map(|e| e.status).ok() == Some(ExecutionStatus::Succeeded)
    })
    .await;
    for (k, ns) in w.kube.iter().zip(["shop-staging", "shop", "shop"]) {
        assert_eq!(
            worker_objects(k, ns),
            ["Deployment", "CronJob", "ServiceAccount", "ConfigMap"]
        );
    }
    commit
}

/// An app deleted from the tracked branch with prune on: the pull request shows the deletes;
/// once merged, a removal execution with its own status deletes its objects, staging at once
/// (its `maxDeletePercent` allows it) and production, where the removal is every object
/// bowline manages, only after `/bowline approve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_app_is_deleted_after_the_guard() {
    let (w, first) = start().await;
    w.edit(
        "bowline.yaml",
        "      namespace: shop-staging\n",
        "      namespace: shop-staging\n      maxDeletePercent: 100\n",
    );
    let deployed = deploy_worker(&w, &first).await;

    // The pull request removing it.
    std::fs::remove_dir_all(w.work.path().join("apps/inventory-worker")).expect("remove");
    let head = commit_all(&w.git, "refs/pull/7/head", "remove worker", Some(&deployed));
    let (comment, status, requests) =
        plan_once(&w, &head, "d-remove", w.pull_request("opened", &head)).await;
    // The plan reuses the connections the deploy made: no new handshake, no new discovery.
    assert!(
        !requests
            .iter()
            .any(|r| r.ends_with(" /version") || r.ends_with(" /apis") || r.ends_with(" /api")),
        "{requests:#?}"
    );
    assert!(!requests.is_empty());
    assert!(
        comment.contains("**Removes `inventory-worker`:**"),
        "{comment}"
    );
    for line in [
        "| inventory-worker | staging | staging-eu-west-1 | 0 | 0 | 4 | 0 |",
        "| inventory-worker | production | prod-eu-west-1 | 0 | 0 | 4 | 0 |",
        "| inventory-worker | production | prod-us-east-1 | 0 | 0 | 4 | 0 |",
    ] {
        assert!(comment.contains(line), "{line}\n{comment}");
    }
    assert!(
        comment.contains("- apiVersion: apps/v1")
            || comment.contains("Deployment shop/inventory-worker"),
        "{comment}"
    );
    assert_eq!(status.0, "success", "{status:?}");
    // A plan deletes nothing.
    assert_eq!(worker_objects(&w.kube[0], "shop-staging").len(), 4);

    // Merged.
    let merged = commit_all(
        &w.git,
        "refs/heads/main",
        "remove worker (#7)",
        Some(&deployed),
    );
    let outcome = w.daemon.reconcile_branch().await.expect("reconcile");
    let Reconciled::Started { executions, .. } = outcome else {
        panic!("no removal started: {outcome:?}");
    };
    assert_eq!(executions.len(), 1, "{executions:?}");
    let id = executions[0].clone();
    let store = w.store();
    eventually("staging removed", Duration::from_secs(30), || {
        worker_objects(&w.kube[0], "shop-staging").is_empty()
    })
    .await;
    // The namespace existed before bowline: it stays.
    assert!(
        w.kube[0]
            .get("v1", "Namespace", None, "shop-staging")
            .is_some()
    );
    eventually("the production guard", Duration::from_secs(30), || {
        waiting_at(&store, "approve-removal-production").as_deref() == Some(id.as_str())
    })
    .await;
    for k in &w.kube[1..] {
        assert_eq!(worker_objects(k, "shop").len(), 4, "held by the guard");
    }
    let context = "bowline/remove/inventory-worker";
    eventually(
        "the pending removal status",
        Duration::from_secs(10),
        || {
            w.github.statuses(REPO, &merged).iter().any(|s| {
                s.context == context
                    && s.state == "pending"
                    && s.description.as_deref().is_some_and(|d| {
                        d.starts_with("approve-removal-production: awaiting judgment")
                    })
            })
        },
    )
    .await;
    let stages = store.stages(&id).expect("stages");
    let instructions = stages
        .iter()
        .find(|s| s.name == "approve-removal-production")
        .and_then(|s| s.outputs["instructions"].as_str().map(str::to_string))
        .expect("instructions");
    assert!(
        instructions.contains(
            "deletes 8 of the 8 objects bowline manages in production (100%), more than the 50%"
        ),
        "{instructions}"
    );

    let (code, body) = w
        .api_post(
            &format!("/api/v1/executions/{id}/judgment"),
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    eventually("the removal", Duration::from_secs(30), || {
        store.execution(&id).map(|e| e.status).ok() == Some(ExecutionStatus::Succeeded)
    })
    .await;
    for k in &w.kube[1..] {
        assert!(worker_objects(k, "shop").is_empty());
    }
    let execution = store.execution(&id).expect("execution");
    assert_eq!(execution.pipeline, "removal");
    assert_eq!(execution.revision, merged);
    eventually("the removal status", Duration::from_secs(30), || {
        w.github.statuses(REPO, &merged).iter().any(|s| {
            s.context == context
                && s.state == "success"
                && s.description.as_deref() == Some("removed from its clusters")
        })
    })
    .await;
    // Production deleted wave 2 before wave 1.
    let events: Vec<String> = store
        .events(&id)
        .expect("events")
        .into_iter()
        .map(|e| e.message)
        .filter(|m| m.contains("pruned") && m.contains("Deployment"))
        .collect();
    let us = events.iter().position(|m| m.starts_with("prod-us-east-1"));
    let eu = events.iter().position(|m| m.starts_with("prod-eu-west-1"));
    assert!(us.is_some() && us < eu, "{events:?}");
}

/// With prune off, a removed app's objects stay, its waiting execution is canceled, and the
/// removal status says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_app_without_prune_is_left_running() {
    let (w, first) = start().await;
    w.edit(
        "apps/inventory-worker/app.yaml",
        "  pipeline:\n",
        "  syncPolicy:\n    prune: false\n  pipeline:\n",
    );
    let commit = commit_all(
        &w.git,
        "refs/heads/main",
        "worker without prune",
        Some(&first),
    );
    w.daemon.reconcile_branch().await.expect("reconcile");
    let store = w.store();
    eventually("the production approval", Duration::from_secs(60), || {
        waiting_at(&store, "approve-production").is_some()
    })
    .await;
    let waiting = waiting_at(&store, "approve-production").expect("waiting");
    assert_eq!(worker_objects(&w.kube[0], "shop-staging").len(), 4);

    std::fs::remove_dir_all(w.work.path().join("apps/inventory-worker")).expect("remove");
    let removed = commit_all(&w.git, "refs/heads/main", "remove worker", Some(&commit));
    let outcome = w.daemon.reconcile_branch().await.expect("reconcile");
    assert!(
        matches!(&outcome, Reconciled::Started { executions, .. } if executions.is_empty()),
        "{outcome:?}"
    );
    eventually("the canceled execution", Duration::from_secs(30), || {
        store.execution(&waiting).map(|e| e.status).ok() == Some(ExecutionStatus::Canceled)
    })
    .await;
    assert_eq!(worker_objects(&w.kube[0], "shop-staging").len(), 4);
    let statuses = w.github.statuses(REPO, &removed);
    assert!(
        statuses
            .iter()
            .any(|s| s.context == "bowline/remove/inventory-worker"
                && s.state == "success"
                && s.description.as_deref()
                    == Some(
                        "removed from the repository; its objects are left running (prune is off)"
                    )),
        "{statuses:?}"
    );
    // Nothing is started for it after a restart either.
    let Reconciled::Unchanged = w.daemon.reconcile_branch().await.expect("reconcile") else {
        panic!("reconciled again");
    };
}

/// The value of an unlabelled metric (or a labelled one, `name{labels}`) in `/metrics` text.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// GitHub down for 60 s while a pull request is planned and a deploy runs to its end: nothing
/// is lost. Once GitHub is back, the sticky comment, the final plan status and the final
/// deploy status arrive, and none of the deploy's superseded progress statuses is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_and_comments_survive_a_github_outage() {
    let (w, first) = start().await;
    const OUTAGE: Duration = Duration::from_secs(60);
    let began = Instant::now();
    w.github.outage(Some(502));

    // A pull request planned during the outage.
    std::fs::write(w.work.path().join("NOTES.md"), "notes\n").expect("write");
    let head = commit_all(&w.git, "refs/pull/7/head", "notes", Some(&first));
    let (code, _) = w
        .deliver("pull_request", "o-open", &w.pull_request("opened", &head))
        .await;
    assert_eq!(code, 202);
    let store = w.store();
    let plan_key = OutboxKey {
        kind: OutboxKind::Status,
        repo: REPO.into(),
        subject: head.clone(),
        name: "bowline/plan".into(),
    };
    eventually("the plan recorded", Duration::from_secs(30), || {
        store
            .outbox_entry(&plan_key)
            .expect("outbox")
            .is_some_and(|e| e.payload.contains("\"success\""))
    })
    .await;

    // A deploy that runs to its end during the outage.
    let deployed = deploy_worker(&w, &first).await;
    assert!(began.elapsed() < OUTAGE, "the deploy took the whole outage");
    let deploy_statuses = || -> Vec<(String, String)> {
        w.github
            .statuses(REPO, &deployed)
            .into_iter()
            .filter(|s| s.context == deploy_context("inventory-worker"))
            .map(|s| (s.state, s.description.unwrap_or_default()))
            .collect()
    };
    assert!(deploy_statuses().is_empty());
    assert!(w.github.comments(REPO, PR).is_empty());
    let text = metrics(&w).await;
    assert!(
        metric(&text, "bowline_outbox_depth").is_some_and(|n| n >= 2.0),
        "{text}"
    );
    assert!(metric(&text, "bowline_outbox_oldest_seconds").is_some_and(|s| s > 0.0));
    assert!(
        metric(
            &text,
            "bowline_github_failures_total{kind=\"server_error\"}"
        )
        .is_some_and(|n| n > 0.0),
        "{text}"
    );

    tokio::time::sleep(OUTAGE.saturating_sub(began.elapsed())).await;
    w.github.outage(None);
    let back = Instant::now();
    eventually("the deploy status", Duration::from_secs(30), || {
        !deploy_statuses().is_empty()
    })
    .await;
    eventually("the plan", Duration::from_secs(30), || {
        w.github.comments(REPO, PR).len() == 1
            && w.plan_statuses(&head)
                .last()
                .is_some_and(|s| s.0 == "success")
    })
    .await;
    let caught_up = back.elapsed();
    // Only the newest desired state of each key is sent: the deploy's progress statuses were
    // superseded while GitHub was down.
    assert_eq!(
        deploy_statuses(),
        [("success".to_string(), "deployed".to_string())]
    );
    assert_eq!(
        w.plan_statuses(&head).len(),
        1,
        "{:?}",
        w.plan_statuses(&head)
    );
    let comment = &w.github.comments(REPO, PR)[0].body;
    assert!(comment.starts_with("<!-- bowline:plan -->"), "{comment}");
    eventually("an empty outbox", Duration::from_secs(10), || {
        store.outbox_stats().expect("stats").pending == 0
    })
    .await;
    println!("outbox caught up {caught_up:?} after a {OUTAGE:?} outage");
}

/// Three 502 answers then two primary rate limits while a pull request is planned: the rate
/// limits do not use up the retries of the server errors, and the plan is not abandoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_then_rate_limits_do_not_abandon_a_plan() {
    let (w, first) = start().await;
    std::fs::write(w.work.path().join("NOTES.md"), "notes\n").expect("write");
    let head = commit_all(&w.git, "refs/pull/7/head", "notes", Some(&first));
    let errors_before = w.daemon.metrics.plans.with_label_values(&["error"]).get();
    w.github.fail_next(None, "/repos/acme/shop-config/", 502, 3);
    w.github.rate_limit_next(
        "/repos/acme/shop-config/",
        RateLimit::Primary { reset_in_secs: 1 },
        2,
    );
    let started = Instant::now();
    let (comment, status, _) =
        plan_once(&w, &head, "b-open", w.pull_request("opened", &head)).await;
    let took = started.elapsed();
    assert!(comment.starts_with("<!-- bowline:plan -->"), "{comment}");
    assert_eq!(status.0, "success", "{status:?}");
    assert_eq!(w.github.comments(REPO, PR).len(), 1, "one sticky comment");
    assert_eq!(
        w.daemon.metrics.plans.with_label_values(&["error"]).get(),
        errors_before
    );
    let answered: Vec<u16> = w.github.calls().iter().map(|c| c.status).collect();
    assert_eq!(
        answered.iter().filter(|s| **s == 502).count(),
        3,
        "{answered:?}"
    );
    assert_eq!(
        answered.iter().filter(|s| **s == 403).count(),
        2,
        "{answered:?}"
    );
    let failed = |kind: &str| {
        w.daemon
            .metrics
            .github_failures
            .with_label_values(&[kind])
            .get()
    };
    assert_eq!(failed("server_error"), 3);
    assert_eq!(failed("rate_limited"), 2);
    println!("plan delivered {took:?} after 3×502 and 2 rate limits");
}

/// A status and a comment recorded, and not delivered, before a restart are delivered by the
/// next daemon as soon as it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_entries_are_delivered_after_a_restart() {
    let work = tempfile::tempdir().expect("work dir");
    prepare_repo(work.path());
    let git = Repository::init(work.path()).expect("init");
    git.set_head("refs/heads/main").expect("head");
    let sha = commit_all(&git, "refs/heads/main", "initial", None);
    let state = tempfile::tempdir().expect("state dir");
    let github = GitHubServer::start();

    // What the daemon before the restart recorded, still pending.
    let store = SqliteStore::open(&state.path().join("bowline.db")).expect("store");
    let status = OutboxKey {
        kind: OutboxKind::Status,
        repo: REPO.into(),
        subject: sha.clone(),
        name: deploy_context("inventory-worker"),
    };
    store
        .record_outbox(
            &status,
            r#"{"type":"status","state":"pending","description":"deploy-staging: running","targetUrl":null}"#,
        )
        .expect("record");
    store
        .record_outbox(
            &status,
            r#"{"type":"status","state":"success","description":"deployed","targetUrl":null}"#,
        )
        .expect("record");
    let comment = OutboxKey {
        kind: OutboxKind::Comment,
        repo: REPO.into(),
        subject: PR.to_string(),
        name: "<!-- bowline:plan -->".into(),
    };
    store
        .record_outbox(&comment, r#"{"type":"comment","body":"the plan"}"#)
        .expect("record");

    let remote = work.path().to_str().expect("utf-8").to_string();
    let _daemon = daemon_over(state.path(), &remote, &github);
    eventually("the deliveries", Duration::from_secs(10), || {
        !github.statuses(REPO, &sha).is_empty() && !github.comments(REPO, PR).is_empty()
    })
    .await;
    let statuses: Vec<(String, Option<String>)> = github
        .statuses(REPO, &sha)
        .into_iter()
        .map(|s| (s.state, s.description))
        .collect();
    assert_eq!(statuses, [("success".into(), Some("deployed".into()))]);
    let comments = github.comments(REPO, PR);
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].body, "<!-- bowline:plan -->\nthe plan");
    eventually("delivered", Duration::from_secs(5), || {
        [&status, &comment].iter().all(|k| {
            store
                .outbox_entry(k)
                .expect("outbox")
                .is_some_and(|e| e.state == OutboxState::Delivered)
        })
    })
    .await;
}

/// Shutdown while the only execution waits for a judgment returns at once (the wait is kept in
/// the store), and a new daemon over the same state takes the execution up where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_judgment_and_the_execution_resumes() {
    let (mut w, first) = start().await;
    w.edit(
        "apps/inventory-worker/app.yaml",
        "tag: \"0.31.4\"",
        "tag: \"0.31.5\"",
    );
    commit_all(&w.git, "refs/heads/main", "bump worker", Some(&first));
    w.daemon.reconcile_branch().await.expect("reconcile");
    let store = w.store();
    eventually(
        "the execution to wait for approval",
        Duration::from_secs(60),
        || waiting_at(&store, "approve-production").is_some(),
    )
    .await;
    let id = waiting_at(&store, "approve-production").expect("waiting");
    assert_eq!(w.daemon.running_tasks(), 1);

    let started = Instant::now();
    let stopped = w.daemon.shutdown(Duration::from_secs(20)).await;
    let took = started.elapsed();
    eprintln!("shutdown with a waiting judgment took {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(stopped, 1);
    assert_eq!(w.daemon.running_tasks(), 0);
    // Still running in the store, waiting, and no longer owned: the next start resumes it.
    let execution = store.execution(&id).expect("execution");
    assert_eq!(execution.status, ExecutionStatus::Running);
    assert_eq!(execution.owner, None);
    assert_eq!(waiting_at(&store, "approve-production"), Some(id.clone()));
    // A stopped daemon takes no more work.
    assert!(w.daemon.reconcile_branch().await.is_err());

    let remote = w.work.path().to_str().expect("utf-8").to_string();
    w.daemon = daemon_over(w.state.path(), &remote, &w.github);
    assert_eq!(w.daemon.resume().expect("resume"), 1);
    w.url = serve(&w.daemon, ServerLimits::default()).await;
    let (code, body) = w
        .api_post(
            &format!("/api/v1/executions/{id}/judgment"),
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    eventually(
        "the judgment to be taken up",
        Duration::from_secs(30),
        || {
            store
                .stages(&id)
                .expect("stages")
                .iter()
                .any(|s| s.name == "approve-production" && s.status == StageStatus::Succeeded)
        },
    )
    .await;
    let execution = store.execution(&id).expect("execution");
    assert!(
        execution.owner.is_some() || execution.status.is_final(),
        "{execution:?}"
    );
}

/// Plans of two pull requests do not wait for each other: the second one ends while the
/// first still waits out a rate limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pull_requests_plan_concurrently() {
    let (w, first) = start().await;
    w.edit(
        "apps/inventory-worker/app.yaml",
        "tag: \"0.31.4\"",
        "tag: \"0.31.6\"",
    );
    let slow = commit_all(&w.git, "refs/pull/7/head", "slow", Some(&first));
    w.edit(
        "apps/inventory-worker/app.yaml",
        "tag: \"0.31.6\"",
        "tag: \"0.31.7\"",
    );
    let fast = commit_all(&w.git, "refs/pull/8/head", "fast", Some(&first));
    // The first plan reads its author's permission through rate limits for a few seconds.
    w.github.rate_limit_next(
        &format!("/collaborators/{AUTHOR}/permission"),
        RateLimit::TooMany {
            retry_after_secs: 2,
        },
        3,
    );
    let (code, _) = w
        .deliver("pull_request", "d-slow", &w.pull_request("opened", &slow))
        .await;
    assert_eq!(code, 202);
    let mut other = w.pull_request("opened", &fast);
    other["number"] = 8.into();
    other["pull_request"]["number"] = 8.into();
    other["pull_request"]["user"]["login"] = "maria".into();
    let (code, body) = w.deliver("pull_request", "d-fast", &other).await;
    assert_eq!((code, body.as_str()), (202, "planning\n"));
    let done = |sha: &str| {
        w.plan_statuses(sha)
            .last()
            .is_some_and(|(state, _)| state != "pending")
    };
    eventually("the second plan", Duration::from_secs(30), || done(&fast)).await;
    assert!(!done(&slow), "{:?}", w.plan_statuses(&slow));
    eventually("the first plan", Duration::from_secs(30), || done(&slow)).await;
}

/// After a restart the daemon checks its last good commit once; a pull request that changes
/// one app then validates, renders and evaluates that app only, and the other apps' results
/// are the ones kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_checks_only_the_app_it_changes() {
    let (w, first) = start().await;
    let apps = std::fs::read_dir(w.work.path().join("apps"))
        .expect("apps")
        .count() as f64;
    let checked = |text: &str, outcome: &str| {
        metric(
            text,
            &format!("bowline_checked_apps_total{{outcome=\"{outcome}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let started = std::time::Instant::now();
    loop {
        let text = metrics(&w).await;
        if checked(&text, "computed") >= apps {
            assert_eq!(checked(&text, "computed"), apps, "{text}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the last good commit was not checked after the restart: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    w.edit(
        "apps/inventory-worker/app.yaml",
        "tag: \"0.31.4\"",
        "tag: \"0.32.0\"",
    );
    let head = commit_all(&w.git, "refs/pull/7/head", "bump worker", Some(&first));
    let (comment, (state, description), _) =
        plan_once(&w, &head, "d-one-app", w.pull_request("opened", &head)).await;
    assert_eq!(state, "success", "{description}\n{comment}");
    assert!(comment.contains("inventory-worker"), "{comment}");
    let text = metrics(&w).await;
    assert_eq!(checked(&text, "computed"), apps + 1.0, "{text}");
    assert_eq!(checked(&text, "kept"), apps - 1.0, "{text}");
}

/// One commit removes inventory-worker (prune on) and moves its ConfigMap to checkout-api: the
/// removal deletes the worker's other objects but leaves the ConfigMap, which checkout-api's
/// deploy takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_moved_out_of_a_removed_app_is_taken_over_not_deleted() {
    let (w, first) = start().await;
    w.edit(
        "bowline.yaml",
        "      namespace: shop-staging\n",
        "      namespace: shop-staging\n      maxDeletePercent: 100\n",
    );
    let deployed = deploy_worker(&w, &first).await;
    let staging = &w.kube[0];
    // checkout-api renders a ServiceMonitor.
    let crd: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crds/servicemonitor.json"),
        )
        .expect("CRD fixture"),
    )
    .expect("CRD fixture is JSON");
    staging.create(crd);
    staging.clear_requests();

    std::fs::remove_dir_all(w.work.path().join("apps/inventory-worker")).expect("remove");
    std::fs::write(
        w.work.path().join("apps/checkout-api/manifests/worker-config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: inventory-worker\ndata:\n  owner: checkout\n",
    )
    .expect("moved manifest");
    w.edit(
        "apps/checkout-api/app.yaml",
        "    automated: false\n",
        "    automated: true\n",
    );
    commit_all(
        &w.git,
        "refs/heads/main",
        "checkout-api takes over the worker's config",
        Some(&deployed),
    );
    let outcome = w.daemon.reconcile_branch().await.expect("reconcile");
    let Reconciled::Started { executions, .. } = outcome else {
        panic!("nothing started: {outcome:?}");
    };
    assert_eq!(
        executions.len(),
        2,
        "removal and checkout-api: {executions:?}"
    );
    let store = w.store();
    eventually(
        "staging: the worker removed, its ConfigMap checkout-api's",
        Duration::from_secs(60),
        || {
            let deployment = staging.get(
                "apps/v1",
                "Deployment",
                Some("shop-staging"),
                "inventory-worker",
            );
            let owner = staging
                .get("v1", "ConfigMap", Some("shop-staging"), "inventory-worker")
                .and_then(|c| {
                    c["metadata"]["labels"]["bowline.dev/app"]
                        .as_str()
                        .map(str::to_string)
                });
            deployment.is_none() && owner.as_deref() == Some("checkout-api")
        },
    )
    .await;
    let removal = executions
        .iter()
        .find(|id| {
            store
                .execution(id)
                .map(|e| e.pipeline == "removal")
                .unwrap_or(false)
        })
        .expect("the removal execution");
    eventually("the staging removal stage", Duration::from_secs(30), || {
        store
            .stages(removal)
            .expect("stages")
            .iter()
            .any(|s| s.name == "remove-staging" && s.status == StageStatus::Succeeded)
    })
    .await;
    let config = staging
        .get("v1", "ConfigMap", Some("shop-staging"), "inventory-worker")
        .expect("the ConfigMap stays");
    assert_eq!(config["data"]["owner"], "checkout");
    assert!(
        !staging
            .requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.path.ends_with("/configmaps/inventory-worker")),
        "the moved ConfigMap was deleted: {:?}",
        staging
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    );
    assert!(worker_objects(staging, "shop-staging") == ["ConfigMap"]);
}

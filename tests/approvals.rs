//! Approvals that mean something, end to end against the GitHub API test server (which checks
//! every request against the OpenAPI description): `@org/team` approvers resolved through the
//! team membership API (failing closed), no self-approval by a pull request's author unless
//! the app allows it, scoped API tokens on every endpoint class, and failed API
//! authentications counted and throttled.
//!
//! Executions waiting for a judgment are written to the store directly (as the engine leaves
//! them), so each rule is exercised without clusters; ChatOps comments are derived from
//! GitHub's published `issue_comment` payload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bowline::cluster::ConnectOptions;
use bowline::daemon::{ChatOpsOutcome, Daemon, DaemonConfig};
use bowline::forge::client::RetryPolicy;
use bowline::forge::{Event, GitHub, RepoRef, parse_event};
use bowline::pipeline::Services;
use bowline::server::{self, ApiTokens, AuthLimits, ServerLimits};
use bowline::source::git::{GitAuth, GitSource};
use bowline::store::{
    ExecutionStatus, NewExecution, NewStage, SqliteStore, StageStatus, StageUpdate, Store,
};
use github_api_test_server::TestServer as GitHubServer;
use serde_json::{Value, json};

const REPO: &str = "acme/shop-config";
/// Opens the pull requests; a member of `@acme/sre` with write access.
const AUTHOR: &str = "octo-dev";
const STAGE: &str = "approve-production";

struct World {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    github: GitHubServer,
    daemon: Arc<Daemon>,
    store: Arc<dyn Store>,
}

fn world() -> World {
    let remote = tempfile::tempdir().expect("remote");
    let state = tempfile::tempdir().expect("state");
    let git = git2::Repository::init(remote.path()).expect("init");
    std::fs::write(remote.path().join("README.md"), "config\n").expect("write");
    let mut index = git.index().expect("index");
    index
        .add_path(std::path::Path::new("README.md"))
        .expect("add");
    let tree = git
        .find_tree(index.write_tree().expect("tree"))
        .expect("tree");
    let sig = git2::Signature::now("Test", "test@example.com").expect("sig");
    git.commit(Some("refs/heads/main"), &sig, &sig, "initial", &tree, &[])
        .expect("commit");

    let github = GitHubServer::start();
    for user in ["maria", "bob", "carol", "dana", AUTHOR] {
        github.set_permission(user, "write");
    }
    github.set_permission("erin", "read");
    for user in ["maria", "carol", "erin", AUTHOR] {
        github.set_team_membership("acme", "sre", user, "member", "active");
    }
    github.set_team_membership("acme", "sre", "bob", "member", "pending");
    let client = GitHub::with_retry(
        &github.url(),
        "ghs_test_token".into(),
        RetryPolicy {
            max_retries: 1,
            min_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(10),
            ..RetryPolicy::default()
        },
    )
    .expect("client");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&state.path().join("bowline.db")).expect("store"));
    let source = GitSource::open(
        remote.path().to_str().expect("utf-8"),
        "main",
        &state.path().join("mirror"),
        GitAuth::default(),
    )
    .expect("source");
    let daemon = Daemon::new(
        DaemonConfig {
            github_repo: Some(RepoRef::new("acme", "shop-config")),
            drift_interval: None,
            ..DaemonConfig::default()
        },
        source,
        store.clone(),
        Services::new(ConnectOptions::default()),
        Some(client),
        None,
    )
    .expect("daemon");
    World {
        _dirs: (remote, state),
        github,
        daemon,
        store,
    }
}

/// A running execution of `app` delivering pull request `pr`, waiting at [`STAGE`] for one of
/// `approvers`; `trigger` adds to what it records.
fn waiting(
    store: &Arc<dyn Store>,
    app: &str,
    pr: u64,
    approvers: &[&str],
    trigger: Value,
) -> String {
    let mut t = json!({"user": "push", "pullRequest": pr, "approvers": []});
    if let (Some(t), Some(extra)) = (t.as_object_mut(), trigger.as_object()) {
        t.extend(extra.clone());
    }
    let e = store
        .create_execution(NewExecution {
            app: app.into(),
            environments: vec!["production".into()],
            revision: format!("rev-{app}-{pr}"),
            pipeline: "release".into(),
            trigger: t,
            stages: vec![NewStage {
                name: STAGE.into(),
                stage_type: "manualJudgment".into(),
                environment: Some("production".into()),
                inputs: json!({"name": STAGE, "type": "manualJudgment"}),
            }],
        })
        .expect("create");
    assert!(store.try_start(&e.id).expect("start"), "{app} started");
    store
        .update_stage(
            &e.id,
            STAGE,
            StageUpdate {
                status: Some(StageStatus::Waiting),
                outputs: Some(json!({"waitingFor": "judgment", "approvers": approvers})),
                ..StageUpdate::default()
            },
        )
        .expect("wait");
    e.id
}

/// `/bowline …` by `author` on pull request `pr`, opened by `pr_author`.
async fn comment(w: &World, pr: u64, pr_author: &str, author: &str, body: &str) -> ChatOpsOutcome {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/github/webhooks/issue_comment.created.on-pr.octocrab-pr811.json");
    let mut p: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("payload")).expect("json");
    p["repository"]["full_name"] = REPO.into();
    p["repository"]["name"] = "shop-config".into();
    p["repository"]["owner"]["login"] = "acme".into();
    p["issue"]["number"] = pr.into();
    p["issue"]["user"]["login"] = pr_author.into();
    p["comment"]["body"] = body.into();
    p["comment"]["user"]["login"] = author.into();
    p["sender"]["login"] = author.into();
    let Event::IssueComment(c) =
        parse_event("issue_comment", &serde_json::to_vec(&p).expect("bytes")).expect("event")
    else {
        panic!("not a comment")
    };
    w.daemon.handle_comment(&c).await.expect("handled")
}

fn judged_by(store: &Arc<dyn Store>, id: &str) -> Option<String> {
    store.judgment(id, STAGE).expect("judgment").map(|j| j.user)
}

fn last_reply(w: &World, pr: u64) -> String {
    w.github
        .comments(REPO, pr)
        .last()
        .map(|c| c.body.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_approvers_fail_closed_and_authors_do_not_approve_their_own_change() {
    let w = world();
    let author = json!({"pullRequestAuthor": AUTHOR});
    let worker = waiting(
        &w.store,
        "inventory-worker",
        7,
        &["@acme/sre"],
        author.clone(),
    );
    let checkout = waiting(&w.store, "checkout-api", 7, &["@ACME/SRE"], author.clone());

    // Not a member (a pending invitation does not count), even with write access.
    let refused = comment(&w, 7, AUTHOR, "bob", "/bowline approve").await;
    assert!(
        matches!(&refused, ChatOpsOutcome::Refused(m) if m.starts_with("you are not allowed")),
        "{refused:?}"
    );
    assert!(last_reply(&w, 7).starts_with("@bob you are not allowed"));
    // A member without write access.
    let refused = comment(&w, 7, AUTHOR, "erin", "/bowline approve").await;
    assert!(matches!(refused, ChatOpsOutcome::Refused(_)), "{refused:?}");

    // GitHub fails on the membership: refused, and the reply says why.
    w.github
        .fail_next(Some("GET"), "/memberships/carol", 500, 100);
    let refused = comment(&w, 7, AUTHOR, "carol", "/bowline approve").await;
    let reply = last_reply(&w, 7).to_lowercase();
    assert!(
        reply.starts_with("@carol github could not confirm your membership of @acme/sre"),
        "{reply}"
    );
    assert!(matches!(refused, ChatOpsOutcome::Refused(_)));
    assert_eq!(judged_by(&w.store, &worker), None);

    // The pull request's author, a team member with write access, cannot approve it.
    let refused = comment(&w, 7, AUTHOR, "Octo-Dev", "/bowline approve").await;
    assert_eq!(
        refused,
        ChatOpsOutcome::Refused(
            "you authored this change; another approver must approve it".into()
        )
    );
    assert_eq!(
        last_reply(&w, 7),
        "@Octo-Dev you authored this change; another approver must approve it"
    );
    assert_eq!(judged_by(&w.store, &worker), None);
    assert_eq!(judged_by(&w.store, &checkout), None);

    // A team member approves both executions; the second check is answered from the cache.
    let before = w
        .github
        .calls_to("teams/get-membership-for-user-in-org")
        .len();
    let done = comment(&w, 7, AUTHOR, "maria", "/bowline approve").await;
    assert!(
        matches!(&done, ChatOpsOutcome::Done(m) if m.starts_with("approved")),
        "{done:?}"
    );
    assert_eq!(judged_by(&w.store, &worker).as_deref(), Some("maria"));
    assert_eq!(judged_by(&w.store, &checkout).as_deref(), Some("maria"));
    let membership_calls = w.github.calls_to("teams/get-membership-for-user-in-org");
    assert_eq!(
        membership_calls.len() - before,
        1,
        "cached per org/team/user"
    );
    assert_eq!(
        membership_calls.last().map(|c| c.path.as_str()),
        Some("/orgs/acme/teams/sre/memberships/maria")
    );

    // With allowSelfApproval, the author may approve their own change.
    let own = waiting(
        &w.store,
        "storefront-web",
        8,
        &["@acme/sre"],
        json!({"pullRequestAuthor": AUTHOR, "allowSelfApproval": true}),
    );
    let done = comment(&w, 8, AUTHOR, AUTHOR, "/bowline approve").await;
    assert!(matches!(done, ChatOpsOutcome::Done(_)), "{done:?}");
    assert_eq!(judged_by(&w.store, &own).as_deref(), Some(AUTHOR));

    // No author recorded (a merge seen only in the commit message): the pull request's
    // author, from the comment's issue, is refused all the same. Plain logins match
    // case-insensitively; the author may still reject.
    let unrecorded = waiting(&w.store, "payments", 9, &["Dana", AUTHOR], json!({}));
    let refused = comment(&w, 9, AUTHOR, AUTHOR, "/bowline approve").await;
    assert!(
        matches!(&refused, ChatOpsOutcome::Refused(m) if m.starts_with("you authored this change")),
        "{refused:?}"
    );
    let done = comment(&w, 9, AUTHOR, "DANA", "/bowline approve").await;
    assert!(matches!(done, ChatOpsOutcome::Done(_)), "{done:?}");
    assert_eq!(judged_by(&w.store, &unrecorded).as_deref(), Some("DANA"));
    let rejected = waiting(
        &w.store,
        "payments-eu",
        10,
        &[AUTHOR],
        json!({"pullRequestAuthor": AUTHOR}),
    );
    let done = comment(&w, 10, AUTHOR, AUTHOR, "/bowline reject").await;
    assert!(matches!(done, ChatOpsOutcome::Done(_)), "{done:?}");
    assert!(judged_by(&w.store, &rejected).is_some());

    assert!(
        w.github
            .calls()
            .iter()
            .all(|c| c.validation_errors.is_empty()),
        "every GitHub request matches the description"
    );
}

const OPS: &str = "ops-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const TEAM: &str = "team-token-0123456789";
const PEEK: &str = "peek-token-0123456789";
const LEGACY: &str = "legacy-token-0123456789";
const OWN: &str = "author-token-0123456789";

async fn serve(w: &World, limits: AuthLimits) -> String {
    let tokens = ApiTokens::parse(
        "tokens",
        &format!(
            "ops:{OPS}:operate\nviewer:{VIEWER}:read\nteam:{TEAM}:operate:checkout-api\n\
             peek:{PEEK}:read:checkout-api\nlegacy:{LEGACY}\n{AUTHOR}:{OWN}:operate\n"
        ),
    )
    .expect("tokens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let limits = ServerLimits {
        auth: limits,
        ..ServerLimits::default()
    };
    let app = server::router_with(w.daemon.clone(), tokens, limits)
        .into_make_service_with_connect_info::<server::ClientAddr>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

async fn call(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let http = reqwest::Client::new();
    let mut request = match method {
        "GET" => http.get(format!("{url}{path}")),
        _ => http.post(format!("{url}{path}")).json(&body),
    };
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_scopes_on_every_endpoint_class() {
    let w = world();
    let url = serve(&w, AuthLimits::default()).await;
    // One finished execution per app: judgments and cancellations that pass authorization
    // answer 409 (nothing to judge or cancel), those refused answer 403.
    let finished = |app: &str| {
        let id = waiting(&w.store, app, 1, &[], json!({}));
        w.store
            .update_stage(
                &id,
                STAGE,
                StageUpdate {
                    status: Some(StageStatus::Succeeded),
                    ..StageUpdate::default()
                },
            )
            .expect("stage");
        w.store
            .finish_execution(&id, ExecutionStatus::Succeeded, None)
            .expect("finish");
        id
    };
    let worker = finished("inventory-worker");
    let checkout = finished("checkout-api");

    // (token, endpoint, expected status)
    let judgment = json!({"decision": "approve"});
    let classes: Vec<(&str, &str, String)> = vec![
        ("apps", "GET", "/api/v1/apps".into()),
        ("list", "GET", "/api/v1/executions".into()),
        (
            "list other app",
            "GET",
            "/api/v1/executions?app=inventory-worker".into(),
        ),
        (
            "show other app",
            "GET",
            format!("/api/v1/executions/{worker}"),
        ),
        (
            "show own app",
            "GET",
            format!("/api/v1/executions/{checkout}"),
        ),
        (
            "judge other app",
            "POST",
            format!("/api/v1/executions/{worker}/judgment"),
        ),
        (
            "judge own app",
            "POST",
            format!("/api/v1/executions/{checkout}/judgment"),
        ),
        (
            "cancel other app",
            "POST",
            format!("/api/v1/executions/{worker}/cancel"),
        ),
        (
            "cancel own app",
            "POST",
            format!("/api/v1/executions/{checkout}/cancel"),
        ),
    ];
    let expected: [(&str, &str, [u16; 9]); 5] = [
        ("ops", OPS, [200, 200, 200, 200, 200, 409, 409, 409, 409]),
        (
            "legacy",
            LEGACY,
            [200, 200, 200, 200, 200, 409, 409, 409, 409],
        ),
        (
            "viewer",
            VIEWER,
            [200, 200, 200, 200, 200, 403, 403, 403, 403],
        ),
        ("team", TEAM, [200, 200, 403, 403, 200, 403, 409, 403, 409]),
        ("peek", PEEK, [200, 200, 403, 403, 200, 403, 403, 403, 403]),
    ];
    for (name, token, codes) in expected {
        for ((class, method, path), code) in classes.iter().zip(codes) {
            let (got, body) = call(&url, method, path, Some(token), judgment.clone()).await;
            assert_eq!(got, code, "{name} {class}: {body}");
            if got == 403 {
                let message = body["error"].as_str().unwrap_or_default();
                let why = if name == "viewer" || (name == "peek" && *method == "POST") {
                    "has the read scope"
                } else {
                    "may not access application \"inventory-worker\""
                };
                assert!(message.contains(why), "{name} {class}: {message}");
            }
        }
    }
    // App-scoped tokens list only their apps.
    let (_, list) = call(&url, "GET", "/api/v1/executions", Some(TEAM), Value::Null).await;
    let apps: Vec<&str> = list["executions"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["app"].as_str())
        .collect();
    assert_eq!(apps, ["checkout-api"]);
    let (_, list) = call(&url, "GET", "/api/v1/executions", Some(OPS), Value::Null).await;
    assert_eq!(list["executions"].as_array().map(Vec::len), Some(2));

    // A token named like the change's author does not approve it through the API either.
    let own = waiting(
        &w.store,
        "inventory-worker",
        7,
        &[],
        json!({"pullRequestAuthor": AUTHOR}),
    );
    let path = format!("/api/v1/executions/{own}/judgment");
    let (code, body) = call(&url, "POST", &path, Some(OWN), judgment.clone()).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        body["error"],
        json!("you authored this change; another approver must approve it")
    );
    let (code, body) = call(&url, "POST", &path, Some(OPS), judgment.clone()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(judged_by(&w.store, &own).as_deref(), Some("ops"));
    let allowed = waiting(
        &w.store,
        "checkout-api",
        7,
        &[],
        json!({"pullRequestAuthor": AUTHOR, "allowSelfApproval": true}),
    );
    let path = format!("/api/v1/executions/{allowed}/judgment");
    let (code, body) = call(&url, "POST", &path, Some(OWN), judgment.clone()).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_counted_and_throttled() {
    let w = world();
    let url = serve(
        &w,
        AuthLimits {
            burst: 3,
            refill: Duration::from_millis(700),
            max_clients: 16,
        },
    )
    .await;
    let (code, _) = call(&url, "GET", "/api/v1/apps", Some(OPS), Value::Null).await;
    assert_eq!(code, 200);
    let (code, _) = call(&url, "GET", "/api/v1/apps", None, Value::Null).await;
    assert_eq!(code, 401);
    for _ in 0..2 {
        let (code, body) = call(
            &url,
            "GET",
            "/api/v1/apps",
            Some("guess-0000000000000000"),
            Value::Null,
        )
        .await;
        assert_eq!(code, 401, "{body}");
    }
    // No failure left: every request from this address waits, a valid token too, so guesses
    // cannot be told apart.
    let response = reqwest::Client::new()
        .post(format!("{url}/api/v1/executions/x/cancel"))
        .bearer_auth("guess-1111111111111111")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let (code, body) = call(&url, "GET", "/api/v1/apps", Some(OPS), Value::Null).await;
    assert_eq!(code, 429, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("too many failed authentications")),
        "{body}"
    );
    // The budget refills.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (code, _) = call(&url, "GET", "/api/v1/apps", Some(OPS), Value::Null).await;
    assert_eq!(code, 200);

    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "bowline_api_auth_failures_total{reason=\"missing\"} 1",
        "bowline_api_auth_failures_total{reason=\"unknown\"} 2",
        "bowline_api_auth_failures_total{reason=\"throttled\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

/// Two executions of one pull request wait, and the commenter may decide only one of them:
/// nothing is recorded for either, and the reply says why (every target is checked before
/// anything is written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_of_one_of_two_waiting_executions_judges_neither() {
    let w = world();
    // Newest first is how they are found: the one dana may decide comes first.
    let first = waiting(&w.store, "checkout-api", 9, &["maria"], json!({}));
    let second = waiting(&w.store, "inventory-worker", 9, &["dana"], json!({}));
    for command in ["/bowline approve", "/bowline reject"] {
        let refused = comment(&w, 9, AUTHOR, "dana", command).await;
        assert!(
            matches!(&refused, ChatOpsOutcome::Refused(m) if m.starts_with("you are not allowed")),
            "{refused:?}"
        );
        assert_eq!(judged_by(&w.store, &first), None, "{command}");
        assert_eq!(judged_by(&w.store, &second), None, "{command}");
    }
    // Listed for both, the judgment covers both.
    let third = waiting(
        &w.store,
        "storefront-web",
        10,
        &["dana", "maria"],
        json!({}),
    );
    let fourth = waiting(&w.store, "search-api", 10, &["dana"], json!({}));
    let done = comment(&w, 10, AUTHOR, "dana", "/bowline approve").await;
    assert!(matches!(done, ChatOpsOutcome::Done(_)), "{done:?}");
    assert_eq!(judged_by(&w.store, &third).as_deref(), Some("dana"));
    assert_eq!(judged_by(&w.store, &fourth).as_deref(), Some("dana"));
}

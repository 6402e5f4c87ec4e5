//! The GitHub REST client against the local GitHub API test server, which checks every request
//! body against GitHub's OpenAPI description (`../shared/github/openapi-subset.json`).

use std::time::{Duration, Instant};

use bowline::forge::client::RetryPolicy;
use bowline::forge::{
    COMMENT_LIMIT, CommentOutcome, CommentSection, CommitState, CommitStatus, ForgeError, GitHub,
    RepoRef, SectionDiff, TeamMembership, render_comment, sticky_marker,
};
use github_api_test_server::{PullRequestSeed, RateLimit, TestServer};
use serde_json::{Value, json};

const TOKEN: &str = "ghs_test_token_never_printed";

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        max_rate_limit_retries: 3,
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_rate_limit_wait: Duration::from_millis(300),
        request_timeout: Duration::from_secs(5),
    }
}

fn client(server: &TestServer) -> GitHub {
    GitHub::with_retry(&server.url(), TOKEN.to_string(), fast()).unwrap()
}

fn repo() -> RepoRef {
    RepoRef::new("acme", "config")
}

/// Every call the server saw had a valid body and the bearer token.
fn assert_all_valid(server: &TestServer) {
    for call in server.calls() {
        assert!(
            call.validation_errors.is_empty(),
            "{} {}: {:?}",
            call.method,
            call.path,
            call.validation_errors
        );
        assert!(
            call.response_errors.is_empty(),
            "{} {}: answer {:?}",
            call.method,
            call.path,
            call.response_errors
        );
        assert_eq!(
            call.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert!(
            call.user_agent
                .as_deref()
                .unwrap_or("")
                .starts_with("bowline/")
        );
    }
}

fn status(context: &str, state: CommitState) -> CommitStatus {
    CommitStatus {
        context: context.to_string(),
        state,
        description: "Rendered 3 apps in 2 environments".to_string(),
        target_url: Some("https://bowline.example/executions/01J".to_string()),
    }
}

#[tokio::test]
async fn commit_statuses_are_valid_requests() {
    let server = TestServer::start();
    let gh = client(&server);
    let sha = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
    gh.set_status(&repo(), sha, &status("bowline/plan", CommitState::Pending))
        .await
        .unwrap();
    let mut long = status("bowline/deploy/web", CommitState::Success);
    long.description = "x".repeat(500);
    long.target_url = None;
    gh.set_status(&repo(), sha, &long).await.unwrap();
    for state in [CommitState::Failure, CommitState::Error] {
        gh.set_status(&repo(), sha, &status("bowline/plan", state))
            .await
            .unwrap();
    }
    assert_all_valid(&server);
    let calls = server.calls_to("repos/create-commit-status");
    assert_eq!(calls.len(), 4);
    assert_eq!(calls[0].path, format!("/repos/acme/config/statuses/{sha}"));
    assert_eq!(
        calls[0].body,
        Some(json!({
            "state": "pending",
            "target_url": "https://bowline.example/executions/01J",
            "description": "Rendered 3 apps in 2 environments",
            "context": "bowline/plan",
        }))
    );
    let body = calls[1].body.clone().unwrap();
    assert!(body.get("target_url").is_none());
    assert_eq!(body["description"].as_str().unwrap().chars().count(), 140);
    let stored = server.statuses("acme/config", sha);
    assert_eq!(
        stored.iter().map(|s| s.state.as_str()).collect::<Vec<_>>(),
        ["pending", "success", "failure", "error"]
    );
}

#[tokio::test]
async fn enterprise_base_url() {
    let server = TestServer::start();
    let gh = GitHub::with_retry(&server.enterprise_url(), TOKEN.into(), fast()).unwrap();
    gh.set_status(
        &repo(),
        "abc",
        &status("bowline/plan", CommitState::Success),
    )
    .await
    .unwrap();
    let calls = server.calls();
    assert_eq!(calls[0].path, "/api/v3/repos/acme/config/statuses/abc");
    assert_eq!(calls[0].status, 201);
    // Pagination links stay under /api/v3 too.
    for i in 0..120 {
        server.seed_comment("acme/config", 9, "someone", &format!("comment {i}"));
    }
    let marker = sticky_marker("plan");
    let outcome = gh
        .upsert_sticky_comment(&repo(), 9, &marker, &format!("{marker}\nplan"))
        .await
        .unwrap();
    assert!(matches!(outcome, CommentOutcome::Created(_)));
    let lists = server.calls_to("issues/list-comments");
    assert_eq!(lists.len(), 2);
    assert!(lists.iter().all(|c| c.path.starts_with("/api/v3/")));
    assert_all_valid(&server);
}

#[tokio::test]
async fn sticky_comment_is_created_then_updated_in_place() {
    let server = TestServer::start();
    let gh = client(&server);
    let marker = sticky_marker("plan");
    server.seed_comment("acme/config", 2, "reviewer", "Looks good to me");
    // Someone quoting the marker in the middle of a comment does not make it ours.
    server.seed_comment(
        "acme/config",
        2,
        "reviewer",
        &format!("what is {marker} for?"),
    );
    let first = format!("{marker}\n## Plan\n1 app changed");
    let created = gh
        .upsert_sticky_comment(&repo(), 2, &marker, &first)
        .await
        .unwrap();
    let CommentOutcome::Created(id) = created else {
        panic!("{created:?}")
    };
    let second = format!("{marker}\n## Plan\n2 apps changed");
    assert_eq!(
        gh.upsert_sticky_comment(&repo(), 2, &marker, &second)
            .await
            .unwrap(),
        CommentOutcome::Updated(id)
    );
    assert_eq!(
        gh.upsert_sticky_comment(&repo(), 2, &marker, &second)
            .await
            .unwrap(),
        CommentOutcome::Unchanged(id)
    );
    // A body without the marker gets it, so it is still found next time.
    assert_eq!(
        gh.upsert_sticky_comment(&repo(), 2, &marker, "## Plan\n3 apps changed")
            .await
            .unwrap(),
        CommentOutcome::Updated(id)
    );
    assert_eq!(
        gh.upsert_sticky_comment(&repo(), 2, &marker, &second)
            .await
            .unwrap(),
        CommentOutcome::Updated(id)
    );
    assert!(matches!(
        gh.upsert_sticky_comment(&repo(), 2, " ", "x").await,
        Err(ForgeError::InvalidArgument(_))
    ));
    // Another kind of sticky comment lives beside it.
    let other = sticky_marker("canary");
    let canary = gh
        .upsert_sticky_comment(&repo(), 2, &other, &format!("{other}\nscore 95"))
        .await
        .unwrap();
    assert_ne!(canary.id(), id);
    let comments = server.comments("acme/config", 2);
    assert_eq!(comments.len(), 4);
    let ours: Vec<_> = comments
        .iter()
        .filter(|c| c.body.starts_with(&marker))
        .collect();
    assert_eq!(ours.len(), 1, "never duplicated");
    assert_eq!(ours[0].body, second);
    assert_eq!(ours[0].user, "bowline[bot]");
    assert_eq!(server.calls_to("issues/update-comment").len(), 3);
    assert_eq!(server.calls_to("issues/create-comment").len(), 2);
    assert_all_valid(&server);
}

#[tokio::test]
async fn sticky_comment_is_found_on_a_later_page() {
    let server = TestServer::start();
    let gh = client(&server);
    let marker = sticky_marker("plan");
    for i in 0..230 {
        server.seed_comment("acme/config", 7, "dev", &format!("comment {i}"));
    }
    let id = server.seed_comment("acme/config", 7, "bowline[bot]", &format!("{marker}\nold"));
    server.seed_comment("acme/config", 7, "dev", "after");
    let outcome = gh
        .upsert_sticky_comment(&repo(), 7, &marker, &format!("{marker}\nnew"))
        .await
        .unwrap();
    assert_eq!(outcome, CommentOutcome::Updated(id));
    let lists = server.calls_to("issues/list-comments");
    assert_eq!(lists.len(), 3, "pages of 100 followed through Link");
    assert!(lists[0].query.contains("per_page=100"));
    assert!(lists[2].query.contains("page=3"));
    assert_eq!(server.comments("acme/config", 7).len(), 232);
    assert_all_valid(&server);
}

#[tokio::test]
async fn a_full_size_rendered_comment_is_accepted() {
    let server = TestServer::start();
    let gh = client(&server);
    let marker = sticky_marker("plan");
    let sections: Vec<CommentSection> = (0..5)
        .map(|i| CommentSection {
            title: format!("app-{i} → production"),
            summary: "changed".into(),
            diffs: vec![SectionDiff {
                object: format!("v1 ConfigMap shop/app-{i}"),
                text: (0..4000).map(|l| format!("+  line: {l}\n")).collect(),
            }],
        })
        .collect();
    let body = render_comment(&marker, "| app | env | change |", &sections, "bowline");
    assert!(body.encode_utf16().count() <= COMMENT_LIMIT);
    gh.upsert_sticky_comment(&repo(), 3, &marker, &body)
        .await
        .unwrap();
    assert_eq!(server.comments("acme/config", 3)[0].body, body);
    assert_all_valid(&server);
}

#[tokio::test]
async fn replies_and_permissions() {
    let server = TestServer::start();
    let gh = client(&server);
    gh.reply(&repo(), 2, "@bob is not an approver of `web`")
        .await
        .unwrap();
    assert_eq!(
        server.comments("acme/config", 2)[0].body,
        "@bob is not an approver of `web`"
    );
    server.set_permission("alice", "write");
    server.set_permission("maint", "maintain");
    server.set_permission("root", "admin");
    assert_eq!(gh.permission(&repo(), "alice").await.unwrap(), "write");
    assert_eq!(gh.permission(&repo(), "Alice").await.unwrap(), "write");
    assert_eq!(gh.permission(&repo(), "maint").await.unwrap(), "write");
    assert_eq!(gh.permission(&repo(), "root").await.unwrap(), "admin");
    assert_eq!(gh.permission(&repo(), "mallory").await.unwrap(), "none");
    server.fail_next(Some("GET"), "/collaborators/ghost/", 404, 1);
    assert_eq!(gh.permission(&repo(), "ghost").await.unwrap(), "none");
    assert_eq!(
        server.calls().last().unwrap().path,
        "/repos/acme/config/collaborators/ghost/permission"
    );
    assert_all_valid(&server);
}

#[tokio::test]
async fn team_memberships() {
    let server = TestServer::start();
    let gh = client(&server);
    server.set_team_membership("acme", "sre", "maria", "member", "active");
    server.set_team_membership("acme", "sre", "newbie", "member", "pending");
    assert_eq!(
        gh.team_membership("acme", "sre", "Maria").await.unwrap(),
        TeamMembership::Active
    );
    assert_eq!(
        gh.team_membership("acme", "sre", "newbie").await.unwrap(),
        TeamMembership::Pending
    );
    assert!(!TeamMembership::Pending.is_member());
    assert_eq!(
        gh.team_membership("acme", "sre", "mallory").await.unwrap(),
        TeamMembership::None,
        "404: not a member"
    );
    assert_eq!(
        server.calls_to("teams/get-membership-for-user-in-org")[0].path,
        "/orgs/acme/teams/sre/memberships/Maria"
    );
    assert_all_valid(&server);
    // The answer matches the documented schema.
    let r = reqwest::Client::new()
        .get(format!(
            "{}/orgs/acme/teams/sre/memberships/maria",
            server.url()
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let errors = server
        .spec()
        .validate_response("teams/get-membership-for-user-in-org", 200, &body)
        .unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    server.clear_calls();
    // Other errors are errors (the caller fails closed), after the retries.
    server.fail_next(Some("GET"), "/memberships/maria", 500, 4);
    let err = gh
        .team_membership("acme", "sre", "maria")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert!(
        err.to_string()
            .starts_with("GET /orgs/acme/teams/sre/memberships/maria"),
        "{err}"
    );
    server.remove_team_membership("acme", "sre", "maria");
    assert_eq!(
        gh.team_membership("acme", "sre", "maria").await.unwrap(),
        TeamMembership::None
    );
    assert_all_valid(&server);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let server = TestServer::start();
    let gh = client(&server);
    server.fail_next(Some("POST"), "/statuses/", 502, 2);
    gh.set_status(
        &repo(),
        "abc",
        &status("bowline/plan", CommitState::Success),
    )
    .await
    .unwrap();
    let calls = server.calls_to("repos/create-commit-status");
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        [502, 502, 201]
    );
    assert_eq!(server.statuses("acme/config", "abc").len(), 1);

    // Persistent failures give up after the retries, naming the endpoint but not the token.
    server.clear_calls();
    server.fail_next(None, "/issues/4/comments", 503, 100);
    let err = gh.reply(&repo(), 4, "hi").await.unwrap_err();
    assert_eq!(server.calls().len(), 4, "1 attempt + 3 retries");
    assert_eq!(err.status(), Some(503));
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("POST /repos/acme/config/issues/4/comments"),
        "{text}"
    );
    assert!(text.contains("503"), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
}

/// Rate-limit waits have their own budget: three 502 answers and then two rate limits still
/// end in a delivered status with three retries for server errors.
#[tokio::test]
async fn rate_limits_do_not_use_up_the_server_error_retries() {
    let server = TestServer::start();
    let gh = client(&server);
    server.fail_next(Some("POST"), "/statuses/", 502, 3);
    server.rate_limit_next(
        "/statuses/",
        RateLimit::TooMany {
            retry_after_secs: 0,
        },
        2,
    );
    gh.set_status(
        &repo(),
        "abc",
        &status("bowline/plan", CommitState::Success),
    )
    .await
    .unwrap();
    let calls: Vec<u16> = server
        .calls_to("repos/create-commit-status")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(calls, [502, 502, 502, 429, 429, 201]);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let server = TestServer::start();
    let gh = client(&server);
    server.fail_next(None, "/statuses/", 404, 1);
    let err = gh
        .set_status(
            &repo(),
            "abc",
            &status("bowline/plan", CommitState::Success),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ForgeError::Status { status: 404, .. }),
        "{err:?}"
    );
    assert_eq!(server.calls().len(), 1);
    server.fail_next(None, "/statuses/", 403, 1);
    let err = gh
        .set_status(
            &repo(),
            "abc",
            &status("bowline/plan", CommitState::Success),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ForgeError::Status { status: 403, .. }),
        "{err:?}"
    );
    assert_eq!(server.calls().len(), 2);
}

#[tokio::test]
async fn rate_limits_are_honoured() {
    let server = TestServer::start();
    let gh = client(&server);
    let ok = status("bowline/plan", CommitState::Success);

    // Primary limit: 403 with x-ratelimit-remaining 0; the reset is in the future, so the wait
    // is capped (300 ms in this policy) and the request then succeeds.
    server.rate_limit_next(
        "/statuses/",
        RateLimit::Primary {
            reset_in_secs: 3600,
        },
        1,
    );
    let started = Instant::now();
    gh.set_status(&repo(), "a", &ok).await.unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(280), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");

    // Secondary limit (403 + retry-after) and 429 + retry-after.
    server.rate_limit_next(
        "/statuses/",
        RateLimit::Secondary {
            retry_after_secs: 0,
        },
        1,
    );
    server.rate_limit_next(
        "/statuses/",
        RateLimit::TooMany {
            retry_after_secs: 0,
        },
        1,
    );
    gh.set_status(&repo(), "b", &ok).await.unwrap();
    let statuses: Vec<u16> = server
        .calls_to("repos/create-commit-status")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [403, 201, 403, 429, 201]);

    // Still limited when retries run out: a RateLimited error.
    server.rate_limit_next(
        "/statuses/",
        RateLimit::TooMany {
            retry_after_secs: 0,
        },
        10,
    );
    let err = gh.set_status(&repo(), "c", &ok).await.unwrap_err();
    assert!(
        matches!(err, ForgeError::RateLimited { status: 429, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains(TOKEN));
}

#[tokio::test]
async fn connection_failures_are_retried_then_reported() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gh = GitHub::with_retry(&format!("http://127.0.0.1:{port}"), TOKEN.into(), fast()).unwrap();
    let err = gh.permission(&repo(), "alice").await.unwrap_err();
    assert!(matches!(err, ForgeError::Transport { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("GET /repos/acme/config/collaborators/alice/permission"),
        "{text}"
    );
    assert!(!text.contains(TOKEN));
}

/// The server itself: refuses invalid bodies with 422 and unauthenticated calls with 401.
#[tokio::test]
async fn server_validates_every_request_body() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = TestServer::start();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(format!("{}{path}", server.url()))
            .bearer_auth("t")
            .json(&body)
            .send()
    };
    let r = post("/repos/o/r/statuses/abc", json!({"state": "ok"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("$.state"), "{message}");
    assert!(message.contains("\"ok\""), "{message}");

    let r = post("/repos/o/r/issues/1/comments", json!({"text": "hi"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = post("/repos/o/r/issues/1/comments", json!({"body": 5}))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    // nullable target_url is accepted, like validate.py's conversion.
    let r = post(
        "/repos/o/r/statuses/heads/main",
        json!({"state": "success", "context": "gitops/apply", "target_url": null}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let errors = server
        .spec()
        .validate_response("repos/create-commit-status", 201, &created)
        .unwrap();
    assert!(errors.is_empty(), "{errors:?}");

    let r = http
        .post(format!("{}/repos/o/r/issues/1/comments", server.url()))
        .bearer_auth("t")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("{}/repos/o/r/issues/1/comments", server.url()))
        .json(&json!({"body": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{}/nowhere", server.url()))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let calls = server.calls();
    assert_eq!(calls.len(), 7);
    assert_eq!(
        calls[0].operation.as_deref(),
        Some("repos/create-commit-status")
    );
    assert!(!calls[0].validation_errors.is_empty());
    assert_eq!(server.statuses("o/r", "heads/main").len(), 1);
}

/// The server's own answers match the documented response schemas.
#[tokio::test]
async fn server_answers_match_the_description() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = TestServer::start();
    let gh = client(&server);
    let marker = sticky_marker("plan");
    gh.upsert_sticky_comment(&repo(), 1, &marker, &format!("{marker}\na"))
        .await
        .unwrap();
    gh.upsert_sticky_comment(&repo(), 1, &marker, &format!("{marker}\nb"))
        .await
        .unwrap();
    gh.set_status(
        &repo(),
        "abc",
        &status("bowline/plan", CommitState::Pending),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    for (op, path) in [
        (
            "issues/list-comments",
            "/repos/acme/config/issues/1/comments",
        ),
        (
            "repos/list-commit-statuses-for-ref",
            "/repos/acme/config/commits/abc/statuses",
        ),
        (
            "repos/get-combined-status-for-ref",
            "/repos/acme/config/commits/abc/status",
        ),
    ] {
        let r = http
            .get(format!("{}{path}", server.url()))
            .bearer_auth("t")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let body: Value = r.json().await.unwrap();
        let errors = server.spec().validate_response(op, 200, &body).unwrap();
        assert!(errors.is_empty(), "{op}: {errors:?}");
    }
    let r = http
        .patch(format!(
            "{}/repos/acme/config/issues/comments/999999",
            server.url()
        ))
        .bearer_auth("t")
        .json(&json!({"body": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    let errors = server
        .spec()
        .validate_response("issues/update-comment", 404, &body)
        .unwrap();
    assert!(errors.is_empty(), "{errors:?}");
}

/// The repository's identity, pull requests and team memberships, as GitHub answers them: the
/// typed client reads what bowline needs, and every answer matches the documented schema.
#[tokio::test]
async fn repositories_pull_requests_and_team_memberships() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = TestServer::start();
    let gh = client(&server);
    server.set_repository("Acme/Config", 4242);
    let found = gh.get_repository(&repo()).await.unwrap();
    assert_eq!((found.id, found.full_name.as_str()), (4242, "Acme/Config"));
    let missing = gh
        .get_repository(&RepoRef::new("acme", "other"))
        .await
        .unwrap_err();
    assert_eq!(missing.status(), Some(404));

    let mut fork = PullRequestSeed::open("acme/config", 7, "stranger", "abc123");
    fork.head_repo = Some("stranger/config".into());
    server.set_pull_request("acme/config", fork);
    let mut closed = PullRequestSeed::open("acme/config", 8, "octo-dev", "def456");
    closed.state = "closed".into();
    server.set_pull_request("acme/config", closed);
    let pull = gh.get_pull_request(&repo(), 7).await.unwrap();
    assert!(pull.is_open());
    assert_eq!(pull.head.sha, "abc123");
    assert_eq!(pull.base.git_ref, "main");
    assert_eq!(
        pull.head.repo.as_ref().map(|r| r.full_name.as_str()),
        Some("stranger/config")
    );
    let event = pull.to_event(&repo(), bowline::forge::PrAction::Opened, "maria");
    assert_eq!(
        (event.number, event.author.as_str(), event.sender.as_str()),
        (7, "stranger", "maria")
    );
    assert_eq!(event.head_repo, Some(RepoRef::new("stranger", "config")));
    assert!(!gh.get_pull_request(&repo(), 8).await.unwrap().is_open());
    assert_eq!(
        gh.get_pull_request(&repo(), 9).await.unwrap_err().status(),
        Some(404)
    );

    // pulls/list and team memberships, straight over HTTP.
    server.set_team_membership("acme", "sre", "maria", "member", "active");
    let http = reqwest::Client::new();
    let get = |path: &str| {
        http.get(format!("{}{path}", server.url()))
            .bearer_auth(TOKEN)
            .header("user-agent", "bowline/test")
            .send()
    };
    let numbers = |body: &Value| -> Vec<u64> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|p| p["number"].as_u64().unwrap())
            .collect()
    };
    let open: Value = get("/repos/acme/config/pulls")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(numbers(&open), vec![7]);
    let all: Value = get("/repos/acme/config/pulls?state=all")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(numbers(&all), vec![8, 7]);
    let r = get("/orgs/acme/teams/SRE/memberships/Maria").await.unwrap();
    assert_eq!(r.status(), 200);
    let membership: Value = r.json().await.unwrap();
    assert_eq!(
        (membership["role"].as_str(), membership["state"].as_str()),
        (Some("member"), Some("active"))
    );
    server.remove_team_membership("acme", "sre", "maria");
    assert_eq!(
        get("/orgs/acme/teams/sre/memberships/maria")
            .await
            .unwrap()
            .status(),
        404
    );
    assert_all_valid(&server);
    for op in [
        "repos/get",
        "pulls/get",
        "pulls/list",
        "teams/get-membership-for-user-in-org",
    ] {
        assert!(!server.calls_to(op).is_empty(), "{op} was called");
    }
}

/// GitHub refuses a commit status description longer than 140 characters; so does the test
/// server (the client truncates before sending).
#[tokio::test]
async fn long_status_descriptions_are_refused_like_github() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = TestServer::start();
    let r = reqwest::Client::new()
        .post(format!("{}/repos/o/r/statuses/abc", server.url()))
        .bearer_auth("t")
        .json(&json!({"state": "success", "description": "x".repeat(141)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("maximum is 140 characters"),
        "{body}"
    );
    assert!(server.statuses("o/r", "abc").is_empty());
}

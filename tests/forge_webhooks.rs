//! Webhook verification and parsing with GitHub's published example payloads
//! (`../shared/github/webhooks/`), signed with the test secret of `manifest.json`.

use std::path::PathBuf;

use bowline::forge::webhook::sign;
use bowline::forge::{
    CommentAction, Deliveries, Event, PrAction, RepoRef, WebhookError, delivery_repository,
    parse_event, verify_signature,
};
use serde_json::Value;

const SECRET: &[u8] = b"It's a Secret to Everybody";

fn dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/github/webhooks");
    assert!(
        dir.join("manifest.json").is_file(),
        "{} is missing: GitHub's example payloads live in ../shared beside the repository",
        dir.display()
    );
    dir
}

fn payload(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn event(name: &str) -> Event {
    let body = payload(name);
    let kind = name.split('.').next().unwrap();
    verify_signature(SECRET, &body, Some(&sign(SECRET, &body))).unwrap();
    parse_event(kind, &body).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_payload_verifies_with_the_manifest_signature_and_parses() {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["secret"].as_str().unwrap().as_bytes(), SECRET);
    let files = manifest["files"].as_array().unwrap();
    assert_eq!(files.len(), 22);
    for entry in files {
        let name = entry["file"].as_str().unwrap();
        let body = payload(name);
        let header = entry["headers"]["X-Hub-Signature-256"].as_str().unwrap();
        let kind = entry["headers"]["X-GitHub-Event"].as_str().unwrap();
        verify_signature(SECRET, &body, Some(header)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(sign(SECRET, &body), header, "{name}");
        // A different secret, or one changed byte, is refused.
        assert_eq!(
            verify_signature(b"another secret", &body, Some(header)),
            Err(WebhookError::BadSignature)
        );
        let mut tampered = body.clone();
        let last = tampered.len() - 2;
        tampered[last] ^= 1;
        assert_eq!(
            verify_signature(SECRET, &tampered, Some(header)),
            Err(WebhookError::BadSignature),
            "{name}"
        );
        let event = parse_event(kind, &body).unwrap_or_else(|e| panic!("{name}: {e}"));
        match kind {
            "check_run" | "check_suite" | "package" => {
                assert_eq!(event, Event::Other(kind.to_string()))
            }
            "ping" => assert!(matches!(event, Event::Ping { .. })),
            "push" => assert!(matches!(event, Event::Push(_))),
            "pull_request" => assert!(matches!(event, Event::PullRequest(_))),
            "issue_comment" => assert!(matches!(event, Event::IssueComment(_))),
            other => panic!("unexpected event {other}"),
        }
    }
}

#[test]
fn documented_signatures_and_raw_body_negatives() {
    let body = payload("push.branch-created.octokit.json");
    let sig = "sha256=114f8aaf2b1b6f212a575738c329e6e0df0c9fd2ee9ed31a42e6cb5330af17b2";
    assert_eq!(body.len(), 8855);
    verify_signature(SECRET, &body, Some(sig)).unwrap();
    // Re-serialised compactly, the same JSON signs differently and is refused.
    let value: Value = serde_json::from_slice(&body).unwrap();
    let compact = serde_json::to_vec(&value).unwrap();
    assert_eq!(
        verify_signature(SECRET, &compact, Some(sig)),
        Err(WebhookError::BadSignature)
    );
    // Without the final newline, too.
    assert_eq!(
        verify_signature(SECRET, &body[..body.len() - 1], Some(sig)),
        Err(WebhookError::BadSignature)
    );
    assert_eq!(
        sign(SECRET, &body[..body.len() - 1]),
        "sha256=60e81288256ed970a206e18fbddd262c648f5614897d0248f437efea6071205c"
    );
    assert_eq!(
        verify_signature(SECRET, &body, None),
        Err(WebhookError::MissingSignature)
    );
    // The spec's 40-digit example header is a commit SHA, not an HMAC.
    assert_eq!(
        verify_signature(
            SECRET,
            &body,
            Some("sha256=6dcb09b5b57875f334f61aebed695e2e4193db5e")
        ),
        Err(WebhookError::MalformedSignature)
    );
    for (file, sig) in [
        (
            "pull_request.opened.octokit.json",
            "sha256=4fa288795ea9f54fb2f9e000ad8eee6b473756d6dafadfce0e557049a2ebcdd8",
        ),
        (
            "issue_comment.created.on-pr.octocrab-pr811.json",
            "sha256=e299643e879cbb709b7e94d978c5d72e0c53a098a9b3d081cbb9c269c388a28b",
        ),
    ] {
        verify_signature(SECRET, &payload(file), Some(sig)).unwrap();
    }
}

#[test]
fn push_events() {
    let Event::Push(p) = event("push.branch-created.octokit.json") else {
        panic!()
    };
    assert_eq!(p.repo, RepoRef::new("Codertocat", "Hello-World"));
    assert_eq!(p.git_ref, "refs/heads/master");
    assert_eq!(p.branch(), Some("master"));
    assert_eq!(p.before, "0".repeat(40));
    assert_eq!(p.after, "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
    assert!(p.created && !p.deleted);
    assert_eq!(p.sender, "Codertocat");

    let Event::Push(p) = event("push.tag-created.octocrab.json") else {
        panic!()
    };
    assert_eq!(p.repo, RepoRef::new("gagbo", "app-test-repo"));
    assert_eq!(p.git_ref, "refs/tags/v0.2.1");
    assert_eq!(p.branch(), None);
    assert!(p.created);

    let Event::Push(p) = event("push.tag-deleted.octokit.json") else {
        panic!()
    };
    assert!(p.deleted && !p.created);
    assert_eq!(p.after, "0".repeat(40));
    assert_eq!(p.git_ref, "refs/tags/simple-tag");
}

#[test]
fn pull_request_events() {
    let Event::PullRequest(pr) = event("pull_request.opened.octokit.json") else {
        panic!()
    };
    assert_eq!(pr.action, PrAction::Opened);
    assert_eq!(pr.repo, RepoRef::new("Codertocat", "Hello-World"));
    assert_eq!(pr.number, 2);
    assert_eq!(pr.head_sha, "ec26c3e57ca3a959ca5aad62de7213c562f8c821");
    assert_eq!(pr.head_ref, "changes");
    assert_eq!(pr.base_ref, "master");
    assert_eq!(pr.head_repo, Some(pr.repo.clone()));
    assert_eq!(pr.sender, "Codertocat");

    let Event::PullRequest(pr) = event("pull_request.synchronize.octocrab.json") else {
        panic!()
    };
    assert_eq!(pr.action, PrAction::Synchronize);
    assert_eq!(pr.repo, RepoRef::new("gagbo", "ouro-closures"));
    assert_eq!(pr.number, 5);
    assert_eq!(pr.head_sha, "7e39d83fc6a99f2c6a02cc7637c4de8db50da6ca");
    assert_eq!(pr.base_ref, "trunk");

    for file in [
        "pull_request.opened.octocrab.json",
        "pull_request.synchronize.octokit.json",
    ] {
        assert!(matches!(event(file), Event::PullRequest(_)), "{file}");
    }
    let Event::PullRequest(pr) = event("pull_request.reopened.octokit.json") else {
        panic!()
    };
    assert_eq!(pr.action, PrAction::Reopened);
    for file in [
        "pull_request.closed.octokit.json",
        "pull_request.closed.octocrab.json",
    ] {
        let Event::PullRequest(pr) = event(file) else {
            panic!()
        };
        assert_eq!(pr.action, PrAction::Closed { merged: false }, "{file}");
    }
}

#[test]
fn merged_close_is_recognised() {
    // DERIVED fixture: neither upstream package has a merged close, so `merged`,
    // `merged_at` and `merge_commit_sha` are set on the real closed payload.
    let mut value: Value =
        serde_json::from_slice(&payload("pull_request.closed.octokit.json")).unwrap();
    value["pull_request"]["merged"] = Value::Bool(true);
    value["pull_request"]["merged_at"] = "2019-05-15T15:20:40Z".into();
    value["pull_request"]["merge_commit_sha"] = "1111111111111111111111111111111111111111".into();
    let body = serde_json::to_vec(&value).unwrap();
    let Event::PullRequest(pr) = parse_event("pull_request", &body).unwrap() else {
        panic!()
    };
    assert_eq!(pr.action, PrAction::Closed { merged: true });
    assert_eq!(
        pr.merge_commit_sha.as_deref(),
        Some("1111111111111111111111111111111111111111")
    );
}

#[test]
fn issue_comment_events() {
    let Event::IssueComment(c) = event("issue_comment.created.on-pr.octocrab-pr811.json") else {
        panic!()
    };
    assert_eq!(c.action, CommentAction::Created);
    assert!(c.is_pull_request);
    assert_eq!(
        c.repo,
        RepoRef::new("mmoreiradj", "sandcastle-monorepo-test")
    );
    assert_eq!(c.issue_number, 1);
    assert_eq!(c.comment_id, 3342057776);
    assert_eq!(c.body, "This is a test comment message.");
    assert_eq!(c.author, "mmoreiradj");
    assert_eq!(c.author_association, "OWNER");
    assert_eq!(c.issue_author, "mmoreiradj", "the pull request's author");
    assert_eq!(bowline::forge::parse_command(&c.body), None);

    let Event::IssueComment(c) = event("issue_comment.created.on-issue.octokit.json") else {
        panic!()
    };
    assert_eq!(c.action, CommentAction::Created);
    assert!(!c.is_pull_request);
    assert_eq!(c.issue_number, 1);

    let Event::IssueComment(c) = event("issue_comment.edited.on-pr.octocrab.json") else {
        panic!()
    };
    assert_eq!(c.action, CommentAction::Edited);
    assert!(c.is_pull_request);
    assert_eq!(c.author, "gagbo-test-app[bot]");
    assert_eq!(c.issue_number, 5);
}

#[test]
fn ping_events() {
    assert_eq!(
        event("ping.app-hook.octocrab.json"),
        Event::Ping {
            zen: "Design for failure.".into()
        }
    );
    assert_eq!(
        event("ping.repo-hook.octokit.json"),
        Event::Ping {
            zen: "Anything added dilutes everything else.".into()
        }
    );
}

#[test]
fn replayed_deliveries_are_refused() {
    let deliveries = Deliveries::new(10_000);
    let id = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    assert!(deliveries.first_time(id));
    assert!(!deliveries.first_time(id));
    assert!(deliveries.first_time("another"));
}

/// Every published payload names its repository by id and full name (the App hook's ping names
/// none), and only the configured one matches.
#[test]
fn deliveries_name_their_repository() {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir().join("manifest.json")).unwrap()).unwrap();
    for entry in manifest["files"].as_array().unwrap() {
        let name = entry["file"].as_str().unwrap();
        let body = payload(name);
        let Some(repository) = delivery_repository(&body) else {
            assert_eq!(
                name, "ping.app-hook.octocrab.json",
                "{name} names no repository"
            );
            continue;
        };
        let value: Value = serde_json::from_slice(&body).unwrap();
        let full_name = value["repository"]["full_name"].as_str().unwrap();
        let id = value["repository"]["id"].as_u64().unwrap();
        assert_eq!(repository.full_name.as_deref(), Some(full_name), "{name}");
        assert_eq!(repository.id, Some(id), "{name}");
        let ours = RepoRef::parse(full_name).unwrap();
        assert!(repository.is(&ours, Some(id)), "{name}");
        assert!(!repository.is(&ours, Some(id + 1)), "{name}");
        let upper = RepoRef::parse(&full_name.to_uppercase()).unwrap();
        assert!(repository.is(&upper, None), "{name}: case-insensitive");
        assert!(
            !repository.is(&RepoRef::new("acme", "shop-config"), None),
            "{name}"
        );
    }
}

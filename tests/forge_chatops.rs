//! ChatOps end to end at the forge level: a real `issue_comment` delivery on a pull request
//! (`../shared/github/webhooks/issue_comment.created.on-pr.octocrab-pr811.json`) with its
//! comment body replaced by a command — a DERIVED payload, re-signed with the test secret —
//! verified, parsed, authorized against an approvers list and the collaborator permission on
//! the GitHub API test server, and answered with a reply when refused.

use std::path::PathBuf;
use std::time::Duration;

use bowline::forge::client::RetryPolicy;
use bowline::forge::webhook::sign;
use bowline::forge::{
    Command, CommentAction, Event, GitHub, has_write_access, is_authorized, parse_command,
    parse_event, verify_signature,
};
use github_api_test_server::TestServer;
use serde_json::Value;

const SECRET: &[u8] = b"test webhook secret";

fn delivery(author: &str, body: &str) -> (Vec<u8>, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/github/webhooks/issue_comment.created.on-pr.octocrab-pr811.json");
    let mut value: Value = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    value["comment"]["body"] = body.into();
    value["comment"]["user"]["login"] = author.into();
    value["sender"]["login"] = author.into();
    let bytes = serde_json::to_vec_pretty(&value).unwrap();
    let signature = sign(SECRET, &bytes);
    (bytes, signature)
}

/// What the daemon does with a comment: `Ok(command)` when accepted, `Err(reply)` otherwise.
async fn handle(
    gh: &GitHub,
    approvers: &[String],
    bytes: &[u8],
    signature: &str,
) -> Option<Result<Command, String>> {
    verify_signature(SECRET, bytes, Some(signature)).ok()?;
    let Event::IssueComment(c) = parse_event("issue_comment", bytes).ok()? else {
        return None;
    };
    if c.action != CommentAction::Created || !c.is_pull_request {
        return None;
    }
    let command = match parse_command(&c.body)? {
        Ok(command) => command,
        Err(message) => {
            gh.reply(&c.repo, c.issue_number, &message).await.unwrap();
            return Some(Err(message));
        }
    };
    let allowed = is_authorized(&c.author, approvers, &[])
        && has_write_access(&gh.permission(&c.repo, &c.author).await.unwrap());
    if !allowed {
        let message = format!(
            "@{} is not allowed to run `/bowline` commands here",
            c.author
        );
        gh.reply(&c.repo, c.issue_number, &message).await.unwrap();
        return Some(Err(message));
    }
    Some(Ok(command))
}

#[tokio::test]
async fn approvals_from_approvers_only() {
    let server = TestServer::start();
    let gh = GitHub::with_retry(
        &server.url(),
        "t".into(),
        RetryPolicy {
            min_backoff: Duration::from_millis(5),
            ..RetryPolicy::default()
        },
    )
    .unwrap();
    let approvers = vec!["alice".to_string(), "@acme/sre".to_string()];
    server.set_permission("alice", "write");
    server.set_permission("bob", "admin");
    server.set_permission("carol", "read");
    let repo = "mmoreiradj/sandcastle-monorepo-test";

    let (bytes, sig) = delivery("Alice", "Ship it\n/bowline approve promote");
    assert_eq!(
        handle(&gh, &approvers, &bytes, &sig).await,
        Some(Ok(Command::Approve {
            input: Some("promote".into())
        }))
    );
    assert!(server.comments(repo, 1).is_empty());

    // Not an approver (even with admin rights): refused with a reply.
    let (bytes, sig) = delivery("bob", "/bowline approve");
    let refused = handle(&gh, &approvers, &bytes, &sig).await.unwrap();
    assert!(refused.is_err());
    // An approver without write access on GitHub: refused too.
    server.set_permission("alice", "read");
    let (bytes, sig) = delivery("alice", "/bowline rollback");
    assert!(
        handle(&gh, &approvers, &bytes, &sig)
            .await
            .unwrap()
            .is_err()
    );
    // Unknown verbs get the usage.
    let (bytes, sig) = delivery("alice", "/bowline deploy now");
    let reply = handle(&gh, &approvers, &bytes, &sig)
        .await
        .unwrap()
        .unwrap_err();
    assert!(reply.contains("unknown command"), "{reply}");
    // A forged signature is ignored without any call.
    let calls = server.calls().len();
    let (bytes, _) = delivery("mallory", "/bowline approve");
    assert_eq!(
        handle(&gh, &approvers, &bytes, &sign(b"wrong", &bytes)).await,
        None
    );
    assert_eq!(server.calls().len(), calls);

    let replies: Vec<String> = server
        .comments(repo, 1)
        .into_iter()
        .map(|c| c.body)
        .collect();
    assert_eq!(replies.len(), 3, "{replies:?}");
    assert!(replies[0].contains("@bob is not allowed"));
    assert!(replies[1].contains("@alice is not allowed"));
    assert!(
        server
            .calls()
            .iter()
            .all(|c| c.validation_errors.is_empty())
    );
}

/// `/bowline plan` is a command of its own; the usage names it.
#[test]
fn plan_is_a_command() {
    let (bytes, _) = delivery("maria", "Looks right to me.\n/bowline plan");
    let Event::IssueComment(c) = parse_event("issue_comment", &bytes).unwrap() else {
        panic!("an issue comment");
    };
    assert!(c.is_pull_request);
    assert_eq!(parse_command(&c.body), Some(Ok(Command::Plan)));
    let err = parse_command("/bowline plan please").unwrap().unwrap_err();
    assert!(err.contains("`/bowline plan` takes no arguments"), "{err}");
    assert!(bowline::forge::chatops::USAGE.contains("`/bowline plan`"));
}

//! GitHub webhook deliveries: signature verification, replay protection and typed events.
//!
//! A delivery is processed only when [`verify_signature`] accepts its `X-Hub-Signature-256`
//! header for the raw body bytes (the MAC covers the exact bytes on the wire, never re-serialised
//! JSON). [`parse_event`] then turns the `X-GitHub-Event` name and body into an [`Event`],
//! reading only the fields bowline needs (GitHub's example payloads do not all carry every field
//! the current schemas require, so everything else is optional), and [`delivery_repository`]
//! names the repository it comes from, so that only the config repository's deliveries act.
//! Replays are refused by delivery id: the daemon keeps ids in its state store (see
//! `Store::record_delivery`); [`Deliveries`] is the in-memory equivalent.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::RepoRef;

/// Why a webhook delivery was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    /// No webhook secret is configured, so no delivery can be authenticated.
    #[error("no webhook secret configured")]
    NoSecret,
    /// The `X-Hub-Signature-256` header is absent.
    #[error("missing X-Hub-Signature-256 header")]
    MissingSignature,
    /// The header is not `sha256=` followed by 64 hexadecimal digits.
    #[error("malformed X-Hub-Signature-256 header")]
    MalformedSignature,
    /// The signature does not match the body.
    #[error("X-Hub-Signature-256 does not match the body")]
    BadSignature,
    /// The body is not the JSON payload expected for the event.
    #[error("invalid {event} payload: {message}")]
    Payload {
        /// The `X-GitHub-Event` name.
        event: String,
        /// What did not parse.
        message: String,
    },
}

/// Checks `X-Hub-Signature-256` (`sha256=<hex HMAC-SHA256 of body>`) in constant time.
///
/// The header value is taken as received (surrounding whitespace ignored, hex digits in either
/// case). An empty secret is refused: it would let anyone sign deliveries.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::NoSecret);
    }
    let header = header.ok_or(WebhookError::MissingSignature)?.trim();
    let hex_digest = header
        .strip_prefix("sha256=")
        .ok_or(WebhookError::MalformedSignature)?;
    if hex_digest.len() != 64 {
        return Err(WebhookError::MalformedSignature);
    }
    let expected = hex::decode(hex_digest).map_err(|_| WebhookError::MalformedSignature)?;
    // HMAC accepts keys of any length, so this cannot fail; map it anyway rather than panic.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| WebhookError::NoSecret)?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| WebhookError::BadSignature)
}

/// Computes the `X-Hub-Signature-256` header value for a body, as GitHub sends it. For tests
/// and for tools that replay deliveries.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` never fails for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// How long a delivery id is remembered by default.
pub const DELIVERY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Replay protection: the delivery ids seen recently (at most `capacity`, each for at most
/// [`DELIVERY_TTL`]). GitHub redelivers with the same `X-GitHub-Delivery` id, and an attacker
/// replaying a captured delivery also reuses it.
#[derive(Debug)]
pub struct Deliveries {
    capacity: usize,
    ttl: Duration,
    seen: Mutex<SeenIds>,
}

#[derive(Debug, Default)]
struct SeenIds {
    at: HashMap<String, Instant>,
    order: VecDeque<(String, Instant)>,
}

impl Deliveries {
    /// Remembers up to `capacity` ids (at least one) for 24 hours each.
    pub fn new(capacity: usize) -> Self {
        Self::with_ttl(capacity, DELIVERY_TTL)
    }

    /// Remembers up to `capacity` ids (at least one) for `ttl` each.
    pub fn with_ttl(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            ttl,
            seen: Mutex::new(SeenIds::default()),
        }
    }

    /// True the first time an id is seen (and records it); false for a replay within the window.
    /// Empty ids are never "first time": a delivery without an id cannot be deduplicated.
    pub fn first_time(&self, delivery_id: &str) -> bool {
        if delivery_id.is_empty() {
            return false;
        }
        let now = Instant::now();
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Expire old entries (the queue is in insertion order, so oldest first).
        while let Some((id, at)) = seen.order.front() {
            if now.duration_since(*at) < self.ttl && seen.order.len() < self.capacity {
                break;
            }
            let (id, at) = (id.clone(), *at);
            seen.order.pop_front();
            if seen.at.get(&id) == Some(&at) {
                seen.at.remove(&id);
            }
        }
        if seen.at.contains_key(delivery_id) {
            return false;
        }
        seen.at.insert(delivery_id.to_string(), now);
        seen.order.push_back((delivery_id.to_string(), now));
        true
    }

    /// How many ids are currently remembered.
    pub fn len(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .at
            .len()
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A webhook event bowline understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `ping`: sent when a hook is created.
    Ping {
        /// GitHub's random aphorism.
        zen: String,
    },
    /// `push`: commits (or a tag) pushed, a ref created or deleted.
    Push(PushEvent),
    /// `pull_request`.
    PullRequest(PullRequestEvent),
    /// `issue_comment` (on an issue or a pull request).
    IssueComment(IssueCommentEvent),
    /// Any other event, by its `X-GitHub-Event` name.
    Other(String),
}

/// A `push` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushEvent {
    /// The repository pushed to.
    pub repo: RepoRef,
    /// The full ref, e.g. `refs/heads/main` or `refs/tags/v1`.
    pub git_ref: String,
    /// The ref's commit before the push (`000…0` when the ref was created).
    pub before: String,
    /// The ref's commit after the push (`000…0` when the ref was deleted).
    pub after: String,
    /// Whether the push created the ref.
    pub created: bool,
    /// Whether the push deleted the ref.
    pub deleted: bool,
    /// Whether the push was forced.
    pub forced: bool,
    /// Who pushed (the sender's login, else the pusher's name; empty when neither is given).
    pub sender: String,
}

impl PushEvent {
    /// The branch name when the ref is `refs/heads/<branch>`.
    pub fn branch(&self) -> Option<&str> {
        self.git_ref.strip_prefix("refs/heads/")
    }
}

/// What happened to a pull request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrAction {
    /// Opened.
    Opened,
    /// New commits on the head branch.
    Synchronize,
    /// Reopened.
    Reopened,
    /// Closed; `merged` tells whether it was merged.
    Closed {
        /// Whether the pull request was merged.
        merged: bool,
    },
    /// Any other action (labeled, edited, …), by name.
    Other(String),
}

/// A `pull_request` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequestEvent {
    /// What happened.
    pub action: PrAction,
    /// The base repository (where the pull request lives).
    pub repo: RepoRef,
    /// The pull request number.
    pub number: u64,
    /// The head commit.
    pub head_sha: String,
    /// The head branch name.
    pub head_ref: String,
    /// The repository the head branch lives in (differs from `repo` for forks; `None` when the
    /// fork was deleted).
    pub head_repo: Option<RepoRef>,
    /// The base branch name.
    pub base_ref: String,
    /// The merge commit, when GitHub reports one (after a merge).
    pub merge_commit_sha: Option<String>,
    /// Who triggered the event (login; empty when absent).
    pub sender: String,
    /// Who opened the pull request (login; empty when absent).
    pub author: String,
}

/// What happened to a comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommentAction {
    /// Created.
    Created,
    /// Edited.
    Edited,
    /// Deleted.
    Deleted,
    /// Any other action, by name.
    Other(String),
}

/// An `issue_comment` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueCommentEvent {
    /// What happened to the comment. ChatOps acts on `Created` only.
    pub action: CommentAction,
    /// The repository.
    pub repo: RepoRef,
    /// The issue or pull request number.
    pub issue_number: u64,
    /// Whether the issue is a pull request (`issue.pull_request` present).
    pub is_pull_request: bool,
    /// The comment id.
    pub comment_id: u64,
    /// The comment text.
    pub body: String,
    /// The comment author's login.
    pub author: String,
    /// The author's association with the repository (`OWNER`, `MEMBER`, `COLLABORATOR`,
    /// `CONTRIBUTOR`, `NONE`, …). Informational only: authorization uses the approvers list and
    /// the collaborator permission.
    pub author_association: String,
    /// Who opened the issue or pull request (login; empty when absent): a pull request's
    /// author, who may not approve their own change.
    pub issue_author: String,
}

/// The repository a delivery names (`repository.id` and `repository.full_name`), read from any
/// event's payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryRepository {
    /// GitHub's numeric repository id.
    pub id: Option<u64>,
    /// `owner/name`.
    pub full_name: Option<String>,
}

impl DeliveryRepository {
    /// Whether the delivery comes from `ours`: the full name matches (case-insensitively, as
    /// GitHub treats names) and, when `our_id` is known, the numeric id too (a repository
    /// deleted and re-created under the same name has a new id).
    pub fn is(&self, ours: &RepoRef, our_id: Option<u64>) -> bool {
        let name_matches = self
            .full_name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(&ours.to_string()));
        let id_matches = match our_id {
            Some(id) => self.id == Some(id),
            None => true,
        };
        name_matches && id_matches
    }

    /// How the repository is shown in logs (`owner/name #id`, or what is known of it).
    pub fn describe(&self) -> String {
        let name = self.full_name.as_deref().unwrap_or("(no full_name)");
        match self.id {
            Some(id) => format!("{name} #{id}"),
            None => name.to_string(),
        }
    }
}

/// The repository a delivery's payload names, `None` when it names none (e.g. the `ping` of an
/// organization or App hook) or the body is not a JSON object.
pub fn delivery_repository(body: &[u8]) -> Option<DeliveryRepository> {
    #[derive(serde::Deserialize)]
    struct Payload {
        repository: Option<Repository>,
    }
    #[derive(serde::Deserialize)]
    struct Repository {
        id: Option<u64>,
        full_name: Option<String>,
    }
    let payload: Payload = serde_json::from_slice(body).ok()?;
    let r = payload.repository?;
    Some(DeliveryRepository {
        id: r.id,
        full_name: r.full_name,
    })
}

/// Parses a delivery from its `X-GitHub-Event` header and body. Call it only after
/// [`verify_signature`] accepted the body.
pub fn parse_event(event_header: &str, body: &[u8]) -> Result<Event, WebhookError> {
    let event = event_header.trim().to_ascii_lowercase();
    let bad = |e: serde_json::Error| WebhookError::Payload {
        event: event.clone(),
        message: e.to_string(),
    };
    match event.as_str() {
        "ping" => {
            let p: wire::Ping = serde_json::from_slice(body).map_err(bad)?;
            Ok(Event::Ping { zen: p.zen })
        }
        "push" => {
            let p: wire::Push = serde_json::from_slice(body).map_err(bad)?;
            Ok(Event::Push(PushEvent {
                repo: p.repository.repo_ref(&event)?,
                git_ref: p.git_ref,
                before: p.before,
                after: p.after,
                created: p.created,
                deleted: p.deleted,
                forced: p.forced,
                sender: p
                    .sender
                    .map(|s| s.login)
                    .or(p.pusher.and_then(|p| p.name))
                    .unwrap_or_default(),
            }))
        }
        "pull_request" => {
            let p: wire::PullRequestPayload = serde_json::from_slice(body).map_err(bad)?;
            let action = match p.action.as_str() {
                "opened" => PrAction::Opened,
                "synchronize" => PrAction::Synchronize,
                "reopened" => PrAction::Reopened,
                "closed" => PrAction::Closed {
                    merged: p.pull_request.merged.unwrap_or(false),
                },
                other => PrAction::Other(other.to_string()),
            };
            let head_repo = match p.pull_request.head.repo {
                Some(r) => Some(r.repo_ref(&event)?),
                None => None,
            };
            Ok(Event::PullRequest(PullRequestEvent {
                action,
                repo: p.repository.repo_ref(&event)?,
                number: p.number.unwrap_or(p.pull_request.number),
                head_sha: p.pull_request.head.sha,
                head_ref: p.pull_request.head.git_ref,
                head_repo,
                base_ref: p.pull_request.base.git_ref,
                merge_commit_sha: p.pull_request.merge_commit_sha,
                sender: p.sender.map(|s| s.login).unwrap_or_default(),
                author: p.pull_request.user.map(|u| u.login).unwrap_or_default(),
            }))
        }
        "issue_comment" => {
            let p: wire::IssueComment = serde_json::from_slice(body).map_err(bad)?;
            let action = match p.action.as_str() {
                "created" => CommentAction::Created,
                "edited" => CommentAction::Edited,
                "deleted" => CommentAction::Deleted,
                other => CommentAction::Other(other.to_string()),
            };
            Ok(Event::IssueComment(IssueCommentEvent {
                action,
                repo: p.repository.repo_ref(&event)?,
                issue_number: p.issue.number,
                is_pull_request: p.issue.pull_request.is_some_and(|v| !v.is_null()),
                comment_id: p.comment.id,
                body: p.comment.body.unwrap_or_default(),
                author: p.comment.user.map(|u| u.login).unwrap_or_default(),
                author_association: p.comment.author_association.unwrap_or_default(),
                issue_author: p.issue.user.map(|u| u.login).unwrap_or_default(),
            }))
        }
        _ => Ok(Event::Other(event)),
    }
}

/// The subset of GitHub's payloads bowline reads.
mod wire {
    use serde::Deserialize;

    use super::{RepoRef, WebhookError};

    #[derive(Deserialize)]
    pub struct Ping {
        pub zen: String,
    }

    #[derive(Deserialize)]
    pub struct User {
        pub login: String,
    }

    #[derive(Deserialize)]
    pub struct Pusher {
        pub name: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct Owner {
        pub login: Option<String>,
        pub name: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct Repository {
        pub full_name: Option<String>,
        pub name: String,
        pub owner: Option<Owner>,
    }

    impl Repository {
        pub fn repo_ref(&self, event: &str) -> Result<RepoRef, WebhookError> {
            if let Some(r) = self.full_name.as_deref().and_then(RepoRef::parse) {
                return Ok(r);
            }
            let owner = self
                .owner
                .as_ref()
                .and_then(|o| o.login.clone().or_else(|| o.name.clone()));
            match owner {
                Some(owner) if !owner.is_empty() && !self.name.is_empty() => {
                    Ok(RepoRef::new(owner, self.name.clone()))
                }
                _ => Err(WebhookError::Payload {
                    event: event.to_string(),
                    message: "repository has no owner".into(),
                }),
            }
        }
    }

    #[derive(Deserialize)]
    pub struct Push {
        #[serde(rename = "ref")]
        pub git_ref: String,
        pub before: String,
        pub after: String,
        #[serde(default)]
        pub created: bool,
        #[serde(default)]
        pub deleted: bool,
        #[serde(default)]
        pub forced: bool,
        pub repository: Repository,
        pub sender: Option<User>,
        pub pusher: Option<Pusher>,
    }

    #[derive(Deserialize)]
    pub struct Branch {
        #[serde(rename = "ref")]
        pub git_ref: String,
        pub sha: String,
        pub repo: Option<Repository>,
    }

    #[derive(Deserialize)]
    pub struct PullRequest {
        pub number: u64,
        pub head: Branch,
        pub base: Branch,
        pub merged: Option<bool>,
        pub merge_commit_sha: Option<String>,
        pub user: Option<User>,
    }

    #[derive(Deserialize)]
    pub struct PullRequestPayload {
        pub action: String,
        pub number: Option<u64>,
        pub pull_request: PullRequest,
        pub repository: Repository,
        pub sender: Option<User>,
    }

    #[derive(Deserialize)]
    pub struct Issue {
        pub number: u64,
        pub pull_request: Option<serde_json::Value>,
        pub user: Option<User>,
    }

    #[derive(Deserialize)]
    pub struct Comment {
        pub id: u64,
        pub body: Option<String>,
        pub user: Option<User>,
        pub author_association: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct IssueComment {
        pub action: String,
        pub issue: Issue,
        pub comment: Comment,
        pub repository: Repository,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"It's a Secret to Everybody";

    #[test]
    fn github_test_vector() {
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(SECRET, b"Hello, World!"), sig);
        assert_eq!(
            verify_signature(SECRET, b"Hello, World!", Some(sig)),
            Ok(())
        );
        assert_eq!(
            verify_signature(
                SECRET,
                b"Hello, World!",
                Some(&sig.to_uppercase().replace("SHA256", "sha256"))
            ),
            Ok(())
        );
    }

    #[test]
    fn signature_refusals() {
        let sig = sign(SECRET, b"body");
        assert_eq!(
            verify_signature(SECRET, b"body", None),
            Err(WebhookError::MissingSignature)
        );
        assert_eq!(
            verify_signature(SECRET, b"body!", Some(&sig)),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify_signature(b"other", b"body", Some(&sig)),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify_signature(b"", b"body", Some(&sig)),
            Err(WebhookError::NoSecret)
        );
        for bad in [
            "",
            "sha1=abc",
            &sig[..sig.len() - 2],
            &format!("{}zz", &sig[..sig.len() - 2]),
            &sig["sha256=".len()..],
        ] {
            assert_eq!(
                verify_signature(SECRET, b"body", Some(bad)),
                Err(WebhookError::MalformedSignature),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_do_not_carry_the_secret() {
        let err = verify_signature(SECRET, b"x", Some("sha256=00")).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("Secret"));
    }

    #[test]
    fn deliveries_dedupe_and_bound() {
        let d = Deliveries::new(2);
        assert!(d.first_time("a"));
        assert!(!d.first_time("a"));
        assert!(d.first_time("b"));
        assert!(d.first_time("c")); // evicts "a"
        assert_eq!(d.len(), 2);
        assert!(d.first_time("a"));
        assert!(!d.first_time(""));
    }

    #[test]
    fn deliveries_expire() {
        let d = Deliveries::with_ttl(10, Duration::from_millis(1));
        assert!(d.first_time("a"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(d.first_time("a"));
    }

    #[test]
    fn delivery_repositories_match_by_name_and_id() {
        let ours = RepoRef::new("acme", "config");
        let body = br#"{"action":"opened","repository":{"id":42,"full_name":"ACME/Config"}}"#;
        let r = delivery_repository(body).unwrap();
        assert_eq!(r.id, Some(42));
        assert!(r.is(&ours, Some(42)));
        assert!(r.is(&ours, None), "by name only while the id is unknown");
        assert!(!r.is(&ours, Some(43)), "same name, another repository");
        assert!(!r.is(&RepoRef::new("acme", "other"), Some(42)));
        let no_id = delivery_repository(br#"{"repository":{"full_name":"acme/config"}}"#).unwrap();
        assert!(!no_id.is(&ours, Some(42)));
        assert_eq!(no_id.describe(), "acme/config");
        assert_eq!(r.describe(), "ACME/Config #42");
        assert_eq!(delivery_repository(br#"{"zen":"z"}"#), None);
        assert_eq!(delivery_repository(b"[1]"), None);
    }

    #[test]
    fn unknown_events_and_bad_payloads() {
        assert_eq!(
            parse_event("check_run", b"{}").unwrap(),
            Event::Other("check_run".into())
        );
        assert!(matches!(
            parse_event("push", b"{not json"),
            Err(WebhookError::Payload { .. })
        ));
        assert_eq!(
            parse_event("Ping", br#"{"zen":"z","hook_id":1}"#).unwrap(),
            Event::Ping { zen: "z".into() }
        );
    }
}

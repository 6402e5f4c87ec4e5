//! GitHub: webhook verification and event parsing, the REST client for commit statuses and pull
//! request comments, sticky comment rendering, and ChatOps commands.
//!
//! - [`webhook`]: `X-Hub-Signature-256` verification (constant time), delivery-id replay
//!   protection, typed events (`ping`, `push`, `pull_request`, `issue_comment`) and the
//!   repository a delivery names.
//! - [`client`]: [`GitHub`], a small REST client (api.github.com or a GitHub Enterprise
//!   `https://host/api/v3` base URL) with rate-limit and retry handling.
//! - [`comment`]: the one sticky PR comment per PR — hidden marker, collapsible sections, and
//!   truncation under GitHub's 65,536-character limit.
//! - [`chatops`]: `/bowline approve|reject|retry|rollback|plan` and who may use it.
//!
//! Secrets (the token, the webhook secret) never appear in logs, errors or `Debug` output.

pub mod chatops;
pub mod client;
pub mod comment;
pub mod webhook;

pub use chatops::{Command, has_write_access, is_authorized, parse_command};
pub use client::{CommentOutcome, CommitState, CommitStatus, ForgeError, GitHub, TeamMembership};
pub use comment::{COMMENT_LIMIT, CommentSection, SectionDiff, render_comment, sticky_marker};
pub use webhook::{
    CommentAction, Deliveries, DeliveryRepository, Event, IssueCommentEvent, PrAction,
    PullRequestEvent, PushEvent, WebhookError, delivery_repository, parse_event, verify_signature,
};

use serde::{Deserialize, Serialize};

/// A GitHub repository, `owner/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RepoRef {
    /// The owning user or organization login, e.g. `acme`.
    pub owner: String,
    /// The repository name, e.g. `config`.
    pub name: String,
}

impl RepoRef {
    /// A repository from its owner and name.
    pub fn new(owner: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            name: name.into(),
        }
    }

    /// Parses `owner/name`; `None` unless both parts are non-empty and there is exactly one `/`.
    pub fn parse(full_name: &str) -> Option<Self> {
        let (owner, name) = full_name.split_once('/')?;
        if owner.is_empty() || name.is_empty() || name.contains('/') {
            return None;
        }
        Some(Self::new(owner, name))
    }
}

impl std::fmt::Display for RepoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ref_parses_and_displays() {
        let r = RepoRef::parse("acme/config").unwrap();
        assert_eq!(r, RepoRef::new("acme", "config"));
        assert_eq!(r.to_string(), "acme/config");
        assert!(RepoRef::parse("acme").is_none());
        assert!(RepoRef::parse("/x").is_none());
        assert!(RepoRef::parse("a/b/c").is_none());
    }
}

/// The pull request a merge commit delivers, from GitHub's commit message conventions:
/// `Merge pull request #12 from …` (merge commits) or a first line ending in `(#12)` (squash
/// merges).
pub fn merged_pull_request(commit_message: &str) -> Option<u64> {
    let first = commit_message.lines().next()?.trim();
    if let Some(rest) = first.strip_prefix("Merge pull request #") {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        return digits.parse().ok();
    }
    let inner = first.strip_suffix(')')?;
    let at = inner.rfind("(#")?;
    inner[at + 2..].parse().ok()
}

#[cfg(test)]
mod merge_tests {
    use super::merged_pull_request;

    #[test]
    fn pull_requests_from_merge_messages() {
        assert_eq!(
            merged_pull_request("Merge pull request #12 from acme/feature\n\nbody"),
            Some(12)
        );
        assert_eq!(merged_pull_request("Bump image to 1.4 (#7)"), Some(7));
        assert_eq!(merged_pull_request("Bump image to 1.4 (#x)"), None);
        assert_eq!(merged_pull_request("Plain commit"), None);
        assert_eq!(merged_pull_request(""), None);
    }
}

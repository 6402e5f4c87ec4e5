//! A GitHub REST API server for tests.
//!
//! It serves, over plain HTTP on 127.0.0.1, the endpoints bowline uses, checks **every request
//! body against GitHub's published OpenAPI description** (`shared/github/openapi-subset.json`,
//! beside the repository clone; see [`spec::default_spec_path`]) and answers `422` with the
//! validation errors when a body does not match, and records every call. [`TestServer::start`]
//! runs it on a background thread with its own tokio runtime, for sync and async tests alike.
//!
//! # Endpoints
//!
//! Paths are served both at the root (`https://api.github.com` style) and under `/api/v3`
//! (GitHub Enterprise Server style).
//!
//! - `POST /repos/{owner}/{repo}/statuses/{sha}` — creates a commit status (`201`, the
//!   documented `status` body, a `Location` header).
//! - `GET /repos/{owner}/{repo}/commits/{ref}/statuses` — statuses of a sha, newest first,
//!   paginated.
//! - `GET /repos/{owner}/{repo}/commits/{ref}/status` — the combined status (latest per
//!   context).
//! - `GET /repos/{owner}/{repo}/issues/{issue_number}/comments` — comments, oldest first,
//!   paginated with `per_page` (default 30, at most 100) and `page`, with a `Link` header
//!   (`next`, `last`, `first`, `prev`) like GitHub's.
//! - `POST /repos/{owner}/{repo}/issues/{issue_number}/comments` — creates a comment (`201`).
//! - `PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}` — updates one (`200`, `404`).
//! - `GET /repos/{owner}/{repo}/collaborators/{username}/permission` — the permission set with
//!   [`TestServer::set_permission`] (default `none`).
//! - `GET /repos/{owner}/{repo}` — a repository registered with [`TestServer::set_repository`]
//!   (its numeric id and full name; names match case-insensitively, as on GitHub), else `404`.
//! - `GET /repos/{owner}/{repo}/pulls/{pull_number}` and `GET /repos/{owner}/{repo}/pulls`
//!   (`state` `open` by default, `closed` or `all`; paginated) — pull requests set with
//!   [`TestServer::set_pull_request`], else `404` / an empty list.
//! - `GET /orgs/{org}/teams/{team_slug}/memberships/{username}` — a membership set with
//!   [`TestServer::set_team_membership`] (`role`, `state`), else `404`.
//! - Other operations of the description (check runs, pull request files, creating pull
//!   requests) answer `501` after validation.
//!
//! Like GitHub, a commit status whose `description` is longer than 140 characters is refused
//! with `422`. Every answer of a documented status is checked against the description's
//! response schema; the findings are in [`Call::response_errors`].
//!
//! Every answer carries `x-ratelimit-*` headers. Requests without an `Authorization` header get
//! `401`; bodies that are not JSON get `400` ("Problems parsing JSON").
//!
//! # Fault injection
//!
//! [`TestServer::fail_next`] (any status, e.g. `502`) and [`TestServer::rate_limit_next`]
//! (primary limit: `403` with `x-ratelimit-remaining: 0` and `x-ratelimit-reset`; secondary:
//! `403` with `retry-after` and GitHub's message; or `429` with `retry-after`).
//! [`TestServer::outage`] and [`TestServer::fail_for`] fail every request for a while.

#![warn(missing_docs)]

mod http;
pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use serde_json::Value;

pub use spec::Spec;

/// Settings of a [`TestServer`].
#[derive(Clone, Debug)]
pub struct Options {
    /// The address to listen on (default `127.0.0.1:0`, a random port).
    pub listen: SocketAddr,
    /// The login that authors comments and statuses created through the API (default
    /// `bowline[bot]`).
    pub bot_login: String,
    /// The OpenAPI description (default [`spec::default_spec_path`]).
    pub spec_path: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            bot_login: "bowline[bot]".to_string(),
            spec_path: spec::default_spec_path(),
        }
    }
}

/// One request the server answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// URL path as received (with `/api/v3` when the client used it).
    pub path: String,
    /// Raw query string (empty when none).
    pub query: String,
    /// The OpenAPI operation id the request matched (`repos/get-collaborator-permission-level`
    /// for the permission endpoint), `None` for unknown routes.
    pub operation: Option<String>,
    /// The request body parsed as JSON (`None` when empty or not JSON).
    pub body: Option<Value>,
    /// The body as text.
    pub raw_body: String,
    /// Errors found validating the body against the description (empty when valid).
    pub validation_errors: Vec<String>,
    /// Errors found validating the server's own answer against the description's response
    /// schema (empty when valid or undocumented).
    pub response_errors: Vec<String>,
    /// The `Authorization` header as received.
    pub authorization: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// The response status.
    pub status: u16,
}

/// A comment stored by the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredComment {
    /// The comment id.
    pub id: u64,
    /// `owner/repo`.
    pub repo: String,
    /// The issue or pull request number.
    pub issue: u64,
    /// The author's login.
    pub user: String,
    /// The text.
    pub body: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last update time (RFC 3339).
    pub updated_at: String,
}

/// A commit status stored by the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredStatus {
    /// The status id.
    pub id: u64,
    /// `owner/repo`.
    pub repo: String,
    /// The commit (or ref) the status was posted to.
    pub sha: String,
    /// `error`, `failure`, `pending` or `success`.
    pub state: String,
    /// The context (default `default`, as on GitHub).
    pub context: String,
    /// The description, if any.
    pub description: Option<String>,
    /// The target URL, if any.
    pub target_url: Option<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
}

/// A pull request served by `pulls/get` and `pulls/list`, see [`TestServer::set_pull_request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequestSeed {
    /// The number.
    pub number: u64,
    /// `open` or `closed`.
    pub state: String,
    /// The title.
    pub title: String,
    /// The author's login.
    pub user: String,
    /// The head commit.
    pub head_sha: String,
    /// The head branch.
    pub head_ref: String,
    /// `owner/repo` of the head branch (a fork, or the repository itself); `None` when the
    /// fork was deleted.
    pub head_repo: Option<String>,
    /// The base branch.
    pub base_ref: String,
}

impl PullRequestSeed {
    /// An open pull request from a branch of `repo` itself into `main`.
    pub fn open(repo: &str, number: u64, user: &str, head_sha: &str) -> Self {
        Self {
            number,
            state: "open".into(),
            title: format!("Change #{number}"),
            user: user.into(),
            head_sha: head_sha.into(),
            head_ref: format!("change-{number}"),
            head_repo: Some(repo.into()),
            base_ref: "main".into(),
        }
    }
}

/// A rate limit to answer with, see [`TestServer::rate_limit_next`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimit {
    /// The primary limit: `403`, `x-ratelimit-remaining: 0`, `x-ratelimit-reset` this many
    /// seconds from now.
    Primary {
        /// Seconds until the reset.
        reset_in_secs: u64,
    },
    /// A secondary limit: `403` with `retry-after` and "You have exceeded a secondary rate
    /// limit".
    Secondary {
        /// The `retry-after` value in seconds.
        retry_after_secs: u64,
    },
    /// `429 Too Many Requests` with `retry-after`.
    TooMany {
        /// The `retry-after` value in seconds.
        retry_after_secs: u64,
    },
}

#[derive(Clone, Debug)]
pub(crate) enum FaultKind {
    Status(u16),
    RateLimit(RateLimit),
}

#[derive(Clone, Debug)]
pub(crate) struct Fault {
    pub method: Option<String>,
    pub path_contains: String,
    pub kind: FaultKind,
    pub remaining: usize,
}

/// The server's mutable state.
#[derive(Default)]
pub(crate) struct State {
    pub calls: Vec<Call>,
    pub comments: BTreeMap<u64, StoredComment>,
    pub statuses: Vec<StoredStatus>,
    pub permissions: HashMap<String, String>,
    /// Repositories by lower-cased full name: (full name, id).
    pub repositories: HashMap<String, (String, u64)>,
    /// Pull requests by (lower-cased repository, number).
    pub pulls: BTreeMap<(String, u64), PullRequestSeed>,
    /// Team memberships by lower-cased (org, team, user): (role, state).
    pub memberships: HashMap<(String, String, String), (String, String)>,
    pub faults: Vec<Fault>,
    /// During an outage every request fails with this status, until the instant if given.
    pub outage: Option<(u16, Option<std::time::Instant>)>,
    pub next_id: u64,
    pub used: u64,
}

pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub spec: Spec,
    pub options: Options,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The current time as GitHub prints it (RFC 3339, seconds, UTC).
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

struct Inner {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(tx) = self
            .shutdown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            // The server may already be gone; nothing to do then.
            let _ = tx.send(());
        }
        if let Some(thread) = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            // A panicked server thread has nothing left to clean up.
            let _ = thread.join();
        }
    }
}

/// A running GitHub API server. Clones share the server; it stops when the last one is dropped.
#[derive(Clone)]
pub struct TestServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("url", &self.url())
            .finish()
    }
}

impl TestServer {
    /// Starts a server on a random port of 127.0.0.1 with default [`Options`].
    ///
    /// # Panics
    ///
    /// When the OpenAPI description is missing or invalid, or the port cannot be bound.
    pub fn start() -> TestServer {
        Self::start_with(Options::default())
    }

    /// Starts a server with the given options, in a background thread with its own runtime.
    ///
    /// # Panics
    ///
    /// When the OpenAPI description is missing or invalid, or the address cannot be bound.
    pub fn start_with(options: Options) -> TestServer {
        Self::try_start_with(options)
            .unwrap_or_else(|e| panic!("cannot start the GitHub API test server: {e}"))
    }

    /// Like [`TestServer::start_with`], returning errors instead of panicking.
    pub fn try_start_with(options: Options) -> Result<TestServer, String> {
        let spec = Spec::load(&options.spec_path)?;
        let listener = std::net::TcpListener::bind(options.listen).map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("github-api-test-server")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_id: 1000,
                ..State::default()
            }),
            spec,
            options,
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = http::router(shared.clone());
        let thread = std::thread::Builder::new()
            .name("github-api-test-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("GitHub test server cannot listen: {e}");
                            return;
                        }
                    };
                    tokio::select! {
                        result = axum::serve(listener, router) => {
                            if let Err(e) = result {
                                tracing::error!("GitHub test server stopped: {e}");
                            }
                        }
                        _ = rx => {}
                    }
                });
                runtime.shutdown_background();
            })
            .map_err(|e| e.to_string())?;
        Ok(TestServer {
            inner: Arc::new(Inner {
                shared,
                addr,
                shutdown: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// The API base URL, e.g. `http://127.0.0.1:38123` (like `https://api.github.com`).
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The GitHub Enterprise style base URL, e.g. `http://127.0.0.1:38123/api/v3`.
    pub fn enterprise_url(&self) -> String {
        format!("{}/api/v3", self.url())
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// The loaded OpenAPI description (to validate bodies in tests).
    pub fn spec(&self) -> &Spec {
        &self.shared().spec
    }

    /// Every request answered so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.shared().lock().calls.clone()
    }

    /// The calls that matched operation `op_id` (e.g. `issues/create-comment`).
    pub fn calls_to(&self, op_id: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.operation.as_deref() == Some(op_id))
            .collect()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        self.shared().lock().calls.clear();
    }

    /// The comments on `owner/repo` issue `issue`, oldest first.
    pub fn comments(&self, repo: &str, issue: u64) -> Vec<StoredComment> {
        self.shared()
            .lock()
            .comments
            .values()
            .filter(|c| c.repo == repo && c.issue == issue)
            .cloned()
            .collect()
    }

    /// The statuses posted to `owner/repo` at `sha`, oldest first.
    pub fn statuses(&self, repo: &str, sha: &str) -> Vec<StoredStatus> {
        self.shared()
            .lock()
            .statuses
            .iter()
            .filter(|s| s.repo == repo && s.sha == sha)
            .cloned()
            .collect()
    }

    /// Adds a comment as `user` (e.g. a reviewer, or an older comment for pagination tests).
    /// Returns its id.
    pub fn seed_comment(&self, repo: &str, issue: u64, user: &str, body: &str) -> u64 {
        let mut state = self.shared().lock();
        state.add_comment(repo, issue, user, body).id
    }

    /// Sets a user's collaborator permission (`admin`, `maintain`, `write`, `triage`, `read`,
    /// `none`), for every repository.
    pub fn set_permission(&self, user: &str, permission: &str) {
        self.shared()
            .lock()
            .permissions
            .insert(user.to_ascii_lowercase(), permission.to_string());
    }

    /// Registers a repository for `GET /repos/{owner}/{repo}`: its full name `owner/repo` (as
    /// GitHub spells it) and numeric id.
    pub fn set_repository(&self, full_name: &str, id: u64) {
        self.shared()
            .lock()
            .repositories
            .insert(full_name.to_ascii_lowercase(), (full_name.to_string(), id));
    }

    /// Sets (adds or replaces) a pull request of `owner/repo`.
    pub fn set_pull_request(&self, repo: &str, pull: PullRequestSeed) {
        self.shared()
            .lock()
            .pulls
            .insert((repo.to_ascii_lowercase(), pull.number), pull);
    }

    /// Sets a user's membership of team `org/team`: `role` `member` or `maintainer`, `state`
    /// `active` or `pending`.
    pub fn set_team_membership(&self, org: &str, team: &str, user: &str, role: &str, state: &str) {
        self.shared().lock().memberships.insert(
            (
                org.to_ascii_lowercase(),
                team.to_ascii_lowercase(),
                user.to_ascii_lowercase(),
            ),
            (role.to_string(), state.to_string()),
        );
    }

    /// Removes a user's membership of team `org/team`.
    pub fn remove_team_membership(&self, org: &str, team: &str, user: &str) {
        self.shared().lock().memberships.remove(&(
            org.to_ascii_lowercase(),
            team.to_ascii_lowercase(),
            user.to_ascii_lowercase(),
        ));
    }

    /// The next `count` requests with this method (`None`: any) whose path contains
    /// `path_contains` fail with `status` and a GitHub error body.
    pub fn fail_next(&self, method: Option<&str>, path_contains: &str, status: u16, count: usize) {
        self.shared().lock().faults.push(Fault {
            method: method.map(str::to_ascii_uppercase),
            path_contains: path_contains.to_string(),
            kind: FaultKind::Status(status),
            remaining: count,
        });
    }

    /// Starts (`Some(status)`, e.g. `502`) or ends (`None`) an outage: meanwhile every
    /// request fails with that status, whatever its path.
    pub fn outage(&self, status: Option<u16>) {
        self.shared().lock().outage = status.map(|s| (s, None));
    }

    /// An outage of `duration` from now: every request fails with `status` until it ends.
    pub fn fail_for(&self, status: u16, duration: std::time::Duration) {
        self.shared().lock().outage = Some((status, Some(std::time::Instant::now() + duration)));
    }

    /// The next `count` requests whose path contains `path_contains` are rate limited.
    pub fn rate_limit_next(&self, path_contains: &str, limit: RateLimit, count: usize) {
        self.shared().lock().faults.push(Fault {
            method: None,
            path_contains: path_contains.to_string(),
            kind: FaultKind::RateLimit(limit),
            remaining: count,
        });
    }
}

impl State {
    pub(crate) fn add_comment(
        &mut self,
        repo: &str,
        issue: u64,
        user: &str,
        body: &str,
    ) -> StoredComment {
        self.next_id += 1;
        let at = now();
        let comment = StoredComment {
            id: self.next_id,
            repo: repo.to_string(),
            issue,
            user: user.to_string(),
            body: body.to_string(),
            created_at: at.clone(),
            updated_at: at,
        };
        self.comments.insert(comment.id, comment.clone());
        comment
    }
}

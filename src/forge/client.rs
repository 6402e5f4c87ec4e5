//! A small typed GitHub REST client: commit statuses, issue/PR comments (the sticky comment),
//! replies, collaborator permissions, team memberships, the repository's identity and pull
//! requests.
//!
//! Rate limits are honoured: a `403` with `x-ratelimit-remaining: 0` waits until
//! `x-ratelimit-reset`, a `429` or a secondary rate limit waits `retry-after` (both capped by
//! [`RetryPolicy::max_rate_limit_wait`]); `5xx` answers and connection failures are retried with
//! exponential backoff; other `4xx` answers are not retried. The two have separate budgets, so
//! a rate limit after a few `5xx` answers is still waited out. Retries within a call are kept
//! modest: what bowline shows on GitHub goes through the daemon's outbox, which retries for as
//! long as it takes. Errors name the endpoint and the status, never the token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, USER_AGENT};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::RepoRef;

/// GitHub's limit on a commit status description, in characters.
pub const DESCRIPTION_LIMIT: usize = 140;

/// The page size used when listing comments (GitHub's maximum).
const PER_PAGE: usize = 100;

/// At most this many pages of comments are read when looking for the sticky comment.
const MAX_PAGES: usize = 100;

/// An error talking to GitHub. Messages name the endpoint (`METHOD /path`) and never the token.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    /// The API base URL is not an absolute http(s) URL.
    #[error("invalid GitHub API URL {url:?}: {message}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why it was refused.
        message: String,
    },
    /// The token is empty or not a valid header value.
    #[error("invalid GitHub token: {0}")]
    InvalidToken(&'static str),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// GitHub answered with an error status (after retries, when retryable).
    #[error("{endpoint}: GitHub answered {status}: {message}")]
    Status {
        /// `METHOD /path` of the request.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// GitHub's `message` (shortened), or the reason phrase.
        message: String,
    },
    /// Still rate limited when retries ran out, or the limit resets later than the cap allows.
    #[error("{endpoint}: rate limited by GitHub ({status}); retry in {retry_after:?}")]
    RateLimited {
        /// `METHOD /path` of the request.
        endpoint: String,
        /// `403` or `429`.
        status: u16,
        /// How long GitHub asked to wait.
        retry_after: Duration,
    },
    /// The request did not complete (connection refused, timeout, …).
    #[error("{endpoint}: {message}")]
    Transport {
        /// `METHOD /path` of the request.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// An argument cannot be used (e.g. an empty sticky comment marker).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The answer was not the JSON expected.
    #[error("{endpoint}: unexpected response body: {message}")]
    Decode {
        /// `METHOD /path` of the request.
        endpoint: String,
        /// What did not parse.
        message: String,
    },
}

impl ForgeError {
    /// The HTTP status GitHub answered, when the error comes from one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ForgeError::Status { status, .. } | ForgeError::RateLimited { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// What kind of failure this is, for callers that retry later (the outbox) and metrics.
    pub fn failure(&self) -> Failure {
        match self {
            ForgeError::RateLimited { retry_after, .. } => Failure::RateLimited {
                retry_after: *retry_after,
            },
            ForgeError::Status { status, .. } if *status >= 500 => Failure::ServerError,
            // A garbled answer is GitHub's fault and may not happen again.
            ForgeError::Decode { .. } => Failure::ServerError,
            ForgeError::Transport { .. } => Failure::Network,
            _ => Failure::ClientError,
        }
    }

    /// How long to wait before the next attempt, when the error is worth retrying.
    fn retry_hint(&self) -> Option<Option<Duration>> {
        match self {
            ForgeError::RateLimited { retry_after, .. } => Some(Some(*retry_after)),
            ForgeError::Transport { .. } => Some(None),
            ForgeError::Status { status, .. } if *status >= 500 => Some(None),
            _ => None,
        }
    }
}

/// The kinds of failed GitHub calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A rate limit: not a failure of the request, try again after `retry_after`.
    RateLimited {
        /// How long GitHub asked to wait.
        retry_after: Duration,
    },
    /// A `5xx` answer (or a garbled one): try again later.
    ServerError,
    /// No answer (connection refused, timeout, …): try again later.
    Network,
    /// A `4xx` answer other than a rate limit, or a request bowline cannot make: the same
    /// request will not succeed.
    ClientError,
}

impl Failure {
    /// The `kind` label of `bowline_github_failures_total`.
    pub fn label(self) -> &'static str {
        match self {
            Failure::RateLimited { .. } => "rate_limited",
            Failure::ServerError => "server_error",
            Failure::Network => "network",
            Failure::ClientError => "client_error",
        }
    }
}

/// The state of a commit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommitState {
    /// In progress.
    Pending,
    /// Succeeded.
    Success,
    /// Failed (the change is bad).
    Failure,
    /// Errored (bowline could not decide).
    Error,
}

/// A commit status, e.g. context `bowline/plan` or `bowline/deploy/<app>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitStatus {
    /// The status context (its name on GitHub).
    pub context: String,
    /// The state.
    pub state: CommitState,
    /// A short description; truncated to 140 characters with `…`.
    pub description: String,
    /// A link shown with the status (e.g. to the execution).
    pub target_url: Option<String>,
}

/// What [`GitHub::upsert_sticky_comment`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommentOutcome {
    /// A new comment was created, with this id.
    Created(u64),
    /// The existing comment with this id was updated.
    Updated(u64),
    /// The existing comment with this id already had this body; nothing was sent.
    Unchanged(u64),
}

impl CommentOutcome {
    /// The comment id.
    pub fn id(&self) -> u64 {
        match self {
            CommentOutcome::Created(id) | CommentOutcome::Updated(id) => *id,
            CommentOutcome::Unchanged(id) => *id,
        }
    }
}

/// How requests are retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries of 5xx answers and connection failures after the first attempt (default 3).
    pub max_retries: usize,
    /// Rate-limit waits within one call (default 3); they do not use up `max_retries`.
    pub max_rate_limit_retries: usize,
    /// The first backoff delay for 5xx and connection failures (default 500 ms).
    pub min_backoff: Duration,
    /// The longest backoff delay (default 10 s).
    pub max_backoff: Duration,
    /// The longest wait for a rate limit to reset (default 60 s); a longer wait is capped to it.
    pub max_rate_limit_wait: Duration,
    /// The timeout of one request (default 30 s).
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            max_rate_limit_retries: 3,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            max_rate_limit_wait: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A GitHub REST API client for one token.
///
/// The base URL is `https://api.github.com` or, for GitHub Enterprise Server,
/// `https://HOST/api/v3`. The token is sent as a bearer token, marked sensitive, and never
/// printed (`Debug` redacts it).
#[derive(Clone)]
pub struct GitHub {
    base: Url,
    http: reqwest::Client,
    retry: RetryPolicy,
    on_failure: Option<FailureHook>,
}

/// Called with every failed request (each attempt), e.g. to count failures in metrics.
pub type FailureHook = std::sync::Arc<dyn Fn(Failure) + Send + Sync>;

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("api_url", &self.base.as_str())
            .field("token", &"<redacted>")
            .field("retry", &self.retry)
            .finish()
    }
}

#[derive(Serialize)]
struct StatusBody<'a> {
    state: CommitState,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_url: Option<&'a str>,
    description: String,
    context: &'a str,
}

#[derive(Serialize)]
struct CommentBody<'a> {
    body: &'a str,
}

#[derive(Deserialize)]
struct Comment {
    id: u64,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Deserialize)]
struct Permission {
    permission: String,
}

/// A user's membership of an organization team, as [`GitHub::team_membership`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TeamMembership {
    /// An active member (maintainers included; members of child teams count).
    Active,
    /// Invited but not yet accepted: not a member.
    Pending,
    /// Not a member (GitHub answered 404: no membership, no such team or user, or a team the
    /// token cannot see).
    None,
}

impl TeamMembership {
    /// Whether this makes the user a member.
    pub fn is_member(self) -> bool {
        self == TeamMembership::Active
    }
}

#[derive(Deserialize)]
struct Membership {
    state: String,
}

/// A repository as `GET /repos/{owner}/{repo}` describes it (the fields bowline reads).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Repository {
    /// GitHub's numeric id, which webhook deliveries carry as `repository.id`.
    pub id: u64,
    /// `owner/name` as GitHub spells it now (a renamed repository answers its new name).
    pub full_name: String,
}

/// A branch side of a pull request (`head` or `base`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PullRequestBranch {
    /// The branch name.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Its commit.
    pub sha: String,
    /// The repository it lives in (`None` when a fork was deleted).
    pub repo: Option<PullRequestRepo>,
}

/// The repository of a pull request branch.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PullRequestRepo {
    /// `owner/name`.
    pub full_name: String,
}

/// A user as GitHub answers it (the login only).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct UserLogin {
    /// The login.
    pub login: String,
}

/// A pull request as `GET /repos/{owner}/{repo}/pulls/{pull_number}` describes it (the fields
/// bowline reads).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PullRequest {
    /// Its number.
    pub number: u64,
    /// `open` or `closed`.
    pub state: String,
    /// The branch to merge.
    pub head: PullRequestBranch,
    /// The branch merged into.
    pub base: PullRequestBranch,
    /// Who opened it.
    pub user: Option<UserLogin>,
    /// Whether it was merged.
    #[serde(default)]
    pub merged: Option<bool>,
    /// The merge commit GitHub reports.
    #[serde(default)]
    pub merge_commit_sha: Option<String>,
}

impl PullRequest {
    /// Whether the pull request is open.
    pub fn is_open(&self) -> bool {
        self.state.eq_ignore_ascii_case("open")
    }

    /// The pull request as an event of `repo`, with `action` and `sender`, for the plan flow.
    pub fn to_event(
        &self,
        repo: &RepoRef,
        action: super::PrAction,
        sender: &str,
    ) -> super::PullRequestEvent {
        super::PullRequestEvent {
            action,
            repo: repo.clone(),
            number: self.number,
            head_sha: self.head.sha.clone(),
            head_ref: self.head.git_ref.clone(),
            head_repo: self
                .head
                .repo
                .as_ref()
                .and_then(|r| RepoRef::parse(&r.full_name)),
            base_ref: self.base.git_ref.clone(),
            merge_commit_sha: self.merge_commit_sha.clone(),
            sender: sender.to_string(),
            author: self
                .user
                .as_ref()
                .map(|u| u.login.clone())
                .unwrap_or_default(),
        }
    }
}

/// One successful answer.
struct Answer {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl GitHub {
    /// A client for `api_url` (e.g. `https://api.github.com` or `https://ghe.example/api/v3`)
    /// with `token`, and the default [`RetryPolicy`].
    pub fn new(api_url: &str, token: String) -> Result<GitHub, ForgeError> {
        Self::with_retry(api_url, token, RetryPolicy::default())
    }

    /// Like [`GitHub::new`] with a retry policy.
    pub fn with_retry(
        api_url: &str,
        token: String,
        retry: RetryPolicy,
    ) -> Result<GitHub, ForgeError> {
        let invalid = |message: &str| ForgeError::InvalidUrl {
            url: api_url.to_string(),
            message: message.to_string(),
        };
        let trimmed = api_url.trim().trim_end_matches('/');
        let mut base = Url::parse(&format!("{trimmed}/")).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if base.host_str().is_none() {
            return Err(invalid("no host"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(invalid("credentials belong in the token, not the URL"));
        }
        base.set_query(None);
        base.set_fragment(None);
        let token = token.trim();
        if token.is_empty() {
            return Err(ForgeError::InvalidToken("empty"));
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ForgeError::InvalidToken("not a valid header value"))?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            "x-github-api-version",
            HeaderValue::from_static("2022-11-28"),
        );
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("bowline/", env!("CARGO_PKG_VERSION"))),
        );
        // reqwest is built without a default crypto provider; ring is the one bowline uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(retry.request_timeout)
            // Never follow redirects to another host with the token.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ForgeError::Client(e.to_string()))?;
        Ok(GitHub {
            base,
            http,
            retry,
            on_failure: None,
        })
    }

    /// The same client, calling `hook` with every failed request (each attempt).
    pub fn with_failure_hook(mut self, hook: FailureHook) -> GitHub {
        self.on_failure = Some(hook);
        self
    }

    /// The API base URL, without a trailing slash.
    pub fn api_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The repository's identity (`GET /repos/{owner}/{repo}`): its numeric id and current
    /// full name.
    pub async fn get_repository(&self, repo: &RepoRef) -> Result<Repository, ForgeError> {
        let span = tracing::info_span!("github.get_repository", repo = %repo);
        async {
            let path = format!("repos/{}/{}", seg(&repo.owner), seg(&repo.name));
            let answer = self.send(Method::GET, &path, None).await?;
            decode(&endpoint(&Method::GET, &path), &answer.body)
        }
        .instrument(span)
        .await
    }

    /// Pull request `number` (`GET /repos/{owner}/{repo}/pulls/{pull_number}`).
    pub async fn get_pull_request(
        &self,
        repo: &RepoRef,
        number: u64,
    ) -> Result<PullRequest, ForgeError> {
        let span = tracing::info_span!("github.get_pull_request", repo = %repo, pr = number);
        async {
            let path = format!(
                "repos/{}/{}/pulls/{number}",
                seg(&repo.owner),
                seg(&repo.name)
            );
            let answer = self.send(Method::GET, &path, None).await?;
            decode(&endpoint(&Method::GET, &path), &answer.body)
        }
        .instrument(span)
        .await
    }

    /// Creates a commit status on `sha`.
    pub async fn set_status(
        &self,
        repo: &RepoRef,
        sha: &str,
        status: &CommitStatus,
    ) -> Result<(), ForgeError> {
        let span = tracing::info_span!("github.set_status", repo = %repo, sha, context = %status.context, state = ?status.state);
        async {
            let path = format!(
                "repos/{}/{}/statuses/{}",
                seg(&repo.owner),
                seg(&repo.name),
                seg(sha)
            );
            let body = StatusBody {
                state: status.state,
                target_url: status.target_url.as_deref(),
                description: truncate_chars(&status.description, DESCRIPTION_LIMIT),
                context: &status.context,
            };
            self.send(Method::POST, &path, Some(json(&body)?)).await?;
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Creates or updates the one comment on issue/PR `pr` whose body starts with `marker`
    /// (see [`super::sticky_marker`]), reading every page of comments. When several match, the
    /// oldest is updated. An identical body is not sent again. A body that does not start with
    /// the marker gets it prepended (on its own line), so the comment is found next time.
    pub async fn upsert_sticky_comment(
        &self,
        repo: &RepoRef,
        pr: u64,
        marker: &str,
        body: &str,
    ) -> Result<CommentOutcome, ForgeError> {
        let span = tracing::info_span!("github.upsert_sticky_comment", repo = %repo, pr, marker, outcome = tracing::field::Empty);
        async {
            if marker.trim().is_empty() {
                return Err(ForgeError::InvalidArgument("empty sticky comment marker"));
            }
            let owned;
            let body = if body.trim_start().starts_with(marker) {
                body
            } else {
                owned = format!("{marker}\n{body}");
                owned.as_str()
            };
            let outcome = match self.find_sticky(repo, pr, marker).await? {
                Some(existing) if existing.body.as_deref() == Some(body) => {
                    CommentOutcome::Unchanged(existing.id)
                }
                Some(existing) => {
                    let path = format!(
                        "repos/{}/{}/issues/comments/{}",
                        seg(&repo.owner),
                        seg(&repo.name),
                        existing.id
                    );
                    self.send(Method::PATCH, &path, Some(json(&CommentBody { body })?))
                        .await?;
                    CommentOutcome::Updated(existing.id)
                }
                None => CommentOutcome::Created(self.create_comment(repo, pr, body).await?),
            };
            tracing::Span::current().record("outcome", tracing::field::debug(&outcome));
            Ok(outcome)
        }
        .instrument(span)
        .await
    }

    /// Posts a new comment on issue/PR `issue` (e.g. a ChatOps reply).
    pub async fn reply(&self, repo: &RepoRef, issue: u64, body: &str) -> Result<(), ForgeError> {
        let span = tracing::info_span!("github.reply", repo = %repo, issue);
        async {
            self.create_comment(repo, issue, body).await?;
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// The collaborator permission of `user` on the repository: `admin`, `write`, `read` or
    /// `none` (also when GitHub answers 404: not a collaborator or no such user).
    pub async fn permission(&self, repo: &RepoRef, user: &str) -> Result<String, ForgeError> {
        let span = tracing::info_span!("github.permission", repo = %repo, user);
        async {
            let path = format!(
                "repos/{}/{}/collaborators/{}/permission",
                seg(&repo.owner),
                seg(&repo.name),
                seg(user)
            );
            match self.send(Method::GET, &path, None).await {
                Ok(answer) => {
                    let p: Permission = decode(&endpoint(&Method::GET, &path), &answer.body)?;
                    Ok(p.permission)
                }
                Err(e) if e.status() == Some(404) => Ok("none".to_string()),
                Err(e) => Err(e),
            }
        }
        .instrument(span)
        .await
    }

    /// The membership of `user` in team `team_slug` of organization `org`
    /// (`GET /orgs/{org}/teams/{team_slug}/memberships/{username}`). A 404 is
    /// [`TeamMembership::None`]; any other error is returned, so callers can fail closed.
    pub async fn team_membership(
        &self,
        org: &str,
        team_slug: &str,
        user: &str,
    ) -> Result<TeamMembership, ForgeError> {
        let span = tracing::info_span!("github.team_membership", org, team = team_slug, user);
        async {
            let path = format!(
                "orgs/{}/teams/{}/memberships/{}",
                seg(org),
                seg(team_slug),
                seg(user)
            );
            match self.send(Method::GET, &path, None).await {
                Ok(answer) => {
                    let m: Membership = decode(&endpoint(&Method::GET, &path), &answer.body)?;
                    Ok(match m.state.as_str() {
                        "active" => TeamMembership::Active,
                        _ => TeamMembership::Pending,
                    })
                }
                Err(e) if e.status() == Some(404) => Ok(TeamMembership::None),
                Err(e) => Err(e),
            }
        }
        .instrument(span)
        .await
    }

    async fn create_comment(
        &self,
        repo: &RepoRef,
        issue: u64,
        body: &str,
    ) -> Result<u64, ForgeError> {
        let path = format!(
            "repos/{}/{}/issues/{issue}/comments",
            seg(&repo.owner),
            seg(&repo.name)
        );
        let answer = self
            .send(Method::POST, &path, Some(json(&CommentBody { body })?))
            .await?;
        let created: Comment = decode(&endpoint(&Method::POST, &path), &answer.body)?;
        Ok(created.id)
    }

    async fn find_sticky(
        &self,
        repo: &RepoRef,
        issue: u64,
        marker: &str,
    ) -> Result<Option<Comment>, ForgeError> {
        let first = format!(
            "repos/{}/{}/issues/{issue}/comments?per_page={PER_PAGE}",
            seg(&repo.owner),
            seg(&repo.name)
        );
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(path) = next.take() {
            pages += 1;
            let answer = self.send(Method::GET, &path, None).await?;
            let comments: Vec<Comment> = decode(&endpoint(&Method::GET, &path), &answer.body)?;
            if let Some(found) = comments.into_iter().find(|c| {
                c.body
                    .as_deref()
                    .is_some_and(|b| b.trim_start().starts_with(marker))
            }) {
                return Ok(Some(found));
            }
            if pages >= MAX_PAGES {
                tracing::warn!(pages, "stopped looking for the sticky comment");
                break;
            }
            next = next_link(&answer.headers).and_then(|url| self.relative(&url));
        }
        Ok(None)
    }

    /// The part of an absolute URL under the base URL (a `Link` must stay on the API host, so
    /// the token never goes elsewhere).
    fn relative(&self, url: &str) -> Option<String> {
        let rest = url.strip_prefix(self.base.as_str())?;
        Some(rest.to_string())
    }

    /// Sends a request with retries; `path` is relative to the base URL (may hold a query).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ForgeError> {
        let endpoint = endpoint(&method, path);
        let url = self.base.join(path).map_err(|e| ForgeError::InvalidUrl {
            url: endpoint.clone(),
            message: e.to_string(),
        })?;
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.min_backoff)
            .with_max_delay(self.retry.max_backoff)
            .with_max_times(self.retry.max_retries)
            .with_jitter()
            .build();
        let cap = self.retry.max_rate_limit_wait;
        // Two budgets: rate-limit waits are not failures and do not use up the retries of
        // 5xx answers and connection failures.
        let mut rate_limit_waits = 0;
        loop {
            let error = match self.attempt(&method, &url, &endpoint, body.clone()).await {
                Ok(answer) => return Ok(answer),
                Err(e) => e,
            };
            if let Some(hook) = &self.on_failure {
                hook(error.failure());
            }
            let wait = match error.retry_hint() {
                Some(Some(wait)) if rate_limit_waits < self.retry.max_rate_limit_retries => {
                    rate_limit_waits += 1;
                    wait.min(cap)
                }
                Some(None) => match backoff.next() {
                    Some(wait) => wait,
                    None => return Err(error),
                },
                _ => return Err(error),
            };
            tracing::warn!(error = %error, ?wait, "retrying GitHub request");
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        endpoint: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ForgeError> {
        let span = tracing::debug_span!("github.request", endpoint, status = tracing::field::Empty);
        async {
            let mut request = self.http.request(method.clone(), url.clone());
            if let Some(body) = body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body);
            }
            let response = request.send().await.map_err(|e| ForgeError::Transport {
                endpoint: endpoint.to_string(),
                message: transport_message(&e),
            })?;
            let status = response.status();
            tracing::Span::current().record("status", status.as_u16());
            let headers = response.headers().clone();
            let body = response.bytes().await.map_err(|e| ForgeError::Transport {
                endpoint: endpoint.to_string(),
                message: transport_message(&e),
            })?;
            if status.is_success() {
                return Ok(Answer {
                    headers,
                    body: body.to_vec(),
                });
            }
            Err(classify(endpoint, status, &headers, &body))
        }
        .instrument(span)
        .await
    }
}

/// Turns an error answer into a [`ForgeError`], recognising rate limits.
fn classify(endpoint: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ForgeError {
    let message = error_message(status, body);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let retry_after = header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    let primary_exhausted = header("x-ratelimit-remaining") == Some("0");
    let secondary = message
        .to_ascii_lowercase()
        .contains("secondary rate limit")
        || message.to_ascii_lowercase().contains("abuse");
    let rate_limited = status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN
            && (primary_exhausted || retry_after.is_some() || secondary));
    if !rate_limited {
        return ForgeError::Status {
            endpoint: endpoint.to_string(),
            status: status.as_u16(),
            message,
        };
    }
    let wait = if let Some(wait) = retry_after {
        wait
    } else if primary_exhausted {
        let reset = header("x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // One extra second: the reset time is truncated to whole seconds.
        Duration::from_secs(reset.map(|r| r.saturating_sub(now) + 1).unwrap_or(60))
    } else {
        // GitHub's advice for secondary limits without retry-after: wait at least a minute.
        Duration::from_secs(60)
    };
    ForgeError::RateLimited {
        endpoint: endpoint.to_string(),
        status: status.as_u16(),
        retry_after: wait,
    }
}

/// GitHub's `message` field (and the first validation error), shortened; else the reason.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        message: Option<String>,
    }
    let message = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.message)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    truncate_chars(message.trim(), 300)
}

/// A transport error's message with its causes (the URL holds no secret).
fn transport_message(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

fn endpoint(method: &Method, path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    format!("{method} /{path}")
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, ForgeError> {
    serde_json::to_vec(value).map_err(|e| ForgeError::Decode {
        endpoint: "request body".into(),
        message: e.to_string(),
    })
}

fn decode<T: for<'de> Deserialize<'de>>(endpoint: &str, body: &[u8]) -> Result<T, ForgeError> {
    serde_json::from_slice(body).map_err(|e| ForgeError::Decode {
        endpoint: endpoint.to_string(),
        message: e.to_string(),
    })
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().eq_ignore_ascii_case("rel=\"next\""));
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| url.to_string())
    })
}

/// Percent-encodes one path segment (everything but unreserved characters).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// At most `limit` characters; a cut string ends with `…` (counted in the limit).
pub(crate) fn truncate_chars(s: &str, limit: usize) -> String {
    if s.chars().count() <= limit {
        return s.to_string();
    }
    let mut out: String = s.chars().take(limit.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_validates_url_and_token() {
        assert!(GitHub::new("https://api.github.com", "t".into()).is_ok());
        let ghe = GitHub::new("https://ghe.example/api/v3/", "t".into()).unwrap();
        assert_eq!(ghe.api_url(), "https://ghe.example/api/v3");
        assert!(matches!(
            GitHub::new("ftp://x", "t".into()),
            Err(ForgeError::InvalidUrl { .. })
        ));
        assert!(matches!(
            GitHub::new("not a url", "t".into()),
            Err(ForgeError::InvalidUrl { .. })
        ));
        assert!(matches!(
            GitHub::new("https://user:pw@x", "t".into()),
            Err(ForgeError::InvalidUrl { .. })
        ));
        assert!(matches!(
            GitHub::new("https://api.github.com", " ".into()),
            Err(ForgeError::InvalidToken(_))
        ));
        assert!(matches!(
            GitHub::new("https://api.github.com", "a\nb".into()),
            Err(ForgeError::InvalidToken(_))
        ));
    }

    #[test]
    fn debug_redacts_the_token() {
        let gh = GitHub::new("https://api.github.com", "ghp_supersecret".into()).unwrap();
        let debug = format!("{gh:?}");
        assert!(!debug.contains("supersecret"), "{debug}");
        assert!(debug.contains("redacted"));
    }

    #[test]
    fn description_is_truncated() {
        assert_eq!(truncate_chars("abc", 3), "abc");
        assert_eq!(truncate_chars("abcd", 3), "ab…");
        let long = "é".repeat(200);
        assert_eq!(
            truncate_chars(&long, DESCRIPTION_LIMIT).chars().count(),
            140
        );
    }

    #[test]
    fn link_header_next() {
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::LINK,
            HeaderValue::from_static(
                "<https://api.github.com/r?page=2>; rel=\"next\", <https://api.github.com/r?page=5>; rel=\"last\"",
            ),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/r?page=2")
        );
        h.insert(
            reqwest::header::LINK,
            HeaderValue::from_static("<https://api.github.com/r?page=1>; rel=\"prev\""),
        );
        assert_eq!(next_link(&h), None);
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(seg("acme"), "acme");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
        assert_eq!(seg("bot[bot]"), "bot%5Bbot%5D");
    }

    #[test]
    fn rate_limits_are_recognised() {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("x-ratelimit-reset", HeaderValue::from_static("0"));
        let e = classify("GET /x", StatusCode::FORBIDDEN, &h, b"{}");
        assert!(
            matches!(e, ForgeError::RateLimited { status: 403, .. }),
            "{e:?}"
        );
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        let e = classify("GET /x", StatusCode::TOO_MANY_REQUESTS, &h, b"");
        assert!(
            matches!(e, ForgeError::RateLimited { retry_after, .. } if retry_after == Duration::from_secs(7))
        );
        let e = classify(
            "GET /x",
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            br#"{"message":"You have exceeded a secondary rate limit."}"#,
        );
        assert!(matches!(e, ForgeError::RateLimited { .. }));
        let e = classify(
            "GET /x",
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            br#"{"message":"Resource not accessible by integration"}"#,
        );
        assert!(matches!(e, ForgeError::Status { status: 403, .. }));
        assert!(e.retry_hint().is_none());
        assert_eq!(
            e.to_string(),
            "GET /x: GitHub answered 403: Resource not accessible by integration"
        );
    }
}

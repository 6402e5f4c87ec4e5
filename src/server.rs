//! The HTTP surface of the daemon (axum): `POST /webhooks/github`, `GET /healthz`,
//! `GET /readyz`, `GET /metrics` (the only open endpoints besides the signed webhook) and the
//! JSON API under `/api/v1`, which needs a bearer token. Handlers translate HTTP to
//! [`crate::daemon`] calls; the behaviour lives there.
//!
//! The server is bounded ([`ServerLimits`]): requests handled at once (more are answered `503`
//! at once), webhook bodies (25 MiB, GitHub's cap; `413` beyond) and the time to receive one
//! (`408` for a sender that trickles it); [`LimitedListener`] bounds open connections.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::daemon::Daemon;
use crate::forge::{Event, PrAction, delivery_repository, parse_event, verify_signature};
use crate::store::{Decision, ExecutionFilter, ExecutionStatus, Judgment, StageStatus, StoreError};

/// Why API tokens could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A line is malformed.
    #[error("{file}:{line}: {message}")]
    Invalid {
        /// The tokens file.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Bearer tokens of the JSON API, each with the name requests are attributed to. Only
/// digests are kept; comparison is constant-time.
#[derive(Clone, Default)]
pub struct ApiTokens {
    tokens: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ApiTokens").field("names", &names).finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl ApiTokens {
    /// Parses a tokens file: one `name:token` per line; blank lines and `#` comments are
    /// skipped. Tokens must be at least 16 characters; names are what judgments record.
    pub fn parse(file: &str, text: &str) -> Result<ApiTokens, TokenError> {
        let mut tokens = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let invalid = |message: &str| TokenError::Invalid {
                file: file.to_string(),
                line: i + 1,
                message: message.to_string(),
            };
            let (name, token) = line
                .split_once(':')
                .ok_or_else(|| invalid("expected `name:token`"))?;
            let (name, token) = (name.trim(), token.trim());
            if name.is_empty() {
                return Err(invalid("the name before `:` is empty"));
            }
            if token.len() < 16 {
                return Err(invalid("the token is shorter than 16 characters"));
            }
            tokens.push((name.to_string(), digest(token)));
        }
        Ok(ApiTokens { tokens })
    }

    /// Whether no token is configured (the API then refuses every request).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The name of the token in an `Authorization: Bearer …` header, if it is one of ours.
    fn identify(&self, headers: &HeaderMap) -> Option<&str> {
        let given = headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?
            .trim();
        let given = digest(given);
        let mut found = None;
        // Every token is compared, so timing does not tell which one matched.
        for (name, token) in &self.tokens {
            if bool::from(token.ct_eq(&given)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// The largest webhook body accepted: GitHub caps payloads at 25 MB.
pub const WEBHOOK_BODY_LIMIT: usize = 25 * 1024 * 1024;

/// Bounds on what the server takes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Requests handled at once, at most, over the whole server; more are answered `503`.
    pub max_concurrent_requests: usize,
    /// The longest time to receive a webhook body; a slower sender is answered `408`.
    pub body_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_concurrent_requests: 256,
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// A listener that keeps at most a fixed number of connections open: the next one is accepted
/// only once one closes (it waits in the kernel's backlog meanwhile). A flood of connections
/// then cannot take the file descriptors the daemon needs for Git, GitHub and the clusters.
pub struct LimitedListener<L> {
    inner: L,
    permits: Arc<tokio::sync::Semaphore>,
}

impl<L> LimitedListener<L> {
    /// Wraps `inner`, keeping at most `max_connections` (at least one) open at once.
    pub fn new(inner: L, max_connections: usize) -> Self {
        LimitedListener {
            inner,
            permits: Arc::new(tokio::sync::Semaphore::new(max_connections.max(1))),
        }
    }
}

impl<L> axum::serve::Listener for LimitedListener<L>
where
    L: axum::serve::Listener,
{
    type Io = LimitedConnection<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed, so acquiring cannot fail; were it closed, connections
        // would go on unlimited rather than stop.
        let permit = Arc::clone(&self.permits).acquire_owned().await.ok();
        let (io, addr) = self.inner.accept().await;
        (
            LimitedConnection {
                io,
                _permit: permit,
            },
            addr,
        )
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection of a [`LimitedListener`]; its slot frees up when it is dropped.
pub struct LimitedConnection<T> {
    io: T,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for LimitedConnection<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for LimitedConnection<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

struct AppState {
    daemon: Arc<Daemon>,
    tokens: ApiTokens,
    limits: ServerLimits,
}

/// The router over `daemon`, with `tokens` guarding `/api/v1` and the default
/// [`ServerLimits`].
pub fn router(daemon: Arc<Daemon>, tokens: ApiTokens) -> Router {
    router_with(daemon, tokens, ServerLimits::default())
}

/// The router over `daemon`, with `tokens` guarding `/api/v1`, bounded by `limits`.
pub fn router_with(daemon: Arc<Daemon>, tokens: ApiTokens, limits: ServerLimits) -> Router {
    let overload = tower::ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
            let mut r = text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many requests at once; try again",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            r
        }))
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            limits.max_concurrent_requests.max(1),
        ));
    Router::new()
        .route(
            "/webhooks/github",
            post(webhook).layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT)),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/apps", get(apps))
        .route("/api/v1/executions", get(executions))
        .route("/api/v1/executions/{id}", get(execution))
        .route("/api/v1/executions/{id}/judgment", post(judgment))
        .route("/api/v1/executions/{id}/cancel", post(cancel))
        .with_state(Arc::new(AppState {
            daemon,
            tokens,
            limits,
        }))
        .layer(overload)
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn text(code: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    (code, body).into_response()
}

fn error_json(code: StatusCode, message: impl std::fmt::Display) -> Response {
    (code, axum::Json(json!({"error": message.to_string()}))).into_response()
}

/// Receives a webhook body within the time limit and the size limit of the route.
async fn read_body(state: &AppState, request: Request) -> Result<Bytes, (StatusCode, String)> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {WEBHOOK_BODY_LIMIT} bytes"),
        )
    };
    if declared.is_some_and(|n| n > WEBHOOK_BODY_LIMIT as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(state.limits.body_timeout, Bytes::from_request(request, &())).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(too_large())
        }
        Ok(Err(rejection)) => Err((rejection.status(), rejection.body_text())),
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "body not received within {}",
                humantime::format_duration(state.limits.body_timeout)
            ),
        )),
    }
}

/// Verifies, checks the repository of, de-duplicates and dispatches one GitHub delivery.
/// Work that takes time runs in the background; the answer comes at once (GitHub gives up
/// after 10 s).
#[tracing::instrument(level = "info", skip_all, fields(event, delivery))]
async fn webhook(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let daemon = &state.daemon;
    let headers = request.headers().clone();
    let event = header_str(&headers, "x-github-event").unwrap_or_default();
    let delivery = header_str(&headers, "x-github-delivery").unwrap_or_default();
    tracing::Span::current().record("event", event);
    tracing::Span::current().record("delivery", delivery);
    let count = |result: &str| daemon.metrics.webhooks.with_label_values(&[result]).inc();
    let body = match read_body(&state, request).await {
        Ok(body) => body,
        Err((code, message)) => {
            count(match code {
                StatusCode::PAYLOAD_TOO_LARGE => "too_large",
                StatusCode::REQUEST_TIMEOUT => "body_timeout",
                _ => "bad_payload",
            });
            tracing::warn!(status = code.as_u16(), %message, "webhook body refused");
            return text(code, message);
        }
    };
    let Some(secret) = daemon.webhook_secret.as_deref() else {
        count("no_secret");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook secret not configured",
        );
    };
    if let Err(e) = verify_signature(secret, &body, header_str(&headers, "x-hub-signature-256")) {
        count("bad_signature");
        tracing::warn!(error = %e, "webhook refused");
        return text(StatusCode::UNAUTHORIZED, e.to_string());
    }
    if delivery.is_empty() {
        count("bad_payload");
        return text(StatusCode::BAD_REQUEST, "missing X-GitHub-Delivery header");
    }
    let parsed = match parse_event(event, &body) {
        Ok(p) => p,
        Err(e) => {
            count("bad_payload");
            return text(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    // Only the config repository acts: the secret may be shared by other repositories' hooks
    // (an organization hook, a copied secret), and a delivery naming another repository must
    // not plan, fetch or judge anything here. A ping does nothing, with or without one.
    if !matches!(parsed, Event::Ping { .. })
        && let Some(from) = delivery_repository(&body)
    {
        let Some(ours) = daemon.config_repository() else {
            count("unknown_repository");
            tracing::warn!(repository = %from.describe(), "the config repository's GitHub name is not known yet (--github-repo or forge.github in bowline.yaml); delivery not acted on");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the config repository is not known yet",
            );
        };
        if ours.id.is_none() {
            tracing::info!(repo = %ours.full_name, "config repository id not known yet: matching the delivery by full name only");
            let d = daemon.clone();
            tokio::spawn(async move { d.learn_repository_id().await });
        }
        if !from.is(&ours.full_name, ours.id) {
            count("foreign_repository");
            tracing::info!(repository = %from.describe(), "delivery for another repository ignored");
            return text(StatusCode::OK, "not this repository");
        }
    }
    match daemon.first_delivery(delivery) {
        Ok(true) => {}
        Ok(false) => {
            count("duplicate");
            return text(StatusCode::OK, "duplicate delivery ignored");
        }
        Err(e) => {
            count("store_error");
            tracing::warn!(error = %e, "could not record the delivery");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "could not record the delivery; try again",
            );
        }
    }
    count("accepted");
    match parsed {
        Event::Ping { .. } => text(StatusCode::OK, "pong"),
        Event::Push(push) => {
            if push.branch() == Some(daemon.branch()) && !push.deleted {
                daemon.fetch_now.notify_one();
                text(StatusCode::ACCEPTED, "fetching")
            } else {
                text(StatusCode::OK, "not the tracked branch")
            }
        }
        Event::PullRequest(pr) => match pr.action {
            PrAction::Opened | PrAction::Synchronize | PrAction::Reopened => {
                let queued = daemon.request_plan(crate::daemon::PlanRequest {
                    pr,
                    live_requested_by: None,
                });
                match queued {
                    crate::daemon::PlanQueued::Started => text(StatusCode::ACCEPTED, "planning"),
                    crate::daemon::PlanQueued::Coalesced => text(
                        StatusCode::ACCEPTED,
                        "planning after the plan already running for this pull request",
                    ),
                }
            }
            PrAction::Closed { merged: true } if pr.base_ref == daemon.branch() => {
                if let Some(sha) = &pr.merge_commit_sha {
                    daemon.note_merge(sha, pr.number);
                }
                daemon.fetch_now.notify_one();
                text(StatusCode::ACCEPTED, "merged: fetching")
            }
            _ => text(StatusCode::OK, "ignored"),
        },
        Event::IssueComment(comment) => {
            let d = daemon.clone();
            tokio::spawn(async move {
                if let Err(e) = d.handle_comment(&comment).await {
                    tracing::warn!(error = %e, "ChatOps command failed");
                }
            });
            text(StatusCode::ACCEPTED, "comment received")
        }
        Event::Other(_) => text(StatusCode::OK, "ignored"),
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let source = state.daemon.source_state();
    let code = if source.last_good.is_some() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        axum::Json(json!({"ready": code == StatusCode::OK, "source": source})),
    )
        .into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.daemon.refresh_metrics();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.daemon.metrics.render(),
    )
        .into_response()
}

/// Why a request to the API was refused.
enum Refusal {
    /// No token is configured at all.
    Disabled,
    /// No or an unknown token.
    Unauthorized,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Disabled => error_json(
                StatusCode::FORBIDDEN,
                "the API is disabled: no API tokens are configured (--api-tokens-file)",
            ),
            Refusal::Unauthorized => {
                let mut r = error_json(StatusCode::UNAUTHORIZED, "missing or unknown bearer token");
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                r
            }
        }
    }
}

/// The name of the caller's token.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<String, Refusal> {
    if state.tokens.is_empty() {
        return Err(Refusal::Disabled);
    }
    state
        .tokens
        .identify(headers)
        .map(str::to_string)
        .ok_or(Refusal::Unauthorized)
}

async fn apps(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return r.into_response();
    }
    let source = state.daemon.source_state();
    let drift = state.daemon.drift();
    let apps: Vec<_> = source
        .inputs
        .iter()
        .map(
            |(name, digest)| json!({"name": name, "inputDigest": digest, "drift": drift.get(name)}),
        )
        .collect();
    axum::Json(json!({"commit": source.last_good, "apps": apps})).into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    app: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

async fn executions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return r.into_response();
    }
    let statuses = match query
        .status
        .as_deref()
        .map(|s| ExecutionStatus::parse(&s.to_ascii_uppercase()))
    {
        None => vec![],
        Some(Some(s)) => vec![s],
        Some(None) => return error_json(StatusCode::BAD_REQUEST, "unknown status"),
    };
    let filter = ExecutionFilter {
        app: query.app,
        statuses,
        limit: Some(query.limit.unwrap_or(100).min(1000)),
    };
    match state.daemon.store().executions(&filter) {
        Ok(list) => {
            let list: Vec<_> = list
                .into_iter()
                .map(|e| {
                    json!({"id": e.id, "app": e.app, "environments": e.environments, "pipeline": e.pipeline,
                           "revision": e.revision, "status": e.status, "createdAt": e.created_at,
                           "updatedAt": e.updated_at, "error": e.error,
                           "pullRequest": e.trigger.get("pullRequest")})
                })
                .collect();
            axum::Json(json!({"executions": list})).into_response()
        }
        Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn store_error(id: &str, e: StoreError) -> Response {
    match e {
        StoreError::NoExecution(_) => {
            error_json(StatusCode::NOT_FOUND, format!("no execution {id}"))
        }
        e @ StoreError::NoStage { .. } => error_json(StatusCode::NOT_FOUND, e),
        e @ StoreError::Conflict(_) => error_json(StatusCode::CONFLICT, e),
        other => error_json(StatusCode::INTERNAL_SERVER_ERROR, other),
    }
}

async fn execution(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return r.into_response();
    }
    let store = state.daemon.store();
    let result = store
        .execution(&id)
        .and_then(|e| Ok((e, store.stages(&id)?, store.events(&id)?)));
    match result {
        Ok((mut e, stages, events)) => {
            // The trigger holds every rendered object (Secrets too): it stays in the store.
            let pull_request = e.trigger.get("pullRequest").cloned();
            e.trigger = json!({"user": e.trigger.get("user"), "pullRequest": pull_request});
            let stages: Vec<_> = stages
                .into_iter()
                .map(|s| {
                    json!({"name": s.name, "type": s.stage_type, "environment": s.environment,
                           "status": s.status, "attempts": s.attempts, "startedAt": s.started_at,
                           "finishedAt": s.finished_at, "error": s.error, "outputs": s.outputs})
                })
                .collect();
            axum::Json(json!({"execution": e, "stages": stages, "events": events})).into_response()
        }
        Err(e) => store_error(&id, e),
    }
}

#[derive(Deserialize)]
struct JudgmentBody {
    decision: Decision,
    stage: Option<String>,
    input: Option<String>,
}

/// Records an approval or rejection of a waiting manual judgment, attributed to the token's
/// name.
async fn judgment(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let user = match authorize(&state, &headers) {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    let body: JudgmentBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let store = state.daemon.store();
    if let Err(e) = store.execution(&id) {
        return store_error(&id, e);
    }
    let stages = match store.stages(&id) {
        Ok(s) => s,
        Err(e) => return store_error(&id, e),
    };
    let waiting: Vec<_> = stages
        .iter()
        .filter(|s| s.stage_type == "manualJudgment" && s.status == StageStatus::Waiting)
        .filter(|s| body.stage.as_ref().is_none_or(|n| *n == s.name))
        .collect();
    let stage = match waiting.as_slice() {
        [one] => one.name.clone(),
        [] => {
            return error_json(
                StatusCode::CONFLICT,
                "no stage of this execution waits for a judgment",
            );
        }
        _ => {
            return error_json(
                StatusCode::CONFLICT,
                "several stages wait for a judgment: name one in \"stage\"",
            );
        }
    };
    let judgment = Judgment {
        decision: body.decision,
        user: user.clone(),
        input: body.input,
        at: Utc::now(),
    };
    match store.judge(&id, &stage, &judgment) {
        Ok(()) => {
            tracing::info!(execution = %id, stage = %stage, user = %user, decision = ?judgment.decision, "judgment recorded");
            (
                StatusCode::OK,
                axum::Json(json!({"execution": id, "stage": stage, "judgment": judgment})),
            )
                .into_response()
        }
        Err(e) => store_error(&id, e),
    }
}

async fn cancel(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let user = match authorize(&state, &headers) {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    match state.daemon.store().request_cancel(&id) {
        Ok(()) => {
            tracing::info!(execution = %id, user = %user, "cancellation requested");
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({"execution": id, "cancelRequested": true})),
            )
                .into_response()
        }
        Err(e) => store_error(&id, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_identify() {
        let tokens = ApiTokens::parse(
            "tokens",
            "# ops\nalice: aaaaaaaaaaaaaaaaaaaa\n\nci:bbbbbbbbbbbbbbbbbbbb\n",
        )
        .expect("valid");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            "Bearer bbbbbbbbbbbbbbbbbbbb".parse().unwrap(),
        );
        assert_eq!(tokens.identify(&headers), Some("ci"));
        headers.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert_eq!(tokens.identify(&headers), None);
        assert!(!format!("{tokens:?}").contains("aaaa"));
    }

    #[test]
    fn bad_token_lines_name_file_and_line() {
        let err = ApiTokens::parse("/etc/t", "ok:cccccccccccccccccccc\njusttoken\n").unwrap_err();
        assert_eq!(err.to_string(), "/etc/t:2: expected `name:token`");
        let err = ApiTokens::parse("/etc/t", "x:short\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/t:1: the token is shorter than 16 characters"
        );
    }
}

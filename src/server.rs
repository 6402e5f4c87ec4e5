//! The HTTP surface of the daemon (axum): `POST /webhooks/github`, `GET /healthz`,
//! `GET /readyz`, `GET /metrics` (the only open endpoints besides the signed webhook) and the
//! JSON API under `/api/v1`, which needs a bearer token whose scope allows the request (see
//! [`ApiTokens::parse`]). Handlers translate HTTP to [`crate::daemon`] calls; the behaviour
//! lives there.
//!
//! The server is bounded ([`ServerLimits`]): requests handled at once (more are answered `503`
//! at once), webhook bodies (25 MiB, GitHub's cap; `413` beyond) and the time to receive one
//! (`408` for a sender that trickles it); [`LimitedListener`] bounds open connections.

mod auth;

pub use auth::{ApiTokens, AuthLimits, Caller, Scope, TokenError};

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Extension, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::daemon::{Daemon, Enqueued};
use crate::forge::{Event, PrAction, delivery_repository, parse_event, verify_signature};
use crate::pipeline::operations::{self, OperationError};
use crate::store::{Decision, Execution, ExecutionFilter, ExecutionStatus, StoreError};

/// The largest webhook body accepted: GitHub caps payloads at 25 MB.
pub const WEBHOOK_BODY_LIMIT: usize = 25 * 1024 * 1024;

/// Bounds on what the server takes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Requests handled at once, at most, over the whole server; more are answered `503`.
    pub max_concurrent_requests: usize,
    /// The longest time to receive a webhook body; a slower sender is answered `408`.
    pub body_timeout: Duration,
    /// Throttling of failed API authentications.
    pub auth: AuthLimits,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_concurrent_requests: 256,
            body_timeout: Duration::from_secs(10),
            auth: AuthLimits::default(),
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

/// The client address of a connection, as the API's authentication throttle sees it: serve
/// the router with `into_make_service_with_connect_info::<ClientAddr>()`, over a TCP
/// listener or a [`LimitedListener`] of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

impl<L> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, LimitedListener<L>>>
    for ClientAddr
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, LimitedListener<L>>) -> Self {
        ClientAddr(*stream.remote_addr())
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
    throttle: auth::AuthThrottle,
    limits: ServerLimits,
}

/// The router over `daemon`, with `tokens` guarding `/api/v1` and the default
/// [`ServerLimits`]. Serve it with `into_make_service_with_connect_info::<ClientAddr>()` so
/// failed authentications are logged and throttled per client address.
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
    let state = Arc::new(AppState {
        daemon,
        tokens,
        throttle: auth::AuthThrottle::new(limits.auth),
        limits,
    });
    let api = Router::new()
        .route("/api/v1/apps", get(apps))
        .route("/api/v1/executions", get(executions))
        .route("/api/v1/executions/{id}", get(execution))
        .route("/api/v1/executions/{id}/judgment", post(judgment))
        .route("/api/v1/executions/{id}/cancel", post(cancel))
        .route("/api/v1/executions/{id}/retry", post(retry))
        .route("/api/v1/executions/{id}/rollback", post(rollback))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    Router::new()
        .route(
            "/webhooks/github",
            post(webhook).layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT)),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api)
        .with_state(state)
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
            daemon.request_repository_id();
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
                match daemon.request_reconcile() {
                    Enqueued::Refused => shutting_down(),
                    _ => text(StatusCode::ACCEPTED, "fetching"),
                }
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
                    crate::daemon::PlanQueued::Refused => shutting_down(),
                }
            }
            PrAction::Closed { merged: true } if pr.base_ref == daemon.branch() => {
                if let Some(sha) = &pr.merge_commit_sha {
                    daemon.note_merge(sha, pr.number, &pr.author);
                }
                match daemon.request_reconcile() {
                    Enqueued::Refused => shutting_down(),
                    _ => text(StatusCode::ACCEPTED, "merged: fetching"),
                }
            }
            _ => text(StatusCode::OK, "ignored"),
        },
        Event::IssueComment(comment) => match daemon.request_comment(comment) {
            Enqueued::Refused => shutting_down(),
            _ => text(StatusCode::ACCEPTED, "comment received"),
        },
        Event::Other(_) => text(StatusCode::OK, "ignored"),
    }
}

/// The answer to a delivery arriving while the daemon shuts down: GitHub may redeliver it.
fn shutting_down() -> Response {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting down; deliver again later",
    )
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

/// The apps of the last good commit (those the token may access).
async fn apps(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let source = state.daemon.source_state();
    let drift = state.daemon.drift();
    let apps: Vec<_> = source
        .inputs
        .iter()
        .filter(|(name, _)| caller.may_access(name))
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

/// Executions, newest first (of the apps the token may access).
async fn executions(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<ListQuery>,
) -> Response {
    if let Some(app) = &query.app
        && let Err(r) = caller.check_app(app)
    {
        return r;
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
    let limit = query.limit.unwrap_or(100).min(1000);
    // One query per app the token is limited to, merged newest first.
    let apps = match (query.app, &caller.apps) {
        (Some(app), _) => vec![Some(app)],
        (None, None) => vec![None],
        (None, Some(apps)) => apps.iter().cloned().map(Some).collect(),
    };
    let mut found: Result<Vec<Execution>, StoreError> = Ok(Vec::new());
    for app in apps {
        let filter = ExecutionFilter {
            app,
            statuses: statuses.clone(),
            limit: Some(limit),
        };
        found = found.and_then(|mut all: Vec<Execution>| {
            all.extend(state.daemon.store().executions(&filter)?);
            Ok(all)
        });
    }
    match found {
        Ok(mut list) => {
            list.sort_by(|a, b| (&b.created_at, &b.id).cmp(&(&a.created_at, &a.id)));
            list.truncate(limit);
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
        e @ (StoreError::Conflict(_) | StoreError::Duplicate { .. }) => {
            error_json(StatusCode::CONFLICT, e)
        }
        other => error_json(StatusCode::INTERNAL_SERVER_ERROR, other),
    }
}

/// The execution `id` of an app the token may access, `403` for another app.
#[allow(clippy::result_large_err)]
fn accessible(state: &AppState, caller: &Caller, id: &str) -> Result<Execution, Response> {
    let execution = state
        .daemon
        .store()
        .execution(id)
        .map_err(|e| store_error(id, e))?;
    caller.check_app(&execution.app)?;
    Ok(execution)
}

async fn execution(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let mut e = match accessible(&state, &caller, &id) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let store = state.daemon.store();
    let result = store
        .stages(&id)
        .and_then(|stages| Ok((stages, store.events(&id)?)));
    match result {
        Ok((stages, events)) => {
            // The trigger holds every rendered object (Secrets too): it stays in the store.
            let pull_request = e.trigger.get("pullRequest").cloned();
            let author = e.trigger.get("pullRequestAuthor").cloned();
            e.trigger = json!({"user": e.trigger.get("user"), "pullRequest": pull_request,
                               "pullRequestAuthor": author});
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

/// The answer to an operation that did nothing.
fn operation_error(id: &str, e: OperationError) -> Response {
    match e {
        OperationError::Store(e) => store_error(id, e),
        e @ OperationError::Refused(_) => error_json(StatusCode::FORBIDDEN, e),
        e @ (OperationError::NothingWaiting(_)
        | OperationError::SeveralWaiting { .. }
        | OperationError::NotJudgeable { .. }
        | OperationError::WrongState { .. }) => error_json(StatusCode::CONFLICT, e),
    }
}

/// Records an approval or rejection of a waiting manual judgment, attributed to the token's
/// name (see [`operations::judge`]: the change's author does not approve it, unless the app
/// sets `allowSelfApproval`).
async fn judgment(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = accessible(&state, &caller, &id) {
        return r;
    }
    let body: JudgmentBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let store = state.daemon.store();
    let result = match operations::waiting_in(&**store, &id, body.stage.as_deref()) {
        Ok(target) => {
            let stage = target.stage.clone();
            operations::judge(
                &**store,
                std::slice::from_ref(&target),
                body.decision,
                &caller.name,
                body.input.clone(),
                |_| async { Ok(()) },
            )
            .await
            .map(|()| stage)
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(stage) => (
            StatusCode::OK,
            axum::Json(json!({"execution": id, "stage": stage, "judgment": {
                "decision": body.decision, "user": caller.name, "input": body.input,
            }})),
        )
            .into_response(),
        Err(e) => operation_error(&id, e),
    }
}

async fn cancel(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = accessible(&state, &caller, &id) {
        return r;
    }
    match operations::cancel(&**state.daemon.store(), &id, &caller.name) {
        Ok(()) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"execution": id, "cancelRequested": true})),
        )
            .into_response(),
        Err(e) => operation_error(&id, e),
    }
}

/// `retry` (a failed, rejected or canceled execution, again) or `rollback` (what was applied
/// before a finished execution, restored): a new execution, started at once.
async fn start_from(state: &AppState, caller: &Caller, id: &str, retry: bool) -> Response {
    let execution = match accessible(state, caller, id) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let store = state.daemon.store();
    let new = if retry {
        operations::retry_of(&**store, &execution, &caller.name)
    } else {
        operations::rollback_of(&execution, &caller.name)
    };
    let created = match new.map(|new| store.create_execution(new)) {
        Ok(Ok(created)) => created,
        Ok(Err(e)) => return store_error(id, e),
        Err(e) => return operation_error(id, e),
    };
    tracing::info!(execution = %created.id, of = %id, user = %caller.name, retry, "execution started on request");
    let started = created.id.clone();
    state.daemon.spawn_execution(created);
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"execution": started, "of": id})),
    )
        .into_response()
}

async fn retry(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    start_from(&state, &caller, &id, true).await
}

async fn rollback(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    start_from(&state, &caller, &id, false).await
}

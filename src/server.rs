//! The HTTP surface of the daemon (axum): `POST /webhooks/github`, `GET /healthz`,
//! `GET /readyz`, `GET /metrics` (the only open endpoints besides the signed webhook) and the
//! JSON API under `/api/v1`, which needs a bearer token whose scope allows the request (see
//! [`ApiTokens::parse`]). Handlers translate HTTP to [`crate::daemon`] calls; the behaviour
//! lives there.

mod auth;

pub use auth::{ApiTokens, AuthLimits, Caller, Scope, TokenError};

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use crate::daemon::{
    Daemon, SELF_APPROVAL_REFUSED, allows_self_approval, is_author, recorded_author,
};
use crate::forge::{Event, PrAction, parse_event, verify_signature};
use crate::store::{
    Decision, Execution, ExecutionFilter, ExecutionStatus, Judgment, StageStatus, StoreError,
};

struct AppState {
    daemon: Arc<Daemon>,
    tokens: ApiTokens,
    throttle: auth::AuthThrottle,
}

/// The router over `daemon`, with `tokens` guarding `/api/v1` and the default
/// [`AuthLimits`]. Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so
/// failed authentications are logged and throttled per client address.
pub fn router(daemon: Arc<Daemon>, tokens: ApiTokens) -> Router {
    router_with(daemon, tokens, AuthLimits::default())
}

/// Like [`router`], with the throttling of failed authentications set by `limits`.
pub fn router_with(daemon: Arc<Daemon>, tokens: ApiTokens, limits: AuthLimits) -> Router {
    let state = Arc::new(AppState {
        daemon,
        tokens,
        throttle: auth::AuthThrottle::new(limits),
    });
    let api = Router::new()
        .route("/api/v1/apps", get(apps))
        .route("/api/v1/executions", get(executions))
        .route("/api/v1/executions/{id}", get(execution))
        .route("/api/v1/executions/{id}/judgment", post(judgment))
        .route("/api/v1/executions/{id}/cancel", post(cancel))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    Router::new()
        .route("/webhooks/github", post(webhook))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api)
        .with_state(state)
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

/// Verifies, de-duplicates and dispatches one GitHub delivery. Work that takes time runs in
/// the background; the answer comes at once (GitHub gives up after 10 s).
#[tracing::instrument(level = "info", skip_all, fields(event, delivery))]
async fn webhook(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let daemon = &state.daemon;
    let event = header_str(&headers, "x-github-event").unwrap_or_default();
    let delivery = header_str(&headers, "x-github-delivery").unwrap_or_default();
    tracing::Span::current().record("event", event);
    tracing::Span::current().record("delivery", delivery);
    let count = |result: &str| daemon.metrics.webhooks.with_label_values(&[result]).inc();
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
    if !daemon.deliveries.first_time(delivery) {
        count("duplicate");
        return text(StatusCode::OK, "duplicate delivery ignored");
    }
    let parsed = match parse_event(event, &body) {
        Ok(p) => p,
        Err(e) => {
            count("bad_payload");
            return text(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
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
                    daemon.note_merge(sha, pr.number, &pr.author);
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
        e @ StoreError::Conflict(_) => error_json(StatusCode::CONFLICT, e),
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

/// Records an approval or rejection of a waiting manual judgment, attributed to the token's
/// name. A token named like the recorded author of the change does not approve it, unless
/// the app sets `allowSelfApproval`.
async fn judgment(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let user = caller.name.clone();
    let execution = match accessible(&state, &caller, &id) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let body: JudgmentBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    if body.decision == Decision::Approve
        && !allows_self_approval(&execution.trigger)
        && is_author(&user, recorded_author(&execution.trigger))
    {
        return error_json(StatusCode::FORBIDDEN, SELF_APPROVAL_REFUSED);
    }
    let store = state.daemon.store();
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
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = accessible(&state, &caller, &id) {
        return r;
    }
    let user = caller.name;
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

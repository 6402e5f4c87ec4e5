//! The HTTP surface: one fallback handler that routes by the OpenAPI description.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::{
    Call, FaultKind, PullRequestSeed, RateLimit, Shared, StoredComment, StoredStatus, now,
};

const DOCS: &str = "https://docs.github.com/rest";
const RATE_LIMIT: u64 = 5000;
const PERMISSION_OP: &str = "repos/get-collaborator-permission-level";
/// GitHub's limit on a commit status description.
const DESCRIPTION_LIMIT: usize = 140;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

struct Reply {
    status: u16,
    body: Value,
    headers: Vec<(String, String)>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Reply {
            status,
            body,
            headers: Vec::new(),
        }
    }

    fn error(status: u16, message: &str) -> Self {
        Reply::json(
            status,
            json!({"message": message, "documentation_url": DOCS, "status": status.to_string()}),
        )
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

fn epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn handle(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let full_path = uri.path().to_string();
    let query = uri.query().unwrap_or_default().to_string();
    let (prefix, path) = match full_path.strip_prefix("/api/v3") {
        Some(rest) if rest.starts_with('/') => ("/api/v3", rest.to_string()),
        _ => ("", full_path.clone()),
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let authorization = header("authorization");
    let host = header("host").unwrap_or_else(|| "127.0.0.1".into());
    let raw_body = String::from_utf8_lossy(&body).into_owned();
    let parsed: Option<Result<Value, String>> = (!body.is_empty())
        .then(|| serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string()));

    // Route: the description's operations, plus the collaborator permission endpoint.
    let (op_id, params) = match shared.spec.find(method.as_str(), &path) {
        Some((op, params)) => (Some(op.id.clone()), params),
        None => match permission_route(&method, &path) {
            Some(params) => (Some(PERMISSION_OP.to_string()), params),
            None => (None, HashMap::new()),
        },
    };

    let mut validation_errors = Vec::new();
    let reply = 'reply: {
        if authorization.as_deref().is_none_or(|a| a.trim().is_empty()) {
            break 'reply Reply::error(401, "Requires authentication");
        }
        let Some(op) = op_id.as_deref() else {
            break 'reply Reply::error(404, "Not Found");
        };
        let body_value = match &parsed {
            Some(Ok(v)) => Some(v.clone()),
            Some(Err(_)) => break 'reply Reply::error(400, "Problems parsing JSON"),
            None => None,
        };
        if shared.spec.has_request_body(op) {
            let value = body_value.clone().unwrap_or(Value::Null);
            validation_errors = shared.spec.validate_request(op, &value);
            if !validation_errors.is_empty() {
                let message = format!("Invalid request.\n\n{}", validation_errors.join("\n"));
                break 'reply Reply::json(
                    422,
                    json!({
                        "message": message,
                        "errors": validation_errors,
                        "documentation_url": DOCS,
                        "status": "422",
                    }),
                );
            }
        }
        if let Some(status) = outage_status(&shared) {
            break 'reply fault_reply(FaultKind::Status(status));
        }
        if let Some(fault) = take_fault(&shared, method.as_str(), &full_path) {
            break 'reply fault_reply(fault);
        }
        let base = format!("http://{host}{prefix}");
        serve(&shared, op, &params, &query, body_value, &base)
    };

    let response_errors = match op_id.as_deref() {
        Some(op) => shared
            .spec
            .validate_response(op, reply.status, &reply.body)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut state = shared.lock();
    state.used += 1;
    let remaining = RATE_LIMIT.saturating_sub(state.used);
    state.calls.push(Call {
        method: method.to_string(),
        path: full_path,
        query,
        operation: op_id,
        body: parsed.and_then(Result::ok),
        raw_body,
        validation_errors,
        response_errors,
        authorization,
        user_agent: header("user-agent"),
        status: reply.status,
    });
    drop(state);

    let mut response = (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(reply.body),
    )
        .into_response();
    let h = response.headers_mut();
    let mut set = |name: &str, value: &str| {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            h.insert(name, value);
        }
    };
    set("x-ratelimit-limit", &RATE_LIMIT.to_string());
    set("x-ratelimit-remaining", &remaining.to_string());
    set("x-ratelimit-reset", &(epoch() + 3600).to_string());
    set("x-ratelimit-used", &(RATE_LIMIT - remaining).to_string());
    set("x-ratelimit-resource", "core");
    set("x-github-api-version-selected", "2022-11-28");
    set("content-type", "application/json; charset=utf-8");
    for (name, value) in &reply.headers {
        set(name, value);
    }
    response
}

fn permission_route(method: &Method, path: &str) -> Option<HashMap<String, String>> {
    if method != Method::GET {
        return None;
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["repos", owner, repo, "collaborators", user, "permission"] => Some(HashMap::from([
            ("owner".to_string(), (*owner).to_string()),
            ("repo".to_string(), (*repo).to_string()),
            ("username".to_string(), (*user).to_string()),
        ])),
        _ => None,
    }
}

/// The status every request gets during an outage, if one is on.
fn outage_status(shared: &Shared) -> Option<u16> {
    let mut state = shared.lock();
    let (status, until) = state.outage?;
    if until.is_some_and(|t| std::time::Instant::now() >= t) {
        state.outage = None;
        return None;
    }
    Some(status)
}

fn take_fault(shared: &Shared, method: &str, path: &str) -> Option<FaultKind> {
    let mut state = shared.lock();
    let fault = state.faults.iter_mut().find(|f| {
        f.remaining > 0
            && f.method.as_deref().is_none_or(|m| m == method)
            && path.contains(&f.path_contains)
    })?;
    fault.remaining -= 1;
    let kind = fault.kind.clone();
    state.faults.retain(|f| f.remaining > 0);
    Some(kind)
}

fn fault_reply(kind: FaultKind) -> Reply {
    match kind {
        FaultKind::Status(status) => {
            let message = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Injected failure");
            Reply::error(status, message)
        }
        FaultKind::RateLimit(RateLimit::Primary { reset_in_secs }) => Reply::error(
            403,
            "API rate limit exceeded for installation ID 1. If you reach out to GitHub Support \
             for help, please include the request ID.",
        )
        .header("x-ratelimit-remaining", "0")
        .header("x-ratelimit-reset", (epoch() + reset_in_secs).to_string()),
        FaultKind::RateLimit(RateLimit::Secondary { retry_after_secs }) => Reply::error(
            403,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try \
             again.",
        )
        .header("retry-after", retry_after_secs.to_string()),
        FaultKind::RateLimit(RateLimit::TooMany { retry_after_secs }) => {
            Reply::error(429, "Too Many Requests")
                .header("retry-after", retry_after_secs.to_string())
        }
    }
}

fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> &'a str {
    params.get(name).map(String::as_str).unwrap_or_default()
}

fn serve(
    shared: &Shared,
    op: &str,
    params: &HashMap<String, String>,
    query: &str,
    body: Option<Value>,
    base: &str,
) -> Reply {
    let repo = format!("{}/{}", param(params, "owner"), param(params, "repo"));
    let bot = shared.options.bot_login.as_str();
    let body = body.unwrap_or(Value::Null);
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_string);
    match op {
        "repos/create-commit-status" => {
            if text("description").is_some_and(|d| d.chars().count() > DESCRIPTION_LIMIT) {
                return Reply::json(
                    422,
                    json!({
                        "message": "Validation Failed",
                        "errors": [{
                            "resource": "Status",
                            "code": "custom",
                            "field": "description",
                            "message": "description is too long (maximum is 140 characters)",
                        }],
                        "documentation_url": DOCS,
                        "status": "422",
                    }),
                );
            }
            let sha = param(params, "sha").to_string();
            let mut state = shared.lock();
            state.next_id += 1;
            let status = StoredStatus {
                id: state.next_id,
                repo: repo.clone(),
                sha: sha.clone(),
                state: text("state").unwrap_or_default(),
                context: text("context").unwrap_or_else(|| "default".into()),
                description: text("description"),
                target_url: text("target_url"),
                created_at: now(),
            };
            state.statuses.push(status.clone());
            drop(state);
            let url = format!("{base}/repos/{repo}/statuses/{sha}");
            Reply::json(201, status_json(shared, &status, base, bot)).header("location", url)
        }
        "repos/list-commit-statuses-for-ref" => {
            let sha = param(params, "ref");
            let mut list: Vec<Value> = shared
                .lock()
                .statuses
                .iter()
                .filter(|s| s.repo == repo && s.sha == sha)
                .map(|s| status_json(shared, s, base, bot))
                .collect();
            list.reverse();
            paginate(
                list,
                query,
                &format!("{base}/repos/{repo}/commits/{sha}/statuses"),
            )
        }
        "repos/get-combined-status-for-ref" => {
            let sha = param(params, "ref");
            let state = shared.lock();
            let mut latest: Vec<&StoredStatus> = Vec::new();
            for s in state.statuses.iter().rev() {
                if s.repo == repo && s.sha == sha && !latest.iter().any(|l| l.context == s.context)
                {
                    latest.push(s);
                }
            }
            let combined = if latest
                .iter()
                .any(|s| s.state == "error" || s.state == "failure")
            {
                "failure"
            } else if latest.is_empty() || latest.iter().any(|s| s.state == "pending") {
                "pending"
            } else {
                "success"
            };
            let mut body = shared
                .spec
                .example("combined-commit-status")
                .unwrap_or_else(|| json!({}));
            body["state"] = json!(combined);
            body["sha"] = json!(sha);
            body["total_count"] = json!(latest.len());
            body["statuses"] =
                Value::Array(latest.iter().map(|s| simple_status_json(s, base)).collect());
            Reply::json(200, body)
        }
        "issues/list-comments" => {
            let issue: u64 = param(params, "issue_number").parse().unwrap_or(0);
            let list: Vec<Value> = shared
                .lock()
                .comments
                .values()
                .filter(|c| c.repo == repo && c.issue == issue)
                .map(|c| comment_json(shared, c, base))
                .collect();
            paginate(
                list,
                query,
                &format!("{base}/repos/{repo}/issues/{issue}/comments"),
            )
        }
        "issues/create-comment" => {
            let issue: u64 = param(params, "issue_number").parse().unwrap_or(0);
            let comment =
                shared
                    .lock()
                    .add_comment(&repo, issue, bot, &text("body").unwrap_or_default());
            let url = format!("{base}/repos/{repo}/issues/comments/{}", comment.id);
            Reply::json(201, comment_json(shared, &comment, base)).header("location", url)
        }
        "issues/update-comment" => {
            let id: u64 = param(params, "comment_id").parse().unwrap_or(0);
            let mut state = shared.lock();
            let Some(comment) = state.comments.get_mut(&id).filter(|c| c.repo == repo) else {
                return Reply::error(404, "Not Found");
            };
            comment.body = text("body").unwrap_or_default();
            comment.updated_at = now();
            let comment = comment.clone();
            drop(state);
            Reply::json(200, comment_json(shared, &comment, base))
        }
        PERMISSION_OP => {
            let user = param(params, "username");
            let permission = shared
                .lock()
                .permissions
                .get(&user.to_ascii_lowercase())
                .cloned()
                .unwrap_or_else(|| "none".into());
            // GitHub's `permission` field keeps the legacy names; `role_name` has the role.
            let legacy = match permission.as_str() {
                "maintain" => "write",
                "triage" => "read",
                other => other,
            };
            let mut user_json = user_json(user);
            user_json["permissions"] = json!({
                "admin": legacy == "admin",
                "maintain": permission == "maintain" || legacy == "admin",
                "push": legacy == "admin" || legacy == "write",
                "triage": legacy != "none",
                "pull": legacy != "none",
            });
            user_json["role_name"] = json!(permission);
            Reply::json(
                200,
                json!({"permission": legacy, "role_name": permission, "user": user_json}),
            )
        }
        "repos/get" => {
            let Some((full_name, id)) = shared
                .lock()
                .repositories
                .get(&repo.to_ascii_lowercase())
                .cloned()
            else {
                return Reply::error(404, "Not Found");
            };
            Reply::json(200, repository_json(shared, &full_name, id, base))
        }
        "pulls/get" => {
            let number: u64 = param(params, "pull_number").parse().unwrap_or(0);
            let Some(pull) = shared
                .lock()
                .pulls
                .get(&(repo.to_ascii_lowercase(), number))
                .cloned()
            else {
                return Reply::error(404, "Not Found");
            };
            Reply::json(200, pull_json(shared, &repo, &pull, base, true))
        }
        "pulls/list" => {
            let wanted = query
                .split('&')
                .find_map(|p| p.strip_prefix("state="))
                .unwrap_or("open")
                .to_string();
            if !matches!(wanted.as_str(), "open" | "closed" | "all") {
                return Reply::json(
                    422,
                    json!({"message": "Validation Failed", "documentation_url": DOCS, "status": "422"}),
                );
            }
            let key = repo.to_ascii_lowercase();
            // Newest first, as GitHub sorts by creation by default.
            let list: Vec<Value> = shared
                .lock()
                .pulls
                .iter()
                .rev()
                .filter(|((r, _), p)| *r == key && (wanted == "all" || p.state == wanted))
                .map(|(_, p)| pull_json(shared, &repo, p, base, false))
                .collect();
            paginate(list, query, &format!("{base}/repos/{repo}/pulls"))
        }
        "teams/get-membership-for-user-in-org" => {
            let (org, team, user) = (
                param(params, "org"),
                param(params, "team_slug"),
                param(params, "username"),
            );
            let Some((role, state)) = shared
                .lock()
                .memberships
                .get(&(
                    org.to_ascii_lowercase(),
                    team.to_ascii_lowercase(),
                    user.to_ascii_lowercase(),
                ))
                .cloned()
            else {
                return Reply::error(404, "Not Found");
            };
            Reply::json(
                200,
                json!({
                    "url": format!("{base}/organizations/1/team/1/memberships/{user}"),
                    "role": role,
                    "state": state,
                }),
            )
        }
        _ => Reply::error(501, "Not implemented by the GitHub API test server"),
    }
}

/// `owner/name` split (an empty owner or name when malformed).
fn split_repo(full_name: &str) -> (&str, &str) {
    full_name.split_once('/').unwrap_or((full_name, ""))
}

fn repository_json(shared: &Shared, full_name: &str, id: u64, base: &str) -> Value {
    let mut v = shared
        .spec
        .example("full-repository-default-response")
        .unwrap_or_else(|| json!({}));
    let (owner, name) = split_repo(full_name);
    v["id"] = json!(id);
    v["name"] = json!(name);
    v["full_name"] = json!(full_name);
    v["owner"] = user_json(owner);
    v["owner"]["type"] = json!("Organization");
    v["url"] = json!(format!("{base}/repos/{full_name}"));
    v["html_url"] = json!(format!("https://github.com/{full_name}"));
    // The example describes a fork with its parent and source; this one is no fork.
    v["fork"] = json!(false);
    // Required by the schema, missing from the documented example.
    if v.get("language").is_none() {
        v["language"] = Value::Null;
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("parent");
        o.remove("source");
        o.remove("template_repository");
    }
    v
}

/// A pull request as `pulls/get` (`full`) or `pulls/list` answers it.
fn pull_json(shared: &Shared, repo: &str, p: &PullRequestSeed, base: &str, full: bool) -> Value {
    let mut v = if full {
        shared.spec.example("pull-request")
    } else {
        shared
            .spec
            .example("pull-request-simple-items")
            .and_then(|items| items.get(0).cloned())
    }
    .unwrap_or_else(|| json!({}));
    let n = p.number;
    v["id"] = json!(10_000 + n);
    v["number"] = json!(n);
    v["state"] = json!(p.state);
    v["title"] = json!(p.title);
    v["user"] = user_json(&p.user);
    v["url"] = json!(format!("{base}/repos/{repo}/pulls/{n}"));
    v["html_url"] = json!(format!("https://github.com/{repo}/pull/{n}"));
    v["issue_url"] = json!(format!("{base}/repos/{repo}/issues/{n}"));
    v["statuses_url"] = json!(format!("{base}/repos/{repo}/statuses/{}", p.head_sha));
    // The documented example names a team without its `type` (a known upstream inconsistency).
    v["requested_teams"] = json!([]);
    let side = |git_ref: &str, sha: &str, full_name: Option<&str>| {
        let (owner, _) = split_repo(full_name.unwrap_or(repo));
        json!({
            "label": format!("{owner}:{git_ref}"),
            "ref": git_ref,
            "sha": sha,
            "user": user_json(owner),
            "repo": full_name.map(|f| repository_json(shared, f, 1, base)),
        })
    };
    v["head"] = side(&p.head_ref, &p.head_sha, p.head_repo.as_deref());
    v["base"] = side(
        &p.base_ref,
        "0000000000000000000000000000000000000000",
        Some(repo),
    );
    if p.state == "closed" {
        v["closed_at"] = json!(now());
    } else {
        v["closed_at"] = Value::Null;
        v["merged_at"] = Value::Null;
        v["merge_commit_sha"] = Value::Null;
    }
    if full {
        v["merged"] = json!(false);
        v["merged_by"] = Value::Null;
    }
    v
}

fn user_json(login: &str) -> Value {
    let is_bot = login.ends_with("[bot]");
    json!({
        "login": login,
        "id": 1000 + login.len(),
        "node_id": "MDQ6VXNlcjE=",
        "avatar_url": "https://github.com/images/error/octocat_happy.gif",
        "gravatar_id": "",
        "url": format!("https://api.github.com/users/{login}"),
        "html_url": format!("https://github.com/{login}"),
        "followers_url": format!("https://api.github.com/users/{login}/followers"),
        "following_url": format!("https://api.github.com/users/{login}/following{{/other_user}}"),
        "gists_url": format!("https://api.github.com/users/{login}/gists{{/gist_id}}"),
        "starred_url": format!("https://api.github.com/users/{login}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("https://api.github.com/users/{login}/subscriptions"),
        "organizations_url": format!("https://api.github.com/users/{login}/orgs"),
        "repos_url": format!("https://api.github.com/users/{login}/repos"),
        "events_url": format!("https://api.github.com/users/{login}/events{{/privacy}}"),
        "received_events_url": format!("https://api.github.com/users/{login}/received_events"),
        "type": if is_bot { "Bot" } else { "User" },
        "site_admin": false,
    })
}

fn comment_json(shared: &Shared, c: &StoredComment, base: &str) -> Value {
    let mut v = shared
        .spec
        .example("issue-comment")
        .unwrap_or_else(|| json!({}));
    v["id"] = json!(c.id);
    v["node_id"] = json!(format!("IC_{}", c.id));
    v["url"] = json!(format!("{base}/repos/{}/issues/comments/{}", c.repo, c.id));
    v["html_url"] = json!(format!(
        "https://github.com/{}/pull/{}#issuecomment-{}",
        c.repo, c.issue, c.id
    ));
    v["issue_url"] = json!(format!("{base}/repos/{}/issues/{}", c.repo, c.issue));
    v["body"] = json!(c.body);
    v["user"] = user_json(&c.user);
    v["created_at"] = json!(c.created_at);
    v["updated_at"] = json!(c.updated_at);
    v["author_association"] = json!("NONE");
    v
}

fn status_json(shared: &Shared, s: &StoredStatus, base: &str, bot: &str) -> Value {
    let mut v = shared.spec.example("status").unwrap_or_else(|| json!({}));
    v["id"] = json!(s.id);
    v["node_id"] = json!(format!("SC_{}", s.id));
    v["url"] = json!(format!("{base}/repos/{}/statuses/{}", s.repo, s.sha));
    v["state"] = json!(s.state);
    v["description"] = json!(s.description);
    v["target_url"] = json!(s.target_url);
    v["context"] = json!(s.context);
    v["created_at"] = json!(s.created_at);
    v["updated_at"] = json!(s.created_at);
    v["creator"] = user_json(bot);
    v
}

fn simple_status_json(s: &StoredStatus, base: &str) -> Value {
    json!({
        "url": format!("{base}/repos/{}/statuses/{}", s.repo, s.sha),
        "avatar_url": null,
        "id": s.id,
        "node_id": format!("SC_{}", s.id),
        "state": s.state,
        "description": s.description,
        "target_url": s.target_url,
        "context": s.context,
        "created_at": s.created_at,
        "updated_at": s.created_at,
    })
}

/// One page of `items` (`per_page`, default 30, at most 100; `page` from 1) with GitHub's
/// `Link` header.
fn paginate(items: Vec<Value>, query: &str, url: &str) -> Reply {
    let mut per_page = 30usize;
    let mut page = 1usize;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("per_page", v)) => per_page = v.parse().unwrap_or(30).clamp(1, 100),
            Some(("page", v)) => page = v.parse().unwrap_or(1).max(1),
            _ => {}
        }
    }
    let last = items.len().div_ceil(per_page).max(1);
    let start = (page - 1).saturating_mul(per_page).min(items.len());
    let end = (start + per_page).min(items.len());
    let page_items = items[start..end].to_vec();
    let link = |p: usize, rel: &str| format!("<{url}?per_page={per_page}&page={p}>; rel=\"{rel}\"");
    let mut links = Vec::new();
    if page > 1 {
        links.push(link(page - 1, "prev"));
    }
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
    }
    let reply = Reply::json(200, Value::Array(page_items));
    if links.is_empty() {
        reply
    } else {
        reply.header("link", links.join(", "))
    }
}

//! The HTTP surface: routing, request decoding, responses, the request log and faults.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::resources::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{Event, Op, State, Write};
use crate::{RequestRecord, Shared, controllers, discovery};

/// The router: one handler for every path.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(e: &ApiError) -> Response {
    let mut resp = json_response(e.code, &e.body());
    if e.code == 429 || e.code == 503 {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
    }
    resp
}

/// A parsed request.
struct Req {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Req {
    fn header(&self, name: header::HeaderName) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .get(name)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    fn dry_run(&self) -> bool {
        self.param("dryRun") == Some("All")
    }
}

async fn handle(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw_query = uri.query().unwrap_or_default().to_string();
    let req = Req {
        method,
        path: uri.path().to_string(),
        query: parse_query(&raw_query),
        headers,
        body,
    };
    let fault = take_fault(&shared, &req);
    let resp = match fault {
        Some(e) => error_response(&e),
        None => route(&shared, &req),
    };
    let record = RequestRecord {
        method: req.method.to_string(),
        path: req.path.clone(),
        query: raw_query,
        content_type: req
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        status: resp.status().as_u16(),
        dry_run: req.dry_run(),
    };
    tracing::debug!(
        method = %record.method,
        path = %record.path,
        query = %record.query,
        status = record.status,
        "kube API test server request"
    );
    shared.lock().requests.push(record);
    resp
}

fn take_fault(shared: &Shared, req: &Req) -> Option<ApiError> {
    let mut state = shared.lock();
    let method = req.method.as_str();
    let fault = state.faults.iter_mut().find(|f| {
        f.remaining > 0
            && f.method.as_deref().is_none_or(|m| m == method)
            && req.path.contains(&f.path_contains)
    })?;
    fault.remaining -= 1;
    let code = fault.status;
    state.faults.retain(|f| f.remaining > 0);
    Some(ApiError::for_code(code))
}

fn route(shared: &Arc<Shared>, req: &Req) -> Response {
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let accept = req.header(header::ACCEPT);
    let state = || shared.lock();
    match segs.as_slice() {
        ["version"] => json_response(200, &discovery::version()),
        ["healthz" | "readyz" | "livez", ..] => {
            let mut resp = (StatusCode::OK, "ok").into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            resp
        }
        ["api"] => {
            if discovery::wants_aggregated(&accept) {
                aggregated_response(&discovery::aggregated(&state().types, true))
            } else {
                let host = req.header(header::HOST);
                json_response(200, &discovery::api_versions(&host))
            }
        }
        ["apis"] => {
            if discovery::wants_aggregated(&accept) {
                aggregated_response(&discovery::aggregated(&state().types, false))
            } else {
                json_response(200, &discovery::api_group_list(&state().types))
            }
        }
        ["api", version] => match discovery::resource_list(&state().types, "", version) {
            Some(doc) => json_response(200, &doc),
            None => not_found_path(),
        },
        ["apis", group] => match discovery::api_group(&state().types, group) {
            Some(doc) => json_response(200, &doc),
            None => not_found_path(),
        },
        ["apis", group, version] => {
            match discovery::resource_list(&state().types, group, version) {
                Some(doc) => json_response(200, &doc),
                None => not_found_path(),
            }
        }
        ["openapi", "v2"] if accept.contains("protobuf") => {
            // A protobuf `openapi_v2.Document` holding only `swagger: "2.0"` (field 1).
            let mut resp = (StatusCode::OK, Bytes::from_static(b"\x0a\x032.0")).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                ),
            );
            resp
        }
        ["openapi", "v2"] => json_response(200, &discovery::openapi_v2()),
        ["openapi", "v3"] => json_response(200, &discovery::openapi_v3_index(&state().types)),
        ["openapi", "v3", rest @ ..] => {
            let path = rest.join("/");
            if path == "version" {
                return json_response(
                    200,
                    &json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": crate::KUBERNETES_VERSION}, "paths": {}}),
                );
            }
            match discovery::openapi_v3_doc(&state().types, &path) {
                Some(doc) => json_response(200, &doc),
                None => not_found_path(),
            }
        }
        ["api", version, rest @ ..] => resource(shared, req, "", version, rest),
        ["apis", group, version, rest @ ..] => resource(shared, req, group, version, rest),
        _ => not_found_path(),
    }
}

fn aggregated_response(doc: &Value) -> Response {
    let mut resp = json_response(200, doc);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(discovery::AGGREGATED),
    );
    resp
}

fn not_found_path() -> Response {
    error_response(&ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    ))
}

/// A resource request after path parsing.
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_target(
    state: &State,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Target, ApiError> {
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !(group.is_empty()
                && matches!(*plural, "status" | "finalize")
                && tail.is_empty()) =>
        {
            (Some((*ns).to_string()), {
                let mut v = vec![*plural];
                v.extend_from_slice(tail);
                v
            })
        }
        other => (None, other.to_vec()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some((*name).to_string()), None),
        [plural, name, sub] => (*plural, Some((*name).to_string()), Some((*sub).to_string())),
        _ => return Err(not_found()),
    };
    let rt = state
        .find_type(group, version, plural)
        .ok_or_else(not_found)?;
    if namespace.is_some() && !rt.namespaced {
        return Err(not_found());
    }
    Ok(Target {
        rt,
        namespace,
        name,
        subresource,
    })
}

fn resource(
    shared: &Arc<Shared>,
    req: &Req,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Response {
    let target = {
        let state = shared.lock();
        parse_target(&state, group, version, rest)
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => return error_response(&e),
    };
    let result = match req.method {
        Method::GET if target.name.is_none() && is_watch(req) => {
            return watch(shared, req, &target);
        }
        Method::GET => read(shared, req, &target),
        Method::POST if target.name.is_none() => write(shared, req, &target),
        Method::PUT | Method::PATCH if target.name.is_some() => write(shared, req, &target),
        Method::DELETE => delete(shared, req, &target),
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".to_string(),
        )),
    };
    match result {
        Ok((code, body)) => json_response(code, &body),
        Err(e) => error_response(&e),
    }
}

fn is_watch(req: &Req) -> bool {
    matches!(req.param("watch"), Some("true" | "1"))
}

fn selectors(req: &Req) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(req.param("labelSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(req.param("fieldSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

fn read(shared: &Arc<Shared>, req: &Req, t: &Target) -> Result<(u16, Value), ApiError> {
    let state = shared.lock();
    let accept = req.header(header::ACCEPT);
    if let Some(name) = &t.name {
        let scale = t.subresource.as_deref() == Some("scale") && t.rt.has_scale();
        if let Some(sub) = &t.subresource
            && !(sub == "status" && t.rt.has_status || scale)
        {
            return Err(ApiError::not_found_raw(
                &t.rt.group,
                &format!("{}/{sub}", t.rt.plural),
                name,
            ));
        }
        let obj = state.get(&t.rt, t.namespace.as_deref(), name)?;
        if scale {
            return Ok((200, to_scale(&obj)));
        }
        if discovery::wants_table(&accept) {
            return Ok((200, discovery::table(&t.rt, &[obj], &state.rv.to_string())));
        }
        if discovery::wants_metadata(&accept) {
            return Ok((200, discovery::partial_metadata(&obj)));
        }
        return Ok((200, obj));
    }
    let (labels, fields) = selectors(req)?;
    let mut items = state.list(&t.rt, t.namespace.as_deref(), &labels, &fields);
    let rv = state.rv.to_string();
    drop(state);
    let start: usize = match req.param("continue") {
        Some(token) => token
            .parse()
            .map_err(|_| ApiError::bad_request("continue key is not valid"))?,
        None => 0,
    };
    let mut metadata = json!({"resourceVersion": rv});
    if start > 0 {
        items.drain(..start.min(items.len()));
    }
    if let Some(limit) = req
        .param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        && items.len() > limit
    {
        let remaining = items.len() - limit;
        items.truncate(limit);
        metadata["continue"] = json!((start + limit).to_string());
        metadata["remainingItemCount"] = json!(remaining);
    }
    if discovery::wants_table(&accept) {
        let mut table = discovery::table(&t.rt, &items, &rv);
        table["metadata"] = metadata;
        return Ok((200, table));
    }
    if discovery::wants_metadata(&accept) {
        let items: Vec<Value> = items.iter().map(discovery::partial_metadata).collect();
        return Ok((
            200,
            json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": metadata,
                "items": items,
            }),
        ));
    }
    Ok((
        200,
        json!({
            "kind": format!("{}List", t.rt.kind),
            "apiVersion": t.rt.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    ))
}

/// The default field manager: the `User-Agent` up to the first `/`, like the real server.
fn default_manager(req: &Req) -> String {
    let ua = req.header(header::USER_AGENT);
    let prefix = ua.split('/').next().unwrap_or_default().trim();
    if prefix.is_empty() {
        "unknown".to_string()
    } else {
        prefix.chars().take(128).collect()
    }
}

fn parse_body(req: &Req, content_type: &str) -> Result<Value, ApiError> {
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/apply-patch+yaml, application/merge-patch+json, application/strategic-merge-patch+json, application/json-patch+json (got {content_type})"
            ),
        ));
    }
    if let Ok(v) = serde_json::from_slice::<Value>(&req.body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(&req.body)
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
    serde_yaml::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

fn write(shared: &Arc<Shared>, req: &Req, t: &Target) -> Result<(u16, Value), ApiError> {
    let content_type = req.header(header::CONTENT_TYPE);
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    if let Some(dry) = req.param("dryRun")
        && dry != "All"
    {
        return Err(ApiError::bad_request(format!(
            "Invalid dryRun value: {dry:?} (only \"All\" is supported)"
        )));
    }
    if let Some(v) = req.param("fieldValidation")
        && !matches!(v, "Strict" | "Warn" | "Ignore")
    {
        return Err(ApiError::bad_request(format!(
            "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {v:?}"
        )));
    }
    let body = parse_body(req, &content_type)?;
    let is_apply = req.method == Method::PATCH && media == "application/apply-patch+yaml";
    let force = match req.param("force") {
        Some("true") if !is_apply => {
            return Err(ApiError::bad_request(
                "force is only allowed for apply patch",
            ));
        }
        Some("true") => true,
        _ => false,
    };
    let manager = match req.param("fieldManager") {
        Some(m) if m.len() > 128 => {
            return Err(ApiError::bad_request(
                "fieldManager: Too long: may not be more than 128 bytes",
            ));
        }
        Some(m) => m.to_string(),
        None if is_apply => {
            return Err(ApiError::bad_request(
                "PATCH /apply requires fieldManager: fieldManager is required for apply requests",
            ));
        }
        None => default_manager(req),
    };
    let op = match (&req.method, media.as_str()) {
        (&Method::POST, _) => Op::Create(body),
        (&Method::PUT, _) => Op::Update(body),
        (_, "application/apply-patch+yaml") => Op::Apply(body),
        (_, "application/merge-patch+json") => Op::MergePatch(body),
        (_, "application/strategic-merge-patch+json") => Op::StrategicPatch(body),
        (_, "application/json-patch+json") => Op::JsonPatch(body),
        (_, other) => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
                ),
            ));
        }
    };
    let (op, scale) = if t.subresource.as_deref() == Some("scale") && t.rt.has_scale() {
        (scale_op(shared, t, op)?, true)
    } else {
        (op, false)
    };
    let w = Write {
        rt: t.rt.clone(),
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        subresource: t.subresource.clone(),
        manager,
        dry_run: req.dry_run(),
        force,
        keep_status: false,
    };
    let written = shared.lock().write(w, op)?;
    if written.changed && t.subresource.as_deref() != Some("status") {
        controllers::after_write(shared, &written.object);
    }
    let object = State::at_version(&t.rt, &written.object);
    if scale {
        return Ok((written.code, to_scale(&object)));
    }
    Ok((written.code, object))
}

/// The `autoscaling/v1` `Scale` of a Deployment, StatefulSet or ReplicaSet.
fn to_scale(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let selector: Vec<String> = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {
            "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector.join(","),
        },
    })
}

/// Turns a write of a `Scale` into a merge patch of the parent's `spec.replicas`.
fn scale_op(shared: &Arc<Shared>, t: &Target, op: Op) -> Result<Op, ApiError> {
    let name = t.name.clone().unwrap_or_default();
    let current = shared.lock().get(&t.rt, t.namespace.as_deref(), &name)?;
    let scale = to_scale(&current);
    let new_scale = match op {
        Op::Update(body) => {
            let rv = body["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default();
            if !rv.is_empty() && Some(rv) != current["metadata"]["resourceVersion"].as_str() {
                return Err(ApiError::conflict(&t.rt, &name));
            }
            body
        }
        Op::MergePatch(p) => crate::fields::merge_patch(&scale, &p),
        Op::StrategicPatch(p) => crate::fields::strategic_merge(&scale, &p, &[]),
        Op::JsonPatch(p) => {
            crate::fields::json_patch(&scale, &p).map_err(|e| ApiError::new(422, "Invalid", e))?
        }
        Op::Apply(cfg) => crate::fields::merge_apply(&scale, &cfg, &[]),
        Op::Create(_) => {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            ));
        }
    };
    let replicas = new_scale["spec"]["replicas"].as_i64().ok_or_else(|| {
        ApiError::new(
            422,
            "Invalid",
            format!("Scale.autoscaling \"{name}\" is invalid: spec.replicas: Required value"),
        )
    })?;
    Ok(Op::MergePatch(json!({"spec": {"replicas": replicas}})))
}

fn delete(shared: &Arc<Shared>, req: &Req, t: &Target) -> Result<(u16, Value), ApiError> {
    let options: Value = if req.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&req.body).unwrap_or_else(|_| json!({}))
    };
    let dry_run = req.dry_run()
        || options["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    let propagation = req
        .param("propagationPolicy")
        .map(str::to_string)
        .or_else(|| options["propagationPolicy"].as_str().map(str::to_string));
    let orphan = propagation.as_deref() == Some("Orphan") || options["orphanDependents"] == true;
    let precondition = options["preconditions"]["resourceVersion"].as_str();
    let mut state = shared.lock();
    match &t.name {
        Some(name) => {
            if t.subresource.is_some() {
                return Err(ApiError::new(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                ));
            }
            let out = state.delete(
                &t.rt,
                t.namespace.as_deref(),
                name,
                dry_run,
                orphan,
                precondition,
            )?;
            Ok((200, out))
        }
        None => {
            let (labels, fields) = selectors(req)?;
            let items = state.list(&t.rt, t.namespace.as_deref(), &labels, &fields);
            let mut deleted = Vec::new();
            for item in items {
                let name = item["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let ns = item["metadata"]["namespace"].as_str().map(str::to_string);
                if state
                    .delete(&t.rt, ns.as_deref(), &name, dry_run, orphan, None)
                    .is_ok()
                {
                    deleted.push(item);
                }
            }
            Ok((
                200,
                json!({
                    "kind": format!("{}List", t.rt.kind),
                    "apiVersion": t.rt.api_version(),
                    "metadata": {"resourceVersion": state.rv.to_string()},
                    "items": deleted,
                }),
            ))
        }
    }
}

fn event_matches(e: &Event, t: &Target, labels: &LabelSelector, fields: &FieldSelector) -> bool {
    e.group == t.rt.group
        && e.plural == t.rt.plural
        && t.namespace.as_deref().is_none_or(|ns| ns == e.namespace)
        && labels.matches(&e.object)
        && fields.matches(&e.object)
}

/// How watch events present objects, after the `Accept` header.
#[derive(Clone, Copy)]
enum Presentation {
    Object,
    Table,
    Metadata,
}

fn present(p: Presentation, rt: &ResourceType, obj: &Value, rv: u64) -> Value {
    match p {
        Presentation::Object => State::at_version(rt, obj),
        Presentation::Table => discovery::table(rt, std::slice::from_ref(obj), &rv.to_string()),
        Presentation::Metadata => discovery::partial_metadata(obj),
    }
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// What a live watch stream carries between events.
struct WatchState {
    rx: tokio::sync::broadcast::Receiver<Arc<Event>>,
    target: Target,
    labels: LabelSelector,
    fields: FieldSelector,
    presentation: Presentation,
    since: u64,
    done: bool,
}

fn watch(shared: &Arc<Shared>, req: &Req, t: &Target) -> Response {
    let (labels, fields) = match selectors(req) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let accept = req.header(header::ACCEPT);
    let presentation = if discovery::wants_table(&accept) {
        Presentation::Table
    } else if discovery::wants_metadata(&accept) {
        Presentation::Metadata
    } else {
        Presentation::Object
    };
    let timeout = req
        .param("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let since = req
        .param("resourceVersion")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|rv| *rv > 0);
    // Subscribe and read the backlog under one lock, so no event is missed or repeated.
    let (initial, rx, current) = {
        let state = shared.lock();
        let rx = state.events.subscribe();
        let mut initial: Vec<Bytes> = Vec::new();
        match since {
            None => {
                for obj in state.list(&t.rt, t.namespace.as_deref(), &labels, &fields) {
                    initial.push(watch_line(
                        "ADDED",
                        &present(presentation, &t.rt, &obj, state.rv),
                    ));
                }
            }
            Some(rv) => {
                let oldest = state
                    .history
                    .front()
                    .map_or(state.rv, |e| e.rv.saturating_sub(1));
                if rv < oldest {
                    let status = ApiError::new(
                        410,
                        "Expired",
                        format!("too old resource version: {rv} ({oldest})"),
                    );
                    initial.push(watch_line("ERROR", &status.body()));
                } else {
                    for e in state.history.iter().filter(|e| e.rv > rv) {
                        if event_matches(e, t, &labels, &fields) {
                            initial.push(watch_line(
                                e.kind,
                                &present(presentation, &t.rt, &e.object, e.rv),
                            ));
                        }
                    }
                }
            }
        }
        (initial, rx, state.rv)
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let watch_state = WatchState {
        rx,
        target: Target {
            rt: t.rt.clone(),
            namespace: t.namespace.clone(),
            name: None,
            subresource: None,
        },
        labels,
        fields,
        presentation,
        since: current,
        done: false,
    };
    let live = futures::stream::unfold(watch_state, move |mut ws| async move {
        use tokio::sync::broadcast::error::RecvError;
        while !ws.done {
            match tokio::time::timeout_at(deadline, ws.rx.recv()).await {
                Err(_) | Ok(Err(RecvError::Closed)) => return None,
                Ok(Err(RecvError::Lagged(_))) => {
                    ws.done = true;
                    let status = ApiError::new(
                        410,
                        "Expired",
                        "the watch fell behind; resume from a newer resource version",
                    );
                    return Some((watch_line("ERROR", &status.body()), ws));
                }
                Ok(Ok(e)) => {
                    if e.rv > ws.since && event_matches(&e, &ws.target, &ws.labels, &ws.fields) {
                        let object = present(ws.presentation, &ws.target.rt, &e.object, e.rv);
                        return Some((watch_line(e.kind, &object), ws));
                    }
                }
            }
        }
        None
    });
    use futures::StreamExt;
    let stream = futures::stream::iter(initial)
        .chain(live)
        .map(Ok::<Bytes, Infallible>);
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

//! The object store and the write pipeline: validation, server-side apply, patches, defaulting,
//! managed fields, generation, resource versions and watch events.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::defaults::{self, Allocator};
use crate::fields::{self, FieldSet, Pe};
use crate::resources::{self, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{self, ApiError};
use crate::{Fault, RequestRecord};

/// How many watch events are kept to resume watches from an older resource version.
const HISTORY: usize = 10_000;

/// Identity of a stored object (version independent).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ObjKey {
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

/// One watch event.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub kind: &'static str,
    pub object: Value,
    pub rv: u64,
}

/// Everything the server holds.
#[derive(Debug)]
pub(crate) struct State {
    pub types: Vec<ResourceType>,
    pub objects: BTreeMap<ObjKey, Value>,
    pub rv: u64,
    pub alloc: Allocator,
    seq: u64,
    rng: u64,
    pub requests: Vec<RequestRecord>,
    pub faults: Vec<Fault>,
    pub failing_images: Vec<(String, String)>,
    pub history: VecDeque<Arc<Event>>,
    pub events: tokio::sync::broadcast::Sender<Arc<Event>>,
}

/// What a write does.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Create(Value),
    Update(Value),
    MergePatch(Value),
    StrategicPatch(Value),
    JsonPatch(Value),
    Apply(Value),
}

/// A write request, after routing.
#[derive(Clone, Debug)]
pub(crate) struct Write {
    pub rt: ResourceType,
    pub namespace: Option<String>,
    /// The name in the URL (absent for POST).
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub manager: String,
    pub dry_run: bool,
    pub force: bool,
    /// Keep the `status` given on create (seeding and controllers).
    pub keep_status: bool,
}

/// The result of a successful write.
#[derive(Clone, Debug)]
pub(crate) struct Written {
    pub code: u16,
    pub object: Value,
    /// Whether the stored object changed (false for no-ops and dry runs).
    pub changed: bool,
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    set: FieldSet,
}

impl Entry {
    fn same_slot(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }

    /// The manager as the API server prints it in conflict messages.
    fn display(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

fn parse_entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: e["manager"].as_str().unwrap_or_default().to_string(),
            operation: e["operation"].as_str().unwrap_or("Update").to_string(),
            api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
            time: e["time"].as_str().unwrap_or_default().to_string(),
            subresource: e["subresource"].as_str().map(str::to_string),
            set: fields::from_fields_v1(&e["fieldsV1"]),
        })
        .collect()
}

fn entries_json(entries: &[Entry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| {
                let mut v = json!({
                    "manager": e.manager,
                    "operation": e.operation,
                    "apiVersion": e.api_version,
                    "time": e.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields::to_fields_v1(&e.set),
                });
                if let Some(sub) = &e.subresource {
                    v["subresource"] = json!(sub);
                }
                v
            })
            .collect(),
    )
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        // Invariant: metadata was made an object just above.
        _ => unreachable!("metadata is an object"),
    }
}

fn str_at<'a>(obj: &'a Value, a: &str, b: &str) -> Option<&'a str> {
    obj.get(a)?.get(b)?.as_str()
}

/// The object minus metadata and status: what counts as a spec change for `generation`.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    v
}

/// The object with managed-field timestamps and the resource version blanked, for no-op checks.
fn without_times(obj: &Value) -> Value {
    let mut v = obj.clone();
    let meta = meta_mut(&mut v);
    meta.remove("resourceVersion");
    if let Some(Value::Array(entries)) = meta.get_mut("managedFields") {
        for e in entries.iter_mut().filter_map(Value::as_object_mut) {
            e.remove("time");
        }
    }
    v
}

fn valid_name(name: &str, max: usize, dots: bool) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

impl State {
    pub fn new(events: tokio::sync::broadcast::Sender<Arc<Event>>) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
        let mut state = Self {
            types: resources::builtins(),
            objects: BTreeMap::new(),
            rv: 1000,
            alloc: Allocator::default(),
            seq: 0,
            rng: seed | 1,
            requests: Vec::new(),
            faults: Vec::new(),
            failing_images: Vec::new(),
            history: VecDeque::new(),
            events,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            // Seeding fixed, valid namespaces cannot fail; the result is not needed.
            let _ = state.seed(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                "kube-apiserver",
            );
        }
        state
    }

    /// A pseudo-random number (xorshift), for names and uids.
    pub fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// `len` characters from the alphabet Kubernetes uses for generated names.
    pub fn random_suffix(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..len)
            .map(|_| ALPHABET[(self.random() % ALPHABET.len() as u64) as usize] as char)
            .collect()
    }

    fn uid(&mut self) -> String {
        self.seq += 1;
        let a = self.random();
        let b = self.random();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            (a as u16) & 0x0fff,
            ((b >> 48) as u16 & 0x3fff) | 0x8000,
            (b & 0xffff_ffff_ffff) ^ self.seq
        )
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// The resource type for a group/version and plural (or kind).
    pub fn find_type(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    /// The resource type for an apiVersion and kind.
    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.kind == kind)
            .cloned()
    }

    fn emit(
        &mut self,
        rt_group: &str,
        plural: &str,
        namespace: &str,
        kind: &'static str,
        object: Value,
        rv: u64,
    ) {
        let event = Arc::new(Event {
            group: rt_group.to_string(),
            plural: plural.to_string(),
            namespace: namespace.to_string(),
            kind,
            object,
            rv,
        });
        self.history.push_back(event.clone());
        if self.history.len() > HISTORY {
            self.history.pop_front();
        }
        // No subscribers is fine.
        let _ = self.events.send(event);
    }

    /// The object as served at `rt`'s version.
    pub fn at_version(rt: &ResourceType, obj: &Value) -> Value {
        let mut v = obj.clone();
        v["apiVersion"] = json!(rt.api_version());
        v
    }

    fn key(rt: &ResourceType, namespace: Option<&str>, name: &str) -> ObjKey {
        ObjKey {
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            namespace: if rt.namespaced {
                namespace.unwrap_or_default().to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }

    /// Reads one object.
    pub fn get(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.objects
            .get(&Self::key(rt, namespace, name))
            .map(|o| Self::at_version(rt, o))
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Lists objects (all namespaces when `namespace` is `None`).
    pub fn list(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.group == rt.group && k.plural == rt.plural)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .filter(|(_, o)| labels.matches(o) && fields.matches(o))
            .map(|(_, o)| Self::at_version(rt, o))
            .collect()
    }

    /// Stores an object as if someone else had created it (keeps its status).
    pub fn seed(&mut self, object: Value, manager: &str) -> Result<Written, ApiError> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let rt = self.find_kind(api_version, kind).ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({api_version} {kind})"),
            )
        })?;
        let namespace = str_at(&object, "metadata", "namespace")
            .map(str::to_string)
            .or_else(|| rt.namespaced.then(|| "default".to_string()));
        self.write(
            Write {
                rt,
                namespace,
                name: None,
                subresource: None,
                manager: manager.to_string(),
                dry_run: false,
                force: false,
                keep_status: true,
            },
            Op::Create(object),
        )
    }

    /// The write pipeline shared by POST, PUT and PATCH.
    pub fn write(&mut self, w: Write, op: Op) -> Result<Written, ApiError> {
        let rt = &w.rt;
        let status_sub = w.subresource.as_deref() == Some("status");
        let scale_sub = w.subresource.as_deref() == Some("scale");
        if let Some(sub) = &w.subresource
            && !(status_sub && rt.has_status || scale_sub && rt.has_scale())
        {
            return Err(ApiError::not_found_raw(
                &rt.group,
                &format!("{}/{sub}", rt.plural),
                w.name.as_deref().unwrap_or_default(),
            ));
        }
        let namespace = if rt.namespaced {
            w.namespace.clone()
        } else {
            None
        };
        if rt.namespaced {
            let ns = namespace.as_deref().unwrap_or_default();
            let ns_key = ObjKey {
                group: String::new(),
                plural: "namespaces".into(),
                namespace: String::new(),
                name: ns.to_string(),
            };
            if !self.objects.contains_key(&ns_key) {
                return Err(ApiError::namespace_not_found(ns));
            }
        }

        // The object's name: from the URL, or from the body on create.
        let body_name = match &op {
            Op::Create(b) | Op::Update(b) | Op::Apply(b) => {
                str_at(b, "metadata", "name").map(str::to_string)
            }
            _ => None,
        };
        let mut name = w.name.clone().or(body_name.clone()).unwrap_or_default();
        if let (Some(url), Some(body)) = (&w.name, &body_name)
            && url != body
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body}) does not match the name on the URL ({url})"
            )));
        }
        if let Op::Create(b) | Op::Update(b) | Op::Apply(b) = &op {
            check_identity(rt, b, namespace.as_deref(), matches!(op, Op::Apply(_)))?;
        }
        if let Op::Create(b) = &op
            && name.is_empty()
            && let Some(prefix) = str_at(b, "metadata", "generateName")
        {
            name = format!("{prefix}{}", self.random_suffix(5));
        }
        if name.is_empty() {
            return Err(ApiError::invalid(
                rt,
                "",
                vec![(
                    "metadata.name".into(),
                    "Required value: name or generateName is required".into(),
                )],
            ));
        }
        let key = Self::key(rt, namespace.as_deref(), &name);
        let old = self.objects.get(&key).cloned();
        let now = crate::now();

        let (mut new, mut entries, is_create, apply_entry) = match op.clone() {
            Op::Create(body) => {
                if old.is_some() {
                    return Err(ApiError::already_exists(rt, &name));
                }
                (body, Vec::new(), true, false)
            }
            Op::Update(body) => {
                let Some(old) = &old else {
                    return Err(ApiError::not_found(rt, &name));
                };
                if let Some(rv) = str_at(&body, "metadata", "resourceVersion")
                    && !rv.is_empty()
                    && Some(rv) != str_at(old, "metadata", "resourceVersion")
                {
                    return Err(ApiError::conflict(rt, &name));
                }
                (body, parse_entries(old), false, false)
            }
            Op::MergePatch(p) | Op::StrategicPatch(p) | Op::JsonPatch(p) => {
                let Some(old) = &old else {
                    return Err(ApiError::not_found(rt, &name));
                };
                let patched = match &op {
                    Op::MergePatch(_) => fields::merge_patch(old, &p),
                    Op::StrategicPatch(_) => fields::strategic_merge(old, &p, &[]),
                    _ => {
                        fields::json_patch(old, &p).map_err(|e| ApiError::new(422, "Invalid", e))?
                    }
                };
                if let Some(rv) = str_at(&patched, "metadata", "resourceVersion")
                    && Some(rv) != str_at(old, "metadata", "resourceVersion")
                {
                    return Err(ApiError::conflict(rt, &name));
                }
                (patched, parse_entries(old), false, false)
            }
            Op::Apply(cfg) => {
                if let (Some(rv), Some(old)) = (str_at(&cfg, "metadata", "resourceVersion"), &old)
                    && Some(rv) != str_at(old, "metadata", "resourceVersion")
                {
                    return Err(ApiError::conflict(rt, &name));
                }
                let (merged, entries) = server_side_apply(
                    rt,
                    old.as_ref(),
                    &cfg,
                    &w,
                    &name,
                    namespace.as_deref(),
                    &now,
                )?;
                (merged, entries, old.is_none(), true)
            }
        };

        // Identity and system metadata.
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        {
            let meta = meta_mut(&mut new);
            meta.insert("name".into(), json!(name));
            match &namespace {
                Some(ns) => meta.insert("namespace".into(), json!(ns)),
                None => meta.remove("namespace"),
            };
            meta.remove("managedFields");
            meta.remove("selfLink");
            for f in [
                "uid",
                "creationTimestamp",
                "generation",
                "resourceVersion",
                "deletionTimestamp",
            ] {
                meta.remove(f);
                if let Some(v) = old.as_ref().and_then(|o| o["metadata"].get(f)) {
                    meta.insert(f.into(), v.clone());
                }
            }
        }
        if is_create {
            let uid = self.uid();
            let meta = meta_mut(&mut new);
            meta.insert("uid".into(), json!(uid));
            meta.insert("creationTimestamp".into(), json!(now));
        }

        // Status: owned by the status subresource where there is one.
        if status_sub {
            let mut base = old.clone().unwrap_or_default();
            match new.get("status") {
                Some(s) => base["status"] = s.clone(),
                None => {
                    if let Some(m) = base.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            new = base;
        } else if rt.has_status {
            let keep = match &old {
                Some(o) => o.get("status").cloned(),
                None if w.keep_status => new.get("status").cloned(),
                None => None,
            };
            if let Some(m) = new.as_object_mut() {
                m.remove("status");
                if let Some(s) = keep {
                    m.insert("status".into(), s);
                }
            }
        }

        defaults::apply(rt, &mut new, old.as_ref(), &mut self.alloc);
        // Built-in types serialise an empty status; custom resources omit it.
        if rt.has_status && rt.crd.is_none() && new.get("status").is_none_or(Value::is_null) {
            new["status"] = json!({});
        }
        validate(rt, &new, &name)?;

        // Managed fields.
        let old_stripped = old.as_ref().map_or_else(|| json!({}), fields::strip_meta);
        let new_stripped = fields::strip_meta(&new);
        if !apply_entry {
            record_update(
                &mut entries,
                &w.manager,
                w.subresource.as_deref(),
                &rt.api_version(),
                &old_stripped,
                &new_stripped,
                &now,
            );
        }
        entries.retain(|e| !e.set.is_empty());
        meta_mut(&mut new).insert("managedFields".into(), entries_json(&entries));

        // Generation.
        let has_generation = rt.has_generation();
        if has_generation {
            let generation = match &old {
                None => 1,
                Some(o) => {
                    let g = o["metadata"]["generation"].as_i64().unwrap_or(0);
                    if spec_part(o) != spec_part(&new) {
                        g + 1
                    } else {
                        g.max(1)
                    }
                }
            };
            meta_mut(&mut new).insert("generation".into(), json!(generation));
        }

        if let Some(o) = &old
            && without_times(o) == without_times(&new)
        {
            return Ok(Written {
                code: 200,
                object: Self::at_version(rt, o),
                changed: false,
            });
        }
        let code = if is_create { 201 } else { 200 };
        if w.dry_run {
            return Ok(Written {
                code,
                object: new,
                changed: false,
            });
        }
        let rv = self.next_rv();
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
        self.objects.insert(key.clone(), new.clone());
        let kind = if is_create { "ADDED" } else { "MODIFIED" };
        self.emit(&rt.group, &rt.plural, &key.namespace, kind, new.clone(), rv);
        if rt.group == "apiextensions.k8s.io" && rt.kind == "CustomResourceDefinition" {
            self.register_crd(&new);
        }
        Ok(Written {
            code,
            object: new,
            changed: true,
        })
    }

    fn register_crd(&mut self, crd: &Value) {
        let name = str_at(crd, "metadata", "name")
            .unwrap_or_default()
            .to_string();
        self.types
            .retain(|t| t.crd.as_deref() != Some(name.as_str()));
        let new_types = resources::from_crd(crd);
        for t in new_types {
            if !self
                .types
                .iter()
                .any(|e| e.group == t.group && e.version == t.version && e.plural == t.plural)
            {
                self.types.push(t);
            }
        }
    }

    /// Deletes an object (and what it owns, unless orphaned).
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        dry_run: bool,
        orphan: bool,
        precondition_rv: Option<&str>,
    ) -> Result<Value, ApiError> {
        let key = Self::key(rt, namespace, name);
        let Some(obj) = self.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(rt, name));
        };
        if let Some(rv) = precondition_rv
            && Some(rv) != str_at(&obj, "metadata", "resourceVersion")
        {
            return Err(ApiError::conflict(rt, name));
        }
        let uid = str_at(&obj, "metadata", "uid")
            .unwrap_or_default()
            .to_string();
        let is_namespace = rt.group.is_empty() && rt.plural == "namespaces";
        let response = if is_namespace {
            let mut o = Self::at_version(rt, &obj);
            meta_mut(&mut o).insert("deletionTimestamp".into(), json!(crate::now()));
            o["status"]["phase"] = json!("Terminating");
            o
        } else {
            status::success(json!({"name": name, "group": rt.group, "kind": rt.plural, "uid": uid}))
        };
        if dry_run {
            return Ok(response);
        }
        self.remove(&key);
        if is_namespace {
            let inside: Vec<ObjKey> = self
                .objects
                .keys()
                .filter(|k| k.namespace == name)
                .cloned()
                .collect();
            for k in inside {
                self.remove(&k);
            }
        }
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            let group = obj["spec"]["group"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let plural = obj["spec"]["names"]["plural"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            self.types.retain(|t| t.crd.as_deref() != Some(name));
            let owned: Vec<ObjKey> = self
                .objects
                .keys()
                .filter(|k| k.group == group && k.plural == plural)
                .cloned()
                .collect();
            for k in owned {
                self.remove(&k);
            }
        }
        if !orphan {
            self.collect_garbage(&uid);
        }
        Ok(response)
    }

    fn remove(&mut self, key: &ObjKey) {
        if let Some(mut obj) = self.objects.remove(key) {
            let rv = self.next_rv();
            meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
            self.emit(&key.group, &key.plural, &key.namespace, "DELETED", obj, rv);
        }
    }

    /// Deletes, recursively, the objects whose owner references name `uid`.
    fn collect_garbage(&mut self, uid: &str) {
        let mut pending = vec![uid.to_string()];
        while let Some(owner) = pending.pop() {
            let owned: Vec<(ObjKey, String)> = self
                .objects
                .iter()
                .filter(|(_, o)| {
                    o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == owner.as_str()))
                })
                .map(|(k, o)| {
                    (
                        k.clone(),
                        str_at(o, "metadata", "uid").unwrap_or_default().to_string(),
                    )
                })
                .collect();
            for (k, child_uid) in owned {
                self.remove(&k);
                pending.push(child_uid);
            }
        }
    }
}

/// Checks apiVersion, kind and namespace of a request body against the URL.
fn check_identity(
    rt: &ResourceType,
    body: &Value,
    namespace: Option<&str>,
    apply: bool,
) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be an object",
        ));
    }
    match body["apiVersion"].as_str() {
        Some(v) if v != rt.api_version() => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({})",
                rt.api_version()
            )));
        }
        None if apply => {
            return Err(ApiError::bad_request("invalid object type: /, Kind="));
        }
        _ => {}
    }
    match body["kind"].as_str() {
        Some(k) if k != rt.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
        None if apply => {
            return Err(ApiError::bad_request(format!(
                "invalid object type: {}, Kind=",
                rt.api_version()
            )));
        }
        _ => {}
    }
    if let (Some(body_ns), Some(ns)) = (str_at(body, "metadata", "namespace"), namespace)
        && !body_ns.is_empty()
        && body_ns != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

/// Basic validation of names and workload selectors.
fn validate(rt: &ResourceType, obj: &Value, name: &str) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    let label_only = matches!(rt.kind.as_str(), "Namespace" | "Service");
    let ok = if label_only {
        valid_name(name, 63, false)
    } else {
        valid_name(name, 253, true)
    };
    if !ok {
        let what = if label_only {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        } else {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        };
        causes.push((
            "metadata.name".to_string(),
            format!("Invalid value: {name:?}: {what}"),
        ));
    }
    if rt.group == "apps"
        && matches!(
            rt.kind.as_str(),
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet"
        )
    {
        let selector = &obj["spec"]["selector"];
        if !selector.is_object() {
            causes.push(("spec.selector".into(), "Required value".into()));
        } else {
            let labels = json!({"metadata": {"labels": obj["spec"]["template"]["metadata"]["labels"].clone()}});
            if !LabelSelector::from_object(selector).matches(&labels) {
                causes.push((
                    "spec.template.metadata.labels".into(),
                    format!(
                        "Invalid value: {}: `selector` does not match template `labels`",
                        obj["spec"]["template"]["metadata"]["labels"]
                    ),
                ));
            }
        }
        let containers = obj["spec"]["template"]["spec"]["containers"].as_array();
        if containers.is_none_or(Vec::is_empty) {
            causes.push((
                "spec.template.spec.containers".into(),
                "Required value".into(),
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(rt, name, causes))
    }
}

/// Records an `Update` operation: the manager owns what it changed; others lose it.
fn record_update(
    entries: &mut Vec<Entry>,
    manager: &str,
    subresource: Option<&str>,
    api_version: &str,
    old: &Value,
    new: &Value,
    now: &str,
) {
    let (changed, removed) = fields::diff(old, new);
    let gone = |p: &fields::FieldPath| removed.iter().any(|r| fields::has_prefix(p, r));
    for e in entries.iter_mut() {
        if !e.same_slot(manager, "Update", subresource) {
            e.set.retain(|p| !changed.contains(p) && !gone(p));
        }
    }
    match entries
        .iter_mut()
        .find(|e| e.same_slot(manager, "Update", subresource))
    {
        Some(e) => {
            let mut set: FieldSet = e.set.union(&changed).cloned().collect();
            set.retain(|p| !gone(p));
            if set != e.set || !changed.is_empty() {
                e.time = now.to_string();
                e.api_version = api_version.to_string();
            }
            e.set = set;
        }
        None if !changed.is_empty() => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Update".into(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource: subresource.map(str::to_string),
            set: changed,
        }),
        None => {}
    }
}

/// Server-side apply: conflicts, merge, pruning of fields the manager stopped applying.
fn server_side_apply(
    rt: &ResourceType,
    old: Option<&Value>,
    cfg: &Value,
    w: &Write,
    name: &str,
    namespace: Option<&str>,
    now: &str,
) -> Result<(Value, Vec<Entry>), ApiError> {
    let status_sub = w.subresource.as_deref() == Some("status");
    let mut cfg_stripped = fields::strip_meta(cfg);
    if let Some(m) = cfg_stripped.as_object_mut() {
        if status_sub {
            m.retain(|k, _| k == "status");
        } else if rt.has_status {
            m.remove("status");
        }
    }
    let applied = fields::apply_set(&cfg_stripped);
    let mut entries = old.map(parse_entries).unwrap_or_default();
    let sub = w.subresource.as_deref();
    let live_stripped = old.map_or_else(|| json!({}), fields::strip_meta);

    // Conflicts with other managers over fields whose values would change.
    let mut conflicts: Vec<(usize, fields::FieldPath)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.same_slot(&w.manager, "Apply", sub) {
            continue;
        }
        for p in applied.intersection(&e.set) {
            if matches!(p.last(), Some(Pe::Key(_) | Pe::Val(_))) {
                continue;
            }
            let live = fields::get_at(&live_stripped, p);
            let want = fields::get_at(&cfg_stripped, p);
            if live.is_some() && live != want {
                conflicts.push((i, p.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        if !w.force {
            return Err(conflict_error(rt, name, &entries, &conflicts));
        }
        for (i, p) in &conflicts {
            entries[*i].set.remove(p);
        }
    }

    // Merge onto the live object.
    let base = old.cloned().unwrap_or_else(|| {
        let mut meta = json!({"name": name});
        if let Some(ns) = namespace {
            meta["namespace"] = json!(ns);
        }
        json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": meta})
    });
    let mut merged = fields::merge_apply(&base, &cfg_stripped, &[]);

    // Prune what this manager applied before, no longer applies, and nobody else owns.
    let previous = entries
        .iter()
        .find(|e| e.same_slot(&w.manager, "Apply", sub))
        .map(|e| e.set.clone())
        .unwrap_or_default();
    let others: Vec<&FieldSet> = entries
        .iter()
        .filter(|e| !e.same_slot(&w.manager, "Apply", sub))
        .map(|e| &e.set)
        .collect();
    let mut to_remove: Vec<&fields::FieldPath> = previous.difference(&applied).collect();
    // Items before their fields: an item is found by its key fields.
    to_remove.sort_by_key(|p| p.len());
    for p in to_remove {
        let owned_elsewhere = others
            .iter()
            .any(|s| s.iter().any(|q| fields::has_prefix(q, p)))
            || applied.iter().any(|q| fields::has_prefix(q, p));
        if owned_elsewhere {
            continue;
        }
        if fields::remove_at(&mut merged, p) {
            // Drop containers this left empty, unless someone owns them.
            let mut parent = p[..p.len() - 1].to_vec();
            while !parent.is_empty() {
                let empty = match fields::get_at(&merged, &parent) {
                    Some(Value::Object(m)) => m.is_empty(),
                    _ => false,
                };
                let owned = others.iter().any(|s| s.contains(&parent)) || applied.contains(&parent);
                if !empty || owned || !matches!(parent.last(), Some(Pe::Field(_))) {
                    break;
                }
                fields::remove_at(&mut merged, &parent);
                parent.pop();
            }
        }
    }

    entries.retain(|e| !e.same_slot(&w.manager, "Apply", sub));
    let new_entry = Entry {
        manager: w.manager.clone(),
        operation: "Apply".into(),
        api_version: rt.api_version(),
        time: now.to_string(),
        subresource: sub.map(str::to_string),
        set: applied,
    };
    // Keep the manager's position in the list when it re-applies.
    let position = old
        .map(parse_entries)
        .unwrap_or_default()
        .iter()
        .position(|e| e.same_slot(&w.manager, "Apply", sub));
    match position {
        Some(i) if i <= entries.len() => entries.insert(i, new_entry),
        _ => entries.push(new_entry),
    }
    // Restore metadata the merge does not carry (the config was stripped of it).
    if let (Some(o), Some(m)) = (old, merged.as_object_mut())
        && let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut)
    {
        for (k, v) in o["metadata"].as_object().into_iter().flatten() {
            if matches!(
                k.as_str(),
                "uid" | "creationTimestamp" | "generation" | "resourceVersion"
            ) {
                meta.insert(k.clone(), v.clone());
            }
        }
    }
    Ok((merged, entries))
}

fn conflict_error(
    rt: &ResourceType,
    name: &str,
    entries: &[Entry],
    conflicts: &[(usize, fields::FieldPath)],
) -> ApiError {
    let mut by_manager: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut causes = Vec::new();
    for (i, p) in conflicts {
        let manager = entries[*i].display();
        let path = fields::path_string(p);
        causes.push(json!({
            "reason": "FieldManagerConflict",
            "message": format!("conflict with {manager}"),
            "field": path,
        }));
        by_manager.entry(manager).or_default().push(path);
    }
    let message = if conflicts.len() == 1 {
        let (manager, paths) = by_manager
            .iter()
            .next()
            .map(|(m, p)| (m.clone(), p.clone()))
            .unwrap_or_default();
        format!(
            "Apply failed with 1 conflict: conflict with {manager}: {}",
            paths.join("")
        )
    } else {
        let mut s = format!("Apply failed with {} conflicts: ", conflicts.len());
        for (manager, paths) in &by_manager {
            let word = if paths.len() == 1 {
                "conflict"
            } else {
                "conflicts"
            };
            s.push_str(&format!("{word} with {manager}:\n"));
            for p in paths {
                s.push_str(&format!("- {p}\n"));
            }
        }
        s
    };
    ApiError {
        code: 409,
        reason: "Conflict",
        message,
        details: Some(
            json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": causes}),
        ),
    }
}

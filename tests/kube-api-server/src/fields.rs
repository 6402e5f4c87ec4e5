//! Field paths, field sets and the structural merges behind server-side apply.
//!
//! The real API server learns list and map semantics from the OpenAPI schema
//! (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`). This
//! server has no schemas, so [`list_type`] and [`is_atomic_map`] encode the common cases by field
//! name and position.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// One step of a field path, as in the `fieldsV1` format.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Pe {
    /// `f:<name>`: a field of a map.
    Field(String),
    /// `k:<json>`: an item of a list map, identified by its key fields (canonical JSON).
    Key(String),
    /// `v:<json>`: an item of a set list, identified by its value (canonical JSON).
    Val(String),
}

/// A path from the object root.
pub(crate) type FieldPath = Vec<Pe>;
/// A set of owned paths.
pub(crate) type FieldSet = BTreeSet<FieldPath>;

/// How a list is merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListType {
    /// Items are identified by these key fields and merged one by one.
    Map(&'static [&'static str]),
    /// Items are scalars identified by their value.
    Set,
    /// The list is replaced as a whole.
    Atomic,
}

const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// The list semantics of the list found at the field names `ctx` (last name = the list field).
pub(crate) fn list_type(ctx: &[String]) -> ListType {
    let Some(last) = ctx.last() else {
        return ListType::Atomic;
    };
    match last.as_str() {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "env"
        | "resourceClaims"
        | "schedulingGates" => ListType::Map(&["name"]),
        "hostAliases" => ListType::Map(&["ip"]),
        "volumeMounts" => ListType::Map(&["mountPath"]),
        "volumeDevices" => ListType::Map(&["devicePath"]),
        "ports" => {
            let parent = ctx.len().checked_sub(2).map(|i| ctx[i].as_str());
            if parent.is_some_and(|p| CONTAINER_LISTS.contains(&p)) {
                ListType::Map(&["containerPort", "protocol"])
            } else if ctx.len() == 2 && ctx[0] == "spec" {
                ListType::Map(&["port", "protocol"])
            } else {
                ListType::Atomic
            }
        }
        "conditions" => ListType::Map(&["type"]),
        "ownerReferences" => ListType::Map(&["uid"]),
        "topologySpreadConstraints" => ListType::Map(&["topologyKey", "whenUnsatisfiable"]),
        "finalizers" => ListType::Set,
        _ => ListType::Atomic,
    }
}

/// Maps replaced as a whole (`x-kubernetes-map-type: atomic`).
pub(crate) fn is_atomic_map(ctx: &[String]) -> bool {
    matches!(
        ctx.last().map(String::as_str),
        Some(
            "selector"
                | "nodeSelector"
                | "fieldRef"
                | "resourceFieldRef"
                | "configMapKeyRef"
                | "secretKeyRef"
                | "roleRef"
        )
    )
}

/// Maps with free-form keys: an `Update` that creates them owns the map itself (`.`).
fn is_granular_map(ctx: &[String]) -> bool {
    matches!(
        ctx.last().map(String::as_str),
        Some(
            "labels"
                | "annotations"
                | "data"
                | "binaryData"
                | "stringData"
                | "requests"
                | "limits"
                | "matchLabels"
                | "rollingUpdate"
        )
    )
}

/// The canonical key of a list-map item, or `None` when it carries none of the key fields.
pub(crate) fn item_key(item: &Value, keys: &[&str]) -> Option<String> {
    let obj = item.as_object()?;
    let mut key = Map::new();
    for k in keys {
        match obj.get(*k) {
            Some(v) => {
                key.insert((*k).to_string(), v.clone());
            }
            // `protocol` is part of the port keys and defaults to TCP.
            None if *k == "protocol" => {
                key.insert("protocol".to_string(), Value::String("TCP".to_string()));
            }
            None => {}
        }
    }
    if key.is_empty() || (key.len() == 1 && key.contains_key("protocol") && keys.len() > 1) {
        return None;
    }
    Some(Value::Object(key).to_string())
}

fn item_matches(item: &Value, pe: &Pe) -> bool {
    match pe {
        Pe::Key(k) => {
            let Ok(Value::Object(key)) = serde_json::from_str::<Value>(k) else {
                return false;
            };
            let Some(obj) = item.as_object() else {
                return false;
            };
            key.iter().all(|(name, want)| match obj.get(name) {
                Some(v) => v == want,
                None => name == "protocol" && want == "TCP",
            })
        }
        Pe::Val(v) => serde_json::from_str::<Value>(v).is_ok_and(|want| &want == item),
        Pe::Field(_) => false,
    }
}

/// The value at `path`, if present.
pub(crate) fn get_at<'a>(v: &'a Value, path: &[Pe]) -> Option<&'a Value> {
    let mut cur = v;
    for pe in path {
        cur = match (pe, cur) {
            (Pe::Field(f), Value::Object(m)) => m.get(f)?,
            (Pe::Key(_) | Pe::Val(_), Value::Array(items)) => {
                items.iter().find(|i| item_matches(i, pe))?
            }
            _ => return None,
        };
    }
    Some(cur)
}

/// Removes the value at `path`; returns whether something was removed.
pub(crate) fn remove_at(v: &mut Value, path: &[Pe]) -> bool {
    let Some((last, parent_path)) = path.split_last() else {
        return false;
    };
    let Some(parent) = get_at_mut(v, parent_path) else {
        return false;
    };
    match (last, parent) {
        (Pe::Field(f), Value::Object(m)) => m.remove(f).is_some(),
        (pe @ (Pe::Key(_) | Pe::Val(_)), Value::Array(items)) => {
            let before = items.len();
            items.retain(|i| !item_matches(i, pe));
            items.len() != before
        }
        _ => false,
    }
}

pub(crate) fn get_at_mut<'a>(v: &'a mut Value, path: &[Pe]) -> Option<&'a mut Value> {
    let mut cur = v;
    for pe in path {
        cur = match (pe, cur) {
            (Pe::Field(f), Value::Object(m)) => m.get_mut(f)?,
            (Pe::Key(_) | Pe::Val(_), Value::Array(items)) => {
                items.iter_mut().find(|i| item_matches(i, pe))?
            }
            _ => return None,
        };
    }
    Some(cur)
}

/// The path as the API server prints it in conflicts, e.g. `.spec.containers[name="app"].image`.
pub(crate) fn path_string(path: &[Pe]) -> String {
    let mut s = String::new();
    for pe in path {
        match pe {
            Pe::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Pe::Key(k) => {
                let parts: Vec<String> = match serde_json::from_str::<Value>(k) {
                    Ok(Value::Object(m)) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                    _ => vec![k.clone()],
                };
                s.push('[');
                s.push_str(&parts.join(","));
                s.push(']');
            }
            Pe::Val(v) => {
                s.push_str("[=");
                s.push_str(v);
                s.push(']');
            }
        }
    }
    s
}

/// The object without the fields the field manager never tracks (identity and system metadata).
pub(crate) fn strip_meta(v: &Value) -> Value {
    let mut out = v.clone();
    if let Some(obj) = out.as_object_mut() {
        obj.remove("apiVersion");
        obj.remove("kind");
        let mut drop_meta = false;
        if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
            for f in [
                "name",
                "namespace",
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "managedFields",
                "selfLink",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generateName",
            ] {
                meta.remove(f);
            }
            drop_meta = meta.is_empty();
        }
        if drop_meta {
            obj.remove("metadata");
        }
    }
    out
}

fn child_ctx(ctx: &[String], name: &str) -> Vec<String> {
    let mut c = ctx.to_vec();
    c.push(name.to_string());
    c
}

fn with(path: &[Pe], pe: Pe) -> FieldPath {
    let mut p = path.to_vec();
    p.push(pe);
    p
}

/// The set a server-side apply configuration claims: its leaves and list items.
pub(crate) fn apply_set(cfg: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    collect(cfg, &[], &mut Vec::new(), &mut out, false);
    out
}

/// Every node of `v` below `path`. With `update`, maps with free-form keys own themselves
/// (`.`), as in the entries of `Update` operations.
fn collect(v: &Value, ctx: &[String], path: &mut FieldPath, out: &mut FieldSet, update: bool) {
    match v {
        Value::Object(m) if !m.is_empty() && !is_atomic_map(ctx) => {
            if update && !path.is_empty() && is_granular_map(ctx) {
                out.insert(path.clone());
            }
            for (k, child) in m {
                if child.is_null() {
                    continue;
                }
                path.push(Pe::Field(k.clone()));
                collect(child, &child_ctx(ctx, k), path, out, update);
                path.pop();
            }
        }
        Value::Array(items) => match list_type(ctx) {
            ListType::Map(keys) => {
                // `containers` is a required field: always present, never "added" itself.
                let required = ctx.last().is_some_and(|l| l == "containers");
                if update && !items.is_empty() && !required {
                    out.insert(path.clone());
                }
                for item in items {
                    match item_key(item, keys) {
                        Some(key) => {
                            path.push(Pe::Key(key));
                            out.insert(path.clone());
                            collect_item_fields(item, ctx, path, out, update);
                            path.pop();
                        }
                        None => {
                            out.insert(path.clone());
                        }
                    }
                }
                if items.is_empty() {
                    out.insert(path.clone());
                }
            }
            ListType::Set => {
                if update && !items.is_empty() {
                    out.insert(path.clone());
                }
                for item in items {
                    out.insert(with(path, Pe::Val(item.to_string())));
                }
                if items.is_empty() {
                    out.insert(path.clone());
                }
            }
            ListType::Atomic => {
                out.insert(path.clone());
            }
        },
        _ => {
            if !path.is_empty() {
                out.insert(path.clone());
            }
        }
    }
}

fn collect_item_fields(
    item: &Value,
    ctx: &[String],
    path: &mut FieldPath,
    out: &mut FieldSet,
    update: bool,
) {
    if let Value::Object(m) = item {
        for (k, child) in m {
            if child.is_null() {
                continue;
            }
            path.push(Pe::Field(k.clone()));
            collect(child, &child_ctx(ctx, k), path, out, update);
            path.pop();
        }
    }
}

/// Paths changed (added or modified) and removed between two stripped objects, for `Update`
/// operations.
pub(crate) fn diff(old: &Value, new: &Value) -> (FieldSet, FieldSet) {
    let mut changed = FieldSet::new();
    let mut removed = FieldSet::new();
    diff_rec(
        Some(old),
        Some(new),
        &[],
        &mut Vec::new(),
        &mut changed,
        &mut removed,
    );
    (changed, removed)
}

fn diff_rec(
    old: Option<&Value>,
    new: Option<&Value>,
    ctx: &[String],
    path: &mut FieldPath,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    let old = old.filter(|v| !v.is_null());
    let new = new.filter(|v| !v.is_null());
    match (old, new) {
        (None, None) => {}
        (None, Some(n)) => {
            collect(n, ctx, path, changed, true);
        }
        (Some(o), None) => {
            collect(o, ctx, path, removed, true);
            if !path.is_empty() {
                removed.insert(path.clone());
            }
        }
        (Some(Value::Object(o)), Some(Value::Object(n)))
            if !(is_atomic_map(ctx) || o.is_empty() && n.is_empty()) =>
        {
            let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
            for k in keys {
                path.push(Pe::Field(k.clone()));
                diff_rec(
                    o.get(k),
                    n.get(k),
                    &child_ctx(ctx, k),
                    path,
                    changed,
                    removed,
                );
                path.pop();
            }
        }
        (Some(Value::Array(o)), Some(Value::Array(n))) => match list_type(ctx) {
            ListType::Map(keys) if o.iter().chain(n).all(|i| item_key(i, keys).is_some()) => {
                let mut seen = BTreeSet::new();
                for item in o.iter().chain(n) {
                    let Some(key) = item_key(item, keys) else {
                        continue;
                    };
                    if !seen.insert(key.clone()) {
                        continue;
                    }
                    let pe = Pe::Key(key);
                    let oi = o.iter().find(|i| item_matches(i, &pe));
                    let ni = n.iter().find(|i| item_matches(i, &pe));
                    path.push(pe);
                    match (oi, ni) {
                        (Some(oi), Some(ni)) => {
                            diff_fields(oi, ni, ctx, path, changed, removed);
                        }
                        (None, Some(ni)) => {
                            changed.insert(path.clone());
                            collect_item_fields(ni, ctx, path, changed, true);
                        }
                        (Some(oi), None) => {
                            removed.insert(path.clone());
                            collect_item_fields(oi, ctx, path, removed, true);
                        }
                        (None, None) => {}
                    }
                    path.pop();
                }
            }
            ListType::Set => {
                for item in n {
                    if !o.contains(item) {
                        changed.insert(with(path, Pe::Val(item.to_string())));
                    }
                }
                for item in o {
                    if !n.contains(item) {
                        removed.insert(with(path, Pe::Val(item.to_string())));
                    }
                }
            }
            _ => {
                if o != n {
                    changed.insert(path.clone());
                }
            }
        },
        (Some(o), Some(n)) => {
            if o != n && !path.is_empty() {
                changed.insert(path.clone());
            }
        }
    }
}

fn diff_fields(
    o: &Value,
    n: &Value,
    ctx: &[String],
    path: &mut FieldPath,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    let (Value::Object(om), Value::Object(nm)) = (o, n) else {
        if o != n {
            changed.insert(path.clone());
        }
        return;
    };
    let keys: BTreeSet<&String> = om.keys().chain(nm.keys()).collect();
    for k in keys {
        path.push(Pe::Field(k.clone()));
        diff_rec(
            om.get(k),
            nm.get(k),
            &child_ctx(ctx, k),
            path,
            changed,
            removed,
        );
        path.pop();
    }
}

/// Merges a server-side apply configuration into the live object: maps field by field, list
/// maps item by item, everything else replaced.
pub(crate) fn merge_apply(live: &Value, cfg: &Value, ctx: &[String]) -> Value {
    match (live, cfg) {
        (Value::Object(l), Value::Object(c)) if !is_atomic_map(ctx) => {
            let mut out = l.clone();
            for (k, cv) in c {
                if cv.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = match l.get(k) {
                    Some(lv) => merge_apply(lv, cv, &child_ctx(ctx, k)),
                    None => cv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => match list_type(ctx) {
            ListType::Map(keys) => merge_list_map(l, c, keys, ctx, merge_apply),
            ListType::Set => {
                let mut out = l.clone();
                for item in c {
                    if !out.contains(item) {
                        out.push(item.clone());
                    }
                }
                Value::Array(out)
            }
            ListType::Atomic => cfg.clone(),
        },
        _ => cfg.clone(),
    }
}

fn merge_list_map(
    live: &[Value],
    cfg: &[Value],
    keys: &[&str],
    ctx: &[String],
    merge: fn(&Value, &Value, &[String]) -> Value,
) -> Value {
    if cfg.iter().any(|i| item_key(i, keys).is_none()) {
        return Value::Array(cfg.to_vec());
    }
    let mut out: Vec<Value> = live.to_vec();
    for item in cfg {
        let Some(key) = item_key(item, keys) else {
            continue;
        };
        let pe = Pe::Key(key);
        match out.iter_mut().find(|i| item_matches(i, &pe)) {
            Some(existing) => *existing = merge(existing, item, ctx),
            None => out.push(item.clone()),
        }
    }
    Value::Array(out)
}

/// A strategic merge patch (`application/strategic-merge-patch+json`): like a JSON merge
/// patch, but list maps merge by key. Directives (`$setElementOrder`, `$retainKeys`,
/// `$deleteFromPrimitiveList`) are ignored; `$patch: delete` in list items removes the item and
/// `$patch: replace` replaces the list.
pub(crate) fn strategic_merge(target: &Value, patch: &Value, ctx: &[String]) -> Value {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut out = p.clone();
                out.remove("$patch");
                return Value::Object(out);
            }
            let mut out = t.clone();
            for (k, pv) in p {
                if k.starts_with('$') {
                    continue;
                }
                if pv.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = match t.get(k) {
                    Some(tv) => strategic_merge(tv, pv, &child_ctx(ctx, k)),
                    None => strip_directives(pv),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(t), Value::Array(p)) => match list_type(ctx) {
            ListType::Map(keys) => {
                if p.iter()
                    .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
                {
                    return strip_directives(&Value::Array(
                        p.iter()
                            .filter(|i| i.get("$patch").is_none())
                            .cloned()
                            .collect(),
                    ));
                }
                let deletes: Vec<Pe> = p
                    .iter()
                    .filter(|i| i.get("$patch").and_then(Value::as_str) == Some("delete"))
                    .filter_map(|i| item_key(i, keys).map(Pe::Key))
                    .collect();
                let rest: Vec<Value> = p
                    .iter()
                    .filter(|i| i.get("$patch").is_none())
                    .cloned()
                    .collect();
                let mut merged = merge_list_map(t, &rest, keys, ctx, strategic_merge);
                if let Value::Array(items) = &mut merged {
                    items.retain(|i| !deletes.iter().any(|d| item_matches(i, d)));
                }
                strip_directives(&merged)
            }
            _ => strip_directives(patch),
        },
        (_, p) => strip_directives(p),
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut out = match target {
                Value::Object(t) => t.clone(),
                _ => Map::new(),
            };
            for (k, pv) in p {
                if pv.is_null() {
                    out.remove(k);
                } else {
                    let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), pv);
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// RFC 6902 JSON patch.
pub(crate) fn json_patch(target: &Value, ops: &Value) -> Result<Value, String> {
    let ops = ops
        .as_array()
        .ok_or_else(|| "a JSON patch must be a list of operations".to_string())?;
    let mut doc = target.clone();
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or_default();
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("operation {kind:?} has no path"))?;
        match kind {
            "add" => {
                let value = op.get("value").cloned().ok_or("add: missing value")?;
                pointer_add(&mut doc, path, value)?;
            }
            "remove" => {
                pointer_remove(&mut doc, path)?;
            }
            "replace" => {
                let value = op.get("value").cloned().ok_or("replace: missing value")?;
                let slot = doc.pointer_mut(path).ok_or_else(|| {
                    format!("replace operation does not apply: doc is missing path: {path}")
                })?;
                *slot = value;
            }
            "move" | "copy" => {
                let from = op
                    .get("from")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{kind}: missing from"))?;
                let value = doc.pointer(from).cloned().ok_or_else(|| {
                    format!("{kind} operation does not apply: doc is missing from path: {from}")
                })?;
                if kind == "move" {
                    pointer_remove(&mut doc, from)?;
                }
                pointer_add(&mut doc, path, value)?;
            }
            "test" => {
                let want = op.get("value").cloned().unwrap_or(Value::Null);
                if doc.pointer(path) != Some(&want) {
                    return Err(format!("testing value {path} failed"));
                }
            }
            other => return Err(format!("Unexpected kind: {other}")),
        }
    }
    Ok(doc)
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    let idx = path
        .rfind('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    let last = path[idx + 1..].replace("~1", "/").replace("~0", "~");
    Ok((path[..idx].to_string(), last))
}

fn pointer_add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    let target = doc
        .pointer_mut(&parent)
        .ok_or_else(|| format!("add operation does not apply: doc is missing path: {path}"))?;
    match target {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(items) => {
            if last == "-" {
                items.push(value);
            } else {
                let i: usize = last
                    .parse()
                    .map_err(|_| format!("invalid array index {last:?}"))?;
                if i > items.len() {
                    return Err(format!(
                        "add operation does not apply: index {i} out of range"
                    ));
                }
                items.insert(i, value);
            }
        }
        _ => {
            return Err(format!(
                "add operation does not apply: {parent} is not a container"
            ));
        }
    }
    Ok(())
}

fn pointer_remove(doc: &mut Value, path: &str) -> Result<(), String> {
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("remove operation does not apply: doc is missing path: \"{path}\"");
    let target = doc.pointer_mut(&parent).ok_or_else(missing)?;
    match target {
        Value::Object(m) => m.remove(&last).map(|_| ()).ok_or_else(missing),
        Value::Array(items) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            if i >= items.len() {
                return Err(missing());
            }
            items.remove(i);
            Ok(())
        }
        _ => Err(missing()),
    }
}

/// Serialises a field set in the `fieldsV1` trie format.
pub(crate) fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for pe in path {
            let key = match pe {
                Pe::Field(f) => format!("f:{f}"),
                Pe::Key(k) => format!("k:{k}"),
                Pe::Val(v) => format!("v:{v}"),
            };
            let child = node.entry(key).or_insert_with(|| Value::Object(Map::new()));
            node = match child {
                Value::Object(m) => m,
                // Invariant: every node inserted above is an object.
                _ => unreachable!("fieldsV1 nodes are objects"),
            };
        }
    }
    // A member that also has members below it is marked with `.`.
    mark_members(&mut root, set, &mut Vec::new());
    Value::Object(root)
}

fn mark_members(node: &mut Map<String, Value>, set: &FieldSet, path: &mut FieldPath) {
    let keys: Vec<String> = node.keys().filter(|k| *k != ".").cloned().collect();
    for key in keys {
        let Some(pe) = parse_pe(&key) else { continue };
        path.push(pe);
        if let Some(Value::Object(child)) = node.get_mut(&key) {
            let has_children = child.keys().any(|k| k != ".");
            if has_children && set.contains(path) {
                child.insert(".".to_string(), Value::Object(Map::new()));
            }
            mark_members(child, set, path);
        }
        path.pop();
    }
}

fn parse_pe(key: &str) -> Option<Pe> {
    let (prefix, rest) = key.split_at_checked(2)?;
    match prefix {
        "f:" => Some(Pe::Field(rest.to_string())),
        "k:" => Some(Pe::Key(canonical_json(rest))),
        "v:" => Some(Pe::Val(canonical_json(rest))),
        _ => None,
    }
}

fn canonical_json(s: &str) -> String {
    serde_json::from_str::<Value>(s).map_or_else(|_| s.to_string(), |v| v.to_string())
}

/// Parses a `fieldsV1` trie into a field set.
pub(crate) fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    if let Value::Object(m) = v {
        parse_node(m, &mut Vec::new(), &mut out);
    }
    out
}

fn parse_node(node: &Map<String, Value>, path: &mut FieldPath, out: &mut FieldSet) {
    for (key, child) in node {
        let Some(pe) = parse_pe(key) else { continue };
        path.push(pe);
        match child {
            Value::Object(m) if m.keys().any(|k| k != ".") => {
                if m.contains_key(".") {
                    out.insert(path.clone());
                }
                parse_node(m, path, out);
            }
            _ => {
                out.insert(path.clone());
            }
        }
        path.pop();
    }
}

/// Whether `path` starts with `prefix`.
pub(crate) fn has_prefix(path: &[Pe], prefix: &[Pe]) -> bool {
    path.len() >= prefix.len() && path[..prefix.len()] == *prefix
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apply_set_uses_keys_for_containers_and_ports() {
        let cfg = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [
            {"name": "app", "image": "x", "ports": [{"containerPort": 80}]}
        ]}}}});
        let set = apply_set(&cfg);
        let v1 = to_fields_v1(&set);
        let c = &v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"];
        assert!(c.get(".").is_some());
        assert!(c["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"].is_object());
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let live =
            json!({"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]});
        let patch = json!({"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b", "image": "3"}]});
        let out = strategic_merge(&live, &patch, &[]);
        assert_eq!(out["containers"][1]["image"], "3");
        assert_eq!(out["containers"][0]["image"], "1");
        assert!(out.get("$setElementOrder/containers").is_none());
    }

    #[test]
    fn json_patch_ops() {
        let doc = json!({"a": [1, 2], "b": {"c": 1}});
        let ops = json!([{"op": "add", "path": "/a/-", "value": 3},
            {"op": "replace", "path": "/b/c", "value": 2}, {"op": "remove", "path": "/a/0"}]);
        assert_eq!(
            json_patch(&doc, &ops).unwrap(),
            json!({"a": [2, 3], "b": {"c": 2}})
        );
    }

    #[test]
    fn diff_reports_changes_and_removals() {
        let old = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}});
        let new = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {}});
        let (changed, removed) = diff(&old, &new);
        assert!(changed.contains(&vec![
            Pe::Field("metadata".into()),
            Pe::Field("labels".into()),
            Pe::Field("b".into())
        ]));
        assert!(removed.contains(&vec![
            Pe::Field("spec".into()),
            Pe::Field("replicas".into())
        ]));
    }
}

//! Fields left out of the comparison: per-app `ignoreDifferences` rules (JSON pointers, and
//! fields owned by other field managers such as an HPA's `spec.replicas`).

use serde_json::{Map, Value};

use crate::config::IgnoreDifference;

/// One step of a path into an object.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// A map key, or a list index when the value at that point is a list and the key is a number
    /// (JSON pointer semantics).
    Field(String),
    /// The element of a list whose fields have these values (`k:{…}` in managedFields).
    Key(Map<String, Value>),
    /// The element of a set-like list equal to this value (`v:…` in managedFields).
    Item(Value),
}

/// A path to one field.
pub type FieldPath = Vec<Segment>;

/// True when `rule` applies to `object` (matching group, kind, name and namespace where set).
pub fn rule_matches(rule: &IgnoreDifference, object: &Value) -> bool {
    let text = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or("");
    let api_version = text("/apiVersion");
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    rule.kind == text("/kind")
        && rule.group.as_deref().is_none_or(|g| g == group)
        && rule
            .name
            .as_deref()
            .is_none_or(|n| n == text("/metadata/name"))
        && rule
            .namespace
            .as_deref()
            .is_none_or(|n| n == text("/metadata/namespace"))
}

/// Parses a JSON pointer (`/spec/replicas`, `~1` and `~0` escapes) into a path.
pub fn parse_pointer(pointer: &str) -> FieldPath {
    pointer
        .split('/')
        .skip(1)
        .map(|s| Segment::Field(s.replace("~1", "/").replace("~0", "~")))
        .collect()
}

/// The leaf fields recorded in `live`'s managedFields for any of `managers`.
pub fn managed_paths(live: &Value, managers: &[String]) -> Vec<FieldPath> {
    let mut out = Vec::new();
    let Some(entries) = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return out;
    };
    for entry in entries {
        let manager = entry.get("manager").and_then(Value::as_str).unwrap_or("");
        if !managers.iter().any(|m| m == manager) {
            continue;
        }
        if let Some(fields) = entry.get("fieldsV1") {
            collect_leaves(fields, &mut Vec::new(), &mut out);
        }
    }
    out
}

/// Walks a FieldsV1 set (`f:name`, `k:{…}`, `v:…`, `.`) collecting the paths of its leaves.
fn collect_leaves(node: &Value, path: &mut FieldPath, out: &mut Vec<FieldPath>) {
    let Some(children) = node.as_object() else {
        return;
    };
    let mut has_child = false;
    for (key, child) in children {
        let segment = if let Some(name) = key.strip_prefix("f:") {
            Segment::Field(name.to_string())
        } else if let Some(json) = key.strip_prefix("k:") {
            match serde_json::from_str::<Value>(json) {
                Ok(Value::Object(keys)) => Segment::Key(keys),
                _ => continue,
            }
        } else if let Some(json) = key.strip_prefix("v:") {
            match serde_json::from_str::<Value>(json) {
                Ok(value) => Segment::Item(value),
                Err(_) => continue,
            }
        } else {
            // "." marks the node itself (owned as a container); "i:" indices are not used by
            // the API server for the types bowline compares.
            continue;
        };
        has_child = true;
        path.push(segment);
        collect_leaves(child, path, out);
        path.pop();
    }
    if !has_child && !path.is_empty() {
        out.push(path.clone());
    }
}

/// Removes the field at `path` from `object` if present; returns whether something was removed.
pub fn remove_path(object: &mut Value, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = object;
    for segment in parents {
        match step(node, segment) {
            Some(next) => node = next,
            None => return false,
        }
    }
    match (node, last) {
        (Value::Object(map), Segment::Field(name)) => map.remove(name).is_some(),
        (Value::Array(items), segment) => match position(items, segment) {
            Some(i) => {
                items.remove(i);
                true
            }
            None => false,
        },
        _ => false,
    }
}

fn step<'v>(node: &'v mut Value, segment: &Segment) -> Option<&'v mut Value> {
    match node {
        Value::Object(map) => match segment {
            Segment::Field(name) => map.get_mut(name),
            _ => None,
        },
        Value::Array(items) => {
            let i = position(items, segment)?;
            items.get_mut(i)
        }
        _ => None,
    }
}

fn position(items: &[Value], segment: &Segment) -> Option<usize> {
    match segment {
        Segment::Field(index) => index.parse::<usize>().ok().filter(|i| *i < items.len()),
        Segment::Key(keys) => items.iter().position(|item| {
            keys.iter()
                .all(|(k, v)| item.get(k).is_some_and(|iv| loosely_equal(iv, v)))
        }),
        Segment::Item(value) => items.iter().position(|item| item == value),
    }
}

/// managedFields keys carry numbers as JSON numbers and strings as strings; objects may carry a
/// port as a number where the key says the same number (or an int-or-string as either).
fn loosely_equal(a: &Value, b: &Value) -> bool {
    a == b
        || match (a, b) {
            (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => {
                *s == n.to_string()
            }
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_remove_fields_and_list_items() {
        let mut v = json!({"spec": {"replicas": 3, "a/b": 1, "list": [1, 2, 3]}});
        assert!(remove_path(&mut v, &parse_pointer("/spec/replicas")));
        assert!(remove_path(&mut v, &parse_pointer("/spec/a~1b")));
        assert!(remove_path(&mut v, &parse_pointer("/spec/list/1")));
        assert!(!remove_path(&mut v, &parse_pointer("/spec/missing")));
        assert!(!remove_path(&mut v, &parse_pointer("/spec/list/9")));
        assert_eq!(v, json!({"spec": {"list": [1, 3]}}));
    }

    #[test]
    fn managed_fields_of_named_managers_only() {
        let live = json!({"metadata": {"managedFields": [
            {"manager": "kube-controller-manager", "operation": "Update", "subresource": "scale",
             "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": "bowline", "operation": "Apply",
             "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                 "k:{\"name\":\"app\"}": {".": {}, "f:image": {}}}}}}}}
        ]}});
        let hpa = managed_paths(&live, &["kube-controller-manager".to_string()]);
        assert_eq!(
            hpa,
            vec![vec![
                Segment::Field("spec".into()),
                Segment::Field("replicas".into())
            ]]
        );
        let ours = managed_paths(&live, &["bowline".to_string()]);
        assert_eq!(ours.len(), 1);
        let mut obj = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "side", "image": "s"}, {"name": "app", "image": "a"}]}}}});
        assert!(remove_path(&mut obj, &ours[0]));
        assert_eq!(
            obj,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "side", "image": "s"}, {"name": "app"}]}}}})
        );
    }

    #[test]
    fn keyed_items_match_numbers_and_strings() {
        let mut obj = json!({"ports": [{"port": 80, "protocol": "TCP", "name": "http"}]});
        let path = vec![
            Segment::Field("ports".into()),
            Segment::Key(
                serde_json::from_str(r#"{"port":80,"protocol":"TCP"}"#).expect("valid json"),
            ),
            Segment::Field("name".into()),
        ];
        assert!(remove_path(&mut obj, &path));
        assert_eq!(obj, json!({"ports": [{"port": 80, "protocol": "TCP"}]}));
    }

    #[test]
    fn rules_match_on_kind_group_name_namespace() {
        let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                         "metadata": {"name": "web", "namespace": "shop"}});
        let rule = |group: Option<&str>, name: Option<&str>| IgnoreDifference {
            group: group.map(str::to_string),
            kind: "Deployment".into(),
            name: name.map(str::to_string),
            namespace: None,
            json_pointers: vec![],
            managed_fields_managers: vec![],
        };
        assert!(rule_matches(&rule(None, None), &obj));
        assert!(rule_matches(&rule(Some("apps"), Some("web")), &obj));
        assert!(!rule_matches(&rule(Some(""), None), &obj));
        assert!(!rule_matches(&rule(None, Some("api")), &obj));
    }
}

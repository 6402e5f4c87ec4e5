//! Normalization: strip what the API server owns or generates, so two objects compare equal
//! exactly when the user-visible desired state is the same.

use serde_json::{Map, Value};

/// `metadata` fields written by the API server, never by users.
const SERVER_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Annotations written by clients or controllers that say nothing about the desired state.
/// `last-applied-configuration` also holds a full copy of the object (Secret values in clear).
const GENERATED_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/restartedAt",
];

/// Removes `status`, server-written metadata and generated annotations, in place. Empty
/// `labels`/`annotations` maps left behind are dropped too, so "no labels" and "empty labels"
/// compare equal.
pub fn normalize(object: &mut Value) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    map.remove("status");
    if let Some(Value::Object(metadata)) = map.get_mut("metadata") {
        for key in SERVER_METADATA {
            metadata.remove(*key);
        }
        if let Some(Value::Object(annotations)) = metadata.get_mut("annotations") {
            for key in GENERATED_ANNOTATIONS {
                annotations.remove(*key);
            }
        }
        drop_if_empty(metadata, "annotations");
        drop_if_empty(metadata, "labels");
    }
}

/// A normalized copy of `object`, as [`normalize`] would leave it, without ever copying the
/// parts it drops (status and managedFields are often most of a live object).
pub fn normalized(object: &Value) -> Value {
    let Some(map) = object.as_object() else {
        return object.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        match (key.as_str(), value) {
            ("status", _) => {}
            ("metadata", Value::Object(metadata)) => {
                let mut meta = Map::new();
                for (k, v) in metadata {
                    if SERVER_METADATA.contains(&k.as_str()) {
                        continue;
                    }
                    match (k.as_str(), v) {
                        ("annotations", Value::Object(annotations)) => {
                            let kept: Map<String, Value> = annotations
                                .iter()
                                .filter(|(a, _)| !GENERATED_ANNOTATIONS.contains(&a.as_str()))
                                .map(|(a, v)| (a.clone(), v.clone()))
                                .collect();
                            meta.insert(k.clone(), Value::Object(kept));
                        }
                        _ => {
                            meta.insert(k.clone(), v.clone());
                        }
                    }
                }
                drop_if_empty(&mut meta, "annotations");
                drop_if_empty(&mut meta, "labels");
                out.insert(key.clone(), Value::Object(meta));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(out)
}

/// Whether [`normalized`] would make `a` and `b` equal, without copying either: the equal
/// path of a plan (most objects), where building both normalized copies is most of the cost.
pub fn equal_normalized(a: &Value, b: &Value) -> bool {
    let (Some(ma), Some(mb)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let body = |k: &String| k != "status" && k != "metadata";
    let same_body = ma.iter().filter(|(k, _)| body(k)).count()
        == mb.iter().filter(|(k, _)| body(k)).count()
        && ma
            .iter()
            .filter(|(k, _)| body(k))
            .all(|(k, v)| mb.get(k) == Some(v));
    same_body
        && match (ma.get("metadata"), mb.get("metadata")) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => metadata_equal(x, y),
            (x, y) => x == y,
        }
}

/// `metadata` maps equal once normalized: server fields ignored, generated annotations
/// ignored, empty or null `labels`/`annotations` the same as none.
fn metadata_equal(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    let kept =
        |k: &String| !SERVER_METADATA.contains(&k.as_str()) && k != "labels" && k != "annotations";
    let count = |m: &Map<String, Value>| m.keys().filter(|k| kept(k)).count();
    count(a) == count(b)
        && a.iter()
            .filter(|(k, _)| kept(k))
            .all(|(k, v)| b.get(k) == Some(v))
        && map_equal(a.get("labels"), b.get("labels"), &[])
        && map_equal(
            a.get("annotations"),
            b.get("annotations"),
            GENERATED_ANNOTATIONS,
        )
}

/// Two `labels`/`annotations` values equal once `skipped` keys are left out and an empty map
/// or null counts as none.
fn map_equal(a: Option<&Value>, b: Option<&Value>, skipped: &[&str]) -> bool {
    match (entries(a, skipped), entries(b, skipped)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The entries of a `labels`/`annotations` value without `skipped` keys (none for null or
/// absent), or `None` when it is not a map.
fn entries<'v>(v: Option<&'v Value>, skipped: &[&str]) -> Option<Vec<(&'v String, &'v Value)>> {
    match v {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Object(m)) => Some(
            m.iter()
                .filter(|(k, _)| !skipped.contains(&k.as_str()))
                .collect(),
        ),
        Some(_) => None,
    }
}

fn drop_if_empty(map: &mut Map<String, Value>, key: &str) {
    let empty = match map.get(key) {
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Null) => true,
        _ => false,
    };
    if empty {
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drops_server_fields_and_keeps_user_fields() {
        let mut live = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": "a", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                "generation": 2, "creationTimestamp": "2026-01-01T00:00:00Z",
                "managedFields": [{"manager": "bowline"}],
                "labels": {"x": "y"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}
            },
            "data": {"k": "v"},
            "status": {"phase": "x"}
        });
        normalize(&mut live);
        assert_eq!(
            live,
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "a", "namespace": "ns", "labels": {"x": "y"}},
                "data": {"k": "v"}
            })
        );
    }

    #[test]
    fn normalized_copy_equals_normalize_in_place() {
        let live = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "a", "uid": "u", "labels": {},
                         "annotations": {"deployment.kubernetes.io/revision": "2", "x": "y"},
                         "managedFields": [{"manager": "m"}]},
            "spec": {"replicas": 1}, "status": {"replicas": 1}
        });
        let mut in_place = live.clone();
        normalize(&mut in_place);
        assert_eq!(normalized(&live), in_place);
        assert_eq!(normalized(&json!("x")), json!("x"));
    }

    /// The fast comparison agrees with comparing the normalized copies, on variants that
    /// differ only where normalization looks (and where it does not).
    #[test]
    fn equal_normalized_agrees_with_normalized_copies() {
        let base = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "a", "namespace": "ns", "labels": {"x": "y"},
                         "annotations": {"note": "n"}},
            "spec": {"replicas": 1}
        });
        let variants: Vec<Value> = vec![
            base.clone(),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "a", "namespace": "ns", "labels": {"x": "y"},
                             "annotations": {"note": "n", "deployment.kubernetes.io/revision": "4"},
                             "uid": "u", "resourceVersion": "9", "managedFields": []},
                "spec": {"replicas": 1}, "status": {"replicas": 1}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "a", "namespace": "ns", "labels": {"x": "z"},
                             "annotations": {"note": "n"}},
                "spec": {"replicas": 1}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "a", "namespace": "ns", "labels": {"x": "y"}},
                "spec": {"replicas": 1}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "a", "namespace": "ns", "labels": {"x": "y"},
                             "annotations": {"note": "n"}},
                "spec": {"replicas": 2}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "a", "namespace": "ns", "labels": {"x": "y"},
                             "annotations": {"note": "n"}},
                "spec": {"replicas": 1}, "extra": true}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "a", "namespace": "ns", "labels": {}, "annotations": null},
                "spec": {"replicas": 1}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "a", "namespace": "ns",
                             "annotations": {"kubectl.kubernetes.io/restartedAt": "now"}},
                "spec": {"replicas": 1}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "b", "namespace": "ns", "labels": {"x": "y"},
                             "annotations": {"note": "n"}},
                "spec": {"replicas": 1}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": "odd",
                "spec": {"replicas": 1}}),
            json!("scalar"),
        ];
        for a in &variants {
            for b in &variants {
                assert_eq!(
                    equal_normalized(a, b),
                    normalized(a) == normalized(b),
                    "{a}\n{b}"
                );
            }
        }
    }

    #[test]
    fn non_objects_are_left_alone() {
        let mut v = json!([1, 2]);
        normalize(&mut v);
        assert_eq!(v, json!([1, 2]));
    }
}

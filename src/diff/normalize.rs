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

    #[test]
    fn non_objects_are_left_alone() {
        let mut v = json!([1, 2]);
        normalize(&mut v);
        assert_eq!(v, json!([1, 2]));
    }
}

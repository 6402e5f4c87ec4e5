//! Which live objects pruning may delete, and in which order. Pure functions: the parent
//! module lists the candidates from the cluster.
//!
//! An object is pruned only when it carries bowline's managed-by label and both the app and
//! environment annotations of the app being synced, is not owned by another object (pods of a
//! ReplicaSet, …), and is no longer desired. Nothing else is ever deleted. A Namespace is
//! moreover kept while objects of other apps live in it (the caller asks the cluster), and an
//! object another app of the repository now declares is left for that app to take over
//! ([`Declarations`]).

use std::collections::HashSet;

use serde_json::Value;

use crate::object::{APP_KEY, ENV_KEY, MANAGED_BY, MANAGED_BY_LABEL, ObjectKey, kind_rank};

/// The label selector that finds candidates on the server (refined by [`is_ours`]).
pub fn selector(app: &str) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY},{APP_KEY}={app}")
}

/// The label selector of objects bowline manages for applications other than `app`.
pub fn others_selector(app: &str) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY},{APP_KEY},{APP_KEY}!={app}")
}

/// True when `object` is a Namespace (pruning deletes one only when no other app uses it).
pub fn is_namespace(object: &Value) -> bool {
    object.pointer("/apiVersion").and_then(Value::as_str) == Some("v1")
        && object.pointer("/kind").and_then(Value::as_str) == Some("Namespace")
}

/// The Namespace bowline creates for `app` in `environment` when it is missing: only
/// bowline's labels and annotations, so it is applied, compared and pruned like a rendered
/// object.
pub fn namespace_object(name: &str, app: &str, environment: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, APP_KEY: app, ENV_KEY: environment},
            "annotations": {APP_KEY: app, ENV_KEY: environment},
        },
    })
}

/// True when `object` was created by bowline for `app` in `environment`.
pub fn is_ours(object: &Value, app: &str, environment: &str) -> bool {
    let text = |p: &str| object.pointer(p).and_then(Value::as_str);
    let annotation = |k: &str| {
        object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
    };
    let owned_by_another = object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| !refs.is_empty());
    text(&format!(
        "/metadata/labels/{}",
        MANAGED_BY_LABEL.replace('/', "~1")
    )) == Some(MANAGED_BY)
        && annotation(APP_KEY) == Some(app)
        && annotation(ENV_KEY) == Some(environment)
        && !owned_by_another
}

/// The bowline app that manages `object`, if bowline manages it.
pub fn owner(object: &Value) -> Option<&str> {
    let label = |k: &str| {
        object
            .pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
    };
    (label(MANAGED_BY_LABEL) == Some(MANAGED_BY))
        .then(|| label(APP_KEY))
        .flatten()
}

/// Which apps of the repository declare which objects, per cluster (by kubeconfig context):
/// consulted before pruning an object another app may now declare, and before taking over an
/// object another app manages.
pub trait Declarations: Send + Sync + std::fmt::Debug {
    /// Whether `app` declares `key` in the cluster of kubeconfig `context`; `None` when that is
    /// not known (the app's render failed, or it was not checked).
    fn declares(&self, app: &str, context: &str, key: &ObjectKey) -> Option<bool>;

    /// The apps other than `app` that declare `key` in the cluster of `context`, sorted.
    fn others_declaring(&self, app: &str, context: &str, key: &ObjectKey) -> Vec<String>;
}

/// True when `object` carries bowline's labels for `app`: only such objects are shown in a
/// live diff with their content, and only they may be updated by a sync.
pub fn is_managed_by(object: &Value, app: &str) -> bool {
    owner(object) == Some(app)
}

/// The objects among `live` to delete: ours and not desired, in reverse apply order (workloads
/// before their config, namespaces and CRDs last).
pub fn select<'l>(
    live: &'l [Value],
    desired: &HashSet<ObjectKey>,
    app: &str,
    environment: &str,
) -> Vec<&'l Value> {
    let mut doomed: Vec<&Value> = live
        .iter()
        .filter(|o| is_ours(o, app, environment))
        .filter(|o| !desired.contains(&ObjectKey::of(o)))
        // Earlier blue/green revisions (kept scaled down for a rollback) and the canary
        // tracks of a running execution belong to the strategy, not to pruning.
        .filter(|o| !crate::desired::belongs_to_strategy(o))
        .collect();
    doomed.sort_by_key(|o| {
        let key = ObjectKey::of(o);
        (std::cmp::Reverse(kind_rank(&key.kind)), key)
    });
    doomed.dedup_by_key(|o| ObjectKey::of(o));
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(kind: &str, name: &str, app: &str, env: &str) -> Value {
        json!({"apiVersion": "v1", "kind": kind,
               "metadata": {"name": name, "namespace": "shop",
                            "labels": {"app.kubernetes.io/managed-by": "bowline", "bowline.dev/app": app},
                            "annotations": {"bowline.dev/app": app, "bowline.dev/environment": env}}})
    }

    #[test]
    fn only_ours_not_desired_in_reverse_order() {
        let mut foreign = obj("ConfigMap", "foreign", "web", "staging");
        foreign["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("helm");
        let mut owned = obj("ConfigMap", "owned", "web", "staging");
        owned["metadata"]["ownerReferences"] = json!([{"kind": "Deployment", "name": "x"}]);
        let live = vec![
            obj("ConfigMap", "old-config", "web", "staging"),
            obj("Deployment", "old", "web", "staging"),
            obj("ConfigMap", "kept", "web", "staging"),
            obj("ConfigMap", "other-app", "api", "staging"),
            obj("ConfigMap", "other-env", "web", "production"),
            foreign,
            owned,
        ];
        let desired: HashSet<ObjectKey> = [ObjectKey::of(&live[2])].into_iter().collect();
        let names: Vec<&str> = select(&live, &desired, "web", "staging")
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(names, vec!["old", "old-config"]);
    }

    #[test]
    fn the_created_namespace_is_ours_and_managed() {
        let ns = namespace_object("shop-staging", "web", "staging");
        assert!(is_namespace(&ns));
        assert!(is_ours(&ns, "web", "staging"));
        assert!(is_managed_by(&ns, "web"));
        assert!(!is_managed_by(&ns, "api"));
        assert_eq!(ObjectKey::of(&ns).to_string(), "v1 Namespace shop-staging");
        assert_eq!(
            others_selector("web"),
            "app.kubernetes.io/managed-by=bowline,bowline.dev/app,bowline.dev/app!=web"
        );
    }
}

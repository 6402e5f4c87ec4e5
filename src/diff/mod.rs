//! Comparing live and desired objects: normalization, secret masking, ignored fields, a
//! structured result per object and a unified diff for people.
//!
//! Pure functions over JSON values: the `cluster` module fetches the live object and the
//! server-side dry-run of the desired one (the approach of `kubectl diff`), this module says
//! what differs. Comparing against the dry-run rather than the rendered manifest removes the
//! false drift that API-server defaulting would otherwise cause.

pub mod ignore;
pub mod mask;
pub mod normalize;
pub mod text;

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::config::IgnoreDifference;
pub use ignore::FieldPath;
pub use mask::Masker;
pub use normalize::normalize;

pub use crate::object::ObjectKey;

/// What applying the desired state would do to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Not in the cluster yet.
    Create,
    /// In the cluster, with different fields.
    Update,
    /// In the cluster, no longer desired (pruned when pruning is on).
    Delete,
    /// In the cluster and identical after normalization.
    Unchanged,
    /// In the cluster but not managed by this application: shown without content, and a sync
    /// refuses to take it over.
    Refuse,
}

impl Action {
    /// Lower-case name, as in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Unchanged => "unchanged",
            Action::Refuse => "refuse",
        }
    }

    /// The sign shown in front of the object in text output.
    pub fn sign(self) -> char {
        match self {
            Action::Create => '+',
            Action::Update => '~',
            Action::Delete => '-',
            Action::Unchanged => '=',
            Action::Refuse => '!',
        }
    }
}

/// The comparison of one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectDiff {
    /// The object.
    pub key: ObjectKey,
    /// What would happen to it.
    pub action: Action,
    /// JSON pointers of the fields that differ (leaves; for lists of different length, the list),
    /// empty unless the action is an update.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// Unified diff of the normalized, masked objects as YAML; empty when unchanged.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub unified: String,
    /// Fields of the change that another field manager owns, as the API server words the
    /// conflict (the diff shows the change as a forced apply would make it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<String>,
    /// The bowline app that manages the object now and no longer declares it: the change
    /// hands the object over (see [`crate::cluster::prune::Declarations`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_over_from: Option<String>,
}

/// Counts of objects per action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Objects to create.
    pub create: usize,
    /// Objects to update.
    pub update: usize,
    /// Objects to delete.
    pub delete: usize,
    /// Objects already in sync.
    pub unchanged: usize,
    /// Existing objects the application does not manage (a sync refuses them).
    #[serde(skip_serializing_if = "is_zero")]
    pub refused: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Counts {
    /// Counts the actions of `diffs`.
    pub fn of<'d>(diffs: impl IntoIterator<Item = &'d ObjectDiff>) -> Counts {
        let mut c = Counts::default();
        for d in diffs {
            match d.action {
                Action::Create => c.create += 1,
                Action::Update => c.update += 1,
                Action::Delete => c.delete += 1,
                Action::Unchanged => c.unchanged += 1,
                Action::Refuse => c.refused += 1,
            }
        }
        c
    }

    /// True when nothing would change.
    pub fn in_sync(&self) -> bool {
        self.create + self.update + self.delete + self.refused == 0
    }

    /// Adds `other` to these counts.
    pub fn add(&mut self, other: Counts) {
        self.create += other.create;
        self.update += other.update;
        self.delete += other.delete;
        self.unchanged += other.unchanged;
        self.refused += other.refused;
    }
}

impl fmt::Display for Counts {
    /// `2 to create, 1 to update, 0 to delete, 5 unchanged`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} to create, {} to update, {} to delete, {} unchanged",
            self.create, self.update, self.delete, self.unchanged
        )?;
        if self.refused > 0 {
            write!(f, ", {} refused (not managed)", self.refused)?;
        }
        Ok(())
    }
}

/// How objects are compared.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Masks Secret values.
    pub masker: Masker,
    /// The application's ignore rules (implicit ones included, see [`implicit_ignores`]).
    pub ignore: Vec<IgnoreDifference>,
    /// Lines of context around each change in unified diffs (default 3 when zero).
    pub context: usize,
}

impl DiffOptions {
    /// The fields of `object` to leave out: JSON pointers of matching rules plus the fields that
    /// the rules' field managers own on `live`.
    pub fn ignored_paths(&self, object: &Value, live: Option<&Value>) -> Vec<FieldPath> {
        let mut paths = Vec::new();
        for rule in self
            .ignore
            .iter()
            .filter(|r| ignore::rule_matches(r, object))
        {
            paths.extend(rule.json_pointers.iter().map(|p| ignore::parse_pointer(p)));
            if let Some(live) = live.filter(|_| !rule.managed_fields_managers.is_empty()) {
                paths.extend(ignore::managed_paths(live, &rule.managed_fields_managers));
            }
        }
        paths
    }
}

/// Ignore rules implied by the rendered objects themselves: the `spec.replicas` of every
/// Deployment or StatefulSet that a rendered HorizontalPodAutoscaler scales, since the
/// autoscaler owns that field once it runs.
pub fn implicit_ignores<'o>(objects: impl IntoIterator<Item = &'o Value>) -> Vec<IgnoreDifference> {
    let mut rules = Vec::new();
    for hpa in objects {
        if hpa.get("kind").and_then(Value::as_str) != Some("HorizontalPodAutoscaler") {
            continue;
        }
        let target = |p: &str| {
            hpa.pointer(&format!("/spec/scaleTargetRef/{p}"))
                .and_then(Value::as_str)
        };
        let (Some(kind), Some(name)) = (target("kind"), target("name")) else {
            continue;
        };
        rules.push(IgnoreDifference {
            group: target("apiVersion")
                .map(|v| v.rsplit_once('/').map_or("", |(g, _)| g).to_string()),
            kind: kind.to_string(),
            name: Some(name.to_string()),
            namespace: hpa
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string),
            json_pointers: vec!["/spec/replicas".to_string()],
            managed_fields_managers: Vec::new(),
        });
    }
    rules
}

/// Compares the `live` object with the `desired` one (normally the server-side dry-run of the
/// rendered object; the rendered object itself when there is no cluster).
/// `None` on one side means the object is absent there. Both absent is reported as unchanged.
pub fn compare(live: Option<&Value>, desired: Option<&Value>, options: &DiffOptions) -> ObjectDiff {
    let key = ObjectKey::of(desired.or(live).unwrap_or(&Value::Null));
    let ignored = desired
        .or(live)
        .map(|o| options.ignored_paths(o, live))
        .unwrap_or_default();
    // The equal path without copies: no ignored fields and no Secret (whose values fold
    // `stringData` into `data` before they compare) — what most objects of a plan are.
    if let (Some(l), Some(d)) = (live, desired)
        && ignored.is_empty()
        && !mask::is_secret(l)
        && !mask::is_secret(d)
        && normalize::equal_normalized(l, d)
    {
        return ObjectDiff {
            key,
            action: Action::Unchanged,
            changed: Vec::new(),
            unified: String::new(),
            conflict: None,
            taken_over_from: None,
        };
    }
    let prepare = |object: &Value| {
        let mut object = normalize::normalized(object);
        options.masker.mask(&mut object);
        for path in &ignored {
            ignore::remove_path(&mut object, path);
        }
        object
    };
    let live = live.map(prepare);
    let desired = desired.map(prepare);
    let action = match (&live, &desired) {
        (None, Some(_)) => Action::Create,
        (Some(_), None) => Action::Delete,
        (Some(l), Some(d)) if l != d => Action::Update,
        _ => Action::Unchanged,
    };
    let mut changed = Vec::new();
    if let (Action::Update, Some(l), Some(d)) = (action, &live, &desired) {
        changed_pointers(l, d, &mut String::new(), &mut changed);
    }
    let unified = match action {
        Action::Unchanged => String::new(),
        _ => text::unified(&key, live.as_ref(), desired.as_ref(), options.context),
    };
    ObjectDiff {
        key,
        action,
        changed,
        unified,
        conflict: None,
        taken_over_from: None,
    }
}

impl ObjectDiff {
    /// An existing object that `app` does not manage: reported without any of its content,
    /// naming the bowline app that owns it when another one does.
    pub fn refused(key: ObjectKey, app: &str, owner: Option<&str>) -> ObjectDiff {
        let unified = match owner {
            Some(owner) => format!(
                "! {key}: exists, owned by bowline app {owner}, not {app}: would be refused (an object belongs to one app)\n"
            ),
            None => format!("! {key}: exists, not managed by {app}: would be refused\n"),
        };
        ObjectDiff {
            key,
            action: Action::Refuse,
            changed: Vec::new(),
            unified,
            conflict: None,
            taken_over_from: None,
        }
    }
}

/// Appends the JSON pointers of the leaves that differ between `a` and `b`.
fn changed_pointers(a: &Value, b: &Value, prefix: &mut String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            let mut keys: Vec<&String> = ma.keys().chain(mb.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let len = prefix.len();
                prefix.push('/');
                prefix.push_str(&k.replace('~', "~0").replace('/', "~1"));
                match (ma.get(k), mb.get(k)) {
                    (Some(x), Some(y)) => changed_pointers(x, y, prefix, out),
                    _ => out.push(prefix.clone()),
                }
                prefix.truncate(len);
            }
        }
        (Value::Array(la), Value::Array(lb)) if la.len() == lb.len() => {
            for (i, (x, y)) in la.iter().zip(lb).enumerate() {
                let len = prefix.len();
                prefix.push('/');
                prefix.push_str(&i.to_string());
                changed_pointers(x, y, prefix, out);
                prefix.truncate(len);
            }
        }
        _ if a != b => out.push(prefix.clone()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(image: &str, replicas: u32) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "9"},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                   {"name": "web", "image": image, "imagePullPolicy": "IfNotPresent"}]}}},
               "status": {"readyReplicas": replicas}})
    }

    #[test]
    fn identical_after_normalization_is_unchanged() {
        let live = deployment("web:1", 2);
        let mut desired = live.clone();
        desired["metadata"]["resourceVersion"] = json!("10");
        desired["status"] = json!({});
        let d = compare(Some(&live), Some(&desired), &DiffOptions::default());
        assert_eq!(d.action, Action::Unchanged);
        assert!(d.unified.is_empty() && d.changed.is_empty());
    }

    #[test]
    fn image_change_is_exactly_one_field() {
        let d = compare(
            Some(&deployment("web:1", 2)),
            Some(&deployment("web:2", 2)),
            &DiffOptions::default(),
        );
        assert_eq!(d.action, Action::Update);
        assert_eq!(d.changed, vec!["/spec/template/spec/containers/0/image"]);
        assert!(
            d.unified.contains("\n-      - image: web:1\n"),
            "{}",
            d.unified
        );
        assert!(
            d.unified.contains("\n+      - image: web:2\n"),
            "{}",
            d.unified
        );
    }

    #[test]
    fn create_and_delete() {
        let obj = deployment("web:1", 2);
        assert_eq!(
            compare(None, Some(&obj), &DiffOptions::default()).action,
            Action::Create
        );
        let deleted = compare(Some(&obj), None, &DiffOptions::default());
        assert_eq!(deleted.action, Action::Delete);
        assert_eq!(deleted.key.to_string(), "apps/v1 Deployment shop/web");
        assert!(
            !deleted.unified.contains("readyReplicas"),
            "status is normalized away"
        );
    }

    #[test]
    fn hpa_target_replicas_are_ignored() {
        let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}}});
        let options = DiffOptions {
            ignore: implicit_ignores([&hpa]),
            ..DiffOptions::default()
        };
        let d = compare(
            Some(&deployment("web:1", 7)),
            Some(&deployment("web:1", 2)),
            &options,
        );
        assert_eq!(d.action, Action::Unchanged, "{:?}", d.changed);
    }

    #[test]
    fn fields_of_other_managers_are_ignored() {
        let mut live = deployment("web:1", 7);
        live["metadata"]["managedFields"] = json!([{"manager": "kube-controller-manager",
            "operation": "Update", "subresource": "scale",
            "fieldsV1": {"f:spec": {"f:replicas": {}}}}]);
        let rule = IgnoreDifference {
            group: Some("apps".into()),
            kind: "Deployment".into(),
            name: None,
            namespace: None,
            json_pointers: vec![],
            managed_fields_managers: vec!["kube-controller-manager".into()],
        };
        let options = DiffOptions {
            ignore: vec![rule],
            ..DiffOptions::default()
        };
        let d = compare(Some(&live), Some(&deployment("web:2", 2)), &options);
        assert_eq!(d.changed, vec!["/spec/template/spec/containers/0/image"]);
    }

    #[test]
    fn secrets_differ_without_showing_values() {
        let secret = |v: &str| {
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "db", "namespace": "shop"}, "data": {"password": v}})
        };
        let d = compare(
            Some(&secret("b2xkLXZhbHVl")),
            Some(&secret("bmV3LXZhbHVl")),
            &DiffOptions::default(),
        );
        assert_eq!(d.action, Action::Update);
        assert_eq!(d.changed, vec!["/data/password"]);
        for clear in ["b2xkLXZhbHVl", "bmV3LXZhbHVl", "old-value", "new-value"] {
            assert!(!d.unified.contains(clear), "{}", d.unified);
        }
    }

    #[test]
    fn key_order_does_not_matter() {
        let a: Value = serde_json::from_str(r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c"},"data":{"b":"2","a":"1"}}"#).expect("json");
        let b: Value = serde_json::from_str(r#"{"apiVersion":"v1","data":{"a":"1","b":"2"},"metadata":{"name":"c"},"kind":"ConfigMap"}"#).expect("json");
        assert_eq!(
            compare(Some(&a), Some(&b), &DiffOptions::default()).action,
            Action::Unchanged
        );
        let create = compare(None, Some(&a), &DiffOptions::default());
        let lines: Vec<&str> = create
            .unified
            .lines()
            .filter(|l| l.starts_with('+'))
            .collect();
        assert!(
            lines.iter().position(|l| l.contains("apiVersion"))
                < lines.iter().position(|l| l.contains("data")),
            "keys are printed sorted: {lines:?}"
        );
    }
}

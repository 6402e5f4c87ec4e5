//! Health of applied objects, judged the way `kubectl rollout status` does: Deployments,
//! StatefulSets and DaemonSets by their rollout status, Jobs by completion, everything else by
//! existing. Pure functions over the objects; the polling loop lives in the parent module.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// The health of one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "message", rename_all = "camelCase")]
pub enum Health {
    /// Done: rolled out and available, completed, or simply present.
    Healthy,
    /// Still moving; the message says what is awaited.
    Progressing(String),
    /// Will not get healthy without a change; the message gives the reason.
    Failed(String),
}

impl Health {
    /// True when nothing more is awaited (healthy or failed).
    pub fn is_final(&self) -> bool {
        !matches!(self, Health::Progressing(_))
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Healthy => write!(f, "healthy"),
            Health::Progressing(m) => write!(f, "progressing: {m}"),
            Health::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

/// True for the kinds whose health depends on their pods (and so on [`assess`]'s `pods`).
pub fn has_rollout(object: &Value) -> bool {
    matches!(
        (kind(object), group(object)),
        ("Deployment" | "StatefulSet" | "DaemonSet", "apps") | ("Job", "batch")
    )
}

/// The health of `object` as read from the cluster; `pods` are the pods its selector matches
/// (used to name why a rollout fails, e.g. `ImagePullBackOff`).
pub fn assess(object: &Value, pods: &[Value]) -> Health {
    match (kind(object), group(object)) {
        ("Deployment", "apps") => deployment(object, pods),
        ("StatefulSet", "apps") => stateful_set(object, pods),
        ("DaemonSet", "apps") => daemon_set(object, pods),
        ("Job", "batch") => job(object),
        _ => Health::Healthy,
    }
}

fn kind(object: &Value) -> &str {
    object.get("kind").and_then(Value::as_str).unwrap_or("")
}

fn group(object: &Value) -> &str {
    object
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.rsplit_once('/'))
        .map_or("", |(g, _)| g)
}

fn int(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn condition<'o>(object: &'o Value, kind: &str) -> Option<&'o Value> {
    object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

fn field<'o>(value: &'o Value, key: &str) -> &'o str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Generation not observed yet by the controller.
fn unobserved(object: &Value) -> Option<Health> {
    let generation = int(object, "/metadata/generation");
    let observed = int(object, "/status/observedGeneration");
    (generation > observed).then(|| {
        Health::Progressing(format!(
            "waiting for the controller to observe generation {generation}"
        ))
    })
}

fn deployment(d: &Value, pods: &[Value]) -> Health {
    if let Some(h) = unobserved(d) {
        return h;
    }
    if let Some(c) = condition(d, "Progressing")
        && field(c, "reason") == "ProgressDeadlineExceeded"
    {
        return Health::Failed(with_pod_reasons(
            format!("ProgressDeadlineExceeded: {}", field(c, "message")),
            pods,
        ));
    }
    let desired = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let updated = int(d, "/status/updatedReplicas");
    let replicas = int(d, "/status/replicas");
    let available = int(d, "/status/availableReplicas");
    let waiting = if updated < desired {
        format!("{updated} of {desired} updated replicas are available")
    } else if replicas > updated {
        format!(
            "{} old replicas are pending termination",
            replicas - updated
        )
    } else if available < updated {
        format!("{available} of {updated} updated replicas are available")
    } else {
        return Health::Healthy;
    };
    Health::Progressing(with_pod_reasons(waiting, pods))
}

fn stateful_set(s: &Value, pods: &[Value]) -> Health {
    if let Some(h) = unobserved(s) {
        return h;
    }
    if s.pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        == Some("OnDelete")
    {
        return Health::Healthy;
    }
    let desired = s
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let ready = int(s, "/status/readyReplicas");
    let updated = int(s, "/status/updatedReplicas");
    let partition = int(s, "/spec/updateStrategy/rollingUpdate/partition");
    let waiting = if ready < desired {
        format!("{ready} of {desired} pods are ready")
    } else if partition > 0 && updated < desired - partition {
        format!(
            "{updated} of {} pods updated (partition {partition})",
            desired - partition
        )
    } else if partition == 0
        && field(s.get("status").unwrap_or(&Value::Null), "updateRevision")
            != field(s.get("status").unwrap_or(&Value::Null), "currentRevision")
    {
        format!("{updated} of {desired} pods updated to the new revision")
    } else {
        return Health::Healthy;
    };
    Health::Progressing(with_pod_reasons(waiting, pods))
}

fn daemon_set(d: &Value, pods: &[Value]) -> Health {
    if let Some(h) = unobserved(d) {
        return h;
    }
    let desired = int(d, "/status/desiredNumberScheduled");
    let updated = int(d, "/status/updatedNumberScheduled");
    let available = int(d, "/status/numberAvailable");
    let waiting = if updated < desired {
        format!("{updated} of {desired} updated pods are scheduled")
    } else if available < desired {
        format!("{available} of {desired} updated pods are available")
    } else {
        return Health::Healthy;
    };
    Health::Progressing(with_pod_reasons(waiting, pods))
}

fn job(j: &Value) -> Health {
    let is_true = |c: &Value| field(c, "status") == "True";
    if let Some(c) = condition(j, "Failed").filter(|c| is_true(c)) {
        return Health::Failed(format!("{}: {}", field(c, "reason"), field(c, "message")));
    }
    if condition(j, "Complete").is_some_and(is_true) {
        return Health::Healthy;
    }
    Health::Progressing(format!(
        "{} of {} completions",
        int(j, "/status/succeeded"),
        j.pointer("/spec/completions")
            .and_then(Value::as_i64)
            .unwrap_or(1)
    ))
}

/// Appends why pods are not running, e.g. `; pod web-7d9-x: ImagePullBackOff (Back-off pulling image "web:bad")`.
fn with_pod_reasons(message: String, pods: &[Value]) -> String {
    let reasons = pod_reasons(pods);
    if reasons.is_empty() {
        message
    } else {
        format!("{message}; {}", reasons.join("; "))
    }
}

/// One line per pod container that waits or crashed, in pod name order.
pub fn pod_reasons(pods: &[Value]) -> Vec<String> {
    let mut lines = Vec::new();
    for pod in pods {
        let name = pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        for list in ["initContainerStatuses", "containerStatuses"] {
            let statuses = pod
                .pointer(&format!("/status/{list}"))
                .and_then(Value::as_array);
            for status in statuses.into_iter().flatten() {
                let container = field(status, "name");
                let state = status.get("state");
                let waiting = state.and_then(|s| s.get("waiting"));
                let terminated = state
                    .and_then(|s| s.get("terminated"))
                    .filter(|t| t.get("exitCode").and_then(Value::as_i64) != Some(0));
                let Some((reason, message)) = waiting
                    .or(terminated)
                    .map(|w| (field(w, "reason"), field(w, "message")))
                else {
                    continue;
                };
                if reason.is_empty() || reason == "ContainerCreating" || reason == "PodInitializing"
                {
                    continue;
                }
                let mut line = format!("pod {name} container {container}: {reason}");
                if !message.is_empty() {
                    line.push_str(&format!(" ({message})"));
                }
                lines.push(line);
            }
        }
    }
    lines.sort();
    lines.dedup();
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(generation: i64, status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "generation": generation},
               "spec": {"replicas": 3}, "status": status})
    }

    #[test]
    fn deployment_states() {
        assert!(matches!(
            assess(&deploy(2, json!({"observedGeneration": 1})), &[]),
            Health::Progressing(m) if m.contains("generation 2")
        ));
        assert_eq!(
            assess(
                &deploy(
                    2,
                    json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 1})
                ),
                &[]
            ),
            Health::Progressing("1 of 3 updated replicas are available".into())
        );
        assert_eq!(
            assess(
                &deploy(
                    2,
                    json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3})
                ),
                &[]
            ),
            Health::Progressing("1 old replicas are pending termination".into())
        );
        assert_eq!(
            assess(
                &deploy(
                    2,
                    json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3})
                ),
                &[]
            ),
            Health::Healthy
        );
    }

    #[test]
    fn deadline_exceeded_names_the_pod_reasons() {
        let d = deploy(
            1,
            json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 0,
                "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                "message": "ReplicaSet \"web-5d8\" has timed out progressing."}]}),
        );
        let pod = json!({"metadata": {"name": "web-5d8-abc"}, "status": {"containerStatuses": [
            {"name": "web", "state": {"waiting": {"reason": "ImagePullBackOff",
                                                  "message": "Back-off pulling image \"web:nope\""}}}]}});
        let Health::Failed(message) = assess(&d, &[pod]) else {
            panic!("expected failure");
        };
        assert_eq!(
            message,
            "ProgressDeadlineExceeded: ReplicaSet \"web-5d8\" has timed out progressing.; \
             pod web-5d8-abc container web: ImagePullBackOff (Back-off pulling image \"web:nope\")"
        );
    }

    #[test]
    fn statefulset_daemonset_job_and_others() {
        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"generation": 1},
            "spec": {"replicas": 2}, "status": {"observedGeneration": 1, "readyReplicas": 2,
            "updatedReplicas": 2, "currentRevision": "a", "updateRevision": "a"}});
        assert_eq!(assess(&sts, &[]), Health::Healthy);
        let mut rolling = sts.clone();
        rolling["status"]["updateRevision"] = json!("b");
        assert!(matches!(assess(&rolling, &[]), Health::Progressing(_)));

        let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"generation": 1},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 2}});
        assert_eq!(
            assess(&ds, &[]),
            Health::Progressing("2 of 3 updated pods are available".into())
        );

        let job = |c: &str| {
            json!({"apiVersion": "batch/v1", "kind": "Job", "status": {"conditions": [
            {"type": c, "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}})
        };
        assert_eq!(assess(&job("Complete"), &[]), Health::Healthy);
        assert_eq!(
            assess(&job("Failed"), &[]),
            Health::Failed(
                "BackoffLimitExceeded: Job has reached the specified backoff limit".into()
            )
        );
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap"});
        assert_eq!(assess(&cm, &[]), Health::Healthy);
        assert!(!has_rollout(&cm));
    }
}

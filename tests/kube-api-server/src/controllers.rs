//! Simulated controllers: Deployments (with ReplicaSets and pods), StatefulSets, DaemonSets
//! and Jobs reach a ready (or, for failing images, a stuck) state shortly after each change.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::Shared;
use crate::resources::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Op, State, Write};

const CONTROLLER: &str = "kube-controller-manager";
const KUBELET: &str = "kubelet";
const NODE: &str = "test-node";

/// Schedules the controller of `object`'s kind, if it has one, after the configured delay.
pub(crate) fn after_write(shared: &Arc<Shared>, object: &Value) {
    let api_version = object["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    let controlled = matches!(
        (api_version.as_str(), kind.as_str()),
        ("apps/v1", "Deployment" | "StatefulSet" | "DaemonSet") | ("batch/v1", "Job")
    );
    if !controlled {
        return;
    }
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let delay = shared.options.controller_delay;
    let shared2 = shared.clone();
    shared.runtime.spawn(async move {
        tokio::time::sleep(delay).await;
        let mut state = shared2.lock();
        reconcile(&mut state, &api_version, &kind, &namespace, &name);
    });
}

fn reconcile(state: &mut State, api_version: &str, kind: &str, namespace: &str, name: &str) {
    let Some(rt) = state.find_kind(api_version, kind) else {
        return;
    };
    let Ok(obj) = state.get(&rt, Some(namespace), name) else {
        return;
    };
    match kind {
        "Deployment" => deployment(state, &rt, &obj),
        "StatefulSet" => statefulset(state, &rt, &obj),
        "DaemonSet" => daemonset(state, &rt, &obj),
        "Job" => job(state, &rt, &obj),
        _ => {}
    }
}

fn write(
    state: &mut State,
    rt: &ResourceType,
    namespace: &str,
    name: Option<&str>,
    sub: Option<&str>,
    manager: &str,
    op: Op,
) -> Option<Value> {
    let w = Write {
        rt: rt.clone(),
        namespace: Some(namespace.to_string()).filter(|_| rt.namespaced),
        name: name.map(str::to_string),
        subresource: sub.map(str::to_string),
        manager: manager.to_string(),
        dry_run: false,
        force: false,
        keep_status: false,
    };
    match state.write(w, op) {
        Ok(written) => Some(written.object),
        Err(e) => {
            tracing::warn!("simulated controller write failed: {}", e.message);
            None
        }
    }
}

/// Writes `status` through the status subresource, keeping condition timestamps that did not
/// change.
fn write_status(
    state: &mut State,
    rt: &ResourceType,
    obj: &Value,
    mut status: Value,
    manager: &str,
) -> Option<Value> {
    if let (Some(old), Some(Value::Array(new))) = (
        obj["status"]["conditions"].as_array(),
        status.get_mut("conditions"),
    ) {
        for c in new.iter_mut() {
            if let Some(prev) = old.iter().find(|o| o["type"] == c["type"])
                && prev["status"] == c["status"]
            {
                for k in ["lastTransitionTime", "lastProbeTime"] {
                    if prev.get(k).is_some() && c.get(k).is_some() {
                        c[k] = prev[k].clone();
                    }
                }
                if prev["reason"] == c["reason"]
                    && prev["message"] == c["message"]
                    && prev.get("lastUpdateTime").is_some()
                {
                    c["lastUpdateTime"] = prev["lastUpdateTime"].clone();
                }
            }
        }
    }
    let mut body = obj.clone();
    body["status"] = status;
    let namespace = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    write(
        state,
        rt,
        &namespace,
        Some(&name),
        Some("status"),
        manager,
        Op::Update(body),
    )
}

fn owner_ref(rt: &ResourceType, obj: &Value) -> Value {
    json!({
        "apiVersion": rt.api_version(),
        "kind": rt.kind,
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn owned_by<'a>(objects: &'a [Value], uid: &Value) -> Vec<&'a Value> {
    objects
        .iter()
        .filter(|o| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| &r["uid"] == uid))
        })
        .collect()
}

/// FNV-32a of the template, encoded like `rand.SafeEncodeString` (as pod-template-hash is).
fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u32 = 0x811c_9dc5;
    for b in template.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// The configured failure reason for the first failing image of a pod template.
fn failure(state: &State, template: &Value) -> Option<(String, String)> {
    let images: Vec<String> = ["initContainers", "containers"]
        .iter()
        .flat_map(|l| template["spec"][*l].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["image"].as_str().map(str::to_string))
        .collect();
    state.failing_images.iter().find_map(|(needle, reason)| {
        images
            .iter()
            .find(|i| i.contains(needle.as_str()))
            .map(|i| (reason.clone(), i.clone()))
    })
}

fn pods_rt(state: &State) -> Option<ResourceType> {
    state.find_kind("v1", "Pod")
}

fn list_pods(state: &State, namespace: &str) -> Vec<Value> {
    match pods_rt(state) {
        Some(rt) => state.list(
            &rt,
            Some(namespace),
            &LabelSelector::default(),
            &FieldSelector::default(),
        ),
        None => Vec::new(),
    }
}

fn delete_pod(state: &mut State, namespace: &str, name: &str) {
    if let Some(rt) = pods_rt(state) {
        // Already gone is fine.
        let _ = state.delete(&rt, Some(namespace), name, false, false, None);
    }
}

/// Desired pod state.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PodState<'a> {
    Ready,
    Waiting(&'a str, &'a str),
    Succeeded,
}

fn pod_status(state: &mut State, pod: &Value, desired: PodState<'_>) -> Value {
    let now = crate::now();
    let created = pod["metadata"]["creationTimestamp"]
        .as_str()
        .map_or_else(|| now.clone(), str::to_string);
    let containers = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<String> = containers
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let ip_tail = 2 + state.random() % 250;
    let pod_ip = pod["status"]["podIP"]
        .as_str()
        .map_or_else(|| format!("10.244.0.{ip_tail}"), str::to_string);
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            let image = c["image"].as_str().unwrap_or_default();
            let name = c["name"].as_str().unwrap_or_default();
            let base = json!({
                "name": name,
                "image": image,
                "imageID": "",
                "restartCount": 0,
                "lastState": {},
            });
            let mut s = base;
            match desired {
                PodState::Ready => {
                    s["ready"] = json!(true);
                    s["started"] = json!(true);
                    s["imageID"] = json!(format!("{image}@sha256:{}", "0".repeat(64)));
                    s["containerID"] = json!(format!("containerd://{}", "1".repeat(64)));
                    s["state"] = json!({"running": {"startedAt": created}});
                }
                PodState::Succeeded => {
                    s["ready"] = json!(false);
                    s["started"] = json!(false);
                    s["state"] = json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": created, "finishedAt": now, "containerID": format!("containerd://{}", "1".repeat(64))}});
                }
                PodState::Waiting(reason, image_failing) => {
                    s["ready"] = json!(false);
                    s["started"] = json!(false);
                    let message = match reason {
                        "ImagePullBackOff" => format!("Back-off pulling image \"{image_failing}\""),
                        "ErrImagePull" => format!("failed to pull and unpack image \"{image_failing}\": not found"),
                        "CrashLoopBackOff" => format!("back-off 5m0s restarting failed container={name} pod={pod_name}_{namespace}({uid})"),
                        other => format!("container is waiting: {other}"),
                    };
                    s["state"] = json!({"waiting": {"reason": reason, "message": message}});
                    if reason == "CrashLoopBackOff" {
                        s["restartCount"] = json!(5);
                        s["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": created, "finishedAt": now}});
                    }
                }
            }
            s
        })
        .collect();
    let ready = desired == PodState::Ready;
    let (phase, ready_status) = match desired {
        PodState::Ready => ("Running", "True"),
        PodState::Succeeded => ("Succeeded", "False"),
        PodState::Waiting("CrashLoopBackOff", _) => ("Running", "False"),
        PodState::Waiting(..) => ("Pending", "False"),
    };
    let mut ready_cond = json!({"type": "Ready", "status": ready_status, "lastProbeTime": null, "lastTransitionTime": now});
    let mut containers_ready = json!({"type": "ContainersReady", "status": ready_status, "lastProbeTime": null, "lastTransitionTime": now});
    if !ready {
        let (reason, msg) = if desired == PodState::Succeeded {
            ("PodCompleted".to_string(), String::new())
        } else {
            (
                "ContainersNotReady".to_string(),
                format!("containers with unready status: [{}]", names.join(" ")),
            )
        };
        for c in [&mut ready_cond, &mut containers_ready] {
            c["reason"] = json!(reason);
            if !msg.is_empty() {
                c["message"] = json!(msg);
            }
        }
    }
    json!({
        "phase": phase,
        "conditions": [
            {"type": "PodReadyToStartContainers", "status": if desired == PodState::Succeeded { "False" } else { "True" }, "lastProbeTime": null, "lastTransitionTime": created},
            {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": created},
            ready_cond,
            containers_ready,
            {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": created},
        ],
        "hostIP": "172.18.0.2",
        "hostIPs": [{"ip": "172.18.0.2"}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": created,
        "qosClass": pod["spec"].as_object().map_or("BestEffort", crate::defaults::qos_class),
        "containerStatuses": statuses,
    })
}

/// Creates pods named `names` from `template` (labels merged with `extra_labels`) owned by
/// `owner`, and brings every pod in `names` to `desired`.
#[allow(clippy::too_many_arguments)]
fn ensure_pods(
    state: &mut State,
    namespace: &str,
    owner: Value,
    template: &Value,
    extra_labels: &Map<String, Value>,
    names: &[String],
    existing: &[Value],
    desired: PodState<'_>,
) {
    let Some(pod_rt) = pods_rt(state) else {
        return;
    };
    for name in names {
        let pod = match existing
            .iter()
            .find(|p| p["metadata"]["name"] == name.as_str())
        {
            Some(p) => p.clone(),
            None => {
                let mut labels = template["metadata"]["labels"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                labels.extend(extra_labels.clone());
                let mut meta = json!({"name": name, "namespace": namespace, "labels": labels, "ownerReferences": [owner.clone()]});
                if let Some(a) = template["metadata"]["annotations"].as_object() {
                    meta["annotations"] = json!(a);
                }
                let mut spec = template["spec"].clone();
                spec["nodeName"] = json!(NODE);
                let body =
                    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec});
                match write(
                    state,
                    &pod_rt,
                    namespace,
                    None,
                    None,
                    CONTROLLER,
                    Op::Create(body),
                ) {
                    Some(p) => p,
                    None => continue,
                }
            }
        };
        let status = pod_status(state, &pod, desired);
        let mut current = pod["status"].clone();
        // Keep the IP the pod already has and skip no-op status writes.
        if let Some(m) = current.as_object_mut() {
            m.remove("conditions");
        }
        let mut wanted = status.clone();
        if let Some(m) = wanted.as_object_mut() {
            m.remove("conditions");
        }
        if strip_times(&current) != strip_times(&wanted) {
            write_status(state, &pod_rt, &pod, status, KUBELET);
        }
    }
}

fn strip_times(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "startedAt"
                            | "finishedAt"
                            | "lastTransitionTime"
                            | "podIP"
                            | "podIPs"
                            | "startTime"
                    )
                })
                .map(|(k, v)| (k.clone(), strip_times(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_times).collect()),
        other => other.clone(),
    }
}

fn deployment(state: &mut State, rt: &ResourceType, d: &Value) {
    let namespace = d["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = d["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let template = d["spec"]["template"].clone();
    let hash = template_hash(&template);
    let rs_name = format!("{name}-{hash}");
    let failing = failure(state, &template);
    let Some(rs_rt) = state.find_kind("apps/v1", "ReplicaSet") else {
        return;
    };
    let all_rs = state.list(
        &rs_rt,
        Some(&namespace),
        &LabelSelector::default(),
        &FieldSelector::default(),
    );
    let owned: Vec<Value> = owned_by(&all_rs, &d["metadata"]["uid"])
        .into_iter()
        .cloned()
        .collect();

    let mut rs_template = template.clone();
    rs_template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    let mut selector = d["spec"]["selector"].clone();
    selector["matchLabels"]["pod-template-hash"] = json!(hash);
    let revision = owned
        .iter()
        .filter_map(|r| {
            r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                .as_str()?
                .parse::<i64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    let rs = match owned
        .iter()
        .find(|r| r["metadata"]["name"] == rs_name.as_str())
    {
        Some(existing) => {
            if existing["spec"]["replicas"].as_i64() != Some(replicas) {
                let patch = json!({"spec": {"replicas": replicas}, "metadata": {"annotations": {"deployment.kubernetes.io/desired-replicas": replicas.to_string()}}});
                write(
                    state,
                    &rs_rt,
                    &namespace,
                    Some(&rs_name),
                    None,
                    CONTROLLER,
                    Op::MergePatch(patch),
                )
            } else {
                Some(existing.clone())
            }
        }
        None => {
            let body = json!({
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": rs_name,
                    "namespace": namespace,
                    "labels": rs_template["metadata"]["labels"],
                    "annotations": {
                        "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                        "deployment.kubernetes.io/max-replicas": (replicas + (replicas + 3) / 4).to_string(),
                        "deployment.kubernetes.io/revision": (revision + 1).to_string(),
                    },
                    "ownerReferences": [owner_ref(rt, d)],
                },
                "spec": {"replicas": replicas, "selector": selector, "template": rs_template},
            });
            write(
                state,
                &rs_rt,
                &namespace,
                None,
                None,
                CONTROLLER,
                Op::Create(body),
            )
        }
    };
    let Some(rs) = rs else {
        return;
    };
    let pods = list_pods(state, &namespace);
    // Old ReplicaSets scale to zero and lose their pods.
    for old in owned
        .iter()
        .filter(|r| r["metadata"]["name"] != rs_name.as_str())
    {
        let old_name = old["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for p in owned_by(&pods, &old["metadata"]["uid"]) {
            let pod_name = p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            delete_pod(state, &namespace, &pod_name);
        }
        if old["spec"]["replicas"].as_i64() != Some(0) {
            write(
                state,
                &rs_rt,
                &namespace,
                Some(&old_name),
                None,
                CONTROLLER,
                Op::MergePatch(json!({"spec": {"replicas": 0}})),
            );
        }
        if let Ok(current) = state.get(&rs_rt, Some(&namespace), &old_name) {
            let status =
                json!({"replicas": 0, "observedGeneration": current["metadata"]["generation"]});
            write_status(state, &rs_rt, &current, status, CONTROLLER);
        }
    }
    // Pods of the current ReplicaSet.
    let mine: Vec<Value> = owned_by(&pods, &rs["metadata"]["uid"])
        .into_iter()
        .cloned()
        .collect();
    let mut names: Vec<String> = mine
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let wanted = usize::try_from(replicas.max(0)).unwrap_or(0);
    while names.len() > wanted {
        if let Some(extra) = names.pop() {
            delete_pod(state, &namespace, &extra);
        }
    }
    while names.len() < wanted {
        names.push(format!("{rs_name}-{}", state.random_suffix(5)));
    }
    let desired = match &failing {
        Some((reason, image)) => PodState::Waiting(reason, image),
        None => PodState::Ready,
    };
    let mut extra = Map::new();
    extra.insert("pod-template-hash".into(), json!(hash));
    ensure_pods(
        state,
        &namespace,
        owner_ref(&rs_rt, &rs),
        &template,
        &extra,
        &names,
        &mine,
        desired,
    );

    let ready = if failing.is_some() { 0 } else { replicas };
    let now = crate::now();
    if let Ok(rs_now) = state.get(&rs_rt, Some(&namespace), &rs_name) {
        let mut status = json!({"replicas": replicas, "fullyLabeledReplicas": replicas, "observedGeneration": rs_now["metadata"]["generation"]});
        if ready > 0 {
            status["readyReplicas"] = json!(ready);
            status["availableReplicas"] = json!(ready);
        }
        write_status(state, &rs_rt, &rs_now, status, CONTROLLER);
    }
    let Ok(d_now) = state.get(rt, Some(&namespace), &name) else {
        return;
    };
    let mut status = json!({
        "observedGeneration": d_now["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": replicas,
    });
    let conditions = if failing.is_some() && replicas > 0 {
        status["unavailableReplicas"] = json!(replicas);
        json!([
            {"type": "Available", "status": "False", "lastUpdateTime": now, "lastTransitionTime": now,
             "reason": "MinimumReplicasUnavailable", "message": "Deployment does not have minimum availability."},
            {"type": "Progressing", "status": "False", "lastUpdateTime": now, "lastTransitionTime": now,
             "reason": "ProgressDeadlineExceeded", "message": format!("ReplicaSet \"{rs_name}\" has timed out progressing.")},
        ])
    } else {
        if replicas > 0 {
            status["readyReplicas"] = json!(replicas);
            status["availableReplicas"] = json!(replicas);
        }
        json!([
            {"type": "Available", "status": "True", "lastUpdateTime": now, "lastTransitionTime": now,
             "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
            {"type": "Progressing", "status": "True", "lastUpdateTime": now, "lastTransitionTime": now,
             "reason": "NewReplicaSetAvailable", "message": format!("ReplicaSet \"{rs_name}\" has successfully progressed.")},
        ])
    };
    status["conditions"] = conditions;
    write_status(state, rt, &d_now, status, CONTROLLER);
}

fn statefulset(state: &mut State, rt: &ResourceType, s: &Value) {
    let namespace = s["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = s["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let replicas = s["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let template = s["spec"]["template"].clone();
    let revision = format!("{name}-{}", template_hash(&template));
    let failing = failure(state, &template);
    let pods = list_pods(state, &namespace);
    let mine: Vec<Value> = owned_by(&pods, &s["metadata"]["uid"])
        .into_iter()
        .cloned()
        .collect();
    let names: Vec<String> = (0..replicas).map(|i| format!("{name}-{i}")).collect();
    // Pods of another revision or beyond the replica count are replaced or removed.
    let mut keep = Vec::new();
    for p in &mine {
        let pod_name = p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let current =
            p["metadata"]["labels"]["controller-revision-hash"].as_str() == Some(revision.as_str());
        if current && names.contains(&pod_name) {
            keep.push(p.clone());
        } else {
            delete_pod(state, &namespace, &pod_name);
        }
    }
    let desired = match &failing {
        Some((reason, image)) => PodState::Waiting(reason, image),
        None => PodState::Ready,
    };
    for (i, pod_name) in names.iter().enumerate() {
        let mut extra = Map::new();
        extra.insert("controller-revision-hash".into(), json!(revision));
        extra.insert("statefulset.kubernetes.io/pod-name".into(), json!(pod_name));
        extra.insert("apps.kubernetes.io/pod-index".into(), json!(i.to_string()));
        ensure_pods(
            state,
            &namespace,
            owner_ref(rt, s),
            &template,
            &extra,
            std::slice::from_ref(pod_name),
            &keep,
            desired,
        );
    }
    let Ok(now) = state.get(rt, Some(&namespace), &name) else {
        return;
    };
    let ready = if failing.is_some() { 0 } else { replicas };
    let mut status = json!({
        "observedGeneration": now["metadata"]["generation"],
        "replicas": replicas,
        "currentReplicas": replicas,
        "updatedReplicas": replicas,
        "currentRevision": revision,
        "updateRevision": revision,
        "collisionCount": 0,
        "availableReplicas": ready,
    });
    if ready > 0 {
        status["readyReplicas"] = json!(ready);
    }
    write_status(state, rt, &now, status, CONTROLLER);
}

fn daemonset(state: &mut State, rt: &ResourceType, ds: &Value) {
    let namespace = ds["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = ds["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let template = ds["spec"]["template"].clone();
    let hash = template_hash(&template);
    let failing = failure(state, &template);
    let pods = list_pods(state, &namespace);
    let mine: Vec<Value> = owned_by(&pods, &ds["metadata"]["uid"])
        .into_iter()
        .cloned()
        .collect();
    let mut keep = Vec::new();
    for p in &mine {
        if p["metadata"]["labels"]["controller-revision-hash"].as_str() == Some(hash.as_str())
            && keep.is_empty()
        {
            keep.push(p.clone());
        } else {
            let pod_name = p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            delete_pod(state, &namespace, &pod_name);
        }
    }
    let pod_name = match keep.first() {
        Some(p) => p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        None => format!("{name}-{}", state.random_suffix(5)),
    };
    let mut extra = Map::new();
    extra.insert("controller-revision-hash".into(), json!(hash));
    extra.insert(
        "pod-template-generation".into(),
        json!(
            ds["metadata"]["generation"]
                .as_i64()
                .unwrap_or(1)
                .to_string()
        ),
    );
    let desired = match &failing {
        Some((reason, image)) => PodState::Waiting(reason, image),
        None => PodState::Ready,
    };
    ensure_pods(
        state,
        &namespace,
        owner_ref(rt, ds),
        &template,
        &extra,
        &[pod_name],
        &keep,
        desired,
    );
    let Ok(now) = state.get(rt, Some(&namespace), &name) else {
        return;
    };
    let ready = i64::from(failing.is_none());
    let mut status = json!({
        "observedGeneration": now["metadata"]["generation"],
        "currentNumberScheduled": 1,
        "desiredNumberScheduled": 1,
        "numberMisscheduled": 0,
        "numberReady": ready,
        "updatedNumberScheduled": 1,
    });
    if ready > 0 {
        status["numberAvailable"] = json!(1);
    } else {
        status["numberUnavailable"] = json!(1);
    }
    write_status(state, rt, &now, status, CONTROLLER);
}

fn job(state: &mut State, rt: &ResourceType, j: &Value) {
    if j["status"]["completionTime"].is_string() || j["spec"]["suspend"] == true {
        return;
    }
    let namespace = j["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = j["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let template = j["spec"]["template"].clone();
    let completions = j["spec"]["completions"].as_i64().unwrap_or(1).clamp(1, 5);
    let failing = failure(state, &template);
    let pods = list_pods(state, &namespace);
    let mine: Vec<Value> = owned_by(&pods, &j["metadata"]["uid"])
        .into_iter()
        .cloned()
        .collect();
    let mut names: Vec<String> = mine
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let wanted = if failing.is_some() {
        1
    } else {
        usize::try_from(completions).unwrap_or(1)
    };
    while names.len() < wanted {
        names.push(format!("{name}-{}", state.random_suffix(5)));
    }
    let desired = match &failing {
        Some((reason, image)) => PodState::Waiting(reason, image),
        None => PodState::Succeeded,
    };
    let mut extra = Map::new();
    extra.insert("job-name".into(), json!(name));
    ensure_pods(
        state,
        &namespace,
        owner_ref(rt, j),
        &template,
        &extra,
        &names,
        &mine,
        desired,
    );
    let Ok(now_obj) = state.get(rt, Some(&namespace), &name) else {
        return;
    };
    let start = now_obj["metadata"]["creationTimestamp"].clone();
    let now = crate::now();
    let status = if failing.is_some() {
        json!({"active": 1, "ready": 0, "terminating": 0, "startTime": start, "uncountedTerminatedPods": {}})
    } else {
        json!({
            "succeeded": completions,
            "ready": 0,
            "terminating": 0,
            "startTime": start,
            "completionTime": now,
            "uncountedTerminatedPods": {},
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastProbeTime": now, "lastTransitionTime": now,
                 "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods"},
                {"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now,
                 "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods"},
            ],
        })
    };
    write_status(state, rt, &now_obj, status, CONTROLLER);
}

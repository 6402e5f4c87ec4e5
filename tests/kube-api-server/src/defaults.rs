//! Defaulting of the common fields, as the real API server's `SetDefaults_*` functions and
//! admission do, so that server-side dry-run output matches what a cluster would store.

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::resources::ResourceType;

/// Allocates cluster IPs (from 10.96.0.0/12) and node ports.
#[derive(Debug)]
pub(crate) struct Allocator {
    next_ip: u32,
    next_node_port: u16,
}

impl Default for Allocator {
    fn default() -> Self {
        Self {
            // 10.96.0.1 is the `kubernetes` service and 10.96.0.10 the DNS service.
            next_ip: (10 << 24) | (96 << 16) | 11,
            next_node_port: 30000,
        }
    }
}

impl Allocator {
    fn ip(&mut self) -> String {
        let ip = self.next_ip;
        self.next_ip += 1;
        format!(
            "{}.{}.{}.{}",
            ip >> 24,
            (ip >> 16) & 0xff,
            (ip >> 8) & 0xff,
            ip & 0xff
        )
    }

    fn node_port(&mut self) -> u16 {
        let p = self.next_node_port;
        self.next_node_port = if p >= 32767 { 30000 } else { p + 1 };
        p
    }
}

fn set_default(obj: &mut Map<String, Value>, key: &str, value: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj.insert(key.to_string(), value);
    }
}

fn object_at<'a>(obj: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    if !obj.get(key).is_some_and(Value::is_object) {
        obj.insert(key.to_string(), Value::Object(Map::new()));
    }
    match obj.get_mut(key) {
        Some(Value::Object(m)) => m,
        // Invariant: the entry was made an object just above.
        _ => unreachable!("entry is an object"),
    }
}

/// Applies defaults in place. `old` is the stored object on updates (keeps allocated values).
pub(crate) fn apply(
    rt: &ResourceType,
    obj: &mut Value,
    old: Option<&Value>,
    alloc: &mut Allocator,
) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let name = root
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => {
            let labels = object_at(object_at(root, "metadata"), "labels");
            labels.insert(
                "kubernetes.io/metadata.name".to_string(),
                Value::String(name),
            );
            let spec = object_at(root, "spec");
            set_default(spec, "finalizers", json!(["kubernetes"]));
            let status = object_at(root, "status");
            set_default(status, "phase", json!("Active"));
        }
        ("", "Secret") => {
            set_default(root, "type", json!("Opaque"));
            if let Some(Value::Object(string_data)) = root.remove("stringData") {
                let data = object_at(root, "data");
                for (k, v) in string_data {
                    let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    data.insert(
                        k,
                        Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
                    );
                }
            }
        }
        ("", "Service") => default_service(root, old, alloc),
        ("", "Pod") => {
            let spec = object_at(root, "spec");
            default_pod_spec(spec);
            set_default(spec, "enableServiceLinks", json!(true));
            set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
            set_default(spec, "priority", json!(0));
            set_default(spec, "serviceAccountName", json!("default"));
            set_default(spec, "serviceAccount", json!("default"));
            let qos = qos_class(spec);
            let status = object_at(root, "status");
            set_default(status, "phase", json!("Pending"));
            set_default(status, "qosClass", json!(qos));
        }
        ("networking.k8s.io", "Ingress") => {
            set_default(root, "status", json!({"loadBalancer": {}}));
        }
        ("policy", "PodDisruptionBudget") => {
            set_default(
                root,
                "status",
                json!({"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0}),
            );
        }
        ("", "PersistentVolumeClaim") => {
            let spec = object_at(root, "spec");
            set_default(spec, "volumeMode", json!("Filesystem"));
            canonicalize_resources(spec);
            set_default(object_at(root, "status"), "phase", json!("Pending"));
        }
        ("apps", "Deployment") => {
            let spec = object_at(root, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            let strategy = object_at(spec, "strategy");
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let ru = object_at(strategy, "rollingUpdate");
                set_default(ru, "maxSurge", json!("25%"));
                set_default(ru, "maxUnavailable", json!("25%"));
            }
            default_template(spec);
        }
        ("apps", "StatefulSet") => {
            let spec = object_at(root, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            let strategy = object_at(spec, "updateStrategy");
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                set_default(object_at(strategy, "rollingUpdate"), "partition", json!(0));
            }
            let retention = object_at(spec, "persistentVolumeClaimRetentionPolicy");
            set_default(retention, "whenDeleted", json!("Retain"));
            set_default(retention, "whenScaled", json!("Retain"));
            if let Some(Value::Array(templates)) = spec.get_mut("volumeClaimTemplates") {
                for t in templates.iter_mut().filter_map(Value::as_object_mut) {
                    set_default(t, "apiVersion", json!("v1"));
                    set_default(t, "kind", json!("PersistentVolumeClaim"));
                    let pvc = object_at(t, "spec");
                    set_default(pvc, "volumeMode", json!("Filesystem"));
                    canonicalize_resources(pvc);
                    set_default(object_at(t, "status"), "phase", json!("Pending"));
                }
            }
            default_template(spec);
        }
        ("apps", "DaemonSet") => {
            let spec = object_at(root, "spec");
            set_default(spec, "revisionHistoryLimit", json!(10));
            let strategy = object_at(spec, "updateStrategy");
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let ru = object_at(strategy, "rollingUpdate");
                set_default(ru, "maxSurge", json!(0));
                set_default(ru, "maxUnavailable", json!(1));
            }
            default_template(spec);
        }
        ("apps", "ReplicaSet") => {
            let spec = object_at(root, "spec");
            set_default(spec, "replicas", json!(1));
            default_template(spec);
        }
        ("batch", "Job") => {
            let uid = root
                .get("metadata")
                .and_then(|m| m.get("uid"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let spec = object_at(root, "spec");
            default_job_spec(spec);
            if !uid.is_empty() && spec.get("manualSelector").and_then(Value::as_bool) != Some(true)
            {
                set_default(
                    spec,
                    "selector",
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
                );
                let labels =
                    object_at(object_at(object_at(spec, "template"), "metadata"), "labels");
                for (k, v) in [
                    ("batch.kubernetes.io/controller-uid", &uid),
                    ("batch.kubernetes.io/job-name", &name),
                    ("controller-uid", &uid),
                    ("job-name", &name),
                ] {
                    set_default(labels, k, json!(v));
                }
            }
        }
        ("batch", "CronJob") => {
            let spec = object_at(root, "spec");
            set_default(spec, "concurrencyPolicy", json!("Allow"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "successfulJobsHistoryLimit", json!(3));
            set_default(spec, "failedJobsHistoryLimit", json!(1));
            // Only pod defaults reach the job template (the Job defaults apply to Jobs).
            let job_template = object_at(spec, "jobTemplate");
            set_default(
                object_at(job_template, "metadata"),
                "creationTimestamp",
                Value::Null,
            );
            default_template(object_at(job_template, "spec"));
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            set_default(
                root,
                "status",
                json!({"currentMetrics": null, "desiredReplicas": 0}),
            );
            let spec = object_at(root, "spec");
            set_default(spec, "minReplicas", json!(1));
            if spec
                .get("metrics")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                spec.insert(
                    "metrics".to_string(),
                    json!([{"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80}}}]),
                );
            }
            if let Some(Value::Object(behavior)) = spec.get_mut("behavior") {
                let up = object_at(behavior, "scaleUp");
                set_default(up, "stabilizationWindowSeconds", json!(0));
                set_default(up, "selectPolicy", json!("Max"));
                set_default(
                    up,
                    "policies",
                    json!([{"type": "Pods", "value": 4, "periodSeconds": 15},
                        {"type": "Percent", "value": 100, "periodSeconds": 15}]),
                );
                let down = object_at(behavior, "scaleDown");
                set_default(down, "selectPolicy", json!("Max"));
                set_default(
                    down,
                    "policies",
                    json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
                );
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            if let Some(Value::Array(subjects)) = root.get_mut("subjects") {
                for s in subjects.iter_mut().filter_map(Value::as_object_mut) {
                    if matches!(
                        s.get("kind").and_then(Value::as_str),
                        Some("User" | "Group")
                    ) {
                        set_default(s, "apiGroup", json!("rbac.authorization.k8s.io"));
                    }
                }
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            let spec = object_at(root, "spec");
            set_default(spec, "conversion", json!({"strategy": "None"}));
            let names = object_at(spec, "names");
            let kind = names
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            set_default(names, "singular", json!(kind.to_lowercase()));
            set_default(names, "listKind", json!(format!("{kind}List")));
            let accepted = Value::Object(names.clone());
            let storage: Vec<Value> = spec
                .get("versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|v| v["storage"].as_bool() == Some(true))
                .map(|v| v["name"].clone())
                .collect();
            root.insert(
                "status".to_string(),
                json!({
                    "acceptedNames": accepted,
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                         "message": "no conflicts found", "lastTransitionTime": crate::now()},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                         "message": "the initial names have been accepted", "lastTransitionTime": crate::now()}
                    ],
                    "storedVersions": storage,
                }),
            );
        }
        _ => {}
    }
}

fn default_job_spec(spec: &mut Map<String, Value>) {
    let completions_set = spec.get("completions").is_some_and(|v| !v.is_null());
    let parallelism_set = spec.get("parallelism").is_some_and(|v| !v.is_null());
    if !completions_set && !parallelism_set {
        spec.insert("completions".to_string(), json!(1));
        spec.insert("parallelism".to_string(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    default_template(spec);
}

fn default_template(spec: &mut Map<String, Value>) {
    let template = object_at(spec, "template");
    let meta = object_at(template, "metadata");
    set_default(meta, "creationTimestamp", Value::Null);
    default_pod_spec(object_at(template, "spec"));
}

fn default_service(root: &mut Map<String, Value>, old: Option<&Value>, alloc: &mut Allocator) {
    let old_spec = old.map(|o| &o["spec"]);
    let spec = object_at(root, "spec");
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let svc_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if svc_type != "ExternalName" {
        for key in ["clusterIP", "clusterIPs"] {
            if spec.get(key).is_none_or(Value::is_null)
                && let Some(v) = old_spec.and_then(|s| s.get(key)).filter(|v| !v.is_null())
            {
                spec.insert(key.to_string(), v.clone());
            }
        }
        if spec.get("clusterIP").is_none_or(|v| v.is_null() || v == "") {
            let ip = spec
                .get("clusterIPs")
                .and_then(|ips| ips.get(0))
                .and_then(Value::as_str)
                .map_or_else(|| alloc.ip(), str::to_string);
            spec.insert("clusterIP".to_string(), json!(ip));
        }
        let ip = spec["clusterIP"].clone();
        set_default(spec, "clusterIPs", json!([ip]));
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    let node_ports = matches!(svc_type.as_str(), "NodePort" | "LoadBalancer");
    if node_ports {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if svc_type == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    let old_ports: Vec<Value> = old_spec
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                set_default(p, "targetPort", port);
            }
            if node_ports && p.get("nodePort").is_none_or(Value::is_null) {
                let previous = old_ports
                    .iter()
                    .find(|o| o.get("port") == p.get("port"))
                    .and_then(|o| o.get("nodePort"))
                    .cloned();
                let np = previous.unwrap_or_else(|| json!(alloc.node_port()));
                p.insert("nodePort".to_string(), np);
            }
        }
    }
    set_default(root, "status", json!({"loadBalancer": {}}));
}

/// Pod spec defaults (also for pod templates).
pub(crate) fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    if let Some(sa) = spec
        .get("serviceAccountName")
        .filter(|v| !v.is_null())
        .cloned()
    {
        set_default(spec, "serviceAccount", sa);
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for c in containers.iter_mut().filter_map(Value::as_object_mut) {
                default_container(c);
            }
        }
    }
    if let Some(Value::Array(volumes)) = spec.get_mut("volumes") {
        for v in volumes.iter_mut().filter_map(Value::as_object_mut) {
            for source in ["configMap", "secret", "projected", "downwardAPI"] {
                if let Some(Value::Object(s)) = v.get_mut(source) {
                    set_default(s, "defaultMode", json!(420));
                }
            }
            if let Some(Value::Object(h)) = v.get_mut("hostPath") {
                set_default(h, "type", json!(""));
            }
            if let Some(Value::Object(e)) = v.get_mut("emptyDir")
                && let Some(limit) = e.get("sizeLimit").and_then(canonical_quantity_value)
            {
                e.insert("sizeLimit".to_string(), json!(limit));
            }
        }
    }
}

/// The QoS class of a pod spec: `Guaranteed` when every container limits CPU and memory with
/// equal requests, `BestEffort` without any requests or limits, else `Burstable`.
pub(crate) fn qos_class(spec: &Map<String, Value>) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|l| spec.get(*l).and_then(Value::as_array))
        .flatten()
        .collect();
    let resources =
        |c: &Value, kind: &str, name: &str| c["resources"][kind][name].as_str().map(str::to_string);
    let any = containers.iter().any(|c| {
        ["requests", "limits"].iter().any(|k| {
            c["resources"][*k]
                .as_object()
                .is_some_and(|m| !m.is_empty())
        })
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = resources(c, "limits", r);
            let request = resources(c, "requests", r).or_else(|| limit.clone());
            limit.is_some() && limit == request
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn default_container(c: &mut Map<String, Value>) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
    let policy = if image_uses_latest(image) {
        "Always"
    } else {
        "IfNotPresent"
    };
    set_default(c, "imagePullPolicy", json!(policy));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    canonicalize_resources(c);
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(Value::Object(p)) = c.get_mut(probe) {
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
            if let Some(Value::Object(h)) = p.get_mut("httpGet") {
                set_default(h, "scheme", json!("HTTP"));
            }
        }
    }
    if let Some(Value::Array(env)) = c.get_mut("env") {
        for e in env.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(Value::Object(from)) = e.get_mut("valueFrom")
                && let Some(Value::Object(f)) = from.get_mut("fieldRef")
            {
                set_default(f, "apiVersion", json!("v1"));
            }
        }
    }
}

/// Whether the image has no tag or the tag `latest` (and no digest).
fn image_uses_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

fn canonicalize_resources(obj: &mut Map<String, Value>) {
    if let Some(Value::Object(resources)) = obj.get_mut("resources") {
        for key in ["requests", "limits"] {
            if let Some(Value::Object(m)) = resources.get_mut(key) {
                for v in m.values_mut() {
                    if let Some(q) = canonical_quantity_value(v) {
                        *v = Value::String(q);
                    }
                }
            }
        }
    }
}

fn canonical_quantity_value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => canonical_quantity(s),
        Value::Number(n) => canonical_quantity(&n.to_string()),
        _ => None,
    }
}

/// The canonical form of a Kubernetes quantity (`"0.5"` → `"500m"`, `"1024Mi"` → `"1Gi"`),
/// or `None` when it does not parse.
pub(crate) fn canonical_quantity(s: &str) -> Option<String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() {
        return None;
    }
    let (negative, num) = match num.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part
        .chars()
        .chain(frac_part.chars())
        .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    // The value as a decimal mantissa (integer) times 10^-scale.
    let digits = format!("{int_part}{frac_part}");
    let mantissa: i128 = digits.parse().ok()?;
    let scale = frac_part.len() as u32;
    let binary = |exp: u32| -> Option<String> {
        // value = mantissa * 1024^exp / 10^scale
        let num = mantissa.checked_mul(1024_i128.checked_pow(exp)?)?;
        let den = 10_i128.checked_pow(scale)?;
        if num % den == 0 {
            let bytes = num / den;
            Some(format_binary(bytes, negative))
        } else {
            // Fractional bytes fall back to a decimal milli representation.
            let nanos = num.checked_mul(1_000_000_000)? / den;
            Some(format_decimal(nanos, negative))
        }
    };
    let decimal = |exp: i32| -> Option<String> {
        // value in nano units = mantissa * 10^(exp + 9) / 10^scale
        let shift = exp + 9 - scale as i32;
        let nanos = if shift >= 0 {
            mantissa.checked_mul(10_i128.checked_pow(shift as u32)?)?
        } else {
            // Precision below nano units is rounded up, as the API server does.
            let den = 10_i128.checked_pow((-shift) as u32)?;
            (mantissa + den - 1) / den
        };
        Some(format_decimal(nanos, negative))
    };
    match suffix {
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "" => decimal(0),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        _ => None,
    }
}

fn format_binary(bytes: i128, negative: bool) -> String {
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let sign = if negative && bytes != 0 { "-" } else { "" };
    if bytes == 0 {
        return "0".to_string();
    }
    let mut value = bytes;
    let mut exp = 0;
    while value % 1024 == 0 && exp < 6 {
        value /= 1024;
        exp += 1;
    }
    if exp == 0 {
        // Not a multiple of 1024: the API server prints it in decimal SI.
        return format_decimal(bytes * 1_000_000_000, negative);
    }
    format!("{sign}{value}{}", SUFFIXES[exp])
}

fn format_decimal(nanos: i128, negative: bool) -> String {
    const SUFFIXES: [(i128, &str); 10] = [
        (1_000_000_000_000_000_000_000_000_000, "E"),
        (1_000_000_000_000_000_000_000_000, "P"),
        (1_000_000_000_000_000_000_000, "T"),
        (1_000_000_000_000_000_000, "G"),
        (1_000_000_000_000_000, "M"),
        (1_000_000_000_000, "k"),
        (1_000_000_000, ""),
        (1_000_000, "m"),
        (1_000, "u"),
        (1, "n"),
    ];
    if nanos == 0 {
        return "0".to_string();
    }
    let sign = if negative { "-" } else { "" };
    for (unit, suffix) in SUFFIXES {
        if nanos % unit == 0 {
            return format!("{sign}{}{suffix}", nanos / unit);
        }
    }
    format!("{sign}{nanos}n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for (input, want) in [
            ("0.5", "500m"),
            ("1024Mi", "1Gi"),
            ("1000m", "1"),
            ("1.5Gi", "1536Mi"),
            ("2000", "2k"),
            ("100M", "100M"),
            ("128Mi", "128Mi"),
            ("250m", "250m"),
            ("1", "1"),
            ("0.1", "100m"),
            ("1500", "1500"),
            ("0", "0"),
        ] {
            assert_eq!(canonical_quantity(input).as_deref(), Some(want), "{input}");
        }
    }

    #[test]
    fn latest_images() {
        assert!(image_uses_latest("nginx"));
        assert!(image_uses_latest("nginx:latest"));
        assert!(image_uses_latest("localhost:5000/nginx"));
        assert!(!image_uses_latest("nginx:1.27"));
        assert!(!image_uses_latest("nginx@sha256:abc"));
    }
}

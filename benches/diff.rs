//! Normalize + diff of 10,000 (live, desired) object pairs, a tenth of them changed.
//!
//! Each pair is shaped like what `plan` compares: a live Deployment, Service, ConfigMap or
//! Secret as the API server returns it (status, managedFields, resourceVersion, uid, defaults)
//! and its server-side dry-run. One pair in ten differs in one field (an image, a port, a
//! ConfigMap value, a Secret value), so the bench covers both the equal path and the unified
//! diff path. Every iteration checks the counts, so a regression that makes everything equal
//! fails the bench instead of timing it.
//!
//! Run: `cargo bench --bench diff`.

use std::hint::black_box;

use bowline::diff::{self, Action, DiffOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};

const PAIRS: usize = 10_000;

fn managed_fields() -> Value {
    json!([
        {"manager": "bowline", "operation": "Apply", "apiVersion": "apps/v1",
         "time": "2026-11-20T10:00:00Z", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}}},
                      "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                          "k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}}},
        {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
         "time": "2026-11-20T10:00:05Z", "fieldsType": "FieldsV1", "subresource": "status",
         "fieldsV1": {"f:status": {"f:replicas": {}, "f:availableReplicas": {}}}}
    ])
}

fn metadata(kind: &str, i: usize) -> Value {
    json!({
        "name": format!("{}-{i}", kind.to_lowercase()), "namespace": format!("team-{}", i % 50),
        "uid": format!("00000000-0000-0000-0000-{i:012}"), "resourceVersion": (1000 + i).to_string(),
        "generation": 3, "creationTimestamp": "2026-11-20T10:00:00Z",
        "labels": {"app.kubernetes.io/managed-by": "bowline", "bowline.dev/app": format!("app-{}", i / 4),
                   "bowline.dev/environment": "production", "app": format!("app-{}", i / 4)},
        "annotations": {"bowline.dev/app": format!("app-{}", i / 4), "bowline.dev/environment": "production",
                        "deployment.kubernetes.io/revision": "3"},
        "managedFields": managed_fields(),
    })
}

/// The live object number `i` and its dry-run; `changed` alters one field of the dry-run.
fn pair(i: usize, changed: bool) -> (Value, Value) {
    let live = match i % 4 {
        0 => {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata("Deployment", i),
            "spec": {"replicas": 3, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
                "selector": {"matchLabels": {"app": format!("app-{}", i / 4)}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {"metadata": {"labels": {"app": format!("app-{}", i / 4)}},
                    "spec": {"restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                        "schedulerName": "default-scheduler", "securityContext": {},
                        "containers": [{"name": "app", "image": "ghcr.io/acme/app:1.0.0", "imagePullPolicy": "IfNotPresent",
                            "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                            "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "PORT", "value": "8080"}],
                            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http", "scheme": "HTTP"},
                                "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
                            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}]}}},
            "status": {"observedGeneration": 3, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3,
                "availableReplicas": 3, "conditions": [{"type": "Available", "status": "True"}]}})
        }
        1 => json!({"apiVersion": "v1", "kind": "Service", "metadata": metadata("Service", i),
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                "internalTrafficPolicy": "Cluster", "selector": {"app": format!("app-{}", i / 4)},
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]},
            "status": {"loadBalancer": {}}}),
        2 => json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata("ConfigMap", i),
            "data": {"LOG_LEVEL": "info", "FEATURES": "a,b,c", "config.yaml": "server:\n  port: 8080\n  timeout: 30s\n"}}),
        _ => {
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": metadata("Secret", i), "type": "Opaque",
            "data": {"password": "aHVudGVyMg==", "token": "czNjcjN0LXRva2Vu"}})
        }
    };
    let mut desired = live.clone();
    desired["metadata"]["resourceVersion"] = json!((2000 + i).to_string());
    if changed {
        match i % 4 {
            0 => {
                desired["spec"]["template"]["spec"]["containers"][0]["image"] =
                    json!("ghcr.io/acme/app:1.1.0")
            }
            1 => desired["spec"]["ports"][0]["port"] = json!(8080),
            2 => desired["data"]["LOG_LEVEL"] = json!("debug"),
            _ => desired["data"]["password"] = json!("bmV3LXBhc3N3b3Jk"),
        }
    }
    (live, desired)
}

fn bench_diff(c: &mut Criterion) {
    let pairs: Vec<(Value, Value)> = (0..PAIRS).map(|i| pair(i, (i / 4) % 10 == 0)).collect();
    let options = DiffOptions::default();
    let mut group = c.benchmark_group("diff");
    group.throughput(Throughput::Elements(PAIRS as u64));
    group.sample_size(20);
    group.bench_function("normalize+compare/10000", |b| {
        b.iter(|| {
            let diffs: Vec<_> = pairs
                .iter()
                .map(|(live, desired)| diff::compare(Some(live), Some(desired), &options))
                .collect();
            let changed = diffs.iter().filter(|d| d.action == Action::Update).count();
            assert_eq!(changed, PAIRS / 10, "one pair in ten differs");
            black_box(diffs)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_diff);
criterion_main!(benches);

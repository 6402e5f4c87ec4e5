//! Every built-in policy over 10,000 rendered objects of one production target (a quarter
//! each Deployments, Services, ConfigMaps and HorizontalPodAutoscalers; every tenth Deployment
//! breaks two policies). Target: under 1 s in a release build.
//!
//! Every iteration checks the number of results, so a policy that stopped firing fails the
//! bench instead of timing less work.
//!
//! Also measured, for comparison: the same policies in regorus's tree-walking interpreter
//! (what bowline runs for repository policies), and building the 10,000 inputs alone.
//!
//! Run: `cargo bench --bench policy` (about two minutes on 2 cores).

use std::hint::black_box;
use std::time::Duration;

use bowline::config::{Application, Environment, Stage};
use bowline::policy::input::Shared;
use bowline::policy::{PolicySet, Target};
use bowline::render::RenderedObject;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};

/// Objects evaluated per iteration.
const OBJECTS: usize = 10_000;

fn object(kind: &str, api_version: &str, name: &str, body: Value) -> RenderedObject {
    let mut object = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "shop",
            "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "bowline"},
            "annotations": {"bowline.dev/app": "shop", "bowline.dev/environment": "production"},
        },
    });
    if let (Some(map), Value::Object(body)) = (object.as_object_mut(), body) {
        map.extend(body);
    }
    RenderedObject {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: Some("shop".into()),
        name: name.into(),
        source: format!("apps/shop/manifests/{name}.yaml"),
        line: 1,
        object,
    }
}

fn deployment(i: usize) -> RenderedObject {
    let broken = i % 10 == 0;
    let image = if broken {
        "ghcr.io/acme/api:latest".to_string()
    } else {
        format!("ghcr.io/acme/api:1.{i}.0")
    };
    let mut container = json!({
        "name": "api",
        "image": image,
        "ports": [{"name": "http", "containerPort": 8080}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}},
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true},
    });
    if broken {
        container["resources"]["limits"] = json!({"cpu": "500m"});
    }
    object(
        "Deployment",
        "apps/v1",
        &format!("api-{i}"),
        json!({"spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app.kubernetes.io/name": format!("api-{i}")}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": format!("api-{i}")}},
                "spec": {
                    "initContainers": [{
                        "name": "migrate", "image": "ghcr.io/acme/migrate:2.0.1",
                        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "100m", "memory": "128Mi"}},
                    }],
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        }}),
    )
}

fn objects() -> Vec<RenderedObject> {
    (0..OBJECTS / 4)
        .flat_map(|i| {
            [
                deployment(i),
                object(
                    "Service",
                    "v1",
                    &format!("api-{i}"),
                    json!({"spec": {"selector": {"app.kubernetes.io/name": format!("api-{i}")}, "ports": [{"port": 80, "targetPort": "http"}]}}),
                ),
                object(
                    "ConfigMap",
                    "v1",
                    &format!("api-{i}-config"),
                    json!({"data": {"LOG_LEVEL": "info", "PORT": "8080"}}),
                ),
                object(
                    "HorizontalPodAutoscaler",
                    "autoscaling/v2",
                    &format!("api-{i}"),
                    json!({"spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("api-{i}")}, "minReplicas": 3, "maxReplicas": 10}}),
                ),
            ]
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let policies = PolicySet::builtin().expect("built-in policies compile");
    assert!(
        policies.uses_bytecode(),
        "built-in policies compile to bytecode"
    );
    let app: Application = serde_json::from_value(json!({
        "metadata": {"name": "shop"},
        "spec": {"image": {"repository": "ghcr.io/acme/api", "tag": "1.0.0"}, "environments": {"production": null}},
    }))
    .expect("application");
    let environment: Environment = serde_json::from_value(json!({
        "name": "production", "namespace": "shop",
        "clusters": [{"name": "prod-eu-1", "context": "prod-eu-1"}],
    }))
    .expect("environment");
    let stages: Vec<Stage> = serde_json::from_value(json!([
        {"name": "deploy-staging", "type": "deploy", "environment": "staging", "strategy": "rolling"},
        {"name": "approve", "type": "manualJudgment", "dependsOn": ["deploy-staging"]},
        {"name": "canary", "type": "deploy", "environment": "production", "dependsOn": ["approve"], "strategy": "canary"},
        {"name": "analyse", "type": "canaryAnalysis", "environment": "production", "dependsOn": ["canary"]},
        {"name": "promote", "type": "promote", "environment": "production", "dependsOn": ["analyse"]},
    ]))
    .expect("stages");
    let target = Target {
        app: &app,
        environment: &environment,
        pipeline_name: Some("release"),
        pipeline: Some(&stages),
    };
    let objects = objects();
    // Every tenth Deployment: an image on :latest and no memory limit.
    let expected = OBJECTS / 4 / 10 * 2;

    let mut group = c.benchmark_group("policy");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements(OBJECTS as u64));
    let interpreted = policies.interpreted();
    for (name, set) in [
        ("builtin/10000-objects", &policies),
        ("builtin-interpreter/10000-objects", &interpreted),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let report = set.evaluate(&target, black_box(&objects));
                assert_eq!(
                    report.results.len(),
                    expected,
                    "{:?}",
                    report.results.first()
                );
                assert!(report.problems.is_empty(), "{:?}", report.problems);
                black_box(report)
            })
        });
    }
    group.bench_function("inputs-only/10000-objects", |b| {
        b.iter(|| {
            let shared = Shared::new(&target, black_box(&objects));
            for object in &objects {
                black_box(shared.input(object));
            }
        })
    });
    group.finish();

    // Parsing and compiling the built-in policies, bytecode included: once per validated
    // commit.
    let mut load = c.benchmark_group("policy-load");
    load.sample_size(20);
    load.bench_function("builtin", |b| {
        b.iter(|| black_box(PolicySet::builtin().expect("built-in policies compile")))
    });
    load.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The test server through `kube::Client`, configured from its kubeconfig.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{Discovery, Scope};
use kube::{Client, Config};
use kube_api_test_server::{Options, TestServer, kubeconfig_for};
use serde_json::{Value, json};

async fn client(server: &TestServer) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig("test")).expect("kubeconfig parses");
    let options = KubeConfigOptions {
        context: Some("test".into()),
        ..Default::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

fn deployment(name: &str, image: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name, "team": "a"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}]}
            }
        }
    })
}

fn api_error(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn wait_for<F: Fn(&Value) -> bool>(
    server: &TestServer,
    kind: (&str, &str),
    name: &str,
    cond: F,
) -> Value {
    for _ in 0..100 {
        if let Some(obj) = server.get(kind.0, kind.1, Some("default"), name)
            && cond(&obj)
        {
            return obj;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!(
        "{name} never reached the expected state: {:?}",
        server.get(kind.0, kind.1, Some("default"), name)
    );
}

fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"kind": "ServiceMonitor", "plural": "servicemonitors", "singular": "servicemonitor",
                      "listKind": "ServiceMonitorList", "shortNames": ["smon"], "categories": ["prometheus-operator"]},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    })
}

#[tokio::test]
async fn discovery_includes_builtins_and_crds_registered_at_runtime() {
    let server = TestServer::start();
    let client = client(&server).await;
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let apps = discovery.get("apps").expect("apps group");
    let (deploy, caps) = apps
        .recommended_resources()
        .into_iter()
        .find(|(r, _)| r.plural == "deployments")
        .expect("deployments");
    assert_eq!(deploy.kind, "Deployment");
    assert_eq!(caps.scope, Scope::Namespaced);
    assert!(discovery.get("monitoring.coreos.com").is_none());
    let aggregated = Discovery::new(client.clone())
        .run_aggregated()
        .await
        .expect("aggregated");
    assert!(aggregated.get("apps").is_some());
    assert!(aggregated.get("").is_some());

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "servicemonitors.monitoring.coreos.com",
        &PatchParams::apply("bowline"),
        &Patch::Apply(crd()),
    )
    .await
    .expect("apply CRD");
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let group = discovery.get("monitoring.coreos.com").expect("CRD group");
    let (ar, caps) = group
        .recommended_kind("ServiceMonitor")
        .expect("ServiceMonitor kind");
    assert_eq!(ar.plural, "servicemonitors");
    assert_eq!(caps.scope, Scope::Namespaced);

    let monitors: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let monitor = json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": "web"}, "spec": {"endpoints": [{"port": "http"}]}});
    let created = monitors
        .patch(
            "web",
            &PatchParams::apply("bowline"),
            &Patch::Apply(monitor),
        )
        .await
        .expect("apply custom resource");
    assert_eq!(created.data["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(
        monitors
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );

    crds.delete(
        "servicemonitors.monitoring.coreos.com",
        &DeleteParams::default(),
    )
    .await
    .expect("delete CRD");
    let discovery = Discovery::new(client).run().await.expect("discovery");
    assert!(discovery.get("monitoring.coreos.com").is_none());
    assert!(
        server
            .list("monitoring.coreos.com/v1", "ServiceMonitor", None)
            .is_empty()
    );
}

#[tokio::test]
async fn server_side_apply_create_dry_run_reapply_and_prune() {
    let server = TestServer::start();
    let client = client(&server).await;
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let params = PatchParams::apply("bowline");

    // Dry run: full defaulting, nothing stored.
    let dry = deployments
        .patch(
            "web",
            &params.clone().dry_run(),
            &Patch::Apply(deployment("web", "nginx:1.27", 2)),
        )
        .await
        .expect("dry-run apply");
    let spec = dry.spec.as_ref().expect("spec");
    assert_eq!(spec.revision_history_limit, Some(10));
    assert_eq!(spec.progress_deadline_seconds, Some(600));
    let container = &spec.template.spec.as_ref().expect("pod spec").containers[0];
    assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(dry.metadata.generation, Some(1));
    assert!(deployments.get_opt("web").await.expect("get").is_none());
    let dry_requests: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.dry_run)
        .collect();
    assert_eq!(dry_requests.len(), 1);
    assert_eq!(
        dry_requests[0].content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );

    // Create, then re-apply unchanged: same resource version, no generation bump.
    let created = deployments
        .patch(
            "web",
            &params,
            &Patch::Apply(deployment("web", "nginx:1.27", 2)),
        )
        .await
        .expect("apply");
    let managed = created
        .metadata
        .managed_fields
        .clone()
        .expect("managedFields");
    assert_eq!(managed[0].manager.as_deref(), Some("bowline"));
    assert_eq!(managed[0].operation.as_deref(), Some("Apply"));
    let fields_v1 = serde_json::to_value(&managed[0].fields_v1).expect("fieldsV1");
    assert!(fields_v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]["f:image"].is_object());
    let again = deployments
        .patch(
            "web",
            &params,
            &Patch::Apply(deployment("web", "nginx:1.27", 2)),
        )
        .await
        .expect("re-apply");
    assert_eq!(
        again.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(again.metadata.generation, Some(1));

    // A dry run of a change shows it without storing it.
    let dry = deployments
        .patch(
            "web",
            &params.clone().dry_run(),
            &Patch::Apply(deployment("web", "nginx:1.28", 2)),
        )
        .await
        .expect("dry-run change");
    assert_eq!(dry.metadata.generation, Some(2));
    assert_eq!(
        dry.metadata.resource_version,
        created.metadata.resource_version
    );
    let live = deployments.get("web").await.expect("get");
    assert_eq!(live.metadata.generation, Some(1));

    // Removing a field from the configuration removes it from the object.
    let mut config = deployment("web", "nginx:1.28", 2);
    config["metadata"]["labels"]
        .as_object_mut()
        .expect("labels")
        .remove("team");
    let changed = deployments
        .patch("web", &params, &Patch::Apply(config))
        .await
        .expect("apply change");
    let labels = changed.metadata.labels.expect("labels");
    assert!(!labels.contains_key("team"));
    assert_eq!(changed.metadata.generation, Some(2));
    assert_ne!(
        changed.metadata.resource_version,
        created.metadata.resource_version
    );
}

#[tokio::test]
async fn apply_conflicts_with_another_manager_unless_forced() {
    let server = TestServer::start();
    let client = client(&server).await;
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    deployments
        .patch(
            "web",
            &PatchParams::apply("bowline"),
            &Patch::Apply(deployment("web", "nginx:1.27", 2)),
        )
        .await
        .expect("apply");
    server.patch_as(
        "kube-controller-manager",
        "apps/v1",
        "Deployment",
        Some("default"),
        "web",
        json!({"spec": {"replicas": 5}}),
    );

    // Same value as live: shared ownership, no conflict.
    deployments
        .patch(
            "web",
            &PatchParams::apply("bowline"),
            &Patch::Apply(deployment("web", "nginx:1.27", 5)),
        )
        .await
        .expect("apply with the live value");

    let err = deployments
        .patch(
            "web",
            &PatchParams::apply("bowline"),
            &Patch::Apply(deployment("web", "nginx:1.27", 3)),
        )
        .await
        .expect_err("conflict");
    let status = api_error(err);
    assert_eq!(status.code, 409);
    assert_eq!(status.reason, "Conflict");
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"kube-controller-manager\" using apps/v1: .spec.replicas"
    );
    let causes = status.details.expect("details").causes;
    assert_eq!(causes[0].reason, "FieldManagerConflict");
    assert_eq!(causes[0].field, ".spec.replicas");

    let forced = deployments
        .patch(
            "web",
            &PatchParams::apply("bowline").force(),
            &Patch::Apply(deployment("web", "nginx:1.27", 3)),
        )
        .await
        .expect("forced apply");
    assert_eq!(forced.spec.expect("spec").replicas, Some(3));
    let managed = forced.metadata.managed_fields.expect("managedFields");
    let other = managed.iter().find(|m| {
        m.manager.as_deref() == Some("kube-controller-manager") && m.subresource.is_none()
    });
    assert!(other.is_none(), "ownership moved: {managed:?}");

    // Missing fieldManager on apply is a 400.
    let err = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Apply(deployment("web", "nginx:1.27", 3)),
        )
        .await
        .expect_err("fieldManager required");
    assert_eq!(api_error(err).code, 400);
}

#[tokio::test]
async fn crud_selectors_namespaces_and_errors() {
    let server = TestServer::start();
    let client = client(&server).await;
    server.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}));
    for (ns, name, tier) in [
        ("default", "a", "web"),
        ("default", "b", "db"),
        ("team-a", "c", "web"),
    ] {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"tier": tier}}, "data": {"k": "v"}}),
        )
        .expect("configmap");
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("create");
    }
    let all: Api<ConfigMap> = Api::all(client.clone());
    let default: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let names = |l: kube::api::ObjectList<ConfigMap>| -> Vec<String> {
        l.items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect()
    };
    assert_eq!(
        names(
            all.list(&ListParams::default().labels("tier=web"))
                .await
                .expect("list")
        ),
        ["a", "c"]
    );
    assert_eq!(
        names(
            default
                .list(&ListParams::default().labels("tier in (web,db),tier!=db"))
                .await
                .expect("list")
        ),
        ["a"]
    );
    assert_eq!(
        names(
            all.list(&ListParams::default().labels("!tier"))
                .await
                .expect("list")
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        names(
            all.list(&ListParams::default().fields("metadata.namespace=team-a"))
                .await
                .expect("list")
        ),
        ["c"]
    );
    assert_eq!(
        names(
            default
                .list(&ListParams::default().limit(1))
                .await
                .expect("list")
        )
        .len(),
        1
    );

    // Metadata-only reads (PartialObjectMetadata).
    let meta = all
        .list_metadata(&ListParams::default().labels("tier=web"))
        .await
        .expect("list metadata");
    assert_eq!(meta.items.len(), 2);
    assert_eq!(meta.items[0].metadata.name.as_deref(), Some("a"));
    let one = default.get_metadata("b").await.expect("get metadata");
    assert_eq!(one.metadata.labels.expect("labels")["tier"], "db");

    // Update with a stale resource version conflicts.
    let mut a = default.get("a").await.expect("get");
    a.data = Some([("k".to_string(), "w".to_string())].into());
    let updated = default
        .replace("a", &PostParams::default(), &a)
        .await
        .expect("replace");
    assert_eq!(updated.data.expect("data")["k"], "w");
    let err = default
        .replace("a", &PostParams::default(), &a)
        .await
        .expect_err("stale");
    let status = api_error(err);
    assert_eq!(status.code, 409);
    assert!(
        status.message.contains("the object has been modified"),
        "{}",
        status.message
    );

    // Merge and JSON patches record Update managers.
    let patched = default
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"x": "1"}}})),
        )
        .await
        .expect("merge patch");
    assert!(
        patched
            .metadata
            .managed_fields
            .expect("managed")
            .iter()
            .any(|m| m.operation.as_deref() == Some("Update"))
    );
    let patched = default
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::<Value>::Json(
                serde_json::from_value(json!([{"op": "add", "path": "/data/z", "value": "2"}]))
                    .expect("patch"),
            ),
        )
        .await
        .expect("json patch");
    assert_eq!(patched.data.expect("data")["z"], "2");

    // Errors are Status bodies like the real server's.
    let missing_ns: Api<ConfigMap> = Api::namespaced(client.clone(), "nope");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}})).expect("cm");
    let status = api_error(
        missing_ns
            .create(&PostParams::default(), &cm)
            .await
            .expect_err("no namespace"),
    );
    assert_eq!(
        (status.code, status.message.as_str()),
        (404, "namespaces \"nope\" not found")
    );
    let status = api_error(default.get("zzz").await.expect_err("missing"));
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (404, "NotFound", "configmaps \"zzz\" not found")
    );
    let status = api_error(
        default
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "a"}})).expect("cm"),
            )
            .await
            .expect_err("exists"),
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    let status = api_error(
        default
            .patch(
                "a",
                &PatchParams::apply("x"),
                &Patch::Apply(
                    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}}),
                ),
            )
            .await
            .expect_err("name mismatch"),
    );
    assert_eq!(status.code, 400);

    // Delete returns a Status; namespace deletion removes what it holds.
    let deleted = default
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(deleted.is_right());
    assert_eq!(
        api_error(
            default
                .delete("a", &DeleteParams::default())
                .await
                .expect_err("gone")
        )
        .code,
        404
    );
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .delete("team-a", &DeleteParams::default())
        .await
        .expect("delete namespace");
    assert!(server.list("v1", "ConfigMap", Some("team-a")).is_empty());
}

#[tokio::test]
async fn defaulting_of_services_secrets_and_quantities() {
    let server = TestServer::start();
    let client = client(&server).await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = services
        .patch("web", &PatchParams::apply("bowline"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})))
        .await
        .expect("service");
    let spec = svc.spec.expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert!(
        spec.cluster_ip
            .as_deref()
            .expect("clusterIP")
            .starts_with("10.96.")
    );
    let port = &spec.ports.expect("ports")[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(80))
    );
    // Re-applying keeps the allocated IP and is a no-op.
    let again = services
        .patch("web", &PatchParams::apply("bowline"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})))
        .await
        .expect("service again");
    assert_eq!(
        again.metadata.resource_version,
        svc.metadata.resource_version
    );

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let secret = secrets
        .patch(
            "s",
            &PatchParams::apply("bowline"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s"}, "stringData": {"password": "hunter2"}})),
        )
        .await
        .expect("secret");
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(secret.data.expect("data")["password"].0, b"hunter2");

    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod = pods
        .patch(
            "p",
            &PatchParams::apply("bowline"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}},
            "readinessProbe": {"httpGet": {"path": "/", "port": 80}}}]}})),
        )
        .await
        .expect("pod");
    let spec = pod.spec.expect("spec");
    let c = &spec.containers[0];
    assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
    let requests = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert_eq!(requests["cpu"].0, "500m");
    assert_eq!(requests["memory"].0, "1Gi");
    let probe = c.readiness_probe.as_ref().expect("probe");
    assert_eq!(
        (
            probe.timeout_seconds,
            probe.period_seconds,
            probe.failure_threshold
        ),
        (Some(1), Some(10), Some(3))
    );
    assert_eq!(
        probe.http_get.as_ref().and_then(|h| h.scheme.as_deref()),
        Some("HTTP")
    );
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
}

#[tokio::test]
async fn deployments_become_available_and_failing_images_time_out() {
    let server = TestServer::start_with(Options {
        controller_delay: Duration::from_millis(20),
        ..Options::default()
    });
    server.fail_rollouts("broken", "ImagePullBackOff");
    let client = client(&server).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .patch(
            "web",
            &PatchParams::apply("bowline"),
            &Patch::Apply(deployment("web", "nginx:1.27", 3)),
        )
        .await
        .expect("apply");
    let live = wait_for(&server, ("apps/v1", "Deployment"), "web", |d| {
        d["status"]["availableReplicas"] == 3
    })
    .await;
    assert_eq!(
        live["status"]["observedGeneration"],
        live["metadata"]["generation"]
    );
    let progressing = live["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Progressing")
        .expect("Progressing")
        .clone();
    assert_eq!(progressing["reason"], "NewReplicaSetAvailable");
    let status_manager = live["metadata"]["managedFields"]
        .as_array()
        .expect("managed")
        .iter()
        .find(|m| m["subresource"] == "status")
        .expect("status manager")
        .clone();
    assert_eq!(status_manager["manager"], "kube-controller-manager");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let web_pods = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods");
    assert_eq!(web_pods.items.len(), 3);
    assert!(
        web_pods
            .items
            .iter()
            .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    );
    assert_eq!(
        server.list("apps/v1", "ReplicaSet", Some("default")).len(),
        1
    );

    // A new image: a new ReplicaSet, old pods go away, the deployment stays available.
    deployments
        .patch(
            "web",
            &PatchParams::apply("bowline"),
            &Patch::Apply(deployment("web", "nginx:1.28", 2)),
        )
        .await
        .expect("apply change");
    let live = wait_for(&server, ("apps/v1", "Deployment"), "web", |d| {
        d["status"]["observedGeneration"] == 2 && d["status"]["availableReplicas"] == 2
    })
    .await;
    assert_eq!(live["status"]["updatedReplicas"], 2);
    assert_eq!(
        pods.list(&ListParams::default().labels("app=web"))
            .await
            .expect("pods")
            .items
            .len(),
        2
    );

    // A failing image never becomes available.
    deployments
        .patch(
            "bad",
            &PatchParams::apply("bowline"),
            &Patch::Apply(deployment("bad", "registry.local/broken:1", 2)),
        )
        .await
        .expect("apply failing");
    let live = wait_for(&server, ("apps/v1", "Deployment"), "bad", |d| {
        d["status"]["observedGeneration"] == 1
    })
    .await;
    let progressing = live["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Progressing")
        .expect("Progressing")
        .clone();
    assert_eq!(progressing["status"], "False");
    assert_eq!(progressing["reason"], "ProgressDeadlineExceeded");
    let message = progressing["message"].as_str().expect("message");
    assert!(
        message.starts_with("ReplicaSet \"bad-")
            && message.ends_with("\" has timed out progressing."),
        "{message}"
    );
    assert!(live["status"]["availableReplicas"].as_i64().unwrap_or(0) == 0);
    let bad_pods = pods
        .list(&ListParams::default().labels("app=bad"))
        .await
        .expect("pods");
    assert_eq!(bad_pods.items.len(), 2);
    for p in bad_pods.items {
        let cs = &p
            .status
            .expect("status")
            .container_statuses
            .expect("container statuses")[0];
        let waiting = cs
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .expect("waiting");
        assert_eq!(waiting.reason.as_deref(), Some("ImagePullBackOff"));
        assert!(
            waiting
                .message
                .as_deref()
                .is_some_and(|m| m.contains("registry.local/broken:1"))
        );
    }

    // Deleting the deployment collects its ReplicaSets and pods.
    deployments
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(
        pods.list(&ListParams::default().labels("app=web"))
            .await
            .expect("pods")
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn injected_faults_and_request_log() {
    let server = TestServer::start();
    let client = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    server.fail_next(Some("GET"), "/configmaps", 500, 1);
    let status = api_error(
        cms.list(&ListParams::default())
            .await
            .expect_err("injected"),
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (500, "InternalError")
    );
    cms.list(&ListParams::default())
        .await
        .expect("second call succeeds");
    server.fail_next(None, "/configmaps/x", 403, 2);
    assert_eq!(
        api_error(cms.get("x").await.expect_err("forbidden")).code,
        403
    );
    let log = server.requests();
    let statuses: Vec<u16> = log
        .iter()
        .filter(|r| r.path.contains("/configmaps"))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [500, 200, 403]);
    assert_eq!(log[0].method, "GET");
    server.clear_requests();
    assert!(server.requests().is_empty());

    // kube retries 429 (the Status carries Retry-After: 0) on its own.
    server.fail_next(Some("GET"), "/configmaps", 429, 2);
    cms.list(&ListParams::default()).await.expect("retried");
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 429, 200]);
}

#[tokio::test]
async fn watch_streams_events_from_a_resource_version() {
    use futures::{StreamExt, TryStreamExt};
    let server = TestServer::start();
    let client = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let list = cms.list(&ListParams::default()).await.expect("list");
    let rv = list.metadata.resource_version.expect("rv");
    let stream = cms
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .expect("watch");
    let mut stream = stream.boxed();
    server.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w", "namespace": "default"}}));
    server.patch_as(
        "someone",
        "v1",
        "ConfigMap",
        Some("default"),
        "w",
        json!({"data": {"a": "b"}}),
    );
    let first = stream.try_next().await.expect("event").expect("some event");
    assert!(matches!(first, WatchEvent::Added(ref cm) if cm.metadata.name.as_deref() == Some("w")));
    let second = stream.try_next().await.expect("event").expect("some event");
    assert!(matches!(second, WatchEvent::Modified(_)));
}

#[tokio::test]
async fn kubeconfig_for_several_servers() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = TestServer::start();
    let b = TestServer::start();
    b.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "only-in-b"}}));
    let kubeconfig =
        Kubeconfig::from_yaml(&kubeconfig_for(&[("a", &a), ("b", &b)])).expect("kubeconfig");
    for (ctx, expected) in [("a", false), ("b", true)] {
        let options = KubeConfigOptions {
            context: Some(ctx.into()),
            ..Default::default()
        };
        let config = Config::from_custom_kubeconfig(kubeconfig.clone(), &options)
            .await
            .expect("config");
        let client = Client::try_from(config).expect("client");
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
        assert_eq!(
            namespaces
                .get_opt("only-in-b")
                .await
                .expect("get")
                .is_some(),
            expected,
            "context {ctx}"
        );
    }
}

#[tokio::test]
async fn runtime_waits_see_rollouts_and_crds() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::batch::v1::Job;
    use kube::runtime::wait::{await_condition, conditions};
    let server = TestServer::start_with(Options {
        controller_delay: Duration::from_millis(10),
        ..Options::default()
    });
    let client = client(&server).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .patch(
            "web",
            &PatchParams::apply("bowline"),
            &Patch::Apply(deployment("web", "nginx:1.27", 2)),
        )
        .await
        .expect("apply");
    let done = tokio::time::timeout(
        Duration::from_secs(5),
        await_condition(
            deployments.clone(),
            "web",
            conditions::is_deployment_completed(),
        ),
    )
    .await
    .expect("in time")
    .expect("watch");
    assert!(done.is_some());

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "servicemonitors.monitoring.coreos.com",
        &PatchParams::apply("bowline"),
        &Patch::Apply(crd()),
    )
    .await
    .expect("crd");
    tokio::time::timeout(
        Duration::from_secs(5),
        await_condition(
            crds,
            "servicemonitors.monitoring.coreos.com",
            conditions::is_crd_established(),
        ),
    )
    .await
    .expect("in time")
    .expect("watch");

    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    jobs.patch(
        "once",
        &PatchParams::apply("bowline"),
        &Patch::Apply(json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "once"}, "spec": {"template": {"spec": {"restartPolicy": "Never",
        "containers": [{"name": "c", "image": "busybox:1"}]}}}})),
    )
    .await
    .expect("job");
    tokio::time::timeout(
        Duration::from_secs(5),
        await_condition(jobs, "once", conditions::is_job_completed()),
    )
    .await
    .expect("in time")
    .expect("watch");

    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    sets.patch("db", &PatchParams::apply("bowline"), &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db"}, "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "postgres:16"}]}}}})))
        .await
        .expect("statefulset");
    let live = wait_for(&server, ("apps/v1", "StatefulSet"), "db", |s| {
        s["status"]["readyReplicas"] == 2
    })
    .await;
    assert_eq!(
        live["status"]["currentRevision"],
        live["status"]["updateRevision"]
    );
    assert!(server.get("v1", "Pod", Some("default"), "db-1").is_some());
}

#[tokio::test]
async fn list_maps_merge_per_manager_and_status_subresource() {
    let server = TestServer::start();
    let client = client(&server).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    // Two managers each apply their own container and env entry.
    let with_sidecar = |image: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": image}]}}}})
    };
    deployments
        .patch(
            "web",
            &PatchParams::apply("bowline"),
            &Patch::Apply(deployment("web", "nginx:1.27", 1)),
        )
        .await
        .expect("apply");
    let both = deployments
        .patch(
            "web",
            &PatchParams::apply("mesh"),
            &Patch::Apply(with_sidecar("envoy:1")),
        )
        .await
        .expect("sidecar");
    let names: Vec<String> = both
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod")
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["app", "sidecar"]);
    // bowline re-applies without knowing the sidecar: it stays.
    let again = deployments
        .patch(
            "web",
            &PatchParams::apply("bowline"),
            &Patch::Apply(deployment("web", "nginx:1.28", 1)),
        )
        .await
        .expect("re-apply");
    let containers = again
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod")
        .containers;
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0].image.as_deref(), Some("nginx:1.28"));
    // The mesh manager stops applying the sidecar: it goes.
    let pruned = deployments
        .patch(
            "web",
            &PatchParams::apply("mesh"),
            &Patch::Apply(
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}),
            ),
        )
        .await
        .expect("prune");
    let containers = pruned
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod")
        .containers;
    assert_eq!(
        containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["app"]
    );

    // Strategic merge patches merge containers by name.
    let patched = deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "env": [{"name": "A", "value": "1"}]}]}}}})))
        .await
        .expect("strategic");
    let c = &patched
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod")
        .containers[0];
    assert_eq!(c.image.as_deref(), Some("nginx:1.28"));
    assert_eq!(c.env.as_ref().map(Vec::len), Some(1));

    // The status subresource: main-resource writes ignore status; status writes ignore spec.
    let status_patch = json!({"status": {"replicas": 7}});
    let after = deployments
        .patch_status("web", &PatchParams::default(), &Patch::Merge(status_patch))
        .await
        .expect("status patch");
    assert_eq!(after.status.expect("status").replicas, Some(7));
    let generation = after.metadata.generation;
    let ignored = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 9}})),
        )
        .await
        .expect("main patch");
    assert_eq!(ignored.status.expect("status").replicas, Some(7));
    assert_eq!(ignored.metadata.generation, generation);
    let got = deployments.get_status("web").await.expect("get status");
    assert_eq!(got.status.expect("status").replicas, Some(7));
}

/// One HTTP/1.1 request over a plain socket: the status code and the JSON body exactly as sent.
fn raw_request(
    server: &TestServer,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server.addr()).expect("connect");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.addr(),
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, payload) = response.split_once("\r\n\r\n").expect("headers end");
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let json = serde_json::from_str(payload.trim())
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {payload:?}"));
    (code, json)
}

#[test]
fn every_write_into_a_missing_namespace_is_the_real_servers_404() {
    let server = TestServer::start();
    let cm = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "shop-staging"}}"#;
    let mut deploy = deployment("web", "nginx:1", 1);
    deploy["metadata"]["namespace"] = json!("shop-staging");
    let deploy = deploy.to_string();
    let expected = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "namespaces \"shop-staging\" not found",
        "reason": "NotFound",
        "details": {"name": "shop-staging", "kind": "namespaces"},
        "code": 404,
    });
    let cases = [
        (
            "POST",
            "/api/v1/namespaces/shop-staging/configmaps",
            "application/json",
            cm.to_string(),
        ),
        (
            "POST",
            "/api/v1/namespaces/shop-staging/configmaps?dryRun=All",
            "application/json",
            cm.to_string(),
        ),
        (
            "PUT",
            "/api/v1/namespaces/shop-staging/configmaps/x",
            "application/json",
            cm.to_string(),
        ),
        (
            "PUT",
            "/api/v1/namespaces/shop-staging/configmaps/x?dryRun=All",
            "application/json",
            cm.to_string(),
        ),
        (
            "PATCH",
            "/api/v1/namespaces/shop-staging/configmaps/x",
            "application/merge-patch+json",
            r#"{"data": {"a": "b"}}"#.to_string(),
        ),
        (
            "PATCH",
            "/api/v1/namespaces/shop-staging/configmaps/x?fieldManager=bowline",
            "application/apply-patch+yaml",
            cm.to_string(),
        ),
        (
            "PATCH",
            "/api/v1/namespaces/shop-staging/configmaps/x?fieldManager=bowline&dryRun=All&force=true",
            "application/apply-patch+yaml",
            cm.to_string(),
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/shop-staging/deployments/web?fieldManager=bowline&dryRun=All",
            "application/apply-patch+yaml",
            deploy,
        ),
    ];
    for (method, path, content_type, body) in cases {
        let (code, status) = raw_request(&server, method, path, content_type, &body);
        assert_eq!(code, 404, "{method} {path}: {status}");
        assert_eq!(status, expected, "{method} {path}");
    }
    assert!(
        server.list("v1", "ConfigMap", None).is_empty(),
        "nothing was stored"
    );
    // Once the namespace exists, the same apply succeeds.
    server.create(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-staging"}}),
    );
    let (code, _) = raw_request(
        &server,
        "PATCH",
        "/api/v1/namespaces/shop-staging/configmaps/x?fieldManager=bowline&dryRun=All",
        "application/apply-patch+yaml",
        cm,
    );
    assert_eq!(code, 201);
}

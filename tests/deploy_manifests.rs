//! The manifests of `deploy/`, built with the real `kubectl kustomize` as operators apply
//! them: one replica on SQLite, or three on PostgreSQL coordinated by Leases.

use serde_json::Value;

/// The objects `kubectl kustomize deploy/<overlay>` builds.
fn build(overlay: &str) -> Vec<Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(overlay);
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("kubectl (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.split("\n---\n")
        .map(|doc| serde_yaml::from_str(doc).expect("YAML"))
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn env(deployment: &Value) -> Vec<(String, Value)> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_string(),
                e.clone(),
            )
        })
        .collect()
}

fn value<'a>(env: &'a [(String, Value)], name: &str) -> &'a Value {
    let found: Vec<&Value> = env
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(found.len(), 1, "{name} set {} times", found.len());
    found[0]
}

#[test]
fn one_replica_keeps_its_state_on_a_volume() {
    let objects = build("");
    let deployment = find(&objects, "Deployment", "bowline").expect("deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    assert!(find(&objects, "PersistentVolumeClaim", "bowline-state").is_some());
    assert!(find(&objects, "PodDisruptionBudget", "bowline").is_none());
    let env = env(deployment);
    assert_eq!(
        value(&env, "BOWLINE_STATE")["value"],
        "/var/lib/bowline/bowline.db"
    );
    assert!(env.iter().all(|(n, _)| n != "BOWLINE_LEASE_NAMESPACE"));
}

#[test]
fn three_replicas_share_postgres_and_hold_leases() {
    let objects = build("replicas");
    let deployment = find(&objects, "Deployment", "bowline").expect("deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
    // No volume to share: the state is in PostgreSQL.
    assert!(find(&objects, "PersistentVolumeClaim", "bowline-state").is_none());
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes");
    assert!(
        volumes
            .iter()
            .all(|v| v.get("persistentVolumeClaim").is_none()),
        "{volumes:?}"
    );
    let env = env(deployment);
    let state = value(&env, "BOWLINE_STATE")["value"]
        .as_str()
        .expect("state");
    assert!(
        state.starts_with("postgres://")
            && !state.contains(":@")
            && state.contains("sslmode=require"),
        "{state}"
    );
    for file in ["BOWLINE_STATE_PASSWORD_FILE", "BOWLINE_MASK_KEY_FILE"] {
        assert!(
            value(&env, file)["value"]
                .as_str()
                .is_some_and(|p| p.starts_with("/etc/bowline/secrets/")),
            "{file}"
        );
    }
    assert_eq!(
        value(&env, "BOWLINE_LEASE_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        value(&env, "BOWLINE_REPLICA_ID")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    let pdb = find(&objects, "PodDisruptionBudget", "bowline").expect("pdb");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let role = find(&objects, "Role", "bowline-leases").expect("role");
    assert_eq!(role["metadata"]["namespace"], "bowline-system");
    assert_eq!(role["rules"][0]["apiGroups"][0], "coordination.k8s.io");
    assert_eq!(role["rules"][0]["resources"][0], "leases");
    let verbs: Vec<&str> = role["rules"][0]["verbs"]
        .as_array()
        .expect("verbs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(verbs, ["get", "list", "create", "update"]);
    let binding = find(&objects, "RoleBinding", "bowline-leases").expect("binding");
    assert_eq!(binding["subjects"][0]["name"], "bowline");
    assert_eq!(binding["roleRef"]["name"], "bowline-leases");
}

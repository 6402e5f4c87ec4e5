//! Manifests are read as `kubectl` reads them. Each file of `tests/fixtures/kube-yaml/` (octal
//! modes, YAML 1.1 integers and booleans, non-string keys, anchors and merge keys) is sent
//! through the real `kubectl create --dry-run=client -o json` (against the Kubernetes API
//! test server, which kubectl asks for the kinds' REST mapping) and read by bowline's
//! manifest reader: the two must be the same JSON.

use std::path::Path;
use std::process::Command;

use bowline::render::kube_yaml;
use kube_api_test_server::{TestServer, kubeconfig_for};
use serde_json::Value;

/// What kubectl would send for `file`, without the namespace it fills in itself.
fn kubectl_json(kubeconfig: &Path, file: &Path) -> Value {
    let out = Command::new("kubectl")
        .args([
            "create",
            "--dry-run=client",
            "--validate=false",
            "-o",
            "json",
            "-f",
        ])
        .arg(file)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("kubectl runs (scripts/test.sh installs it when missing)");
    assert!(
        out.status.success(),
        "kubectl on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut value: Value = serde_json::from_slice(&out.stdout).expect("kubectl prints JSON");
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("namespace");
    }
    value
}

/// Numbers compared by value (kubectl prints `1500` for YAML's `1.5e3`; bowline keeps the
/// float 1500.0, which the API server reads the same).
fn normalized(value: &Value) -> Value {
    match value {
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map_or_else(|| value.clone(), |f| Value::from(f as i64)),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn manifests_read_the_same_as_kubectl_sends_them() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig.yaml");
    std::fs::write(&kubeconfig, kubeconfig_for(&[("test", &server)])).expect("kubeconfig");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kube-yaml");
    let mut files: Vec<_> = std::fs::read_dir(&fixtures)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        let documents =
            kube_yaml::parse_stream(&text).unwrap_or_else(|e| panic!("{}: {e:?}", file.display()));
        assert_eq!(documents.len(), 1, "{}", file.display());
        assert_eq!(
            normalized(&documents[0].value),
            normalized(&kubectl_json(&kubeconfig, &file)),
            "{}",
            file.display()
        );
    }
}

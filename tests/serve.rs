//! `bowline serve` as operators start it: the binary, its flags, its files and its endpoints.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use git2::{Repository, Signature};

/// A Git repository holding the example repository in one commit on `main`.
fn example_remote(dir: &Path) {
    common::copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo"),
        dir,
        &[],
    );
    let repo = Repository::init(dir).expect("init");
    repo.set_head("refs/heads/main").expect("head");
    let mut index = repo.index().expect("index");
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .expect("add");
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("tree");
    let sig = Signature::now("Test", "test@example.com").expect("signature");
    repo.commit(Some("refs/heads/main"), &sig, &sig, "initial", &tree, &[])
        .expect("commit");
}

struct Served {
    child: Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bowline serve` on a free port; returns once it says where it listens.
fn serve(remote: &Path, state: &Path, extra: &[&str]) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bowline"))
        .arg("serve")
        .arg("--repo")
        .arg(remote)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--state")
        .arg(state.join("bowline.db"))
        .arg("--cache-dir")
        .arg(state.join("cache"))
        .args(extra)
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bowline serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("bowline serve says where it listens")
            .expect("stderr line");
        if let Some(url) = line.strip_prefix("bowline: serving on ") {
            break url.trim().to_string();
        }
    };
    // Keep draining stderr so the daemon never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Served { child, url }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn serve_answers_keeps_its_files_private_and_keeps_its_mask_key() {
    let remote = tempfile::tempdir().expect("remote");
    example_remote(remote.path());
    let state = tempfile::tempdir().expect("state");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let key_file = state.path().join("bowline.db.mask-key");
    let key = {
        let served = serve(remote.path(), state.path(), &["--max-connections", "8"]);
        let health = http
            .get(format!("{}/healthz", served.url))
            .send()
            .await
            .expect("healthz");
        assert_eq!(health.status(), 200);
        let started = Instant::now();
        loop {
            let ready = http
                .get(format!("{}/readyz", served.url))
                .send()
                .await
                .expect("readyz");
            if ready.status() == 200 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "ready in time");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let metrics = http
            .get(format!("{}/metrics", served.url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body");
        assert!(metrics.contains("bowline_"), "{metrics}");
        // Without tokens the API refuses, and says so.
        let api = http
            .get(format!("{}/api/v1/apps", served.url))
            .send()
            .await
            .expect("api");
        assert!(api.status().is_client_error() || api.status() == 503);
        // A delivery without a configured secret is refused.
        let hook = http
            .post(format!("{}/webhooks/github", served.url))
            .body("{}")
            .send()
            .await
            .expect("webhook");
        assert_eq!(hook.status(), 503);
        assert_eq!(mode(&state.path().join("bowline.db")), 0o600);
        assert_eq!(mode(&key_file), 0o600);
        std::fs::read_to_string(&key_file).expect("key")
    };
    // Restarted on the same state, the key is the same.
    let _served = serve(remote.path(), state.path(), &[]);
    assert_eq!(std::fs::read_to_string(&key_file).expect("key"), key);
}

/// Fails on a JSON document with a duplicate key in any object (`serde_json::Value` keeps one
/// of them silently).
struct Unique;

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Unique;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Unique, A::Error> {
                let mut seen = std::collections::HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
                    }
                    map.next_value::<Unique>()?;
                }
                Ok(Unique)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Unique, A::Error> {
                while seq.next_element::<Unique>()?.is_some() {}
                Ok(Unique)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
                Ok(Unique)
            }
            fn visit_unit<E>(self) -> Result<Unique, E> {
                Ok(Unique)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// With `--log-format json`, everything on stderr is a JSON object per line, without colour
/// codes or duplicate keys, from start to a clean stop — through a cluster connection (whose
/// span names the cluster) and a failing command.
#[test]
fn json_logs_are_json_lines_only() {
    let remote = tempfile::tempdir().expect("remote");
    example_remote(remote.path());
    let state = tempfile::tempdir().expect("state");
    let server = kube_api_test_server::TestServer::start();
    let kubeconfig = state.path().join("kubeconfig.yaml");
    std::fs::write(
        &kubeconfig,
        kube_api_test_server::kubeconfig_for(&[("gke_acme-shop_europe-west1_staging", &server)]),
    )
    .expect("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bowline"))
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .arg("--repo")
        .arg(remote.path())
        .arg("--state")
        .arg(state.path().join("bowline.db"))
        .arg("--cache-dir")
        .arg(state.path().join("cache"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--drift-interval", "1s"])
        .env("RUST_LOG", "debug")
        .env_remove("KUBECONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bowline serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Serving, then a drift pass that connects to the cluster.
    while !lines
        .iter()
        .any(|l: &String| l.contains("\"cluster\":\"staging-eu-west-1\""))
    {
        assert!(Instant::now() < deadline, "no cluster span: {lines:#?}");
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(line);
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("stops");
    assert!(status.success(), "{status:?}");
    lines.extend(rx.iter());
    let failed = Command::new(env!("CARGO_BIN_EXE_bowline"))
        .args([
            "--log-format",
            "json",
            "validate",
            "/nonexistent/repository",
        ])
        .output()
        .expect("validate");
    assert!(!failed.status.success());
    lines.extend(
        String::from_utf8_lossy(&failed.stderr)
            .lines()
            .map(str::to_string),
    );
    assert!(lines.iter().any(|l| l.contains("bowline serving")));
    assert!(
        lines.iter().any(|l| l.contains("bowline failed")),
        "{lines:#?}"
    );
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "colour code in {line}");
        assert!(line.starts_with('{'), "not a JSON object: {line}");
        if let Err(e) = serde_json::from_str::<Unique>(line) {
            panic!("{e}: {line}");
        }
    }
}

//! Several `bowline serve` replicas on one PostgreSQL database, measured at scale (run by
//! `scripts/bench-replicas.sh`, which starts the database):
//!
//! ```text
//! replicas_bench POSTGRES_URL BOWLINE_BINARY [--apps N] [--replicas R] [--lease SECONDS]
//! ```
//!
//! It serves Leases and the target cluster from the Kubernetes API test server, starts R
//! replicas (default 3) on a repository of N apps (default 5,000) that start nothing, then
//! measures:
//! - the time from a push of a commit changing every app (and turning their pipelines on) to
//!   every execution created and to every execution started;
//! - the stage-transition time in PostgreSQL, from the replicas' own histograms;
//! - failover (every execution in a 2 h soak by then): SIGKILL of the replica running the most executions, to the first transition by
//!   a new owner of one of its executions, and to all of them resumed.

#[path = "../tests/support/soak_repo.rs"]
mod soak_repo;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kube_api_test_server::TestServer as KubeServer;
use serde_json::json;

const SECRET: &str = "bench secret";

struct Options {
    url: String,
    binary: PathBuf,
    apps: usize,
    replicas: usize,
    lease: u64,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("missing POSTGRES_URL")?;
    let binary = PathBuf::from(args.next().ok_or("missing BOWLINE_BINARY")?);
    let mut o = Options {
        url,
        binary,
        apps: 5000,
        replicas: 3,
        lease: 10,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let n: u64 = value.parse().map_err(|_| format!("{flag}: {value}"))?;
        match flag.as_str() {
            "--apps" => o.apps = n as usize,
            "--replicas" => o.replicas = n as usize,
            "--lease" => o.lease = n,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

struct Replica {
    id: String,
    child: Child,
    url: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(o: &Options, dir: &Path, id: &str) -> Replica {
    let path = |rel: &str| dir.join(rel).to_string_lossy().into_owned();
    let mut child = Command::new(&o.binary)
        .arg("serve")
        .args(["--repo", &path("repo"), "--listen", "127.0.0.1:0"])
        .args(["--state", &o.url, "--mask-key-file", &path("mask.key")])
        .args(["--cache-dir", &path(&format!("cache-{id}"))])
        .args(["--kubeconfig", &path("kubeconfig")])
        .args(["--lease-namespace", "bowline", "--lease-context", "test"])
        .args(["--lease-duration", &format!("{}s", o.lease)])
        .args(["--shards", "16", "--replica-id", id])
        .args(["--webhook-secret-file", &path("webhook-secret")])
        .args(["--poll-interval", "1h", "--drift-interval", "0s"])
        .args(["--stage-poll", "5s", "--max-concurrent-requests", "4096"])
        .env_remove("KUBECONFIG")
        .env("RUST_LOG", "bowline=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bowline serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let log = dir.join(format!("{id}.log"));
    std::thread::spawn(move || {
        use std::io::Write as _;
        let mut file = std::fs::File::create(log).expect("log");
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
            if !sent && let Some(at) = line.split("serving on ").nth(1) {
                let _ = tx.send(at.trim().to_string());
                sent = true;
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("replica started");
    Replica {
        id: id.to_string(),
        child,
        url,
    }
}

/// One number from a SQL query.
fn count(client: &mut postgres_sync::Client, sql: &str) -> i64 {
    client.query_one(sql)
}

mod postgres_sync {
    //! A blocking wrapper over tokio-postgres for the few queries of the benchmark.
    pub struct Client {
        runtime: tokio::runtime::Runtime,
        client: tokio_postgres::Client,
    }

    impl Client {
        pub fn connect(url: &str) -> Client {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            let client = runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .expect("connect");
                tokio::spawn(connection);
                client
            });
            Client { runtime, client }
        }

        pub fn query_one(&mut self, sql: &str) -> i64 {
            self.runtime.block_on(async {
                let row = self.client.query_one(sql, &[]).await.expect(sql);
                row.get::<_, i64>(0)
            })
        }

        pub fn text(&mut self, sql: &str) -> Option<String> {
            self.runtime.block_on(async {
                let row = self.client.query_one(sql, &[]).await.expect(sql);
                row.get::<_, Option<String>>(0)
            })
        }
    }
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// Cumulative transition-histogram buckets summed over the replicas (upper bound → count).
fn histogram(replicas: &[Replica]) -> BTreeMap<u64, f64> {
    let mut buckets = BTreeMap::new();
    for r in replicas {
        let Some((_, text)) = http(&r.url, "GET", "/metrics", &[], b"") else {
            continue;
        };
        for line in text.lines() {
            let Some(rest) =
                line.strip_prefix("bowline_stage_transition_duration_seconds_bucket{le=\"")
            else {
                continue;
            };
            let Some((le, value)) = rest.split_once("\"} ") else {
                continue;
            };
            let micros = if le == "+Inf" {
                u64::MAX
            } else {
                (le.parse::<f64>().unwrap_or(0.0) * 1e6) as u64
            };
            *buckets.entry(micros).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    buckets
}

/// The bucket bound under which `q` of the observations fall.
fn quantile(buckets: &BTreeMap<u64, f64>, q: f64) -> String {
    let total = buckets.get(&u64::MAX).copied().unwrap_or(0.0);
    for (bound, count) in buckets {
        if *count >= q * total {
            return if *bound == u64::MAX {
                "> 1 s".into()
            } else {
                format!("≤ {:.1} ms", *bound as f64 / 1000.0)
            };
        }
    }
    "n/a".into()
}

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("replicas_bench: {e}");
            std::process::exit(2);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("temp dir");
    let kube = KubeServer::start();
    for ns in ["shop", "bowline"] {
        kube.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    std::fs::write(dir.path().join("kubeconfig"), kube.kubeconfig("test")).expect("kubeconfig");
    std::fs::write(dir.path().join("webhook-secret"), SECRET).expect("secret");
    let repo_dir = dir.path().join("repo");
    soak_repo::write_repo(&repo_dir, o.apps, "1.0.0", "2h", false);
    let git = git2::Repository::init(&repo_dir).expect("init");
    git.set_head("refs/heads/main").expect("head");
    soak_repo::commit_all(&git, "apps, started by hand only");
    let mut db = postgres_sync::Client::connect(&o.url);

    let started = Instant::now();
    let mut replicas: Vec<Replica> = (0..o.replicas)
        .map(|i| start(&o, dir.path(), &format!("r{i}")))
        .collect();
    wait_until("the shards spread", Duration::from_secs(300), || {
        let held: Vec<f64> = histogram_gauge(&replicas, "bowline_shards_held");
        held.len() == replicas.len()
            && held.iter().sum::<f64>() == 16.0
            && held.iter().all(|n| *n >= 1.0)
    });
    eprintln!(
        "{} replicas up and sharing 16 shards after {:.1} s",
        o.replicas,
        (started.elapsed()).as_secs_f64()
    );

    // Every app changes and turns automated on.
    soak_repo::write_repo(&repo_dir, o.apps, "1.0.1", "2h", true);
    let head = soak_repo::commit_all(&git, "every app");
    let payload_file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/github/webhooks/push.branch-created.octokit.json");
    let mut payload: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&payload_file).expect("push payload")).expect("JSON");
    payload["ref"] = "refs/heads/main".into();
    payload["after"] = head.clone().into();
    payload["repository"]["full_name"] = "acme/shop-config".into();
    payload["repository"]["name"] = "shop-config".into();
    payload["repository"]["owner"]["login"] = "acme".into();
    let body = serde_json::to_vec(&payload).expect("payload");
    let signature = bowline::forge::webhook::sign(SECRET.as_bytes(), &body);
    let (status, text) = http(
        &replicas[1 % replicas.len()].url,
        "POST",
        "/webhooks/github",
        &[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "bench-push"),
            ("X-Hub-Signature-256", &signature),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
    .expect("push");
    assert_eq!(status, 202, "push: {text}");
    let apps = o.apps as i64;
    let created = wait_until("every execution created", Duration::from_secs(1800), || {
        count(&mut db, "SELECT count(*) FROM executions") >= apps
    });
    let running = wait_until("every execution started", Duration::from_secs(1800), || {
        count(
            &mut db,
            "SELECT count(*) FROM executions WHERE status = 'RUNNING'",
        ) >= apps
    });
    eprintln!(
        "push → {} executions created: {:.1} s; → all started: {:.1} s",
        o.apps,
        created.as_secs_f64(),
        (created + running).as_secs_f64()
    );
    let in_soak = wait_until(
        "every execution in its soak",
        Duration::from_secs(1800),
        || {
            count(
                &mut db,
                "SELECT count(*) FROM stages WHERE name = 'soak' AND status = 'RUNNING'",
            ) >= apps
        },
    );
    eprintln!("… all in their soak {:.1} s later", in_soak.as_secs_f64());
    let buckets = histogram(&replicas);
    eprintln!(
        "stage transitions so far: {:.0}; p50 {}, p99 {}, p99.9 {}",
        buckets.get(&u64::MAX).copied().unwrap_or(0.0),
        quantile(&buckets, 0.5),
        quantile(&buckets, 0.99),
        quantile(&buckets, 0.999)
    );

    eprintln!("under load so far: {}", shard_moves(dir.path(), &replicas));

    // Failover: kill the replica owning the most running executions.
    let victim = replicas
        .iter()
        .map(|r| {
            let n = count(
                &mut db,
                &format!(
                    "SELECT count(*) FROM executions WHERE status = 'RUNNING' AND owner = '{}'",
                    r.id
                ),
            );
            (n, r.id.clone())
        })
        .max()
        .expect("a replica");
    let index = replicas
        .iter()
        .position(|r| r.id == victim.1)
        .expect("victim");
    let mut dead = replicas.remove(index);
    let killed_at = Utc::now();
    let since = killed_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    dead.child.kill().expect("SIGKILL");
    dead.child.wait().expect("reaped");
    let owned = victim.0;
    let first = wait_until("a first takeover", Duration::from_secs(600), || {
        count(
            &mut db,
            &format!(
                "SELECT count(*) FROM events WHERE message LIKE 'resumed by % from {}%' AND at >= '{since}'",
                victim.1
            ),
        ) >= 1
    });
    let first_at = db
        .text(&format!(
            "SELECT min(at) FROM events WHERE message LIKE 'resumed by % from {}%' AND at >= '{since}'",
            victim.1
        ))
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc));
    let all = wait_until(
        "all its executions resumed",
        Duration::from_secs(1800),
        || {
            count(
                &mut db,
                &format!(
                    "SELECT count(*) FROM executions WHERE status = 'RUNNING' AND owner = '{}'",
                    victim.1
                ),
            ) == 0
        },
    );
    let failover = first_at.map(|t| (t - killed_at).num_milliseconds());
    eprintln!(
        "failover (lease {} s): SIGKILL of {} ({owned} running executions) → first transition by a new owner {} ms (seen after {:.1} s); all resumed after {:.1} s",
        o.lease,
        victim.1,
        failover.map_or("?".to_string(), |m| m.to_string()),
        first.as_secs_f64(),
        (first + all).as_secs_f64()
    );
    let buckets = histogram(&replicas);
    eprintln!(
        "stage transitions on the survivors: {:.0}; p50 {}, p99 {}, p99.9 {}",
        buckets.get(&u64::MAX).copied().unwrap_or(0.0),
        quantile(&buckets, 0.5),
        quantile(&buckets, 0.99),
        quantile(&buckets, 0.999)
    );
    eprintln!("since the start: {}", shard_moves(dir.path(), &replicas));
    drop(replicas);
}

/// How often each replica took a shard and lost one (a lease not renewed in time), from logs.
fn shard_moves(dir: &Path, replicas: &[Replica]) -> String {
    replicas
        .iter()
        .map(|r| {
            let log =
                std::fs::read_to_string(dir.join(format!("{}.log", r.id))).unwrap_or_default();
            let lost = log
                .lines()
                .filter(|l| l.contains("not renewed in time") || l.contains("lost the shard lease"))
                .count();
            format!("{} lost {lost} shard hold(s)", r.id)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A gauge from every replica's `/metrics`.
fn histogram_gauge(replicas: &[Replica], name: &str) -> Vec<f64> {
    replicas
        .iter()
        .filter_map(|r| {
            let (_, text) = http(&r.url, "GET", "/metrics", &[], b"")?;
            text.lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

/// One HTTP/1.1 request to `base` (`http://host:port`); the status and body.
fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let address = base.strip_prefix("http://")?;
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .ok()?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let (head, rest) = text.split_once("\r\n\r\n")?;
    // Chunked bodies keep their chunk sizes as lines: harmless for the lines read here.
    let _ = head;
    Some((status, rest.to_string()))
}

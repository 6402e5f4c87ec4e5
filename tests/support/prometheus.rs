//! A real Prometheus server for tests: history written as OpenMetrics, backfilled with
//! `promtool tsdb create-blocks-from openmetrics` into a fresh TSDB in a temp dir, served on a
//! free 127.0.0.1 port, killed on drop.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// A port nothing listens on (for "Prometheus down").
pub fn closed_port_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

fn http_ok(port: u16, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
}

fn require(tool: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "{tool} not found: install Debian's prometheus package (scripts/test.sh does)"
    );
}

impl Prometheus {
    /// Backfills `openmetrics` (must end with `# EOF`) and starts the server.
    pub fn start(openmetrics: &str) -> Prometheus {
        require("promtool");
        require("prometheus");
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data.om");
        std::fs::write(&data, openmetrics).expect("write OpenMetrics");
        let tsdb = dir.path().join("tsdb");
        let out = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&data)
            .arg(&tsdb)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            "global:\n  scrape_interval: 1h\n  evaluation_interval: 1h\n",
        )
        .expect("write config");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=100y")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut server = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http_ok(port, "/-/ready") {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("prometheus exited with {status}: {}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The temp dir (for outputs next to the TSDB).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic pseudo-random numbers for generated history.
pub struct Lcg(u64);

impl Lcg {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Lcg(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407))
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// How one app behaves during one stretch of time.
#[derive(Clone, Copy, Debug)]
pub struct Behaviour {
    /// Median latency in seconds.
    pub median_latency: f64,
    /// Share of requests answered with 500.
    pub error_share: f64,
}

/// One app's history: its labels and behaviour per stretch `(from_second, behaviour)`.
pub struct App<'a> {
    /// `app` label.
    pub app: &'a str,
    /// `namespace` label.
    pub namespace: &'a str,
    /// Stretches, from their start (unix seconds), ascending.
    pub stretches: Vec<(i64, Behaviour)>,
}

/// Latency histogram bucket bounds.
pub const BUCKETS: [f64; 7] = [0.025, 0.05, 0.1, 0.15, 0.2, 0.4, 0.8];

/// OpenMetrics history of `http_requests_total{code}` counters and an
/// `http_request_duration_seconds` histogram, 1,000 requests per 15 s scrape, from `start` for
/// `seconds`.
pub fn http_history(apps: &[App<'_>], start: i64, seconds: i64, seed: u64) -> String {
    const SCRAPE: i64 = 15;
    const REQUESTS: u64 = 1000;
    struct Cum {
        ok: u64,
        err: u64,
        buckets: [u64; BUCKETS.len()],
        count: u64,
        sum: f64,
    }
    // Simulate every app first, keeping cumulative values per scrape.
    let mut per_app: Vec<Vec<(i64, Cum)>> = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        let mut rng = Lcg::new(seed + i as u64);
        let mut cum = Cum {
            ok: 0,
            err: 0,
            buckets: [0; BUCKETS.len()],
            count: 0,
            sum: 0.0,
        };
        let mut points = Vec::new();
        let mut t = start;
        while t <= start + seconds {
            let b = app
                .stretches
                .iter()
                .rev()
                .find(|(from, _)| *from <= t)
                .map(|(_, b)| *b)
                .unwrap_or(app.stretches[0].1);
            for _ in 0..REQUESTS {
                if rng.uniform() < b.error_share {
                    cum.err += 1;
                } else {
                    cum.ok += 1;
                }
                let latency = b.median_latency * (0.35 * rng.normal()).exp();
                for (k, bound) in BUCKETS.iter().enumerate() {
                    if latency <= *bound {
                        cum.buckets[k] += 1;
                    }
                }
                cum.count += 1;
                cum.sum += latency;
            }
            points.push((
                t,
                Cum {
                    ok: cum.ok,
                    err: cum.err,
                    buckets: cum.buckets,
                    count: cum.count,
                    sum: cum.sum,
                },
            ));
            t += SCRAPE;
        }
        per_app.push(points);
    }
    let mut out = String::new();
    out.push_str("# HELP http_requests Requests served.\n# TYPE http_requests counter\n");
    for (app, points) in apps.iter().zip(&per_app) {
        for (code, pick) in [("200", 0usize), ("500", 1)] {
            for (t, c) in points {
                let v = if pick == 0 { c.ok } else { c.err };
                out.push_str(&format!(
                    "http_requests_total{{app=\"{}\",namespace=\"{}\",code=\"{code}\"}} {v} {t}\n",
                    app.app, app.namespace
                ));
            }
        }
    }
    out.push_str(
        "# HELP http_request_duration_seconds Request latency.\n# TYPE http_request_duration_seconds histogram\n",
    );
    for (app, points) in apps.iter().zip(&per_app) {
        let labels = format!("app=\"{}\",namespace=\"{}\"", app.app, app.namespace);
        for (k, bound) in BUCKETS.iter().enumerate() {
            for (t, c) in points {
                out.push_str(&format!(
                    "http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {} {t}\n",
                    c.buckets[k]
                ));
            }
        }
        for (t, c) in points {
            out.push_str(&format!(
                "http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {} {t}\n",
                c.count
            ));
        }
        for (t, c) in points {
            out.push_str(&format!(
                "http_request_duration_seconds_count{{{labels}}} {} {t}\n",
                c.count
            ));
        }
        for (t, c) in points {
            out.push_str(&format!(
                "http_request_duration_seconds_sum{{{labels}}} {:.6} {t}\n",
                c.sum
            ));
        }
    }
    out.push_str("# EOF\n");
    out
}

//! A throwaway PostgreSQL cluster for tests: `initdb` in a temporary directory and `postgres`
//! on a free loopback port, started once per test binary and stopped (its directory removed)
//! when the binary exits. The binaries come from `PATH`, else from Debian's
//! `/usr/lib/postgresql/<version>/bin`; as root they run as `nobody` (PostgreSQL refuses
//! root). Without PostgreSQL, tests using it fail: they never skip.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A running throwaway PostgreSQL cluster.
pub struct Pg {
    /// `postgres://bowline@127.0.0.1:<port>` (no database).
    pub url: String,
    /// A shell that runs `postgres` and stops it when its stdin closes (this process exits).
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Pg {
    fn drop(&mut self) {
        // Closing stdin makes the shell stop postgres; kill the shell in any case.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn output(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `cmd args…`, as `nobody` when running as root (PostgreSQL refuses to run as root).
fn command(as_nobody: bool, cmd: &str, args: &[&str]) -> Command {
    if as_nobody {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--", cmd]).args(args);
        c
    } else {
        let mut c = Command::new(cmd);
        c.args(args);
        c
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Pg {
    fn start() -> Pg {
        let as_nobody = output("id", &["-u"]) == "0";
        let dir = tempfile::Builder::new()
            .prefix("bowline-pg-")
            .tempdir()
            .expect("tempdir");
        if as_nobody {
            let uid: u32 = output("id", &["-u", "nobody"]).parse().expect("uid");
            let gid: u32 = output("id", &["-g", "nobody"]).parse().expect("gid");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
        let data = path(&dir.path().join("data"));
        let socket = path(dir.path());
        let initdb = bin("initdb");
        let postgres = bin("postgres");
        let init = command(
            as_nobody,
            &initdb,
            &["-D", &data, "-U", "bowline", "--auth=trust", "--no-sync"],
        )
        .output()
        .expect("initdb runs");
        assert!(init.status.success(), "initdb failed: {init:?}");
        let port = free_port().to_string();
        let script = r#""$4" -D "$1" -k "$2" -p "$3" -c listen_addresses=127.0.0.1 -c fsync=off >"$2/log" 2>&1 &
pid=$!
read _ignored
kill -INT "$pid"
wait "$pid"
rm -rf "$2""#;
        let mut child = command(
            as_nobody,
            "sh",
            &["-c", script, "sh", &data, &socket, &port, &postgres],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("postgres starts");
        let log = dir.path().join("log");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(format!("127.0.0.1:{port}")).is_ok() {
                break;
            }
            let exited = child.try_wait().expect("wait");
            if exited.is_some() || Instant::now() > deadline {
                let mut text = String::new();
                let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut text));
                panic!("postgres did not start ({exited:?}):\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Pg {
            url: format!("postgres://bowline@127.0.0.1:{port}"),
            child,
            _dir: dir,
        }
    }

    /// A fresh, empty database; its URL.
    pub fn database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("test_{}", NEXT.fetch_add(1, Ordering::SeqCst));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match sql(
                &format!("{}/postgres", self.url),
                &format!("CREATE DATABASE {name}"),
            ) {
                Ok(()) => break,
                // Still starting up.
                Err(e) if Instant::now() < deadline => {
                    eprintln!("creating {name}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("creating database {name}: {e}"),
            }
        }
        format!("{}/{name}?sslmode=disable", self.url)
    }
}

/// Runs `statements` on the database at `url` with a connection of its own.
pub fn sql(url: &str, statements: &str) -> Result<(), tokio_postgres::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client.batch_execute(statements).await
    })
}

/// The cluster shared by the tests of this binary.
pub fn pg() -> &'static Pg {
    static PG: OnceLock<Pg> = OnceLock::new();
    PG.get_or_init(Pg::start)
}

/// The path of PostgreSQL's `name`: on `PATH`, else in the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn bin(name: &str) -> String {
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    let debian = || {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse().ok()?;
                Some((version, e.path().join("bin").join(name)))
            })
            .filter(|(_, p)| p.is_file())
            .collect();
        versions.sort();
        versions.pop().map(|(_, p)| p)
    };
    on_path
        .or_else(debian)
        .unwrap_or_else(|| panic!("PostgreSQL's {name} is neither on PATH nor in /usr/lib/postgresql/*/bin: install Debian's postgresql"))
        .to_str()
        .expect("utf-8 path")
        .to_string()
}

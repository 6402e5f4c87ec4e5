//! `kube-api-test-server`: runs the in-memory Kubernetes API server until interrupted, so
//! bowline and kubectl can be tried against it by hand.
//!
//! ```text
//! kube-api-test-server [--listen 127.0.0.1:PORT] [--kubeconfig-out FILE] [--context NAME]
//!                      [--controller-delay-ms MS]
//! ```

use std::process::ExitCode;
use std::time::Duration;

use kube_api_test_server::{Options, TestServer};

const USAGE: &str = "usage: kube-api-test-server [--listen 127.0.0.1:PORT] [--kubeconfig-out FILE] [--context NAME] [--controller-delay-ms MS]";

fn main() -> ExitCode {
    let mut options = Options::default();
    let mut kubeconfig_out: Option<String> = None;
    let mut context = "test".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let result = match arg.as_str() {
            "--listen" => value("--listen").and_then(|v| {
                v.parse()
                    .map(|a| options.listen = a)
                    .map_err(|e| format!("--listen {v}: {e}"))
            }),
            "--kubeconfig-out" => value("--kubeconfig-out").map(|v| kubeconfig_out = Some(v)),
            "--context" => value("--context").map(|v| context = v),
            "--controller-delay-ms" => value("--controller-delay-ms").and_then(|v| {
                v.parse()
                    .map(|ms| options.controller_delay = Duration::from_millis(ms))
                    .map_err(|e| format!("--controller-delay-ms {v}: {e}"))
            }),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument {other:?}")),
        };
        if let Err(e) = result {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let server = match TestServer::try_start_with(options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let kubeconfig = server.kubeconfig(&context);
    match &kubeconfig_out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &kubeconfig) {
                eprintln!("cannot write {path}: {e}");
                return ExitCode::FAILURE;
            }
            eprintln!("kubeconfig written to {path} (context {context})");
        }
        None => print!("{kubeconfig}"),
    }
    eprintln!("Kubernetes API test server listening on {}", server.url());
    loop {
        std::thread::park();
    }
}

//! The shared canary judge vectors (`../shared/canary-vectors`), run through
//! `bowline canary judge` by their own checker, `check.py`.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn shared_canary_vectors_match() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let vectors = root.join("../shared/canary-vectors");
    let checker = vectors.join("check.py");
    assert!(
        checker.is_file(),
        "{} is missing: the canary vectors live in ../shared beside the repository",
        checker.display()
    );
    let binary = env!("CARGO_BIN_EXE_bowline");
    let output = Command::new("python3")
        .arg(&checker)
        .arg("--cmd")
        .arg(format!("{binary} canary judge {{input}}"))
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "canary vectors failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("vectors passed"), "{stdout}");
}

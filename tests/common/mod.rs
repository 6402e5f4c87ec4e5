//! Shared helpers of the integration tests: building a repository from the base fixture plus a
//! case overlay in a fresh temporary directory, collecting the diagnostics of `bowline
//! validate` through the library, and comparing them with a case's `expected.txt`.
//!
//! Fixture layout (under `tests/fixtures/`):
//!
//! * `base/` — a minimal valid config repository.
//! * `invalid/<case>/` — files overlaying `base/` (same relative path replaces, a new path adds),
//!   an optional `_delete` file listing base paths to remove (one per line, `#` comments), and
//!   `expected.txt`: the exact diagnostics the case must produce, one per line, in the text
//!   format of `bowline validate` without its summary line. Lines starting with `#` are
//!   comments and are not compared.
//! * `invalid/<case>/known-issue.txt` (optional) — for a case where bowline does not print
//!   `expected.txt` yet: `#` lines describing the bug, then what bowline prints today (see
//!   [`check_expected`]).
//!
//! Run with `BLESS=1` to (re)write the expectations from the current output (`known-issue.txt`
//! when the case has one, else `expected.txt`); comment lines already in the file are kept at
//! its top. Review every blessed file by hand.

#![allow(dead_code)] // Each test crate uses a different subset of the helpers.

pub mod postgres;

use std::fs;
use std::path::{Path, PathBuf};

use bowline::diagnostic::{self, Diagnostic};
use bowline::source::{Limits, Snapshot};

/// Files of a case directory that are not overlaid onto the base.
const CASE_META_FILES: &[&str] = &["expected.txt", "known-issue.txt", "_delete"];

/// `tests/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// `tests/fixtures/invalid/<case>`.
pub fn case_dir(case: &str) -> PathBuf {
    fixtures_dir().join("invalid").join(case)
}

/// Names of every case directory under `tests/fixtures/invalid`, sorted.
pub fn case_names() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(fixtures_dir().join("invalid"))
        .expect("tests/fixtures/invalid exists")
        .map(|e| e.expect("readable entry"))
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().into_string().expect("UTF-8 case name"))
        .collect();
    names.sort();
    names
}

/// Copies the directory tree `from` into `to` (created if needed), skipping `skip` names at the
/// top level. Existing files are overwritten.
pub fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("readable entry");
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let src = entry.path();
        let dst = to.join(&name);
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&src, &dst, &[]);
        } else {
            fs::copy(&src, &dst)
                .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", src.display(), dst.display()));
        }
    }
}

/// A fresh temporary copy of the base repository.
pub fn base_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_tree(&fixtures_dir().join("base"), dir.path(), &[]);
    dir
}

/// A fresh temporary copy of the base repository with case `case` applied: its files overlaid
/// and the paths listed in its `_delete` removed.
pub fn case_repo(case: &str) -> tempfile::TempDir {
    let case_path = case_dir(case);
    assert!(
        case_path.is_dir(),
        "missing fixture directory {}",
        case_path.display()
    );
    let dir = base_repo();
    copy_tree(&case_path, dir.path(), CASE_META_FILES);
    if let Ok(list) = fs::read_to_string(case_path.join("_delete")) {
        for line in list.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let target = dir.path().join(line);
            assert!(
                target.exists(),
                "{case}/_delete names {line}, which the base does not have"
            );
            if target.is_dir() {
                fs::remove_dir_all(&target).expect("remove dir");
            } else {
                fs::remove_file(&target).expect("remove file");
            }
        }
    }
    dir
}

/// Everything `bowline validate` reports for the repository at `root`, sorted and deduplicated
/// exactly as the binary does.
pub fn validate_with(root: &Path, limits: &Limits) -> Vec<Diagnostic> {
    let (snapshot, mut diagnostics) =
        Snapshot::from_dir(root, limits).expect("repository directory is readable");
    let checked = bowline::check::check_snapshot(&snapshot, None, None).expect("policies load");
    diagnostics.extend(checked.diagnostics);
    diagnostic::sort_and_dedup(&mut diagnostics);
    diagnostics
}

/// [`validate_with`] with the default limits.
pub fn validate(root: &Path) -> Vec<Diagnostic> {
    validate_with(root, &Limits::default())
}

/// Diagnostics as the text lines `bowline validate` prints.
pub fn lines(diagnostics: &[Diagnostic]) -> Vec<String> {
    diagnostics.iter().map(ToString::to_string).collect()
}

fn bless_requested() -> bool {
    std::env::var_os("BLESS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The `#` comment lines and the diagnostic lines of an expectation file (empty when absent).
fn read_expectation(path: &Path) -> (Vec<String>, Vec<String>) {
    let text = fs::read_to_string(path).unwrap_or_default();
    let comments = text
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    (comments, lines)
}

fn write_expectation(path: &Path, comments: &[String], lines: &[String]) {
    let mut text = String::new();
    for line in comments.iter().chain(lines) {
        text.push_str(line);
        text.push('\n');
    }
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Compares `actual` with the case's expectations, or rewrites them under `BLESS=1`.
///
/// `expected.txt` holds what bowline must print. When bowline does not do so yet, the case also
/// has a `known-issue.txt`: `#` lines describing the bug, then what bowline prints today. The
/// test then pins today's output (so any change is noticed) and fails once the output matches
/// `expected.txt`, asking for `known-issue.txt` to be deleted. `BLESS=1` rewrites
/// `known-issue.txt` when it exists, `expected.txt` otherwise; comment lines are kept.
pub fn check_expected(case: &str, actual: &[String]) {
    let expected_path = case_dir(case).join("expected.txt");
    let issue_path = case_dir(case).join("known-issue.txt");
    let (expected_comments, expected) = read_expectation(&expected_path);
    let has_issue = issue_path.is_file();
    if bless_requested() {
        if has_issue {
            let (comments, _) = read_expectation(&issue_path);
            write_expectation(&issue_path, &comments, actual);
        } else {
            write_expectation(&expected_path, &expected_comments, actual);
        }
        return;
    }
    assert!(
        expected_path.is_file(),
        "{} is missing; run with BLESS=1 to create it, then review it",
        expected_path.display()
    );
    assert!(
        expected
            .iter()
            .any(|l| l.contains(": error: ") || l.contains(": warning: ")),
        "{} lists no diagnostic",
        expected_path.display()
    );
    if has_issue {
        let (issue_comments, today) = read_expectation(&issue_path);
        if actual == expected.as_slice() {
            panic!(
                "case {case} now gives the output of expected.txt: the known issue is fixed, delete {}",
                issue_path.display()
            );
        }
        if actual != today.as_slice() {
            panic!(
                "diagnostics of case {case} (which has a known issue) changed\n--- known-issue.txt (today's output)\n{}\n--- expected.txt (the goal)\n{}\n--- actual\n{}\n(if the issue is fixed, make expected.txt right and delete known-issue.txt; otherwise BLESS=1 updates known-issue.txt)",
                today.join("\n"),
                expected.join("\n"),
                actual.join("\n")
            );
        }
        assert!(
            !issue_comments.is_empty(),
            "{} must explain the issue in # lines",
            issue_path.display()
        );
        return;
    }
    if actual != expected.as_slice() {
        panic!(
            "diagnostics of case {case} differ from {}\n--- expected\n{}\n--- actual\n{}\n(run with BLESS=1 to accept the actual output, then review it)",
            expected_path.display(),
            expected.join("\n"),
            actual.join("\n")
        );
    }
}

/// Builds case `case`, lets `setup` change the temporary repository (for inputs that cannot
/// live in Git: huge files, symlinks, invalid UTF-8), validates it and compares the result
/// with `expected.txt`.
pub fn run_case_with(case: &str, setup: impl FnOnce(&Path)) {
    let repo = case_repo(case);
    setup(repo.path());
    let diagnostics = validate(repo.path());
    for d in &diagnostics {
        assert!(
            d.line >= 1 && d.column >= 1,
            "position must be 1-based: {d}"
        );
    }
    check_expected(case, &lines(&diagnostics));
}

/// [`run_case_with`] without a setup step.
pub fn run_case(case: &str) {
    run_case_with(case, |_| {});
}

/// Writes `contents` to `root/rel`, creating parent directories.
pub fn write_file(root: &Path, rel: &str, contents: impl AsRef<[u8]>) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent");
    }
    fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

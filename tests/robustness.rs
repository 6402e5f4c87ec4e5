//! Nasty inputs as bowline.yaml and as apps/api/app.yaml: loading, validating and rendering
//! never panic, and each input yields at least one error in that file at a position that
//! exists in it. Deterministic (a fixed-seed generator), no proptest.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use bowline::diagnostic::{Diagnostic, Severity};

/// xorshift64*: deterministic pseudo-random bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next() >> 56) as u8).collect()
    }

    /// Valid UTF-8 made of random code points (controls, combining marks, CJK, emoji, ...).
    fn unicode(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .filter_map(|_| char::from_u32((self.next() % 0x2_0000) as u32))
            .collect::<String>()
            .into_bytes()
    }

    /// Printable ASCII plus YAML punctuation, newlines and tabs: text that reaches the parser.
    fn yamlish(&mut self, len: usize) -> Vec<u8> {
        const ALPHABET: &[u8] = b"abc:- \n\t[]{}&*!|>'\"#%@`,?~0123456789";
        (0..len)
            .map(|_| ALPHABET[(self.next() % ALPHABET.len() as u64) as usize])
            .collect()
    }
}

/// The nasty inputs, by name.
fn inputs() -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..8 {
        out.push((format!("random bytes #{i}"), rng.bytes(64 + i * 97)));
    }
    for i in 0..24 {
        out.push((
            format!("random YAML-ish text #{i}"),
            rng.yamlish(16 + i * 53),
        ));
    }
    for i in 0..8 {
        out.push((
            format!("random Unicode text #{i}"),
            rng.unicode(32 + i * 41),
        ));
    }
    let deep = 100_000;
    out.push(("unclosed [ x100k".into(), "[".repeat(deep).into_bytes()));
    out.push(("unclosed { x100k".into(), "{".repeat(deep).into_bytes()));
    out.push((
        "balanced [] x5k".into(),
        format!("{}{}", "[".repeat(5_000), "]".repeat(5_000)).into_bytes(),
    ));
    out.push((
        "nested block sequences x500".into(),
        (0..500)
            .map(|i| format!("{}- \n", "  ".repeat(i)))
            .collect::<String>()
            .into_bytes(),
    ));
    out.push((
        "nested block mappings x500".into(),
        (0..500)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect::<String>()
            .into_bytes(),
    ));
    out.push((
        "huge plain scalar".into(),
        format!("apiVersion: {}\n", "v".repeat(900_000)).into_bytes(),
    ));
    out.push((
        "huge key".into(),
        format!("{}: 1\n", "k".repeat(200_000)).into_bytes(),
    ));
    out.push((
        "huge quoted scalar with escapes".into(),
        format!("kind: \"{}\"\n", "\\u00e9\\n".repeat(50_000)).into_bytes(),
    ));
    out.push((
        "tab indentation".into(),
        b"apiVersion: bowline/v1\nkind: Repository\nmetadata:\n\tname: x\n".to_vec(),
    ));
    out.push((
        "tab after a key".into(),
        b"apiVersion:\tbowline/v1\nkind:\tRepository\n\t\n".to_vec(),
    ));
    out.push((
        "byte order mark then a sequence".into(),
        "\u{feff}- a\n- b\n".as_bytes().to_vec(),
    ));
    out.push((
        "byte order mark in the middle".into(),
        "apiVersion: bowline/v1\n\u{feff}kind: Repository\n"
            .as_bytes()
            .to_vec(),
    ));
    out.push((
        "!!binary name".into(),
        b"apiVersion: bowline/v1\nkind: Repository\nmetadata:\n  name: !!binary aGVsbG8=\n"
            .to_vec(),
    ));
    out.push(("!!binary document".into(), b"!!binary aGVsbG8=\n".to_vec()));
    out.push((
        "unknown tag".into(),
        b"apiVersion: !shout bowline/v1\nkind: !!python/object:os.system Repository\n".to_vec(),
    ));
    out.push((
        "integer keys".into(),
        b"1: a\n2: b\nspec:\n  3: c\n  environments:\n    4: {}\n".to_vec(),
    ));
    out.push((
        "mixed integer and string keys that collide".into(),
        b"apiVersion: bowline/v1\n1: a\n\"1\": b\n".to_vec(),
    ));
    out.push((
        "complex key".into(),
        b"? [a, b]\n: 1\napiVersion: bowline/v1\n".to_vec(),
    ));
    out.push((
        "merge key from an unknown anchor".into(),
        b"base: &b {a: 1}\nother:\n  <<: *nope\n".to_vec(),
    ));
    out.push(("self-referencing alias".into(), b"a: &a [*a]\n".to_vec()));
    out.push((
        "non-finite numbers".into(),
        b"apiVersion: .nan\nkind: .inf\nmetadata: -.inf\n".to_vec(),
    ));
    out.push((
        "integer beyond 64 bits".into(),
        b"apiVersion: bowline/v1\nkind: Repository\nmetadata:\n  name: 123456789012345678901234567890\n"
            .to_vec(),
    ));
    out.push(("NUL byte".into(), b"apiVersion: bow\0line/v1\n".to_vec()));
    out.push((
        "C1 control characters".into(),
        "apiVersion: bow\u{85}line\u{9f}\n".as_bytes().to_vec(),
    ));
    out.push(("only a document end marker".into(), b"...\n".to_vec()));
    out.push(("only document markers".into(), b"---\n---\n...\n".to_vec()));
    out.push(("only a comment".into(), b"# nothing\n".to_vec()));
    out.push(("empty file".into(), Vec::new()));
    out.push(("null document".into(), b"~\n".to_vec()));
    out.push((
        "directives only".into(),
        b"%YAML 1.2\n%TAG ! tag:example.com,2000:\n---\n".to_vec(),
    ));
    out.push((
        "multibyte text before an error".into(),
        "metadata:\n  name: \"日本語のアプリ\" [\n"
            .as_bytes()
            .to_vec(),
    ));
    out.push((
        "CRLF line ends with an error".into(),
        b"apiVersion: bowline/v1\r\nkind: [Repository\r\n".to_vec(),
    ));
    out.push((
        "lone CR line ends".into(),
        b"apiVersion: bowline/v1\rkind: Repository\rmetadata: 1\r".to_vec(),
    ));
    out.push((
        "very long line of flow items".into(),
        format!("spec: [{}]\n", "x, ".repeat(100_000)).into_bytes(),
    ));
    out.push((
        "many documents".into(),
        "---\na: 1\n".repeat(5_000).into_bytes(),
    ));
    out
}

/// A position exists in `text` when its line is a line of the text and its column is within
/// that line (+1, where end-of-line errors point). Lines are counted as YAML does (a lone CR
/// breaks a line) or, for the UTF-8 check of the snapshot, at LF only.
fn position_exists(text: &str, d: &Diagnostic) -> bool {
    if d.line == 1 && d.column == 1 {
        return true;
    }
    let fits = |lines: Vec<&str>| {
        lines
            .get(d.line - 1)
            .is_some_and(|line| d.column <= line.chars().count() + 1)
    };
    fits(yaml_lines(text)) || fits(text.split('\n').collect())
}

/// Lines as YAML counts them: broken at CR LF, LF or a lone CR.
fn yaml_lines(text: &str) -> Vec<&str> {
    text.split("\r\n")
        .flat_map(|part| part.split(['\n', '\r']))
        .collect()
}

/// Inputs whose diagnostics are known to break the one-line, bounded message format, with the
/// reason. The test fails when one of them stops doing so (remove it from the list then).
/// Inputs whose diagnostics are known to break the one-line, bounded message rule, with the
/// reason. Empty: every message is short and on one line.
const KNOWN_MESSAGE_ISSUES: &[(&str, &str)] = &[];

/// Longest message accepted in one diagnostic line.
const MAX_LINE: usize = 2_000;

fn message_problem(d: &Diagnostic) -> Option<String> {
    let text = d.to_string();
    if text.contains(['\n', '\r']) {
        Some(format!("diagnostic spans several lines: {text:.200}"))
    } else if text.len() > MAX_LINE {
        Some(format!("diagnostic of {} bytes: {text:.200}", text.len()))
    } else {
        None
    }
}

fn check_input(file: &str, name: &str, bytes: &[u8]) -> Result<(), String> {
    let repo = common::base_repo();
    common::write_file(repo.path(), file, bytes);
    let diagnostics = catch_unwind(AssertUnwindSafe(|| common::validate(repo.path())))
        .map_err(|_| format!("{file} <- {name}: panicked"))?;
    let in_file: Vec<&Diagnostic> = diagnostics
        .iter()
        .filter(|d| d.file == file && d.severity == Severity::Error)
        .collect();
    if in_file.is_empty() {
        return Err(format!(
            "{file} <- {name}: no error in {file}; got {:#?}",
            common::lines(&diagnostics)
        ));
    }
    let known_issue = KNOWN_MESSAGE_ISSUES.iter().any(|(n, _)| *n == name);
    let message_problems: Vec<String> = diagnostics.iter().filter_map(message_problem).collect();
    match (known_issue, message_problems.first()) {
        (false, Some(problem)) => return Err(format!("{file} <- {name}: {problem}")),
        (true, None) => {
            return Err(format!(
                "{file} <- {name}: the known message issue is fixed; remove it from KNOWN_MESSAGE_ISSUES"
            ));
        }
        _ => {}
    }
    let text = String::from_utf8_lossy(bytes);
    for d in &diagnostics {
        if d.line == 0 || d.column == 0 {
            return Err(format!("{file} <- {name}: position not 1-based: {d}"));
        }
        if d.file == file && !position_exists(&text, d) {
            return Err(format!(
                "{file} <- {name}: position outside the file ({} lines): {d}",
                yaml_lines(&text).len()
            ));
        }
    }
    Ok(())
}

fn check_all(file: &str) {
    let failures: Vec<String> = inputs()
        .iter()
        .filter_map(|(name, bytes)| check_input(file, name, bytes).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} nasty inputs misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn nasty_repository_files_never_panic_and_are_reported() {
    check_all("bowline.yaml");
}

#[test]
fn nasty_application_files_never_panic_and_are_reported() {
    check_all("apps/api/app.yaml");
}

/// Hostile inputs through the real `bowline` binary: each is refused with an error naming
/// its file, a non-zero exit, and within bounded time and memory (generous bounds: the
/// figures are measured by `scripts/bench-limits.sh`).
#[cfg(target_os = "linux")]
mod bounded {
    use super::common;

    use std::path::Path;
    use std::time::{Duration, Instant};

    /// What one run of the binary gave.
    struct Run {
        code: Option<i32>,
        stdout: String,
        /// Peak resident size of the process or of any of its children, in KiB.
        max_rss_kib: i64,
        elapsed: Duration,
    }

    /// Runs `bowline <args> <repo>` and measures it with `wait4`, whose usage covers the
    /// process and the children it waited for (the policy worker).
    // The child is reaped by wait4, which std does not know about.
    #[allow(clippy::zombie_processes)]
    fn run(args: &[&str], repo: &Path) -> Run {
        let out = tempfile::tempfile().expect("temp file");
        let started = Instant::now();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_bowline"))
            .args(args)
            .arg(repo)
            .env_remove("BOWLINE_LOG_LEVEL")
            .env_remove("RUST_LOG")
            .env_remove("BOWLINE_POLICY_MEMORY_LIMIT")
            .env_remove("BOWLINE_POLICY_TIME_LIMIT")
            .env_remove("KUBECONFIG")
            .env_remove("BOWLINE_KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("HOME", env!("CARGO_TARGET_TMPDIR"))
            .stdout(out.try_clone().expect("clone"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the bowline binary runs");
        let pid = i32::try_from(child.id()).expect("pid");
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child, writing into the two locals.
        let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        assert_eq!(waited, pid, "wait4");
        let elapsed = started.elapsed();
        let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        let mut out = out;
        use std::io::{Read, Seek};
        out.rewind().expect("rewind");
        let mut stdout = String::new();
        out.read_to_string(&mut stdout).expect("stdout");
        Run {
            code,
            stdout,
            max_rss_kib: usage.ru_maxrss,
            elapsed,
        }
    }

    fn assert_refused(run: &Run, expected: &[&str]) {
        assert_eq!(run.code, Some(1), "{}", run.stdout);
        let hit = run
            .stdout
            .lines()
            .any(|line| expected.iter().all(|e| line.contains(e)));
        assert!(hit, "no line with {expected:?} in:\n{}", run.stdout);
        assert!(run.elapsed < Duration::from_secs(20), "{:?}", run.elapsed);
    }

    const RANGE_POLICY: &str = "package bowline.policies.boom\n\ndeny contains msg if {\n  count(numbers.range(1, 60000000)) > 0\n  msg := \"never\"\n}\n";
    const SERVICE_POLICY: &str = "package bowline.policies.services\n\nwarn contains msg if {\n  input.object.kind == \"Service\"\n  msg := \"a service\"\n}\n";

    #[test]
    fn a_policy_allocating_without_bound_stops_at_the_memory_limit() {
        let repo = common::base_repo();
        common::write_file(repo.path(), "policies/boom.rego", RANGE_POLICY);
        common::write_file(repo.path(), "policies/services.rego", SERVICE_POLICY);
        for command in ["validate", "plan"] {
            let run = run(&[command], repo.path());
            assert_refused(
                &run,
                &[
                    "policies/boom.rego:1:1: error:",
                    "exceeded the memory limit of 256 MiB",
                    "not applied",
                ],
            );
            // The other repository policy still runs.
            assert!(run.stdout.contains("services: Service"), "{}", run.stdout);
            // The worker allocates at most its limit; the evaluation asked for 1.4 GB.
            assert!(run.max_rss_kib < 600 * 1024, "{} KiB", run.max_rss_kib);
        }
        // A smaller limit is taken from the flag.
        let run = run(&["validate", "--policy-memory-limit", "64"], repo.path());
        assert_refused(&run, &["policies/boom.rego", "memory limit of 64 MiB"]);
    }

    #[test]
    fn a_policy_running_long_inside_a_builtin_stops_at_the_time_limit() {
        let repo = common::base_repo();
        common::write_file(
            repo.path(),
            "policies/slow.rego",
            "package bowline.policies.slow\n\ndeny contains msg if {\n  count(sort(numbers.range(1, 4000000))) < 0\n  msg := \"never\"\n}\n",
        );
        let run = run(
            &[
                "validate",
                "--policy-time-limit",
                "100ms",
                "--policy-memory-limit",
                "2048",
            ],
            repo.path(),
        );
        assert_refused(
            &run,
            &[
                "policies/slow.rego:1:1: error:",
                "exceeded the time limit of 100ms",
            ],
        );
    }

    #[test]
    fn a_policy_nesting_brackets_deeply_is_refused_before_parsing() {
        let repo = common::base_repo();
        common::write_file(
            repo.path(),
            "policies/deep.rego",
            format!(
                "package bowline.policies.deep\n\ndeny contains msg if {{\n  x := {}{}\n  msg := \"x\"\n}}\n",
                "[".repeat(900),
                "]".repeat(900)
            ),
        );
        let run = run(&["validate"], repo.path());
        assert_refused(
            &run,
            &["policies/deep.rego:4:19: error:", "deeper than 12 levels"],
        );
    }

    #[test]
    fn deep_nesting_is_refused_fast_in_every_kind_of_file() {
        let brackets = "[".repeat(200_000);
        let braces = "{".repeat(200_000);
        let sequences = "- ".repeat(100_000);
        let mappings: String = (0..600)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        for file in [
            "bowline.yaml",
            "apps/api/app.yaml",
            "apps/api/manifests/deep.yaml",
        ] {
            for text in [&brackets, &braces, &sequences, &mappings] {
                let repo = common::base_repo();
                common::write_file(repo.path(), file, text);
                let run = run(&["validate"], repo.path());
                // In a manifest, `{{` opens a template expression: MiniJinja's own nesting
                // limit refuses it before any YAML is parsed.
                let expected = if file.ends_with("deep.yaml") && text.starts_with('{') {
                    "template exceeds maximum recursion limits"
                } else {
                    "deeper than the limit of 128 levels"
                };
                assert_refused(&run, &[&format!("{file}:"), expected]);
            }
        }
    }

    #[test]
    fn manifest_output_beyond_its_cap_is_refused() {
        let repo = common::base_repo();
        common::write_file(
            repo.path(),
            "apps/api/manifests/big.yaml",
            "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
        );
        common::write_file(
            repo.path(),
            "apps/api/manifests/huge.yaml",
            "a: {{ 'x' * 100000000 }}",
        );
        let run = run(&["validate"], repo.path());
        for file in ["big.yaml", "huge.yaml"] {
            assert_refused(
                &run,
                &[
                    &format!("apps/api/manifests/{file}:1:1: error:"),
                    "rendered output exceeds the limit of 8 MiB",
                ],
            );
        }
        assert!(run.max_rss_kib < 1024 * 1024, "{} KiB", run.max_rss_kib);
    }
}

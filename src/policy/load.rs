//! Loading the repository's policies (`policies/*.rego` of the config repository) on top of
//! the built-in ones. A file that does not parse or compile is reported with its file and
//! line and left out; the other policies still run.

use crate::diagnostic::Diagnostic;
use crate::source::Snapshot;

use super::{PolicyError, PolicySet, PolicySource};

/// Directory of repository policies.
pub const POLICY_DIR: &str = "policies/";

/// The built-in policies plus the repository policies of `snapshot`, with a diagnostic for
/// every repository policy that could not be loaded. `policies/*_test.rego` (Rego unit tests)
/// are skipped; `.rego` files in subdirectories are ignored with a warning.
#[tracing::instrument(level = "debug", skip_all)]
pub fn from_snapshot(snapshot: &Snapshot) -> Result<(PolicySet, Vec<Diagnostic>), PolicyError> {
    let mut sources = Vec::new();
    let mut diagnostics = Vec::new();
    for (path, text) in snapshot.files_under(POLICY_DIR) {
        if !path.ends_with(".rego") {
            continue;
        }
        if path[POLICY_DIR.len()..].contains('/') {
            diagnostics.push(
                Diagnostic::file_error(
                    path,
                    "file is ignored: repository policies are policies/*.rego, not subdirectories",
                )
                .into_warning(),
            );
            continue;
        }
        if path.ends_with("_test.rego") {
            continue;
        }
        sources.push(PolicySource {
            file: path.to_string(),
            text: text.to_string(),
        });
    }
    let (set, problems) = with_repository(&sources)?;
    diagnostics.extend(problems);
    Ok((set, diagnostics))
}

/// The built-in policies plus `sources`, each source that fails to parse or compile reported
/// as an error at the file and line the Rego compiler names.
pub fn with_repository(
    sources: &[PolicySource],
) -> Result<(PolicySet, Vec<Diagnostic>), PolicyError> {
    let mut set = PolicySet::builtin()?;
    let mut diagnostics = Vec::new();
    for source in sources {
        if let Some(line) = network_call(&source.text) {
            diagnostics.push(Diagnostic::error(
                &source.file,
                line,
                1,
                "",
                "invalid Rego policy: http.send is not available: policies have no network access",
            ));
            continue;
        }
        if let Some((line, column)) = too_deep(&source.text) {
            diagnostics.push(Diagnostic::error(
                &source.file,
                line,
                column,
                "",
                format!(
                    "invalid Rego policy: brackets and braces nest deeper than {MAX_NESTING} \
                     levels (the Rego parser's time doubles with each level)"
                ),
            ));
            continue;
        }
        let mut trial = set.clone();
        let outcome = trial.add(source, false).and_then(|()| trial.prepare());
        match outcome {
            Ok(()) => {
                set = trial;
                set.repository_sources.push(source.clone());
            }
            Err((file, line, message)) => {
                // Compile errors may point into another module; they still concern this one.
                let file = file
                    .filter(|f| !f.starts_with(super::builtin::BUILTIN_PREFIX))
                    .unwrap_or_else(|| source.file.clone());
                let line = if file == source.file { line } else { 1 };
                diagnostics.push(Diagnostic::error(
                    file,
                    line,
                    1,
                    "",
                    format!("invalid Rego policy: {message}"),
                ));
            }
        }
    }
    for policy in set.policies.iter().filter(|p| !p.builtin) {
        if policy.severities.is_empty() {
            diagnostics.push(
                Diagnostic::file_error(
                    &policy.file,
                    format!(
                        "policy {:?} ({}) defines neither deny nor warn, so it checks nothing",
                        policy.id,
                        policy
                            .package
                            .strip_prefix("data.")
                            .unwrap_or(&policy.package)
                    ),
                )
                .into_warning(),
            );
        }
    }
    set.combine_repository();
    Ok((set, diagnostics))
}

/// Deepest nesting of `[` and `{` (rule bodies included) a repository policy may have:
/// regorus's parser tries a comprehension before a plain array, set or object at each
/// level, so its time doubles with every level (a 1.8 KB file nesting 900 levels ran for
/// hours). Real policies stay far below.
pub const MAX_NESTING: usize = 12;

/// The line and column where `[` and `{` outside strings and comments first nest deeper than
/// [`MAX_NESTING`]; one pass over the text.
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    let mut line = 1;
    let mut column = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        column += 1;
        match c {
            '\n' => {
                line += 1;
                column = 0;
            }
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '"' | '`' => {
                // A string (escapes only in "..."), which may not span lines but is skipped
                // to its end whatever it holds.
                while let Some(s) = chars.next() {
                    column += 1;
                    match s {
                        '\\' if c == '"' => {
                            chars.next();
                            column += 1;
                        }
                        '\n' => {
                            line += 1;
                            column = 0;
                        }
                        s if s == c => break,
                        _ => {}
                    }
                }
            }
            '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some((line, column));
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The first line calling `http.send` outside a comment. The function does not exist in
/// bowline's Rego, so such a policy would fail on every object; refusing it at load time says
/// why.
fn network_call(text: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let code = line.split('#').next().unwrap_or("");
            code.contains("http.send")
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_beyond_the_limit_is_found_outside_strings_and_comments() {
        let body = |inner: &str| {
            format!("package p\n\ndeny contains m if {{\n  x := {inner}\n  m := \"x\"\n}}\n")
        };
        let deep = body(&format!("{}{}", "[".repeat(900), "]".repeat(900)));
        // The rule body is the first level; "  x := " takes 7 columns.
        assert_eq!(too_deep(&deep), Some((4, 7 + MAX_NESTING)));
        let within = body(&format!("{}1{}", "{\"a\": ".repeat(8), "}".repeat(8)));
        assert_eq!(too_deep(&within), None);
        let quoted = body(&format!(
            "\"{}\\\"\" # {}\n  y := `{}`",
            "[".repeat(50),
            "{".repeat(50),
            "[".repeat(50)
        ));
        assert_eq!(too_deep(&quoted), None, "{quoted}");
    }

    #[test]
    fn a_deeply_nested_policy_is_refused_at_once() {
        let text = format!(
            "package bowline.policies.deep\n\ndeny contains m if {{\n  x := {}{}\n  m := \"x\"\n}}\n",
            "[".repeat(900),
            "]".repeat(900)
        );
        let started = std::time::Instant::now();
        let (set, diagnostics) = with_repository(&[PolicySource {
            file: "policies/deep.rego".to_string(),
            text,
        }])
        .expect("built-in policies load");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(set.policy("deep").is_none());
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert_eq!(diagnostics[0].file, "policies/deep.rego");
        assert!(
            diagnostics[0].message.contains("deeper than 12 levels"),
            "{diagnostics:?}"
        );
    }
}

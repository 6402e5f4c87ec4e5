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

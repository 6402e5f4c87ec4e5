//! Problems found in a config repository, each pinned to a file, a position and a field.
//!
//! Every step that reads user input (source, config, render) reports through this one type so
//! that `bowline validate` can print all problems of a repository in one run, sorted, as text
//! or JSON.

use std::fmt;

use serde::Serialize;

/// How bad a problem is: errors fail validation, warnings are reported only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The repository cannot be used as it is.
    Error,
    /// Probably a mistake, but bowline can go on.
    Warning,
}

/// One problem in the config repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Path relative to the repository root, with `/` separators.
    pub file: String,
    /// 1-based line; 1 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted field path such as `spec.stages[2].dependsOn[0]`; empty for the whole file.
    pub field: String,
    /// What is wrong, in plain words.
    pub message: String,
}

impl Diagnostic {
    /// An error about a whole file (line 1, column 1, no field).
    pub fn file_error(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self::error(file, 1, 1, "", message)
    }

    /// An error at a position.
    pub fn error(
        file: impl Into<String>,
        line: usize,
        column: usize,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.into(),
            line: line.max(1),
            column: column.max(1),
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same problem reported as a warning.
    pub fn into_warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    fn sort_key(&self) -> (&str, usize, usize, Severity, &str, &str) {
        (
            &self.file,
            self.line,
            self.column,
            self.severity,
            &self.field,
            &self.message,
        )
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {severity}: ",
            self.file, self.line, self.column
        )?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Sorts diagnostics by file, position and text, and drops exact duplicates, so output is stable.
pub fn sort_and_dedup(diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    diagnostics.dedup();
}

/// Number of errors (not warnings) in a list.
pub fn error_count(diagnostics: &[Diagnostic]) -> usize {
    diagnostics.iter().filter(|d| d.is_error()).count()
}

/// `1 error`, `2 errors`: a count with its noun, for summaries.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Converts a JSON pointer (`/spec/stages/2/name`) into the dotted form users read
/// (`spec.stages[2].name`).
pub fn pointer_to_field(pointer: &str) -> String {
    let mut out = String::new();
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(&segment);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            let plain = !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if plain {
                out.push_str(&segment);
            } else {
                out.push_str(&format!("{segment:?}"));
            }
        }
    }
    out
}

/// Appends one segment to a JSON pointer, escaping `~` and `/`.
pub fn pointer_join(pointer: &str, segment: &str) -> String {
    let escaped = segment.replace('~', "~0").replace('/', "~1");
    format!("{pointer}/{escaped}")
}

/// "did you mean" hint: the closest candidate within a small edit distance.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d > 0)
        .min()
        .map(|(_, c)| c)
}

/// Formats the optional hint of [`suggest`] as ` (did you mean "x"?)`.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    suggest(word, candidates)
        .map(|s| format!(" (did you mean \"{s}\"?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_becomes_dotted_field() {
        assert_eq!(
            pointer_to_field("/spec/stages/2/dependsOn/0"),
            "spec.stages[2].dependsOn[0]"
        );
        assert_eq!(
            pointer_to_field("/metadata/labels/app.kubernetes.io~1name"),
            "metadata.labels.\"app.kubernetes.io/name\""
        );
        assert_eq!(pointer_to_field(""), "");
    }

    #[test]
    fn suggestions_are_close_only() {
        assert_eq!(
            suggest("stagin", ["staging", "production"]),
            Some("staging")
        );
        assert_eq!(suggest("qa", ["staging", "production"]), None);
    }

    #[test]
    fn display_has_position_field_and_message() {
        let d = Diagnostic::error("apps/a/app.yaml", 3, 5, "spec.image", "bad");
        assert_eq!(d.to_string(), "apps/a/app.yaml:3:5: error: spec.image: bad");
    }
}

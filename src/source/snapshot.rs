//! An immutable, size-limited, UTF-8 copy of the files of a config repository.
//!
//! The config repository is untrusted input: reading it here enforces the limits (file size,
//! file count, total size), refuses symlinks that leave the repository, and rejects files that
//! are not UTF-8 — each as a [`Diagnostic`], so one run reports them all. Everything after this
//! step works on the snapshot and does no file I/O.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use crate::diagnostic::Diagnostic;

/// Top-level entries of a config repository that bowline reads.
pub(crate) const READ_DIRS: &[&str] = &["apps", "pipelines", "canary", "policies"];
/// The root document.
pub const ROOT_FILE: &str = "bowline.yaml";
/// File endings bowline reads inside [`READ_DIRS`] (any case); other files (README.md, ...)
/// are ignored, except under an app's `manifests/`, where every file is read.
const READ_EXTENSIONS: &[&str] = &["yaml", "yml", "rego"];

/// Whether a file at `path` (inside one of [`READ_DIRS`]) is read into a snapshot. Every file
/// under `apps/<app>/manifests/` is, so none is skipped without a word: what is not a manifest
/// is reported when the repository is loaded.
pub(crate) fn is_read(path: &str) -> bool {
    let mut parts = path.split('/');
    if parts.next() == Some("apps") && parts.next().is_some() && parts.next() == Some("manifests") {
        return true;
    }
    path.rsplit_once('.').is_some_and(|(_, ext)| {
        READ_EXTENSIONS
            .iter()
            .any(|wanted| ext.eq_ignore_ascii_case(wanted))
    })
}
/// Deepest directory nesting followed, a guard against symlink loops.
const MAX_DEPTH: usize = 16;

/// Limits applied while reading a repository.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest file read, in bytes.
    pub max_file_bytes: u64,
    /// Most files read.
    pub max_files: usize,
    /// Most bytes read in all.
    pub max_total_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 1024 * 1024,
            max_files: 50_000,
            max_total_bytes: 512 * 1024 * 1024,
        }
    }
}

/// A failure that prevents reading the repository at all (as opposed to a problem in a file).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The path given is not a readable directory.
    #[error("cannot read config repository {path}: {source}")]
    Root {
        /// The path as given.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The path exists but is not a directory.
    #[error("config repository {0} is not a directory")]
    NotADirectory(PathBuf),
}

/// The files of a config repository at one point in time, keyed by relative path (`/`-separated).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    files: BTreeMap<String, Arc<str>>,
    /// Files that exist but were not read (too large, not UTF-8, symlink leaving the repo...),
    /// so later steps do not also report them as missing.
    refused: BTreeSet<String>,
}

impl Snapshot {
    /// Builds a snapshot from in-memory files (tests, Git trees).
    pub fn from_files<I, P, C>(files: I) -> Self
    where
        I: IntoIterator<Item = (P, C)>,
        P: Into<String>,
        C: Into<Arc<str>>,
    {
        Snapshot {
            files: files
                .into_iter()
                .map(|(p, c)| (p.into(), c.into()))
                .collect(),
            refused: BTreeSet::new(),
        }
    }

    /// Builds a snapshot from files already read and the paths refused while reading.
    pub(crate) fn from_parts(files: BTreeMap<String, Arc<str>>, refused: BTreeSet<String>) -> Self {
        Snapshot { files, refused }
    }

    /// Reads the config repository at `root`, applying `limits`. Problems with single files are
    /// returned as diagnostics next to the snapshot of the files that could be read.
    #[tracing::instrument(level = "debug", skip(limits), fields(root = %root.display()))]
    pub fn from_dir(root: &Path, limits: &Limits) -> Result<(Self, Vec<Diagnostic>), SourceError> {
        let meta = fs::metadata(root).map_err(|source| SourceError::Root {
            path: root.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(SourceError::NotADirectory(root.to_path_buf()));
        }
        let canonical_root = fs::canonicalize(root).map_err(|source| SourceError::Root {
            path: root.to_path_buf(),
            source,
        })?;
        let mut reader = Reader {
            root: canonical_root,
            limits: *limits,
            files: BTreeMap::new(),
            pending: Vec::new(),
            refused: BTreeSet::new(),
            diagnostics: Vec::new(),
            total_bytes: 0,
            visited_dirs: HashSet::new(),
            truncated: false,
        };
        reader.visit_entry(&root.join(ROOT_FILE), ROOT_FILE.to_string(), 0, true);
        for dir in READ_DIRS {
            let path = root.join(dir);
            if fs::symlink_metadata(&path).is_ok() {
                reader.visit_entry(&path, (*dir).to_string(), 0, false);
            }
        }
        reader.read_pending();
        tracing::debug!(
            files = reader.files.len(),
            bytes = reader.total_bytes,
            "snapshot read"
        );
        Ok((
            Snapshot {
                files: reader.files,
                refused: reader.refused,
            },
            reader.diagnostics,
        ))
    }

    /// The text of one file.
    pub fn get(&self, path: &str) -> Option<&Arc<str>> {
        self.files.get(path)
    }

    /// True when `path` exists in the repository but was refused (and reported) while reading.
    pub fn was_refused(&self, path: &str) -> bool {
        self.refused.contains(path)
    }

    /// Paths that exist but were refused while reading, sorted.
    pub fn refused(&self) -> impl Iterator<Item = &str> {
        self.refused.iter().map(String::as_str)
    }

    /// Refused paths that start with `prefix`, sorted.
    pub fn refused_under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.refused
            .range(prefix.to_string()..)
            .take_while(move |p| p.starts_with(prefix))
            .map(String::as_str)
    }

    /// All files, sorted by path.
    pub fn files(&self) -> impl Iterator<Item = (&str, &Arc<str>)> {
        self.files.iter().map(|(p, c)| (p.as_str(), c))
    }

    /// Files whose path starts with `prefix`, sorted by path.
    pub fn files_under<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Arc<str>)> + 'a {
        self.files
            .range(prefix.to_string()..)
            .take_while(move |(p, _)| p.starts_with(prefix))
            .map(|(p, c)| (p.as_str(), c))
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when no file was read.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// This snapshot with its platform files (see [`is_platform_path`]) replaced by those of
    /// `base`, and the platform paths whose content differs between the two (added, removed or
    /// changed), sorted. A pull request is planned on such a snapshot, so the settings its own
    /// plan runs under are never the ones it proposes.
    pub fn with_platform_of(&self, base: &Snapshot) -> (Snapshot, Vec<String>) {
        let mut changed: BTreeSet<String> = BTreeSet::new();
        for (path, text) in self.files().filter(|(p, _)| is_platform_path(p)) {
            if base.get(path) != Some(text) {
                changed.insert(path.to_string());
            }
        }
        for (path, text) in base.files().filter(|(p, _)| is_platform_path(p)) {
            if self.get(path) != Some(text) {
                changed.insert(path.to_string());
            }
        }
        for path in self.refused().chain(base.refused()) {
            if is_platform_path(path) && self.was_refused(path) != base.was_refused(path) {
                changed.insert(path.to_string());
            }
        }
        let files = self
            .files
            .iter()
            .filter(|(p, _)| !is_platform_path(p))
            .chain(base.files.iter().filter(|(p, _)| is_platform_path(p)))
            .map(|(p, c)| (p.clone(), c.clone()))
            .collect();
        let refused = self
            .refused
            .iter()
            .filter(|p| !is_platform_path(p))
            .chain(base.refused.iter().filter(|p| is_platform_path(p)))
            .cloned()
            .collect();
        (Snapshot { files, refused }, changed.into_iter().collect())
    }
}

/// Whether `path` holds platform settings: `bowline.yaml` (environments, clusters, contexts,
/// destinations, forge settings) or a repository policy under `policies/`. The platform team
/// owns them; a change to them is reviewed as such and never used to plan itself.
pub fn is_platform_path(path: &str) -> bool {
    path == ROOT_FILE || path.starts_with("policies/")
}

struct Reader {
    root: PathBuf,
    limits: Limits,
    files: BTreeMap<String, Arc<str>>,
    /// Files found by the walk, read afterwards in parallel.
    pending: Vec<(PathBuf, String)>,
    refused: BTreeSet<String>,
    diagnostics: Vec<Diagnostic>,
    total_bytes: u64,
    visited_dirs: HashSet<PathBuf>,
    truncated: bool,
}

impl Reader {
    /// Records a path that exists but is not read, with the reason.
    fn refuse(&mut self, diagnostic: Diagnostic) {
        self.refused.insert(diagnostic.file.clone());
        self.diagnostics.push(diagnostic);
    }

    fn visit_entry(&mut self, path: &Path, rel: String, depth: usize, required: bool) {
        let link_meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if required {
                    self.diagnostics.push(Diagnostic::file_error(
                        rel,
                        "missing: a config repository has a bowline.yaml (kind: Repository) at its root",
                    ));
                }
                return;
            }
            Err(e) => {
                self.diagnostics
                    .push(Diagnostic::file_error(rel, format!("cannot read: {e}")));
                return;
            }
        };
        let is_link = link_meta.file_type().is_symlink();
        let (target, meta) = if is_link {
            match fs::canonicalize(path) {
                Ok(target) if target.starts_with(&self.root) => match fs::metadata(&target) {
                    Ok(m) => (target, m),
                    Err(e) => {
                        self.diagnostics
                            .push(Diagnostic::file_error(rel, format!("cannot read: {e}")));
                        return;
                    }
                },
                Ok(_) => {
                    self.refuse(Diagnostic::file_error(
                        rel,
                        "symlink points outside the repository; bowline only follows links that stay inside it",
                    ));
                    return;
                }
                Err(_) => {
                    self.refuse(Diagnostic::file_error(
                        rel,
                        "broken symlink: its target does not exist",
                    ));
                    return;
                }
            }
        } else {
            (path.to_path_buf(), link_meta)
        };

        if meta.is_dir() && required {
            self.refuse(Diagnostic::file_error(
                rel,
                "is a directory; expected the Repository document (kind: Repository)",
            ));
        } else if meta.is_dir() {
            self.visit_dir(&target, &rel, depth, is_link);
        } else if meta.is_file() {
            let wanted = required || is_read(&rel);
            if wanted {
                self.read_file(&target, rel, meta.len());
            }
        }
    }

    /// `dir` is canonical when `via_link`; only directories reached through a symlink can
    /// form a loop, so only those are remembered.
    fn visit_dir(&mut self, dir: &Path, rel: &str, depth: usize, via_link: bool) {
        if depth >= MAX_DEPTH {
            self.refuse(Diagnostic::file_error(
                rel,
                format!("directories nested deeper than {MAX_DEPTH} levels are not read"),
            ));
            return;
        }
        if via_link && !self.visited_dirs.insert(dir.to_path_buf()) {
            return;
        }
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                self.refuse(Diagnostic::file_error(
                    rel,
                    format!("cannot read directory: {e}"),
                ));
                return;
            }
        };
        let mut names: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for name in names {
            let Some(name_str) = name.to_str() else {
                self.refuse(Diagnostic::file_error(
                    format!("{rel}/{}", name.to_string_lossy()),
                    "file name is not valid UTF-8",
                ));
                continue;
            };
            if name_str.starts_with('.') {
                continue;
            }
            let child_rel = format!("{rel}/{name_str}");
            self.visit_entry(&dir.join(&name), child_rel, depth + 1, false);
        }
    }

    fn read_file(&mut self, path: &Path, rel: String, len: u64) {
        if len > self.limits.max_file_bytes {
            self.refuse(Diagnostic::file_error(
                rel,
                format!(
                    "file is {len} bytes, over the limit of {} bytes",
                    self.limits.max_file_bytes
                ),
            ));
            return;
        }
        if self.pending.len() >= self.limits.max_files
            || self.total_bytes + len > self.limits.max_total_bytes
        {
            if !self.truncated {
                self.truncated = true;
                self.refuse(Diagnostic::file_error(
                    rel,
                    format!(
                        "repository exceeds the limit of {} files or {} bytes; this file and the ones after it are not read",
                        self.limits.max_files, self.limits.max_total_bytes
                    ),
                ));
            }
            return;
        }
        self.total_bytes += len;
        self.pending.push((path.to_path_buf(), rel));
    }

    /// Reads the queued files in parallel, in path order.
    fn read_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let results: Vec<(String, Result<Arc<str>, Diagnostic>)> = pending
            .into_par_iter()
            .map(|(path, rel)| {
                let result = read_text(&path, &rel);
                (rel, result)
            })
            .collect();
        for (rel, result) in results {
            match result {
                Ok(text) => {
                    self.files.insert(rel, text);
                }
                Err(diagnostic) => self.refuse(diagnostic),
            }
        }
    }
}

/// Reads one file as UTF-8 text (without a byte order mark, which YAML allows but the parser
/// does not skip).
fn read_text(path: &Path, rel: &str) -> Result<Arc<str>, Diagnostic> {
    let bytes =
        fs::read(path).map_err(|e| Diagnostic::file_error(rel, format!("cannot read: {e}")))?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Arc::from(text.strip_prefix('\u{feff}').unwrap_or(&text))),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let (line, column) = line_col(&e.as_bytes()[..valid]);
            Err(Diagnostic::error(
                rel,
                line,
                column,
                "",
                format!("not valid UTF-8 (byte offset {valid}); config files must be UTF-8 text"),
            ))
        }
    }
}

/// 1-based line and column of the end of `prefix`.
fn line_col(prefix: &[u8]) -> (usize, usize) {
    let line = prefix.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = prefix
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&prefix[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col(b""), (1, 1));
        assert_eq!(line_col(b"ab\ncd"), (2, 3));
    }

    #[test]
    fn files_under_is_prefix_bounded() {
        let s = Snapshot::from_files([
            ("apps/a/app.yaml", "x"),
            ("apps/b/app.yaml", "y"),
            ("canary/c.yaml", "z"),
        ]);
        let under: Vec<_> = s.files_under("apps/").map(|(p, _)| p).collect();
        assert_eq!(under, ["apps/a/app.yaml", "apps/b/app.yaml"]);
    }

    #[test]
    fn platform_files_come_from_the_base() {
        let base = Snapshot::from_files([
            ("bowline.yaml", "environments: base"),
            ("policies/a.rego", "package a"),
            ("policies/gone.rego", "package gone"),
            ("apps/web/app.yaml", "old"),
        ]);
        let head = Snapshot::from_files([
            ("bowline.yaml", "environments: head"),
            ("policies/a.rego", "package a"),
            ("policies/new.rego", "package new"),
            ("apps/web/app.yaml", "new"),
        ]);
        let (planned, changed) = head.with_platform_of(&base);
        assert_eq!(
            changed,
            ["bowline.yaml", "policies/gone.rego", "policies/new.rego"]
        );
        let files: Vec<(&str, &str)> = planned.files().map(|(p, c)| (p, &**c)).collect();
        assert_eq!(
            files,
            [
                ("apps/web/app.yaml", "new"),
                ("bowline.yaml", "environments: base"),
                ("policies/a.rego", "package a"),
                ("policies/gone.rego", "package gone"),
            ]
        );
        let (_, none) = base.with_platform_of(&base);
        assert!(none.is_empty());
    }
}

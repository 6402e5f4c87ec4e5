//! The config repository as a Git remote: a bare mirror kept in a cache directory, fetched
//! over https (token), ssh (key) or a local path; snapshots read straight from commit trees
//! (no checkout, the same limits as a directory); and the Git ids of each application's
//! inputs, so a new commit costs nothing for the apps it does not touch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use git2::{Cred, CredentialType, FetchOptions, ObjectType, Oid, RemoteCallbacks, Repository};

use super::snapshot::{READ_DIRS, is_read};
use super::{Limits, ROOT_FILE, Snapshot};
use crate::diagnostic::Diagnostic;

/// Why a Git operation failed. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// libgit2 failed.
    #[error("git {action} {target}: {message}")]
    Git {
        /// What was attempted (`fetch`, `open`, …).
        action: &'static str,
        /// The remote or object concerned.
        target: String,
        /// libgit2's message.
        message: String,
    },
    /// The branch or ref does not exist on the remote.
    #[error("git: {0} not found on the remote")]
    MissingRef(String),
}

/// Credentials for remotes.
#[derive(Clone, Default)]
pub struct GitAuth {
    /// Token for https remotes (sent as the password of `x-access-token`).
    pub token: Option<String>,
    /// Private key for ssh remotes.
    pub ssh_key: Option<PathBuf>,
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitAuth")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("ssh_key", &self.ssh_key)
            .finish()
    }
}

/// A remote config repository and its local mirror.
pub struct GitSource {
    url: String,
    branch: String,
    mirror: PathBuf,
    auth: GitAuth,
    read_cache: std::sync::Mutex<ReadCache>,
}

/// An entry of a tree that bowline reads: a file (with its mode) or a subtree.
#[derive(Debug)]
enum TreeEntry {
    File { name: String, id: Oid, mode: i32 },
    Tree { name: String, id: Oid },
}

/// A file's size and text, or why its text is refused.
#[derive(Debug, Clone)]
struct Blob {
    size: u64,
    text: Result<Arc<str>, String>,
}

/// Tree entries and file texts by Git id. Objects are immutable, so an entry never goes
/// stale; each is stamped with the last snapshot that used it and dropped once the last
/// [`KEEP_SNAPSHOTS`] snapshots did not (so a daemon that reads a branch head and pull
/// requests in turn keeps what both use, and memory follows the repository's size).
#[derive(Debug, Default)]
struct ReadCache {
    trees: std::collections::HashMap<Oid, (Arc<[TreeEntry]>, u64)>,
    blobs: std::collections::HashMap<Oid, (Blob, u64)>,
    /// Snapshots read so far.
    clock: u64,
}

/// Snapshots whose trees and files stay cached.
const KEEP_SNAPSHOTS: u64 = 4;

impl ReadCache {
    /// The entries of tree `id` (subtrees and files), in tree order.
    fn entries(&mut self, repo: &Repository, id: Oid) -> Result<Arc<[TreeEntry]>, git2::Error> {
        let clock = self.clock;
        if let Some((entries, used)) = self.trees.get_mut(&id) {
            *used = clock;
            return Ok(entries.clone());
        }
        let tree = repo.find_tree(id)?;
        let entries: Arc<[TreeEntry]> = tree
            .iter()
            .map(|entry| {
                let name = entry.name().unwrap_or_default().to_string();
                if entry.kind() == Some(ObjectType::Tree) {
                    TreeEntry::Tree {
                        name,
                        id: entry.id(),
                    }
                } else {
                    TreeEntry::File {
                        name,
                        id: entry.id(),
                        mode: entry.filemode(),
                    }
                }
            })
            .collect();
        self.trees.insert(id, (entries.clone(), clock));
        Ok(entries)
    }

    /// Every file under tree `id` (path prefixed with `prefix`), in pre-order.
    fn files_under(
        &mut self,
        repo: &Repository,
        id: Oid,
        prefix: &str,
        out: &mut Vec<(String, Oid, i32)>,
    ) -> Result<(), git2::Error> {
        for entry in self.entries(repo, id)?.iter() {
            match entry {
                TreeEntry::File { name, id, mode } => {
                    let path = format!("{prefix}{name}");
                    if is_read(&path) {
                        out.push((path, *id, *mode));
                    }
                }
                TreeEntry::Tree { name, id } => {
                    self.files_under(repo, *id, &format!("{prefix}{name}/"), out)?;
                }
            }
        }
        Ok(())
    }

    /// The size and text of blob `id`; a file over the size limit is neither decoded nor kept.
    fn blob(&mut self, repo: &Repository, id: Oid, limits: &Limits) -> Result<Blob, git2::Error> {
        let clock = self.clock;
        if let Some((cached, used)) = self.blobs.get_mut(&id) {
            *used = clock;
            return Ok(cached.clone());
        }
        let blob = repo.find_blob(id)?;
        let size = blob.size() as u64;
        if size > limits.max_file_bytes {
            return Ok(Blob {
                size,
                text: Err(String::new()),
            });
        }
        let text = match std::str::from_utf8(blob.content()) {
            Ok(text) if text.starts_with('\u{feff}') => {
                Err("file starts with a byte-order mark; save it as UTF-8 without BOM".into())
            }
            Ok(text) => Ok(Arc::<str>::from(text)),
            Err(e) => Err(format!("file is not UTF-8: {e}")),
        };
        let blob = Blob { size, text };
        self.blobs.insert(id, (blob.clone(), clock));
        Ok(blob)
    }

    /// Starts a snapshot: what the last snapshots did not use is dropped.
    fn start(&mut self) {
        self.clock += 1;
        let oldest = self.clock.saturating_sub(KEEP_SNAPSHOTS);
        self.trees.retain(|_, (_, used)| *used >= oldest);
        self.blobs.retain(|_, (_, used)| *used >= oldest);
    }
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("url", &redact(&self.url))
            .field("branch", &self.branch)
            .field("mirror", &self.mirror)
            .field("auth", &self.auth)
            .finish()
    }
}

fn redact(url: &str) -> String {
    crate::redact::urls(url)
}

impl GitSource {
    /// A source for `url` (https, ssh, or a local path) tracking `branch`, mirrored under
    /// `cache_dir` (created when missing).
    pub fn open(
        url: &str,
        branch: &str,
        cache_dir: &Path,
        auth: GitAuth,
    ) -> Result<GitSource, GitError> {
        let source = GitSource {
            url: url.to_string(),
            branch: branch.to_string(),
            mirror: cache_dir.to_path_buf(),
            auth,
            read_cache: std::sync::Mutex::default(),
        };
        if Repository::open_bare(&source.mirror).is_err() {
            std::fs::create_dir_all(&source.mirror)
                .map_err(|e| source.error("create", e.to_string()))?;
            Repository::init_bare(&source.mirror)
                .map_err(|e| source.error("init", e.message().to_string()))?;
        }
        Ok(source)
    }

    fn error(&self, action: &'static str, message: String) -> GitError {
        GitError::Git {
            action,
            target: redact(&self.url),
            // libgit2 quotes the URL it failed on.
            message: crate::redact::urls(&message),
        }
    }

    fn repo(&self) -> Result<Repository, GitError> {
        Repository::open_bare(&self.mirror).map_err(|e| self.error("open", e.message().to_string()))
    }

    /// The tracked branch.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// Fetches the tracked branch; returns its commit id.
    pub fn fetch(&self) -> Result<String, GitError> {
        self.fetch_ref(&format!("refs/heads/{}", self.branch))
    }

    /// Fetches one ref of the remote (a branch, `refs/pull/7/head`, …) into the mirror under
    /// `refs/bowline/…`; returns its commit id.
    #[tracing::instrument(level = "info", skip(self), fields(remote = %redact(&self.url)))]
    pub fn fetch_ref(&self, reference: &str) -> Result<String, GitError> {
        let repo = self.repo()?;
        let local = format!("refs/bowline/{}", reference.trim_start_matches("refs/"));
        let mut callbacks = RemoteCallbacks::new();
        let auth = self.auth.clone();
        let mut attempts = 0;
        callbacks.credentials(move |_url, username, allowed| {
            attempts += 1;
            if attempts > 3 {
                return Err(git2::Error::from_str("authentication failed"));
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
                && let Some(token) = &auth.token
            {
                return Cred::userpass_plaintext("x-access-token", token);
            }
            if allowed.contains(CredentialType::SSH_KEY)
                && let Some(key) = &auth.ssh_key
            {
                return Cred::ssh_key(username.unwrap_or("git"), None, key, None);
            }
            Cred::default()
        });
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks);
        options.download_tags(git2::AutotagOption::None);
        let mut remote = repo
            .remote_anonymous(&self.url)
            .map_err(|e| self.error("fetch", e.message().to_string()))?;
        let refspec = format!("+{reference}:{local}");
        remote
            .fetch(&[refspec.as_str()], Some(&mut options), None)
            .map_err(|e| {
                if e.code() == git2::ErrorCode::NotFound
                    || e.message().contains("couldn't find remote ref")
                {
                    GitError::MissingRef(reference.to_string())
                } else {
                    self.error("fetch", e.message().to_string())
                }
            })?;
        let id = repo
            .refname_to_id(&local)
            .map_err(|_| GitError::MissingRef(reference.to_string()))?;
        Ok(id.to_string())
    }

    /// The files of commit `sha` that bowline reads, with the same limits and refusals as a
    /// directory (symlinks and submodules are refused; so are non-UTF-8 and oversized files).
    ///
    /// Tree listings and file texts are remembered by Git id, so reading a commit that shares
    /// most trees with one read before touches only the trees and files that changed, and
    /// unchanged files are the same shared text (which lets later steps compare them by
    /// pointer).
    #[tracing::instrument(level = "debug", skip(self, limits))]
    pub fn snapshot(
        &self,
        sha: &str,
        limits: &Limits,
    ) -> Result<(Snapshot, Vec<Diagnostic>), GitError> {
        let repo = self.repo()?;
        let tree =
            commit_tree(&repo, sha).map_err(|e| self.error("read", e.message().to_string()))?;
        let git = |e: git2::Error| self.error("read", e.message().to_string());
        let mut cache = self
            .read_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.start();
        let mut entries: Vec<(String, Oid, i32)> = Vec::new();
        for entry in tree.iter() {
            let name = entry.name().unwrap_or_default();
            if name == ROOT_FILE && entry.kind() != Some(ObjectType::Tree) {
                entries.push((name.to_string(), entry.id(), entry.filemode()));
            } else if READ_DIRS.contains(&name) && entry.kind() == Some(ObjectType::Tree) {
                cache
                    .files_under(&repo, entry.id(), &format!("{name}/"), &mut entries)
                    .map_err(git)?;
            }
        }
        let mut files = BTreeMap::new();
        let mut refused = BTreeSet::new();
        let mut diagnostics = Vec::new();
        let mut total: u64 = 0;
        for (path, id, mode) in entries {
            if files.len() >= limits.max_files {
                diagnostics.push(Diagnostic::file_error(
                    &path,
                    format!("more than {} files: the rest is not read", limits.max_files),
                ));
                break;
            }
            let refuse = |reason: String,
                          refused: &mut BTreeSet<String>,
                          diagnostics: &mut Vec<Diagnostic>| {
                refused.insert(path.clone());
                diagnostics.push(Diagnostic::file_error(&path, reason));
            };
            if mode == 0o120000 {
                refuse(
                    "symbolic links are not followed in Git repositories".into(),
                    &mut refused,
                    &mut diagnostics,
                );
                continue;
            }
            if mode == 0o160000 {
                refuse(
                    "submodules are not read".into(),
                    &mut refused,
                    &mut diagnostics,
                );
                continue;
            }
            let blob = cache.blob(&repo, id, limits).map_err(git)?;
            if blob.size > limits.max_file_bytes {
                refuse(
                    format!(
                        "file is {} bytes, over the limit of {} bytes",
                        blob.size, limits.max_file_bytes
                    ),
                    &mut refused,
                    &mut diagnostics,
                );
                continue;
            }
            total += blob.size;
            if total > limits.max_total_bytes {
                refuse(
                    format!(
                        "repository is over the limit of {} bytes in all",
                        limits.max_total_bytes
                    ),
                    &mut refused,
                    &mut diagnostics,
                );
                break;
            }
            match blob.text {
                Ok(text) => {
                    files.insert(path, text);
                }
                Err(reason) => refuse(reason, &mut refused, &mut diagnostics),
            }
        }
        Ok((Snapshot::from_parts(files, refused), diagnostics))
    }

    /// The Git ids of commit `sha` that application inputs are digested from (see
    /// [`crate::config::inputs`]): `bowline.yaml`, each entry of `apps/`, and every file under
    /// `pipelines/` and `canary/`. One walk of those trees, so the cost grows with the
    /// repository, never with apps × apps.
    pub fn tree_ids(&self, sha: &str) -> Result<TreeIds, GitError> {
        let repo = self.repo()?;
        let tree =
            commit_tree(&repo, sha).map_err(|e| self.error("read", e.message().to_string()))?;
        let mut ids = std::collections::HashMap::new();
        if let Ok(root) = tree.get_path(Path::new(ROOT_FILE)) {
            ids.insert(ROOT_FILE.to_string(), root.id().to_string());
        }
        if let Some(apps) = tree
            .get_path(Path::new("apps"))
            .ok()
            .and_then(|e| e.to_object(&repo).ok())
            .and_then(|o| o.into_tree().ok())
        {
            for entry in apps.iter() {
                if let Ok(name) = entry.name() {
                    ids.insert(format!("apps/{name}"), entry.id().to_string());
                }
            }
        }
        for dir in ["pipelines", "canary"] {
            let Some(sub) = tree
                .get_path(Path::new(dir))
                .ok()
                .and_then(|e| e.to_object(&repo).ok())
                .and_then(|o| o.into_tree().ok())
            else {
                continue;
            };
            sub.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
                if entry.kind() == Some(ObjectType::Blob)
                    && let Ok(name) = entry.name()
                {
                    ids.insert(format!("{dir}/{parent}{name}"), entry.id().to_string());
                }
                git2::TreeWalkResult::Ok
            })
            .map_err(|e| self.error("read", e.message().to_string()))?;
        }
        Ok(TreeIds { ids })
    }
}

/// Git ids of the paths application inputs are made of, in one commit (see
/// [`GitSource::tree_ids`]).
#[derive(Debug, Clone, Default)]
pub struct TreeIds {
    ids: std::collections::HashMap<String, String>,
}

impl TreeIds {
    /// The Git id at `path`, `-` when the commit has nothing there.
    pub fn id(&self, path: &str) -> &str {
        self.ids.get(path).map_or("-", String::as_str)
    }
}

impl GitSource {
    /// The Git ids of everything bowline reads in commit `sha` (`bowline.yaml` and the
    /// `apps`, `pipelines`, `canary` and `policies` trees; `-` when missing). Equal ids between
    /// two commits mean no application can have changed, without reading a single file.
    pub fn input_roots(&self, sha: &str) -> Result<Vec<String>, GitError> {
        let repo = self.repo()?;
        let tree =
            commit_tree(&repo, sha).map_err(|e| self.error("read", e.message().to_string()))?;
        Ok(std::iter::once(ROOT_FILE)
            .chain(READ_DIRS.iter().copied())
            .map(|path| {
                tree.get_path(Path::new(path))
                    .map(|e| e.id().to_string())
                    .unwrap_or_else(|_| "-".to_string())
            })
            .collect())
    }

    /// The message of commit `sha`.
    pub fn commit_message(&self, sha: &str) -> Result<String, GitError> {
        let repo = self.repo()?;
        let commit = Oid::from_str(sha)
            .and_then(|id| repo.find_commit(id))
            .map_err(|e| self.error("read", e.message().to_string()))?;
        Ok(String::from_utf8_lossy(commit.message_bytes()).into_owned())
    }
}

fn commit_tree<'r>(repo: &'r Repository, sha: &str) -> Result<git2::Tree<'r>, git2::Error> {
    repo.find_commit(Oid::from_str(sha)?)?.tree()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_from_urls() {
        assert_eq!(
            redact("https://x-access-token:abc@github.com/acme/config.git"),
            "https://***@github.com/acme/config.git"
        );
        assert_eq!(redact("/srv/git/config"), "/srv/git/config");
        let auth = GitAuth {
            token: Some("ghp_secret".into()),
            ssh_key: None,
        };
        assert!(!format!("{auth:?}").contains("ghp_secret"));
    }
}

//! The config repository as a Git remote: a bare mirror kept in a cache directory, fetched
//! over https (token), ssh (key) or a local path; snapshots read straight from commit trees
//! (no checkout, the same limits as a directory); and the Git ids of each application's
//! inputs, so a new commit costs nothing for the apps it does not touch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use git2::{Cred, CredentialType, FetchOptions, ObjectType, Oid, RemoteCallbacks, Repository};
use sha2::{Digest, Sha256};

use super::snapshot::{READ_DIRS, READ_EXTENSIONS};
use super::{Limits, ROOT_FILE, Snapshot};
use crate::config::ConfigRepo;
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
    pub fn snapshot(
        &self,
        sha: &str,
        limits: &Limits,
    ) -> Result<(Snapshot, Vec<Diagnostic>), GitError> {
        let repo = self.repo()?;
        let tree =
            commit_tree(&repo, sha).map_err(|e| self.error("read", e.message().to_string()))?;
        let mut files = BTreeMap::new();
        let mut refused = BTreeSet::new();
        let mut diagnostics = Vec::new();
        let mut total: u64 = 0;
        let mut entries: Vec<(String, Oid, i32)> = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            let name = entry.name().unwrap_or_default();
            let path = format!("{dir}{name}");
            let top = path.split('/').next().unwrap_or_default();
            let wanted_dir = READ_DIRS.contains(&top);
            if entry.kind() == Some(ObjectType::Tree) {
                return if dir.is_empty() && !wanted_dir {
                    git2::TreeWalkResult::Skip
                } else {
                    git2::TreeWalkResult::Ok
                };
            }
            let wanted = path == ROOT_FILE
                || (wanted_dir
                    && READ_EXTENSIONS
                        .iter()
                        .any(|ext| path.rsplit_once('.').is_some_and(|(_, e)| e == *ext)));
            if wanted {
                entries.push((path, entry.id(), entry.filemode()));
            }
            git2::TreeWalkResult::Ok
        })
        .map_err(|e| self.error("read", e.message().to_string()))?;
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
            let blob = repo
                .find_blob(id)
                .map_err(|e| self.error("read", e.message().to_string()))?;
            let size = blob.size() as u64;
            if size > limits.max_file_bytes {
                refuse(
                    format!(
                        "file is {size} bytes, over the limit of {} bytes",
                        limits.max_file_bytes
                    ),
                    &mut refused,
                    &mut diagnostics,
                );
                continue;
            }
            total += size;
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
            match std::str::from_utf8(blob.content()) {
                Ok(text) if text.starts_with('\u{feff}') => {
                    refuse(
                        "file starts with a byte-order mark; save it as UTF-8 without BOM".into(),
                        &mut refused,
                        &mut diagnostics,
                    );
                }
                Ok(text) => {
                    files.insert(path, Arc::<str>::from(text));
                }
                Err(e) => refuse(
                    format!("file is not UTF-8: {e}"),
                    &mut refused,
                    &mut diagnostics,
                ),
            }
        }
        Ok((Snapshot::from_parts(files, refused), diagnostics))
    }

    /// A digest per application of the Git ids of everything its output depends on: its
    /// directory, `bowline.yaml`, its pipeline template file and its canary config file.
    /// Equal digests between two commits mean the app is unchanged.
    pub fn input_ids(
        &self,
        sha: &str,
        config: &ConfigRepo,
    ) -> Result<BTreeMap<String, String>, GitError> {
        self.input_ids_with_root(sha, config, None)
    }

    /// [`GitSource::input_ids`] with the Git id of `bowline.yaml` taken as `root` when given:
    /// a pull request planned under the tracked branch's settings counts an app as changed only
    /// when its own inputs changed.
    pub fn input_ids_with_root(
        &self,
        sha: &str,
        config: &ConfigRepo,
        root: Option<&str>,
    ) -> Result<BTreeMap<String, String>, GitError> {
        let repo = self.repo()?;
        let tree =
            commit_tree(&repo, sha).map_err(|e| self.error("read", e.message().to_string()))?;
        let id_of = |path: &str| -> String {
            tree.get_path(Path::new(path))
                .map(|e| e.id().to_string())
                .unwrap_or_else(|_| "-".to_string())
        };
        let root = root.map_or_else(|| id_of(ROOT_FILE), str::to_string);
        let mut out = BTreeMap::new();
        for (name, app) in &config.apps {
            let mut hasher = Sha256::new();
            hasher.update(root.as_bytes());
            hasher.update(id_of(&format!("apps/{name}")).as_bytes());
            if let Some(template) = config
                .pipeline_of(&app.doc)
                .and_then(|t| config.pipelines.get(t))
            {
                hasher.update(id_of(&template.file).as_bytes());
            }
            if let Some(canary) = app
                .doc
                .spec
                .canary
                .as_ref()
                .and_then(|c| config.canaries.get(&c.config))
            {
                hasher.update(id_of(&canary.file).as_bytes());
            }
            out.insert(name.clone(), hex::encode(&hasher.finalize()[..12]));
        }
        Ok(out)
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

/// Applications whose input digest differs between `old` and `new` (new apps included,
/// removed apps excluded), sorted.
pub fn changed_apps(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<String> {
    new.iter()
        .filter(|(app, id)| old.get(*app) != Some(id))
        .map(|(app, _)| app.clone())
        .collect()
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

    #[test]
    fn changed_apps_compares_digests() {
        let old: BTreeMap<String, String> = [
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("gone".into(), "3".into()),
        ]
        .into();
        let new: BTreeMap<String, String> = [
            ("a".into(), "1".into()),
            ("b".into(), "9".into()),
            ("new".into(), "4".into()),
        ]
        .into();
        assert_eq!(
            changed_apps(&old, &new),
            vec!["b".to_string(), "new".to_string()]
        );
    }
}

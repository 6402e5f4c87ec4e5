//! Files of the state that must stay private (mode 0600): the state database itself and the
//! installation's secret-mask key, generated on first start and kept beside it
//! (`<state>.mask-key`), so masked Secret values stay comparable across restarts and cannot be
//! guessed by anyone who does not hold the file.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a private file could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading, creating or restricting it failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The key file does not hold a key.
    #[error(
        "{path}: not a secret-mask key (expected 64 hex digits); remove it to generate a new one"
    )]
    BadKey {
        /// The file.
        path: String,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Creates `path` empty with mode 0600 when missing; tightens an existing file readable by
/// others to 0600 (and logs it).
pub fn ensure_private(path: &Path) -> Result<(), FileError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => restrict(path),
        Err(e) => Err(io(path)(e)),
    }
}

fn restrict(path: &Path) -> Result<(), FileError> {
    let mode = std::fs::metadata(path)
        .map_err(io(path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(file = %path.display(), mode = format!("{:o}", mode & 0o777), "readable by others: restricting to 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    }
    Ok(())
}

/// Where the secret-mask key of the state at `state` is kept.
pub fn mask_key_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".mask-key");
    PathBuf::from(name)
}

/// The secret-mask key kept beside `state`, generated (mode 0600) on first use.
pub fn mask_key(state: &Path) -> Result<[u8; 32], FileError> {
    mask_key_at(&mask_key_path(state))
}

/// The secret-mask key in the file at `path`, generated (mode 0600) when it does not exist.
pub fn mask_key_at(path: &Path) -> Result<[u8; 32], FileError> {
    let path = path.to_path_buf();
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut file) => {
            let key = crate::diff::mask::random_key();
            write_key(&mut file, &key).map_err(io(&path))?;
            tracing::info!(file = %path.display(), "generated the secret-mask key");
            Ok(key)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            restrict(&path)?;
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let bad = || FileError::BadKey {
                path: path.display().to_string(),
            };
            let bytes = hex::decode(text.trim()).map_err(|_| bad())?;
            bytes.try_into().map_err(|_| bad())
        }
        Err(e) => Err(io(&path)(e)),
    }
}

fn write_key(file: &mut File, key: &[u8; 32]) -> std::io::Result<()> {
    file.write_all(format!("{}\n", hex::encode(key)).as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_generated_once_private_and_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let state = dir.path().join("bowline.db");
        let first = mask_key(&state).expect("key");
        let second = mask_key(&state).expect("key");
        assert_eq!(first, second);
        let mode = std::fs::metadata(mask_key_path(&state))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let other = tempfile::tempdir().expect("dir");
        assert_ne!(
            first,
            mask_key(&other.path().join("bowline.db")).expect("key")
        );
    }

    #[test]
    fn a_loose_file_is_restricted_and_a_bad_key_named() {
        let dir = tempfile::tempdir().expect("dir");
        let state = dir.path().join("state.db");
        std::fs::write(&state, b"").expect("write");
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        ensure_private(&state).expect("private");
        let mode = std::fs::metadata(&state)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(mask_key_path(&state), "not a key").expect("write");
        let e = mask_key(&state).expect_err("bad key").to_string();
        assert!(
            e.contains("state.db.mask-key: not a secret-mask key"),
            "{e}"
        );
    }
}

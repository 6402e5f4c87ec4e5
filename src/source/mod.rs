//! Where the config repository comes from: a directory on disk read into an in-memory
//! [`Snapshot`] with the safety limits applied, or a Git remote ([`git::GitSource`]) whose
//! commits are read the same way.

pub mod git;
mod snapshot;

pub use snapshot::{Limits, ROOT_FILE, Snapshot, SourceError, is_platform_path};

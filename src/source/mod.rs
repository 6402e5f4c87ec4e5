//! Where the config repository comes from. Today: a directory on disk, read into an in-memory
//! [`Snapshot`] with the safety limits applied; later also Git commits and webhooks.

mod snapshot;

pub use snapshot::{Limits, ROOT_FILE, Snapshot, SourceError};

//! Development mode: watch a local working copy of the config repository with `notify`, and
//! fetch as soon as something changes in it (a commit, a checkout), instead of waiting for the
//! next poll.

use std::path::Path;
use std::sync::{Arc, Weak};

use notify::{EventKind, RecursiveMode, Watcher};

use super::Daemon;

/// Watches `path` recursively; every change asks for a reconcile of the tracked branch on
/// the work queue (bursts of events coalesce into at most one more fetch). Keep the returned watcher alive for as long as watching should
/// go on.
pub fn watch(path: &Path, daemon: &Arc<Daemon>) -> notify::Result<notify::RecommendedWatcher> {
    let daemon: Weak<Daemon> = Arc::downgrade(daemon);
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if !matches!(event.kind, EventKind::Access(_)) => {
                if let Some(daemon) = daemon.upgrade() {
                    tracing::debug!(paths = ?event.paths, "working copy changed");
                    daemon.request_reconcile();
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "watching the working copy failed"),
        })?;
    watcher.watch(path, RecursiveMode::Recursive)?;
    tracing::info!(path = %path.display(), "watching the working copy");
    Ok(watcher)
}

//! Which repository the daemon answers to: the config repository's GitHub full name (from
//! `--github-repo` or `bowline.yaml`'s `forge.github`) and its numeric id, asked of GitHub once
//! (`GET /repos/{owner}/{repo}`) and kept. Webhook deliveries naming any other repository are
//! not acted on; the durable replay guard of deliveries lives here too.

use std::time::{Duration, Instant};

use super::{Daemon, DaemonError, lock};
use crate::forge::RepoRef;

/// How long to wait before asking GitHub for the repository id again after a failure.
const ID_RETRY: Duration = Duration::from_secs(60);

/// The config repository as webhook deliveries are matched against it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigRepository {
    /// `owner/name`.
    pub full_name: RepoRef,
    /// GitHub's numeric id, once learnt (`None`: GitHub has not answered yet, so deliveries
    /// are matched by full name only).
    pub id: Option<u64>,
}

/// The learnt id of a repository, and when it was last asked for.
#[derive(Debug, Default)]
pub(super) struct RepositoryId {
    known: Option<(RepoRef, u64)>,
    asked: Option<Instant>,
}

fn same(a: &RepoRef, b: &RepoRef) -> bool {
    a.owner.eq_ignore_ascii_case(&b.owner) && a.name.eq_ignore_ascii_case(&b.name)
}

impl Daemon {
    /// The config repository (`None` until its GitHub name is known: neither `--github-repo`
    /// nor a good commit's `forge.github`), with its id when learnt.
    pub fn config_repository(&self) -> Option<ConfigRepository> {
        let full_name = lock(&self.state).github_repo.clone()?;
        let id = lock(&self.repo_id)
            .known
            .as_ref()
            .filter(|(repo, _)| same(repo, &full_name))
            .map(|(_, id)| *id);
        Some(ConfigRepository { full_name, id })
    }

    /// Asks GitHub for the config repository's numeric id unless it is known, or was asked for
    /// less than a minute ago. Returns the id when known.
    pub async fn learn_repository_id(&self) -> Option<u64> {
        let repo = self.config_repository()?;
        if repo.id.is_some() {
            return repo.id;
        }
        let github = self.github.as_ref()?;
        {
            let mut cache = lock(&self.repo_id);
            if cache.asked.is_some_and(|at| at.elapsed() < ID_RETRY) {
                return None;
            }
            cache.asked = Some(Instant::now());
        }
        match github.get_repository(&repo.full_name).await {
            Ok(found) => {
                if !found
                    .full_name
                    .eq_ignore_ascii_case(&repo.full_name.to_string())
                {
                    tracing::warn!(configured = %repo.full_name, github = %found.full_name, "GitHub names the config repository differently");
                }
                tracing::info!(repo = %repo.full_name, id = found.id, "config repository id learnt");
                lock(&self.repo_id).known = Some((repo.full_name, found.id));
                Some(found.id)
            }
            Err(e) => {
                tracing::warn!(repo = %repo.full_name, error = %e, "could not learn the config repository id; matching webhook deliveries by full name only");
                None
            }
        }
    }

    /// Records a webhook delivery id in the store: `true` the first time, `false` for a
    /// replay (also one after a restart).
    pub fn first_delivery(&self, delivery: &str) -> Result<bool, DaemonError> {
        if delivery.is_empty() {
            return Ok(false);
        }
        Ok(self.store.record_delivery(delivery)?)
    }
}

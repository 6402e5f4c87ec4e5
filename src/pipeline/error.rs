//! Why a stage attempt failed, and whether another attempt could help: a
//! [`StageError::Transient`] failure (an unreachable cluster, a 5xx or throttled answer, a busy
//! store) is retried as the stage's `retries:` allow; a [`StageError::Terminal`] one (a canary
//! verdict, a refused destination, an invalid input, a 4xx validation error) fails the stage at
//! once, since trying again would fail the same way.

use crate::cluster::ClusterError;
use crate::destination::Refused;
use crate::store::StoreError;
use crate::sync::SyncError;

/// A failed stage attempt, classified at its source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    /// Worth another attempt: the same request may succeed later.
    #[error("{0}")]
    Transient(String),
    /// Not worth another attempt: it would fail the same way.
    #[error("{0}")]
    Terminal(String),
}

impl StageError {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> StageError {
        StageError::Transient(message.into())
    }

    /// A failure not worth retrying.
    pub fn terminal(message: impl Into<String>) -> StageError {
        StageError::Terminal(message.into())
    }

    /// Whether another attempt could succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StageError::Transient(_))
    }

    /// The message, as it reads in the stage's error and the event log.
    pub fn message(&self) -> &str {
        match self {
            StageError::Transient(m) | StageError::Terminal(m) => m,
        }
    }

    /// The same kind of failure with its message changed by `f` (e.g. prefixed with a
    /// cluster name).
    pub fn map(self, f: impl FnOnce(String) -> String) -> StageError {
        match self {
            StageError::Transient(m) => StageError::Transient(f(m)),
            StageError::Terminal(m) => StageError::Terminal(f(m)),
        }
    }
}

impl From<ClusterError> for StageError {
    fn from(e: ClusterError) -> StageError {
        if e.is_transient() {
            StageError::Transient(e.to_string())
        } else {
            StageError::Terminal(e.to_string())
        }
    }
}

impl From<SyncError> for StageError {
    fn from(e: SyncError) -> StageError {
        if e.is_transient() {
            StageError::Transient(e.to_string())
        } else {
            StageError::Terminal(e.to_string())
        }
    }
}

impl From<Refused> for StageError {
    /// Destinations are the platform team's decision: retrying cannot change them.
    fn from(e: Refused) -> StageError {
        StageError::Terminal(e.to_string())
    }
}

impl From<StoreError> for StageError {
    /// A failing database (busy, locked, a lost connection) may recover; an execution owned
    /// by another process, or stored data this version cannot use, stays so.
    fn from(e: StoreError) -> StageError {
        match e {
            StoreError::Sqlite { .. }
            | StoreError::Postgres { .. }
            | StoreError::PostgresPool { .. }
            | StoreError::File(_)
            | StoreError::Migration { .. } => StageError::Transient(e.to_string()),
            StoreError::NotOwner { .. }
            | StoreError::Fenced { .. }
            | StoreError::NoExecution(_)
            | StoreError::NoStage { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Conflict(_)
            | StoreError::NotAStore { .. }
            | StoreError::Duplicate { .. } => StageError::Terminal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::ObjectKey;

    fn api(code: Option<u16>) -> ClusterError {
        ClusterError::Api {
            cluster: "staging".into(),
            verb: "apply",
            object: "apps/v1 Deployment shop/web".into(),
            code,
            message: "boom".into(),
        }
    }

    #[test]
    fn cluster_errors_are_transient_only_when_the_server_may_answer_otherwise_later() {
        let unreachable = ClusterError::Unreachable {
            cluster: "staging".into(),
            context: "ctx".into(),
            url: "https://127.0.0.1:6443".into(),
            message: "connection refused".into(),
        };
        assert!(StageError::from(unreachable).is_transient());
        for code in [None, Some(500), Some(502), Some(503), Some(429), Some(408)] {
            assert!(StageError::from(api(code)).is_transient(), "{code:?}");
        }
        for code in [Some(400), Some(403), Some(404), Some(409), Some(422)] {
            assert!(!StageError::from(api(code)).is_transient(), "{code:?}");
        }
        let unknown = ClusterError::UnknownKind {
            cluster: "staging".into(),
            api_version: "example.com/v1".into(),
            kind: "Widget".into(),
            hint: String::new(),
        };
        assert!(!StageError::from(unknown).is_transient());
        let kubeconfig = ClusterError::Kubeconfig {
            cluster: "staging".into(),
            path: "/nowhere".into(),
            message: "no context".into(),
        };
        assert!(!StageError::from(kubeconfig).is_transient());
    }

    #[test]
    fn sync_errors_follow_their_cause() {
        let key = ObjectKey {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: "web".into(),
        };
        assert!(StageError::from(SyncError::Cluster(api(Some(503)))).is_transient());
        assert!(!StageError::from(SyncError::Cluster(api(Some(422)))).is_transient());
        let refused = Refused {
            object: key.to_string(),
            environment: "staging".into(),
            reason: "namespace kube-system is not allowed".into(),
        };
        assert!(!StageError::from(SyncError::Refused(refused.clone())).is_transient());
        assert!(!StageError::from(refused).is_transient());
        assert!(
            !StageError::from(SyncError::NotManaged {
                app: "web".into(),
                objects: vec![key.clone()],
            })
            .is_transient()
        );
        assert!(
            !StageError::from(SyncError::NamespaceMissing {
                namespace: "shop".into(),
                cluster: "staging".into(),
            })
            .is_transient()
        );
        assert!(
            !StageError::from(SyncError::RolloutFailed {
                object: key.clone(),
                reason: "ImagePullBackOff".into(),
            })
            .is_transient()
        );
        assert!(
            StageError::from(SyncError::Timeout {
                object: key,
                waited: std::time::Duration::from_secs(1),
                last: crate::cluster::Health::Progressing("1 of 2 ready".into()),
            })
            .is_transient()
        );
    }

    #[test]
    fn database_failures_are_transient_and_messages_are_kept() {
        let busy = || StoreError::Sqlite {
            path: "state.db".into(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some("database is locked".into()),
            ),
        };
        let e = StageError::from(busy());
        assert!(e.is_transient());
        assert_eq!(e.to_string(), busy().to_string());
        let taken = StageError::from(StoreError::NotOwner {
            execution: "01J".into(),
            owner: "host:1:a".into(),
        });
        assert!(!taken.is_transient(), "another process owns it now");
        let prefixed = StageError::terminal("refused").map(|m| format!("staging: {m}"));
        assert_eq!(prefixed, StageError::Terminal("staging: refused".into()));
        assert_eq!(prefixed.message(), "staging: refused");
    }
}

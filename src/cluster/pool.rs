//! Connections shared by a process: one client per cluster and context, made on first use and
//! reused by deploy stages, plans, drift and self-heal, so none of them re-reads the kubeconfig,
//! asks `/version` or rebuilds discovery per call. A connection is made again after
//! `max_age` (a rotated kubeconfig is picked up; discovery starts fresh), and a failed attempt
//! is not kept: the next use tries again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Cluster, ClusterError, ConnectOptions};

/// How long a connection is reused before it is made again.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);

/// Pooled connections by (cluster, context), with when each was made.
type Entries = HashMap<(String, String), (Arc<Cluster>, Instant)>;

/// Shared cluster connections (see the module documentation).
pub struct ClusterPool {
    options: ConnectOptions,
    max_age: Duration,
    entries: std::sync::Mutex<Entries>,
}

impl std::fmt::Debug for ClusterPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPool")
            .field("options", &self.options)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl ClusterPool {
    /// An empty pool connecting with `options`.
    pub fn new(options: ConnectOptions) -> ClusterPool {
        ClusterPool {
            options,
            max_age: DEFAULT_MAX_AGE,
            entries: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The pool with connections reused for at most `max_age`.
    pub fn with_max_age(mut self, max_age: Duration) -> ClusterPool {
        self.max_age = max_age;
        self
    }

    /// How clusters are reached.
    pub fn options(&self) -> &ConnectOptions {
        &self.options
    }

    /// The connection to cluster `name` through `context`: the pooled one while it is younger
    /// than the pool's max age, else a new one (kept when it succeeds).
    pub async fn get(&self, name: &str, context: &str) -> Result<Arc<Cluster>, ClusterError> {
        let key = (name.to_string(), context.to_string());
        if let Some((cluster, since)) = self.lock().get(&key)
            && since.elapsed() < self.max_age
        {
            return Ok(cluster.clone());
        }
        // Connected without the lock held: a slow cluster does not hold up the others. Two
        // tasks racing here both connect, and the later one is kept; both work.
        let cluster = Arc::new(Cluster::connect(name, context, &self.options).await?);
        self.lock().insert(key, (cluster.clone(), Instant::now()));
        Ok(cluster)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A poisoned map only means another task panicked mid-insert; the map is still valid.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_api_test_server::TestServer;

    #[tokio::test]
    async fn a_connection_is_made_once_and_again_after_its_max_age() {
        let server = TestServer::start();
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, server.kubeconfig("test")).expect("kubeconfig");
        let options = ConnectOptions {
            kubeconfig: Some(kubeconfig),
            ..ConnectOptions::default()
        };
        let versions = || {
            server
                .requests()
                .iter()
                .filter(|r| r.path == "/version")
                .count()
        };
        let pool = ClusterPool::new(options.clone());
        let first = pool.get("staging", "test").await.expect("connect");
        let again = pool.get("staging", "test").await.expect("reuse");
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(versions(), 1);
        // Another name for the same context is another entry.
        pool.get("other", "test").await.expect("connect");
        assert_eq!(versions(), 2);
        // A failure is not kept.
        assert!(pool.get("staging", "missing-context").await.is_err());
        assert!(pool.get("staging", "missing-context").await.is_err());

        // Discovery is reused: listing what the app manages twice discovers once.
        let discoveries = || {
            server
                .requests()
                .iter()
                .filter(|r| r.path == "/apis")
                .count()
        };
        first
            .list_managed("web", &["shop".into()])
            .await
            .expect("list");
        first
            .list_managed("web", &["shop".into()])
            .await
            .expect("list");
        assert_eq!(discoveries(), 1);
        // A kind the cluster starts serving (a CRD applied) is listed from then on.
        server.create(serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "clusterissuers.cert-manager.io"},
            "spec": {
                "group": "cert-manager.io",
                "names": {"kind": "ClusterIssuer", "listKind": "ClusterIssuerList",
                    "plural": "clusterissuers", "singular": "clusterissuer"},
                "scope": "Cluster",
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "x-kubernetes-preserve-unknown-fields": true}}}]
            }
        }));
        let issuer = serde_json::json!({
            "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
            "metadata": {"name": "letsencrypt", "labels": {
                "app.kubernetes.io/managed-by": "bowline", "bowline.dev/app": "web"}}
        });
        first.apply(&issuer, false, false).await.expect("apply");
        let listed = first
            .list_managed("web", &["shop".into()])
            .await
            .expect("list");
        assert!(
            listed.iter().any(|o| o["kind"] == "ClusterIssuer"),
            "{listed:?}"
        );
        assert_eq!(discoveries(), 2);

        let young = ClusterPool::new(options).with_max_age(Duration::ZERO);
        young.get("staging", "test").await.expect("connect");
        young.get("staging", "test").await.expect("reconnect");
        assert_eq!(versions(), 4);
    }
}

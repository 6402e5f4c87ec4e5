//! Leases as locks between replicas, against the Kubernetes API test server (which answers a
//! write carrying a stale `resourceVersion` with 409 Conflict, as the real one does): one
//! holder at a time, renewal, takeover only after expiry with a larger fencing token, release,
//! and exactly one winner when replicas race.

use std::sync::Arc;
use std::time::Duration;

use bowline::cluster::lease::{Held, LeaseLock};
use bowline::cluster::{Cluster, ConnectOptions};
use kube_api_test_server::TestServer;
use serde_json::json;

async fn client(server: &TestServer, dir: &tempfile::TempDir) -> kube::Client {
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig("test")).expect("kubeconfig");
    let options = ConnectOptions {
        kubeconfig: Some(kubeconfig),
        ..ConnectOptions::default()
    };
    Cluster::connect("test", "test", &options)
        .await
        .expect("connect")
        .client()
        .clone()
}

fn world() -> (TestServer, tempfile::TempDir) {
    let server = TestServer::start();
    server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bowline"}}));
    (server, tempfile::tempdir().expect("temp dir"))
}

#[tokio::test]
async fn one_holder_renews_and_another_takes_over_only_after_expiry() {
    let (server, dir) = world();
    let client = client(&server, &dir).await;
    let duration = Duration::from_secs(2);
    let a = LeaseLock::new(client.clone(), "bowline", "leader", "replica-a", duration);
    let b = LeaseLock::new(client.clone(), "bowline", "leader", "replica-b", duration);

    let Held::Mine { generation, .. } = a.acquire_or_renew().await.expect("a") else {
        panic!("a takes the free lease");
    };
    assert_eq!(generation, 0);
    match b.acquire_or_renew().await.expect("b") {
        Held::Theirs { holder, .. } => assert_eq!(holder, "replica-a"),
        other => panic!("b must wait: {other:?}"),
    }
    // Renewals keep it, with the same token, and b still waits right after one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(matches!(
        a.acquire_or_renew().await.expect("renew"),
        Held::Mine { generation: 0, .. }
    ));
    assert!(
        matches!(b.acquire_or_renew().await.expect("b"), Held::Theirs { .. }),
        "just renewed"
    );

    // a stops renewing: once expired, b takes it with a larger token, and a learns it lost.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let Held::Mine { generation, .. } = b.acquire_or_renew().await.expect("b") else {
        panic!("b takes the expired lease");
    };
    assert_eq!(generation, 1);
    match a.acquire_or_renew().await.expect("a") {
        Held::Theirs { holder, .. } => assert_eq!(holder, "replica-b"),
        other => panic!("a lost it: {other:?}"),
    }

    // Released, it is free at once.
    b.release().await.expect("release");
    let Held::Mine { generation, .. } = a.acquire_or_renew().await.expect("a") else {
        panic!("a takes the released lease");
    };
    assert_eq!(generation, 2);
    // Releasing a lease one does not hold changes nothing.
    b.release().await.expect("release");
    assert!(matches!(
        a.acquire_or_renew().await.expect("a"),
        Held::Mine { generation: 2, .. }
    ));
}

#[tokio::test]
async fn replicas_racing_for_a_lease_get_exactly_one_winner() {
    let (server, dir) = world();
    let client = client(&server, &dir).await;
    for round in 0..5 {
        let name = format!("shard-{round}");
        let locks: Vec<Arc<LeaseLock>> = (0..5)
            .map(|i| {
                Arc::new(LeaseLock::new(
                    client.clone(),
                    "bowline",
                    &name,
                    &format!("replica-{i}"),
                    Duration::from_secs(15),
                ))
            })
            .collect();
        let attempts: Vec<_> = locks
            .iter()
            .map(|lock| {
                let lock = lock.clone();
                tokio::spawn(async move { lock.acquire_or_renew().await })
            })
            .collect();
        let mut winners = 0;
        for attempt in attempts {
            if let Held::Mine { .. } = attempt.await.expect("task").expect("attempt") {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    assert!(
        server.requests().iter().any(|r| r.status == 409),
        "the races were decided by the API server's conflicts"
    );
}

//! The PostgreSQL store against a real, throwaway PostgreSQL cluster: the behaviour of the
//! SQLite store's tests, plus replicas racing each other.
//!
//! The cluster is started once per test binary (`initdb` and `postgres` from `PATH`, as user
//! `nobody` when running as root) and stops when the binary exits; each test gets a fresh
//! database. Without PostgreSQL the tests fail, they do not skip.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use bowline::store::{
    AppliedRevision, Claim, Decision, ExecutionFilter, ExecutionStatus, Fence, Judgment,
    NewExecution, NewStage, OutboxKey, OutboxKind, OutboxOutcome, OutboxState, OutboxStats,
    PostgresStore, StageStatus, StageUpdate, Store, StoreError,
};
use chrono::Utc;

mod common;

use common::postgres::{pg, sql};
use serde_json::json;

/// A store on a fresh database, and the database's URL.
fn open() -> (String, PostgresStore) {
    let url = pg().database();
    let store = PostgresStore::connect(&url, None).expect("connect");
    (url, store)
}

fn new(app: &str, envs: &[&str]) -> NewExecution {
    NewExecution {
        app: app.into(),
        environments: envs.iter().map(|e| e.to_string()).collect(),
        revision: "abc123".into(),
        pipeline: "rolling-release".into(),
        trigger: json!({"user": "test"}),
        stages: vec![
            NewStage {
                name: "deploy".into(),
                stage_type: "deploy".into(),
                environment: Some("staging".into()),
                inputs: json!({"strategy": "rolling"}),
            },
            NewStage {
                name: "soak".into(),
                stage_type: "wait".into(),
                environment: Some("staging".into()),
                inputs: json!({"duration": "1s"}),
            },
        ],
    }
}

fn messages(store: &dyn Store, id: &str) -> Vec<String> {
    store
        .events(id)
        .expect("events")
        .into_iter()
        .map(|e| e.message)
        .collect()
}

#[test]
fn executions_survive_reconnecting() {
    let (url, store) = open();
    let e = store
        .create_execution(new("web", &["staging"]))
        .expect("create");
    assert_eq!(e.status, ExecutionStatus::Queued);
    assert_eq!(e.environments, vec!["staging".to_string()]);
    assert_eq!(e.trigger, json!({"user": "test"}));
    assert!(store.try_start(&e.id).expect("start"));
    store
        .update_stage(
            &e.id,
            "deploy",
            StageUpdate {
                status: Some(StageStatus::Succeeded),
                outputs: Some(json!({"applied": true})),
                new_attempt: true,
                event: Some("deployed".into()),
                ..StageUpdate::default()
            },
        )
        .expect("update");
    let soak = store
        .update_stage(
            &e.id,
            "soak",
            StageUpdate {
                status: Some(StageStatus::Running),
                error: Some(Some("slow".into())),
                ..StageUpdate::default()
            },
        )
        .expect("update");
    assert!(soak.started_at.is_some());
    assert_eq!(soak.error.as_deref(), Some("slow"));
    let soak = store
        .update_stage(
            &e.id,
            "soak",
            StageUpdate {
                error: Some(None),
                ..StageUpdate::default()
            },
        )
        .expect("clear the error");
    assert_eq!(soak.error, None);
    drop(store);
    let store = PostgresStore::connect(&url, None).expect("reconnect");
    assert_eq!(store.schema_version().expect("version"), 7);
    let e2 = store.execution(&e.id).expect("execution");
    assert_eq!(e2.status, ExecutionStatus::Running);
    assert_eq!(e2.created_at, e.created_at);
    let stages = store.stages(&e.id).expect("stages");
    assert_eq!(stages[0].name, "deploy");
    assert_eq!(stages[0].status, StageStatus::Succeeded);
    assert_eq!(stages[0].attempts, 1);
    assert_eq!(stages[0].outputs, json!({"applied": true}));
    assert_eq!(stages[0].inputs, json!({"strategy": "rolling"}));
    assert!(
        stages[0].started_at.is_none(),
        "started only through Running"
    );
    assert!(stages[0].finished_at.is_some());
    assert_eq!(stages[1].status, StageStatus::Running);
    assert_eq!(
        messages(&store, &e.id),
        vec![
            "queued: rolling-release at revision abc123",
            "started",
            "deployed"
        ]
    );
    let seqs: Vec<i64> = store
        .events(&e.id)
        .expect("events")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    // Cancellation of a running one is a request; of a final one a conflict.
    store.request_cancel(&e.id, "maria").expect("cancel");
    assert!(store.execution(&e.id).expect("read").cancel_requested);
    store
        .finish_execution(&e.id, ExecutionStatus::Canceled, None)
        .expect("finish");
    assert!(matches!(
        store.request_cancel(&e.id, "maria"),
        Err(StoreError::Conflict(_))
    ));
    store.log(&e.id, Some("soak"), "a note").expect("log");
    let last = store.events(&e.id).expect("events").pop().expect("one");
    assert_eq!(
        (last.stage.as_deref(), last.message.as_str()),
        (Some("soak"), "a note")
    );
}

#[test]
fn one_running_execution_per_app_and_environment_and_newer_supersedes_queued() {
    let (_url, store) = open();
    let first = store
        .create_execution(new("web", &["staging"]))
        .expect("create");
    assert!(store.try_start(&first.id).expect("start"));
    let second = store
        .create_execution(NewExecution {
            revision: "def456".into(),
            ..new("web", &["staging", "production"])
        })
        .expect("create");
    assert!(
        !store.try_start(&second.id).expect("blocked"),
        "overlaps the running one"
    );
    assert_eq!(
        store
            .claim(&second.id, "me", Duration::from_secs(5))
            .expect("claim"),
        Claim::Blocked
    );
    let other_app = store
        .create_execution(new("api", &["staging"]))
        .expect("create");
    assert!(store.try_start(&other_app.id).expect("other app runs"));
    let third = store
        .create_execution(NewExecution {
            revision: "0a1b2c".into(),
            ..new("web", &["production"])
        })
        .expect("create");
    assert_eq!(
        store.execution(&second.id).expect("second").status,
        ExecutionStatus::Superseded
    );
    assert!(
        messages(&store, &second.id)
            .iter()
            .any(|m| *m == format!("superseded by execution {}", third.id))
    );
    store
        .finish_execution(&first.id, ExecutionStatus::Succeeded, None)
        .expect("finish");
    assert!(store.try_start(&third.id).expect("third starts"));
    let running = store
        .executions(&ExecutionFilter {
            app: Some("web".into()),
            statuses: vec![ExecutionStatus::Running],
            limit: None,
        })
        .expect("list");
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].id, third.id);
    // Newest first; limited.
    let all: Vec<String> = store
        .executions(&ExecutionFilter::default())
        .expect("list")
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        all,
        vec![third.id.clone(), other_app.id, second.id, first.id]
    );
    let limited = store
        .executions(&ExecutionFilter {
            app: Some("web".into()),
            statuses: vec![],
            limit: Some(1),
        })
        .expect("list");
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].id, third.id);
    // A final execution cannot be claimed.
    assert!(matches!(
        store.claim(&first_final(&store), "me", Duration::from_secs(1)),
        Err(StoreError::Conflict(_))
    ));
}

fn first_final(store: &PostgresStore) -> String {
    store
        .executions(&ExecutionFilter {
            app: None,
            statuses: vec![ExecutionStatus::Succeeded],
            limit: Some(1),
        })
        .expect("list")
        .remove(0)
        .id
}

#[test]
fn judgments_are_recorded_once_and_last_good_skips_failures() {
    let (_url, store) = open();
    let e = store
        .create_execution(new("web", &["staging"]))
        .expect("create");
    let j = Judgment {
        decision: Decision::Approve,
        user: "maria".into(),
        input: Some("go".into()),
        at: Utc::now(),
    };
    store.judge(&e.id, "approve", &j).expect("judge");
    assert!(matches!(
        store.judge(&e.id, "approve", &j),
        Err(StoreError::Conflict(_))
    ));
    let read = store
        .judgment(&e.id, "approve")
        .expect("read")
        .expect("judged");
    assert_eq!(read.user, "maria");
    assert_eq!(read.input.as_deref(), Some("go"));
    assert_eq!(read.decision, Decision::Approve);
    assert_eq!(read.at.timestamp_millis(), j.at.timestamp_millis());
    assert_eq!(store.judgment(&e.id, "other").expect("read"), None);
    let reject = Judgment {
        decision: Decision::Reject,
        user: "omar".into(),
        input: None,
        at: Utc::now(),
    };
    store.judge(&e.id, "approve-prod", &reject).expect("judge");
    let messages = messages(&store, &e.id);
    assert!(
        messages.iter().any(|m| m == "approved by maria"),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m == "rejected by omar"),
        "{messages:?}"
    );
    store
        .finish_execution(&e.id, ExecutionStatus::Rejected, Some("rejected by omar"))
        .expect("finish");
    let stored = store.execution(&e.id).expect("read");
    assert_eq!(stored.status, ExecutionStatus::Rejected);
    assert_eq!(stored.error.as_deref(), Some("rejected by omar"));

    let applied = |execution: &str, revision: &str| AppliedRevision {
        app: "web".into(),
        environment: "staging".into(),
        cluster: "eu".into(),
        revision: revision.into(),
        objects: vec![json!({"kind": "ConfigMap"})],
        execution: execution.into(),
        applied_at: Utc::now(),
    };
    store.save_applied(&applied(&e.id, "r1")).expect("save");
    assert!(
        store
            .last_good("web", "staging", "eu", None)
            .expect("query")
            .is_none(),
        "not succeeded yet"
    );
    store
        .finish_execution(&e.id, ExecutionStatus::Succeeded, None)
        .expect("finish");
    let bad = store
        .create_execution(new("web", &["staging"]))
        .expect("create");
    store.save_applied(&applied(&bad.id, "r2")).expect("save");
    store
        .finish_execution(&bad.id, ExecutionStatus::Failed, Some("canary failed"))
        .expect("finish");
    let good = store
        .last_good("web", "staging", "eu", None)
        .expect("query")
        .expect("one");
    assert_eq!(good.revision, "r1");
    assert_eq!(good.objects, vec![json!({"kind": "ConfigMap"})]);
    assert_eq!(good.execution, e.id);
    assert!(
        store
            .last_good("web", "staging", "eu", Some(&e.id))
            .expect("query")
            .is_none()
    );
    assert_eq!(
        store
            .last_good("web", "staging", "eu", Some(&bad.id))
            .expect("query")
            .map(|a| a.revision),
        Some("r1".into())
    );
    assert_eq!(
        store
            .last_applied("web", "staging", "eu")
            .expect("query")
            .map(|a| a.revision),
        Some("r2".into()),
        "whatever its outcome"
    );
    assert_eq!(
        store.last_applied("web", "staging", "us").expect("query"),
        None
    );
}

#[test]
fn deliveries_are_remembered_across_reconnecting_and_bounded() {
    let (url, store) = open();
    assert!(store.record_delivery("d-1").expect("record"));
    assert!(!store.record_delivery("d-1").expect("replay"));
    drop(store);
    let store = PostgresStore::connect(&url, None).expect("reconnect");
    assert!(
        !store
            .record_delivery("d-1")
            .expect("replay after reconnecting")
    );
    // At most two ids: the oldest is forgotten.
    let store = store.with_delivery_limits(Duration::from_secs(7 * 24 * 3600), 2);
    assert!(store.record_delivery("d-2").expect("record"));
    assert!(store.record_delivery("d-3").expect("record"));
    assert!(!store.record_delivery("d-3").expect("replay"));
    assert!(store.record_delivery("d-1").expect("forgotten"));
    // Ids older than the retention are forgotten.
    std::thread::sleep(Duration::from_millis(5));
    let store = store.with_delivery_limits(Duration::ZERO, 100);
    assert!(store.record_delivery("d-1").expect("expired"));
}

#[test]
fn executions_are_counted_by_status() {
    let (_url, store) = open();
    assert!(store.execution_counts().expect("counts").is_empty());
    let a = store.create_execution(new("web", &["staging"])).expect("a");
    store.create_execution(new("api", &["staging"])).expect("b");
    store.try_start(&a.id).expect("start");
    let mut counts = store.execution_counts().expect("counts");
    counts.sort_by_key(|(s, _)| s.as_str());
    assert_eq!(
        counts,
        vec![(ExecutionStatus::Queued, 1), (ExecutionStatus::Running, 1)]
    );
}

#[test]
fn meta_values_survive_reconnecting() {
    let (url, store) = open();
    assert_eq!(store.meta("k").expect("read"), None);
    store.set_meta("k", "one").expect("write");
    store.set_meta("k", "two").expect("overwrite");
    drop(store);
    let again = PostgresStore::connect(&url, None).expect("reconnect");
    assert_eq!(again.meta("k").expect("read").as_deref(), Some("two"));
}

#[test]
fn unknown_ids_are_errors() {
    let (_url, store) = open();
    assert!(matches!(
        store.execution("nope"),
        Err(StoreError::NoExecution(_))
    ));
    assert!(matches!(
        store.claim("nope", "me", Duration::from_secs(1)),
        Err(StoreError::NoExecution(_))
    ));
    assert!(matches!(
        store.finish_execution("nope", ExecutionStatus::Failed, None),
        Err(StoreError::NoExecution(_))
    ));
    assert!(matches!(
        store.request_cancel("nope", "me"),
        Err(StoreError::NoExecution(_))
    ));
    let e = store
        .create_execution(new("web", &["staging"]))
        .expect("create");
    assert!(matches!(
        store.update_stage(&e.id, "nope", StageUpdate::default()),
        Err(StoreError::NoStage { .. })
    ));
}

#[test]
fn one_queued_or_running_execution_per_app_and_revision() {
    let (url, store) = open();
    let first = store
        .create_execution(new("web", &["staging"]))
        .expect("create");
    let refused = store.create_execution(new("web", &["staging"]));
    match refused {
        Err(StoreError::Duplicate {
            existing, status, ..
        }) => {
            assert_eq!(existing, first.id);
            assert_eq!(status, ExecutionStatus::Queued);
        }
        other => panic!("expected a duplicate, got {other:?}"),
    }
    // The queued one was not superseded by the refused one.
    assert_eq!(
        store.execution(&first.id).expect("read").status,
        ExecutionStatus::Queued
    );
    assert!(store.try_start(&first.id).expect("start"));
    let err = store
        .create_execution(new("web", &["production"]))
        .expect_err("running");
    assert!(err.to_string().contains("is already running"), "{err}");
    // Another app, or another revision, is not a duplicate.
    store
        .create_execution(new("api", &["staging"]))
        .expect("other app");
    let other = store
        .create_execution(NewExecution {
            revision: "def456".into(),
            ..new("web", &["staging"])
        })
        .expect("other revision");
    store
        .request_cancel(&other.id, "test")
        .expect("cancel queued");
    assert_eq!(
        store.execution(&other.id).expect("read").status,
        ExecutionStatus::Canceled
    );
    // A deliberate retry after the first ended starts a new one.
    store
        .finish_execution(&first.id, ExecutionStatus::Failed, Some("boom"))
        .expect("finish");
    store
        .create_execution(new("web", &["staging"]))
        .expect("retry after the end");
    // The unique index holds even against a write that skips the check.
    let raw = sql(
        &url,
        &format!(
            "UPDATE executions SET status = 'RUNNING' WHERE id = '{}'",
            first.id
        ),
    );
    let err = raw.expect_err("the index refuses a second active execution");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION),
        "{err}"
    );
}

#[test]
fn ownership_is_taken_with_the_claim_and_over_only_after_the_heartbeat_expires() {
    let (_url, store) = open();
    let e = store
        .create_execution(new("web", &["staging"]))
        .expect("create");
    let ttl = Duration::from_millis(300);
    assert_eq!(
        store.claim(&e.id, "host:1:a", ttl).expect("claim"),
        Claim::Started
    );
    let owned = store.execution(&e.id).expect("read");
    assert_eq!(owned.owner.as_deref(), Some("host:1:a"));
    assert!(owned.heartbeat_at.is_some());
    assert!(!owned.is_orphaned(Utc::now()));
    // A second process may not take it while the heartbeat is fresh.
    match store.claim(&e.id, "host:2:b", ttl).expect("claim") {
        Claim::Owned { owner, .. } => assert_eq!(owner, "host:1:a"),
        other => panic!("expected owned, got {other:?}"),
    }
    // The owner claiming again (a resume in the same process) keeps it.
    assert_eq!(
        store.claim(&e.id, "host:1:a", ttl).expect("claim"),
        Claim::Started
    );
    // Heartbeats keep it past the first period.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(100));
        assert!(store.heartbeat(&e.id, "host:1:a", ttl).expect("beat"));
    }
    assert!(matches!(
        store.claim(&e.id, "host:2:b", ttl).expect("claim"),
        Claim::Owned { .. }
    ));
    // No heartbeat for longer than the ttl: another process takes it over...
    std::thread::sleep(Duration::from_millis(350));
    assert!(
        store
            .execution(&e.id)
            .expect("read")
            .is_orphaned(Utc::now())
    );
    assert_eq!(
        store.claim(&e.id, "host:2:b", ttl).expect("claim"),
        Claim::TakenOver {
            previous: Some("host:1:a".into())
        }
    );
    // ...and the old owner learns it on its next heartbeat or fenced write, and cannot
    // release it.
    assert!(!store.heartbeat(&e.id, "host:1:a", ttl).expect("beat"));
    let fenced = |owner: &str| StageUpdate {
        status: Some(StageStatus::Running),
        new_attempt: true,
        owner: Some(owner.into()),
        ..StageUpdate::default()
    };
    assert!(matches!(
        store.update_stage(&e.id, "deploy", fenced("host:1:a")),
        Err(StoreError::NotOwner { .. })
    ));
    assert_eq!(store.stages(&e.id).expect("stages")[0].attempts, 0);
    store
        .update_stage(&e.id, "deploy", fenced("host:2:b"))
        .expect("the owner writes");
    store.release(&e.id, "host:1:a").expect("release");
    assert_eq!(
        store.execution(&e.id).expect("read").owner.as_deref(),
        Some("host:2:b")
    );
    let events = messages(&store, &e.id);
    assert!(
        events
            .iter()
            .any(|m| m == "resumed by host:2:b (the heartbeat of host:1:a expired)"),
        "{events:?}"
    );
    // A clean stop releases it: the next process resumes at once.
    store.release(&e.id, "host:2:b").expect("release");
    assert!(matches!(
        store
            .claim(&e.id, "host:3:c", Duration::from_secs(30))
            .expect("claim"),
        Claim::TakenOver { previous: None }
    ));
    // Ended: no more heartbeats.
    store
        .finish_execution(&e.id, ExecutionStatus::Succeeded, None)
        .expect("finish");
    assert!(!store.heartbeat(&e.id, "host:3:c", ttl).expect("beat"));
}

fn key(context: &str) -> OutboxKey {
    OutboxKey {
        kind: OutboxKind::Status,
        repo: "acme/config".into(),
        subject: "abc123".into(),
        name: context.into(),
    }
}

#[test]
fn a_newer_desired_state_supersedes_the_older_one() {
    let (url, store) = open();
    let first = store
        .record_outbox(&key("bowline/plan"), "pending")
        .expect("record");
    assert_eq!((first.version, first.state), (1, OutboxState::Pending));
    let other = store
        .record_outbox(&key("bowline/deploy/web"), "x")
        .expect("record");
    let second = store
        .record_outbox(&key("bowline/plan"), "success")
        .expect("record");
    assert_eq!(second.id, first.id, "one row per key");
    assert_eq!(second.version, first.version + 1);
    let due = store.outbox_due(Utc::now(), 10).expect("due");
    let payloads: Vec<&str> = due.iter().map(|e| e.payload.as_str()).collect();
    assert_eq!(
        payloads,
        ["x", "success"],
        "the superseded one is gone; the others in the order recorded"
    );
    assert_eq!(store.outbox_due(Utc::now(), 1).expect("due").len(), 1);
    assert_eq!(store.outbox_stats().expect("stats").pending, 2);
    // Durable: still pending after reconnecting.
    drop(store);
    let store = PostgresStore::connect(&url, None).expect("reconnect");
    assert_eq!(store.outbox_stats().expect("stats").pending, 2);
    assert!(
        store
            .settle_outbox(other.id, other.version, &OutboxOutcome::Delivered)
            .expect("settle")
    );
    let entry = store
        .outbox_entry(&key("bowline/deploy/web"))
        .expect("read");
    assert_eq!(entry.map(|e| e.state), Some(OutboxState::Delivered));
    // Recording again after delivery makes it pending again.
    let again = store
        .record_outbox(&key("bowline/deploy/web"), "y")
        .expect("record");
    assert_eq!(again.state, OutboxState::Pending);
    assert_eq!(again.version, other.version + 1);
    assert_eq!(store.outbox_entry(&key("unknown")).expect("read"), None);
}

#[test]
fn only_the_version_sent_is_settled() {
    let (_url, store) = open();
    let sent = store
        .record_outbox(&key("bowline/plan"), "pending")
        .expect("record");
    // A newer version arrives while the older one is on its way.
    let newer = store
        .record_outbox(&key("bowline/plan"), "success")
        .expect("record");
    assert!(
        !store
            .settle_outbox(sent.id, sent.version, &OutboxOutcome::Delivered)
            .expect("settle"),
        "a stale delivery changes nothing"
    );
    let entry = store
        .outbox_entry(&key("bowline/plan"))
        .expect("read")
        .expect("entry");
    assert_eq!(
        (entry.state, entry.payload.as_str()),
        (OutboxState::Pending, "success")
    );

    // A rate limit postpones without counting; a server error counts.
    let later = Utc::now() + chrono::TimeDelta::seconds(30);
    for failure in [false, true] {
        assert!(
            store
                .settle_outbox(
                    newer.id,
                    newer.version,
                    &OutboxOutcome::Retry {
                        at: later,
                        error: "502".into(),
                        failure,
                    },
                )
                .expect("settle")
        );
    }
    let entry = store
        .outbox_entry(&key("bowline/plan"))
        .expect("read")
        .expect("entry");
    assert_eq!(entry.attempts, 1);
    assert_eq!(entry.last_error.as_deref(), Some("502"));
    assert!(store.outbox_due(Utc::now(), 10).expect("due").is_empty());
    assert_eq!(
        store
            .outbox_next_due()
            .expect("next")
            .map(|t| t.timestamp_millis()),
        Some(later.timestamp_millis())
    );
    let stats = store.outbox_stats().expect("stats");
    assert_eq!(stats.pending, 1);
    assert!(stats.oldest.is_some());

    // A refusal is terminal for this version.
    assert!(
        store
            .settle_outbox(
                newer.id,
                newer.version,
                &OutboxOutcome::Failed {
                    error: "422".into()
                }
            )
            .expect("settle")
    );
    let entry = store
        .outbox_entry(&key("bowline/plan"))
        .expect("read")
        .expect("entry");
    assert_eq!(entry.state, OutboxState::Failed);
    assert_eq!(store.outbox_stats().expect("stats"), OutboxStats::default());
    assert_eq!(store.outbox_next_due().expect("next"), None);
}

#[test]
fn replicas_racing_to_claim_an_execution_get_exactly_one_winner() {
    let url = pg().database();
    let stores: Vec<Arc<PostgresStore>> = (0..2)
        .map(|_| Arc::new(PostgresStore::connect(&url, None).expect("connect")))
        .collect();
    for round in 0..20 {
        let e = stores[0]
            .create_execution(NewExecution {
                revision: format!("rev{round}"),
                ..new("web", &["staging"])
            })
            .expect("create");
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, store)| {
                let (store, barrier, id) = (store.clone(), barrier.clone(), e.id.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    store
                        .claim(&id, &format!("replica-{i}"), Duration::from_secs(30))
                        .expect("claim")
                })
            })
            .collect();
        let claims: Vec<Claim> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        let winners = claims.iter().filter(|c| c.is_owned_by_caller()).count();
        assert_eq!(winners, 1, "round {round}: {claims:?}");
        assert!(
            claims.iter().any(|c| matches!(c, Claim::Owned { .. })),
            "round {round}: {claims:?}"
        );
        let started = messages(stores[1].as_ref(), &e.id)
            .iter()
            .filter(|m| *m == "started")
            .count();
        assert_eq!(started, 1, "round {round}");
        stores[1]
            .finish_execution(&e.id, ExecutionStatus::Succeeded, None)
            .expect("finish");
    }
}

#[test]
fn replicas_creating_executions_at_once_supersede_and_refuse_consistently() {
    let url = pg().database();
    let stores: Vec<Arc<PostgresStore>> = (0..4)
        .map(|_| Arc::new(PostgresStore::connect(&url, None).expect("connect")))
        .collect();
    let barrier = Arc::new(Barrier::new(stores.len()));
    let handles: Vec<_> = stores
        .iter()
        .map(|store| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store.create_execution(new("web", &["staging"]))
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let created = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, StoreError::Duplicate { .. })),
        "{results:?}"
    );
}

#[test]
fn replicas_migrating_a_fresh_database_at_once_all_succeed() {
    let url = pg().database();
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                PostgresStore::connect(&url, None).map(|s| s.schema_version())
            })
        })
        .collect();
    for h in handles {
        let version = h
            .join()
            .expect("thread")
            .expect("connect")
            .expect("version");
        assert_eq!(version, 7);
    }
}

#[test]
fn a_database_of_a_newer_schema_is_refused() {
    let (url, store) = open();
    drop(store);
    sql(&url, "UPDATE schema_version SET version = 99").expect("bump");
    match PostgresStore::connect(&url, None) {
        Err(e @ StoreError::Migration { .. }) => {
            let text = e.to_string();
            assert!(text.contains("schema version 99"), "{text}");
            assert!(text.contains("127.0.0.1"), "{text}");
        }
        Err(e) => panic!("expected a migration error, got {e}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

#[test]
fn the_store_works_from_inside_another_runtime_and_errors_name_the_target() {
    let (url, store) = open();
    let store = Arc::new(store);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let inside = store.clone();
    let value = runtime
        .block_on(async move {
            tokio::spawn(async move {
                inside.set_meta("k", "v")?;
                inside.meta("k")
            })
            .await
        })
        .expect("task")
        .expect("meta");
    assert_eq!(value.as_deref(), Some("v"));
    // Dropped from inside a runtime: no panic.
    runtime.block_on(async move { drop(store) });
    // A password given separately overrides the URL's; a wrong database names the target,
    // never the password.
    let missing = url.replace("/test_", "/missing_");
    match PostgresStore::connect(&missing, Some("s3cret-pass".into())) {
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains("127.0.0.1"), "{text}");
            assert!(text.contains("missing_"), "{text}");
            assert!(text.contains("does not exist"), "{text}");
            assert!(!text.contains("s3cret-pass"), "{text}");
        }
        Ok(_) => panic!("connected to a missing database"),
    }
}

#[test]
fn tls_is_required_when_asked_for() {
    let url = pg().database();
    // The throwaway cluster has no TLS: a store that requires it refuses to connect in
    // plain text (verify-full is understood, as require with verification).
    for mode in ["require", "verify-full", "verify-ca"] {
        let url = url.replace("sslmode=disable", &format!("sslmode={mode}"));
        match PostgresStore::connect(&url, None) {
            Err(e) => {
                let text = e.to_string();
                eprintln!("{mode}: {text}");
                assert!(!text.contains("sslmode"), "{mode}: {text}");
                assert!(text.contains("TLS"), "{mode}: {text}");
                assert!(text.contains("127.0.0.1"), "{mode}: {text}");
            }
            Ok(_) => panic!("{mode}: connected without TLS"),
        }
    }
    // prefer (the default) falls back to plain text.
    let prefer = url.replace("sslmode=disable", "sslmode=prefer");
    PostgresStore::connect(&prefer, None).expect("prefer");
    let default = url.replace("?sslmode=disable", "");
    PostgresStore::connect(&default, None).expect("default");
}

/// `bowline run` and `bowline executions` with `--state postgres://…`: the pipeline runs to
/// the end with every transition in PostgreSQL, and a URL carrying a password is refused.
#[test]
fn bowline_runs_a_pipeline_with_its_state_in_postgres() {
    use kube_api_test_server::{TestServer, kubeconfig_for};
    let url = pg().database();
    let repo = tempfile::tempdir().expect("temp dir");
    common::copy_tree(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo"),
        repo.path(),
        &[],
    );
    let app_yaml = repo.path().join("apps/inventory-worker/app.yaml");
    let text = std::fs::read_to_string(&app_yaml).expect("app.yaml");
    std::fs::write(
        &app_yaml,
        text.replacen(
            "  pipeline:\n",
            "  pipeline:\n    variables: {soakTime: 1s}\n",
            1,
        ),
    )
    .expect("app.yaml");
    let staging = TestServer::start();
    staging.create(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-staging"}}),
    );
    let kubeconfig = repo.path().join("kubeconfig.yaml");
    std::fs::write(
        &kubeconfig,
        kubeconfig_for(&[("gke_acme-shop_europe-west1_staging", &staging)]),
    )
    .expect("kubeconfig");
    let password = repo.path().join("pg-password");
    std::fs::write(&password, "not-checked-under-trust\n").expect("password file");
    let bowline = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_bowline"))
            .args(args)
            .arg("--state")
            .arg(&url)
            .arg("--state-password-file")
            .arg(&password)
            .env("BOWLINE_POLL_MS", "50")
            .env_remove("KUBECONFIG")
            .output()
            .expect("bowline runs")
    };
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let run = bowline(&[
        "run",
        repo.path().to_str().expect("utf-8"),
        "--app",
        "inventory-worker",
        "--env",
        "staging",
        "--revision",
        "rev1",
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8"),
    ]);
    assert!(run.status.success(), "{}", text(&run));
    assert!(text(&run).contains("execution SUCCEEDED"), "{}", text(&run));
    let list = bowline(&["executions", "list"]);
    assert!(list.status.success(), "{}", text(&list));
    assert!(
        text(&list).contains("inventory-worker") && text(&list).contains("SUCCEEDED"),
        "{}",
        text(&list)
    );
    let store = PostgresStore::connect(&url, None).expect("connect");
    let executions = store
        .executions(&ExecutionFilter::default())
        .expect("executions");
    assert_eq!(executions.len(), 1);
    assert_eq!(executions[0].status, ExecutionStatus::Succeeded);
    assert!(
        store
            .stages(&executions[0].id)
            .expect("stages")
            .iter()
            .all(|s| s.status == StageStatus::Succeeded),
    );

    let leaky = std::process::Command::new(env!("CARGO_BIN_EXE_bowline"))
        .args(["executions", "list", "--state"])
        .arg(url.replacen("bowline@", "bowline:hunter2@", 1))
        .output()
        .expect("bowline runs");
    assert!(!leaky.status.success());
    assert!(
        text(&leaky).contains("--state-password-file") && !text(&leaky).contains("hunter2"),
        "{}",
        text(&leaky)
    );
}

/// One running execution per app and environment is the database's rule, not the store's
/// code: a raw UPDATE making a second one RUNNING is refused, and a claim waits.
#[test]
fn the_database_refuses_a_second_running_execution_of_an_environment() {
    let (url, store) = open();
    let first = store
        .create_execution(new("web", &["staging"]))
        .expect("first");
    assert_eq!(
        store
            .claim(&first.id, "me", Duration::from_secs(30))
            .expect("claim"),
        Claim::Started
    );
    let mut overlapping = new("web", &["staging", "production"]);
    overlapping.revision = "def456".into();
    let second = store.create_execution(overlapping).expect("second");
    let raw = sql(
        &url,
        &format!(
            "UPDATE executions SET status = 'RUNNING' WHERE id = '{}'",
            second.id
        ),
    )
    .expect_err("the database refuses it");
    assert!(
        raw.to_string().contains("duplicate key") || format!("{raw:?}").contains("23505"),
        "{raw:?}"
    );
    assert_eq!(
        store
            .claim(&second.id, "me", Duration::from_secs(30))
            .expect("claim"),
        Claim::Blocked
    );
    // Another app runs beside it.
    let other_env = store
        .create_execution(new("api", &["staging"]))
        .expect("another app");
    assert_eq!(
        store
            .claim(&other_env.id, "me", Duration::from_secs(30))
            .expect("claim"),
        Claim::Started
    );
    store
        .finish_execution(&other_env.id, ExecutionStatus::Succeeded, None)
        .expect("finish");
    store
        .finish_execution(&first.id, ExecutionStatus::Succeeded, None)
        .expect("finish");
    assert_eq!(
        store
            .claim(&second.id, "me", Duration::from_secs(30))
            .expect("claim"),
        Claim::Started
    );
}

/// Fencing by shard holds, the same in both stores: holds only move forward; a transition,
/// a claim or a finish under an older hold is refused once a newer one is recorded; a fenced
/// claim takes a running execution over at once.
fn fences_refuse_the_replica_that_lost_the_shard(store: &dyn Store) {
    let fence = |holder: &str, generation: i64| Fence {
        shard: 3,
        holder: holder.into(),
        generation,
    };
    assert!(store.record_fence(&fence("a", 1)).expect("record"));
    assert!(
        store.record_fence(&fence("a", 1)).expect("again"),
        "the same hold again"
    );
    assert!(
        !store.record_fence(&fence("b", 0)).expect("older"),
        "an older generation"
    );
    assert!(
        !store.record_fence(&fence("b", 1)).expect("same"),
        "the same generation by another"
    );
    let e = store
        .create_execution(new("web", &["staging"]))
        .expect("create");
    assert_eq!(
        store.active().expect("active"),
        vec![bowline::store::ActiveExecution {
            id: e.id.clone(),
            app: "web".into()
        }]
    );
    let ttl = Duration::from_secs(60);
    assert_eq!(
        store
            .claim_fenced(&e.id, "a", ttl, Some(&fence("a", 1)))
            .expect("claim"),
        Claim::Started
    );
    let update = |holder: &str, generation: i64| StageUpdate {
        status: Some(StageStatus::Running),
        owner: Some(holder.into()),
        fence: Some(fence(holder, generation)),
        ..StageUpdate::default()
    };
    store
        .update_stage(&e.id, "deploy", update("a", 1))
        .expect("a holds the shard");
    // b takes the shard over: a's heartbeat is still valid, the fence lets b take over.
    assert!(store.record_fence(&fence("b", 2)).expect("newer"));
    match store.update_stage(&e.id, "deploy", update("a", 1)) {
        Err(StoreError::Fenced {
            shard: 3,
            generation: 1,
            current,
        }) => assert_eq!(current, "2 held by b"),
        other => panic!("a's transition after b took over: {other:?}"),
    }
    assert!(matches!(
        store.claim_fenced(&e.id, "a", ttl, Some(&fence("a", 1))),
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(
        store.claim(&e.id, "c", ttl).expect("unfenced claim"),
        Claim::Owned {
            owner: "a".into(),
            until: store
                .execution(&e.id)
                .expect("e")
                .owned_until
                .expect("until"),
        },
        "without a fence, a live heartbeat still keeps others out"
    );
    assert_eq!(
        store
            .claim_fenced(&e.id, "b", ttl, Some(&fence("b", 2)))
            .expect("takeover"),
        Claim::TakenOver {
            previous: Some("a".into())
        }
    );
    assert!(
        messages(store, &e.id)
            .iter()
            .any(|m| m == "resumed by b (took shard 3 over from a, generation 2)")
    );
    assert!(
        !store.heartbeat(&e.id, "a", ttl).expect("heartbeat"),
        "a is told it lost it"
    );
    assert!(matches!(
        store.finish_owned(
            &e.id,
            ExecutionStatus::Failed,
            None,
            "a",
            Some(&fence("a", 1))
        ),
        Err(StoreError::Fenced { .. })
    ));
    assert!(matches!(
        store.finish_owned(&e.id, ExecutionStatus::Failed, None, "a", None),
        Err(StoreError::NotOwner { .. })
    ));
    store
        .update_stage(&e.id, "deploy", update("b", 2))
        .expect("b's transition");
    store
        .finish_owned(
            &e.id,
            ExecutionStatus::Succeeded,
            None,
            "b",
            Some(&fence("b", 2)),
        )
        .expect("b finishes");
    let done = store.execution(&e.id).expect("e");
    assert_eq!(done.status, ExecutionStatus::Succeeded);
    assert!(
        matches!(
            store.finish_owned(
                &e.id,
                ExecutionStatus::Failed,
                None,
                "b",
                Some(&fence("b", 2))
            ),
            Err(StoreError::NotOwner { .. })
        ),
        "only a running execution is finished"
    );
}

#[test]
fn postgres_fences_refuse_the_replica_that_lost_the_shard() {
    let (_, store) = open();
    fences_refuse_the_replica_that_lost_the_shard(&store);
}

#[test]
fn sqlite_fences_refuse_the_replica_that_lost_the_shard() {
    let dir = tempfile::tempdir().expect("dir");
    let store = bowline::store::SqliteStore::open(&dir.path().join("state.db")).expect("store");
    fences_refuse_the_replica_that_lost_the_shard(&store);
}

#[test]
fn a_newer_hold_waits_for_a_transition_under_the_older_one_to_commit() {
    // The fence row is share-locked by a transition: recording a newer hold waits for it, so
    // nothing under the older hold commits after the newer one.
    let (url, store) = open();
    let store = Arc::new(store);
    let fence = |holder: &str, generation: i64| Fence {
        shard: 1,
        holder: holder.into(),
        generation,
    };
    assert!(store.record_fence(&fence("a", 1)).expect("record"));
    sql(
        &url,
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(1); RETURN NEW; END $$;
         CREATE TRIGGER slow BEFORE UPDATE ON stages FOR EACH ROW EXECUTE FUNCTION slow();",
    )
    .expect("slow trigger");
    let e = store
        .create_execution(new("web", &["staging"]))
        .expect("create");
    store
        .claim_fenced(&e.id, "a", Duration::from_secs(60), Some(&fence("a", 1)))
        .expect("claim");
    let slow = {
        let (store, id) = (store.clone(), e.id.clone());
        std::thread::spawn(move || {
            store.update_stage(
                &id,
                "deploy",
                StageUpdate {
                    status: Some(StageStatus::Running),
                    owner: Some("a".into()),
                    fence: Some(Fence {
                        shard: 1,
                        holder: "a".into(),
                        generation: 1,
                    }),
                    ..StageUpdate::default()
                },
            )
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert!(store.record_fence(&fence("b", 2)).expect("newer"));
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "the newer hold was recorded while the older one's transition ran ({:?})",
        started.elapsed()
    );
    slow.join()
        .expect("thread")
        .expect("a's transition committed first");
}

#[test]
fn wake_ups_reach_every_replica_listening() {
    let (url, a) = open();
    let b = PostgresStore::connect(&url, None).expect("second replica");
    let mut wakes = b.subscribe().expect("postgres carries wake-ups");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // The first notice after listening starts is the listener's own "look now".
        let first = tokio::time::timeout(Duration::from_secs(10), wakes.recv())
            .await
            .expect("listening")
            .expect("notice");
        assert_eq!(first.payload, "");
        // Skip the other "look now" notices.
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), wakes.recv()).await {
            assert_eq!(n.payload, "");
        }
        a.notify(bowline::store::WAKE_EXECUTIONS, "checkout-api")
            .expect("notify");
        let notice = tokio::time::timeout(Duration::from_secs(10), wakes.recv())
            .await
            .expect("woken within 10 s")
            .expect("notice");
        assert_eq!(notice.channel, bowline::store::WAKE_EXECUTIONS);
        assert_eq!(notice.payload, "checkout-api");
    });
}

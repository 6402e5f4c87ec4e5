//! The store for several replicas: one PostgreSQL database shared by every bowline process.
//!
//! Same schema, SQL and semantics as the SQLite store ([`super::sqlite`]): timestamps are
//! RFC 3339 text with milliseconds (compared as text, so the columns compared or ordered use
//! the byte-wise `"C"` collation, as SQLite compares), JSON values are text. Where SQLite relies
//! on its single writer for read-then-write logic, this store takes row locks (`FOR UPDATE`) or
//! transaction-scoped advisory locks, so replicas racing each other get the same guarantees.
//!
//! The [`Store`] trait is synchronous and is called from plain threads and from inside tokio
//! worker threads alike; the driver is async. The store therefore owns a small runtime of its
//! own: each call spawns its query there and waits for the answer on a channel (never
//! `block_on`, which panics inside another runtime).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::Row;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;

use super::rows::{
    EXECUTION_COLUMNS, OUTBOX_COLUMNS, OUTBOX_RETENTION, corrupt, lease_end, now, overlaps,
    parse_json, parse_time, ts,
};
use super::sqlite::{DELIVERY_CAP, DELIVERY_RETENTION};
use super::{
    AppliedRevision, Claim, Decision, Event, Execution, ExecutionFilter, ExecutionStatus, Fence,
    Judgment, NewExecution, OutboxEntry, OutboxKey, OutboxKind, OutboxOutcome, OutboxState,
    OutboxStats, StageState, StageStatus, StageUpdate, Store, StoreError,
};

/// Schema versions, oldest first: the SQLite store's migrations translated to PostgreSQL.
/// Never edit a released migration; add a new one (to both stores).
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE executions (
    id TEXT COLLATE "C" PRIMARY KEY,
    app TEXT NOT NULL,
    environments TEXT NOT NULL,
    revision TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    status TEXT NOT NULL,
    trigger TEXT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    error TEXT,
    cancel_requested BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX executions_by_app_status ON executions (app, status);
CREATE TABLE stages (
    execution_id TEXT COLLATE "C" NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    name TEXT NOT NULL,
    stage_type TEXT NOT NULL,
    environment TEXT,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL DEFAULT '{}',
    started_at TEXT COLLATE "C",
    finished_at TEXT COLLATE "C",
    error TEXT,
    PRIMARY KEY (execution_id, name)
);
CREATE TABLE events (
    execution_id TEXT COLLATE "C" NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    at TEXT COLLATE "C" NOT NULL,
    stage TEXT,
    message TEXT NOT NULL,
    PRIMARY KEY (execution_id, seq)
);
CREATE TABLE judgments (
    execution_id TEXT COLLATE "C" NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    decision TEXT NOT NULL,
    "user" TEXT NOT NULL,
    input TEXT,
    at TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (execution_id, stage)
);
CREATE TABLE applied (
    id BIGSERIAL PRIMARY KEY,
    app TEXT NOT NULL,
    environment TEXT NOT NULL,
    cluster TEXT NOT NULL,
    revision TEXT NOT NULL,
    objects TEXT NOT NULL,
    execution_id TEXT COLLATE "C" NOT NULL,
    applied_at TEXT COLLATE "C" NOT NULL
);
CREATE INDEX applied_by_target ON applied (app, environment, cluster, id);
"#,
    r#"
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL
);
"#,
    r#"
CREATE TABLE deliveries (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    received_at TEXT COLLATE "C" NOT NULL
);
CREATE INDEX deliveries_by_time ON deliveries (received_at);
"#,
    // Ownership of running executions, and one active execution per (app, revision); see the
    // SQLite migration.
    r#"
ALTER TABLE executions ADD COLUMN owner TEXT;
ALTER TABLE executions ADD COLUMN heartbeat_at TEXT COLLATE "C";
ALTER TABLE executions ADD COLUMN owned_until TEXT COLLATE "C";
UPDATE executions SET status = 'SUPERSEDED',
    error = 'another execution of this revision was active when the schema was upgraded'
WHERE status IN ('QUEUED', 'RUNNING') AND EXISTS (
    SELECT 1 FROM executions o
    WHERE o.app = executions.app AND o.revision = executions.revision
      AND o.status IN ('QUEUED', 'RUNNING') AND o.id <> executions.id
      AND ((o.status = 'RUNNING' AND executions.status = 'QUEUED')
           OR (o.status = executions.status AND o.id < executions.id)));
CREATE UNIQUE INDEX executions_one_active_per_revision ON executions (app, revision)
    WHERE status IN ('QUEUED', 'RUNNING');
"#,
    r#"
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    repo TEXT NOT NULL,
    subject TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    version BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TEXT COLLATE "C" NOT NULL,
    last_error TEXT,
    recorded_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    UNIQUE (kind, repo, subject, name)
);
CREATE INDEX outbox_by_state ON outbox (state, next_attempt_at);
"#,
    // One running execution per app and environment, as a constraint of the database (see
    // the SQLite store's version 6).
    r#"
CREATE TABLE running_environments (
    app TEXT COLLATE "C" NOT NULL,
    environment TEXT COLLATE "C" NOT NULL,
    execution_id TEXT COLLATE "C" NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    PRIMARY KEY (app, environment)
);
INSERT INTO running_environments (app, environment, execution_id)
    SELECT e.app, j.value, e.id
    FROM executions e, jsonb_array_elements_text(e.environments::jsonb) AS j(value)
    WHERE e.status = 'RUNNING'
    ON CONFLICT DO NOTHING;
CREATE FUNCTION executions_running() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'RUNNING' AND OLD.status <> 'RUNNING' THEN
        INSERT INTO running_environments (app, environment, execution_id)
            SELECT NEW.app, j.value, NEW.id
            FROM jsonb_array_elements_text(NEW.environments::jsonb) AS j(value);
    ELSIF NEW.status <> 'RUNNING' AND OLD.status = 'RUNNING' THEN
        DELETE FROM running_environments WHERE execution_id = NEW.id;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER executions_running AFTER UPDATE OF status ON executions
    FOR EACH ROW EXECUTE FUNCTION executions_running();
"#,
    // Which replica holds each shard of apps, by the generation of its shard Lease: the
    // fencing token of stage transitions (the SQLite store's version 7).
    r#"
CREATE TABLE shard_fences (
    shard BIGINT PRIMARY KEY,
    holder TEXT NOT NULL,
    generation BIGINT NOT NULL,
    recorded_at TEXT NOT NULL
);
"#,
];

/// Advisory lock (single 64-bit key) held while migrating: replicas starting together migrate
/// one after the other. ("bowline" in ASCII.)
const MIGRATION_LOCK: i64 = 0x0062_6f77_6c69_6e65;

/// Class of the two-key advisory locks below; two-key locks never collide with single-key ones.
const LOCK_CLASS: i32 = 0x626f_776c;
/// Second key of the lock serializing delivery ids (pruning and recording).
const DELIVERIES_LOCK: i32 = 1;
/// Second key of the lock serializing outbox recordings (their `seq` is the table's maximum
/// plus one).
const OUTBOX_LOCK: i32 = 2;

/// Connections in the pool.
const POOL_SIZE: usize = 8;

const STAGE_COLUMNS: &str = "name, stage_type, environment, status, attempts, inputs, outputs, started_at, finished_at, error";

/// The PostgreSQL store.
pub struct PostgresStore {
    db: Db,
    /// How to open the connection that listens for wake-ups.
    listen: Listen,
    /// Wake-ups from other replicas, once someone subscribed.
    notices: std::sync::OnceLock<tokio::sync::broadcast::Sender<super::Notice>>,
    /// Runs the queries; `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    delivery_retention: chrono::TimeDelta,
    delivery_cap: i64,
}

/// The connection settings of the listening connection (a pooled one cannot `LISTEN`).
#[derive(Clone)]
struct Listen {
    config: tokio_postgres::Config,
    tls: Option<rustls::ClientConfig>,
    target: Arc<str>,
}

/// What a query needs: the pool, and the database's name for errors.
#[derive(Clone)]
struct Db {
    pool: Pool,
    /// `host:port/dbname`, never the password.
    target: Arc<str>,
}

impl Db {
    fn pg(&self) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
        move |source| StoreError::Postgres {
            target: self.target.to_string(),
            source,
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(source) => StoreError::Postgres {
                target: self.target.to_string(),
                source,
            },
            other => StoreError::PostgresPool {
                target: self.target.to_string(),
                message: other.to_string(),
            },
        })
    }
}

/// A driver error as a sentence: the server's message for a database error (the driver's own
/// text says only "db error"), else the driver's text with its causes.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(": ");
            text.push_str(detail);
        }
        return text;
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// `host:port/dbname` of a connection configuration (no credentials).
fn target_of(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// A rustls client configuration (ring provider) trusting the system's root certificates.
fn tls_config(target: &str) -> Result<rustls::ClientConfig, StoreError> {
    let tls_err = |message: String| StoreError::PostgresPool {
        target: target.to_string(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // A certificate the verifier cannot use is skipped, as every rustls client does.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "none found".to_string());
        return Err(tls_err(format!("TLS: no usable root certificates ({why})")));
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(format!("TLS: {e}")))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// One row's column, or a `Postgres` error naming the store.
fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
    db: &Db,
    row: &'a Row,
    i: usize,
) -> Result<T, StoreError> {
    row.try_get(i).map_err(db.pg())
}

fn to_execution(db: &Db, r: &Row) -> Result<Execution, StoreError> {
    let envs: String = col(db, r, 2)?;
    let status: String = col(db, r, 5)?;
    let trigger: String = col(db, r, 6)?;
    let created: String = col(db, r, 7)?;
    let updated: String = col(db, r, 8)?;
    let cancel: i64 = col(db, r, 10)?;
    let heartbeat: Option<String> = col(db, r, 12)?;
    let until: Option<String> = col(db, r, 13)?;
    Ok(Execution {
        id: col(db, r, 0)?,
        app: col(db, r, 1)?,
        environments: serde_json::from_str(&envs).map_err(|e| corrupt("environments", e))?,
        revision: col(db, r, 3)?,
        pipeline: col(db, r, 4)?,
        status: ExecutionStatus::parse(&status)
            .ok_or_else(|| corrupt("execution status", &status))?,
        trigger: parse_json(&trigger, "trigger")?,
        created_at: parse_time(&created)?,
        updated_at: parse_time(&updated)?,
        error: col(db, r, 9)?,
        cancel_requested: cancel != 0,
        owner: col(db, r, 11)?,
        heartbeat_at: heartbeat.as_deref().map(parse_time).transpose()?,
        owned_until: until.as_deref().map(parse_time).transpose()?,
    })
}

fn to_stage(db: &Db, r: &Row) -> Result<StageState, StoreError> {
    let status: String = col(db, r, 3)?;
    let attempts: i64 = col(db, r, 4)?;
    let inputs: String = col(db, r, 5)?;
    let outputs: String = col(db, r, 6)?;
    let started: Option<String> = col(db, r, 7)?;
    let finished: Option<String> = col(db, r, 8)?;
    Ok(StageState {
        name: col(db, r, 0)?,
        stage_type: col(db, r, 1)?,
        environment: col(db, r, 2)?,
        status: StageStatus::parse(&status).ok_or_else(|| corrupt("stage status", &status))?,
        attempts: u32::try_from(attempts).map_err(|e| corrupt("attempts", e))?,
        inputs: parse_json(&inputs, "stage inputs")?,
        outputs: parse_json(&outputs, "stage outputs")?,
        started_at: started.as_deref().map(parse_time).transpose()?,
        finished_at: finished.as_deref().map(parse_time).transpose()?,
        error: col(db, r, 9)?,
    })
}

fn to_outbox(db: &Db, r: &Row) -> Result<OutboxEntry, StoreError> {
    let kind: String = col(db, r, 1)?;
    let state: String = col(db, r, 7)?;
    let attempts: i64 = col(db, r, 8)?;
    let next: String = col(db, r, 9)?;
    let recorded: String = col(db, r, 11)?;
    Ok(OutboxEntry {
        id: col(db, r, 0)?,
        key: OutboxKey {
            kind: OutboxKind::parse(&kind).ok_or_else(|| corrupt("outbox kind", &kind))?,
            repo: col(db, r, 2)?,
            subject: col(db, r, 3)?,
            name: col(db, r, 4)?,
        },
        payload: col(db, r, 5)?,
        version: col(db, r, 6)?,
        state: OutboxState::parse(&state).ok_or_else(|| corrupt("outbox state", &state))?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at: parse_time(&next)?,
        last_error: col(db, r, 10)?,
        recorded_at: parse_time(&recorded)?,
    })
}

/// Appends to an execution's event log. The execution's row is locked first, so concurrent
/// appends to one log take their `seq` one after the other.
async fn append_event(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &str,
    stage: Option<&str>,
    message: &str,
    at: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute("SELECT 1 FROM executions WHERE id = $1 FOR UPDATE", &[&id])
        .await?;
    tx.execute(
        "INSERT INTO events (execution_id, seq, at, stage, message)
         VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE execution_id = $1), $2, $3, $4)",
        &[&id, &at, &stage, &message],
    )
    .await?;
    Ok(())
}

/// Serializes the transaction `tx` with every other one touching app `app`'s executions
/// (creation with its supersede rules, claims with their blocking rule).
async fn lock_app(
    tx: &deadpool_postgres::Transaction<'_>,
    app: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_CLASS, &app],
    )
    .await?;
    Ok(())
}

/// Migrates the schema to the latest version, one version per transaction, each under the
/// migration lock. A database of a newer schema than this bowline knows is refused.
async fn migrate(db: &Db) -> Result<u32, StoreError> {
    let pg = db.pg();
    let mut client = db.client().await?;
    loop {
        let tx = client.transaction().await.map_err(&pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(&pg)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .await
            .map_err(&pg)?;
        let row = tx
            .query_one("SELECT MAX(version) FROM schema_version", &[])
            .await
            .map_err(&pg)?;
        let version: Option<i32> = col(db, &row, 0)?;
        let version = usize::try_from(version.unwrap_or(0)).map_err(|_| StoreError::Migration {
            path: db.target.to_string(),
            message: format!("invalid schema version {version:?}"),
        })?;
        if version > MIGRATIONS.len() {
            return Err(StoreError::Migration {
                path: db.target.to_string(),
                message: format!(
                    "the database has schema version {version}, newer than this bowline knows ({}); upgrade bowline",
                    MIGRATIONS.len()
                ),
            });
        }
        let Some(sql) = MIGRATIONS.get(version) else {
            tx.commit().await.map_err(&pg)?;
            // Bounded by the array's length, a small constant.
            return Ok(version as u32);
        };
        tx.batch_execute(sql)
            .await
            .map_err(|e| StoreError::Migration {
                path: db.target.to_string(),
                message: format!("to version {}: {e}", version + 1),
            })?;
        let next = i32::try_from(version + 1).unwrap_or(i32::MAX);
        tx.execute("DELETE FROM schema_version", &[])
            .await
            .map_err(&pg)?;
        tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&next])
            .await
            .map_err(&pg)?;
        tx.commit().await.map_err(&pg)?;
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db?sslmode=…`) and
    /// migrates its schema. `password`, when given (read from a password file), overrides the
    /// URL's. `sslmode=require` (also `verify-ca` and `verify-full`) connects over TLS,
    /// verifying the server's certificate against the system's roots; `disable` and `prefer`
    /// (the default) connect without TLS.
    pub fn connect(url: &str, password: Option<String>) -> Result<PostgresStore, StoreError> {
        // tokio-postgres knows only disable, prefer and require; this store always verifies.
        let url = url
            .replace("sslmode=verify-full", "sslmode=require")
            .replace("sslmode=verify-ca", "sslmode=require");
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|source| StoreError::Postgres {
                target: "(connection URL)".to_string(),
                source,
            })?;
        if let Some(password) = password {
            config.password(password);
        }
        // An unreachable server fails the call instead of hanging it.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let target = target_of(&config);
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let tls = if config.get_ssl_mode() == SslMode::Require {
            Some(tls_config(&target)?)
        } else {
            config.ssl_mode(SslMode::Disable);
            None
        };
        let listen = Listen {
            config: config.clone(),
            tls: tls.clone(),
            target: target.as_str().into(),
        };
        let manager = match tls {
            Some(tls) => Manager::from_config(
                config,
                tokio_postgres_rustls::MakeRustlsConnect::new(tls),
                manager_config,
            ),
            None => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
        };
        let pool_err = |message: String| StoreError::PostgresPool {
            target: target.clone(),
            message,
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(15)))
            .wait_timeout(Some(Duration::from_secs(60)))
            .build()
            .map_err(|e| pool_err(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bowline-postgres")
            .enable_all()
            .build()
            .map_err(|e| pool_err(format!("starting the driver's runtime: {e}")))?;
        let store = PostgresStore {
            db: Db {
                pool,
                target: target.as_str().into(),
            },
            listen,
            notices: std::sync::OnceLock::new(),
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            delivery_retention: chrono::TimeDelta::from_std(DELIVERY_RETENTION)
                .unwrap_or(chrono::TimeDelta::MAX),
            delivery_cap: DELIVERY_CAP as i64,
        };
        store.run(|db| async move { migrate(&db).await })?;
        Ok(store)
    }

    /// Remembers webhook delivery ids for `retention`, at most `cap` of them (at least one)
    /// (defaults [`DELIVERY_RETENTION`], [`DELIVERY_CAP`]).
    pub fn with_delivery_limits(mut self, retention: Duration, cap: usize) -> Self {
        self.delivery_retention =
            chrono::TimeDelta::from_std(retention).unwrap_or(chrono::TimeDelta::MAX);
        self.delivery_cap = i64::try_from(cap.max(1)).unwrap_or(i64::MAX);
        self
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.run(|db| async move {
            let client = db.client().await?;
            let row = client
                .query_one("SELECT MAX(version) FROM schema_version", &[])
                .await
                .map_err(db.pg())?;
            let version: Option<i32> = col(&db, &row, 0)?;
            Ok(u32::try_from(version.unwrap_or(0)).unwrap_or(0))
        })
    }

    /// Runs `f`'s query on the store's runtime and waits for its answer. Safe to call from
    /// any thread, including a worker of another tokio runtime.
    fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Db) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let (send, receive) = std::sync::mpsc::sync_channel(1);
        let query = f(self.db.clone());
        self.handle.spawn(async move {
            // The caller waits on the other end until it gets this answer.
            let _ = send.send(query.await);
        });
        receive.recv().unwrap_or_else(|_| {
            Err(StoreError::PostgresPool {
                target: self.db.target.to_string(),
                message: "the query was abandoned (the store's runtime stopped)".to_string(),
            })
        })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime; this does not.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The latest applied revision of an app, environment and cluster: by a succeeded execution
/// only when `succeeded`, created before `before_execution` when given.
async fn applied_where(
    db: &Db,
    app: String,
    environment: String,
    cluster: String,
    succeeded: bool,
    before_execution: Option<String>,
) -> Result<Option<AppliedRevision>, StoreError> {
    let client = db.client().await?;
    let row = client
        .query_opt(
            "SELECT a.revision, a.objects, a.execution_id, a.applied_at
             FROM applied a JOIN executions e ON e.id = a.execution_id
             WHERE a.app = $1 AND a.environment = $2 AND a.cluster = $3
               AND (NOT $5::boolean OR e.status = 'SUCCEEDED')
               AND ($4::text IS NULL OR a.execution_id < $4::text)
             ORDER BY a.id DESC LIMIT 1",
            &[&app, &environment, &cluster, &before_execution, &succeeded],
        )
        .await
        .map_err(db.pg())?;
    let Some(row) = row else {
        return Ok(None);
    };
    let objects: String = col(db, &row, 1)?;
    let at: String = col(db, &row, 3)?;
    Ok(Some(AppliedRevision {
        app,
        environment,
        cluster,
        revision: col(db, &row, 0)?,
        objects: serde_json::from_str(&objects).map_err(|e| corrupt("objects", e))?,
        execution: col(db, &row, 2)?,
        applied_at: parse_time(&at)?,
    }))
}

/// The queued or running execution of `app` at `revision`, as a [`StoreError::Duplicate`].
async fn active_duplicate(
    db: &Db,
    tx: &deadpool_postgres::Transaction<'_>,
    app: &str,
    revision: &str,
) -> Result<Option<StoreError>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT id, status FROM executions
             WHERE app = $1 AND revision = $2 AND status IN ('QUEUED', 'RUNNING')",
            &[&app, &revision],
        )
        .await
        .map_err(db.pg())?;
    let Some(row) = row else {
        return Ok(None);
    };
    let status: String = col(db, &row, 1)?;
    Ok(Some(StoreError::Duplicate {
        app: app.to_string(),
        revision: revision.to_string(),
        existing: col(db, &row, 0)?,
        status: ExecutionStatus::parse(&status)
            .ok_or_else(|| corrupt("execution status", &status))?,
    }))
}

/// Ends execution `id` with `status` and logs it; `false` when there is no such execution.
async fn finish_in(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &str,
    status: ExecutionStatus,
    error: Option<&str>,
) -> Result<bool, tokio_postgres::Error> {
    let at = ts(now());
    let changed = tx
        .execute(
            "UPDATE executions SET status = $2, error = $3, updated_at = $4 WHERE id = $1",
            &[&id, &status.as_str(), &error, &at],
        )
        .await?;
    if changed == 0 {
        return Ok(false);
    }
    let message = match error {
        Some(e) => format!("{status}: {e}"),
        None => status.to_string(),
    };
    append_event(tx, id, None, &message, &at).await?;
    Ok(true)
}

/// Refuses with [`StoreError::Fenced`] unless `fence` is its shard's newest hold. The row is
/// share-locked, so a newer hold cannot be recorded before this transaction ends: once a
/// successor's hold is committed, no change under the older one commits after it.
async fn check_fence(
    db: &Db,
    tx: &deadpool_postgres::Transaction<'_>,
    fence: &Fence,
) -> Result<(), StoreError> {
    let row = tx
        .query_opt(
            "SELECT holder, generation FROM shard_fences WHERE shard = $1 FOR SHARE",
            &[&i64::from(fence.shard)],
        )
        .await
        .map_err(db.pg())?;
    let current = match row {
        Some(row) => Some((col(db, &row, 0)?, col(db, &row, 1)?)),
        None => None,
    };
    super::rows::fence_holds(fence, current)
}

/// Wake-ups kept for a slow listener; one that falls behind rescans anyway.
const NOTICE_BUFFER: usize = 256;

/// Keeps a connection listening on the wake-up channels, forwarding what arrives to `sender`;
/// reconnects after a loss (with a wake-up on every channel then, as some may have been
/// missed). Ends when nobody listens any more.
async fn listen_loop(listen: Listen, sender: tokio::sync::broadcast::Sender<super::Notice>) {
    let mut delay = Duration::from_millis(500);
    loop {
        let result = match &listen.tls {
            Some(tls) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls.clone());
                match listen.config.connect(tls).await {
                    Ok((client, connection)) => listen_on(client, connection, &sender).await,
                    Err(e) => Err(describe(&e)),
                }
            }
            None => match listen.config.connect(tokio_postgres::NoTls).await {
                Ok((client, connection)) => listen_on(client, connection, &sender).await,
                Err(e) => Err(describe(&e)),
            },
        };
        if sender.receiver_count() == 0 {
            return;
        }
        match result {
            Ok(()) => delay = Duration::from_millis(500),
            Err(e) => {
                tracing::warn!(store = %listen.target, error = %e, "listening for wake-ups: reconnecting");
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
        tokio::time::sleep(delay).await;
    }
}

/// Listens on one connection until it ends.
async fn listen_on<S, T>(
    client: tokio_postgres::Client,
    mut connection: tokio_postgres::Connection<S, T>,
    sender: &tokio::sync::broadcast::Sender<super::Notice>,
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (messages, mut inbox) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(message)) => {
                    if messages.send(message).is_err() {
                        return Ok(());
                    }
                }
                Some(Err(e)) => return Err(describe(&e)),
                None => return Ok(()),
            }
        }
    });
    let listening = client
        .batch_execute(&format!(
            "LISTEN {}; LISTEN {}",
            super::WAKE_EXECUTIONS,
            super::WAKE_RECONCILE
        ))
        .await;
    if let Err(e) = listening {
        driver.abort();
        return Err(describe(&e));
    }
    for channel in [super::WAKE_EXECUTIONS, super::WAKE_RECONCILE] {
        let _ = sender.send(super::Notice {
            channel: channel.to_string(),
            payload: String::new(),
        });
    }
    while let Some(message) = inbox.recv().await {
        if let tokio_postgres::AsyncMessage::Notification(n) = message {
            let _ = sender.send(super::Notice {
                channel: n.channel().to_string(),
                payload: n.payload().to_string(),
            });
        }
        if sender.receiver_count() == 0 {
            break;
        }
    }
    drop(client);
    driver.await.map_err(|e| e.to_string())?
}

async fn read_execution(db: &Db, id: &str) -> Result<Execution, StoreError> {
    let client = db.client().await?;
    let row = client
        .query_opt(
            &format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(db.pg())?;
    match row {
        Some(row) => to_execution(db, &row),
        None => Err(StoreError::NoExecution(id.to_string())),
    }
}

impl Store for PostgresStore {
    fn create_execution(&self, new: NewExecution) -> Result<Execution, StoreError> {
        self.run(|db| async move {
            let pg = db.pg();
            let id = ulid::Ulid::new().to_string();
            {
                let mut client = db.client().await?;
                let tx = client.transaction().await.map_err(&pg)?;
                lock_app(&tx, &new.app).await.map_err(&pg)?;
                let at = ts(now());
                let envs = serde_json::to_string(&new.environments)
                    .map_err(|e| corrupt("environments", e))?;
                // One queued or running execution per app and revision (also a unique index).
                if let Some(duplicate) = active_duplicate(&db, &tx, &new.app, &new.revision).await?
                {
                    return Err(duplicate);
                }
                // Queued executions of the same app and environments are replaced by this
                // newer one.
                let queued = tx
                    .query(
                        "SELECT id, environments FROM executions WHERE app = $1 AND status = 'QUEUED'",
                        &[&new.app],
                    )
                    .await
                    .map_err(&pg)?;
                for row in queued {
                    let old: String = col(&db, &row, 0)?;
                    let old_envs: String = col(&db, &row, 1)?;
                    let old_envs: Vec<String> = serde_json::from_str(&old_envs)
                        .map_err(|e| corrupt("environments", e))?;
                    if overlaps(&old_envs, &new.environments) {
                        tx.execute(
                            "UPDATE executions SET status = 'SUPERSEDED', updated_at = $2 WHERE id = $1",
                            &[&old, &at],
                        )
                        .await
                        .map_err(&pg)?;
                        append_event(
                            &tx,
                            &old,
                            None,
                            &format!("superseded by execution {id}"),
                            &at,
                        )
                        .await
                        .map_err(&pg)?;
                    }
                }
                let trigger =
                    serde_json::to_string(&new.trigger).map_err(|e| corrupt("trigger", e))?;
                let inserted = tx
                    .execute(
                        "INSERT INTO executions (id, app, environments, revision, pipeline, status, trigger, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, 'QUEUED', $6, $7, $7)",
                        &[&id, &new.app, &envs, &new.revision, &new.pipeline, &trigger, &at],
                    )
                    .await;
                if let Err(e) = inserted {
                    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                        // Only possible against a writer that skipped the app lock; the
                        // transaction is void, so the active one is read outside of it.
                        drop(tx);
                        let tx = client.transaction().await.map_err(&pg)?;
                        if let Some(duplicate) =
                            active_duplicate(&db, &tx, &new.app, &new.revision).await?
                        {
                            return Err(duplicate);
                        }
                    }
                    return Err(pg(e));
                }
                for (position, stage) in new.stages.iter().enumerate() {
                    let inputs =
                        serde_json::to_string(&stage.inputs).map_err(|e| corrupt("inputs", e))?;
                    tx.execute(
                        "INSERT INTO stages (execution_id, position, name, stage_type, environment, status, inputs)
                         VALUES ($1, $2, $3, $4, $5, 'NOT_STARTED', $6)",
                        &[&id, &(position as i64), &stage.name, &stage.stage_type, &stage.environment, &inputs],
                    )
                    .await
                    .map_err(&pg)?;
                }
                append_event(
                    &tx,
                    &id,
                    None,
                    &format!("queued: {} at revision {}", new.pipeline, new.revision),
                    &at,
                )
                .await
                .map_err(&pg)?;
                tx.commit().await.map_err(&pg)?;
            }
            read_execution(&db, &id).await
        })
    }

    fn claim_fenced(
        &self,
        id: &str,
        owner: &str,
        ttl: Duration,
        fence: Option<&Fence>,
    ) -> Result<Claim, StoreError> {
        let (id, owner, fence) = (id.to_string(), owner.to_string(), fence.cloned());
        self.run(|db| async move {
            let pg = db.pg();
            let mut client = db.client().await?;
            let tx = client.transaction().await.map_err(&pg)?;
            if let Some(fence) = &fence {
                check_fence(&db, &tx, fence).await?;
            }
            // The app never changes: read it first, then serialize with the app's other
            // claims and creations.
            let Some(app_row) = tx
                .query_opt("SELECT app FROM executions WHERE id = $1", &[&id])
                .await
                .map_err(&pg)?
            else {
                return Err(StoreError::NoExecution(id));
            };
            let app: String = col(&db, &app_row, 0)?;
            lock_app(&tx, &app).await.map_err(&pg)?;
            let Some(row) = tx
                .query_opt(
                    "SELECT status, owner, owned_until FROM executions
                     WHERE id = $1 FOR UPDATE",
                    &[&id],
                )
                .await
                .map_err(&pg)?
            else {
                return Err(StoreError::NoExecution(id));
            };
            let status: String = col(&db, &row, 0)?;
            let current: Option<String> = col(&db, &row, 1)?;
            let until: Option<String> = col(&db, &row, 2)?;
            let now = now();
            let until_new = ts(lease_end(now, ttl));
            let at = ts(now);
            if status == "RUNNING" {
                let until = until.as_deref().map(parse_time).transpose()?;
                let claim = match (&current, until) {
                    (Some(current), _) if *current == owner => Claim::Started,
                    // A fenced claim takes over at once: the owner lost the shard.
                    (Some(current), Some(until)) if until > now && fence.is_none() => {
                        return Ok(Claim::Owned {
                            owner: current.clone(),
                            until,
                        });
                    }
                    _ => Claim::TakenOver {
                        previous: current.clone(),
                    },
                };
                tx.execute(
                    "UPDATE executions SET owner = $2, heartbeat_at = $3, owned_until = $4 WHERE id = $1",
                    &[&id, &owner, &at, &until_new],
                )
                .await
                .map_err(&pg)?;
                if let Claim::TakenOver { previous } = &claim {
                    let message = super::rows::resumed_message(
                        &owner,
                        previous.as_deref(),
                        fence.as_ref(),
                    );
                    append_event(&tx, &id, None, &message, &at)
                        .await
                        .map_err(&pg)?;
                }
                tx.commit().await.map_err(&pg)?;
                return Ok(claim);
            }
            if status != "QUEUED" {
                return Err(StoreError::Conflict(format!(
                    "execution {id} is {status}, not queued"
                )));
            }
            // The database refuses a second running execution of an environment of this app
            // (table running_environments): then this one waits.
            let started = tx
                .execute(
                    "UPDATE executions SET status = 'RUNNING', updated_at = $2, owner = $3,
                        heartbeat_at = $2, owned_until = $4
                     WHERE id = $1",
                    &[&id, &at, &owner, &until_new],
                )
                .await;
            match started {
                Ok(_) => {}
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    return Ok(Claim::Blocked);
                }
                Err(e) => return Err(pg(e)),
            }
            append_event(&tx, &id, None, "started", &at)
                .await
                .map_err(&pg)?;
            tx.commit().await.map_err(&pg)?;
            Ok(Claim::Started)
        })
    }

    fn heartbeat(&self, id: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let (id, owner) = (id.to_string(), owner.to_string());
        self.run(|db| async move {
            let now = now();
            let changed = db
                .client()
                .await?
                .execute(
                    "UPDATE executions SET heartbeat_at = $3, owned_until = $4
                     WHERE id = $1 AND owner = $2 AND status = 'RUNNING'",
                    &[&id, &owner, &ts(now), &ts(lease_end(now, ttl))],
                )
                .await
                .map_err(db.pg())?;
            Ok(changed == 1)
        })
    }

    fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        let (id, owner) = (id.to_string(), owner.to_string());
        self.run(|db| async move {
            db.client()
                .await?
                .execute(
                    "UPDATE executions SET owner = NULL, owned_until = NULL WHERE id = $1 AND owner = $2",
                    &[&id, &owner],
                )
                .await
                .map_err(db.pg())?;
            Ok(())
        })
    }

    fn execution(&self, id: &str) -> Result<Execution, StoreError> {
        let id = id.to_string();
        self.run(|db| async move { read_execution(&db, &id).await })
    }

    fn executions(&self, filter: &ExecutionFilter) -> Result<Vec<Execution>, StoreError> {
        let filter = filter.clone();
        self.run(|db| async move {
            let client = db.client().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {EXECUTION_COLUMNS} FROM executions
                         WHERE ($1::text IS NULL OR app = $1::text)
                           AND ($2::text IS NULL OR status IN
                                (SELECT jsonb_array_elements_text($2::text::jsonb)))
                         ORDER BY id DESC LIMIT $3::bigint"
                    ),
                    &[
                        &filter.app,
                        &super::rows::status_list(&filter.statuses),
                        &filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX)),
                    ],
                )
                .await
                .map_err(db.pg())?;
            rows.iter().map(|row| to_execution(&db, row)).collect()
        })
    }

    fn active(&self) -> Result<Vec<super::ActiveExecution>, StoreError> {
        self.run(|db| async move {
            let rows = db
                .client()
                .await?
                .query(
                    "SELECT id, app FROM executions WHERE status IN ('QUEUED', 'RUNNING') ORDER BY id",
                    &[],
                )
                .await
                .map_err(db.pg())?;
            rows.iter()
                .map(|r| {
                    Ok(super::ActiveExecution {
                        id: col(&db, r, 0)?,
                        app: col(&db, r, 1)?,
                    })
                })
                .collect()
        })
    }

    fn stages(&self, id: &str) -> Result<Vec<StageState>, StoreError> {
        let id = id.to_string();
        self.run(|db| async move {
            let client = db.client().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {STAGE_COLUMNS} FROM stages WHERE execution_id = $1 ORDER BY position"
                    ),
                    &[&id],
                )
                .await
                .map_err(db.pg())?;
            rows.iter().map(|r| to_stage(&db, r)).collect()
        })
    }

    fn update_stage(
        &self,
        id: &str,
        stage: &str,
        update: StageUpdate,
    ) -> Result<StageState, StoreError> {
        let (id, stage) = (id.to_string(), stage.to_string());
        self.run(|db| async move {
            let pg = db.pg();
            let mut client = db.client().await?;
            let tx = client.transaction().await.map_err(&pg)?;
            let at = ts(now());
            // Locked whether fenced or not: a takeover waits for this change, or this
            // change sees the new owner.
            let current = tx
                .query_opt("SELECT owner FROM executions WHERE id = $1 FOR UPDATE", &[&id])
                .await
                .map_err(&pg)?;
            if let Some(owner) = &update.owner {
                let current: Option<Option<String>> =
                    current.map(|r| col(&db, &r, 0)).transpose()?;
                if current
                    .as_ref()
                    .is_some_and(|c| c.as_deref() != Some(owner.as_str()))
                {
                    return Err(StoreError::NotOwner {
                        execution: id,
                        owner: owner.clone(),
                    });
                }
            }
            if let Some(fence) = &update.fence {
                check_fence(&db, &tx, fence).await?;
            }
            let status = update.status.map(|s| s.as_str());
            // Started means started work: waiting for an execution window is not (a stage's
            // timeout counts from here).
            let started = matches!(update.status, Some(StageStatus::Running));
            let finished = update.status.is_some_and(|s| s.is_final());
            let outputs = update
                .outputs
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| corrupt("outputs", e))?;
            let changed = tx
                .execute(
                    "UPDATE stages SET
                        status = COALESCE($3::text, status),
                        outputs = COALESCE($4::text, outputs),
                        attempts = attempts + $5::bigint,
                        error = CASE WHEN $6::boolean THEN $7::text ELSE error END,
                        started_at = CASE WHEN $8::boolean AND started_at IS NULL THEN $10::text ELSE started_at END,
                        finished_at = CASE WHEN $9::boolean THEN $10::text ELSE finished_at END
                     WHERE execution_id = $1 AND name = $2",
                    &[
                        &id,
                        &stage,
                        &status,
                        &outputs,
                        &i64::from(update.new_attempt),
                        &update.error.is_some(),
                        &update.error.clone().flatten(),
                        &started,
                        &finished,
                        &at,
                    ],
                )
                .await
                .map_err(&pg)?;
            if changed == 0 {
                return Err(StoreError::NoStage {
                    execution: id,
                    stage,
                });
            }
            if let Some(message) = &update.event {
                append_event(&tx, &id, Some(&stage), message, &at)
                    .await
                    .map_err(&pg)?;
            }
            tx.execute(
                "UPDATE executions SET updated_at = $2 WHERE id = $1",
                &[&id, &at],
            )
            .await
            .map_err(&pg)?;
            let row = tx
                .query_one(
                    &format!(
                        "SELECT {STAGE_COLUMNS} FROM stages WHERE execution_id = $1 AND name = $2"
                    ),
                    &[&id, &stage],
                )
                .await
                .map_err(&pg)?;
            tx.commit().await.map_err(&pg)?;
            to_stage(&db, &row)
        })
    }

    fn finish_execution(
        &self,
        id: &str,
        status: ExecutionStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        let error = error.map(str::to_string);
        self.run(|db| async move {
            let pg = db.pg();
            let mut client = db.client().await?;
            let tx = client.transaction().await.map_err(&pg)?;
            if !finish_in(&tx, &id, status, error.as_deref())
                .await
                .map_err(&pg)?
            {
                return Err(StoreError::NoExecution(id));
            }
            tx.commit().await.map_err(&pg)
        })
    }

    fn finish_owned(
        &self,
        id: &str,
        status: ExecutionStatus,
        error: Option<&str>,
        owner: &str,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let (id, owner, fence) = (id.to_string(), owner.to_string(), fence.cloned());
        let error = error.map(str::to_string);
        self.run(|db| async move {
            let pg = db.pg();
            let mut client = db.client().await?;
            let tx = client.transaction().await.map_err(&pg)?;
            if let Some(fence) = &fence {
                check_fence(&db, &tx, fence).await?;
            }
            let current = tx
                .query_opt(
                    "SELECT owner FROM executions WHERE id = $1 AND status = 'RUNNING' FOR UPDATE",
                    &[&id],
                )
                .await
                .map_err(&pg)?;
            let current: Option<Option<String>> = current.map(|r| col(&db, &r, 0)).transpose()?;
            if current.flatten().as_deref() != Some(owner.as_str()) {
                return Err(StoreError::NotOwner {
                    execution: id,
                    owner,
                });
            }
            if !finish_in(&tx, &id, status, error.as_deref())
                .await
                .map_err(&pg)?
            {
                return Err(StoreError::NoExecution(id));
            }
            tx.commit().await.map_err(&pg)
        })
    }

    fn record_fence(&self, fence: &Fence) -> Result<bool, StoreError> {
        let fence = fence.clone();
        self.run(|db| async move {
            let changed = db
                .client()
                .await?
                .execute(
                    "INSERT INTO shard_fences (shard, holder, generation, recorded_at)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (shard) DO UPDATE SET
                        holder = excluded.holder, generation = excluded.generation,
                        recorded_at = excluded.recorded_at
                     WHERE excluded.generation > shard_fences.generation
                        OR (excluded.generation = shard_fences.generation
                            AND excluded.holder = shard_fences.holder)",
                    &[
                        &i64::from(fence.shard),
                        &fence.holder,
                        &fence.generation,
                        &ts(now()),
                    ],
                )
                .await
                .map_err(db.pg())?;
            Ok(changed == 1)
        })
    }

    fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        let (channel, payload) = (channel.to_string(), payload.to_string());
        self.run(|db| async move {
            db.client()
                .await?
                .execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
                .await
                .map_err(db.pg())?;
            Ok(())
        })
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<super::Notice>> {
        let sender = self.notices.get_or_init(|| {
            let (sender, _) = tokio::sync::broadcast::channel(NOTICE_BUFFER);
            self.handle
                .spawn(listen_loop(self.listen.clone(), sender.clone()));
            sender
        });
        Some(sender.subscribe())
    }

    fn request_cancel(&self, id: &str, user: &str) -> Result<(), StoreError> {
        let (id, user) = (id.to_string(), user.to_string());
        self.run(|db| async move {
            let pg = db.pg();
            let mut client = db.client().await?;
            let tx = client.transaction().await.map_err(&pg)?;
            let Some(row) = tx
                .query_opt("SELECT status FROM executions WHERE id = $1 FOR UPDATE", &[&id])
                .await
                .map_err(&pg)?
            else {
                return Err(StoreError::NoExecution(id));
            };
            let status: String = col(&db, &row, 0)?;
            let status = ExecutionStatus::parse(&status)
                .ok_or_else(|| corrupt("execution status", &status))?;
            if status.is_final() {
                return Err(StoreError::Conflict(format!(
                    "execution {id} is already {status}"
                )));
            }
            let at = ts(now());
            if status == ExecutionStatus::Queued {
                tx.execute(
                    "UPDATE executions SET status = 'CANCELED', cancel_requested = 1, updated_at = $2 WHERE id = $1",
                    &[&id, &at],
                )
                .await
                .map_err(&pg)?;
            } else {
                tx.execute(
                    "UPDATE executions SET cancel_requested = 1, updated_at = $2 WHERE id = $1",
                    &[&id, &at],
                )
                .await
                .map_err(&pg)?;
            }
            append_event(
                &tx,
                &id,
                None,
                &format!("cancellation requested by {user}"),
                &at,
            )
            .await
            .map_err(&pg)?;
            tx.commit().await.map_err(&pg)
        })
    }

    fn log(&self, id: &str, stage: Option<&str>, message: &str) -> Result<(), StoreError> {
        let (id, stage, message) = (
            id.to_string(),
            stage.map(str::to_string),
            message.to_string(),
        );
        self.run(|db| async move {
            let pg = db.pg();
            let mut client = db.client().await?;
            let tx = client.transaction().await.map_err(&pg)?;
            append_event(&tx, &id, stage.as_deref(), &message, &ts(now()))
                .await
                .map_err(&pg)?;
            tx.commit().await.map_err(&pg)
        })
    }

    fn events(&self, id: &str) -> Result<Vec<Event>, StoreError> {
        let id = id.to_string();
        self.run(|db| async move {
            let client = db.client().await?;
            let rows = client
                .query(
                    "SELECT seq, at, stage, message FROM events WHERE execution_id = $1 ORDER BY seq",
                    &[&id],
                )
                .await
                .map_err(db.pg())?;
            rows.iter()
                .map(|r| {
                    let at: String = col(&db, r, 1)?;
                    Ok(Event {
                        seq: col(&db, r, 0)?,
                        at: parse_time(&at)?,
                        stage: col(&db, r, 2)?,
                        message: col(&db, r, 3)?,
                    })
                })
                .collect()
        })
    }

    fn judge(&self, id: &str, stage: &str, judgment: &Judgment) -> Result<(), StoreError> {
        let (id, stage, judgment) = (id.to_string(), stage.to_string(), judgment.clone());
        self.run(|db| async move {
            let pg = db.pg();
            let mut client = db.client().await?;
            let tx = client.transaction().await.map_err(&pg)?;
            // Two judges of one stage at once: the second waits here, then sees the first.
            tx.execute("SELECT 1 FROM executions WHERE id = $1 FOR UPDATE", &[&id])
                .await
                .map_err(&pg)?;
            let decision = match judgment.decision {
                Decision::Approve => "approve",
                Decision::Reject => "reject",
            };
            let existing = tx
                .query_opt(
                    "SELECT decision FROM judgments WHERE execution_id = $1 AND stage = $2",
                    &[&id, &stage],
                )
                .await
                .map_err(&pg)?;
            if let Some(existing) = existing {
                let existing: String = col(&db, &existing, 0)?;
                return Err(StoreError::Conflict(format!(
                    "stage \"{stage}\" of execution {id} was already judged: {existing}"
                )));
            }
            tx.execute(
                "INSERT INTO judgments (execution_id, stage, decision, \"user\", input, at) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&id, &stage, &decision, &judgment.user, &judgment.input, &ts(judgment.at)],
            )
            .await
            .map_err(&pg)?;
            append_event(
                &tx,
                &id,
                Some(&stage),
                &format!("{} by {}", judgment.decision.past_tense(), judgment.user),
                &ts(now()),
            )
            .await
            .map_err(&pg)?;
            tx.commit().await.map_err(&pg)
        })
    }

    fn judgment(&self, id: &str, stage: &str) -> Result<Option<Judgment>, StoreError> {
        let (id, stage) = (id.to_string(), stage.to_string());
        self.run(|db| async move {
            let client = db.client().await?;
            let row = client
                .query_opt(
                    "SELECT decision, \"user\", input, at FROM judgments WHERE execution_id = $1 AND stage = $2",
                    &[&id, &stage],
                )
                .await
                .map_err(db.pg())?;
            let Some(row) = row else {
                return Ok(None);
            };
            let decision: String = col(&db, &row, 0)?;
            let at: String = col(&db, &row, 3)?;
            Ok(Some(Judgment {
                decision: match decision.as_str() {
                    "approve" => Decision::Approve,
                    "reject" => Decision::Reject,
                    other => return Err(corrupt("judgment", other)),
                },
                user: col(&db, &row, 1)?,
                input: col(&db, &row, 2)?,
                at: parse_time(&at)?,
            }))
        })
    }

    fn save_applied(&self, applied: &AppliedRevision) -> Result<(), StoreError> {
        let applied = applied.clone();
        self.run(|db| async move {
            let objects =
                serde_json::to_string(&applied.objects).map_err(|e| corrupt("objects", e))?;
            db.client()
                .await?
                .execute(
                    "INSERT INTO applied (app, environment, cluster, revision, objects, execution_id, applied_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &applied.app,
                        &applied.environment,
                        &applied.cluster,
                        &applied.revision,
                        &objects,
                        &applied.execution,
                        &ts(applied.applied_at),
                    ],
                )
                .await
                .map_err(db.pg())?;
            Ok(())
        })
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.run(|db| async move {
            let row = db
                .client()
                .await?
                .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
                .await
                .map_err(db.pg())?;
            row.map(|r| col(&db, &r, 0)).transpose()
        })
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (key, value) = (key.to_string(), value.to_string());
        self.run(|db| async move {
            db.client()
                .await?
                .execute(
                    "INSERT INTO meta (key, value, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    &[&key, &value, &ts(now())],
                )
                .await
                .map_err(db.pg())?;
            Ok(())
        })
    }

    fn record_delivery(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        let (retention, cap) = (self.delivery_retention, self.delivery_cap);
        self.run(|db| async move {
            let pg = db.pg();
            let mut client = db.client().await?;
            let tx = client.transaction().await.map_err(&pg)?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&LOCK_CLASS, &DELIVERIES_LOCK],
            )
            .await
            .map_err(&pg)?;
            let at = now();
            // Bounded: ids past the retention or beyond the cap are forgotten first.
            tx.execute(
                "DELETE FROM deliveries WHERE received_at < $1",
                &[&ts(at
                    .checked_sub_signed(retention)
                    .unwrap_or(DateTime::<Utc>::MIN_UTC))],
            )
            .await
            .map_err(&pg)?;
            tx.execute(
                "DELETE FROM deliveries WHERE seq <= (SELECT seq FROM deliveries ORDER BY seq DESC LIMIT 1 OFFSET $1)",
                &[&(cap - 1)],
            )
            .await
            .map_err(&pg)?;
            let inserted = tx
                .execute(
                    "INSERT INTO deliveries (id, received_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                    &[&id, &ts(at)],
                )
                .await
                .map_err(&pg)?;
            tx.commit().await.map_err(&pg)?;
            Ok(inserted == 1)
        })
    }

    fn execution_counts(&self) -> Result<Vec<(ExecutionStatus, u64)>, StoreError> {
        self.run(|db| async move {
            let rows = db
                .client()
                .await?
                .query(
                    "SELECT status, count(*) FROM executions GROUP BY status",
                    &[],
                )
                .await
                .map_err(db.pg())?;
            rows.iter()
                .map(|r| {
                    let status: String = col(&db, r, 0)?;
                    let n: i64 = col(&db, r, 1)?;
                    let status = ExecutionStatus::parse(&status)
                        .ok_or_else(|| corrupt("execution status", &status))?;
                    Ok((status, u64::try_from(n).unwrap_or(0)))
                })
                .collect()
        })
    }

    fn last_applied(
        &self,
        app: &str,
        environment: &str,
        cluster: &str,
    ) -> Result<Option<AppliedRevision>, StoreError> {
        let (app, environment, cluster) = (
            app.to_string(),
            environment.to_string(),
            cluster.to_string(),
        );
        self.run(
            |db| async move { applied_where(&db, app, environment, cluster, false, None).await },
        )
    }

    fn last_good(
        &self,
        app: &str,
        environment: &str,
        cluster: &str,
        before_execution: Option<&str>,
    ) -> Result<Option<AppliedRevision>, StoreError> {
        let (app, environment, cluster) = (
            app.to_string(),
            environment.to_string(),
            cluster.to_string(),
        );
        let before = before_execution.map(str::to_string);
        self.run(
            |db| async move { applied_where(&db, app, environment, cluster, true, before).await },
        )
    }

    fn record_outbox(&self, key: &OutboxKey, payload: &str) -> Result<OutboxEntry, StoreError> {
        let (key, payload) = (key.clone(), payload.to_string());
        self.run(|db| async move {
            let pg = db.pg();
            let mut client = db.client().await?;
            let tx = client.transaction().await.map_err(&pg)?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&LOCK_CLASS, &OUTBOX_LOCK],
            )
            .await
            .map_err(&pg)?;
            let at = now();
            tx.execute(
                "DELETE FROM outbox WHERE state != 'pending' AND updated_at < $1",
                &[&ts(at
                    .checked_sub_signed(OUTBOX_RETENTION)
                    .unwrap_or(DateTime::<Utc>::MIN_UTC))],
            )
            .await
            .map_err(&pg)?;
            // One row per key: a newer desired state replaces the older one, whatever its
            // state.
            tx.execute(
                "INSERT INTO outbox (kind, repo, subject, name, payload, version, seq, state,
                                     attempts, next_attempt_at, last_error, recorded_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox),
                         'pending', 0, $6, NULL, $6, $6)
                 ON CONFLICT (kind, repo, subject, name) DO UPDATE SET
                    payload = excluded.payload, version = outbox.version + 1, seq = excluded.seq,
                    state = 'pending',
                    attempts = 0, next_attempt_at = excluded.next_attempt_at, last_error = NULL,
                    recorded_at = excluded.recorded_at, updated_at = excluded.updated_at",
                &[
                    &key.kind.as_str(),
                    &key.repo,
                    &key.subject,
                    &key.name,
                    &payload,
                    &ts(at),
                ],
            )
            .await
            .map_err(&pg)?;
            let row = tx
                .query_one(
                    &format!(
                        "SELECT {OUTBOX_COLUMNS} FROM outbox
                         WHERE kind = $1 AND repo = $2 AND subject = $3 AND name = $4"
                    ),
                    &[&key.kind.as_str(), &key.repo, &key.subject, &key.name],
                )
                .await
                .map_err(&pg)?;
            tx.commit().await.map_err(&pg)?;
            to_outbox(&db, &row)
        })
    }

    fn outbox_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.run(|db| async move {
            let rows = db
                .client()
                .await?
                .query(
                    &format!(
                        "SELECT {OUTBOX_COLUMNS} FROM outbox
                         WHERE state = 'pending' AND next_attempt_at <= $1
                         ORDER BY next_attempt_at, seq LIMIT $2"
                    ),
                    &[&ts(now), &i64::try_from(limit).unwrap_or(i64::MAX)],
                )
                .await
                .map_err(db.pg())?;
            rows.iter().map(|r| to_outbox(&db, r)).collect()
        })
    }

    fn outbox_next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.run(|db| async move {
            let row = db
                .client()
                .await?
                .query_one(
                    "SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'",
                    &[],
                )
                .await
                .map_err(db.pg())?;
            let next: Option<String> = col(&db, &row, 0)?;
            next.as_deref().map(parse_time).transpose()
        })
    }

    fn settle_outbox(
        &self,
        id: i64,
        version: i64,
        outcome: &OutboxOutcome,
    ) -> Result<bool, StoreError> {
        let outcome = outcome.clone();
        self.run(|db| async move {
            let client = db.client().await?;
            let at = ts(now());
            let changed = match &outcome {
                OutboxOutcome::Delivered => {
                    client
                        .execute(
                            "UPDATE outbox SET state = 'delivered', updated_at = $3
                             WHERE id = $1 AND version = $2 AND state = 'pending'",
                            &[&id, &version, &at],
                        )
                        .await
                }
                OutboxOutcome::Retry {
                    at: next,
                    error,
                    failure,
                } => {
                    client
                        .execute(
                            "UPDATE outbox SET next_attempt_at = $3, last_error = $4,
                                attempts = attempts + $5::bigint, updated_at = $6
                             WHERE id = $1 AND version = $2 AND state = 'pending'",
                            &[&id, &version, &ts(*next), error, &i64::from(*failure), &at],
                        )
                        .await
                }
                OutboxOutcome::Failed { error } => {
                    client
                        .execute(
                            "UPDATE outbox SET state = 'failed', last_error = $3, attempts = attempts + 1,
                                updated_at = $4
                             WHERE id = $1 AND version = $2 AND state = 'pending'",
                            &[&id, &version, error, &at],
                        )
                        .await
                }
            }
            .map_err(db.pg())?;
            Ok(changed == 1)
        })
    }

    fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.run(|db| async move {
            let row = db
                .client()
                .await?
                .query_one(
                    "SELECT count(*), MIN(recorded_at) FROM outbox WHERE state = 'pending'",
                    &[],
                )
                .await
                .map_err(db.pg())?;
            let pending: i64 = col(&db, &row, 0)?;
            let oldest: Option<String> = col(&db, &row, 1)?;
            Ok(OutboxStats {
                pending: u64::try_from(pending).unwrap_or(0),
                oldest: oldest.as_deref().map(parse_time).transpose()?,
            })
        })
    }

    fn outbox_entry(&self, key: &OutboxKey) -> Result<Option<OutboxEntry>, StoreError> {
        let key = key.clone();
        self.run(|db| async move {
            let row = db
                .client()
                .await?
                .query_opt(
                    &format!(
                        "SELECT {OUTBOX_COLUMNS} FROM outbox
                         WHERE kind = $1 AND repo = $2 AND subject = $3 AND name = $4"
                    ),
                    &[&key.kind.as_str(), &key.repo, &key.subject, &key.name],
                )
                .await
                .map_err(db.pg())?;
            row.map(|r| to_outbox(&db, &r)).transpose()
        })
    }
}

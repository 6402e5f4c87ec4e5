//! The embedded default store: one SQLite file in WAL mode. The schema is versioned
//! (`PRAGMA user_version`) and migrated forward on open.
//!
//! Durability ([`Durability`]): by default (`normal`, WAL with `synchronous=NORMAL`) a
//! committed transition survives a crash or kill of the process and a restart; a power loss of
//! the machine may lose the last transitions since the WAL was last synced, never corrupting
//! the file. `full` syncs every commit to disk, which survives power loss too at the price of
//! one fsync per transition.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use rusqlite_migration::{M, Migrations};

use super::rows::{
    EXECUTION_COLUMNS, OUTBOX_COLUMNS, OUTBOX_RETENTION, corrupt, lease_end, now, overlaps,
    parse_json, parse_time, ts,
};
use super::{
    AppliedRevision, Claim, Decision, Event, Execution, ExecutionFilter, ExecutionStatus, Fence,
    Judgment, NewExecution, OutboxEntry, OutboxKey, OutboxKind, OutboxOutcome, OutboxState,
    OutboxStats, StageState, StageStatus, StageUpdate, Store, StoreError,
};

/// Schema versions, oldest first. Never edit a released migration; add a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE executions (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    environments TEXT NOT NULL,
    revision TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    status TEXT NOT NULL,
    trigger TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX executions_by_app_status ON executions (app, status);
CREATE TABLE stages (
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    stage_type TEXT NOT NULL,
    environment TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL DEFAULT '{}',
    started_at TEXT,
    finished_at TEXT,
    error TEXT,
    PRIMARY KEY (execution_id, name)
);
CREATE TABLE events (
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    at TEXT NOT NULL,
    stage TEXT,
    message TEXT NOT NULL,
    PRIMARY KEY (execution_id, seq)
);
CREATE TABLE judgments (
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    decision TEXT NOT NULL,
    user TEXT NOT NULL,
    input TEXT,
    at TEXT NOT NULL,
    PRIMARY KEY (execution_id, stage)
);
CREATE TABLE applied (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    environment TEXT NOT NULL,
    cluster TEXT NOT NULL,
    revision TEXT NOT NULL,
    objects TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    applied_at TEXT NOT NULL
);
CREATE INDEX applied_by_target ON applied (app, environment, cluster, id);
"#,
    r#"
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"#,
    r#"
CREATE TABLE deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    received_at TEXT NOT NULL
);
CREATE INDEX deliveries_by_time ON deliveries (received_at);
"#,
    // Ownership of running executions, and one active execution per (app, revision).
    // Duplicates left active by earlier versions are superseded first: the oldest running
    // one (else the oldest queued one) of each (app, revision) stays.
    r#"
ALTER TABLE executions ADD COLUMN owner TEXT;
ALTER TABLE executions ADD COLUMN heartbeat_at TEXT;
ALTER TABLE executions ADD COLUMN owned_until TEXT;
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
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    repo TEXT NOT NULL,
    subject TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    version INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error TEXT,
    recorded_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (kind, repo, subject, name)
);
CREATE INDEX outbox_by_state ON outbox (state, next_attempt_at);
"#,
    // One running execution per app and environment, as a constraint of the database: an
    // execution that becomes RUNNING takes a row per environment (the primary key refuses a
    // second), and gives them back when it stops running.
    r#"
CREATE TABLE running_environments (
    app TEXT NOT NULL,
    environment TEXT NOT NULL,
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    PRIMARY KEY (app, environment)
);
INSERT OR IGNORE INTO running_environments (app, environment, execution_id)
    SELECT e.app, j.value, e.id FROM executions e, json_each(e.environments) j
    WHERE e.status = 'RUNNING';
CREATE TRIGGER executions_start_running AFTER UPDATE OF status ON executions
WHEN NEW.status = 'RUNNING' AND OLD.status <> 'RUNNING'
BEGIN
    INSERT INTO running_environments (app, environment, execution_id)
        SELECT NEW.app, value, NEW.id FROM json_each(NEW.environments);
END;
CREATE TRIGGER executions_stop_running AFTER UPDATE OF status ON executions
WHEN NEW.status <> 'RUNNING' AND OLD.status = 'RUNNING'
BEGIN
    DELETE FROM running_environments WHERE execution_id = NEW.id;
END;
"#,
    // Which replica holds each shard of apps, by the generation of its shard Lease: the
    // fencing token of stage transitions when several replicas share one store.
    r#"
CREATE TABLE shard_fences (
    shard INTEGER PRIMARY KEY,
    holder TEXT NOT NULL,
    generation INTEGER NOT NULL,
    recorded_at TEXT NOT NULL
);
"#,
];

/// The first bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// How long a webhook delivery id is remembered by default (GitHub lets users redeliver a
/// delivery of the last 3 days).
pub const DELIVERY_RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// At most this many delivery ids are remembered by default; the oldest go first.
pub const DELIVERY_CAP: usize = 100_000;

type OutboxRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    i64,
    String,
    Option<String>,
    String,
);

fn outbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
    ))
}

fn to_outbox(row: OutboxRow) -> Result<OutboxEntry, StoreError> {
    let (id, kind, repo, subject, name, payload, version, state, attempts, next, error, recorded) =
        row;
    Ok(OutboxEntry {
        id,
        key: OutboxKey {
            kind: OutboxKind::parse(&kind).ok_or_else(|| corrupt("outbox kind", &kind))?,
            repo,
            subject,
            name,
        },
        payload,
        version,
        state: OutboxState::parse(&state).ok_or_else(|| corrupt("outbox state", &state))?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at: parse_time(&next)?,
        last_error: error,
        recorded_at: parse_time(&recorded)?,
    })
}

/// How hard each commit is pushed to disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// WAL with `synchronous=NORMAL`: survives process crashes and restarts.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is synced; survives power loss.
    Full,
}

/// The SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    delivery_retention: chrono::TimeDelta,
    delivery_cap: i64,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the store at `path`, with the default
    /// durability.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, Durability::default())
    }

    /// Opens the store at `path` with `durability`. A missing file is created (atomically: a
    /// new store appears fully migrated or not at all); an existing file that is not a
    /// bowline store (empty, not SQLite, SQLite without bowline's schema) is refused.
    pub fn open_with(path: &Path, durability: Durability) -> Result<SqliteStore, StoreError> {
        let shown = path.display().to_string();
        let io = |e: std::io::Error| {
            StoreError::File(super::files::FileError::Io {
                path: shown.clone(),
                source: e,
            })
        };
        match std::fs::metadata(path) {
            Ok(_) => {
                check_header(path)?;
                // Created private: it holds judgments, comments' context and the deliveries
                // seen. SQLite gives its WAL and shared-memory files the same mode.
                super::files::ensure_private(path)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_new(path, durability)?,
            Err(e) => return Err(io(e)),
        }
        let conn = connect(path, durability)?;
        let conn = migrate(conn, path)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            delivery_retention: chrono::TimeDelta::from_std(DELIVERY_RETENTION)
                .unwrap_or(chrono::TimeDelta::MAX),
            delivery_cap: DELIVERY_CAP as i64,
        })
    }

    /// Remembers webhook delivery ids for `retention`, at most `cap` of them (at least one)
    /// (defaults [`DELIVERY_RETENTION`], [`DELIVERY_CAP`]).
    pub fn with_delivery_limits(mut self, retention: std::time::Duration, cap: usize) -> Self {
        self.delivery_retention =
            chrono::TimeDelta::from_std(retention).unwrap_or(chrono::TimeDelta::MAX);
        self.delivery_cap = i64::try_from(cap.max(1)).unwrap_or(i64::MAX);
        self
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A poisoned lock means a panic mid-call; SQLite rolled back the open transaction, so
        // the connection is still consistent.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses with [`StoreError::Fenced`] unless `fence` is its shard's newest hold.
    fn check_fence(&self, tx: &rusqlite::Transaction<'_>, fence: &Fence) -> Result<(), StoreError> {
        let current: Option<(String, i64)> = tx
            .query_row(
                "SELECT holder, generation FROM shard_fences WHERE shard = ?1",
                params![fence.shard],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        super::rows::fence_holds(fence, current)
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }
}

fn sqlite_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite {
        path: path.display().to_string(),
        source,
    }
}

fn not_a_store(path: &Path, reason: &str) -> StoreError {
    StoreError::NotAStore {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Refuses an existing file that is empty or not an SQLite database.
fn check_header(path: &Path) -> Result<(), StoreError> {
    use std::io::Read;
    let io = |source| {
        StoreError::File(super::files::FileError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    let mut header = Vec::with_capacity(SQLITE_HEADER.len());
    std::fs::File::open(path)
        .map_err(io)?
        .take(SQLITE_HEADER.len() as u64)
        .read_to_end(&mut header)
        .map_err(io)?;
    if header.is_empty() {
        return Err(not_a_store(path, "the file is empty (0 bytes)"));
    }
    if header.as_slice() != SQLITE_HEADER {
        return Err(not_a_store(path, "the file is not an SQLite database"));
    }
    Ok(())
}

/// Refuses an SQLite database that bowline did not create: tables but no schema version, or
/// a schema version without bowline's tables.
fn check_schema(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let sqlite = sqlite_err(path);
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(&sqlite)?;
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .map_err(&sqlite)?;
    let executions: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'executions'",
            [],
            |r| r.get(0),
        )
        .map_err(&sqlite)?;
    if version == 0 && tables > 0 {
        return Err(not_a_store(
            path,
            "an SQLite database without bowline's schema (tables but no schema version)",
        ));
    }
    if version > 0 && executions == 0 {
        return Err(not_a_store(
            path,
            &format!(
                "an SQLite database of another program (schema version {version} without bowline's tables)"
            ),
        ));
    }
    Ok(())
}

/// A connection to `path` in WAL mode with `durability`.
fn connect(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let sqlite = sqlite_err(path);
    let conn = Connection::open(path).map_err(&sqlite)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(&sqlite)?;
    // Before anything writes: switching to WAL would already change a foreign file.
    check_schema(&conn, path)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(&sqlite)?;
    let synchronous = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(&sqlite)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(&sqlite)?;
    Ok(conn)
}

/// Migrates the schema to the latest version.
/// Ends execution `id` with `status` and logs it; `false` when there is no such execution.
fn finish_in(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    status: ExecutionStatus,
    error: Option<&str>,
) -> rusqlite::Result<bool> {
    let at = ts(now());
    let changed = tx.execute(
        "UPDATE executions SET status = ?2, error = ?3, updated_at = ?4 WHERE id = ?1",
        params![id, status.as_str(), error, at],
    )?;
    if changed == 0 {
        return Ok(false);
    }
    let message = match error {
        Some(e) => format!("{status}: {e}"),
        None => status.to_string(),
    };
    append_event(tx, id, None, &message, &at)?;
    Ok(true)
}

fn migrate(mut conn: Connection, path: &Path) -> Result<Connection, StoreError> {
    let migrations = Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect());
    // Another process opening the same store may migrate it at the same moment; the loser's
    // statements fail, and a second pass finds the schema already current.
    let mut migrated = migrations.to_latest(&mut conn);
    for _ in 0..3 {
        if migrated.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        migrated = migrations.to_latest(&mut conn);
    }
    migrated.map_err(|e| StoreError::Migration {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(conn)
}

/// Creates a new store at `path`: built and migrated under a temporary name beside it, then
/// linked into place, so no other process ever sees a half-made (empty) file there. When
/// another process created it first, theirs is kept.
fn create_new(path: &Path, durability: Durability) -> Result<(), StoreError> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.new", ulid::Ulid::new()));
    let tmp = PathBuf::from(name);
    let made = (|| {
        super::files::ensure_private(&tmp)?;
        let conn = connect(&tmp, durability)?;
        let conn = migrate(conn, &tmp)?;
        // Closing checkpoints the WAL into the file, which then stands alone.
        conn.close().map_err(|(_, e)| sqlite_err(&tmp)(e))?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(source) => Err(StoreError::File(super::files::FileError::Io {
                path: path.display().to_string(),
                source,
            })),
        }
    })();
    for suffix in ["", "-wal", "-shm"] {
        let mut leftover = tmp.as_os_str().to_owned();
        leftover.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(leftover));
    }
    made
}

type ExecutionRow = (
    (String, String, String, String, String, String, String),
    (String, String, Option<String>, bool),
    (Option<String>, Option<String>, Option<String>),
);

fn execution_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ExecutionRow> {
    Ok((
        (
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ),
        (r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?),
        (r.get(11)?, r.get(12)?, r.get(13)?),
    ))
}

fn to_execution(row: ExecutionRow) -> Result<Execution, StoreError> {
    let (
        (id, app, envs, revision, pipeline, status, trigger),
        (created, updated, error, cancel),
        (owner, heartbeat, until),
    ) = row;
    Ok(Execution {
        owner,
        heartbeat_at: heartbeat.as_deref().map(parse_time).transpose()?,
        owned_until: until.as_deref().map(parse_time).transpose()?,
        environments: serde_json::from_str(&envs).map_err(|e| corrupt("environments", e))?,
        status: ExecutionStatus::parse(&status)
            .ok_or_else(|| corrupt("execution status", &status))?,
        trigger: parse_json(&trigger, "trigger")?,
        created_at: parse_time(&created)?,
        updated_at: parse_time(&updated)?,
        id,
        app,
        revision,
        pipeline,
        error,
        cancel_requested: cancel,
    })
}

const STAGE_COLUMNS: &str = "name, stage_type, environment, status, attempts, inputs, outputs, started_at, finished_at, error";

fn to_stage(r: &rusqlite::Row<'_>) -> rusqlite::Result<[Option<String>; 10]> {
    Ok([
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get::<_, i64>(4).map(|n| Some(n.to_string()))?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
    ])
}

fn stage_from(cols: [Option<String>; 10]) -> Result<StageState, StoreError> {
    let [
        name,
        stage_type,
        environment,
        status,
        attempts,
        inputs,
        outputs,
        started,
        finished,
        error,
    ] = cols;
    let need = |v: Option<String>, what: &str| v.ok_or_else(|| corrupt(what, "missing"));
    let status = need(status, "stage status")?;
    Ok(StageState {
        name: need(name, "stage name")?,
        stage_type: need(stage_type, "stage type")?,
        environment,
        status: StageStatus::parse(&status).ok_or_else(|| corrupt("stage status", &status))?,
        attempts: need(attempts, "attempts")?
            .parse()
            .map_err(|e| corrupt("attempts", e))?,
        inputs: parse_json(&need(inputs, "inputs")?, "stage inputs")?,
        outputs: parse_json(&need(outputs, "outputs")?, "stage outputs")?,
        started_at: started.as_deref().map(parse_time).transpose()?,
        finished_at: finished.as_deref().map(parse_time).transpose()?,
        error,
    })
}

fn append_event(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    stage: Option<&str>,
    message: &str,
    at: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO events (execution_id, seq, at, stage, message)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE execution_id = ?1), ?2, ?3, ?4)",
        params![id, at, stage, message],
    )?;
    Ok(())
}

impl Store for SqliteStore {
    fn create_execution(&self, new: NewExecution) -> Result<Execution, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let id = ulid::Ulid::new().to_string();
        let at = ts(now());
        let envs =
            serde_json::to_string(&new.environments).map_err(|e| corrupt("environments", e))?;
        // One queued or running execution per app and revision (also a unique index).
        let active: Option<(String, String)> = tx
            .query_row(
                "SELECT id, status FROM executions
                 WHERE app = ?1 AND revision = ?2 AND status IN ('QUEUED', 'RUNNING')",
                params![new.app, new.revision],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some((existing, status)) = active {
            return Err(StoreError::Duplicate {
                app: new.app,
                revision: new.revision,
                existing,
                status: ExecutionStatus::parse(&status)
                    .ok_or_else(|| corrupt("execution status", &status))?,
            });
        }
        // Queued executions of the same app and environments are replaced by this newer one.
        let queued: Vec<(String, String)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT id, environments FROM executions WHERE app = ?1 AND status = 'QUEUED'",
                )
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map(params![new.app], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| self.err(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?
        };
        for (old, old_envs) in queued {
            let old_envs: Vec<String> =
                serde_json::from_str(&old_envs).map_err(|e| corrupt("environments", e))?;
            if overlaps(&old_envs, &new.environments) {
                tx.execute(
                    "UPDATE executions SET status = 'SUPERSEDED', updated_at = ?2 WHERE id = ?1",
                    params![old, at],
                )
                .map_err(|e| self.err(e))?;
                append_event(
                    &tx,
                    &old,
                    None,
                    &format!("superseded by execution {id}"),
                    &at,
                )
                .map_err(|e| self.err(e))?;
            }
        }
        let trigger = serde_json::to_string(&new.trigger).map_err(|e| corrupt("trigger", e))?;
        tx.execute(
            "INSERT INTO executions (id, app, environments, revision, pipeline, status, trigger, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'QUEUED', ?6, ?7, ?7)",
            params![id, new.app, envs, new.revision, new.pipeline, trigger, at],
        )
        .map_err(|e| self.err(e))?;
        for (position, stage) in new.stages.iter().enumerate() {
            let inputs = serde_json::to_string(&stage.inputs).map_err(|e| corrupt("inputs", e))?;
            tx.execute(
                "INSERT INTO stages (execution_id, position, name, stage_type, environment, status, inputs)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'NOT_STARTED', ?6)",
                params![id, position as i64, stage.name, stage.stage_type, stage.environment, inputs],
            )
            .map_err(|e| self.err(e))?;
        }
        append_event(
            &tx,
            &id,
            None,
            &format!("queued: {} at revision {}", new.pipeline, new.revision),
            &at,
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        drop(conn);
        self.execution(&id)
    }

    fn claim_fenced(
        &self,
        id: &str,
        owner: &str,
        ttl: Duration,
        fence: Option<&Fence>,
    ) -> Result<Claim, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        if let Some(fence) = fence {
            self.check_fence(&tx, fence)?;
        }
        type ClaimRow = (String, Option<String>, Option<String>);
        let row: Option<ClaimRow> = tx
            .query_row(
                "SELECT status, owner, owned_until FROM executions WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((status, current, until)) = row else {
            return Err(StoreError::NoExecution(id.to_string()));
        };
        let now = now();
        let until_new = ts(lease_end(now, ttl));
        let at = ts(now);
        if status == "RUNNING" {
            let until = until.as_deref().map(parse_time).transpose()?;
            let claim = match (&current, until) {
                (Some(current), _) if current == owner => Claim::Started,
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
                "UPDATE executions SET owner = ?2, heartbeat_at = ?3, owned_until = ?4 WHERE id = ?1",
                params![id, owner, at, until_new],
            )
            .map_err(|e| self.err(e))?;
            if let Claim::TakenOver { previous } = &claim {
                let message = super::rows::resumed_message(owner, previous.as_deref(), fence);
                append_event(&tx, id, None, &message, &at).map_err(|e| self.err(e))?;
            }
            tx.commit().map_err(|e| self.err(e))?;
            return Ok(claim);
        }
        if status != "QUEUED" {
            return Err(StoreError::Conflict(format!(
                "execution {id} is {status}, not queued"
            )));
        }
        // The database refuses a second running execution of an environment of this app
        // (table running_environments): then this one waits.
        let started = tx.execute(
            "UPDATE executions SET status = 'RUNNING', updated_at = ?2, owner = ?3,
                heartbeat_at = ?2, owned_until = ?4
             WHERE id = ?1",
            params![id, at, owner, until_new],
        );
        match started {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Ok(Claim::Blocked);
            }
            Err(e) => return Err(self.err(e)),
        }
        append_event(&tx, id, None, "started", &at).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(Claim::Started)
    }

    fn heartbeat(&self, id: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = now();
        let changed = self
            .lock()
            .execute(
                "UPDATE executions SET heartbeat_at = ?3, owned_until = ?4
                 WHERE id = ?1 AND owner = ?2 AND status = 'RUNNING'",
                params![id, owner, ts(now), ts(lease_end(now, ttl))],
            )
            .map_err(|e| self.err(e))?;
        Ok(changed == 1)
    }

    fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "UPDATE executions SET owner = NULL, owned_until = NULL WHERE id = ?1 AND owner = ?2",
                params![id, owner],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn execution(&self, id: &str) -> Result<Execution, StoreError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                &format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ?1"),
                params![id],
                execution_row,
            )
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(to_execution)
            .transpose()?
            .ok_or_else(|| StoreError::NoExecution(id.to_string()))
    }

    fn executions(&self, filter: &ExecutionFilter) -> Result<Vec<Execution>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM executions
                 WHERE (?1 IS NULL OR app = ?1)
                   AND (?2 IS NULL OR status IN (SELECT value FROM json_each(?2)))
                 ORDER BY id DESC LIMIT ?3"
            ))
            .map_err(|e| self.err(e))?;
        let statuses = super::rows::status_list(&filter.statuses);
        let limit = filter
            .limit
            .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let rows = stmt
            .query_map(params![filter.app, statuses, limit], execution_row)
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(to_execution(row.map_err(|e| self.err(e))?)?);
        }
        Ok(out)
    }

    fn active(&self) -> Result<Vec<super::ActiveExecution>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT id, app FROM executions WHERE status IN ('QUEUED', 'RUNNING') ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(super::ActiveExecution {
                    id: r.get(0)?,
                    app: r.get(1)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    fn stages(&self, id: &str) -> Result<Vec<StageState>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {STAGE_COLUMNS} FROM stages WHERE execution_id = ?1 ORDER BY position"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![id], to_stage)
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(stage_from(row.map_err(|e| self.err(e))?)?);
        }
        Ok(out)
    }

    fn update_stage(
        &self,
        id: &str,
        stage: &str,
        update: StageUpdate,
    ) -> Result<StageState, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let at = ts(now());
        if let Some(owner) = &update.owner {
            let current: Option<Option<String>> = tx
                .query_row(
                    "SELECT owner FROM executions WHERE id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            if current
                .as_ref()
                .is_some_and(|c| c.as_deref() != Some(owner))
            {
                return Err(StoreError::NotOwner {
                    execution: id.to_string(),
                    owner: owner.clone(),
                });
            }
        }
        if let Some(fence) = &update.fence {
            self.check_fence(&tx, fence)?;
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
                    status = COALESCE(?3, status),
                    outputs = COALESCE(?4, outputs),
                    attempts = attempts + ?5,
                    error = CASE WHEN ?6 THEN ?7 ELSE error END,
                    started_at = CASE WHEN ?8 AND started_at IS NULL THEN ?10 ELSE started_at END,
                    finished_at = CASE WHEN ?9 THEN ?10 ELSE finished_at END
                 WHERE execution_id = ?1 AND name = ?2",
                params![
                    id,
                    stage,
                    status,
                    outputs,
                    i64::from(update.new_attempt),
                    update.error.is_some(),
                    update.error.clone().flatten(),
                    started,
                    finished,
                    at
                ],
            )
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            return Err(StoreError::NoStage {
                execution: id.to_string(),
                stage: stage.to_string(),
            });
        }
        if let Some(message) = &update.event {
            append_event(&tx, id, Some(stage), message, &at).map_err(|e| self.err(e))?;
        }
        tx.execute(
            "UPDATE executions SET updated_at = ?2 WHERE id = ?1",
            params![id, at],
        )
        .map_err(|e| self.err(e))?;
        let row = tx
            .query_row(
                &format!(
                    "SELECT {STAGE_COLUMNS} FROM stages WHERE execution_id = ?1 AND name = ?2"
                ),
                params![id, stage],
                to_stage,
            )
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        stage_from(row)
    }

    fn finish_execution(
        &self,
        id: &str,
        status: ExecutionStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        if !finish_in(&tx, id, status, error).map_err(|e| self.err(e))? {
            return Err(StoreError::NoExecution(id.to_string()));
        }
        tx.commit().map_err(|e| self.err(e))
    }

    fn finish_owned(
        &self,
        id: &str,
        status: ExecutionStatus,
        error: Option<&str>,
        owner: &str,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        if let Some(fence) = fence {
            self.check_fence(&tx, fence)?;
        }
        let current: Option<Option<String>> = tx
            .query_row(
                "SELECT owner FROM executions WHERE id = ?1 AND status = 'RUNNING'",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if current.flatten().as_deref() != Some(owner) {
            return Err(StoreError::NotOwner {
                execution: id.to_string(),
                owner: owner.to_string(),
            });
        }
        if !finish_in(&tx, id, status, error).map_err(|e| self.err(e))? {
            return Err(StoreError::NoExecution(id.to_string()));
        }
        tx.commit().map_err(|e| self.err(e))
    }

    fn record_fence(&self, fence: &Fence) -> Result<bool, StoreError> {
        let changed = self
            .lock()
            .execute(
                "INSERT INTO shard_fences (shard, holder, generation, recorded_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (shard) DO UPDATE SET
                    holder = excluded.holder, generation = excluded.generation,
                    recorded_at = excluded.recorded_at
                 WHERE excluded.generation > shard_fences.generation
                    OR (excluded.generation = shard_fences.generation
                        AND excluded.holder = shard_fences.holder)",
                params![fence.shard, fence.holder, fence.generation, ts(now())],
            )
            .map_err(|e| self.err(e))?;
        Ok(changed == 1)
    }

    fn request_cancel(&self, id: &str, user: &str) -> Result<(), StoreError> {
        let execution = self.execution(id)?;
        if execution.status.is_final() {
            return Err(StoreError::Conflict(format!(
                "execution {id} is already {}",
                execution.status
            )));
        }
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let at = ts(now());
        if execution.status == ExecutionStatus::Queued {
            tx.execute(
                "UPDATE executions SET status = 'CANCELED', cancel_requested = 1, updated_at = ?2 WHERE id = ?1",
                params![id, at],
            )
            .map_err(|e| self.err(e))?;
        } else {
            tx.execute(
                "UPDATE executions SET cancel_requested = 1, updated_at = ?2 WHERE id = ?1",
                params![id, at],
            )
            .map_err(|e| self.err(e))?;
        }
        append_event(
            &tx,
            id,
            None,
            &format!("cancellation requested by {user}"),
            &at,
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn log(&self, id: &str, stage: Option<&str>, message: &str) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        append_event(&tx, id, stage, message, &ts(now())).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn events(&self, id: &str) -> Result<Vec<Event>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT seq, at, stage, message FROM events WHERE execution_id = ?1 ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, at, stage, message) = row.map_err(|e| self.err(e))?;
            out.push(Event {
                seq,
                at: parse_time(&at)?,
                stage,
                message,
            });
        }
        Ok(out)
    }

    fn judge(&self, id: &str, stage: &str, judgment: &Judgment) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let decision = match judgment.decision {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        };
        let existing: Option<String> = tx
            .query_row(
                "SELECT decision FROM judgments WHERE execution_id = ?1 AND stage = ?2",
                params![id, stage],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some(existing) = existing {
            return Err(StoreError::Conflict(format!(
                "stage \"{stage}\" of execution {id} was already judged: {existing}"
            )));
        }
        tx.execute(
            "INSERT INTO judgments (execution_id, stage, decision, user, input, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, stage, decision, judgment.user, judgment.input, ts(judgment.at)],
        )
        .map_err(|e| self.err(e))?;
        append_event(
            &tx,
            id,
            Some(stage),
            &format!("{} by {}", judgment.decision.past_tense(), judgment.user),
            &ts(now()),
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn judgment(&self, id: &str, stage: &str) -> Result<Option<Judgment>, StoreError> {
        let conn = self.lock();
        let row: Option<(String, String, Option<String>, String)> = conn
            .query_row(
                "SELECT decision, user, input, at FROM judgments WHERE execution_id = ?1 AND stage = ?2",
                params![id, stage],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(|(decision, user, input, at)| {
            Ok(Judgment {
                decision: match decision.as_str() {
                    "approve" => Decision::Approve,
                    "reject" => Decision::Reject,
                    other => return Err(corrupt("judgment", other)),
                },
                user,
                input,
                at: parse_time(&at)?,
            })
        })
        .transpose()
    }

    fn save_applied(&self, applied: &AppliedRevision) -> Result<(), StoreError> {
        let objects = serde_json::to_string(&applied.objects).map_err(|e| corrupt("objects", e))?;
        self.lock()
            .execute(
                "INSERT INTO applied (app, environment, cluster, revision, objects, execution_id, applied_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    applied.app,
                    applied.environment,
                    applied.cluster,
                    applied.revision,
                    objects,
                    applied.execution,
                    ts(applied.applied_at)
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let conn = self.lock();
        conn.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|e| self.err(e))
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO meta (key, value, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![key, value, ts(now())],
        )
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    fn record_delivery(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let at = now();
        // Bounded: ids past the retention or beyond the cap are forgotten first.
        tx.execute(
            "DELETE FROM deliveries WHERE received_at < ?1",
            params![ts(at
                .checked_sub_signed(self.delivery_retention)
                .unwrap_or(DateTime::<Utc>::MIN_UTC))],
        )
        .map_err(|e| self.err(e))?;
        tx.execute(
            "DELETE FROM deliveries WHERE seq <= (SELECT seq FROM deliveries ORDER BY seq DESC LIMIT 1 OFFSET ?1)",
            params![self.delivery_cap - 1],
        )
        .map_err(|e| self.err(e))?;
        let inserted = tx
            .execute(
                "INSERT OR IGNORE INTO deliveries (id, received_at) VALUES (?1, ?2)",
                params![id, ts(at)],
            )
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(inserted == 1)
    }

    fn execution_counts(&self) -> Result<Vec<(ExecutionStatus, u64)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT status, count(*) FROM executions GROUP BY status")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| self.err(e))?;
        let mut counts = Vec::new();
        for row in rows {
            let (status, n) = row.map_err(|e| self.err(e))?;
            let status = ExecutionStatus::parse(&status)
                .ok_or_else(|| corrupt("execution status", &status))?;
            counts.push((status, u64::try_from(n).unwrap_or(0)));
        }
        Ok(counts)
    }

    fn last_applied(
        &self,
        app: &str,
        environment: &str,
        cluster: &str,
    ) -> Result<Option<AppliedRevision>, StoreError> {
        self.applied_where(app, environment, cluster, false, None)
    }

    fn last_good(
        &self,
        app: &str,
        environment: &str,
        cluster: &str,
        before_execution: Option<&str>,
    ) -> Result<Option<AppliedRevision>, StoreError> {
        self.applied_where(app, environment, cluster, true, before_execution)
    }

    fn record_outbox(&self, key: &OutboxKey, payload: &str) -> Result<OutboxEntry, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let at = now();
        tx.execute(
            "DELETE FROM outbox WHERE state != 'pending' AND updated_at < ?1",
            params![ts(at
                .checked_sub_signed(OUTBOX_RETENTION)
                .unwrap_or(DateTime::<Utc>::MIN_UTC))],
        )
        .map_err(|e| self.err(e))?;
        // One row per key: a newer desired state replaces the older one, whatever its state.
        tx.execute(
            "INSERT INTO outbox (kind, repo, subject, name, payload, version, seq, state,
                                 attempts, next_attempt_at, last_error, recorded_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox),
                     'pending', 0, ?6, NULL, ?6, ?6)
             ON CONFLICT (kind, repo, subject, name) DO UPDATE SET
                payload = excluded.payload, version = version + 1, seq = excluded.seq,
                state = 'pending',
                attempts = 0, next_attempt_at = excluded.next_attempt_at, last_error = NULL,
                recorded_at = excluded.recorded_at, updated_at = excluded.updated_at",
            params![
                key.kind.as_str(),
                key.repo,
                key.subject,
                key.name,
                payload,
                ts(at)
            ],
        )
        .map_err(|e| self.err(e))?;
        let row = tx
            .query_row(
                &format!(
                    "SELECT {OUTBOX_COLUMNS} FROM outbox
                     WHERE kind = ?1 AND repo = ?2 AND subject = ?3 AND name = ?4"
                ),
                params![key.kind.as_str(), key.repo, key.subject, key.name],
                outbox_row,
            )
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        to_outbox(row)
    }

    fn outbox_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox
                 WHERE state = 'pending' AND next_attempt_at <= ?1
                 ORDER BY next_attempt_at, seq LIMIT ?2"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![ts(now), i64::try_from(limit).unwrap_or(i64::MAX)],
                outbox_row,
            )
            .map_err(|e| self.err(e))?;
        let rows: Vec<OutboxRow> = rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?;
        rows.into_iter().map(to_outbox).collect()
    }

    fn outbox_next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let conn = self.lock();
        let next: Option<String> = conn
            .query_row(
                "SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        next.as_deref().map(parse_time).transpose()
    }

    fn settle_outbox(
        &self,
        id: i64,
        version: i64,
        outcome: &OutboxOutcome,
    ) -> Result<bool, StoreError> {
        let conn = self.lock();
        let at = ts(now());
        let changed = match outcome {
            OutboxOutcome::Delivered => conn.execute(
                "UPDATE outbox SET state = 'delivered', updated_at = ?3
                 WHERE id = ?1 AND version = ?2 AND state = 'pending'",
                params![id, version, at],
            ),
            OutboxOutcome::Retry {
                at: next,
                error,
                failure,
            } => conn.execute(
                "UPDATE outbox SET next_attempt_at = ?3, last_error = ?4,
                    attempts = attempts + ?5, updated_at = ?6
                 WHERE id = ?1 AND version = ?2 AND state = 'pending'",
                params![id, version, ts(*next), error, i64::from(*failure), at],
            ),
            OutboxOutcome::Failed { error } => conn.execute(
                "UPDATE outbox SET state = 'failed', last_error = ?3, attempts = attempts + 1,
                    updated_at = ?4
                 WHERE id = ?1 AND version = ?2 AND state = 'pending'",
                params![id, version, error, at],
            ),
        }
        .map_err(|e| self.err(e))?;
        Ok(changed == 1)
    }

    fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let conn = self.lock();
        let (pending, oldest): (i64, Option<String>) = conn
            .query_row(
                "SELECT count(*), MIN(recorded_at) FROM outbox WHERE state = 'pending'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err(e))?;
        Ok(OutboxStats {
            pending: u64::try_from(pending).unwrap_or(0),
            oldest: oldest.as_deref().map(parse_time).transpose()?,
        })
    }

    fn outbox_entry(&self, key: &OutboxKey) -> Result<Option<OutboxEntry>, StoreError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                &format!(
                    "SELECT {OUTBOX_COLUMNS} FROM outbox
                     WHERE kind = ?1 AND repo = ?2 AND subject = ?3 AND name = ?4"
                ),
                params![key.kind.as_str(), key.repo, key.subject, key.name],
                outbox_row,
            )
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(to_outbox).transpose()
    }
}

impl SqliteStore {
    /// The latest applied revision of an app, environment and cluster: by a succeeded
    /// execution only when `succeeded`, created before `before_execution` when given.
    fn applied_where(
        &self,
        app: &str,
        environment: &str,
        cluster: &str,
        succeeded: bool,
        before_execution: Option<&str>,
    ) -> Result<Option<AppliedRevision>, StoreError> {
        let conn = self.lock();
        let row: Option<(String, String, String, String)> = conn
            .query_row(
                "SELECT a.revision, a.objects, a.execution_id, a.applied_at
                 FROM applied a JOIN executions e ON e.id = a.execution_id
                 WHERE a.app = ?1 AND a.environment = ?2 AND a.cluster = ?3
                   AND (?5 = 0 OR e.status = 'SUCCEEDED') AND (?4 IS NULL OR a.execution_id < ?4)
                 ORDER BY a.id DESC LIMIT 1",
                params![app, environment, cluster, before_execution, succeeded],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(|(revision, objects, execution, at)| {
            Ok(AppliedRevision {
                app: app.to_string(),
                environment: environment.to_string(),
                cluster: cluster.to_string(),
                revision,
                objects: serde_json::from_str(&objects).map_err(|e| corrupt("objects", e))?,
                execution,
                applied_at: parse_time(&at)?,
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewStage;
    use serde_json::json;

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

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("state.db")).expect("open");
        (dir, store)
    }

    /// One running execution per app and environment is the database's rule: a raw UPDATE
    /// making a second one RUNNING is refused, and a claim waits until the first ends.
    #[test]
    fn the_database_refuses_a_second_running_execution_of_an_environment() {
        let (dir, store) = open();
        let first = store
            .create_execution(new("web", &["staging"]))
            .expect("first");
        let ttl = Duration::from_secs(30);
        assert_eq!(
            store.claim(&first.id, "me", ttl).expect("claim"),
            Claim::Started
        );
        let mut overlapping = new("web", &["staging", "production"]);
        overlapping.revision = "def456".into();
        let second = store.create_execution(overlapping).expect("second");
        let raw = Connection::open(dir.path().join("state.db")).expect("raw connection");
        let refused = raw
            .execute(
                "UPDATE executions SET status = 'RUNNING' WHERE id = ?1",
                params![second.id],
            )
            .expect_err("the database refuses it");
        assert!(refused.to_string().contains("UNIQUE"), "{refused}");
        assert_eq!(
            store.claim(&second.id, "me", ttl).expect("claim"),
            Claim::Blocked
        );
        let api = store
            .create_execution(new("api", &["staging"]))
            .expect("another app");
        assert_eq!(
            store.claim(&api.id, "me", ttl).expect("claim"),
            Claim::Started
        );
        store
            .finish_execution(&first.id, ExecutionStatus::Succeeded, None)
            .expect("finish");
        assert_eq!(
            store.claim(&second.id, "me", ttl).expect("claim"),
            Claim::Started
        );
    }

    #[test]
    fn the_state_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, store) = open();
        store
            .create_execution(new("web", &["staging"]))
            .expect("create");
        for name in ["state.db", "state.db-wal"] {
            let mode = std::fs::metadata(dir.path().join(name))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{name}: {mode:o}");
        }
    }

    #[test]
    fn executions_survive_reopening() {
        let (dir, store) = open();
        let e = store
            .create_execution(new("web", &["staging"]))
            .expect("create");
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
        drop(store);
        let store = SqliteStore::open(&dir.path().join("state.db")).expect("reopen");
        assert_eq!(
            store.schema_version().expect("version") as usize,
            MIGRATIONS.len()
        );
        let e2 = store.execution(&e.id).expect("execution");
        assert_eq!(e2.status, ExecutionStatus::Running);
        let stages = store.stages(&e.id).expect("stages");
        assert_eq!(stages[0].status, StageStatus::Succeeded);
        assert_eq!(stages[0].attempts, 1);
        assert_eq!(stages[0].outputs, json!({"applied": true}));
        assert!(
            stages[0].started_at.is_none(),
            "started only through Running"
        );
        assert!(stages[0].finished_at.is_some());
        assert_eq!(stages[1].status, StageStatus::NotStarted);
        let events: Vec<String> = store
            .events(&e.id)
            .expect("events")
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(
            events,
            vec![
                "queued: rolling-release at revision abc123",
                "started",
                "deployed"
            ]
        );
    }

    #[test]
    fn one_running_execution_per_app_and_environment_and_newer_supersedes_queued() {
        let (_dir, store) = open();
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
    }

    #[test]
    fn judgments_are_recorded_once_and_last_good_skips_failures() {
        let (_dir, store) = open();
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
        assert_eq!(
            store
                .judgment(&e.id, "approve")
                .expect("read")
                .map(|j| j.user),
            Some("maria".into())
        );
        let reject = Judgment {
            decision: Decision::Reject,
            user: "omar".into(),
            input: None,
            at: Utc::now(),
        };
        store.judge(&e.id, "approve-prod", &reject).expect("judge");
        let messages: Vec<String> = store
            .events(&e.id)
            .expect("events")
            .into_iter()
            .map(|e| e.message)
            .collect();
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
        assert!(
            store
                .last_good("web", "staging", "eu", Some(&e.id))
                .expect("query")
                .is_none()
        );
    }

    #[test]
    fn deliveries_are_remembered_across_reopening_and_bounded() {
        let (dir, store) = open();
        assert!(store.record_delivery("d-1").expect("record"));
        assert!(!store.record_delivery("d-1").expect("replay"));
        drop(store);
        let store = SqliteStore::open(&dir.path().join("state.db")).expect("reopen");
        assert!(
            !store
                .record_delivery("d-1")
                .expect("replay after reopening")
        );
        // At most two ids: the oldest is forgotten.
        let store = store.with_delivery_limits(DELIVERY_RETENTION, 2);
        assert!(store.record_delivery("d-2").expect("record"));
        assert!(store.record_delivery("d-3").expect("record"));
        assert!(!store.record_delivery("d-3").expect("replay"));
        assert!(store.record_delivery("d-1").expect("forgotten"));
        // Ids older than the retention are forgotten.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let store = store.with_delivery_limits(std::time::Duration::ZERO, 100);
        assert!(store.record_delivery("d-1").expect("expired"));
    }

    #[test]
    fn executions_are_counted_by_status() {
        let (_dir, store) = open();
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
    fn meta_values_survive_reopening() {
        let (dir, store) = open();
        assert_eq!(store.meta("k").expect("read"), None);
        store.set_meta("k", "one").expect("write");
        store.set_meta("k", "two").expect("overwrite");
        drop(store);
        let again = SqliteStore::open(&dir.path().join("state.db")).expect("reopen");
        assert_eq!(again.meta("k").expect("read").as_deref(), Some("two"));
    }

    #[test]
    fn unknown_ids_are_errors() {
        let (_dir, store) = open();
        assert!(matches!(
            store.execution("nope"),
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
        let (_dir, store) = open();
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
        // A deliberate retry after the first ended starts a new one.
        store
            .finish_execution(&first.id, ExecutionStatus::Failed, Some("boom"))
            .expect("finish");
        store
            .create_execution(new("web", &["staging"]))
            .expect("retry after the end");
        // The unique index holds even against a write that skips the check.
        let conn = store.lock();
        let raw = conn.execute(
            "UPDATE executions SET status = 'RUNNING' WHERE id = ?1",
            params![first.id],
        );
        assert!(raw.is_err(), "the index refuses a second active execution");
    }

    #[test]
    fn ownership_is_taken_with_the_claim_and_over_only_after_the_heartbeat_expires() {
        let (_dir, store) = open();
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
        let events: Vec<String> = store
            .events(&e.id)
            .expect("events")
            .into_iter()
            .map(|e| e.message)
            .collect();
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

    #[test]
    fn files_that_are_not_bowline_stores_are_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let refused = |path: &Path, reason: &str| {
            let before = std::fs::read(path).expect("read");
            let err = match SqliteStore::open(path) {
                Err(e @ StoreError::NotAStore { .. }) => e.to_string(),
                Err(e) => panic!("{}: expected NotAStore, got {e}", path.display()),
                Ok(_) => panic!("{}: opened", path.display()),
            };
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(reason), "{err}");
            assert!(
                std::fs::read(path).expect("read") == before,
                "{}: changed",
                path.display()
            );
        };
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").expect("write");
        refused(&empty, "empty (0 bytes)");
        let text = dir.path().join("notes.db");
        std::fs::write(&text, b"these are my notes\n").expect("write");
        refused(&text, "not an SQLite database");
        let alien = dir.path().join("alien.db");
        Connection::open(&alien)
            .and_then(|c| c.execute_batch("CREATE TABLE songs (title TEXT);"))
            .expect("alien");
        refused(&alien, "without bowline's schema");
        let versioned = dir.path().join("versioned.db");
        Connection::open(&versioned)
            .and_then(|c| {
                c.execute_batch("CREATE TABLE songs (title TEXT); PRAGMA user_version = 7;")
            })
            .expect("versioned");
        refused(&versioned, "another program");
        // A missing file is created, and opens again.
        let fresh = dir.path().join("fresh.db");
        SqliteStore::open(&fresh).expect("created");
        SqliteStore::open(&fresh).expect("reopened");
        let leftovers: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".new"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn processes_creating_one_store_at_once_share_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let store = SqliteStore::open(&path).expect("open");
                    store
                        .create_execution(new(&format!("app{i}"), &["staging"]))
                        .expect("create");
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        let store = SqliteStore::open(&path).expect("open");
        assert_eq!(
            store
                .executions(&ExecutionFilter::default())
                .expect("list")
                .len(),
            4
        );
    }

    #[test]
    fn upgrading_supersedes_duplicate_active_executions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        // A store as the version before ownership left it, with the same revision active
        // three times.
        let mine = MIGRATIONS
            .iter()
            .position(|m| m.contains("executions_one_active_per_revision"))
            .expect("the ownership migration");
        {
            let mut conn = Connection::open(&path).expect("open");
            Migrations::new(MIGRATIONS[..mine].iter().map(|sql| M::up(sql)).collect())
                .to_latest(&mut conn)
                .expect("older schema");
            for (id, status) in [("01A", "QUEUED"), ("01B", "RUNNING"), ("01C", "RUNNING")] {
                conn.execute(
                    "INSERT INTO executions (id, app, environments, revision, pipeline, status, trigger, created_at, updated_at)
                     VALUES (?1, 'web', '[\"staging\"]', 'abc', 'p', ?2, '{}', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
                    params![id, status],
                )
                .expect("insert");
            }
        }
        let store = SqliteStore::open(&path).expect("upgraded");
        let status = |id: &str| store.execution(id).expect("execution").status;
        assert_eq!(status("01A"), ExecutionStatus::Superseded);
        assert_eq!(
            status("01B"),
            ExecutionStatus::Running,
            "the oldest running one stays"
        );
        assert_eq!(status("01C"), ExecutionStatus::Superseded);
        assert!(store.execution("01B").expect("kept").owner.is_none());
        // Left by an older version without an owner: resumable at once.
        assert!(store.try_start("01B").expect("resume"));
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
        let (dir, store) = open();
        let first = store
            .record_outbox(&key("bowline/plan"), "pending")
            .expect("record");
        let other = store
            .record_outbox(&key("bowline/deploy/web"), "x")
            .expect("record");
        let second = store
            .record_outbox(&key("bowline/plan"), "success")
            .expect("record");
        assert_eq!(second.id, first.id, "one row per key");
        assert_eq!(second.version, first.version + 1);
        let due = store.outbox_due(now(), 10).expect("due");
        let payloads: Vec<&str> = due.iter().map(|e| e.payload.as_str()).collect();
        assert_eq!(
            payloads,
            ["x", "success"],
            "the superseded one is gone; the others in the order recorded"
        );
        assert_eq!(store.outbox_stats().expect("stats").pending, 2);
        // Durable: still pending after reopening.
        drop(store);
        let store = SqliteStore::open(&dir.path().join("state.db")).expect("reopen");
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
    }

    #[test]
    fn only_the_version_sent_is_settled() {
        let (_dir, store) = open();
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
        let later = now() + chrono::TimeDelta::seconds(30);
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
        assert!(store.outbox_due(now(), 10).expect("due").is_empty());
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
}

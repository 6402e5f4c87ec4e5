//! What both state stores share beside the [`super::Store`] trait: how timestamps and JSON are
//! stored as text (RFC 3339 with milliseconds, so text order is time order), ownership lease
//! ends, and the column lists and retention both stores' SQL use.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::StoreError;

/// How long delivered or refused outbox entries are kept (for `last_error` and to skip
/// nothing still wanted); pending ones are kept until delivered.
pub(super) const OUTBOX_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(7);

pub(super) const EXECUTION_COLUMNS: &str = "id, app, environments, revision, pipeline, status, trigger, created_at, updated_at, error, cancel_requested, owner, heartbeat_at, owned_until";

pub(super) const OUTBOX_COLUMNS: &str = "id, kind, repo, subject, name, payload, version, state, attempts, next_attempt_at, last_error, recorded_at";

pub(super) fn now() -> DateTime<Utc> {
    Utc::now()
}

/// A timestamp as stored.
pub(super) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(super) fn corrupt(what: &str, message: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: what.to_string(),
        message: message.to_string(),
    }
}

pub(super) fn parse_time(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| corrupt("timestamp", e))
}

pub(super) fn parse_json(text: &str, what: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

/// When ownership taken or refreshed at `now` for `ttl` lapses.
pub(super) fn lease_end(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(ttl)
        .ok()
        .and_then(|ttl| now.checked_add_signed(ttl))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Whether two executions' environment lists share one.
pub(super) fn overlaps(a: &[String], b: &[String]) -> bool {
    a.iter().any(|x| b.contains(x))
}

/// `Ok` when `fence` is the shard's recorded hold (`current`: holder and generation), else
/// [`StoreError::Fenced`] naming the newer hold.
pub(super) fn fence_holds(
    fence: &super::Fence,
    current: Option<(String, i64)>,
) -> Result<(), StoreError> {
    match current {
        Some((holder, generation)) if holder == fence.holder && generation == fence.generation => {
            Ok(())
        }
        current => Err(StoreError::Fenced {
            shard: fence.shard,
            generation: fence.generation,
            current: current.map_or_else(
                || "none".to_string(),
                |(holder, generation)| format!("{generation} held by {holder}"),
            ),
        }),
    }
}

/// The event logged when `owner` resumes a running execution from `previous`.
pub(super) fn resumed_message(
    owner: &str,
    previous: Option<&str>,
    fence: Option<&super::Fence>,
) -> String {
    match (previous, fence) {
        (Some(p), Some(f)) => format!(
            "resumed by {owner} (took shard {} over from {p}, generation {})",
            f.shard, f.generation
        ),
        (Some(p), None) => format!("resumed by {owner} (the heartbeat of {p} expired)"),
        (None, _) => format!("resumed by {owner}"),
    }
}

/// The statuses a filter asks for, as a JSON array for the query (`None`: any status).
pub(super) fn status_list(statuses: &[super::ExecutionStatus]) -> Option<String> {
    (!statuses.is_empty()).then(|| {
        let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        serde_json::Value::from(names).to_string()
    })
}

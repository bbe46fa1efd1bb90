//! The outbox, the log key and signed checkpoints.
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::{Cached, StoreError};

#[derive(Debug, Clone, Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: String,
    pub event: String,
    pub severity: String,
    pub account_id: Option<String>,
    pub checkout_id: Option<String>,
    pub subject: String,
    #[serde(skip)]
    pub message: String,
    pub audit_seq: i64,
    #[serde(serialize_with = "as_rfc3339")]
    pub created_at: i64,
    pub state: String,
    pub attempts: i64,
    #[serde(serialize_with = "as_rfc3339")]
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub sns_message_id: Option<String>,
    #[serde(serialize_with = "opt_as_rfc3339")]
    pub delivered_at: Option<i64>,
}

/// Times in the API are RFC 3339 UTC strings (docs/api.md), stored as Unix seconds.
fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

fn as_rfc3339<S: serde::Serializer>(unix: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*unix))
}

fn opt_as_rfc3339<S: serde::Serializer>(unix: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match unix {
        Some(t) => s.serialize_str(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

const COLS: &str = "id, event_id, event, severity, account_id, checkout_id, subject, message, audit_seq, created_at, state, \
     attempts, next_attempt_at, last_error, sns_message_id, delivered_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        event_id: r.get(1)?,
        event: r.get(2)?,
        severity: r.get(3)?,
        account_id: r.get(4)?,
        checkout_id: r.get(5)?,
        subject: r.get(6)?,
        message: r.get(7)?,
        audit_seq: r.get(8)?,
        created_at: r.get(9)?,
        state: r.get(10)?,
        attempts: r.get(11)?,
        next_attempt_at: r.get(12)?,
        last_error: r.get(13)?,
        sns_message_id: r.get(14)?,
        delivered_at: r.get(15)?,
    })
}

#[allow(clippy::too_many_arguments)]
pub fn insert(
    conn: &Connection,
    event_id: &str,
    event: &str,
    severity: &str,
    account_id: Option<&str>,
    checkout_id: Option<&str>,
    subject: &str,
    message: &str,
    audit_seq: u64,
    now: i64,
) -> Result<(), StoreError> {
    conn.exec(
        "INSERT INTO outbox (event_id, event, severity, account_id, checkout_id, subject, message, audit_seq, created_at, next_attempt_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
        params![event_id, event, severity, account_id, checkout_id, subject, message, audit_seq as i64, now],
    )?;
    Ok(())
}

/// The oldest undelivered row (pending), whether or not it is due yet.
pub fn oldest_pending(conn: &Connection) -> Result<Option<OutboxRow>, StoreError> {
    Ok(conn
        .row(&format!("SELECT {COLS} FROM outbox WHERE state = 'pending' ORDER BY id LIMIT 1"), [], from_row)
        .optional()?)
}

pub fn mark_delivered(conn: &Connection, id: i64, message_id: &str, at: i64) -> Result<(), StoreError> {
    conn.exec(
        "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, sns_message_id = ?2, delivered_at = ?3, last_error = NULL WHERE id = ?1",
        params![id, message_id, at],
    )?;
    Ok(())
}

pub fn mark_attempt_failed(conn: &Connection, id: i64, error: &str, next_attempt_at: i64) -> Result<(), StoreError> {
    conn.exec(
        "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 WHERE id = ?1",
        params![id, error, next_attempt_at],
    )?;
    Ok(())
}

/// Messages past their attempts (and any legacy `failed` rows) back to a fresh start, due now.
pub fn retry_failed(conn: &Connection, now: i64, max_attempts: i64) -> Result<usize, StoreError> {
    Ok(conn.exec(
        "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?1 WHERE state = 'failed' OR (state = 'pending' AND attempts >= ?2)",
        params![now, max_attempts],
    )?)
}

/// The statement [`list`] keeps prepared for one checkout's messages.
pub fn by_checkout_sql() -> String {
    format!("SELECT {COLS} FROM outbox WHERE checkout_id = ?1")
}

/// `state` `failed` means: undelivered after `max_attempts` attempts (still retried, in order).
pub fn list(
    conn: &Connection,
    state: Option<&str>,
    checkout_id: Option<&str>,
    limit: u32,
    max_attempts: i64,
) -> Result<Vec<OutboxRow>, StoreError> {
    if checkout_id.is_some() && state.is_none() {
        // One checkout's messages (a handful): sorted here, because an ORDER BY after
        // `checkout_id = ?` makes the bundled SQLite (STAT4) re-prepare the cached
        // statement for every checkout (see `checkouts::approvals_of`).
        let mut stmt = conn.prepare_cached(&by_checkout_sql())?;
        let mut rows: Vec<OutboxRow> = stmt.query_map([checkout_id], from_row)?.collect::<Result<_, _>>()?;
        rows.sort_by_key(|r| std::cmp::Reverse(r.id));
        rows.truncate(limit as usize);
        return Ok(rows);
    }
    let (sql, has_state) = list_query(state, checkout_id.is_some());
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut args: Vec<&dyn rusqlite::ToSql> = Vec::new();
    if let Some(c) = &checkout_id {
        args.push(c);
    }
    if has_state {
        args.push(&state);
    }
    if state == Some("failed") {
        args.push(&max_attempts);
    }
    args.push(&limit);
    let rows = stmt.query_map(args.as_slice(), from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The SQL for [`list`]: one statement per filter combination, so each can use its
/// index (an `?1 IS NULL OR col = ?1` condition makes SQLite scan the whole table).
/// Parameters in order: checkout id, state, max attempts (for `failed`), limit.
fn list_query(state: Option<&str>, by_checkout: bool) -> (String, bool) {
    let mut conds = Vec::new();
    if by_checkout {
        conds.push("checkout_id = ?");
    }
    let has_state = match state {
        None => false,
        Some("failed") => {
            conds.push("(state = 'failed' OR (state = 'pending' AND attempts >= ?))");
            false
        }
        Some(_) => {
            conds.push("state = ?");
            true
        }
    };
    let filter = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
    (format!("SELECT {COLS} FROM outbox{filter} ORDER BY id DESC LIMIT ?"), has_state)
}

/// `(undelivered, oldest undelivered created_at, failed)`; failed = undelivered after
/// `max_attempts` attempts (still retried, in order).
pub fn backlog(conn: &Connection, max_attempts: i64) -> Result<(i64, Option<i64>, i64), StoreError> {
    Ok(conn.row(
        "SELECT sum(state = 'pending'), min(CASE WHEN state = 'pending' THEN created_at END), \
         sum(state = 'failed' OR (state = 'pending' AND attempts >= ?1)) FROM outbox",
        [max_attempts],
        |r| Ok((r.get::<_, Option<i64>>(0)?.unwrap_or(0), r.get(1)?, r.get::<_, Option<i64>>(2)?.unwrap_or(0))),
    )?)
}

// ---- log key and checkpoints ----

pub struct LogKeyRow {
    pub key_name: String,
    pub public_key: Vec<u8>,
    pub sealed_key: Vec<u8>,
}

pub fn log_key(conn: &Connection) -> Result<Option<LogKeyRow>, StoreError> {
    Ok(conn
        .row("SELECT key_name, public_key, sealed_key FROM log_key WHERE id = 1", [], |r| {
            Ok(LogKeyRow { key_name: r.get(0)?, public_key: r.get(1)?, sealed_key: r.get(2)? })
        })
        .optional()?)
}

pub fn insert_log_key(conn: &Connection, k: &LogKeyRow, now: i64) -> Result<(), StoreError> {
    conn.exec(
        "INSERT INTO log_key (id, key_name, public_key, sealed_key, created_at) VALUES (1, ?1, ?2, ?3, ?4)",
        params![k.key_name, k.public_key, k.sealed_key, now],
    )?;
    Ok(())
}

/// The largest checkpoint signed so far: `(size, head)`.
pub fn latest_checkpoint(conn: &Connection) -> Result<Option<(u64, String, String)>, StoreError> {
    Ok(conn
        .row("SELECT size, head, note FROM checkpoints ORDER BY size DESC LIMIT 1", [], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
        })
        .optional()?)
}

/// Every checkpoint signed, smallest first: `(size, head, note)` rows, walked beside the
/// log by `audit verify`.
pub fn checkpoints_in_order(conn: &Connection) -> Result<rusqlite::CachedStatement<'_>, StoreError> {
    Ok(conn.prepare_cached("SELECT size, head, note FROM checkpoints ORDER BY size")?)
}

/// Whether the append-only triggers on `audit_log` are both present.
pub fn audit_triggers_present(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn.row(
        "SELECT count(*) = 2 FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log' \
         AND name IN ('audit_log_no_update', 'audit_log_no_delete')",
        [],
        |r| r.get(0),
    )?)
}

/// The first entry before `before_seq` that issued `challenge`, if any. `audit verify`
/// asks only about challenges its in-memory fingerprints flag as seen before.
pub fn earlier_issue_of_challenge(
    conn: &Connection,
    challenge: &str,
    before_seq: u64,
) -> Result<Option<u64>, StoreError> {
    Ok(conn
        .row(
            "SELECT min(seq) FROM audit_log
         WHERE action IN ('approval.challenge_issued', 'release.challenge_issued') AND seq < ?2
           AND json_valid(details) AND json_extract(details, '$.challenge') = ?1",
            params![challenge, before_seq as i64],
            |r| r.get::<_, Option<i64>>(0),
        )?
        .map(|s| s as u64))
}

pub fn insert_checkpoint(conn: &Connection, size: u64, head: &str, note: &str, now: i64) -> Result<(), StoreError> {
    conn.exec(
        "INSERT OR IGNORE INTO checkpoints (size, head, note, signed_at) VALUES (?1, ?2, ?3, ?4)",
        params![size as i64, head, note, now],
    )?;
    Ok(())
}

/// `(hash)` of the audit entry at `seq`.
pub fn audit_hash_at(conn: &Connection, seq: u64) -> Result<Option<String>, StoreError> {
    Ok(conn.row("SELECT hash FROM audit_log WHERE seq = ?1", [seq as i64], |r| r.get(0)).optional()?)
}

/// `(size, head)` of the log now.
pub fn audit_head(conn: &Connection) -> Result<(u64, Option<String>), StoreError> {
    Ok(conn
        .row("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", [], |r| {
            Ok((r.get::<_, i64>(0)? as u64, Some(r.get(1)?)))
        })
        .optional()?
        .unwrap_or((0, None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql]) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt.query_map(args, |r| r.get::<_, String>(3)).unwrap();
        rows.collect::<Result<Vec<_>, _>>().unwrap().join("; ")
    }

    #[test]
    fn listing_one_checkouts_announcements_uses_the_index_not_a_scan() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(&dir.path().join("t.db")).unwrap();
        for i in 0..300 {
            let checkout = format!("c{}", i % 30);
            insert(&conn, &format!("e{i}"), "checkout.requested", "info", None, Some(&checkout), "s", "{}", i, 0)
                .unwrap();
        }
        conn.execute_batch("ANALYZE").unwrap();
        let (sql, _) = list_query(None, true);
        let p = plan(&conn, &sql, &[&"c1", &10]);
        assert!(p.contains("USING INDEX outbox_by_checkout"), "{p}");
        assert!(!p.contains("SCAN outbox"), "{p}");
        let (sql, _) = list_query(Some("pending"), true);
        let p = plan(&conn, &sql, &[&"c1", &"pending", &10]);
        assert!(!p.contains("SCAN outbox"), "{p}");

        // The results are what the filters say.
        let rows = list(&conn, None, Some("c1"), 100, 12).unwrap();
        assert_eq!(rows.len(), 10);
        assert!(rows.iter().all(|r| r.checkout_id.as_deref() == Some("c1")));
        assert!(rows.windows(2).all(|w| w[0].id > w[1].id), "newest first");
        assert_eq!(list(&conn, Some("pending"), Some("c2"), 3, 12).unwrap().len(), 3);
        assert_eq!(list(&conn, Some("delivered"), Some("c2"), 100, 12).unwrap().len(), 0);
        assert_eq!(list(&conn, None, None, 1000, 12).unwrap().len(), 300);
        conn.execute("UPDATE outbox SET attempts = 12 WHERE checkout_id = 'c3'", []).unwrap();
        let failed = list(&conn, Some("failed"), None, 1000, 12).unwrap();
        assert_eq!(failed.len(), 10);
        assert_eq!(list(&conn, Some("failed"), Some("c3"), 1000, 12).unwrap().len(), 10);
        assert_eq!(list(&conn, Some("failed"), Some("c4"), 1000, 12).unwrap().len(), 0);

        // As in life, most messages delivered: the pending ones come from the state index.
        conn.execute("UPDATE outbox SET state = 'delivered' WHERE checkout_id != 'c5'", []).unwrap();
        conn.execute_batch("ANALYZE").unwrap();
        let (sql, _) = list_query(Some("pending"), false);
        let p = plan(&conn, &sql, &[&"pending", &10]);
        assert!(p.contains("outbox_by_state"), "{p}");
        assert_eq!(list(&conn, Some("pending"), None, 1000, 12).unwrap().len(), 10);
    }
}

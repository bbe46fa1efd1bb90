//! The audit_log table: append inside the caller's transaction, read in order.
use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;

use super::StoreError;
use crate::domain::audit::{AuditEntry, GENESIS_PREV_HASH, canonical_details, entry_hash, format_at};

/// Append one entry. Must be called inside the transaction that makes the change it
/// records, so that either both are written or neither is.
pub fn append(
    conn: &Connection,
    at: OffsetDateTime,
    actor: &str,
    action: &str,
    subject: &str,
    details: &serde_json::Value,
) -> Result<AuditEntry, StoreError> {
    let last: Option<(i64, String)> = conn
        .query_row("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, prev) = match last {
        Some((seq, hash)) => {
            let mut prev = [0u8; 32];
            hex::decode_to_slice(&hash, &mut prev).map_err(|_| {
                StoreError::Sqlite(rusqlite::Error::InvalidColumnType(1, "hash".into(), rusqlite::types::Type::Text))
            })?;
            (seq as u64 + 1, prev)
        }
        None => (1, GENESIS_PREV_HASH),
    };
    let at = format_at(at);
    let details = canonical_details(details);
    let hash = entry_hash(seq, &prev, &at, actor, action, subject, &details);
    let entry = AuditEntry {
        seq,
        at,
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        details,
        prev_hash: hex::encode(prev),
        hash: hex::encode(hash),
    };
    conn.execute(
        "INSERT INTO audit_log (seq, at, actor, action, subject, details, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![entry.seq as i64, entry.at, entry.actor, entry.action, entry.subject, entry.details, entry.prev_hash, entry.hash],
    )?;
    Ok(entry)
}

pub fn from_row(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: r.get::<_, i64>(0)? as u64,
        at: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        subject: r.get(4)?,
        details: r.get(5)?,
        prev_hash: r.get(6)?,
        hash: r.get(7)?,
    })
}

pub const COLUMNS: &str = "seq, at, actor, action, subject, details, prev_hash, hash";

/// Filters for listing entries; all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub after_seq: Option<u64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    /// `action` prefix, e.g. `custodian.` for all custodian events.
    pub action_prefix: Option<String>,
    pub subject: Option<String>,
    /// Inclusive lower bound on `at` (same fixed format, so text order is time order).
    pub since: Option<String>,
    /// Exclusive upper bound on `at`.
    pub until: Option<String>,
    /// Newest entries first (the audit page); paging with `after_seq` is oldest-first.
    pub newest_first: bool,
}

pub fn list(conn: &Connection, f: &AuditFilter, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(f.after_seq.unwrap_or(0) as i64)];
    let mut clauses = vec!["seq > ?1".to_owned()];
    // Each clause names its own parameter number (`{n}`), so one value can be used twice.
    for (template, value) in [
        ("actor = ?{n}", &f.actor),
        ("action = ?{n}", &f.action),
        ("substr(action, 1, length(?{n})) = ?{n}", &f.action_prefix),
        ("subject = ?{n}", &f.subject),
        ("at >= ?{n}", &f.since),
        ("at < ?{n}", &f.until),
    ] {
        if let Some(v) = value {
            args.push(Box::new(v.clone()));
            clauses.push(template.replace("{n}", &args.len().to_string()));
        }
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_log WHERE {} ORDER BY seq {} LIMIT {limit}",
        clauses.join(" AND "),
        if f.newest_first { "DESC" } else { "ASC" }
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Visit every entry in `seq` order without loading the whole log.
pub fn for_each(conn: &Connection, mut f: impl FnMut(AuditEntry) -> bool) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM audit_log ORDER BY seq"))?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        if !f(from_row(row)?) {
            break;
        }
    }
    Ok(())
}

pub fn count(conn: &Connection) -> Result<u64, StoreError> {
    Ok(conn.query_row("SELECT count(*) FROM audit_log", [], |r| r.get::<_, i64>(0))? as u64)
}

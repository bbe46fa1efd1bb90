//! The last root posture read for each account.
use rusqlite::{Connection, OptionalExtension, params};

use super::{Cached, StoreError};

#[derive(Debug, Clone)]
pub struct PostureRow {
    pub account_id: String,
    pub checked_at: i64,
    pub report: String,
    pub findings: String,
    pub audit_seq: Option<i64>,
}

const COLS: &str = "account_id, checked_at, report, findings, audit_seq";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PostureRow> {
    Ok(PostureRow {
        account_id: r.get(0)?,
        checked_at: r.get(1)?,
        report: r.get(2)?,
        findings: r.get(3)?,
        audit_seq: r.get(4)?,
    })
}

pub fn get(conn: &Connection, account_id: &str) -> Result<Option<PostureRow>, StoreError> {
    Ok(conn
        .row(&format!("SELECT {COLS} FROM account_posture WHERE account_id = ?1"), [account_id], from_row)
        .optional()?)
}

pub fn upsert(conn: &Connection, row: &PostureRow) -> Result<(), StoreError> {
    conn.exec(
        "INSERT INTO account_posture (account_id, checked_at, report, findings, audit_seq) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (account_id) DO UPDATE SET checked_at = excluded.checked_at, report = excluded.report, \
         findings = excluded.findings, audit_seq = COALESCE(excluded.audit_seq, account_posture.audit_seq)",
        params![row.account_id, row.checked_at, row.report, row.findings, row.audit_seq],
    )?;
    Ok(())
}

/// Accounts with findings (the dashboard).
pub fn with_findings(conn: &Connection) -> Result<Vec<PostureRow>, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLS} FROM account_posture WHERE findings != '[]' ORDER BY account_id"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

//! Drill rows.
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::{Cached, StoreError};
pub use crate::domain::drill::DrillState;

#[derive(Debug, Clone, Serialize)]
pub struct DrillRow {
    pub id: String,
    pub account_id: String,
    pub period: String,
    pub due_at: i64,
    pub grace_ends_at: i64,
    pub state: DrillState,
    pub last_escalated_at: Option<i64>,
    pub checkout_id: Option<String>,
    pub completed_at: Option<i64>,
    pub completed_by: Option<String>,
    /// Who took part (custodian ids, sorted), from `drill_participants`.
    pub participants: Vec<String>,
    pub checklist: Option<String>,
    pub failed_items: Option<String>,
}

const COLS: &str = "id, account_id, period, due_at, grace_ends_at, state, last_escalated_at, checkout_id, completed_at, completed_by, \
     (SELECT json_group_array(custodian_id) FROM drill_participants AS p WHERE p.drill_id = drills.id), checklist, failed_items";

fn from_row(r: &Row<'_>) -> rusqlite::Result<DrillRow> {
    Ok(DrillRow {
        id: r.get(0)?,
        account_id: r.get(1)?,
        period: r.get(2)?,
        due_at: r.get(3)?,
        grace_ends_at: r.get(4)?,
        state: r.get(5)?,
        last_escalated_at: r.get(6)?,
        checkout_id: r.get(7)?,
        completed_at: r.get(8)?,
        completed_by: r.get(9)?,
        participants: {
            let json: String = r.get(10)?;
            let mut ids: Vec<String> = serde_json::from_str(&json)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(10, rusqlite::types::Type::Text, e.into()))?;
            ids.sort();
            ids
        },
        checklist: r.get(11)?,
        failed_items: r.get(12)?,
    })
}

/// Insert a drill for a period; `false` when that period already has one.
pub fn insert(conn: &Connection, d: &DrillRow) -> Result<bool, StoreError> {
    Ok(conn.exec(
        "INSERT OR IGNORE INTO drills (id, account_id, period, due_at, grace_ends_at, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![d.id, d.account_id, d.period, d.due_at, d.grace_ends_at, d.state],
    )? == 1)
}

pub fn get(conn: &Connection, id: &str) -> Result<Option<DrillRow>, StoreError> {
    Ok(conn.row(&format!("SELECT {COLS} FROM drills WHERE id = ?1"), [id], from_row).optional()?)
}

pub fn open_for_account(conn: &Connection, account_id: &str) -> Result<Vec<DrillRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM drills WHERE account_id = ?1 AND state IN ('due', 'overdue') ORDER BY due_at"
    ))?;
    let rows = stmt.query_map([account_id], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The account's latest drill, if it failed: it can be run again until a new period
/// begins, and it reminds weekly meanwhile.
pub fn failed_latest(conn: &Connection, account_id: &str) -> Result<Option<DrillRow>, StoreError> {
    Ok(conn
        .row(
            &format!("SELECT {COLS} FROM drills WHERE account_id = ?1 ORDER BY due_at DESC LIMIT 1"),
            [account_id],
            from_row,
        )
        .optional()?
        .filter(|d| d.state == DrillState::Failed))
}

/// Every account's latest drill that failed.
pub fn failed_latest_all(conn: &Connection) -> Result<Vec<DrillRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM drills WHERE state = 'failed' AND due_at = (SELECT max(due_at) FROM drills x WHERE x.account_id = drills.account_id) \
         ORDER BY account_id"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn open_drills(conn: &Connection) -> Result<Vec<DrillRow>, StoreError> {
    let mut stmt = conn
        .prepare(&format!("SELECT {COLS} FROM drills WHERE state IN ('due', 'overdue') ORDER BY due_at, account_id"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Drills due in `[since, until)`, optionally for one account, oldest first.
pub fn list(conn: &Connection, account_id: Option<&str>, since: i64, until: i64) -> Result<Vec<DrillRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM drills WHERE (?1 IS NULL OR account_id = ?1) AND due_at >= ?2 AND due_at < ?3 ORDER BY due_at, account_id"
    ))?;
    let rows = stmt.query_map(params![account_id, since, until], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn set_state(conn: &Connection, id: &str, state: DrillState, escalated_at: Option<i64>) -> Result<(), StoreError> {
    conn.exec(
        "UPDATE drills SET state = ?2, last_escalated_at = coalesce(?3, last_escalated_at) WHERE id = ?1",
        params![id, state, escalated_at],
    )?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn complete(
    conn: &Connection,
    id: &str,
    state: DrillState,
    checkout_id: &str,
    at: i64,
    by: &str,
    participants: &[String],
    checklist: &str,
    failed_items: &str,
) -> Result<(), StoreError> {
    conn.exec(
        "UPDATE drills SET state = ?2, checkout_id = ?3, completed_at = ?4, completed_by = ?5, checklist = ?6, failed_items = ?7 \
         WHERE id = ?1",
        params![id, state, checkout_id, at, by, checklist, failed_items],
    )?;
    // A re-run of a failed drill replaces who took part.
    conn.exec("DELETE FROM drill_participants WHERE drill_id = ?1", [id])?;
    let mut insert = conn.prepare_cached("INSERT INTO drill_participants (drill_id, custodian_id) VALUES (?1, ?2)")?;
    for p in participants {
        insert.execute(params![id, p])?;
    }
    Ok(())
}

/// Drills open (due or overdue) and overdue, for `/metrics`.
pub fn count_open(conn: &Connection) -> Result<(i64, i64), StoreError> {
    Ok(conn.query_row(
        "SELECT count(*) FILTER (WHERE state IN ('due', 'overdue')), count(*) FILTER (WHERE state = 'overdue') FROM drills",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

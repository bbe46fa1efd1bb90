//! Root events from AWS and the release windows that explain them.
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::StoreError;
use crate::domain::root_activity::{ReleaseWindow, RootEvent, RootEventKind, RootEventStatus};

/// A stored root event with its explanation.
#[derive(Debug, Clone)]
pub struct RootEventRow {
    pub event_id: String,
    pub account_id: String,
    pub kind: RootEventKind,
    pub event_name: String,
    pub event_source: String,
    pub event_time: i64,
    pub received_at: i64,
    pub region: String,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub mfa_used: Option<String>,
    pub error: Option<String>,
    pub checkout_id: Option<String>,
    pub audit_seq: i64,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<i64>,
    pub ack_reason: Option<String>,
}

impl RootEventRow {
    /// Failed sign-ins are never "unexplained use" (nobody got in); they are
    /// announced on their own and need no acknowledgement.
    pub fn status(&self) -> RootEventStatus {
        if self.kind == RootEventKind::SignInFailed {
            RootEventStatus::FailedSignIn
        } else if self.checkout_id.is_some() {
            RootEventStatus::Explained
        } else if self.acknowledged_by.is_some() {
            RootEventStatus::Acknowledged
        } else {
            RootEventStatus::Unexplained
        }
    }
}

const COLS: &str = "event_id, account_id, kind, event_name, event_source, event_time, received_at, region, \
     source_ip, user_agent, mfa_used, error, checkout_id, audit_seq, acknowledged_by, acknowledged_at, ack_reason";

fn from_row(r: &Row<'_>) -> rusqlite::Result<RootEventRow> {
    let kind: String = r.get(2)?;
    Ok(RootEventRow {
        event_id: r.get(0)?,
        account_id: r.get(1)?,
        kind: RootEventKind::parse(&kind).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, format!("kind {kind}").into())
        })?,
        event_name: r.get(3)?,
        event_source: r.get(4)?,
        event_time: r.get(5)?,
        received_at: r.get(6)?,
        region: r.get(7)?,
        source_ip: r.get(8)?,
        user_agent: r.get(9)?,
        mfa_used: r.get(10)?,
        error: r.get(11)?,
        checkout_id: r.get(12)?,
        audit_seq: r.get(13)?,
        acknowledged_by: r.get(14)?,
        acknowledged_at: r.get(15)?,
        ack_reason: r.get(16)?,
    })
}

pub fn exists(conn: &Connection, event_id: &str) -> Result<bool, StoreError> {
    Ok(conn.query_row("SELECT EXISTS (SELECT 1 FROM root_events WHERE event_id = ?1)", [event_id], |r| r.get(0))?)
}

/// Store a new event; the caller has checked [`exists`] in the same transaction.
pub fn insert(
    conn: &Connection,
    e: &RootEvent,
    received_at: i64,
    checkout_id: Option<&str>,
    audit_seq: u64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO root_events (event_id, account_id, kind, event_name, event_source, event_time, received_at, region, \
         source_ip, user_agent, mfa_used, error, detail, checkout_id, audit_seq) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            e.event_id,
            e.account_id,
            e.kind.as_str(),
            e.event_name,
            e.event_source,
            e.event_time,
            received_at,
            e.region,
            e.source_ip,
            e.user_agent,
            e.mfa_used,
            e.error,
            e.detail.to_string(),
            checkout_id,
            i64::try_from(audit_seq).unwrap_or(i64::MAX),
        ],
    )?;
    Ok(())
}

pub fn get(conn: &Connection, event_id: &str) -> Result<Option<RootEventRow>, StoreError> {
    Ok(conn
        .query_row(&format!("SELECT {COLS} FROM root_events WHERE event_id = ?1"), [event_id], from_row)
        .optional()?)
}

/// Newest first, optionally for one account.
pub fn list(conn: &Connection, account_id: Option<&str>, limit: u32) -> Result<Vec<RootEventRow>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLS} FROM root_events WHERE (?1 IS NULL OR account_id = ?1) \
         ORDER BY event_time DESC, event_id LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![account_id, limit], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Unexplained successful root use nobody has acknowledged yet (the banner).
pub fn open_unexplained(conn: &Connection) -> Result<Vec<RootEventRow>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLS} FROM root_events WHERE checkout_id IS NULL AND acknowledged_by IS NULL \
         AND kind != 'sign_in_failed' ORDER BY event_time"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn acknowledge(conn: &Connection, event_id: &str, by: &str, at: i64, reason: &str) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "UPDATE root_events SET acknowledged_by = ?2, acknowledged_at = ?3, ack_reason = ?4 \
         WHERE event_id = ?1 AND acknowledged_by IS NULL AND checkout_id IS NULL AND kind != 'sign_in_failed'",
        params![event_id, by, at, reason],
    )? == 1)
}

/// Every checkout of the account that was ever released, as a window.
pub fn release_windows(conn: &Connection, account_id: &str) -> Result<Vec<ReleaseWindow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, released_at, ended_at FROM checkouts WHERE account_id = ?1 AND released_at IS NOT NULL \
         ORDER BY released_at",
    )?;
    let rows = stmt.query_map([account_id], |r| {
        Ok(ReleaseWindow { checkout_id: r.get(0)?, released_at: r.get(1)?, ended_at: r.get(2)? })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Successful root sign-ins of the account between two instants (drill evidence).
pub fn sign_ins_between(
    conn: &Connection,
    account_id: &str,
    from: i64,
    to: i64,
) -> Result<Vec<RootEventRow>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLS} FROM root_events WHERE account_id = ?1 AND kind = 'sign_in' \
         AND event_time BETWEEN ?2 AND ?3 ORDER BY event_time"
    ))?;
    let rows = stmt.query_map(params![account_id, from, to], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

//! Quorum mode: the shares of each account key, one per holder.
use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

#[derive(Debug, Clone)]
pub struct ShareRow {
    pub account_id: String,
    pub key_version: u64,
    pub custodian_id: String,
    pub share_index: u8,
    /// The `age1…` recipients the share was encrypted to (JSON array when stored).
    pub recipients: Vec<String>,
    pub ciphertext: Vec<u8>,
    pub dealt_at: i64,
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ShareRow> {
    let recipients: String = r.get(4)?;
    Ok(ShareRow {
        account_id: r.get(0)?,
        key_version: r.get::<_, i64>(1)? as u64,
        custodian_id: r.get(2)?,
        share_index: r.get(3)?,
        recipients: serde_json::from_str(&recipients)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e)))?,
        ciphertext: r.get(5)?,
        dealt_at: r.get(6)?,
    })
}

const COLS: &str = "account_id, key_version, custodian_id, share_index, recipients, ciphertext, dealt_at";

/// Replace every share of an account with a new dealing (old shares deleted first).
pub fn replace(conn: &Connection, account_id: &str, shares: &[ShareRow]) -> Result<usize, StoreError> {
    let old = conn.execute("DELETE FROM account_shares WHERE account_id = ?1", [account_id])?;
    let mut stmt =
        conn.prepare_cached(&format!("INSERT INTO account_shares ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"))?;
    for s in shares {
        let recipients = serde_json::to_string(&s.recipients).map_err(|e| StoreError::Migration(e.to_string()))?;
        stmt.execute(params![
            account_id,
            s.key_version as i64,
            s.custodian_id,
            s.share_index,
            recipients,
            s.ciphertext,
            s.dealt_at
        ])?;
    }
    Ok(old)
}

pub fn share_of(conn: &Connection, account_id: &str, custodian_id: &str) -> Result<Option<ShareRow>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLS} FROM account_shares WHERE account_id = ?1 AND custodian_id = ?2"),
            params![account_id, custodian_id],
            from_row,
        )
        .optional()?)
}

pub fn shares_of_account(conn: &Connection, account_id: &str) -> Result<Vec<ShareRow>, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLS} FROM account_shares WHERE account_id = ?1 ORDER BY share_index"))?;
    let rows = stmt.query_map([account_id], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Quorum-mode accounts in which this person holds a share.
pub fn accounts_held_by(conn: &Connection, custodian_id: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.account_id FROM account_shares s JOIN accounts a ON a.account_id = s.account_id \
         WHERE s.custodian_id = ?1 AND a.custody = 'quorum' ORDER BY s.account_id",
    )?;
    let rows = stmt.query_map([custodian_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

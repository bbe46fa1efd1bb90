//! Accounts, their secret versions, the sealed vault and instance settings.
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::StoreError;

#[derive(Debug, Clone, Serialize)]
pub struct AccountRow {
    pub account_id: String,
    pub alias: String,
    pub root_email: String,
    pub state: String,
    pub approvals_required: u32,
    pub reveal_window_minutes: u32,
    pub max_checkout_minutes: u32,
    pub veto: bool,
    pub drill_schedule: String,
    pub recipient: String,
    #[serde(skip)]
    pub wrapped_key: Vec<u8>,
    pub created_at: i64,
    pub created_by: String,
}

const ACCOUNT_COLS: &str = "account_id, alias, root_email, state, approvals_required, reveal_window_minutes, \
     max_checkout_minutes, veto, drill_schedule, recipient, wrapped_key, created_at, created_by";

fn account_from_row(r: &Row<'_>) -> rusqlite::Result<AccountRow> {
    Ok(AccountRow {
        account_id: r.get(0)?,
        alias: r.get(1)?,
        root_email: r.get(2)?,
        state: r.get(3)?,
        approvals_required: r.get(4)?,
        reveal_window_minutes: r.get(5)?,
        max_checkout_minutes: r.get(6)?,
        veto: r.get::<_, i64>(7)? != 0,
        drill_schedule: r.get(8)?,
        recipient: r.get(9)?,
        wrapped_key: r.get(10)?,
        created_at: r.get(11)?,
        created_by: r.get(12)?,
    })
}

pub fn insert_account(conn: &Connection, a: &AccountRow) -> Result<(), StoreError> {
    conn.execute(
        &format!(
            "INSERT INTO accounts ({ACCOUNT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        ),
        params![
            a.account_id,
            a.alias,
            a.root_email,
            a.state,
            a.approvals_required,
            a.reveal_window_minutes,
            a.max_checkout_minutes,
            a.veto as i64,
            a.drill_schedule,
            a.recipient,
            a.wrapped_key,
            a.created_at,
            a.created_by
        ],
    )?;
    Ok(())
}

pub fn account(conn: &Connection, account_id: &str) -> Result<Option<AccountRow>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE account_id = ?1"),
            [account_id],
            account_from_row,
        )
        .optional()?)
}

pub fn list_accounts(conn: &Connection) -> Result<Vec<AccountRow>, StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT {ACCOUNT_COLS} FROM accounts ORDER BY alias, account_id"))?;
    let rows = stmt.query_map([], account_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[derive(Debug, Clone, Serialize)]
pub struct SecretVersionRow {
    pub kind: String,
    pub version: u64,
    pub deposited_at: i64,
    pub deposited_by: String,
}

pub fn next_secret_version(conn: &Connection, account_id: &str, kind: &str) -> Result<u64, StoreError> {
    let max: i64 = conn.query_row(
        "SELECT coalesce(max(version), 0) FROM secret_versions WHERE account_id = ?1 AND kind = ?2",
        params![account_id, kind],
        |r| r.get(0),
    )?;
    Ok(max as u64 + 1)
}

pub fn insert_secret_version(
    conn: &Connection,
    account_id: &str,
    kind: &str,
    version: u64,
    ciphertext: &[u8],
    at: i64,
    by: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO secret_versions (account_id, kind, version, ciphertext, deposited_at, deposited_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![account_id, kind, version as i64, ciphertext, at, by],
    )?;
    Ok(())
}

pub fn secret_versions(conn: &Connection, account_id: &str) -> Result<Vec<SecretVersionRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT kind, version, deposited_at, deposited_by FROM secret_versions WHERE account_id = ?1 ORDER BY kind, version",
    )?;
    let rows = stmt.query_map([account_id], |r| {
        Ok(SecretVersionRow {
            kind: r.get(0)?,
            version: r.get::<_, i64>(1)? as u64,
            deposited_at: r.get(2)?,
            deposited_by: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest ciphertext of one kind, with its version.
pub fn latest_secret(conn: &Connection, account_id: &str, kind: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT version, ciphertext FROM secret_versions WHERE account_id = ?1 AND kind = ?2 ORDER BY version DESC LIMIT 1",
            params![account_id, kind],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
        )
        .optional()?)
}

// ---- vault ----

#[derive(Debug, Clone)]
pub struct VaultRow {
    pub seal_kind: String,
    pub dev_mode: bool,
    pub kdf_params: Option<String>,
    pub kdf_salt: Option<Vec<u8>>,
    pub sealed_key: Vec<u8>,
    pub recipient: String,
    pub created_at: i64,
}

pub fn vault(conn: &Connection) -> Result<Option<VaultRow>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT seal_kind, dev_mode, kdf_params, kdf_salt, sealed_key, recipient, created_at FROM vault WHERE id = 1",
            [],
            |r| {
                Ok(VaultRow {
                    seal_kind: r.get(0)?,
                    dev_mode: r.get::<_, i64>(1)? != 0,
                    kdf_params: r.get(2)?,
                    kdf_salt: r.get(3)?,
                    sealed_key: r.get(4)?,
                    recipient: r.get(5)?,
                    created_at: r.get(6)?,
                })
            },
        )
        .optional()?)
}

pub fn insert_vault(conn: &Connection, v: &VaultRow) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO vault (id, seal_kind, dev_mode, kdf_params, kdf_salt, sealed_key, recipient, created_at) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![v.seal_kind, v.dev_mode as i64, v.kdf_params, v.kdf_salt, v.sealed_key, v.recipient, v.created_at],
    )?;
    Ok(())
}

pub fn setting(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

pub fn set_setting_if_absent(conn: &Connection, key: &str, value: &[u8]) -> Result<(), StoreError> {
    conn.execute("INSERT OR IGNORE INTO settings (key, value) VALUES (?1, ?2)", params![key, value])?;
    Ok(())
}

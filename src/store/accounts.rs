//! Accounts, their secret versions, the sealed vault and instance settings.
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::{Cached, StoreError};

pub use crate::domain::AccountState;

/// Who may approve: every custodian, or the people in `account_approvers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApproverMode {
    All,
    Listed,
}

impl ApproverMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Listed => "listed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::All, Self::Listed].into_iter().find(|m| m.as_str() == s)
    }
}

/// One row of `accounts`, every column.
#[derive(Debug, Clone, Serialize)]
pub struct AccountRow {
    pub account_id: String,
    pub alias: String,
    pub root_email: String,
    pub state: AccountState,
    pub approvals_required: u32,
    pub reveal_window_minutes: u32,
    pub max_checkout_minutes: u32,
    pub veto: bool,
    pub drill_schedule: String,
    pub recipient: String,
    /// Policy mode: the account key wrapped to the vault key. `None` in quorum mode.
    #[serde(skip)]
    pub wrapped_key: Option<Vec<u8>>,
    pub created_at: i64,
    pub created_by: String,
    pub approver_set: ApproverMode,
    /// Set by an emergency release until a new root password is deposited.
    pub rotation_due_since: Option<i64>,
    pub next_drill_due_at: Option<i64>,
    /// What failed in the latest drill (JSON); `None` when it passed.
    pub drill_flag: Option<String>,
    pub custody: crate::domain::Custody,
    /// Quorum mode: which account key the shares belong to (bumped at each reshare).
    pub key_version: u64,
    /// Quorum mode: how many shares open the key, as dealt.
    pub quorum_k: Option<u32>,
    /// Quorum mode: the holders no longer match the policy since this time.
    pub reshare_due_since: Option<i64>,
    pub reshare_reason: Option<String>,
    /// `stored_root` (password and seed in the vault) or `centralized_root` (nothing
    /// stored; checkouts open `sts:AssumeRoot` sessions).
    pub account_type: crate::domain::root_task::AccountType,
}

const ACCOUNT_COLS: &str = "account_id, alias, root_email, state, approvals_required, reveal_window_minutes, \
     max_checkout_minutes, veto, drill_schedule, recipient, wrapped_key, created_at, created_by";

/// Columns read after `ACCOUNT_COLS`; `insert_account` leaves all but `account_type` to their defaults.
const LATER_COLS: &str = "approver_set, rotation_due_since, next_drill_due_at, drill_flag, custody, key_version, \
     reshare_due_since, reshare_reason, quorum_k, account_type";

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
        approver_set: r.get(13)?,
        rotation_due_since: r.get(14)?,
        next_drill_due_at: r.get(15)?,
        drill_flag: r.get(16)?,
        custody: r.get(17)?,
        key_version: r.get::<_, i64>(18)? as u64,
        reshare_due_since: r.get(19)?,
        reshare_reason: r.get(20)?,
        quorum_k: r.get(21)?,
        account_type: r.get(22)?,
    })
}

pub fn insert_account(conn: &Connection, a: &AccountRow) -> Result<(), StoreError> {
    conn.exec(
        &format!(
            "INSERT INTO accounts ({ACCOUNT_COLS}, account_type) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
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
            a.created_by,
            a.account_type
        ],
    )?;
    Ok(())
}

pub fn account(conn: &Connection, account_id: &str) -> Result<Option<AccountRow>, StoreError> {
    Ok(conn
        .row(
            &format!("SELECT {ACCOUNT_COLS}, {LATER_COLS} FROM accounts WHERE account_id = ?1"),
            [account_id],
            account_from_row,
        )
        .optional()?)
}

pub fn list_accounts(conn: &Connection) -> Result<Vec<AccountRow>, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {ACCOUNT_COLS}, {LATER_COLS} FROM accounts ORDER BY alias, account_id"))?;
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
    let max: i64 = conn.row(
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
    conn.exec(
        "INSERT INTO secret_versions (account_id, kind, version, ciphertext, deposited_at, deposited_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![account_id, kind, version as i64, ciphertext, at, by],
    )?;
    Ok(())
}

pub fn secret_versions(conn: &Connection, account_id: &str) -> Result<Vec<SecretVersionRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
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

/// The statement [`latest_secret`] keeps prepared to find the newest version.
pub const SECRET_VERSIONS_SQL: &str = "SELECT version FROM secret_versions WHERE account_id = ?1 AND kind = ?2";

/// The newest ciphertext of one kind, with its version.
pub fn latest_secret(conn: &Connection, account_id: &str, kind: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    // Two equality lookups instead of ORDER BY/max(): those make the bundled SQLite
    // (STAT4) re-prepare the cached statement for every account (`checkouts::approvals_of`).
    let mut stmt = conn.prepare_cached(SECRET_VERSIONS_SQL)?;
    let latest = stmt.query_map(params![account_id, kind], |r| r.get::<_, i64>(0))?.try_fold(
        None::<i64>,
        |max, v| -> rusqlite::Result<Option<i64>> {
            let v = v?;
            Ok(Some(max.map_or(v, |m| m.max(v))))
        },
    )?;
    let Some(version) = latest else { return Ok(None) };
    let ciphertext = conn.row(
        "SELECT ciphertext FROM secret_versions WHERE account_id = ?1 AND kind = ?2 AND version = ?3",
        params![account_id, kind, version],
        |r| r.get(0),
    )?;
    Ok(Some((version as u64, ciphertext)))
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

/// Whether any account is in quorum custody.
pub fn any_in_quorum_custody(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn.row("SELECT EXISTS (SELECT 1 FROM accounts WHERE custody = 'quorum')", [], |r| r.get(0))?)
}

pub fn vault(conn: &Connection) -> Result<Option<VaultRow>, StoreError> {
    Ok(conn
        .row(
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
    conn.exec(
        "INSERT INTO vault (id, seal_kind, dev_mode, kdf_params, kdf_salt, sealed_key, recipient, created_at) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![v.seal_kind, v.dev_mode as i64, v.kdf_params, v.kdf_salt, v.sealed_key, v.recipient, v.created_at],
    )?;
    Ok(())
}

pub fn setting(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn.row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

pub fn set_setting_if_absent(conn: &Connection, key: &str, value: &[u8]) -> Result<(), StoreError> {
    conn.exec("INSERT OR IGNORE INTO settings (key, value) VALUES (?1, ?2)", params![key, value])?;
    Ok(())
}

pub fn update_policy(conn: &Connection, account_id: &str, p: &crate::domain::Policy) -> Result<(), StoreError> {
    conn.exec(
        "UPDATE accounts SET approvals_required = ?2, reveal_window_minutes = ?3, max_checkout_minutes = ?4, veto = ?5, \
         drill_schedule = ?6 WHERE account_id = ?1",
        params![account_id, p.approvals_required, p.reveal_window_minutes, p.max_checkout_minutes, p.veto as i64, p.drill_schedule],
    )?;
    Ok(())
}

pub fn set_approver_mode(conn: &Connection, account_id: &str, mode: ApproverMode) -> Result<(), StoreError> {
    conn.exec("UPDATE accounts SET approver_set = ?2 WHERE account_id = ?1", params![account_id, mode])?;
    Ok(())
}

pub fn set_next_drill_due(conn: &Connection, account_id: &str, at: Option<i64>) -> Result<(), StoreError> {
    conn.exec("UPDATE accounts SET next_drill_due_at = ?2 WHERE account_id = ?1", params![account_id, at])?;
    Ok(())
}

pub fn set_drill_flag(conn: &Connection, account_id: &str, flag: Option<&str>) -> Result<(), StoreError> {
    conn.exec("UPDATE accounts SET drill_flag = ?2 WHERE account_id = ?1", params![account_id, flag])?;
    Ok(())
}

/// A new root password was deposited: no rotation is due any more.
pub fn complete_rotation(conn: &Connection, account_id: &str) -> Result<(), StoreError> {
    conn.exec(
        "UPDATE accounts SET rotation_due_since = NULL, \
         state = CASE WHEN state = 'rotation_due' THEN 'available' ELSE state END WHERE account_id = ?1",
        [account_id],
    )?;
    Ok(())
}

/// Credentials are out; an emergency release also makes a rotation due (from the
/// first such release until a new password is deposited).
pub fn mark_checked_out(conn: &Connection, account_id: &str, rotation_due: bool, now: i64) -> Result<(), StoreError> {
    conn.exec(
        "UPDATE accounts SET state = 'checked_out', \
         rotation_due_since = CASE WHEN ?2 THEN coalesce(rotation_due_since, ?3) ELSE rotation_due_since END \
         WHERE account_id = ?1",
        params![account_id, rotation_due, now],
    )?;
    Ok(())
}

/// The account's state once no checkout is open on it.
pub fn settle(conn: &Connection, account_id: &str) -> Result<(), StoreError> {
    conn.exec(
        "UPDATE accounts SET state = CASE WHEN rotation_due_since IS NULL THEN 'available' ELSE 'rotation_due' END \
         WHERE account_id = ?1",
        [account_id],
    )?;
    Ok(())
}

/// One stored secret version, ciphertext included (re-encryption only).
pub struct StoredSecret {
    pub row_id: i64,
    pub kind: String,
    pub version: u64,
    pub ciphertext: Vec<u8>,
}

/// Every stored secret version of an account.
pub fn all_secret_versions(conn: &Connection, account_id: &str) -> Result<Vec<StoredSecret>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, kind, version, ciphertext FROM secret_versions WHERE account_id = ?1 ORDER BY kind, version",
    )?;
    let rows = stmt.query_map([account_id], |r| {
        Ok(StoredSecret {
            row_id: r.get(0)?,
            kind: r.get(1)?,
            version: r.get::<_, i64>(2)? as u64,
            ciphertext: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A secret version re-encrypted to a new account key (same kind, version, envelope).
pub fn replace_secret_ciphertext(conn: &Connection, id: i64, ciphertext: &[u8]) -> Result<(), StoreError> {
    conn.execute("UPDATE secret_versions SET ciphertext = ?2 WHERE id = ?1", params![id, ciphertext])?;
    Ok(())
}

/// The account now uses a new, shared key: no vault-wrapped key, nothing due.
pub fn set_quorum_key(
    conn: &Connection,
    account_id: &str,
    recipient: &str,
    key_version: u64,
    k: u32,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE accounts SET custody = 'quorum', wrapped_key = NULL, recipient = ?2, key_version = ?3, quorum_k = ?4, \
         reshare_due_since = NULL, reshare_reason = NULL WHERE account_id = ?1",
        params![account_id, recipient, key_version as i64, k],
    )?;
    Ok(())
}

/// The share holders no longer match the policy. Keeps the first time and reason.
/// Returns whether it newly became due.
pub fn mark_reshare_due(conn: &Connection, account_id: &str, reason: &str, at: i64) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "UPDATE accounts SET reshare_due_since = ?3, reshare_reason = ?2 \
         WHERE account_id = ?1 AND custody = 'quorum' AND reshare_due_since IS NULL",
        params![account_id, reason, at],
    )? > 0)
}

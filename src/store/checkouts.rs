//! Checkouts, approvals and account approver sets.
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Cached, StoreError};
pub use crate::domain::checkout::CheckoutState;

/// A checkout row is the domain's `Checkout`: its transitions live there.
pub use crate::domain::checkout::Checkout as CheckoutRow;

const COLS: &str = "id, account_id, requester_id, kind, reason, ticket, duration_minutes, state, approvals_required, veto, \
     reveal_window_minutes, created_at, expires_at, approved_at, released_at, window_ends_at, ended_at, ended_by, end_note, \
     task_policy, task_duration_seconds";

fn from_row(r: &Row<'_>) -> rusqlite::Result<CheckoutRow> {
    Ok(CheckoutRow {
        id: r.get(0)?,
        account_id: r.get(1)?,
        requester_id: r.get(2)?,
        kind: r.get(3)?,
        reason: r.get(4)?,
        ticket: r.get(5)?,
        duration_minutes: r.get(6)?,
        state: r.get(7)?,
        approvals_required: r.get(8)?,
        veto: r.get::<_, i64>(9)? != 0,
        reveal_window_minutes: r.get(10)?,
        created_at: r.get(11)?,
        expires_at: r.get(12)?,
        approved_at: r.get(13)?,
        released_at: r.get(14)?,
        window_ends_at: r.get(15)?,
        ended_at: r.get(16)?,
        ended_by: r.get(17)?,
        end_note: r.get(18)?,
        task: match (r.get::<_, Option<crate::domain::root_task::TaskPolicy>>(19)?, r.get::<_, Option<u32>>(20)?) {
            (Some(policy), Some(duration_seconds)) => {
                Some(crate::domain::root_task::RootTask { policy, duration_seconds })
            }
            _ => None,
        },
    })
}

pub fn insert(conn: &Connection, c: &CheckoutRow) -> Result<(), StoreError> {
    conn.exec(
        &format!("INSERT INTO checkouts ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)"),
        params![
            c.id,
            c.account_id,
            c.requester_id,
            c.kind,
            c.reason,
            c.ticket,
            c.duration_minutes,
            c.state,
            c.approvals_required,
            c.veto as i64,
            c.reveal_window_minutes,
            c.created_at,
            c.expires_at,
            c.approved_at,
            c.released_at,
            c.window_ends_at,
            c.ended_at,
            c.ended_by,
            c.end_note,
            c.task.map(|t| t.policy),
            c.task.map(|t| t.duration_seconds)
        ],
    )?;
    Ok(())
}

/// Write back the mutable fields of a checkout.
pub fn update(conn: &Connection, c: &CheckoutRow) -> Result<(), StoreError> {
    conn.exec(
        "UPDATE checkouts SET state = ?2, expires_at = ?3, approved_at = ?4, released_at = ?5, window_ends_at = ?6, \
         ended_at = ?7, ended_by = ?8, end_note = ?9 WHERE id = ?1",
        params![
            c.id,
            c.state,
            c.expires_at,
            c.approved_at,
            c.released_at,
            c.window_ends_at,
            c.ended_at,
            c.ended_by,
            c.end_note
        ],
    )?;
    Ok(())
}

pub fn get(conn: &Connection, id: &str) -> Result<Option<CheckoutRow>, StoreError> {
    Ok(conn.row(&format!("SELECT {COLS} FROM checkouts WHERE id = ?1"), [id], from_row).optional()?)
}

pub fn open_for_account(conn: &Connection, account_id: &str) -> Result<Option<CheckoutRow>, StoreError> {
    Ok(conn
        .row(
            &format!(
                "SELECT {COLS} FROM checkouts WHERE account_id = ?1 AND state IN ('pending', 'approved', 'released')"
            ),
            [account_id],
            from_row,
        )
        .optional()?)
}

/// Open checkouts whose deadline may have passed (the caller decides with the domain rule).
pub fn open_checkouts(conn: &Connection) -> Result<Vec<CheckoutRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM checkouts WHERE state IN ('pending', 'approved', 'released') ORDER BY created_at"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[derive(Debug, Clone, Default)]
pub struct CheckoutFilter {
    pub state: Option<String>,
    pub account_id: Option<String>,
    pub requester_id: Option<String>,
}

pub fn list(conn: &Connection, f: &CheckoutFilter, limit: u32) -> Result<Vec<CheckoutRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM checkouts WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR account_id = ?2) \
         AND (?3 IS NULL OR requester_id = ?3) ORDER BY created_at DESC, id LIMIT ?4"
    ))?;
    let rows = stmt.query_map(params![f.state, f.account_id, f.requester_id, limit], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// ---- approvals ----

#[derive(Debug, Clone)]
pub struct ApprovalRow {
    pub id: i64,
    pub checkout_id: String,
    pub custodian_id: String,
    pub credential_id: String,
    pub decision: String,
    pub comment: Option<String>,
    pub at: i64,
    pub challenge: String,
    pub client_data_json: String,
    pub authenticator_data: String,
    pub signature: String,
}

const APPROVAL_COLS: &str = "id, checkout_id, custodian_id, credential_id, decision, comment, at, challenge, client_data_json, authenticator_data, signature";

pub fn approval_from_row(r: &Row<'_>) -> rusqlite::Result<ApprovalRow> {
    Ok(ApprovalRow {
        id: r.get(0)?,
        checkout_id: r.get(1)?,
        custodian_id: r.get(2)?,
        credential_id: r.get(3)?,
        decision: r.get(4)?,
        comment: r.get(5)?,
        at: r.get(6)?,
        challenge: r.get(7)?,
        client_data_json: r.get(8)?,
        authenticator_data: r.get(9)?,
        signature: r.get(10)?,
    })
}

/// Insert a decision. `Ok(false)` when this person already decided (the UNIQUE
/// constraint is the last line of defence for "one person counts once").
pub fn insert_approval(conn: &Connection, a: &ApprovalRow) -> Result<bool, StoreError> {
    let r = conn.exec(
        "INSERT INTO approvals (checkout_id, custodian_id, credential_id, decision, comment, at, challenge, client_data_json, \
         authenticator_data, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![a.checkout_id, a.custodian_id, a.credential_id, a.decision, a.comment, a.at, a.challenge, a.client_data_json, a.authenticator_data, a.signature],
    );
    match r {
        Ok(_) => Ok(true),
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The statement [`approvals_of`] keeps prepared (public for the test that checks it is
/// never re-prepared).
pub fn approvals_of_sql() -> String {
    format!("SELECT {APPROVAL_COLS} FROM approvals WHERE checkout_id = ?1")
}

pub fn approvals_of(conn: &Connection, checkout_id: &str) -> Result<Vec<ApprovalRow>, StoreError> {
    // Sorted here, not with ORDER BY: with an ORDER BY after `= ?1` the bundled SQLite
    // (STAT4) re-prepares the cached statement for every new checkout id.
    let mut stmt = conn.prepare_cached(&approvals_of_sql())?;
    let rows = stmt.query_map([checkout_id], approval_from_row)?;
    let mut rows: Vec<ApprovalRow> = rows.collect::<Result<_, _>>()?;
    rows.sort_by_key(|a| (a.at, a.id));
    Ok(rows)
}

/// Every approval in insertion order, which is the order of their audit entries (each
/// row is written in the transaction of its entry): `audit verify` walks this beside
/// the log with [`approval_from_row`], holding one row at a time.
pub fn approvals_in_log_order(conn: &Connection) -> Result<rusqlite::CachedStatement<'_>, StoreError> {
    Ok(conn.prepare_cached(&format!("SELECT {APPROVAL_COLS} FROM approvals ORDER BY id"))?)
}

/// Distinct people who approved (never credentials).
pub fn count_distinct_approvers(conn: &Connection, checkout_id: &str) -> Result<u32, StoreError> {
    Ok(conn.row(
        "SELECT count(DISTINCT custodian_id) FROM approvals WHERE checkout_id = ?1 AND decision = 'approve'",
        [checkout_id],
        |r| r.get(0),
    )?)
}

pub fn has_decided(conn: &Connection, checkout_id: &str, custodian_id: &str) -> Result<bool, StoreError> {
    Ok(conn.row(
        "SELECT EXISTS (SELECT 1 FROM approvals WHERE checkout_id = ?1 AND custodian_id = ?2)",
        params![checkout_id, custodian_id],
        |r| r.get(0),
    )?)
}

// ---- approver sets ----

pub fn approvers(conn: &Connection, account_id: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT custodian_id FROM account_approvers WHERE account_id = ?1 ORDER BY custodian_id")?;
    let rows = stmt.query_map([account_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Who could approve a request on this account today: `(listed, count)`. For a listed
/// set, the listed people who are active custodians; for `all`, every active custodian
/// (the requester among them).
pub fn approver_pool(conn: &Connection, account_id: &str) -> Result<(bool, u32), StoreError> {
    Ok(conn.row(
        "SELECT a.approver_set = 'listed', CASE a.approver_set WHEN 'listed' THEN \
           (SELECT count(*) FROM account_approvers x JOIN custodians c ON c.id = x.custodian_id \
              JOIN custodian_roles r ON r.custodian_id = c.id \
            WHERE x.account_id = a.account_id AND c.status = 'active' AND r.role = 'custodian') \
         ELSE (SELECT count(*) FROM custodians c JOIN custodian_roles r ON r.custodian_id = c.id \
            WHERE c.status = 'active' AND r.role = 'custodian') END \
         FROM accounts a WHERE a.account_id = ?1",
        [account_id],
        |r| Ok((r.get::<_, bool>(0)?, r.get::<_, u32>(1)?)),
    )?)
}

pub fn set_approvers(conn: &Connection, account_id: &str, ids: &[String]) -> Result<(), StoreError> {
    conn.exec("DELETE FROM account_approvers WHERE account_id = ?1", [account_id])?;
    for id in ids {
        conn.exec("INSERT INTO account_approvers (account_id, custodian_id) VALUES (?1, ?2)", params![account_id, id])?;
    }
    Ok(())
}

pub fn public_key_of(conn: &Connection, credential_id: &str) -> Result<Option<String>, StoreError> {
    Ok(conn.row("SELECT public_key FROM credentials WHERE id = ?1", [credential_id], |r| r.get(0)).optional()?)
}

/// Whether a checkout of the account was released after `at`.
pub fn released_after(conn: &Connection, account_id: &str, at: i64) -> Result<bool, StoreError> {
    Ok(conn.row(
        "SELECT EXISTS (SELECT 1 FROM checkouts WHERE account_id = ?1 AND released_at > ?2)",
        params![account_id, at],
        |r| r.get(0),
    )?)
}

// ---- quorum mode: transit key and handed-over shares ----

/// A quorum-mode checkout's transit key: the key version it is for, its recipient
/// and its secret sealed to the vault key (`None` once purged).
#[derive(Debug, Clone)]
pub struct Transit {
    pub key_version: u64,
    pub recipient: String,
    pub sealed: Option<Vec<u8>>,
}

pub fn set_transit(conn: &Connection, checkout_id: &str, t: &Transit) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE checkouts SET key_version = ?2, transit_recipient = ?3, transit_sealed = ?4 WHERE id = ?1",
        params![checkout_id, t.key_version as i64, t.recipient, t.sealed],
    )?;
    Ok(())
}

pub fn transit(conn: &Connection, checkout_id: &str) -> Result<Option<Transit>, StoreError> {
    Ok(conn
        .row(
            "SELECT key_version, transit_recipient, transit_sealed FROM checkouts \
             WHERE id = ?1 AND key_version IS NOT NULL AND transit_recipient IS NOT NULL",
            [checkout_id],
            |r| Ok(Transit { key_version: r.get::<_, i64>(0)? as u64, recipient: r.get(1)?, sealed: r.get(2)? }),
        )
        .optional()?)
}

/// A share handed over for a checkout, encrypted to its transit recipient.
#[derive(Debug, Clone)]
pub struct HandedShare {
    pub custodian_id: String,
    pub share_index: u8,
    pub key_version: u64,
    pub ciphertext: Vec<u8>,
    pub at: i64,
}

/// Store a handed-over share; `false` if this person already handed one over.
pub fn insert_handed_share(conn: &Connection, checkout_id: &str, s: &HandedShare) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "INSERT OR IGNORE INTO checkout_shares (checkout_id, custodian_id, share_index, key_version, ciphertext, at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![checkout_id, s.custodian_id, s.share_index, s.key_version as i64, s.ciphertext, s.at],
    )? == 1)
}

pub fn handed_shares(conn: &Connection, checkout_id: &str) -> Result<Vec<HandedShare>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT custodian_id, share_index, key_version, ciphertext, at FROM checkout_shares \
         WHERE checkout_id = ?1 ORDER BY at, custodian_id",
    )?;
    let rows = stmt.query_map([checkout_id], |r| {
        Ok(HandedShare {
            custodian_id: r.get(0)?,
            share_index: r.get(1)?,
            key_version: r.get::<_, i64>(2)? as u64,
            ciphertext: r.get(3)?,
            at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Delete a checkout's transit key and every share handed over for it (the state
/// trigger does the same when a checkout ends; this is for the end of the reveal
/// window). Returns whether anything was deleted.
pub fn purge_quorum_material(conn: &Connection, checkout_id: &str) -> Result<bool, StoreError> {
    let shares = conn.execute("DELETE FROM checkout_shares WHERE checkout_id = ?1", [checkout_id])?;
    let transit = conn.execute(
        "UPDATE checkouts SET transit_sealed = NULL WHERE id = ?1 AND transit_sealed IS NOT NULL",
        [checkout_id],
    )?;
    Ok(shares + transit > 0)
}

/// Released checkouts whose reveal window has ended but still hold quorum material.
pub fn with_stale_quorum_material(conn: &Connection, now: i64) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM checkouts WHERE transit_sealed IS NOT NULL AND state = 'released' AND window_ends_at <= ?1",
    )?;
    let rows = stmt.query_map([now], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every checkout state with its count (zeros included), for `/metrics`.
pub fn count_by_state(conn: &Connection) -> Result<Vec<(String, i64)>, StoreError> {
    let mut counts: Vec<(String, i64)> =
        ["pending", "approved", "released", "closed", "denied", "cancelled", "expired"]
            .iter()
            .map(|s| ((*s).to_owned(), 0))
            .collect();
    let mut stmt = conn.prepare("SELECT state, count(*) FROM checkouts GROUP BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (state, n) = row?;
        match counts.iter_mut().find(|(s, _)| *s == state) {
            Some(slot) => slot.1 = n,
            None => counts.push((state, n)),
        }
    }
    Ok(counts)
}

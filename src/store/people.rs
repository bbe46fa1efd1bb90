//! Custodians, their roles, credentials, sessions, invites and WebAuthn ceremonies.
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::{Cached, StoreError};
use crate::domain::{Role, roles_from_string, roles_to_string};

#[derive(Debug, Clone, Serialize)]
pub struct CustodianRow {
    pub id: String,
    pub name: String,
    pub email: String,
    pub status: String,
    pub roles: Vec<Role>,
    pub enrolled_at: i64,
    pub approve_after: i64,
    pub disabled_at: Option<i64>,
}

impl CustodianRow {
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

const CUSTODIAN_COLS: &str = "c.id, c.name, c.email, c.status, c.enrolled_at, c.approve_after, c.disabled_at, \
     (SELECT group_concat(role, ',') FROM (SELECT role FROM custodian_roles r WHERE r.custodian_id = c.id ORDER BY role))";

fn custodian_from_row(r: &Row<'_>) -> rusqlite::Result<CustodianRow> {
    let roles: Option<String> = r.get(7)?;
    Ok(CustodianRow {
        id: r.get(0)?,
        name: r.get(1)?,
        email: r.get(2)?,
        status: r.get(3)?,
        enrolled_at: r.get(4)?,
        approve_after: r.get(5)?,
        disabled_at: r.get(6)?,
        roles: roles_from_string(roles.as_deref().unwrap_or_default()).unwrap_or_default(),
    })
}

pub fn insert_custodian(conn: &Connection, c: &CustodianRow) -> Result<(), StoreError> {
    conn.exec(
        "INSERT INTO custodians (id, name, email, status, enrolled_at, approve_after) VALUES (?1, ?2, ?3, 'active', ?4, ?5)",
        params![c.id, c.name, c.email, c.enrolled_at, c.approve_after],
    )?;
    for role in &c.roles {
        conn.exec("INSERT INTO custodian_roles (custodian_id, role) VALUES (?1, ?2)", params![c.id, role.as_str()])?;
    }
    Ok(())
}

pub fn custodian(conn: &Connection, id: &str) -> Result<Option<CustodianRow>, StoreError> {
    Ok(conn
        .row(&format!("SELECT {CUSTODIAN_COLS} FROM custodians c WHERE c.id = ?1"), [id], custodian_from_row)
        .optional()?)
}

pub fn custodian_by_email(conn: &Connection, email: &str) -> Result<Option<CustodianRow>, StoreError> {
    Ok(conn
        .row(&format!("SELECT {CUSTODIAN_COLS} FROM custodians c WHERE c.email = ?1"), [email], custodian_from_row)
        .optional()?)
}

pub fn list_custodians(conn: &Connection) -> Result<Vec<CustodianRow>, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {CUSTODIAN_COLS} FROM custodians c ORDER BY c.enrolled_at, c.email"))?;
    let rows = stmt.query_map([], custodian_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn count_active_with_role(conn: &Connection, role: Role) -> Result<i64, StoreError> {
    Ok(conn.row(
        "SELECT count(*) FROM custodians c JOIN custodian_roles r ON r.custodian_id = c.id WHERE c.status = 'active' AND r.role = ?1",
        [role.as_str()],
        |r| r.get(0),
    )?)
}

pub fn disable_custodian(conn: &Connection, id: &str, at: i64, by: &str) -> Result<(), StoreError> {
    conn.exec(
        "UPDATE custodians SET status = 'disabled', disabled_at = ?2, disabled_by = ?3 WHERE id = ?1",
        params![id, at, by],
    )?;
    conn.exec("DELETE FROM sessions WHERE custodian_id = ?1", [id])?;
    Ok(())
}

// ---- credentials ----

#[derive(Debug, Clone, Serialize)]
pub struct CredentialRow {
    pub id: String,
    pub custodian_id: String,
    pub label: String,
    #[serde(skip)]
    pub passkey: String,
    pub prf_capable: bool,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    /// `unknown` (never asked), `ready` (has a share recipient) or `unsupported` (its
    /// authenticator returned no PRF output).
    pub prf_status: String,
    /// The public `age1…` share recipient its PRF output derives (quorum mode).
    pub prf_recipient: Option<String>,
}

fn credential_from_row(r: &Row<'_>) -> rusqlite::Result<CredentialRow> {
    Ok(CredentialRow {
        id: r.get(0)?,
        custodian_id: r.get(1)?,
        label: r.get(2)?,
        passkey: r.get(3)?,
        prf_capable: r.get::<_, i64>(4)? != 0,
        created_at: r.get(5)?,
        last_used_at: r.get(6)?,
        prf_status: r.get(7)?,
        prf_recipient: r.get(8)?,
    })
}

const CREDENTIAL_COLS: &str =
    "id, custodian_id, label, passkey, prf_capable, created_at, last_used_at, prf_status, prf_recipient";

pub fn insert_credential(conn: &Connection, c: &CredentialRow, public_key: &str) -> Result<(), StoreError> {
    conn.exec(
        "INSERT INTO credentials (id, custodian_id, label, passkey, public_key, prf_capable, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![c.id, c.custodian_id, c.label, c.passkey, public_key, c.prf_capable as i64, c.created_at],
    )?;
    Ok(())
}

pub fn credential_exists(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    Ok(conn.row("SELECT EXISTS (SELECT 1 FROM credentials WHERE id = ?1)", [id], |r| r.get(0))?)
}

/// The statement [`credentials_of`] keeps prepared.
pub fn credentials_of_sql() -> String {
    format!("SELECT {CREDENTIAL_COLS} FROM credentials WHERE custodian_id = ?1")
}

pub fn credentials_of(conn: &Connection, custodian_id: &str) -> Result<Vec<CredentialRow>, StoreError> {
    // Sorted here: an ORDER BY after `= ?1` re-prepares the statement for every person
    // (see `checkouts::approvals_of`).
    let mut stmt = conn.prepare_cached(&credentials_of_sql())?;
    let rows = stmt.query_map([custodian_id], credential_from_row)?;
    let mut rows: Vec<CredentialRow> = rows.collect::<Result<_, _>>()?;
    rows.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(rows)
}

/// Active custodians who hold at least one credential, by id: the population the
/// decoy sign-in answers are drawn from.
pub fn custodians_with_credentials(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT k.custodian_id FROM credentials k JOIN custodians c ON c.id = k.custodian_id \
         WHERE c.status = 'active' ORDER BY k.custodian_id",
    )?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn update_credential_use(conn: &Connection, id: &str, passkey: &str, at: i64) -> Result<(), StoreError> {
    conn.exec("UPDATE credentials SET passkey = ?2, last_used_at = ?3 WHERE id = ?1", params![id, passkey, at])?;
    Ok(())
}

/// Record what a credential's authenticator answered to PRF: a share recipient, or
/// none (`unsupported`). `false` when the person holds no such credential.
pub fn set_prf_recipient(
    conn: &Connection,
    custodian_id: &str,
    id: &str,
    recipient: Option<&str>,
    at: i64,
) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "UPDATE credentials SET prf_recipient = ?3, prf_capable = ?4, \
         prf_status = CASE WHEN ?3 IS NULL THEN 'unsupported' ELSE 'ready' END, prf_checked_at = ?5 \
         WHERE id = ?2 AND custodian_id = ?1",
        params![custodian_id, id, recipient, recipient.is_some() as i64, at],
    )? == 1)
}

/// The share recipients of a person's keys (quorum mode), oldest key first.
pub fn share_recipients_of(conn: &Connection, custodian_id: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT prf_recipient FROM credentials WHERE custodian_id = ?1 AND prf_status = 'ready' \
         AND prf_recipient IS NOT NULL ORDER BY created_at, id",
    )?;
    let rows = stmt.query_map([custodian_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn rename_credential(conn: &Connection, custodian_id: &str, id: &str, label: &str) -> Result<bool, StoreError> {
    Ok(conn.exec(
        "UPDATE credentials SET label = ?3 WHERE id = ?2 AND custodian_id = ?1",
        params![custodian_id, id, label],
    )? == 1)
}

// ---- sessions ----

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub custodian_id: String,
    pub credential_id: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
}

pub fn insert_session(conn: &Connection, token_hash: &[u8], s: &SessionRow) -> Result<(), StoreError> {
    conn.exec(
        "INSERT INTO sessions (token_hash, custodian_id, credential_id, created_at, last_seen_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![token_hash, s.custodian_id, s.credential_id, s.created_at, s.last_seen_at, s.expires_at],
    )?;
    Ok(())
}

pub fn session(conn: &Connection, token_hash: &[u8]) -> Result<Option<SessionRow>, StoreError> {
    Ok(conn
        .row(
            "SELECT custodian_id, credential_id, created_at, last_seen_at, expires_at FROM sessions WHERE token_hash = ?1",
            [token_hash],
            |r| {
                Ok(SessionRow {
                    custodian_id: r.get(0)?,
                    credential_id: r.get(1)?,
                    created_at: r.get(2)?,
                    last_seen_at: r.get(3)?,
                    expires_at: r.get(4)?,
                })
            },
        )
        .optional()?)
}

pub fn touch_session(conn: &Connection, token_hash: &[u8], at: i64) -> Result<(), StoreError> {
    conn.exec("UPDATE sessions SET last_seen_at = ?2 WHERE token_hash = ?1", params![token_hash, at])?;
    Ok(())
}

pub fn delete_session(conn: &Connection, token_hash: &[u8]) -> Result<bool, StoreError> {
    Ok(conn.exec("DELETE FROM sessions WHERE token_hash = ?1", [token_hash])? == 1)
}

// ---- invites ----

#[derive(Debug, Clone, Serialize)]
pub struct InviteRow {
    pub id: String,
    pub roles: Vec<Role>,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub used_by: Option<String>,
    pub revoked_at: Option<i64>,
}

const INVITE_COLS: &str = "id, roles, created_by, created_at, expires_at, used_at, used_by, revoked_at";

fn invite_from_row(r: &Row<'_>) -> rusqlite::Result<InviteRow> {
    let roles: String = r.get(1)?;
    Ok(InviteRow {
        id: r.get(0)?,
        roles: roles_from_string(&roles).unwrap_or_default(),
        created_by: r.get(2)?,
        created_at: r.get(3)?,
        expires_at: r.get(4)?,
        used_at: r.get(5)?,
        used_by: r.get(6)?,
        revoked_at: r.get(7)?,
    })
}

pub fn insert_invite(conn: &Connection, token_hash: &[u8], i: &InviteRow) -> Result<(), StoreError> {
    conn.exec(
        "INSERT INTO invites (id, token_hash, roles, created_by, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![i.id, token_hash, roles_to_string(&i.roles), i.created_by, i.created_at, i.expires_at],
    )?;
    Ok(())
}

pub fn invite_by_token_hash(conn: &Connection, token_hash: &[u8]) -> Result<Option<InviteRow>, StoreError> {
    Ok(conn
        .row(&format!("SELECT {INVITE_COLS} FROM invites WHERE token_hash = ?1"), [token_hash], invite_from_row)
        .optional()?)
}

pub fn invite(conn: &Connection, id: &str) -> Result<Option<InviteRow>, StoreError> {
    Ok(conn.row(&format!("SELECT {INVITE_COLS} FROM invites WHERE id = ?1"), [id], invite_from_row).optional()?)
}

pub fn list_invites(conn: &Connection) -> Result<Vec<InviteRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {INVITE_COLS} FROM invites ORDER BY created_at DESC, id"))?;
    let rows = stmt.query_map([], invite_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Mark an invite used; false if it was already used or revoked (single use).
pub fn use_invite(conn: &Connection, id: &str, at: i64, by: &str) -> Result<bool, StoreError> {
    Ok(conn.exec(
        "UPDATE invites SET used_at = ?2, used_by = ?3 WHERE id = ?1 AND used_at IS NULL AND revoked_at IS NULL",
        params![id, at, by],
    )? == 1)
}

pub fn revoke_invite(conn: &Connection, id: &str, at: i64) -> Result<bool, StoreError> {
    Ok(conn.exec(
        "UPDATE invites SET revoked_at = ?2 WHERE id = ?1 AND used_at IS NULL AND revoked_at IS NULL",
        params![id, at],
    )? == 1)
}

// ---- ceremonies ----

#[derive(Debug, Clone)]
pub struct CeremonyRow {
    pub id: String,
    pub purpose: String,
    pub custodian_id: Option<String>,
    pub invite_id: Option<String>,
    pub checkout_id: Option<String>,
    pub pending: Option<String>,
    pub state: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

pub fn insert_ceremony(conn: &Connection, c: &CeremonyRow) -> Result<(), StoreError> {
    conn.exec(
        "INSERT INTO ceremonies (id, purpose, custodian_id, invite_id, checkout_id, pending, state, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![c.id, c.purpose, c.custodian_id, c.invite_id, c.checkout_id, c.pending, c.state, c.created_at, c.expires_at],
    )?;
    Ok(())
}

/// Remove and return a ceremony: whatever happens next, it cannot be used again.
pub fn take_ceremony(conn: &Connection, id: &str) -> Result<Option<CeremonyRow>, StoreError> {
    Ok(conn
        .row(
            "DELETE FROM ceremonies WHERE id = ?1 \
             RETURNING id, purpose, custodian_id, invite_id, checkout_id, pending, state, created_at, expires_at",
            [id],
            |r| {
                Ok(CeremonyRow {
                    id: r.get(0)?,
                    purpose: r.get(1)?,
                    custodian_id: r.get(2)?,
                    invite_id: r.get(3)?,
                    checkout_id: r.get(4)?,
                    pending: r.get(5)?,
                    state: r.get(6)?,
                    created_at: r.get(7)?,
                    expires_at: r.get(8)?,
                })
            },
        )
        .optional()?)
}

/// Housekeeping: drop expired ceremonies and sessions.
pub fn purge_expired(conn: &Connection, now: i64, idle_secs: i64) -> Result<usize, StoreError> {
    let a = conn.exec("DELETE FROM ceremonies WHERE expires_at <= ?1", [now])?;
    let b =
        conn.exec("DELETE FROM sessions WHERE expires_at <= ?1 OR last_seen_at + ?2 <= ?1", params![now, idle_secs])?;
    Ok(a + b)
}

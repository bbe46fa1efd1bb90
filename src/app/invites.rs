//! Invites: single-use, expiring, stored hashed.
use crate::domain::event::{Event, Subject};
use rusqlite::Connection;
use serde::Serialize;
use serde_json::json;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::{Actor, App, new_token, rfc3339, token_hash};
use crate::{config::Config, domain::Role, error::AppError, store::people};

/// A new invite. The token is shown once and never stored.
#[derive(Clone, Serialize)]
pub struct InviteCreated {
    pub id: String,
    pub roles: Vec<Role>,
    pub expires_at: String,
    /// Give this to the invitee. The token sits in the URL fragment, which browsers do
    /// not send to servers or in `Referer`.
    pub invite_url: String,
    pub token: String,
}

impl std::fmt::Debug for InviteCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InviteCreated")
            .field("id", &self.id)
            .field("roles", &self.roles)
            .field("expires_at", &self.expires_at)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct InviteView {
    pub id: String,
    pub roles: Vec<Role>,
    pub created_by: String,
    pub created_at: String,
    pub expires_at: String,
    /// `pending`, `used`, `revoked` or `expired`.
    pub status: &'static str,
    pub used_by: Option<String>,
}

pub(crate) fn create_in_tx(
    conn: &Connection,
    config: &Config,
    now: OffsetDateTime,
    actor: &Actor,
    roles: &[Role],
) -> Result<InviteCreated, AppError> {
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        return Err(AppError::invalid(
            "invalid_role",
            "An invite needs at least one role: admin, custodian or auditor.",
        ));
    }
    let id = Uuid::new_v4().to_string();
    let token = new_token()?;
    let expires = now + Duration::hours(i64::from(config.security.invite_ttl_hours));
    let row = people::InviteRow {
        id: id.clone(),
        roles: roles.clone(),
        created_by: actor.audit_name(),
        created_at: now.unix_timestamp(),
        expires_at: expires.unix_timestamp(),
        used_at: None,
        used_by: None,
        revoked_at: None,
    };
    people::insert_invite(conn, &token_hash(&token), &row)?;
    let expires_at = rfc3339(row.expires_at);
    crate::app::announce::record(
        conn,
        now,
        &actor.audit_name(),
        &Subject::Invite(id.to_string()),
        &Event::InviteCreated { roles: roles.to_vec(), expires_at: json!(expires_at) },
    )?;
    let invite_url = format!("{}/enrol#{token}", config.origin_header());
    Ok(InviteCreated { id, roles, expires_at, invite_url, token })
}

fn view(row: people::InviteRow, now: i64) -> InviteView {
    let status = if row.used_at.is_some() {
        "used"
    } else if row.revoked_at.is_some() {
        "revoked"
    } else if row.expires_at <= now {
        "expired"
    } else {
        "pending"
    };
    InviteView {
        id: row.id,
        roles: row.roles,
        created_by: row.created_by,
        created_at: rfc3339(row.created_at),
        expires_at: rfc3339(row.expires_at),
        status,
        used_by: row.used_by,
    }
}

impl App {
    #[tracing::instrument(skip_all)]
    pub async fn create_invite(&self, actor: Actor, roles: Vec<Role>) -> Result<InviteCreated, AppError> {
        let (config, now) = (self.config.clone(), self.now());
        self.db.transact(move |tx| create_in_tx(tx, &config, now, &actor, &roles)).await
    }

    #[tracing::instrument(skip_all)]
    pub async fn list_invites(&self) -> Result<Vec<InviteView>, AppError> {
        let now = self.now().unix_timestamp();
        self.db
            .call(move |conn| {
                Ok::<_, AppError>(people::list_invites(conn)?.into_iter().map(|r| view(r, now)).collect())
            })
            .await
    }

    #[tracing::instrument(skip_all)]
    pub async fn revoke_invite(&self, actor: Actor, id: String) -> Result<InviteView, AppError> {
        let now = self.now();
        self.db
            .transact(move |tx| {
                let row = people::invite(tx, &id)?
                    .ok_or_else(|| AppError::not_found("invite_not_found", format!("No invite with id {id}.")))?;
                if !people::revoke_invite(tx, &id, now.unix_timestamp())? {
                    return Err(AppError::conflict("invite_not_pending", "This invite was already used or revoked."));
                }
                crate::app::announce::record(
                    tx,
                    now,
                    &actor.audit_name(),
                    &Subject::Invite(id.to_string()),
                    &Event::InviteRevoked { roles: Some(row.roles.clone()), reason: None },
                )?;
                let row = people::invite(tx, &id)?.ok_or_else(|| AppError::Internal("invite vanished".into()))?;
                Ok(view(row, now.unix_timestamp()))
            })
            .await
    }
}

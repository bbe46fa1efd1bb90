//! Managing custodians: listing and disabling.
use crate::domain::event::{Event, Subject};
use serde::Serialize;
use serde_json::json;

use super::{Actor, App, rfc3339};
use crate::{domain::Role, error::AppError, store::people};

#[derive(Debug, Clone, Serialize)]
pub struct CredentialView {
    pub id: String,
    pub label: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    /// True once the key holds a share recipient (quorum mode).
    pub prf_capable: bool,
    /// `unknown` (not yet prepared for quorum), `ready` or `unsupported` (its
    /// authenticator has no PRF: it signs in and approves, but cannot hold shares).
    pub prf_status: String,
    pub share_recipient: Option<String>,
}

impl From<people::CredentialRow> for CredentialView {
    fn from(r: people::CredentialRow) -> Self {
        Self {
            id: r.id,
            label: r.label,
            created_at: rfc3339(r.created_at),
            last_used_at: r.last_used_at.map(rfc3339),
            prf_capable: r.prf_capable,
            prf_status: r.prf_status,
            share_recipient: r.prf_recipient,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CustodianView {
    pub id: String,
    pub name: String,
    pub email: String,
    pub roles: Vec<Role>,
    pub status: String,
    pub enrolled_at: String,
    /// End of the cooling-off period: no approvals before this time.
    pub can_approve_from: String,
    pub in_cooling_off: bool,
    pub disabled_at: Option<String>,
    pub credentials: Vec<CredentialView>,
}

pub(crate) fn custodian_view(
    conn: &rusqlite::Connection,
    c: people::CustodianRow,
    now: i64,
) -> Result<CustodianView, AppError> {
    let credentials = people::credentials_of(conn, &c.id)?.into_iter().map(CredentialView::from).collect();
    Ok(CustodianView {
        in_cooling_off: c.approve_after > now,
        can_approve_from: rfc3339(c.approve_after),
        enrolled_at: rfc3339(c.enrolled_at),
        disabled_at: c.disabled_at.map(rfc3339),
        id: c.id,
        name: c.name,
        email: c.email,
        roles: c.roles,
        status: c.status,
        credentials,
    })
}

impl App {
    #[tracing::instrument(skip_all)]
    pub async fn me(&self, custodian_id: String) -> Result<CustodianView, AppError> {
        let now = self.now().unix_timestamp();
        self.db
            .call(move |conn| {
                let c = people::custodian(conn, &custodian_id)?
                    .ok_or_else(|| AppError::not_found("custodian_not_found", "No such custodian."))?;
                custodian_view(conn, c, now)
            })
            .await
    }

    #[tracing::instrument(skip_all)]
    pub async fn list_custodians(&self) -> Result<Vec<CustodianView>, AppError> {
        let now = self.now().unix_timestamp();
        self.db
            .call(move |conn| {
                people::list_custodians(conn)?
                    .into_iter()
                    .map(|c| custodian_view(conn, c, now))
                    .collect::<Result<Vec<_>, AppError>>()
            })
            .await
    }

    /// Disable a custodian: their sessions end at once and they can no longer sign in
    /// or approve. The last active admin cannot be disabled (that would lock everyone out).
    #[tracing::instrument(skip_all)]
    pub async fn disable_custodian(
        &self,
        actor: Actor,
        custodian_id: String,
        reason: Option<String>,
        emergency: bool,
    ) -> Result<CustodianView, AppError> {
        let reason = reason.map(|r| crate::domain::display_text("reason", &r, 500)).transpose()?;
        let now = self.now();
        self.db
            .transact(move |tx| {
                let c = people::custodian(tx, &custodian_id)?.ok_or_else(|| {
                    AppError::not_found("custodian_not_found", format!("No custodian with id {custodian_id}."))
                })?;
                if !c.is_active() {
                    return Err(AppError::conflict("already_disabled", format!("{} is already disabled.", c.email)));
                }
                if c.has_role(Role::Admin) && people::count_active_with_role(tx, Role::Admin)? <= 1 {
                    return Err(AppError::conflict(
                        "last_admin",
                        "This is the last active admin: enrol another admin before disabling this one.",
                    ));
                }
                // Quorum mode: never silently leave an account with fewer live holders
                // than it needs to open.
                let short = super::quorum::bus_factor_if_disabled(tx, &c.id)?;
                if !short.is_empty() && !emergency {
                    let list = short.iter().map(|(a, live, k)| format!("{a} ({live} live of {k} needed)")).collect::<Vec<_>>().join(", ");
                    return Err(AppError::conflict(
                        "bus_factor",
                        format!(
                            "Disabling {} would leave these quorum-mode accounts unable to open: {list}. Reshare them first (request a reshare checkout after adding holders), or, if this person's keys are compromised, disable with \"emergency\": true and reshare at once.",
                            c.name
                        ),
                    ));
                }
                people::disable_custodian(tx, &c.id, now.unix_timestamp(), &actor.audit_name())?;
                crate::app::announce::record(
                    tx,
                    now,
                    &actor.audit_name(),
                    &Subject::Custodian(c.id.clone()),
                    &Event::CustodianDisabled { email: c.email.clone(), reason: json!(reason), sessions_ended: true },
                )?;
                for (account, live, k) in short {
                    crate::app::announce::record(
                        tx,
                        now,
                        &actor.audit_name(),
                        &Subject::Account(account),
                        &Event::AccountBusFactor { live, k, reason: format!("{} was disabled in an emergency", c.name) },
                    )?;
                }
                super::quorum::mark_reshare_due_where_needed(tx, now, &actor.audit_name(), &format!("{} was disabled", c.name))?;
                let c = people::custodian(tx, &c.id)?.ok_or_else(|| AppError::Internal("custodian vanished".into()))?;
                custodian_view(tx, c, now.unix_timestamp())
            })
            .await
    }
}

//! Root posture: read an account's root posture from AWS (`aws::posture`), keep the
//! last reading, and record + announce when its findings change.
use std::sync::Arc;

use serde::Serialize;

use super::{Actor, App, announce, rfc3339};
use crate::{
    aws::PostureReader,
    domain::{
        event::{Event, Subject},
        posture::{self, Report},
    },
    error::AppError,
    store::{self, posture::PostureRow},
};

#[derive(Debug, Clone, Serialize)]
pub struct PostureView {
    pub account_id: String,
    pub checked_at: String,
    pub findings: Vec<String>,
    pub report: Report,
    /// Drill checklist items this reading speaks to: `(item, passes)`. Pre-filled
    /// evidence; the drill's two people still confirm.
    pub checklist_evidence: Vec<ChecklistEvidence>,
    /// Whether this check changed the findings (and so wrote an audit entry).
    pub changed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChecklistEvidence {
    pub item: &'static str,
    pub passes: bool,
}

fn view(row: &PostureRow, changed: bool) -> Result<PostureView, AppError> {
    let report: Report =
        serde_json::from_str(&row.report).map_err(|e| AppError::unexpected("reading a posture report", e))?;
    let findings: Vec<String> =
        serde_json::from_str(&row.findings).map_err(|e| AppError::unexpected("reading posture findings", e))?;
    Ok(PostureView {
        account_id: row.account_id.clone(),
        checked_at: rfc3339(row.checked_at),
        checklist_evidence: posture::checklist_evidence(&report)
            .into_iter()
            .map(|(item, passes)| ChecklistEvidence { item, passes })
            .collect(),
        findings,
        report,
        changed,
    })
}

impl App {
    /// Read the posture with this reader (`serve` attaches one when `aws.posture_enabled`).
    pub fn with_posture_reader(mut self, reader: PostureReader) -> Self {
        self.posture = Some(Arc::new(reader));
        self
    }

    pub fn has_posture_reader(&self) -> bool {
        self.posture.is_some()
    }

    /// Read the account's root posture from AWS now and record it; an audit entry (and
    /// announcement) only when the findings differ from the last reading.
    #[tracing::instrument(skip_all)]
    pub async fn check_posture(&self, actor: Actor, account_id: String) -> Result<PostureView, AppError> {
        let Some(reader) = self.posture.clone() else {
            return Err(AppError::conflict(
                "posture_not_configured",
                "Root posture checks are off: set aws.posture_enabled (deploy/RUNBOOK.md, \"Deploying in an organization\").",
            ));
        };
        let id = account_id.clone();
        let on_file = self
            .db
            .call(move |conn| Ok::<_, AppError>(store::accounts::account(conn, &id)?))
            .await?
            .ok_or_else(|| AppError::not_found("account_not_found", "No account with this id is in custody."))?
            .root_email;
        let report = reader.read(&account_id).await;
        let now = self.now();
        self.db
            .transact(move |tx| {
                let findings = posture::findings(&report, &on_file);
                let previous = store::posture::get(tx, &account_id)?;
                let before: Option<Vec<String>> =
                    previous.as_ref().and_then(|p| serde_json::from_str(&p.findings).ok());
                let changed = before.as_ref() != Some(&findings);
                let mut audit_seq = None;
                if changed {
                    let old = before.clone().unwrap_or_default();
                    let new: Vec<String> = findings.iter().filter(|f| !old.contains(f)).cloned().collect();
                    let resolved: Vec<String> = old.iter().filter(|f| !findings.contains(f)).cloned().collect();
                    let entry = announce::record(
                        tx,
                        now,
                        &actor.audit_name(),
                        &Subject::Account(account_id.clone()),
                        &Event::AccountPostureChanged {
                            findings: findings.clone(),
                            new,
                            resolved,
                            first: before.is_none(),
                        },
                    )?;
                    audit_seq = Some(i64::try_from(entry.seq).unwrap_or(i64::MAX));
                }
                let row = PostureRow {
                    account_id: account_id.clone(),
                    checked_at: now.unix_timestamp(),
                    report: serde_json::to_string(&report)
                        .map_err(|e| AppError::unexpected("encoding a posture report", e))?,
                    findings: serde_json::to_string(&findings)
                        .map_err(|e| AppError::unexpected("encoding findings", e))?,
                    audit_seq,
                };
                store::posture::upsert(tx, &row)?;
                view(&row, changed)
            })
            .await
    }

    /// The last reading, if any.
    #[tracing::instrument(skip_all)]
    pub async fn posture(&self, account_id: String) -> Result<PostureView, AppError> {
        let row = self.db.call(move |conn| Ok::<_, AppError>(store::posture::get(conn, &account_id)?)).await?;
        match row {
            Some(row) => view(&row, false),
            None => {
                Err(AppError::not_found("posture_not_checked", "This account's root posture has not been read yet."))
            }
        }
    }

    /// Accounts whose last reading has findings (the dashboard).
    #[tracing::instrument(skip_all)]
    pub async fn posture_findings(&self) -> Result<Vec<PostureView>, AppError> {
        let rows = self.db.call(|conn| Ok::<_, AppError>(store::posture::with_findings(conn)?)).await?;
        rows.iter().map(|r| view(r, false)).collect()
    }

    /// Check every account in custody (the scheduled run); failures are logged.
    #[tracing::instrument(skip_all)]
    pub async fn check_all_postures(&self) -> usize {
        let accounts = match self.list_accounts().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %crate::error::chain(&e), "posture: cannot list accounts");
                return 0;
            }
        };
        let mut changed = 0;
        for a in accounts {
            match self.check_posture(Actor::System, a.account_id.clone()).await {
                Ok(v) if v.changed => changed += 1,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(account = %a.account_id, error = %crate::error::chain(&e), "posture check failed")
                }
            }
        }
        changed
    }
}

//! Drills: a scheduler step opens the drill of each account's current period (catching
//! up once after downtime), escalates overdue ones weekly, and the requester of a drill
//! checkout records the checklist that passes or fails it. Evidence for auditors.
use crate::domain::drill::DrillState;
use crate::domain::event::{Event, Subject};
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{App, Principal, announce::record, checkouts::PersonRef, rfc3339};
use crate::{
    domain::{
        Role,
        checkout::CheckoutKind,
        drill::{self, ItemOutcome, Schedule, Tick},
    },
    error::AppError,
    store::{accounts as store_accounts, checkouts as store_checkouts, drills as store, people},
};

const WEEK: i64 = 7 * 24 * 3600;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DrillTick {
    pub opened: usize,
    pub became_overdue: usize,
    pub reminded_overdue: usize,
    pub missed: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checklist {
    pub checkout_id: String,
    pub items: BTreeMap<String, ItemOutcome>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillView {
    pub id: String,
    pub account_id: String,
    pub account_alias: String,
    pub period: String,
    pub due_at: String,
    pub grace_ends_at: String,
    pub state: String,
    pub checkout_id: Option<String>,
    pub completed_at: Option<String>,
    pub completed_by: Option<String>,
    pub participants: Vec<PersonRef>,
    pub checklist: serde_json::Value,
    pub failed_items: Vec<String>,
}

fn person(conn: &rusqlite::Connection, id: &str) -> Result<PersonRef, AppError> {
    let c = people::custodian(conn, id)?.ok_or_else(|| AppError::Internal("custodian vanished".into()))?;
    Ok(PersonRef { id: c.id, name: c.name, email: c.email })
}

fn view(conn: &rusqlite::Connection, d: &store::DrillRow) -> Result<DrillView, AppError> {
    let alias = store_accounts::account(conn, &d.account_id)?.map(|a| a.alias).unwrap_or_default();
    Ok(DrillView {
        id: d.id.clone(),
        account_id: d.account_id.clone(),
        account_alias: alias,
        period: d.period.clone(),
        due_at: rfc3339(d.due_at),
        grace_ends_at: rfc3339(d.grace_ends_at),
        state: d.state.as_str().into(),
        checkout_id: d.checkout_id.clone(),
        completed_at: d.completed_at.map(rfc3339),
        completed_by: d.completed_by.clone(),
        participants: d.participants.iter().map(|id| person(conn, id)).collect::<Result<_, _>>()?,
        checklist: d.checklist.as_deref().and_then(|c| serde_json::from_str(c).ok()).unwrap_or(serde_json::Value::Null),
        failed_items: d.failed_items.as_deref().and_then(|f| serde_json::from_str(f).ok()).unwrap_or_default(),
    })
}

/// Who is expected to take part: the listed approvers, or every active custodian.
fn expected(conn: &rusqlite::Connection, account_id: &str) -> Result<Vec<String>, AppError> {
    let account =
        store_accounts::account(conn, account_id)?.ok_or_else(|| AppError::Internal("account vanished".into()))?;
    let listed_only = account.approver_set == store_accounts::ApproverMode::Listed;
    let listed = store_checkouts::approvers(conn, account_id)?;
    Ok(people::list_custodians(conn)?
        .into_iter()
        .filter(|c| c.is_active() && c.has_role(Role::Custodian) && (!listed_only || listed.contains(&c.id)))
        .map(|c| format!("{} <{}>", c.name, c.email))
        .collect())
}

/// One scheduler step at `now`; idempotent (a period key makes double runs harmless).
pub(crate) fn run_due(
    conn: &rusqlite::Connection,
    now: OffsetDateTime,
    grace_days: u32,
) -> Result<DrillTick, AppError> {
    let t = now.unix_timestamp();
    let mut out = DrillTick::default();
    // Escalate first, so a drill still open when its next period begins is reported
    // overdue before it is superseded.
    for d in store::open_drills(conn)? {
        // Overdue once the grace period ends, then a reminder every week until it passes.
        let repeat = d.state == DrillState::Overdue;
        let due = if repeat { d.last_escalated_at.is_some_and(|e| t >= e + WEEK) } else { t >= d.grace_ends_at };
        if !due {
            continue;
        }
        store::set_state(conn, &d.id, DrillState::Overdue, Some(t))?;
        record(
            conn,
            now,
            "system",
            &Subject::Account(d.account_id.clone()),
            &Event::DrillOverdue {
                drill: d.id.clone(),
                period: d.period.clone(),
                overdue_since: rfc3339(d.grace_ends_at),
                repeat,
            },
        )?;
        if repeat {
            out.reminded_overdue += 1;
        } else {
            out.became_overdue += 1;
        }
    }
    // A failed drill means access is unproven: remind weekly until it is run again.
    for d in store::failed_latest_all(conn)? {
        if d.last_escalated_at.is_some_and(|e| t >= e + WEEK) {
            store::set_state(conn, &d.id, DrillState::Failed, Some(t))?;
            let failed: Vec<String> =
                d.failed_items.as_deref().and_then(|f| serde_json::from_str(f).ok()).unwrap_or_default();
            record(
                conn,
                now,
                "system",
                &Subject::Account(d.account_id.clone()),
                &Event::DrillFlagged { drill: d.id.clone(), period: d.period.clone(), failed_items: failed },
            )?;
            out.reminded_overdue += 1;
        }
    }
    for a in store_accounts::list_accounts(conn)? {
        let Ok(schedule) = Schedule::parse(&a.drill_schedule) else {
            tracing::warn!(account = %a.account_id, "skipping drills: invalid schedule");
            continue;
        };
        let stored = a.next_drill_due_at;
        let next = match stored.or_else(|| schedule.next_after(a.created_at)) {
            Some(n) => n,
            None => continue,
        };
        match drill::tick(&schedule, next, t) {
            Tick::NotYet => {
                if stored.is_none() {
                    store_accounts::set_next_drill_due(conn, &a.account_id, Some(next))?;
                }
            }
            Tick::Open { due_at, next_due } => {
                let subject = Subject::Account(a.account_id.clone());
                for old in store::open_for_account(conn, &a.account_id)? {
                    store::set_state(conn, &old.id, DrillState::Missed, None)?;
                    record(
                        conn,
                        now,
                        "system",
                        &subject,
                        &Event::DrillMissed { drill: old.id.clone(), period: old.period.clone() },
                    )?;
                    out.missed += 1;
                }
                let d = store::DrillRow {
                    id: Uuid::new_v4().to_string(),
                    account_id: a.account_id.clone(),
                    period: rfc3339(due_at),
                    due_at,
                    grace_ends_at: due_at + i64::from(grace_days) * 24 * 3600,
                    state: DrillState::Due,
                    last_escalated_at: None,
                    checkout_id: None,
                    completed_at: None,
                    completed_by: None,
                    participants: Vec::new(),
                    checklist: None,
                    failed_items: None,
                };
                if store::insert(conn, &d)? {
                    record(
                        conn,
                        now,
                        "system",
                        &subject,
                        &Event::DrillDue {
                            drill: d.id.clone(),
                            period: d.period.clone(),
                            grace_ends_at: rfc3339(d.grace_ends_at),
                            expected: expected(conn, &a.account_id)?,
                        },
                    )?;
                    out.opened += 1;
                }
                store_accounts::set_next_drill_due(conn, &a.account_id, Some(next_due))?;
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct AccountDrillStatus {
    pub account_id: String,
    pub alias: String,
    pub schedule: String,
    pub next_drill_due_at: Option<String>,
    pub open_drill: Option<DrillView>,
    /// The latest passed drill: when access was last proven, and by whom.
    pub last_proven_access: Option<DrillView>,
    /// What failed in the latest drill, if it failed.
    pub flag: Option<serde_json::Value>,
    /// `policy` or `quorum`: in quorum mode a passed drill proves k holders' keys
    /// still open the account.
    pub custody: crate::domain::Custody,
    /// Quorum mode: why the holders no longer match the policy (a reshare is due).
    pub reshare_due: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    pub custodian: PersonRef,
    pub last_took_part: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillStatus {
    pub accounts: Vec<AccountDrillStatus>,
    pub coverage: Vec<Coverage>,
    /// Custodians who have not taken part in a passed drill in the last N months.
    pub not_exercised: Vec<PersonRef>,
    pub coverage_months: u32,
}

/// One drill with everything an auditor needs: the checklist, the checkout and the
/// WebAuthn evidence of its approvals.
#[derive(Debug, Clone, Serialize)]
pub struct DrillEvidence {
    pub drill: DrillView,
    pub checkout: Option<super::checkouts::CheckoutView>,
    pub approvals: Vec<serde_json::Value>,
}

impl App {
    /// One scheduler step (the server runs it every minute).
    #[tracing::instrument(skip_all)]
    pub async fn run_drills(&self) -> Result<DrillTick, AppError> {
        let now = self.now();
        let grace = self.config.policy.drill_grace_days;
        self.db.transact(move |tx| run_due(tx, now, grace)).await
    }

    /// The requester of a released drill checkout records the checklist.
    #[tracing::instrument(skip_all)]
    pub async fn submit_checklist(&self, p: Principal, drill_id: String, c: Checklist) -> Result<DrillView, AppError> {
        let now = self.now();
        for (k, v) in &c.items {
            if v.note
                .as_ref()
                .is_some_and(|n| n.chars().count() > 500 || n.chars().any(|ch| ch.is_control() && ch != '\n'))
            {
                return Err(AppError::invalid(
                    "invalid_checklist",
                    format!("The note on {k} is over 500 characters or contains control characters."),
                ));
            }
        }
        let slack = self.root_slack();
        self.db
            .transact(move |tx| {
                let d = store::get(tx, &drill_id)?.ok_or_else(|| AppError::not_found("drill_not_found", format!("No drill with id {drill_id}.")))?;
                // A failed drill of the latest period can be run again (after fixing what failed).
                let retest = d.state == DrillState::Failed && store::failed_latest(tx, &d.account_id)?.is_some_and(|l| l.id == d.id);
                if !d.state.is_open() && !retest {
                    return Err(AppError::conflict("drill_closed", format!("This drill is {}; a new one opens with the next period.", d.state.as_str())));
                }

                let co = store_checkouts::get(tx, &c.checkout_id)?
                    .ok_or_else(|| AppError::not_found("checkout_not_found", format!("No checkout with id {}.", c.checkout_id)))?;
                if co.requester_id != p.custodian.id {
                    return Err(AppError::forbidden("not_the_requester", "Only the person who ran the drill checkout records its checklist."));
                }
                if co.kind != CheckoutKind::Drill.as_str() || co.account_id != d.account_id || co.released_at.is_none_or(|r| r < d.completed_at.filter(|_| retest).unwrap_or(d.due_at))
                    || (retest && d.checkout_id.as_deref() == Some(co.id.as_str())) {
                    return Err(AppError::conflict(
                        "checkout_not_for_this_drill",
                        "The checklist needs a drill checkout of this account, released since the drill fell due: request one with kind \"drill\".",
                    ));
                }
                let mut participants: BTreeSet<String> = BTreeSet::from([co.requester_id.clone()]);
                participants.extend(store_checkouts::approvals_of(tx, &co.id)?.into_iter().filter(|a| a.decision == "approve").map(|a| a.custodian_id));
                let account_type = store_accounts::account(tx, &d.account_id)?
                    .ok_or_else(|| AppError::Internal("account vanished".into()))?
                    .account_type;
                let verdict = drill::evaluate(&c.items, participants.len(), drill::checklist_for(account_type))?;
                let evidence = crate::app::root_activity::aws_evidence_in(tx, &co, slack, now.unix_timestamp())?;
                // "AWS opened the session" is not the requester's word alone: the log must
                // show a session AWS issued for this drill checkout.
                let claims_session =
                    c.items.get("root_session_opened").is_some_and(|i| i.result == drill::ItemResult::Pass);
                if account_type == crate::domain::root_task::AccountType::CentralizedRoot
                    && claims_session
                    && !evidence.root_sessions.iter().any(|r| r.task_policy == "IAMAuditRootUserCredentials")
                {
                    return Err(AppError::conflict(
                        "no_root_session",
                        "AWS opened no root-task session for this drill checkout, so root_session_opened cannot pass: open the session (Open a root session with my key) or record it as failed.",
                    ));
                }
                let aws_evidence = Some(json!({"sign_ins": evidence.sign_ins, "root_sessions": evidence.root_sessions}));
                let state = if verdict.passed { DrillState::Passed } else { DrillState::Failed };
                let ids: Vec<String> = participants.iter().cloned().collect();
                store::complete(
                    tx,
                    &d.id,
                    state,
                    &co.id,
                    now.unix_timestamp(),
                    &p.actor().audit_name(),
                    &ids,
                    &serde_json::to_string(&c.items).map_err(|e| AppError::Internal(e.to_string()))?,
                    &serde_json::to_string(&verdict.failed_items).map_err(|e| AppError::Internal(e.to_string()))?,
                )?;
                if !verdict.passed {
                    store::set_state(tx, &d.id, DrillState::Failed, Some(now.unix_timestamp()))?;
                }
                let flag = (!verdict.passed).then(|| json!({"drill": d.id, "failed_items": verdict.failed_items, "reasons": verdict.reasons}).to_string());
                store_accounts::set_drill_flag(tx, &d.account_id, flag.as_deref())?;
                record(
                    tx,
                    now,
                    &p.actor().audit_name(),
                    &Subject::Account(d.account_id.clone()),
                    &if verdict.passed {
                        Event::DrillPassed { drill: d.id.clone(), checkout: co.id.clone(), participants: ids.clone(), failed_items: verdict.failed_items.clone(), reasons: verdict.reasons.clone(), aws_evidence }
                    } else {
                        Event::DrillFailed { drill: d.id.clone(), checkout: co.id.clone(), participants: ids.clone(), failed_items: verdict.failed_items.clone(), reasons: verdict.reasons.clone(), aws_evidence }
                    },
                )?;
                view(tx, &store::get(tx, &d.id)?.ok_or_else(|| AppError::Internal("drill vanished".into()))?)
            })
            .await
    }

    #[tracing::instrument(skip_all)]
    pub async fn list_drills(
        &self,
        account: Option<String>,
        since: i64,
        until: i64,
    ) -> Result<Vec<DrillView>, AppError> {
        self.db
            .call(move |conn| {
                store::list(conn, account.as_deref(), since, until)?
                    .iter()
                    .map(|d| view(conn, d))
                    .collect::<Result<Vec<_>, AppError>>()
            })
            .await
    }

    #[tracing::instrument(skip_all)]
    pub async fn drill_status(&self) -> Result<DrillStatus, AppError> {
        let now = self.now().unix_timestamp();
        let months = self.config.policy.drill_coverage_months;
        self.db
            .call(move |conn| {
                let all = store::list(conn, None, i64::MIN, i64::MAX)?;
                let mut accounts = Vec::new();
                for a in store_accounts::list_accounts(conn)? {
                    let (next, flag) = (a.next_drill_due_at, a.drill_flag.clone());
                    let mine: Vec<&store::DrillRow> = all.iter().filter(|d| d.account_id == a.account_id).collect();
                    accounts.push(AccountDrillStatus {
                        open_drill: mine
                            .iter()
                            .rev()
                            .find(|d| d.state.is_open())
                            .or_else(|| mine.last().filter(|d| d.state == DrillState::Failed))
                            .map(|d| view(conn, d))
                            .transpose()?,
                        last_proven_access: mine
                            .iter()
                            .filter(|d| d.state == DrillState::Passed)
                            .max_by_key(|d| d.completed_at)
                            .map(|d| view(conn, d))
                            .transpose()?,
                        flag: flag.and_then(|f| serde_json::from_str(&f).ok()),
                        custody: a.custody,
                        reshare_due: a.reshare_reason.clone().filter(|_| a.reshare_due_since.is_some()),
                        next_drill_due_at: next
                            .or_else(|| {
                                Schedule::parse(&a.drill_schedule).ok().and_then(|s| s.next_after(a.created_at))
                            })
                            .map(rfc3339),
                        schedule: a.drill_schedule,
                        account_id: a.account_id,
                        alias: a.alias,
                    });
                }
                let mut coverage = Vec::new();
                let mut not_exercised = Vec::new();
                let cutoff = now - i64::from(months) * 30 * 24 * 3600;
                for c in
                    people::list_custodians(conn)?.into_iter().filter(|c| c.is_active() && c.has_role(Role::Custodian))
                {
                    let last = all
                        .iter()
                        .filter(|d| d.state == DrillState::Passed && d.participants.contains(&c.id))
                        .filter_map(|d| d.completed_at)
                        .max();
                    let who = PersonRef { id: c.id.clone(), name: c.name.clone(), email: c.email.clone() };
                    if last.is_none_or(|l| l < cutoff) {
                        not_exercised.push(who.clone());
                    }
                    coverage.push(Coverage { custodian: who, last_took_part: last.map(rfc3339) });
                }
                Ok::<_, AppError>(DrillStatus { accounts, coverage, not_exercised, coverage_months: months })
            })
            .await
    }

    /// Drills due in `[since, until)` with checklists, checkouts and approval evidence.
    #[tracing::instrument(skip_all)]
    pub async fn drill_evidence(&self, since: i64, until: i64) -> Result<Vec<DrillEvidence>, AppError> {
        let now = self.now();
        self.db
            .call(move |conn| {
                store::list(conn, None, since, until)?
                    .iter()
                    .map(|d| {
                        let checkout = d.checkout_id.as_deref().map(|id| store_checkouts::get(conn, id)).transpose()?.flatten();
                        let approvals = match &checkout {
                            Some(c) => store_checkouts::approvals_of(conn, &c.id)?
                                .into_iter()
                                .map(|a| {
                                    json!({"custodian_id": a.custodian_id, "decision": a.decision, "at": rfc3339(a.at), "comment": a.comment,
                                           "evidence": {"credential_id": a.credential_id, "challenge": a.challenge, "client_data_json": a.client_data_json,
                                                        "authenticator_data": a.authenticator_data, "signature": a.signature}})
                                })
                                .collect(),
                            None => Vec::new(),
                        };
                        Ok(DrillEvidence {
                            drill: view(conn, d)?,
                            checkout: checkout.as_ref().map(|c| super::checkouts::view(conn, c, now)).transpose()?,
                            approvals,
                        })
                    })
                    .collect::<Result<Vec<_>, AppError>>()
            })
            .await
    }
}

/// CSV for auditors' spreadsheets: one row per drill, one column per checklist item.
pub fn evidence_csv(rows: &[DrillEvidence]) -> String {
    fn q(s: &str) -> String {
        // Cells that a spreadsheet would run as a formula are prefixed with a quote.
        let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_owned() };
        if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
    }
    let mut out =
        String::from("drill_id,account_id,alias,period,state,completed_at,completed_by,participants,checkout_id");
    let items = drill::all_items();
    for k in &items {
        out.push(',');
        out.push_str(k);
    }
    out.push_str(",failed_items,approvals\n");
    for r in rows {
        let d = &r.drill;
        let mut cols = vec![
            d.id.clone(),
            d.account_id.clone(),
            d.account_alias.clone(),
            d.period.clone(),
            d.state.clone(),
            d.completed_at.clone().unwrap_or_default(),
            d.completed_by.clone().unwrap_or_default(),
            d.participants.iter().map(|p| p.email.clone()).collect::<Vec<_>>().join("; "),
            d.checkout_id.clone().unwrap_or_default(),
        ];
        for k in &items {
            cols.push(d.checklist[*k]["result"].as_str().unwrap_or_default().to_owned());
        }
        cols.push(d.failed_items.join("; "));
        cols.push(
            r.approvals
                .iter()
                .map(|a| {
                    format!(
                        "{}:{}",
                        a["custodian_id"].as_str().unwrap_or_default(),
                        a["decision"].as_str().unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        );
        out.push_str(&cols.iter().map(|c| q(c)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_cannot_become_spreadsheet_formulas() {
        let d = DrillView {
            id: "d".into(),
            account_id: "123456789012".into(),
            account_alias: "=HYPERLINK(\"https://x.example\",\"x\")".into(),
            period: "p".into(),
            due_at: "t".into(),
            grace_ends_at: "t".into(),
            state: "passed".into(),
            checkout_id: None,
            completed_at: None,
            completed_by: Some("+cmd".into()),
            participants: vec![],
            checklist: serde_json::Value::Null,
            failed_items: vec![],
        };
        let csv = evidence_csv(&[DrillEvidence { drill: d, checkout: None, approvals: vec![] }]);
        let row = csv.lines().nth(1).unwrap();
        assert!(row.contains("\"'=HYPERLINK(\"\"https://x.example\"\",\"\"x\"\")\""), "{row}");
        assert!(row.contains(",'+cmd,"), "{row}");
    }
}

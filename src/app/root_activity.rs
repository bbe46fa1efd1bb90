//! Root activity in AWS: ingesting CloudTrail root events from the central queue,
//! reconciling each with the released checkouts of its account, the banner of
//! unexplained use and its acknowledgement. The queue side (long-polling, deleting
//! after commit, outages) is `aws::feed`; this file is one transaction per event.
use std::sync::Mutex;

use serde::Serialize;

use super::{Actor, App, Principal, announce, rfc3339};
use crate::{
    domain::{
        event::{Event, RootEventDetails, Subject},
        root_activity::{self, FeedError, RootEvent, RootEventKind, RootEventStatus},
    },
    error::AppError,
    store::{self, root_activity as rows},
};

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// Stored and reconciled; its audit entry (and announcement) committed with it.
    Stored { event_id: String, status: RootEventStatus },
    /// The same CloudTrail event was stored before (a redelivery): nothing written.
    Duplicate { event_id: String },
    /// Not a root event (a rule wider than ours): nothing to keep; delete it.
    Ignored { reason: String },
    /// Not an event envelope at all: leave it for the dead-letter queue.
    Malformed { reason: String },
}

impl Ingested {
    /// Whether the message can be deleted from the queue (everything but malformed).
    pub fn deletable(&self) -> bool {
        !matches!(self, Ingested::Malformed { .. })
    }
}

/// The checkout that explains a root event, as shown to people.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub checkout: String,
    pub kind: String,
    pub requester: String,
    pub reason: String,
    pub ticket: Option<String>,
    pub released_at: Option<String>,
    pub ended_at: Option<String>,
}

/// One root event with its explanation.
#[derive(Debug, Clone, Serialize)]
pub struct RootActivityView {
    pub event_id: String,
    pub account_id: String,
    pub account_alias: Option<String>,
    pub kind: RootEventKind,
    pub status: RootEventStatus,
    pub event_name: String,
    pub event_source: String,
    pub event_time: String,
    pub received_at: String,
    pub delay_seconds: i64,
    pub region: String,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub mfa_used: Option<String>,
    pub error: Option<String>,
    pub explanation: Option<Explanation>,
    pub audit_seq: i64,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<String>,
    pub acknowledgement_reason: Option<String>,
}

fn view(conn: &rusqlite::Connection, r: rows::RootEventRow) -> Result<RootActivityView, store::StoreError> {
    let account = store::accounts::account(conn, &r.account_id)?;
    let explanation = match r.checkout_id.as_deref().map(|id| store::checkouts::get(conn, id)).transpose()?.flatten() {
        Some(c) => {
            let requester = store::people::custodian(conn, &c.requester_id)?
                .map_or_else(|| c.requester_id.clone(), |p| format!("{} <{}>", p.name, p.email));
            Some(Explanation {
                checkout: c.id,
                kind: c.kind,
                requester,
                reason: c.reason,
                ticket: c.ticket,
                released_at: c.released_at.map(rfc3339),
                ended_at: c.ended_at.map(rfc3339),
            })
        }
        None => None,
    };
    let acknowledged_by = r
        .acknowledged_by
        .as_deref()
        .map(|id| store::people::custodian(conn, id))
        .transpose()?
        .flatten()
        .map(|p| format!("{} <{}>", p.name, p.email));
    Ok(RootActivityView {
        status: r.status(),
        event_id: r.event_id,
        account_id: r.account_id,
        account_alias: account.map(|a| a.alias),
        kind: r.kind,
        event_name: r.event_name,
        event_source: r.event_source,
        event_time: rfc3339(r.event_time),
        received_at: rfc3339(r.received_at),
        delay_seconds: (r.received_at - r.event_time).max(0),
        region: r.region,
        source_ip: r.source_ip,
        user_agent: r.user_agent,
        mfa_used: r.mfa_used,
        error: r.error,
        explanation,
        audit_seq: r.audit_seq,
        acknowledged_by,
        acknowledged_at: r.acknowledged_at.map(rfc3339),
        acknowledgement_reason: r.ack_reason,
    })
}

/// A root console sign-in that AWS reported inside a checkout's window.
#[derive(Debug, Clone, Serialize)]
pub struct SignInEvidence {
    pub event_id: String,
    pub event_time: String,
    pub source_ip: Option<String>,
    pub mfa_used: bool,
}

/// A root-task session AWS opened for a checkout (`checkout.root_task_issued`).
#[derive(Debug, Clone, Serialize)]
pub struct RootSessionEvidence {
    pub access_key_id: String,
    pub task_policy: String,
    pub expiration: String,
    /// The audit entry that recorded it.
    pub audit_seq: i64,
}

/// What AWS itself says happened during a checkout (drill evidence).
#[derive(Debug, Clone, Serialize)]
pub struct AwsEvidence {
    pub checkout: String,
    pub sign_ins: Vec<SignInEvidence>,
    /// `centralized_root` accounts: the root-task sessions AWS opened for this checkout.
    pub root_sessions: Vec<RootSessionEvidence>,
    /// Checklist item → the sign-in that evidences it (`null`: none seen).
    pub items: std::collections::BTreeMap<&'static str, Option<SignInEvidence>>,
}

/// The feed's state as `/readyz` and the audit page show it. Times from the `Clock`.
#[derive(Debug, Default)]
pub struct FeedHealth {
    inner: Mutex<FeedState>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FeedState {
    /// A queue is configured and the poller runs.
    pub running: bool,
    pub last_poll_ok_at: Option<i64>,
    pub last_failure_at: Option<i64>,
    /// The SDK's error, for operators (it names no secret). Not shown on `/readyz`.
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// `ApproximateNumberOfMessages` (waiting) and `…NotVisible` (in flight), read
    /// about once a minute.
    pub backlog: Option<i64>,
    pub in_flight: Option<i64>,
    pub stored: u64,
    pub duplicates: u64,
    pub ignored: u64,
    pub malformed: u64,
}

impl FeedHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> FeedState {
        self.lock().clone()
    }

    pub fn started(&self) {
        self.lock().running = true;
    }

    pub fn poll_ok(&self, now: i64) {
        let mut s = self.lock();
        s.last_poll_ok_at = Some(now);
        s.consecutive_failures = 0;
    }

    pub fn poll_failed(&self, now: i64, error: String) {
        let mut s = self.lock();
        s.last_failure_at = Some(now);
        s.last_error = Some(error);
        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
    }

    pub fn backlog(&self, waiting: i64, in_flight: i64) {
        let mut s = self.lock();
        s.backlog = Some(waiting);
        s.in_flight = Some(in_flight);
    }

    pub fn counted(&self, outcome: &Ingested) {
        let mut s = self.lock();
        match outcome {
            Ingested::Stored { .. } => s.stored += 1,
            Ingested::Duplicate { .. } => s.duplicates += 1,
            Ingested::Ignored { .. } => s.ignored += 1,
            Ingested::Malformed { .. } => s.malformed += 1,
        }
    }
}

/// An acknowledgement's reason: required, one paragraph.
const MAX_REASON: usize = 1000;

impl App {
    /// Seconds of tolerance around a release window (clock skew, delivery delay).
    pub(crate) fn root_slack(&self) -> i64 {
        i64::from(self.config.aws.root_activity_slack_seconds)
    }

    /// Store one queue message's root event once, reconcile it with the released
    /// checkouts of its account (by the time it happened in AWS, however late it
    /// arrives) and record it — audit entry, announcement and row in one transaction.
    #[tracing::instrument(skip_all)]
    pub async fn ingest_root_event(&self, body: &str) -> Result<Ingested, AppError> {
        let event = match root_activity::parse_envelope(body) {
            Ok(e) => e,
            Err(FeedError::NotRoot(reason)) => return Ok(Ingested::Ignored { reason }),
            Err(FeedError::Malformed(reason)) => return Ok(Ingested::Malformed { reason }),
        };
        let now = self.now();
        let slack = self.root_slack();
        self.db
            .transact(move |tx| {
                if rows::exists(tx, &event.event_id)? {
                    return Ok(Ingested::Duplicate { event_id: event.event_id });
                }
                let windows = rows::release_windows(tx, &event.account_id)?;
                let explained =
                    root_activity::explaining(event.event_time, &windows, slack).map(|w| w.checkout_id.clone());
                let in_custody = store::accounts::account(tx, &event.account_id)?.is_some();
                let details = details_of(&event, now.unix_timestamp());
                let (recorded, status) = match (event.kind, explained.clone()) {
                    (RootEventKind::SignInFailed, checkout) => {
                        (Event::RootSignInFailed { root_event: details, checkout }, RootEventStatus::FailedSignIn)
                    }
                    (_, Some(checkout)) => {
                        (Event::RootActivityExplained { root_event: details, checkout }, RootEventStatus::Explained)
                    }
                    (_, None) => (
                        Event::RootActivityUnexplained { root_event: details, in_custody },
                        RootEventStatus::Unexplained,
                    ),
                };
                let entry = announce::record(
                    tx,
                    now,
                    &Actor::System.audit_name(),
                    &Subject::Account(event.account_id.clone()),
                    &recorded,
                )?;
                rows::insert(tx, &event, now.unix_timestamp(), explained.as_deref(), entry.seq)?;
                Ok::<_, AppError>(Ingested::Stored { event_id: event.event_id, status })
            })
            .await
    }

    /// Root activity, newest first, with explanations (any signed-in role).
    #[tracing::instrument(skip_all)]
    pub async fn root_activity(&self, account: Option<String>, limit: u32) -> Result<Vec<RootActivityView>, AppError> {
        self.db
            .call(move |conn| {
                let found = rows::list(conn, account.as_deref(), limit.clamp(1, 1000))?;
                found.into_iter().map(|r| view(conn, r)).collect::<Result<Vec<_>, _>>().map_err(AppError::from)
            })
            .await
    }

    /// Unexplained root use nobody has acknowledged: the dashboard banner.
    #[tracing::instrument(skip_all)]
    pub async fn root_alerts(&self) -> Result<Vec<RootActivityView>, AppError> {
        self.db
            .call(|conn| {
                let open = rows::open_unexplained(conn)?;
                open.into_iter().map(|r| view(conn, r)).collect::<Result<Vec<_>, _>>().map_err(AppError::from)
            })
            .await
    }

    /// An admin says what the unexplained use was (audited, announced); the banner
    /// for it goes away. The event stays unexplained in the record.
    #[tracing::instrument(skip_all)]
    pub async fn acknowledge_root_event(
        &self,
        admin: &Principal,
        event_id: String,
        reason: String,
    ) -> Result<RootActivityView, AppError> {
        let reason = reason.trim().to_owned();
        if reason.is_empty() || reason.chars().count() > MAX_REASON {
            return Err(AppError::invalid(
                "reason_required",
                format!("Say what this root use was (1 to {MAX_REASON} characters): who, why, and the ticket."),
            ));
        }
        let now = self.now();
        let actor = admin.actor();
        let by = admin.custodian.id.clone();
        self.db
            .transact(move |tx| {
                let Some(row) = rows::get(tx, &event_id)? else {
                    return Err(AppError::not_found("root_event_not_found", "No root event with this id."));
                };
                match row.status() {
                    RootEventStatus::Unexplained => {}
                    RootEventStatus::Acknowledged => {
                        return Err(AppError::conflict(
                            "already_acknowledged",
                            "This root event was already acknowledged.",
                        ));
                    }
                    RootEventStatus::Explained | RootEventStatus::FailedSignIn => {
                        return Err(AppError::conflict(
                            "not_unexplained",
                            "Only unexplained root use is acknowledged; this event is explained or a failed sign-in.",
                        ));
                    }
                }
                announce::record(
                    tx,
                    now,
                    &actor.audit_name(),
                    &Subject::Account(row.account_id.clone()),
                    &Event::RootActivityAcknowledged { event_id: event_id.clone(), reason: reason.clone() },
                )?;
                rows::acknowledge(tx, &event_id, &by, now.unix_timestamp(), &reason)?;
                let row = rows::get(tx, &event_id)?
                    .ok_or_else(|| AppError::Internal("acknowledged root event vanished".into()))?;
                Ok(view(tx, row)?)
            })
            .await
    }

    /// Evidence from AWS itself for a drill: the successful root console sign-ins of
    /// the account inside the checkout's window (± the slack). The checklist items
    /// "root password accepted" and "MFA accepted" point to the first sign-in (with
    /// `MFAUsed: Yes` for MFA); the drill's people still confirm them.
    #[tracing::instrument(skip_all)]
    pub async fn checkout_aws_evidence(&self, checkout_id: String) -> Result<AwsEvidence, AppError> {
        let slack = self.root_slack();
        let now = self.now().unix_timestamp();
        self.db
            .call(move |conn| {
                let c = store::checkouts::get(conn, &checkout_id)?
                    .ok_or_else(|| AppError::not_found("checkout_not_found", "No checkout with this id."))?;
                aws_evidence_in(conn, &c, slack, now)
            })
            .await
    }

    pub fn root_feed_health(&self) -> Option<FeedState> {
        self.root_feed.as_ref().map(|f| f.health.snapshot())
    }
}

/// The evidence from AWS for one checkout, read inside the caller's transaction.
pub(crate) fn aws_evidence_in(
    conn: &rusqlite::Connection,
    c: &store::checkouts::CheckoutRow,
    slack: i64,
    now: i64,
) -> Result<AwsEvidence, AppError> {
    let Some(released_at) = c.released_at else {
        return Ok(AwsEvidence {
            checkout: c.id.clone(),
            sign_ins: vec![],
            root_sessions: vec![],
            items: Default::default(),
        });
    };
    let until = c.ended_at.unwrap_or(now) + slack;
    let sign_ins: Vec<SignInEvidence> = rows::sign_ins_between(conn, &c.account_id, released_at - slack, until)?
        .into_iter()
        .map(|r| SignInEvidence {
            event_id: r.event_id,
            event_time: rfc3339(r.event_time),
            source_ip: r.source_ip,
            mfa_used: r.mfa_used.as_deref() == Some("Yes"),
        })
        .collect();
    let mut root_sessions = Vec::new();
    let subject = format!("account:{}", c.account_id);
    for (seq, details) in crate::store::audit::of_action_about(conn, "checkout.root_task_issued", &subject)? {
        let d: serde_json::Value = serde_json::from_str(&details).map_err(|e| AppError::Internal(e.to_string()))?;
        if d["checkout"] == c.id.as_str() {
            let text = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
            root_sessions.push(RootSessionEvidence {
                access_key_id: text("access_key_id"),
                task_policy: text("task_policy"),
                expiration: text("expiration"),
                audit_seq: seq,
            });
        }
    }
    let mut items = std::collections::BTreeMap::new();
    items.insert("root_password_accepted", sign_ins.first().cloned());
    items.insert("mfa_accepted", sign_ins.iter().find(|s| s.mfa_used).cloned());
    Ok(AwsEvidence { checkout: c.id.clone(), sign_ins, root_sessions, items })
}

fn details_of(e: &RootEvent, now: i64) -> RootEventDetails {
    RootEventDetails {
        event_id: e.event_id.clone(),
        kind: e.kind.as_str().to_owned(),
        event_name: e.event_name.clone(),
        event_time: rfc3339(e.event_time),
        source_ip: e.source_ip.clone(),
        mfa_used: e.mfa_used.clone(),
        delay_seconds: (now - e.event_time).max(0),
    }
}

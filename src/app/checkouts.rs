//! Two-person checkout: request → approvals (each a WebAuthn assertion bound to this
//! request and this person) → release (a fresh assertion by the requester) →
//! check-in, with rotation after an emergency. Every step is one transaction with its
//! audit entries.
use crate::domain::event::{Event, Subject};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::Duration;
use uuid::Uuid;
use webauthn_rs::prelude::{Passkey, PasskeyAuthentication, PublicKeyCredential, RequestChallengeResponse};

use super::{
    Actor, App, Principal, b64url,
    ceremony::{self, Binding, Purpose},
    quorum::{ReshareDone, ShareOffer},
    rfc3339,
};
use crate::{
    crypto::{AccountKey, evidence::AssertionEvidence},
    domain::{
        Role, SecretKind,
        checkout::{self, ApproverFacts, CheckoutKind, CheckoutState, Deadlines, Decision, Lapse},
        display_text,
        root_task::{self, AccountType, RootTask, TaskPolicy},
        totp::{self, TotpNow},
    },
    error::AppError,
    store::{
        accounts as store_accounts,
        checkouts::{self as store, ApprovalRow, CheckoutFilter, CheckoutRow},
        people,
    },
};

/// What a requester sends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCheckout {
    pub account_id: String,
    pub reason: String,
    pub ticket: Option<String>,
    pub kind: Option<CheckoutKind>,
    pub duration_minutes: Option<u32>,
    /// `centralized_root` accounts: the AWS root-task policy the session is for
    /// (a drill defaults to `IAMAuditRootUserCredentials`, the only one it may use).
    pub task_policy: Option<String>,
    /// `centralized_root` accounts: the session length, 60 to 900 seconds (default 900).
    pub task_duration_seconds: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PersonRef {
    pub id: String,
    pub name: String,
    pub email: String,
}

/// Someone who may decide on a request: who, whether they can right now, and what
/// they decided.
#[derive(Debug, Clone, Serialize)]
pub struct ApproverView {
    pub id: String,
    pub name: String,
    pub email: String,
    /// False while in cooling-off (`can_approve_from` says until when).
    pub can_approve_now: bool,
    pub can_approve_from: Option<String>,
    /// `approve`, `deny`, or `null` (not yet).
    pub decided: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DecisionView {
    pub custodian: PersonRef,
    pub decision: String,
    pub comment: Option<String>,
    pub at: String,
    pub credential_id: String,
}

/// A checkout as people see it: who asks, for what, why, and where it stands.
#[derive(Debug, Clone, Serialize)]
pub struct CheckoutView {
    pub id: String,
    pub account_id: String,
    pub account_alias: String,
    pub requester: PersonRef,
    pub kind: String,
    pub reason: String,
    pub ticket: Option<String>,
    pub duration_minutes: i64,
    pub state: String,
    pub approvals_required: u32,
    pub approvals_received: u32,
    pub approvals_still_needed: u32,
    pub veto: bool,
    pub decisions: Vec<DecisionView>,
    /// The people who may decide (the approver set without the requester), for the
    /// requester to know whom to ask.
    pub approvers: Vec<ApproverView>,
    pub created_at: String,
    /// Deadline of the current state (pending: approvals; approved: release).
    pub expires_at: Option<String>,
    /// Seconds from the server's `now` to `expires_at` (≥ 0). Countdowns use these
    /// relative values, never the client's own clock.
    pub expires_in_seconds: Option<i64>,
    pub approved_at: Option<String>,
    pub released_at: Option<String>,
    pub window_ends_at: Option<String>,
    /// Seconds from the server's `now` to `window_ends_at` (≥ 0).
    pub window_seconds_left: Option<i64>,
    /// When the checkout ends by itself if not checked in.
    pub checkout_ends_at: Option<String>,
    /// Seconds from the server's `now` to `checkout_ends_at` (≥ 0).
    pub checkout_ends_in_seconds: Option<i64>,
    /// The server's clock when this view was made.
    pub server_time: String,
    pub ended_at: Option<String>,
    pub ended_by: Option<String>,
    pub end_note: Option<String>,
    /// Each announcement of this checkout and whether it reached SNS.
    pub announcements: Vec<AnnouncementState>,
    /// A `centralized_root` account's checkout: the root-task policy it releases
    /// (`null` for stored credentials), and the session length in seconds.
    pub task_policy: Option<String>,
    pub task_duration_seconds: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnnouncementState {
    pub event: String,
    pub event_id: String,
    /// `pending` (or waiting for a topic), `delivered`, `failed`.
    pub state: String,
    pub attempts: i64,
    pub sns_message_id: Option<String>,
    pub last_error: Option<String>,
}

/// One person's answer to a request, as sent with their assertion.
#[derive(Debug, Clone)]
pub struct Answer {
    pub decision: Decision,
    pub comment: Option<String>,
    /// Quorum mode: their share re-encrypted to the transit recipient (approvals only).
    pub share: Option<String>,
}

/// The start of an approval: the ceremony, and exactly what is being approved.
#[derive(Debug, Serialize)]
pub struct ApprovalStart {
    pub ceremony_id: String,
    /// webauthn-rs's request options; in quorum mode with the PRF extension added.
    #[serde(flatten)]
    pub options: serde_json::Value,
    pub request: CheckoutView,
    /// Quorum mode: your share and where to hand it over (`null` in policy mode, or
    /// when you hold no share and can only deny).
    pub quorum: Option<ShareOffer>,
}

#[derive(Debug, Serialize)]
pub struct ReleaseStart {
    pub ceremony_id: String,
    #[serde(flatten)]
    pub options: serde_json::Value,
    pub request: CheckoutView,
    /// Quorum mode: the requester's share and where to hand it over.
    pub quorum: Option<ShareOffer>,
}

/// What a release answers: the credentials, or for a reshare what was dealt.
#[derive(Serialize)]
#[serde(untagged)]
pub enum ReleaseOutcome {
    Revealed(Revealed),
    Reshared(ReshareDone),
    /// A `centralized_root` account: an AWS root-task session, shown once.
    RootSession(super::root_tasks::RootSession),
}

/// What the release transaction leaves to do: nothing, or the AWS call it authorised
/// (made after the commit, outside the transaction).
enum Released {
    Done(ReleaseOutcome),
    RootTask(super::root_tasks::RootTaskGrant),
}

fn options_json(options: &RequestChallengeResponse, quorum: bool) -> Result<serde_json::Value, AppError> {
    if quorum { super::quorum::with_prf(options) } else { serde_json::to_value(options).map_err(internal) }
}

/// What a release shows. Never the TOTP seed.
#[derive(Serialize)]
pub struct Revealed {
    pub checkout_id: String,
    pub account_id: String,
    pub root_email: String,
    #[serde(serialize_with = "expose")]
    pub password: SecretString,
    pub password_version: u64,
    pub totp: TotpNow,
    pub window_ends_at: String,
    /// Seconds left in the reveal window, from the server's clock: a client counts
    /// down from when this answer arrived, never from its own wall clock.
    pub window_seconds_left: i64,
}

/// Serialises a secret in a response that exists to show it (and nowhere else).
pub(crate) fn expose<S: serde::Serializer>(s: &SecretString, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(secrecy::ExposeSecret::expose_secret(s))
}

/// Proof that a release was approved and confirmed by the requester. Only
/// `release_finish` constructs one, inside its transaction, after every check.
pub struct ApprovedRelease<'a> {
    checkout: &'a CheckoutRow,
    account: &'a crate::store::accounts::AccountRow,
    /// The approvers whose approvals still stand, and the requester.
    standing: Vec<String>,
}

/// Why no account key came out of a release.
enum Opening {
    Failed(AppError),
    /// Quorum mode: the shares did not open it (audited before the error is returned).
    Quorum(super::quorum::QuorumFailure),
}

fn internal(e: impl std::fmt::Display) -> AppError {
    AppError::Internal(e.to_string())
}

/// A transition the use case's own checks should already have ruled out.
fn illegal(e: checkout::IllegalTransition) -> AppError {
    AppError::conflict("invalid_transition", format!("This request cannot change that way now: {e}."))
}

fn not_found(id: &str) -> AppError {
    AppError::not_found("checkout_not_found", format!("No checkout with id {id}."))
}

fn person(conn: &rusqlite::Connection, id: &str) -> Result<PersonRef, AppError> {
    let c = people::custodian(conn, id)?.ok_or_else(|| internal("custodian vanished"))?;
    Ok(PersonRef { id: c.id, name: c.name, email: c.email })
}

pub(crate) fn view(
    conn: &rusqlite::Connection,
    c: &CheckoutRow,
    now: time::OffsetDateTime,
) -> Result<CheckoutView, AppError> {
    let left = |t: i64| (t - now.unix_timestamp()).max(0);
    let account = store_accounts::account(conn, &c.account_id)?.ok_or_else(|| internal("account vanished"))?;
    let approvals = store::approvals_of(conn, &c.id)?;
    let received = store::count_distinct_approvers(conn, &c.id)?;
    let decisions = approvals
        .iter()
        .map(|a| {
            Ok(DecisionView {
                custodian: person(conn, &a.custodian_id)?,
                decision: a.decision.clone(),
                comment: a.comment.clone(),
                at: rfc3339(a.at),
                credential_id: a.credential_id.clone(),
            })
        })
        .collect::<Result<Vec<_>, AppError>>()?;
    let set = account_approver_set(conn, &c.account_id)?;
    let approvers = people::list_custodians(conn)?
        .into_iter()
        .filter(|p| {
            p.id != c.requester_id
                && p.is_active()
                && p.has_role(Role::Custodian)
                && set.as_ref().is_none_or(|ids| ids.contains(&p.id))
        })
        .map(|p| ApproverView {
            decided: approvals.iter().find(|a| a.custodian_id == p.id).map(|a| a.decision.clone()),
            can_approve_now: p.approve_after <= now.unix_timestamp(),
            can_approve_from: (p.approve_after > now.unix_timestamp()).then(|| rfc3339(p.approve_after)),
            id: p.id,
            name: p.name,
            email: p.email,
        })
        .collect();
    let state = c.state;
    Ok(CheckoutView {
        task_policy: c.task.map(|t| t.policy.as_str().to_owned()),
        task_duration_seconds: c.task.map(|t| t.duration_seconds),
        approvers,
        id: c.id.clone(),
        account_id: c.account_id.clone(),
        account_alias: account.alias,
        requester: person(conn, &c.requester_id)?,
        kind: c.kind.clone(),
        reason: c.reason.clone(),
        ticket: c.ticket.clone(),
        duration_minutes: c.duration_minutes,
        state: c.state.as_str().into(),
        approvals_required: c.approvals_required,
        approvals_received: received,
        approvals_still_needed: c.approvals_required.saturating_sub(received),
        veto: c.veto,
        decisions,
        created_at: rfc3339(c.created_at),
        expires_at: matches!(state, CheckoutState::Pending | CheckoutState::Approved).then(|| rfc3339(c.expires_at)),
        expires_in_seconds: matches!(state, CheckoutState::Pending | CheckoutState::Approved)
            .then(|| left(c.expires_at)),
        approved_at: c.approved_at.map(rfc3339),
        released_at: c.released_at.map(rfc3339),
        window_ends_at: c.window_ends_at.map(rfc3339),
        window_seconds_left: c.window_ends_at.map(left),
        checkout_ends_at: c.released_at.map(|r| rfc3339(r + c.duration_minutes * 60)),
        checkout_ends_in_seconds: c.released_at.map(|r| left(r + c.duration_minutes * 60)),
        server_time: rfc3339(now.unix_timestamp()),
        ended_at: c.ended_at.map(rfc3339),
        ended_by: c.ended_by.clone(),
        end_note: c.end_note.clone(),
        announcements: crate::store::outbox::list(conn, None, Some(&c.id), 100, i64::MAX)?
            .into_iter()
            .rev()
            .map(|o| AnnouncementState {
                event: o.event,
                event_id: o.event_id,
                state: o.state,
                attempts: o.attempts,
                sns_message_id: o.sns_message_id,
                last_error: o.last_error,
            })
            .collect(),
    })
}

fn subject(c: &CheckoutRow) -> Subject {
    Subject::Account(c.account_id.clone())
}

/// The account's state once no checkout is open on it.
fn settle_account(conn: &rusqlite::Connection, account_id: &str) -> Result<(), AppError> {
    Ok(store_accounts::settle(conn, account_id)?)
}

/// Apply a passed deadline to one checkout (expire, or close at the end of its
/// duration), with its audit entry. Returns the up-to-date row.
fn refresh(
    conn: &rusqlite::Connection,
    mut c: CheckoutRow,
    now: time::OffsetDateTime,
) -> Result<CheckoutRow, AppError> {
    let t = now.unix_timestamp();
    // Quorum mode: the handed-over shares and the transit key go when the reveal
    // window ends (the state trigger removes them when the checkout ends).
    if c.state == CheckoutState::Released && c.window_ends_at.is_some_and(|w| w <= t) {
        store::purge_quorum_material(conn, &c.id)?;
    }
    let d = Deadlines {
        state: c.state,
        expires_at: c.expires_at,
        released_at: c.released_at,
        duration_minutes: c.duration_minutes,
    };
    match checkout::lapse(d, t) {
        None => return Ok(c),
        Some(Lapse::Expire) => {
            let was = c.state;
            c.expire(t, Actor::System.audit_name()).map_err(illegal)?;
            store::update(conn, &c)?;
            crate::app::announce::record(
                conn,
                now,
                &Actor::System.audit_name(),
                &subject(&c),
                &Event::CheckoutExpired { checkout: c.id.clone(), was: was.as_str().into() },
            )?;
        }
        Some(Lapse::CloseAtEndOfDuration) => {
            c.close(t, Actor::System.audit_name(), "The checkout duration ended without a check-in.".into())
                .map_err(illegal)?;
            store::update(conn, &c)?;
            settle_account(conn, &c.account_id)?;
            crate::app::announce::record(
                conn,
                now,
                &Actor::System.audit_name(),
                &subject(&c),
                &Event::CheckoutClosed {
                    checkout: c.id.clone(),
                    note: c.end_note.clone(),
                    checked_in: false,
                    account_state: None,
                },
            )?;
        }
    }
    Ok(c)
}

fn load(conn: &rusqlite::Connection, id: &str, now: time::OffsetDateTime) -> Result<CheckoutRow, AppError> {
    let c = store::get(conn, id)?.ok_or_else(|| not_found(id))?;
    refresh(conn, c, now)
}

/// Invariant 1, against stored facts: may `who` decide on `c`?
fn eligibility(
    conn: &rusqlite::Connection,
    c: &CheckoutRow,
    who: &people::CustodianRow,
    now: i64,
) -> Result<(), AppError> {
    let account = store_accounts::account(conn, &c.account_id)?.ok_or_else(|| internal("account vanished"))?;
    let in_set = account_approver_set(conn, &account.account_id)?.is_none_or(|ids| ids.contains(&who.id));
    let facts = ApproverFacts {
        is_requester: who.id == c.requester_id,
        has_custodian_role: who.has_role(Role::Custodian),
        active: who.is_active(),
        approve_after: who.approve_after,
        in_approver_set: in_set,
        already_decided: store::has_decided(conn, &c.id, &who.id)?,
    };
    checkout::check_approver(c.state, facts, now).map_err(|why| match why {
        checkout::Ineligible::AlreadyDecided | checkout::Ineligible::NotPending => {
            AppError::conflict(why.code(), why.message())
        }
        _ => AppError::forbidden(why.code(), why.message()),
    })
}

/// `None` when every custodian may approve; otherwise the listed ids.
fn account_approver_set(conn: &rusqlite::Connection, account_id: &str) -> Result<Option<Vec<String>>, AppError> {
    let account = store_accounts::account(conn, account_id)?.ok_or_else(|| internal("account vanished"))?;
    Ok(match account.approver_set {
        store_accounts::ApproverMode::Listed => Some(store::approvers(conn, account_id)?),
        store_accounts::ApproverMode::All => None,
    })
}

impl App {
    /// Open a checkout request on an account (one open per account).
    #[tracing::instrument(skip_all)]
    pub async fn request_checkout(&self, p: Principal, input: NewCheckout) -> Result<CheckoutView, AppError> {
        if !p.custodian.has_role(Role::Custodian) {
            return Err(AppError::forbidden("not_a_custodian", "Only custodians can request root access."));
        }
        let account_id = crate::domain::AwsAccountId::parse(&input.account_id)?;
        let reason = display_text("reason", &input.reason, checkout::REASON_MAX_CHARS)?;
        let ticket = input
            .ticket
            .filter(|t| !t.trim().is_empty())
            .map(|t| display_text("ticket", &t, checkout::TICKET_MAX_CHARS))
            .transpose()?;
        let kind = input.kind.unwrap_or(CheckoutKind::Emergency);
        let now = self.now();
        let pending_ttl = Duration::hours(i64::from(self.config.security.request_pending_ttl_hours));
        let app = self.clone();
        self.db
            .transact(move |tx| {
                let account = store_accounts::account(tx, account_id.as_str())?
                    .ok_or_else(|| AppError::not_found("account_not_found", format!("No account {account_id} is in custody.")))?;
                let quorum = account.custody == crate::domain::Custody::Quorum;
                if kind == CheckoutKind::Reshare && !quorum {
                    return Err(AppError::conflict(
                        "not_quorum",
                        format!("Account {} is in policy mode: there are no shares to reshare. An admin turns on quorum mode first.", account.account_id),
                    ));
                }
                let duration = checkout::validate_duration(input.duration_minutes, account.max_checkout_minutes)?;
                let task = root_task_of(&account, kind, input.task_policy.as_deref(), input.task_duration_seconds)?;
                if task.is_some() {
                    app.root_tasks()?;
                }
                if let Some(open) = store::open_for_account(tx, account.account_id.as_str())? {
                    let open = refresh(tx, open, now)?;
                    if open.state.is_open() {
                        let who = person(tx, &open.requester_id)?;
                        return Err(AppError::conflict(
                            "account_busy",
                            format!("Account {} already has an open checkout {} ({}, requested by {}). One checkout per account at a time.", account.account_id, open.id, open.state, who.name),
                        ));
                    }
                }
                if kind == CheckoutKind::Drill
                    && crate::store::drills::open_for_account(tx, &account.account_id)?.is_empty()
                    && crate::store::drills::failed_latest(tx, &account.account_id)?.is_none()
                {
                    return Err(AppError::conflict(
                        "no_drill_due",
                        format!("No drill is due for account {}: drills open on its schedule (see Drills). For real access, request an emergency checkout.", account.account_id),
                    ));
                }
                for kind in [SecretKind::RootPassword, SecretKind::TotpSeed].into_iter().filter(|_| kind != CheckoutKind::Reshare && task.is_none()) {
                    if store_accounts::latest_secret(tx, &account.account_id, kind.as_str())?.is_none() {
                        return Err(AppError::conflict("account_not_ready", format!("Account {} has no {} on file: an admin must deposit it first.", account.account_id, kind)));
                    }
                }
                let c = CheckoutRow {
                    id: Uuid::new_v4().to_string(),
                    account_id: account.account_id.clone(),
                    requester_id: p.custodian.id.clone(),
                    kind: kind.as_str().into(),
                    reason,
                    ticket,
                    duration_minutes: i64::from(duration),
                    state: CheckoutState::Pending,
                    // Quorum mode: never fewer approvals than the shares dealt need (until a
                    // reshare deals for a lower policy), never fewer than the policy asks.
                    approvals_required: match account.quorum_k {
                        Some(k) if quorum => account.approvals_required.max(k - 1),
                        _ => account.approvals_required,
                    },
                    veto: account.veto,
                    reveal_window_minutes: i64::from(account.reveal_window_minutes),
                    created_at: now.unix_timestamp(),
                    expires_at: (now + pending_ttl).unix_timestamp(),
                    approved_at: None,
                    released_at: None,
                    window_ends_at: None,
                    ended_at: None,
                    ended_by: None,
                    end_note: None,
                    task,
                };
                store::insert(tx, &c).map_err(|e| match e {
                    // Lost a race with another request for the same account.
                    crate::store::StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                        AppError::conflict("account_busy", format!("Account {} already has an open checkout.", c.account_id))
                    }
                    other => other.into(),
                })?;
                if quorum {
                    app.prepare_transit(tx, &account, &c)?;
                }
                // Every rule that decides quorum, so that `audit verify` replays it offline:
                // how many, who may approve, and whether one denial ends the request.
                let approvers = match account_approver_set(tx, &c.account_id)? {
                    Some(ids) => json!(ids),
                    None => json!("all"),
                };
                crate::app::announce::record(
                    tx,
                    now,
                    &p.actor().audit_name(),
                    &subject(&c),
                    &Event::CheckoutRequested {
                        checkout: c.id.clone(),
                        kind: c.kind.clone(),
                        reason: c.reason.clone(),
                        ticket: c.ticket.clone(),
                        duration_minutes: c.duration_minutes,
                        approvals_required: c.approvals_required,
                        veto: Some(c.veto),
                        approvers: Some(approvers),
                        task_policy: c.task.map(|t| t.policy.as_str().to_owned()),
                        task_duration_seconds: c.task.map(|t| t.duration_seconds),
                    },
                )?;
                view(tx, &c, now)
            })
            .await
    }

    #[tracing::instrument(skip_all)]
    pub async fn get_checkout(&self, id: String) -> Result<CheckoutView, AppError> {
        let now = self.now();
        self.db.transact(move |tx| view(tx, &load(tx, &id, now)?, now)).await
    }

    /// List checkouts; `awaiting` keeps only those this person may decide on now.
    #[tracing::instrument(skip_all)]
    pub async fn list_checkouts(
        &self,
        filter: CheckoutFilter,
        awaiting: Option<Principal>,
    ) -> Result<Vec<CheckoutView>, AppError> {
        let now = self.now();
        self.db
            .transact(move |tx| {
                let mut out = Vec::new();
                for c in store::list(tx, &filter, 500)? {
                    let c = refresh(tx, c, now)?;
                    if filter.state.as_deref().is_some_and(|s| s != c.state.as_str()) {
                        continue;
                    }
                    if let Some(p) = &awaiting
                        && eligibility(tx, &c, &p.custodian, now.unix_timestamp()).is_err()
                    {
                        continue;
                    }
                    out.push(view(tx, &c, now)?);
                }
                Ok(out)
            })
            .await
    }

    #[tracing::instrument(skip_all)]
    pub async fn cancel_checkout(&self, p: Principal, id: String) -> Result<CheckoutView, AppError> {
        let now = self.now();
        let out = self
            .db
            .transact(move |tx| {
                let mut c = load(tx, &id, now)?;
                if c.requester_id != p.custodian.id {
                    return Err(AppError::forbidden(
                        "not_the_requester",
                        "Only the person who made the request can cancel it.",
                    ));
                }
                if !matches!(c.state, CheckoutState::Pending | CheckoutState::Approved) {
                    return Err(AppError::conflict(
                        "not_cancellable",
                        format!("This request is {}; only pending or approved requests can be cancelled.", c.state),
                    ));
                }
                c.cancel(now.unix_timestamp(), p.actor().audit_name()).map_err(illegal)?;
                store::update(tx, &c)?;
                crate::app::announce::record(
                    tx,
                    now,
                    &p.actor().audit_name(),
                    &subject(&c),
                    &Event::CheckoutCancelled { checkout: c.id.clone() },
                )?;
                view(tx, &c, now)
            })
            .await;
        self.scrub_wal().await;
        out
    }

    /// Start one person's approval: checks they may decide, issues a challenge bound
    /// to (this request, this person), and shows what they are approving.
    #[tracing::instrument(skip_all)]
    pub async fn approval_start(&self, p: Principal, id: String) -> Result<ApprovalStart, AppError> {
        let now = self.now();
        let app = self.clone();
        self.db
            .transact(move |tx| {
                let c = load(tx, &id, now)?;
                eligibility(tx, &c, &p.custodian, now.unix_timestamp())?;
                let cooling = i64::from(app.config.security.cooling_off_hours) * 3600;
                let keys = approval_passkeys(tx, &p.custodian.id, now.unix_timestamp(), cooling)?;
                let (options, state) = app.webauthn.start_passkey_authentication(&keys).map_err(internal)?;
                let ceremony_id = app.insert_checkout_ceremony(tx, Purpose::Approve, &p, &c, &state, now)?;
                // A person without a share can still deny; approving needs the share.
                let quorum = match app.share_offer(tx, &c, &p.custodian.id) {
                    Ok(offer) => offer,
                    Err(AppError::Forbidden { code: "no_share", .. }) => None,
                    Err(e) => return Err(e),
                };
                let in_quorum_mode = store::transit(tx, &c.id)?.is_some();
                crate::app::announce::record(
                    tx,
                    now,
                    &p.actor().audit_name(),
                    &subject(&c),
                    &Event::ApprovalChallengeIssued {
                        checkout: c.id.clone(),
                        ceremony: ceremony_id.clone(),
                        challenge: b64url(&options.public_key.challenge),
                        rp_id: app.origin.host().to_owned(),
                        origin: app.origin.header().to_owned(),
                    },
                )?;
                Ok(ApprovalStart {
                    ceremony_id,
                    options: options_json(&options, in_quorum_mode)?,
                    request: view(tx, &c, now)?,
                    quorum,
                })
            })
            .await
    }

    fn insert_checkout_ceremony(
        &self,
        tx: &rusqlite::Connection,
        purpose: Purpose,
        p: &Principal,
        c: &CheckoutRow,
        state: &PasskeyAuthentication,
        now: time::OffsetDateTime,
    ) -> Result<String, AppError> {
        let binding = Binding {
            custodian_id: Some(p.custodian.id.clone()),
            checkout_id: Some(c.id.clone()),
            ..Binding::default()
        };
        self.issue_ceremony(tx, purpose, binding, Some(ceremony::state_json(state)?), now)
    }

    /// Verify the assertion against a ceremony already taken (inside the step's own
    /// transaction, `App::with_ceremony`): bound to this checkout and person, unexpired.
    fn verified_assertion(
        &self,
        row: &people::CeremonyRow,
        purpose: Purpose,
        p: &Principal,
        checkout_id: &str,
        credential: &PublicKeyCredential,
        now: i64,
    ) -> Result<(webauthn_rs::prelude::AuthenticationResult, AssertionEvidence), AppError> {
        ceremony::bound_to_checkout(row, purpose, checkout_id, &p.custodian.id)?;
        ceremony::unexpired(row, now)?;
        let state: PasskeyAuthentication = ceremony::state(row)?;
        let result =
            self.webauthn.finish_passkey_authentication(credential, &state).map_err(|e| ceremony::refused(&e))?;
        let evidence = ceremony::evidence(credential, &result);
        Ok((result, evidence))
    }

    /// Record one person's decision, with its WebAuthn evidence.
    #[tracing::instrument(skip_all)]
    pub async fn approval_finish(
        &self,
        p: Principal,
        id: String,
        ceremony_id: String,
        credential: PublicKeyCredential,
        answer: Answer,
    ) -> Result<CheckoutView, AppError> {
        let Answer { decision, comment, share } = answer;
        let comment = comment
            .filter(|c| !c.trim().is_empty())
            .map(|c| display_text("comment", &c, checkout::NOTE_MAX_CHARS))
            .transpose()?;
        let now = self.now();
        let approved_ttl = Duration::minutes(i64::from(self.config.security.request_approved_ttl_minutes));
        let app = self.clone();
        let out = self
            .with_ceremony(ceremony_id, Purpose::Approve, move |tx, ceremony| {
                let (result, evidence) =
                    app.verified_assertion(&ceremony, Purpose::Approve, &p, &id, &credential, now.unix_timestamp())?;
                let mut c = load(tx, &id, now)?;
                // Re-check everything: the request or the person may have changed since start.
                let me = people::custodian(tx, &p.custodian.id)?.ok_or_else(|| internal("custodian vanished"))?;
                eligibility(tx, &c, &me, now.unix_timestamp())?;
                let cred_id = evidence.credential_id.clone();
                if !ceremony::record_use(tx, &me.id, &result, now.unix_timestamp())? {
                    return Err(internal("credential vanished"));
                }
                let row = ApprovalRow {
                    id: 0,
                    checkout_id: c.id.clone(),
                    custodian_id: me.id.clone(),
                    credential_id: cred_id,
                    decision: decision.as_str().into(),
                    comment: comment.clone(),
                    at: now.unix_timestamp(),
                    challenge: evidence.challenge.clone(),
                    client_data_json: evidence.client_data_json.clone(),
                    authenticator_data: evidence.authenticator_data.clone(),
                    signature: evidence.signature.clone(),
                };
                if !store::insert_approval(tx, &row)? {
                    let why = checkout::Ineligible::AlreadyDecided;
                    return Err(AppError::conflict(why.code(), why.message()));
                }
                let actor = p.actor().audit_name();
                if decision == Decision::Approve {
                    app.accept_handed_share(tx, &c, &me.id, &actor, share.as_deref(), now)?;
                }
                crate::app::announce::record(
                    tx,
                    now,
                    &actor,
                    &subject(&c),
                    &if decision == Decision::Approve {
                        Event::ApprovalRecorded {
                            checkout: c.id.clone(),
                            decision,
                            comment: comment.clone(),
                            evidence: json!(evidence),
                        }
                    } else {
                        Event::DenialRecorded {
                            checkout: c.id.clone(),
                            decision,
                            comment: comment.clone(),
                            evidence: json!(evidence),
                        }
                    },
                )?;
                let distinct = store::count_distinct_approvers(tx, &c.id)?;
                match checkout::after_decision(decision, distinct, c.approvals_required, c.veto) {
                    CheckoutState::Approved => {
                        c.approve(now.unix_timestamp(), (now + approved_ttl).unix_timestamp()).map_err(illegal)?;
                        store::update(tx, &c)?;
                        crate::app::announce::record(
                            tx,
                            now,
                            &actor,
                            &subject(&c),
                            &Event::CheckoutApproved { checkout: c.id.clone(), approvals: distinct },
                        )?;
                    }
                    CheckoutState::Denied => {
                        c.deny(now.unix_timestamp(), actor.clone()).map_err(illegal)?;
                        store::update(tx, &c)?;
                        crate::app::announce::record(
                            tx,
                            now,
                            &actor,
                            &subject(&c),
                            &Event::CheckoutDenied { checkout: c.id.clone() },
                        )?;
                    }
                    _ => {}
                }
                view(tx, &c, now)
            })
            .await;
        self.scrub_wal().await;
        out
    }

    /// The requester starts the release: a fresh assertion bound to this request.
    #[tracing::instrument(skip_all)]
    pub async fn release_start(&self, p: Principal, id: String) -> Result<ReleaseStart, AppError> {
        let now = self.now();
        let app = self.clone();
        self.db
            .transact(move |tx| {
                let c = load(tx, &id, now)?;
                check_revealable(&c, &p, now.unix_timestamp())?;
                let (options, state) = app
                    .webauthn
                    .start_passkey_authentication(&ceremony::passkeys_of(tx, &p.custodian.id)?)
                    .map_err(internal)?;
                let ceremony_id = app.insert_checkout_ceremony(tx, Purpose::Release, &p, &c, &state, now)?;
                let quorum = app.share_offer(tx, &c, &p.custodian.id)?;
                crate::app::announce::record(
                    tx,
                    now,
                    &p.actor().audit_name(),
                    &subject(&c),
                    &Event::ReleaseChallengeIssued {
                        checkout: c.id.clone(),
                        ceremony: ceremony_id.clone(),
                        challenge: b64url(&options.public_key.challenge),
                        rp_id: app.origin.host().to_owned(),
                        origin: app.origin.header().to_owned(),
                    },
                )?;
                Ok(ReleaseStart {
                    ceremony_id,
                    options: options_json(&options, quorum.is_some())?,
                    request: view(tx, &c, now)?,
                    quorum,
                })
            })
            .await
    }

    /// Verify the requester's assertion, then reveal the password and the current
    /// TOTP code. The first reveal releases the checkout and starts the window. In
    /// quorum mode the requester's handed-over share (`share`) completes the k shares;
    /// a reshare checkout deals a fresh key instead of revealing anything.
    #[tracing::instrument(skip_all)]
    pub async fn release_finish(
        &self,
        p: Principal,
        id: String,
        ceremony_id: String,
        credential: PublicKeyCredential,
        share: Option<String>,
    ) -> Result<ReleaseOutcome, AppError> {
        let now = self.now();
        let app = self.clone();
        let out = self
            .with_ceremony(ceremony_id, Purpose::Release, move |tx, ceremony| {
                let (result, evidence) =
                    app.verified_assertion(&ceremony, Purpose::Release, &p, &id, &credential, now.unix_timestamp())?;
                let mut c = load(tx, &id, now)?;
                check_revealable(&c, &p, now.unix_timestamp())?;
                let mut standing = check_quorum_still_holds(tx, &c, now.unix_timestamp())?;
                if !ceremony::record_use(tx, &p.custodian.id, &result, now.unix_timestamp())? {
                    return Err(internal("credential vanished"));
                }
                let account =
                    store_accounts::account(tx, &c.account_id)?.ok_or_else(|| internal("account vanished"))?;
                let actor = p.actor().audit_name();
                if let Some(task) = c.task {
                    // No key to open: the approvals and this assertion authorise one
                    // AWS call, recorded before it is made.
                    let grant = app.authorize_root_task(tx, &mut c, task, p.actor(), json!(evidence), now)?;
                    return Ok(Ok(Released::RootTask(grant)));
                }
                if store::transit(tx, &c.id)?.is_some()
                    && !store::handed_shares(tx, &c.id)?.iter().any(|h| h.custodian_id == p.custodian.id)
                {
                    app.accept_handed_share(tx, &c, &p.custodian.id, &actor, share.as_deref(), now)?;
                }
                standing.push(c.requester_id.clone());
                let release = ApprovedRelease { checkout: &c, account: &account, standing };
                let key = match app.release_account_key(tx, &release) {
                    Ok(key) => key,
                    Err(Opening::Failed(e)) => return Err(e),
                    Err(Opening::Quorum(f)) => {
                        // Nothing is revealed, but the failure is on the record (committed).
                        crate::app::announce::record(
                            tx,
                            now,
                            &actor,
                            &subject(&c),
                            &Event::QuorumFailed {
                                checkout: c.id.clone(),
                                code: f.code.to_owned(),
                                person: f.person.clone(),
                                message: f.message.clone(),
                            },
                        )?;
                        return Ok(Err(f.into_error()));
                    }
                };
                drop(release);
                let reshare = c.kind == CheckoutKind::Reshare.as_str();
                if c.state == CheckoutState::Approved {
                    c.release(now.unix_timestamp()).map_err(illegal)?;
                    store::update(tx, &c)?;
                    let emergency = c.kind == CheckoutKind::Emergency.as_str();
                    if !reshare {
                        store_accounts::mark_checked_out(tx, &c.account_id, emergency, now.unix_timestamp())?;
                    }
                    crate::app::announce::record(
                        tx,
                        now,
                        &actor,
                        &subject(&c),
                        &Event::CheckoutReleased {
                            checkout: c.id.clone(),
                            window_ends_at: rfc3339(c.window_ends_at.unwrap_or_default()),
                            rotation_required: emergency,
                            task_policy: None,
                        },
                    )?;
                }
                if reshare {
                    let done = app.reshare_in_tx(tx, &c, &key, &actor, json!(evidence), now)?;
                    drop(key);
                    let note =
                        format!("Reshare done: key version {} dealt to {} holders.", done.key_version, done.holders);
                    c.close(now.unix_timestamp(), actor.clone(), note.clone()).map_err(illegal)?;
                    store::update(tx, &c)?;
                    crate::app::announce::record(
                        tx,
                        now,
                        &actor,
                        &subject(&c),
                        &Event::CheckoutClosed {
                            checkout: c.id.clone(),
                            note: Some(note),
                            checked_in: true,
                            account_state: None,
                        },
                    )?;
                    return Ok(Ok(Released::Done(ReleaseOutcome::Reshared(done))));
                }
                let (pw_version, pw_ct) =
                    store_accounts::latest_secret(tx, &c.account_id, SecretKind::RootPassword.as_str())?
                        .ok_or_else(|| internal("no password"))?;
                let (seed_version, seed_ct) =
                    store_accounts::latest_secret(tx, &c.account_id, SecretKind::TotpSeed.as_str())?
                        .ok_or_else(|| internal("no seed"))?;
                let password = key.open(SecretKind::RootPassword.as_str(), pw_version, &pw_ct)?;
                let seed = key.open(SecretKind::TotpSeed.as_str(), seed_version, &seed_ct)?;
                drop(key);
                let totp = totp::code_at(&seed, now.unix_timestamp().max(0) as u64)?;
                drop(seed);
                crate::app::announce::record(
                    tx,
                    now,
                    &actor,
                    &subject(&c),
                    &Event::CheckoutRevealed {
                        checkout: c.id.clone(),
                        release: c.id.clone(),
                        password_version: pw_version,
                        totp_seed_version: seed_version,
                        evidence: json!(evidence),
                    },
                )?;
                Ok(Ok(Released::Done(ReleaseOutcome::Revealed(Revealed {
                    checkout_id: c.id.clone(),
                    account_id: c.account_id.clone(),
                    root_email: account.root_email,
                    password,
                    password_version: pw_version,
                    totp,
                    window_ends_at: rfc3339(c.window_ends_at.unwrap_or_default()),
                    window_seconds_left: (c.window_ends_at.unwrap_or_default() - now.unix_timestamp()).max(0),
                }))))
            })
            .await?;
        self.scrub_wal().await;
        match out? {
            Released::Done(outcome) => Ok(outcome),
            Released::RootTask(grant) => self.open_root_session(grant).await.map(ReleaseOutcome::RootSession),
        }
    }

    /// A root-task release, inside the release transaction: release the checkout on
    /// its first use (starting the window) and record the authorisation with the
    /// requester's evidence. The AWS call happens after the commit.
    fn authorize_root_task(
        &self,
        tx: &rusqlite::Connection,
        c: &mut CheckoutRow,
        task: RootTask,
        actor: Actor,
        evidence: serde_json::Value,
        now: time::OffsetDateTime,
    ) -> Result<super::root_tasks::RootTaskGrant, AppError> {
        let policy_arn = self.root_tasks()?.policy_arn(task.policy);
        let who = actor.audit_name();
        if c.state == CheckoutState::Approved {
            c.release(now.unix_timestamp()).map_err(illegal)?;
            store::update(tx, c)?;
            // Nothing stored was shown, so nothing needs rotating afterwards.
            store_accounts::mark_checked_out(tx, &c.account_id, false, now.unix_timestamp())?;
            crate::app::announce::record(
                tx,
                now,
                &who,
                &subject(c),
                &Event::CheckoutReleased {
                    checkout: c.id.clone(),
                    window_ends_at: rfc3339(c.window_ends_at.unwrap_or_default()),
                    rotation_required: false,
                    task_policy: Some(task.policy.as_str().to_owned()),
                },
            )?;
        }
        crate::app::announce::record(
            tx,
            now,
            &who,
            &subject(c),
            &Event::RootTaskAuthorized {
                checkout: c.id.clone(),
                task_policy: task.policy.as_str().to_owned(),
                task_policy_arn: policy_arn.clone(),
                duration_seconds: task.duration_seconds,
                evidence,
            },
        )?;
        Ok(super::root_tasks::RootTaskGrant {
            checkout_id: c.id.clone(),
            account_id: c.account_id.clone(),
            actor,
            task,
            policy_arn,
            window_ends_at: c.window_ends_at.unwrap_or_default(),
        })
    }

    /// **The seam between policy mode and quorum mode**: the only way from an
    /// approved, confirmed release to an account key. Policy mode: the unsealed
    /// vault key unwraps it. Quorum mode: the shares handed over by the standing
    /// approvers and the requester combine into it (`App::open_from_shares`).
    fn release_account_key(
        &self,
        tx: &rusqlite::Connection,
        release: &ApprovedRelease<'_>,
    ) -> Result<AccountKey, Opening> {
        match release.account.custody {
            crate::domain::Custody::Policy => {
                let vault = self.vault().map_err(Opening::Failed)?;
                let wrapped = release
                    .account
                    .wrapped_key
                    .as_deref()
                    .ok_or_else(|| Opening::Failed(internal("policy-mode account without a wrapped key")))?;
                vault.account_key(&release.account.account_id, wrapped).map_err(|e| Opening::Failed(e.into()))
            }
            crate::domain::Custody::Quorum => {
                self.open_from_shares(tx, release.account, release.checkout, &release.standing).map_err(Opening::Quorum)
            }
        }
    }

    /// Check-in: the requester (or an admin) ends a released checkout with a note.
    #[tracing::instrument(skip_all)]
    pub async fn close_checkout(&self, p: Principal, id: String, note: String) -> Result<CheckoutView, AppError> {
        let note = display_text("note", &note, checkout::NOTE_MAX_CHARS)?;
        let now = self.now();
        let out = self
            .db
            .transact(move |tx| {
                let mut c = load(tx, &id, now)?;
                if c.requester_id != p.custodian.id && !p.custodian.has_role(Role::Admin) {
                    return Err(AppError::forbidden(
                        "not_the_requester",
                        "Only the requester or an admin can check this checkout in.",
                    ));
                }
                if c.state != CheckoutState::Released {
                    return Err(AppError::conflict(
                        "not_released",
                        format!(
                            "This checkout is {}; only a released checkout is checked in (cancel a pending one).",
                            c.state
                        ),
                    ));
                }
                c.close(now.unix_timestamp(), p.actor().audit_name(), note.clone()).map_err(illegal)?;
                store::update(tx, &c)?;
                settle_account(tx, &c.account_id)?;
                let state = store_accounts::account(tx, &c.account_id)?
                    .ok_or_else(|| internal("account vanished"))?
                    .state
                    .as_str()
                    .to_owned();
                crate::app::announce::record(
                    tx,
                    now,
                    &p.actor().audit_name(),
                    &subject(&c),
                    &Event::CheckoutClosed {
                        checkout: c.id.clone(),
                        note: Some(note.clone()),
                        checked_in: true,
                        account_state: Some(state.clone()),
                    },
                )?;
                view(tx, &c, now)
            })
            .await;
        self.scrub_wal().await;
        out
    }

    /// Rotation after an emergency: the requester deposits the new root password.
    /// Only for the emergency checkout whose release made the rotation due, only while
    /// it is due, and only if no later checkout was released on the account; check and
    /// deposit are one transaction. Admins rotate through the account instead.
    #[tracing::instrument(skip_all)]
    pub async fn rotate_after_checkout(
        &self,
        p: Principal,
        id: String,
        value: SecretString,
    ) -> Result<super::accounts::Deposited, AppError> {
        let value = crate::domain::secrets::normalize_secret(SecretKind::RootPassword, &value)?;
        let now = self.now();
        self.db
            .transact(move |tx| {
                let c = load(tx, &id, now)?;
                if c.requester_id != p.custodian.id {
                    return Err(AppError::forbidden(
                        "not_the_requester",
                        "Only the person who used this checkout deposits the new password (an admin can, on the account).",
                    ));
                }
                let Some(released_at) = c.released_at else {
                    return Err(AppError::conflict("not_released", "Nothing was released on this checkout, so there is nothing to rotate."));
                };
                let due = store_accounts::account(tx, &c.account_id)?.ok_or_else(|| internal("account vanished"))?.rotation_due_since;
                let later = store::released_after(tx, &c.account_id, released_at)?;
                let caused_it = c.kind == CheckoutKind::Emergency.as_str() && due.is_some_and(|d| d <= released_at);
                if !caused_it || later {
                    return Err(AppError::conflict(
                        "rotation_not_due",
                        "No rotation is due from this checkout (it was a drill, the password was already rotated, or a later checkout was released). An admin can deposit on the account.",
                    ));
                }
                let account = crate::domain::AwsAccountId::parse(&c.account_id)?;
                super::accounts::deposit_in_tx(tx, &p.actor(), &account, SecretKind::RootPassword, &value, now, Some(&c.id))
            })
            .await
    }

    /// Apply every passed deadline. Idempotent; run by the scheduler tick.
    #[tracing::instrument(skip_all)]
    pub async fn expire_due(&self) -> Result<usize, AppError> {
        let now = self.now();
        self.db
            .transact(move |tx| {
                let mut n = 0;
                for c in store::open_checkouts(tx)? {
                    let before = c.state;
                    if refresh(tx, c, now)?.state != before {
                        n += 1;
                    }
                }
                Ok(n)
            })
            .await
    }
}

/// The approvals behind a release must still stand when it happens: an approver
/// disabled (say, as compromised), no longer a custodian or removed from the approver
/// set since approving no longer counts.
fn check_quorum_still_holds(tx: &rusqlite::Connection, c: &CheckoutRow, now: i64) -> Result<Vec<String>, AppError> {
    let set = account_approver_set(tx, &c.account_id)?;
    let mut ids = Vec::new();
    for a in store::approvals_of(tx, &c.id)?.iter().filter(|a| a.decision == Decision::Approve.as_str()) {
        let Some(who) = people::custodian(tx, &a.custodian_id)? else {
            continue;
        };
        let in_set = set.as_ref().is_none_or(|ids| ids.contains(&who.id));
        if who.id != c.requester_id
            && who.is_active()
            && who.has_role(Role::Custodian)
            && in_set
            && who.approve_after <= now
        {
            ids.push(who.id);
        }
    }
    let standing = ids.len() as u32;
    if standing < c.approvals_required {
        return Err(AppError::conflict(
            "quorum_no_longer_met",
            format!(
                "{standing} of the {} approvals behind this request still stand (an approver was disabled or removed since). Make a new request.",
                c.approvals_required
            ),
        ));
    }
    Ok(ids)
}

/// The person's keys that may sign an approval: each past its own cooling-off, so a key
/// added yesterday (say, with a stolen session) cannot approve today.
fn approval_passkeys(
    conn: &rusqlite::Connection,
    custodian_id: &str,
    now: i64,
    cooling_secs: i64,
) -> Result<Vec<Passkey>, AppError> {
    let rows: Vec<_> = people::credentials_of(conn, custodian_id)?
        .into_iter()
        .filter(|r| r.created_at + cooling_secs <= now)
        .collect();
    let keys = ceremony::passkeys(&rows)?;
    if keys.is_empty() {
        return Err(AppError::forbidden(
            "credential_cooling_off",
            "Your security keys were all enrolled too recently to approve; a key approves once its cooling-off period has passed.",
        ));
    }
    Ok(keys)
}

/// The root-task session a request asks for: required (and checked) for a
/// `centralized_root` account, refused for one with stored credentials. A drill
/// proves access without changing anything, so it may only audit.
fn root_task_of(
    account: &store_accounts::AccountRow,
    kind: CheckoutKind,
    policy: Option<&str>,
    duration: Option<u32>,
) -> Result<Option<RootTask>, AppError> {
    if account.account_type != AccountType::CentralizedRoot {
        if policy.is_some() || duration.is_some() {
            return Err(AppError::invalid(
                "task_policy_not_applicable",
                format!(
                    "Account {} keeps its root password in breakglass: a checkout reveals it. task_policy and task_duration_seconds are for centralized_root accounts.",
                    account.account_id
                ),
            ));
        }
        return Ok(None);
    }
    let policy = match (policy, kind) {
        (Some(p), _) => TaskPolicy::parse(p)?,
        (None, CheckoutKind::Drill) => TaskPolicy::IamAuditRootUserCredentials,
        (None, _) => {
            return Err(AppError::invalid(
                "task_policy_required",
                format!(
                    "Account {} has no root password (centralized_root): name the root task, task_policy, one of {}.",
                    account.account_id,
                    TaskPolicy::ALL.map(TaskPolicy::as_str).join(", ")
                ),
            ));
        }
    };
    if kind == CheckoutKind::Drill && policy != TaskPolicy::IamAuditRootUserCredentials {
        return Err(AppError::invalid(
            "drill_task_read_only",
            "A drill proves access without changing anything: its task_policy is IAMAuditRootUserCredentials. Request an emergency checkout for other tasks.",
        ));
    }
    Ok(Some(RootTask { policy, duration_seconds: root_task::validate_duration(duration)? }))
}

fn check_revealable(c: &CheckoutRow, p: &Principal, now: i64) -> Result<(), AppError> {
    if c.requester_id != p.custodian.id {
        return Err(AppError::forbidden(
            "not_the_requester",
            "Only the person who made the request can reveal the credentials.",
        ));
    }
    match c.state {
        CheckoutState::Pending => Err(AppError::conflict(
            "quorum_not_met",
            format!("This request still needs approval from other custodians ({} required).", c.approvals_required),
        )),
        CheckoutState::Approved => Ok(()),
        CheckoutState::Released if c.window_ends_at.is_some_and(|w| now < w) => Ok(()),
        CheckoutState::Released => Err(AppError::gone(
            "reveal_window_closed",
            "The reveal window has ended. Check in, or make a new request if you still need access.",
        )),
        CheckoutState::Closed | CheckoutState::Denied | CheckoutState::Cancelled | CheckoutState::Expired => {
            Err(AppError::gone("checkout_ended", format!("This checkout is {}; nothing more is revealed.", c.state)))
        }
    }
}

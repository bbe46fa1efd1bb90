//! The checkout state machine and the approval rules. Pure: callers pass the facts
//! and the time.
use std::fmt;

use serde::{Deserialize, Serialize};

use super::ValidationError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutKind {
    Emergency,
    Drill,
    /// Quorum mode: open the account key only to deal a fresh one to the current
    /// holders. Shows no credentials.
    Reshare,
}

impl CheckoutKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Emergency => "emergency",
            Self::Drill => "drill",
            Self::Reshare => "reshare",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "emergency" => Some(Self::Emergency),
            "drill" => Some(Self::Drill),
            "reshare" => Some(Self::Reshare),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutState {
    Pending,
    Approved,
    Released,
    Closed,
    Denied,
    Cancelled,
    Expired,
}

impl CheckoutState {
    pub const OPEN: [CheckoutState; 3] = [Self::Pending, Self::Approved, Self::Released];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Released => "released",
            Self::Closed => "closed",
            Self::Denied => "denied",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Approved, Self::Released, Self::Closed, Self::Denied, Self::Cancelled, Self::Expired]
            .into_iter()
            .find(|st| st.as_str() == s)
    }

    pub fn is_open(self) -> bool {
        Self::OPEN.contains(&self)
    }
}

impl fmt::Display for CheckoutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
        }
    }
}

/// One checkout request and where it stands. Its state changes only through the
/// transition methods below, each of which refuses to start from the wrong state.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub id: String,
    pub account_id: String,
    pub requester_id: String,
    pub kind: String,
    pub reason: String,
    pub ticket: Option<String>,
    pub duration_minutes: i64,
    pub state: CheckoutState,
    pub approvals_required: u32,
    pub veto: bool,
    pub reveal_window_minutes: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub approved_at: Option<i64>,
    pub released_at: Option<i64>,
    pub window_ends_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub ended_by: Option<String>,
    pub end_note: Option<String>,
    /// A `centralized_root` account's checkout: the root-task session it asks for.
    pub task: Option<super::root_task::RootTask>,
}

/// A transition asked of a checkout in a state it cannot leave that way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} checkout cannot become {to}")]
pub struct IllegalTransition {
    pub from: CheckoutState,
    pub to: CheckoutState,
}

impl Checkout {
    fn go(&mut self, allowed: &[CheckoutState], to: CheckoutState) -> Result<(), IllegalTransition> {
        if !allowed.contains(&self.state) {
            return Err(IllegalTransition { from: self.state, to });
        }
        self.state = to;
        Ok(())
    }

    fn end(&mut self, at: i64, by: String, note: Option<String>) {
        self.ended_at = Some(at);
        self.ended_by = Some(by);
        if note.is_some() {
            self.end_note = note;
        }
    }

    /// Quorum reached: the requester has until `reveal_by` to release.
    pub fn approve(&mut self, at: i64, reveal_by: i64) -> Result<(), IllegalTransition> {
        self.go(&[CheckoutState::Pending], CheckoutState::Approved)?;
        self.approved_at = Some(at);
        self.expires_at = reveal_by;
        Ok(())
    }

    pub fn deny(&mut self, at: i64, by: String) -> Result<(), IllegalTransition> {
        self.go(&[CheckoutState::Pending], CheckoutState::Denied)?;
        self.end(at, by, None);
        Ok(())
    }

    pub fn cancel(&mut self, at: i64, by: String) -> Result<(), IllegalTransition> {
        self.go(&[CheckoutState::Pending, CheckoutState::Approved], CheckoutState::Cancelled)?;
        self.end(at, by, None);
        Ok(())
    }

    /// Pending or approved past its deadline (by the system).
    pub fn expire(&mut self, at: i64, by: String) -> Result<(), IllegalTransition> {
        self.go(&[CheckoutState::Pending, CheckoutState::Approved], CheckoutState::Expired)?;
        self.end(at, by, None);
        Ok(())
    }

    /// The first reveal: the reveal window starts now.
    pub fn release(&mut self, at: i64) -> Result<(), IllegalTransition> {
        self.go(&[CheckoutState::Approved], CheckoutState::Released)?;
        self.released_at = Some(at);
        self.window_ends_at = Some(at + self.reveal_window_minutes * 60);
        Ok(())
    }

    /// Checked in by a person, or closed by the system at the end of its duration.
    pub fn close(&mut self, at: i64, by: String, note: String) -> Result<(), IllegalTransition> {
        self.go(&[CheckoutState::Released], CheckoutState::Closed)?;
        self.end(at, by, Some(note));
        Ok(())
    }
}

/// What a clock tick does to an open checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lapse {
    /// Pending or approved past its deadline.
    Expire,
    /// Released and past its requested duration: closed by the system.
    CloseAtEndOfDuration,
}

/// Timing facts of one checkout, in Unix seconds.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub state: CheckoutState,
    pub expires_at: i64,
    pub released_at: Option<i64>,
    pub duration_minutes: i64,
}

pub fn lapse(d: Deadlines, now: i64) -> Option<Lapse> {
    match d.state {
        CheckoutState::Pending | CheckoutState::Approved if now >= d.expires_at => Some(Lapse::Expire),
        CheckoutState::Released if d.released_at.is_some_and(|r| now >= r + d.duration_minutes * 60) => {
            Some(Lapse::CloseAtEndOfDuration)
        }
        _ => None,
    }
}

/// Why someone may not approve (or deny) a request. Each maps to a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligible {
    OwnRequest,
    NotACustodian,
    Disabled,
    CoolingOff,
    NotInApproverSet,
    AlreadyDecided,
    NotPending,
}

impl Ineligible {
    pub fn code(self) -> &'static str {
        match self {
            Self::OwnRequest => "self_approval",
            Self::NotACustodian => "not_a_custodian",
            Self::Disabled => "custodian_disabled",
            Self::CoolingOff => "cooling_off",
            Self::NotInApproverSet => "not_an_approver",
            Self::AlreadyDecided => "already_decided",
            Self::NotPending => "not_pending",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::OwnRequest => "You cannot approve or deny your own request: another custodian must.",
            Self::NotACustodian => "Only custodians approve requests; your roles do not include custodian.",
            Self::Disabled => "Your account is disabled.",
            Self::CoolingOff => {
                "You were enrolled recently and are still in the cooling-off period; you cannot approve yet."
            }
            Self::NotInApproverSet => {
                "You are not in this account's approver set. Ask an admin to check the account policy."
            }
            Self::AlreadyDecided => "You have already approved or denied this request; one person counts once.",
            Self::NotPending => "This request is no longer waiting for approvals.",
        }
    }
}

/// The facts about one would-be approver.
#[derive(Debug, Clone, Copy)]
pub struct ApproverFacts {
    pub is_requester: bool,
    pub has_custodian_role: bool,
    pub active: bool,
    pub approve_after: i64,
    pub in_approver_set: bool,
    pub already_decided: bool,
}

/// Invariant 1: who may decide on a pending request.
pub fn check_approver(state: CheckoutState, f: ApproverFacts, now: i64) -> Result<(), Ineligible> {
    if state != CheckoutState::Pending {
        return Err(Ineligible::NotPending);
    }
    if f.is_requester {
        return Err(Ineligible::OwnRequest);
    }
    if !f.active {
        return Err(Ineligible::Disabled);
    }
    if !f.has_custodian_role {
        return Err(Ineligible::NotACustodian);
    }
    if f.approve_after > now {
        return Err(Ineligible::CoolingOff);
    }
    if !f.in_approver_set {
        return Err(Ineligible::NotInApproverSet);
    }
    if f.already_decided {
        return Err(Ineligible::AlreadyDecided);
    }
    Ok(())
}

/// The state after a decision, given the distinct approvals counted so far (this one
/// included).
pub fn after_decision(
    decision: Decision,
    distinct_approvals: u32,
    approvals_required: u32,
    veto: bool,
) -> CheckoutState {
    match decision {
        Decision::Deny if veto => CheckoutState::Denied,
        Decision::Approve if distinct_approvals >= approvals_required => CheckoutState::Approved,
        _ => CheckoutState::Pending,
    }
}

pub const REASON_MAX_CHARS: usize = 500;
pub const TICKET_MAX_CHARS: usize = 100;
pub const NOTE_MAX_CHARS: usize = 2000;

pub fn validate_duration(requested: Option<u32>, max: u32) -> Result<u32, ValidationError> {
    let d = requested.unwrap_or(max.min(60));
    if d == 0 || d > max {
        return Err(ValidationError::new(
            "invalid_duration",
            format!("duration_minutes must be from 1 to {max} (this account's max_checkout_minutes)."),
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Checkout {
        Checkout {
            id: "c".into(),
            account_id: "123456789012".into(),
            requester_id: "bo".into(),
            kind: "emergency".into(),
            reason: "r".into(),
            ticket: None,
            duration_minutes: 30,
            state: CheckoutState::Pending,
            approvals_required: 1,
            veto: true,
            reveal_window_minutes: 15,
            created_at: 0,
            expires_at: 86_400,
            approved_at: None,
            released_at: None,
            window_ends_at: None,
            ended_at: None,
            ended_by: None,
            end_note: None,
            task: None,
        }
    }

    #[test]
    fn the_happy_path_sets_each_deadline_on_its_transition() {
        let mut c = pending();
        c.approve(100, 3_700).unwrap();
        assert_eq!((c.state, c.approved_at, c.expires_at), (CheckoutState::Approved, Some(100), 3_700));
        c.release(200).unwrap();
        assert_eq!((c.state, c.released_at, c.window_ends_at), (CheckoutState::Released, Some(200), Some(200 + 900)));
        c.close(300, "custodian:bo".into(), "done".into()).unwrap();
        assert_eq!(c.state, CheckoutState::Closed);
        assert_eq!(
            (c.ended_at, c.ended_by.as_deref(), c.end_note.as_deref()),
            (Some(300), Some("custodian:bo"), Some("done"))
        );
    }

    #[test]
    fn every_transition_refuses_to_start_from_the_wrong_state() {
        let illegal = |from: CheckoutState, to: CheckoutState| IllegalTransition { from, to };
        let mut c = pending();
        assert_eq!(
            c.release(1),
            Err(illegal(CheckoutState::Pending, CheckoutState::Released)),
            "no release before quorum"
        );
        assert_eq!(c.close(1, "x".into(), "n".into()), Err(illegal(CheckoutState::Pending, CheckoutState::Closed)));
        c.deny(1, "custodian:cy".into()).unwrap();
        for (result, to) in [
            (c.clone().approve(2, 3), CheckoutState::Approved),
            (c.clone().deny(2, "x".into()), CheckoutState::Denied),
            (c.clone().cancel(2, "x".into()), CheckoutState::Cancelled),
            (c.clone().expire(2, "x".into()), CheckoutState::Expired),
            (c.clone().release(2), CheckoutState::Released),
        ] {
            assert_eq!(result, Err(illegal(CheckoutState::Denied, to)), "an ended checkout stays ended");
        }
        let mut approved = pending();
        approved.approve(1, 2).unwrap();
        assert!(approved.clone().deny(2, "x".into()).is_err(), "decisions only while pending");
        assert!(approved.clone().cancel(2, "custodian:bo".into()).is_ok());
        assert!(approved.expire(2, "system".into()).is_ok());
        let mut released = pending();
        released.approve(1, 2).unwrap();
        released.release(2).unwrap();
        assert!(released.clone().cancel(3, "x".into()).is_err(), "a release is checked in, not cancelled");
        assert!(released.release(3).is_err(), "the window starts once");
    }

    fn ok_facts() -> ApproverFacts {
        ApproverFacts {
            is_requester: false,
            has_custodian_role: true,
            active: true,
            approve_after: 0,
            in_approver_set: true,
            already_decided: false,
        }
    }

    #[test]
    fn each_rule_refuses_with_its_own_reason() {
        let now = 1000;
        assert_eq!(check_approver(CheckoutState::Pending, ok_facts(), now), Ok(()));
        let cases = [
            (ApproverFacts { is_requester: true, ..ok_facts() }, Ineligible::OwnRequest),
            (ApproverFacts { active: false, ..ok_facts() }, Ineligible::Disabled),
            (ApproverFacts { has_custodian_role: false, ..ok_facts() }, Ineligible::NotACustodian),
            (ApproverFacts { approve_after: now + 1, ..ok_facts() }, Ineligible::CoolingOff),
            (ApproverFacts { in_approver_set: false, ..ok_facts() }, Ineligible::NotInApproverSet),
            (ApproverFacts { already_decided: true, ..ok_facts() }, Ineligible::AlreadyDecided),
        ];
        for (facts, why) in cases {
            assert_eq!(check_approver(CheckoutState::Pending, facts, now), Err(why));
        }
        assert_eq!(check_approver(CheckoutState::Approved, ok_facts(), now), Err(Ineligible::NotPending));
        // Cooling-off ends exactly at approve_after.
        assert_eq!(
            check_approver(CheckoutState::Pending, ApproverFacts { approve_after: now, ..ok_facts() }, now),
            Ok(())
        );
    }

    #[test]
    fn quorum_and_veto() {
        assert_eq!(after_decision(Decision::Approve, 1, 1, true), CheckoutState::Approved);
        assert_eq!(after_decision(Decision::Approve, 1, 2, true), CheckoutState::Pending);
        assert_eq!(after_decision(Decision::Approve, 2, 2, true), CheckoutState::Approved);
        assert_eq!(after_decision(Decision::Deny, 0, 1, true), CheckoutState::Denied);
        assert_eq!(after_decision(Decision::Deny, 0, 1, false), CheckoutState::Pending);
    }

    #[test]
    fn deadlines_lapse_exactly_on_time() {
        let d = Deadlines { state: CheckoutState::Pending, expires_at: 100, released_at: None, duration_minutes: 60 };
        assert_eq!(lapse(d, 99), None);
        assert_eq!(lapse(d, 100), Some(Lapse::Expire));
        let r =
            Deadlines { state: CheckoutState::Released, expires_at: 0, released_at: Some(1000), duration_minutes: 1 };
        assert_eq!(lapse(r, 1059), None);
        assert_eq!(lapse(r, 1060), Some(Lapse::CloseAtEndOfDuration));
        let closed = Deadlines { state: CheckoutState::Closed, ..r };
        assert_eq!(lapse(closed, 99_999), None);
    }

    #[test]
    fn duration_is_capped_by_policy() {
        assert_eq!(validate_duration(None, 240).unwrap(), 60);
        assert_eq!(validate_duration(None, 30).unwrap(), 30);
        assert!(validate_duration(Some(0), 240).is_err());
        assert!(validate_duration(Some(241), 240).is_err());
        assert_eq!(validate_duration(Some(240), 240).unwrap(), 240);
    }
}

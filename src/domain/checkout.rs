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
}

impl CheckoutKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Emergency => "emergency",
            Self::Drill => "drill",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "emergency" => Some(Self::Emergency),
            "drill" => Some(Self::Drill),
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

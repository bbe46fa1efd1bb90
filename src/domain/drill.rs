//! Monthly drills: when they fall due (cron, UTC), catching up once after downtime,
//! and what makes one pass. Pure: callers pass the time.
use std::{collections::BTreeMap, str::FromStr};

use chrono::{DateTime, Utc};
use croner::Cron;
use serde::{Deserialize, Serialize};

use super::ValidationError;

/// A validated 5-field cron schedule (minute hour day-of-month month day-of-week, UTC).
#[derive(Debug, Clone)]
pub struct Schedule(Cron);

impl Schedule {
    pub fn parse(expr: &str) -> Result<Self, ValidationError> {
        let bad = |why: String| {
            ValidationError::new(
                "invalid_schedule",
                format!(
                    "drill_schedule {expr:?} is not a valid 5-field cron expression (minute hour day month weekday, UTC), e.g. \"0 9 1 * *\" for 09:00 on the 1st: {why}"
                ),
            )
        };
        if expr.split_whitespace().count() != 5 {
            return Err(bad("it needs exactly 5 fields".into()));
        }
        let cron = Cron::from_str(expr).map_err(|e| bad(e.to_string()))?;
        // A schedule that never fires (e.g. 31 February) is useless.
        let probe = DateTime::<Utc>::from_timestamp(0, 0).ok_or_else(|| bad("clock".into()))?;
        let mut prev = cron.find_next_occurrence(&probe, false).map_err(|e| bad(format!("it never fires ({e})")))?;
        // A drill is a real checkout with two people: more often than daily is a
        // mistake (e.g. "* 9 1 * *" fires every minute of 09:00). Every day that fires
        // shows all its times within its first occurrences, so a short walk suffices.
        for _ in 0..64 {
            let Ok(next) = cron.find_next_occurrence(&prev, false) else { break };
            if (next - prev).num_seconds() < 24 * 3600 {
                return Err(bad(format!(
                    "it fires more often than once a day ({} and {}); drills are monthly, weekly at most daily",
                    prev.format("%H:%M"),
                    next.format("%H:%M")
                )));
            }
            prev = next;
        }
        Ok(Self(cron))
    }

    /// The first occurrence strictly after `unix`.
    pub fn next_after(&self, unix: i64) -> Option<i64> {
        let t = DateTime::<Utc>::from_timestamp(unix, 0)?;
        self.0.find_next_occurrence(&t, false).ok().map(|d| d.timestamp())
    }

    /// The last occurrence at or before `unix`.
    pub fn latest_at_or_before(&self, unix: i64) -> Option<i64> {
        let t = DateTime::<Utc>::from_timestamp(unix, 0)?;
        self.0.find_previous_occurrence(&t, true).ok().map(|d| d.timestamp())
    }
}

/// Where a drill stands. `due` → `overdue` (grace over) → `passed`/`failed` by its
/// checklist, or `missed` when the next period opens first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillState {
    Due,
    Overdue,
    Passed,
    Failed,
    Missed,
}

impl DrillState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Due => "due",
            Self::Overdue => "overdue",
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Missed => "missed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Due, Self::Overdue, Self::Passed, Self::Failed, Self::Missed].into_iter().find(|d| d.as_str() == s)
    }

    /// Still waiting for its checklist.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Due | Self::Overdue)
    }
}

/// What a scheduler tick should do for one account whose next drill was due at
/// `next_due`: nothing yet, or open the drill of the latest period that has begun
/// (missed periods after downtime are caught up once, not once each) and move on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    NotYet,
    Open { due_at: i64, next_due: i64 },
}

pub fn tick(schedule: &Schedule, next_due: i64, now: i64) -> Tick {
    if next_due > now {
        return Tick::NotYet;
    }
    let due_at = schedule.latest_at_or_before(now).unwrap_or(next_due).max(next_due);
    let next_due = schedule.next_after(now).unwrap_or(i64::MAX);
    Tick::Open { due_at, next_due }
}

/// The checklist a drill records after the release, each item pass or fail.
pub const CHECKLIST: [(&str, &str); 7] = [
    ("root_password_accepted", "The root password was accepted by AWS"),
    ("mfa_accepted", "The MFA code was accepted by AWS"),
    ("root_email_reaches_team", "The root e-mail address reaches a team distribution list"),
    ("alternate_contacts_correct", "Alternate contacts (billing, operations, security) are correct"),
    ("no_root_access_keys", "The root user has no access keys"),
    ("billing_alert_in_place", "A billing or budget alert is in place"),
    ("phone_number_current", "The account's phone number is current"),
];

/// The checklist of an account without a stored root password (`centralized_root`):
/// the drill is a read-only `IAMAuditRootUserCredentials` session, which proves the
/// quorum and the service can still open root tasks, and shows that the root user
/// still has no credentials.
pub const CENTRALIZED_CHECKLIST: [(&str, &str); 6] = [
    ("root_session_opened", "AWS opened the read-only root-task session (sts:AssumeRoot) for this account"),
    (
        "root_credentials_absent",
        "The audit session shows no root password, access keys, signing certificates or MFA devices",
    ),
    ("root_email_reaches_team", "The root e-mail address reaches a team distribution list"),
    ("alternate_contacts_correct", "Alternate contacts (billing, operations, security) are correct"),
    ("billing_alert_in_place", "A billing or budget alert is in place"),
    ("phone_number_current", "The account's phone number is current"),
];

/// The checklist a drill of this kind of account records.
pub fn checklist_for(account_type: super::root_task::AccountType) -> &'static [(&'static str, &'static str)] {
    match account_type {
        super::root_task::AccountType::StoredRoot => &CHECKLIST,
        super::root_task::AccountType::CentralizedRoot => &CENTRALIZED_CHECKLIST,
    }
}

/// Every item of every checklist, in a stable order (one CSV column each).
pub fn all_items() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = CHECKLIST.iter().map(|(k, _)| *k).collect();
    for (k, _) in CENTRALIZED_CHECKLIST {
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemResult {
    Pass,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemOutcome {
    pub result: ItemResult,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub passed: bool,
    pub failed_items: Vec<String>,
    /// Why it did not pass, in words.
    pub reasons: Vec<String>,
}

/// Every item is required and must be answered; at least two distinct people must
/// have taken part (requester and approvers).
pub fn evaluate(
    items: &BTreeMap<String, ItemOutcome>,
    participants: usize,
    checklist: &[(&str, &str)],
) -> Result<Verdict, ValidationError> {
    for key in items.keys() {
        if !checklist.iter().any(|(k, _)| k == key) {
            return Err(ValidationError::new(
                "invalid_checklist",
                format!(
                    "{key:?} is not a checklist item; the items are {}.",
                    checklist.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    let missing: Vec<&str> = checklist.iter().map(|(k, _)| *k).filter(|k| !items.contains_key(*k)).collect();
    if !missing.is_empty() {
        return Err(ValidationError::new(
            "invalid_checklist",
            format!("Answer every checklist item; missing: {}.", missing.join(", ")),
        ));
    }
    let failed_items: Vec<String> =
        checklist.iter().filter(|(k, _)| items[*k].result == ItemResult::Fail).map(|(k, _)| (*k).to_owned()).collect();
    let mut reasons = Vec::new();
    if !failed_items.is_empty() {
        reasons.push(format!("failed: {}", failed_items.join(", ")));
    }
    if participants < 2 {
        reasons.push("fewer than two people took part".into());
    }
    Ok(Verdict { passed: reasons.is_empty(), failed_items, reasons })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn monthly_schedule_and_catch_up_once() {
        let s = Schedule::parse("0 9 1 * *").unwrap();
        assert_eq!(s.next_after(at("2026-11-21T09:00:00Z")), Some(at("2026-12-01T09:00:00Z")));
        assert_eq!(s.next_after(at("2026-12-01T09:00:00Z")), Some(at("2027-01-01T09:00:00Z")), "strictly after");
        assert_eq!(tick(&s, at("2026-12-01T09:00:00Z"), at("2026-12-01T08:59:59Z")), Tick::NotYet);
        assert_eq!(
            tick(&s, at("2026-12-01T09:00:00Z"), at("2026-12-01T09:00:00Z")),
            Tick::Open { due_at: at("2026-12-01T09:00:00Z"), next_due: at("2027-01-01T09:00:00Z") }
        );
        // Down from November to mid-March: one drill, for March.
        assert_eq!(
            tick(&s, at("2026-12-01T09:00:00Z"), at("2027-03-15T12:00:00Z")),
            Tick::Open { due_at: at("2027-03-01T09:00:00Z"), next_due: at("2027-04-01T09:00:00Z") }
        );
    }

    #[test]
    fn bad_schedules_are_refused_with_an_example() {
        for bad in ["monthly", "0 9 1 *", "0 9 1 * * *", "61 9 1 * *", "0 9 31 2 *", "a b c d e"] {
            let e = Schedule::parse(bad).unwrap_err();
            assert_eq!(e.code, "invalid_schedule", "{bad}");
            assert!(e.message.contains("0 9 1 * *"), "{}", e.message);
        }
        assert!(Schedule::parse("30 8 * * 1").is_ok(), "weekly works too");
        assert!(Schedule::parse("0 9 * * *").is_ok(), "daily is the most often allowed");
        for too_often in ["* 9 1 * *", "0 9,21 * * *", "0 */6 * * 1", "*/5 * * * *", "0,30 9 1 * *"] {
            let e = Schedule::parse(too_often).unwrap_err();
            assert!(e.message.contains("more often than once a day"), "{too_often}: {}", e.message);
        }
    }

    fn all(result: ItemResult) -> BTreeMap<String, ItemOutcome> {
        CHECKLIST.iter().map(|(k, _)| ((*k).to_owned(), ItemOutcome { result, note: None })).collect()
    }

    #[test]
    fn a_drill_passes_only_with_every_item_and_two_people() {
        assert!(evaluate(&all(ItemResult::Pass), 2, &CHECKLIST).unwrap().passed);
        let one = evaluate(&all(ItemResult::Pass), 1, &CHECKLIST).unwrap();
        assert!(!one.passed && one.reasons[0].contains("two people"));
        let mut items = all(ItemResult::Pass);
        items.get_mut("mfa_accepted").unwrap().result = ItemResult::Fail;
        let v = evaluate(&items, 3, &CHECKLIST).unwrap();
        assert_eq!((v.passed, v.failed_items.clone()), (false, vec!["mfa_accepted".to_owned()]));
        items.remove("phone_number_current");
        assert!(evaluate(&items, 3, &CHECKLIST).is_err(), "every item must be answered");
        items.insert("vibes".into(), ItemOutcome { result: ItemResult::Pass, note: None });
        assert!(evaluate(&items, 3, &CHECKLIST).is_err());
    }

    #[test]
    fn an_account_without_a_root_password_has_its_own_checklist() {
        use super::super::root_task::AccountType;
        let central = checklist_for(AccountType::CentralizedRoot);
        let items: BTreeMap<String, ItemOutcome> = central
            .iter()
            .map(|(k, _)| ((*k).to_owned(), ItemOutcome { result: ItemResult::Pass, note: None }))
            .collect();
        assert!(evaluate(&items, 2, central).unwrap().passed);
        // The password items do not apply, and the stored-root checklist needs them.
        let e = evaluate(&items, 2, checklist_for(AccountType::StoredRoot)).unwrap_err();
        assert!(e.message.contains("is not a checklist item"), "{}", e.message);
        assert!(evaluate(&all(ItemResult::Pass), 2, central).is_err(), "root_password_accepted is not an item here");
        let cols = all_items();
        assert_eq!(cols.len(), 9);
        assert_eq!(&cols[..7], CHECKLIST.map(|(k, _)| k).as_slice(), "old columns keep their place");
    }
}

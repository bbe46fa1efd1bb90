//! Validated value types. Constructing one is the validation.
use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::ValidationError;

/// A 12-digit AWS account id (leading zeros are significant).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct AwsAccountId(String);

impl AwsAccountId {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let s = s.trim();
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::new(
                "invalid_account_id",
                format!("{s:?} is not an AWS account id: it must be exactly 12 digits, e.g. \"123456789012\"."),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AwsAccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An e-mail address, lower-cased. Deliberately simple: one `@`, a dotted domain, no spaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(field: &'static str, s: &str) -> Result<Self, ValidationError> {
        let s = s.trim();
        let bad = || {
            ValidationError::new(
                "invalid_email",
                format!("{field}: {s:?} is not an e-mail address like \"name@example.com\"."),
            )
        };
        if s.is_empty() || s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = s.rsplit_once('@').ok_or_else(bad)?;
        if local.is_empty()
            || local.contains('@')
            || domain.len() < 3
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
        {
            return Err(bad());
        }
        Ok(Self(s.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text shown to people (a name, an alias, a label): trimmed, bounded, no control
/// characters.
pub fn display_text(field: &'static str, s: &str, max_chars: usize) -> Result<String, ValidationError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(ValidationError::new("invalid_text", format!("{field} must not be empty.")));
    }
    if t.chars().count() > max_chars {
        return Err(ValidationError::new("invalid_text", format!("{field} is longer than {max_chars} characters.")));
    }
    if t.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "invalid_text",
            format!("{field} must not contain control characters (newlines, tabs…)."),
        ));
    }
    if let Some(c) = t.chars().find(|c| is_bidi_control(*c) || is_invisible(*c)) {
        return Err(ValidationError::new(
            "invalid_text",
            format!(
                "{field} must not contain invisible or text-direction characters (found U+{:04X}): they can make one text look like another.",
                u32::from(c)
            ),
        ));
    }
    Ok(t.to_owned())
}

/// Characters that reorder text when displayed (Trojan Source, CVE-2021-42574).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that render as nothing (or as blank) and so hide differences between two
/// texts. The zero-width joiner and non-joiner (U+200C, U+200D) are allowed: some
/// scripts and emoji need them.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'
            | '\u{2060}'..='\u{2064}'
            | '\u{206A}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Custodian,
    Auditor,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Custodian, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Custodian => "custodian",
            Role::Auditor => "auditor",
        }
    }
}

impl FromStr for Role {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            ValidationError::new("invalid_role", format!("{s:?} is not a role: use admin, custodian or auditor."))
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of roles, stored as a sorted comma-separated list.
pub fn roles_to_string(roles: &[Role]) -> String {
    let mut r = roles.to_vec();
    r.sort();
    r.dedup();
    r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
}

pub fn roles_from_string(s: &str) -> Result<Vec<Role>, ValidationError> {
    s.split(',').filter(|p| !p.is_empty()).map(Role::from_str).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    RootPassword,
    TotpSeed,
    RecoveryNotes,
}

impl SecretKind {
    pub const ALL: [SecretKind; 3] = [SecretKind::RootPassword, SecretKind::TotpSeed, SecretKind::RecoveryNotes];

    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::RootPassword => "root_password",
            SecretKind::TotpSeed => "totp_seed",
            SecretKind::RecoveryNotes => "recovery_notes",
        }
    }
}

impl FromStr for SecretKind {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SecretKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            ValidationError::new(
                "invalid_secret_kind",
                format!("{s:?} is not a secret kind: use root_password, totp_seed or recovery_notes."),
            )
        })
    }
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountState {
    Available,
    CheckedOut,
    RotationDue,
}

impl AccountState {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Available => "available",
            AccountState::CheckedOut => "checked_out",
            AccountState::RotationDue => "rotation_due",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "available" => Some(Self::Available),
            "checked_out" => Some(Self::CheckedOut),
            "rotation_due" => Some(Self::RotationDue),
            _ => None,
        }
    }
}

/// How an account's key is kept: wrapped to the vault key (policy mode: approvals are
/// a rule the server enforces) or split among its holders (quorum mode: the approvals
/// are the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Custody {
    Policy,
    Quorum,
}

impl Custody {
    pub fn as_str(self) -> &'static str {
        match self {
            Custody::Policy => "policy",
            Custody::Quorum => "quorum",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Policy, Self::Quorum].into_iter().find(|c| c.as_str() == s)
    }
}

/// An account's release policy. Enforced by the checkout use cases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub approvals_required: u32,
    pub reveal_window_minutes: u32,
    pub max_checkout_minutes: u32,
    /// Whether a single denial ends a request.
    pub veto: bool,
    pub drill_schedule: String,
}

impl Policy {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !(1..=20).contains(&self.approvals_required) {
            return Err(ValidationError::new(
                "invalid_policy",
                "approvals_required must be from 1 to 20: at least one person other than the requester must approve.",
            ));
        }
        if !(1..=24 * 60).contains(&self.reveal_window_minutes) {
            return Err(ValidationError::new("invalid_policy", "reveal_window_minutes must be from 1 to 1440."));
        }
        if !(5..=7 * 24 * 60).contains(&self.max_checkout_minutes) {
            return Err(ValidationError::new("invalid_policy", "max_checkout_minutes must be from 5 to 10080."));
        }
        super::drill::Schedule::parse(&self.drill_schedule)
            .map_err(|e| ValidationError::new("invalid_policy", e.message))?;
        Ok(())
    }

    /// Whether a request could ever be approved with this policy and this approver
    /// pool. `listed`: `pool` listed custodians, any of whom may approve a request made
    /// by someone else. `all`: `pool` active custodians, one of whom is the requester.
    pub fn check_reachable(&self, listed: bool, pool: u32) -> Result<(), ValidationError> {
        let others = if listed { pool } else { pool.saturating_sub(1) };
        if others < self.approvals_required {
            let who = if listed {
                format!("the approver list has {pool} active custodian(s)")
            } else {
                format!(
                    "the approver set is every custodian and {pool} are enrolled, so a requester has {others} other(s) to ask"
                )
            };
            return Err(ValidationError::new(
                "invalid_policy",
                format!(
                    "{} approvals are required but {who}: no request could ever be approved. Enrol or list more custodians, or lower approvals_required.",
                    self.approvals_required
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_exactly_twelve_digits() {
        assert_eq!(AwsAccountId::parse("012345678901").unwrap().as_str(), "012345678901");
        assert_eq!(AwsAccountId::parse(" 123456789012 ").unwrap().as_str(), "123456789012");
        for bad in ["", "12345678901", "1234567890123", "12345678901a", "１２３４５６７８９０１２", "1234-5678-9012"]
        {
            let e = AwsAccountId::parse(bad).unwrap_err();
            assert_eq!(e.code, "invalid_account_id", "{bad}");
        }
    }

    #[test]
    fn emails_are_checked_and_lowercased() {
        assert_eq!(Email::parse("email", "Root+Prod@Example.COM").unwrap().as_str(), "root+prod@example.com");
        for bad in ["", "no-at", "a@b", "a b@example.com", "@example.com", "a@.com", "a@example.", "a@ex..com"] {
            assert!(Email::parse("email", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_text_rejects_bidi_overrides_and_invisible_characters() {
        for bad in
            ["Ada\u{202E}nimda", "Ad\u{200B}a", "\u{2066}Ada\u{2069}", "Ada\u{FEFF}", "A\u{00AD}da", "Ada\u{200F}"]
        {
            let e = display_text("name", bad, 100).unwrap_err();
            assert_eq!(e.code, "invalid_text", "{bad:?}");
            assert!(e.message.contains("U+"), "{}", e.message);
        }
        for good in ["Ada Lovelace", "Zoë O'Brien", "علی‌رضا", "李小龍", "👩\u{200D}💻 Ops"] {
            assert!(display_text("name", good, 100).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn display_text_rejects_empty_long_and_control() {
        assert_eq!(display_text("name", "  Ada  ", 10).unwrap(), "Ada");
        assert!(display_text("name", "   ", 10).is_err());
        assert!(display_text("name", "abcdefghijk", 10).is_err());
        assert!(display_text("name", "a\nb", 10).is_err());
    }

    #[test]
    fn roles_round_trip_sorted_and_deduplicated() {
        let s = roles_to_string(&[Role::Custodian, Role::Admin, Role::Custodian]);
        assert_eq!(s, "admin,custodian");
        assert_eq!(roles_from_string(&s).unwrap(), vec![Role::Admin, Role::Custodian]);
        assert!(roles_from_string("admin,root").is_err());
    }

    #[test]
    fn a_policy_must_be_reachable_with_its_approver_pool() {
        let p = Policy {
            approvals_required: 3,
            reveal_window_minutes: 15,
            max_checkout_minutes: 240,
            veto: true,
            drill_schedule: "0 9 1 * *".into(),
        };
        assert!(p.check_reachable(true, 2).is_err(), "three approvals from two listed people");
        assert!(p.check_reachable(true, 3).is_ok());
        assert!(p.check_reachable(false, 3).is_err(), "all: the requester is one of the three");
        assert!(p.check_reachable(false, 4).is_ok());
        assert!(p.check_reachable(false, 0).is_err());
    }

    #[test]
    fn policy_requires_at_least_one_other_approver() {
        let mut p = Policy {
            approvals_required: 1,
            reveal_window_minutes: 15,
            max_checkout_minutes: 240,
            veto: true,
            drill_schedule: "0 9 1 * *".into(),
        };
        assert!(p.validate().is_ok());
        p.approvals_required = 0;
        assert_eq!(p.validate().unwrap_err().code, "invalid_policy");
        p.approvals_required = 1;
        p.drill_schedule = "monthly".into();
        assert!(p.validate().is_err());
    }
}

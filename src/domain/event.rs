//! Every audit event, typed: the action name and its details in one value.
//!
//! `app::announce::record(tx, now, actor, &subject, &Event)` is the only writer of
//! audit entries; the entry's `action` is the variant's name and its `details` the
//! variant's fields, serialized to canonical JSON (keys sorted). Whether and how
//! loudly an event is announced is an exhaustive `match` over this enum
//! (`domain::announce::announcement`): adding a variant without deciding that does
//! not compile. `Event::parse` reads an entry back (offline verification, exports).
//!
//! Compatibility: the JSON written for each variant is exactly what earlier versions
//! wrote by hand, so old logs keep their hashes and parse. Optional fields that some
//! entries never carried are skipped when absent.
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Role, SecretKind, checkout::Decision};

/// What an entry is about: its `subject` column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Vault,
    Account(String),
    Custodian(String),
    Invite(String),
}

impl Subject {
    pub fn as_audit(&self) -> String {
        match self {
            Subject::Vault => "vault".into(),
            Subject::Account(id) => format!("account:{id}"),
            Subject::Custodian(id) => format!("custodian:{id}"),
            Subject::Invite(id) => format!("invite:{id}"),
        }
    }

    pub fn parse(s: &str) -> Option<Subject> {
        if s == "vault" {
            return Some(Subject::Vault);
        }
        let (kind, id) = s.split_once(':')?;
        Some(match kind {
            "account" => Subject::Account(id.to_owned()),
            "custodian" => Subject::Custodian(id.to_owned()),
            "invite" => Subject::Invite(id.to_owned()),
            _ => return None,
        })
    }

    pub fn account_id(&self) -> Option<&str> {
        match self {
            Subject::Account(id) => Some(id),
            _ => None,
        }
    }

    pub fn custodian_id(&self) -> Option<&str> {
        match self {
            Subject::Custodian(id) => Some(id),
            _ => None,
        }
    }
}

/// One audit event. The serde names are the documented action names
/// (docs/audit-log.md, "Actions").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", content = "details")]
// Built once per audit write and dropped: boxing the large variants buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    // --- vault and log key ---------------------------------------------------
    #[serde(rename = "vault.initialized")]
    VaultInitialized { seal: String, dev_mode: bool, kdf: Value, recipient: String },
    #[serde(rename = "log_key.created")]
    LogKeyCreated { key_name: String, verifier_key: String },

    // --- operations: backups and restores -----------------------------------------
    /// A database was put in place by `breakglass restore`: what it was checked
    /// against, and — when the operator accepted it — how many published entries it lacks.
    #[serde(rename = "database.restored")]
    DatabaseRestored {
        /// The file restored from (its name, not its directory).
        source: String,
        /// Audit entries in the restored log before this one, and the head hash.
        entries: u64,
        head: String,
        /// Each outside checkpoint compared: `{source, size, head, verdict}` with verdict
        /// `contained` (the log has it) or `lost` (the log is older).
        checkpoints: Vec<Value>,
        /// Entries already covered by a published checkpoint that the restored log
        /// lacks; present only when the operator ran with `--accept-loss`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lost_entries: Option<u64>,
        /// No outside checkpoint was available (`--no-checkpoint`).
        unchecked: bool,
    },
    /// A scheduled backup failed (at most one entry an hour while it keeps failing).
    #[serde(rename = "backup.failed")]
    BackupFailed { dir: String, error: String },
    /// `breakglass recovery-kit` printed the deployment's recovery kit (public data only).
    /// `page_sha256` is the SHA-256 of the page written; the four digests cover what it
    /// lists (deployment, keys, accounts, custodians), so the dashboard can say which
    /// changed since: the kit is then stale.
    #[serde(rename = "recovery_kit.generated")]
    RecoveryKitGenerated {
        page_sha256: String,
        accounts: u64,
        custodians: u64,
        deployment_digest: String,
        keys_digest: String,
        accounts_digest: String,
        custodians_digest: String,
    },

    // --- accounts and secrets --------------------------------------------------
    #[serde(rename = "account.created")]
    AccountCreated {
        alias: String,
        root_email: String,
        policy: Value,
        recipient: String,
        /// `stored_root` or `centralized_root` (absent in entries written before
        /// accounts had a type: those are `stored_root`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account_type: Option<String>,
    },
    #[serde(rename = "account.policy_changed")]
    AccountPolicyChanged { policy: Value, approvers: Value },
    #[serde(rename = "secret.deposited")]
    SecretDeposited {
        kind: SecretKind,
        version: u64,
        rotation_completed: bool,
        /// The checkout whose rotation this deposit completes, when made through it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkout: Option<String>,
    },

    // --- people ------------------------------------------------------------------
    #[serde(rename = "invite.created")]
    InviteCreated { roles: Vec<Role>, expires_at: Value },
    #[serde(rename = "invite.revoked")]
    InviteRevoked {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        roles: Option<Vec<Role>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    #[serde(rename = "custodian.enrolled")]
    CustodianEnrolled {
        name: String,
        email: String,
        roles: Vec<Role>,
        invite: Value,
        invited_by: Value,
        credential_id: String,
        public_key: Value,
        label: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cooling_off_until: Option<String>,
        /// Other active custodians with the same display name (announced `high`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        same_name_as: Option<Vec<String>>,
    },
    #[serde(rename = "custodian.disabled")]
    CustodianDisabled { email: String, reason: Value, sessions_ended: bool },
    #[serde(rename = "custodian.login")]
    CustodianLogin { credential_id: String },
    /// Failed sign-ins of one person, counted and written at most once a minute:
    /// `failures`, `reasons` (reason → count), `first_at`, `last_at`. Entries written
    /// before failures were aggregated carry one `reason` instead.
    #[serde(rename = "custodian.login_failed")]
    CustodianLoginFailed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failures: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reasons: Option<std::collections::BTreeMap<String, u64>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first_at: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_at: Option<String>,
    },
    #[serde(rename = "custodian.logout")]
    CustodianLogout {},
    #[serde(rename = "credential.added")]
    CredentialAdded { credential_id: String, label: Value, public_key: Value },
    #[serde(rename = "credential.renamed")]
    CredentialRenamed { credential_id: String, label: Value },
    /// A credential's answer to PRF, after a fresh assertion with it: its share
    /// recipient (`ready`), or none (`unsupported`).
    #[serde(rename = "credential.share_recipient")]
    CredentialShareRecipient { credential_id: String, status: String, recipient: Option<String> },

    // --- quorum mode -------------------------------------------------------------
    /// The account's key is now split among `holders` (k of them open it); the
    /// vault-wrapped key is gone. `from` is `policy` (conversion) or `reshare`.
    #[serde(rename = "account.quorum_enabled")]
    AccountQuorumEnabled {
        key_version: u64,
        k: u32,
        holders: Vec<ShareDealt>,
        recipient: String,
        secret_versions_reencrypted: u64,
    },
    /// A reshare checkout dealt a fresh key to the current holders; `evidence` is the
    /// requester's release assertion (checked like a reveal's).
    #[serde(rename = "account.reshared")]
    AccountReshared {
        checkout: String,
        key_version: u64,
        k: u32,
        holders: Vec<ShareDealt>,
        recipient: String,
        secret_versions_reencrypted: u64,
        evidence: Value,
    },
    /// The holders of the account's shares no longer match its policy.
    #[serde(rename = "account.reshare_due")]
    AccountReshareDue { reason: String, key_version: u64 },
    /// Fewer live holders than the account needs to open (`live` < `k`).
    #[serde(rename = "account.bus_factor")]
    AccountBusFactor { live: u32, k: u32, reason: String },
    /// A holder handed over their share for a checkout (re-encrypted by their
    /// browser to the checkout's transit key). `sha256` is of that ciphertext.
    #[serde(rename = "checkout.share_handed_over")]
    ShareHandedOver { checkout: String, key_version: u64, share_index: u8, sha256: String },
    /// A quorum release failed on the shares; nothing was revealed.
    #[serde(rename = "checkout.quorum_failed")]
    QuorumFailed {
        checkout: String,
        code: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        person: Option<String>,
        message: String,
    },

    // --- checkouts ---------------------------------------------------------------
    #[serde(rename = "checkout.requested")]
    CheckoutRequested {
        checkout: String,
        kind: String,
        reason: String,
        ticket: Option<String>,
        duration_minutes: i64,
        approvals_required: u32,
        /// Whether one denial ends the request, as it was when the request was made
        /// (absent in entries written before the rules were recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        veto: Option<bool>,
        /// Who may approve: `"all"` or a list of custodian ids (absent in old entries).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approvers: Option<Value>,
        /// A `centralized_root` account's checkout: the root-task policy asked for
        /// and the session length in seconds (absent for stored credentials).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_policy: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_duration_seconds: Option<u32>,
    },
    #[serde(rename = "approval.challenge_issued")]
    ApprovalChallengeIssued { checkout: String, ceremony: String, challenge: String, rp_id: String, origin: String },
    #[serde(rename = "checkout.approval_recorded")]
    ApprovalRecorded { checkout: String, decision: Decision, comment: Option<String>, evidence: Value },
    #[serde(rename = "checkout.denial_recorded")]
    DenialRecorded { checkout: String, decision: Decision, comment: Option<String>, evidence: Value },
    #[serde(rename = "checkout.approved")]
    CheckoutApproved { checkout: String, approvals: u32 },
    #[serde(rename = "checkout.denied")]
    CheckoutDenied { checkout: String },
    #[serde(rename = "checkout.cancelled")]
    CheckoutCancelled { checkout: String },
    #[serde(rename = "checkout.expired")]
    CheckoutExpired { checkout: String, was: String },
    #[serde(rename = "release.challenge_issued")]
    ReleaseChallengeIssued { checkout: String, ceremony: String, challenge: String, rp_id: String, origin: String },
    #[serde(rename = "checkout.released")]
    CheckoutReleased {
        checkout: String,
        window_ends_at: String,
        rotation_required: bool,
        /// A root-task checkout: the task policy of the sessions it may open.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_policy: Option<String>,
    },
    /// The requester confirmed a root-task release with their key: breakglass is about
    /// to call `sts:AssumeRoot` (written before the call, so a crash cannot hide it).
    #[serde(rename = "checkout.root_task_authorized")]
    RootTaskAuthorized {
        checkout: String,
        task_policy: String,
        task_policy_arn: String,
        duration_seconds: u32,
        evidence: Value,
    },
    /// AWS opened the session; its credentials went to the requester, not to storage.
    #[serde(rename = "checkout.root_task_issued")]
    RootTaskIssued {
        checkout: String,
        task_policy: String,
        /// The session's access key id (not secret): CloudTrail names it on every call.
        access_key_id: String,
        expiration: String,
        aws_request_id: Option<String>,
    },
    /// No session reached breakglass: AWS refused (`code` is its error code: no session
    /// exists), or the outcome is unknown (`outcome_unknown`: timeout or lost answer — AWS
    /// may have opened one; CloudTrail says).
    #[serde(rename = "checkout.root_task_failed")]
    RootTaskFailed { checkout: String, task_policy: String, code: String, message: String },
    #[serde(rename = "checkout.revealed")]
    CheckoutRevealed {
        checkout: String,
        release: String,
        password_version: u64,
        totp_seed_version: u64,
        evidence: Value,
    },
    #[serde(rename = "checkout.closed")]
    CheckoutClosed {
        checkout: String,
        note: Option<String>,
        checked_in: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account_state: Option<String>,
    },

    // --- drills ----------------------------------------------------------------
    #[serde(rename = "drill.due")]
    DrillDue { drill: String, period: String, grace_ends_at: String, expected: Vec<String> },
    #[serde(rename = "drill.overdue")]
    DrillOverdue { drill: String, period: String, overdue_since: String, repeat: bool },
    #[serde(rename = "drill.missed")]
    DrillMissed { drill: String, period: String },
    #[serde(rename = "drill.flagged")]
    DrillFlagged { drill: String, period: String, failed_items: Vec<String> },
    #[serde(rename = "drill.passed")]
    DrillPassed {
        drill: String,
        checkout: String,
        participants: Vec<String>,
        failed_items: Vec<String>,
        reasons: Vec<String>,
        /// What AWS itself reported during the drill checkout: root sign-ins from the
        /// feed, root-task sessions (absent in entries written before it was recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        aws_evidence: Option<Value>,
    },
    #[serde(rename = "drill.failed")]
    DrillFailed {
        drill: String,
        checkout: String,
        participants: Vec<String>,
        failed_items: Vec<String>,
        reasons: Vec<String>,
        /// What AWS itself reported during the drill checkout: root sign-ins from the
        /// feed, root-task sessions (absent in entries written before it was recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        aws_evidence: Option<Value>,
    },

    // --- root activity in AWS (CloudTrail via the central queue) -------------------
    /// A root event inside a released checkout of the same account.
    #[serde(rename = "root_activity.explained")]
    RootActivityExplained { root_event: RootEventDetails, checkout: String },
    /// Successful root use no checkout explains: the banner shows until acknowledged.
    #[serde(rename = "root_activity.unexplained")]
    RootActivityUnexplained { root_event: RootEventDetails, in_custody: bool },
    /// A failed root console sign-in (inside a checkout or not).
    #[serde(rename = "root_activity.sign_in_failed")]
    RootSignInFailed { root_event: RootEventDetails, checkout: Option<String> },
    /// An admin acknowledged unexplained root use, with a reason.
    #[serde(rename = "root_activity.acknowledged")]
    RootActivityAcknowledged { event_id: String, reason: String },
    /// The account's root posture, read from AWS, has other findings than before
    /// (`first`: the first reading). `new` and `resolved` are the difference.
    #[serde(rename = "account.posture_changed")]
    AccountPostureChanged { findings: Vec<String>, new: Vec<String>, resolved: Vec<String>, first: bool },
}

/// The CloudTrail facts recorded with a root event (the full record stays in the
/// `root_events` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootEventDetails {
    /// CloudTrail `eventID`.
    pub event_id: String,
    pub kind: String,
    pub event_name: String,
    /// CloudTrail `eventTime` (RFC 3339).
    pub event_time: String,
    pub source_ip: Option<String>,
    pub mfa_used: Option<String>,
    /// Seconds between `eventTime` and its arrival here.
    pub delay_seconds: i64,
}

/// One holder in a dealing: who, which x-coordinate, to how many keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareDealt {
    pub custodian: String,
    pub share_index: u8,
    pub recipients: Vec<String>,
}

/// An entry whose action or details do not match any known event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{action}: {reason}")]
pub struct UnknownEvent {
    pub action: String,
    pub reason: String,
}

impl Event {
    /// The entry's `action`.
    pub fn action(&self) -> &'static str {
        match self {
            Event::VaultInitialized { .. } => "vault.initialized",
            Event::LogKeyCreated { .. } => "log_key.created",
            Event::DatabaseRestored { .. } => "database.restored",
            Event::BackupFailed { .. } => "backup.failed",
            Event::RecoveryKitGenerated { .. } => "recovery_kit.generated",
            Event::AccountCreated { .. } => "account.created",
            Event::AccountPolicyChanged { .. } => "account.policy_changed",
            Event::SecretDeposited { .. } => "secret.deposited",
            Event::InviteCreated { .. } => "invite.created",
            Event::InviteRevoked { .. } => "invite.revoked",
            Event::CustodianEnrolled { .. } => "custodian.enrolled",
            Event::CustodianDisabled { .. } => "custodian.disabled",
            Event::CustodianLogin { .. } => "custodian.login",
            Event::CustodianLoginFailed { .. } => "custodian.login_failed",
            Event::CustodianLogout {} => "custodian.logout",
            Event::CredentialAdded { .. } => "credential.added",
            Event::CredentialRenamed { .. } => "credential.renamed",
            Event::CredentialShareRecipient { .. } => "credential.share_recipient",
            Event::AccountQuorumEnabled { .. } => "account.quorum_enabled",
            Event::AccountReshared { .. } => "account.reshared",
            Event::AccountReshareDue { .. } => "account.reshare_due",
            Event::AccountBusFactor { .. } => "account.bus_factor",
            Event::ShareHandedOver { .. } => "checkout.share_handed_over",
            Event::QuorumFailed { .. } => "checkout.quorum_failed",
            Event::CheckoutRequested { .. } => "checkout.requested",
            Event::ApprovalChallengeIssued { .. } => "approval.challenge_issued",
            Event::ApprovalRecorded { .. } => "checkout.approval_recorded",
            Event::DenialRecorded { .. } => "checkout.denial_recorded",
            Event::CheckoutApproved { .. } => "checkout.approved",
            Event::CheckoutDenied { .. } => "checkout.denied",
            Event::CheckoutCancelled { .. } => "checkout.cancelled",
            Event::CheckoutExpired { .. } => "checkout.expired",
            Event::ReleaseChallengeIssued { .. } => "release.challenge_issued",
            Event::CheckoutReleased { .. } => "checkout.released",
            Event::CheckoutRevealed { .. } => "checkout.revealed",
            Event::RootTaskAuthorized { .. } => "checkout.root_task_authorized",
            Event::RootTaskIssued { .. } => "checkout.root_task_issued",
            Event::RootTaskFailed { .. } => "checkout.root_task_failed",
            Event::CheckoutClosed { .. } => "checkout.closed",
            Event::DrillDue { .. } => "drill.due",
            Event::DrillOverdue { .. } => "drill.overdue",
            Event::DrillMissed { .. } => "drill.missed",
            Event::DrillFlagged { .. } => "drill.flagged",
            Event::DrillPassed { .. } => "drill.passed",
            Event::DrillFailed { .. } => "drill.failed",
            Event::RootActivityExplained { .. } => "root_activity.explained",
            Event::RootActivityUnexplained { .. } => "root_activity.unexplained",
            Event::RootSignInFailed { .. } => "root_activity.sign_in_failed",
            Event::RootActivityAcknowledged { .. } => "root_activity.acknowledged",
            Event::AccountPostureChanged { .. } => "account.posture_changed",
        }
    }

    /// The entry's `details`, as a JSON value (canonicalized when hashed).
    pub fn details(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut m)) => m.remove("details").unwrap_or(Value::Object(Default::default())),
            // Every variant is a struct of serializable fields: this cannot happen.
            _ => Value::Null,
        }
    }

    /// Read an entry back from its action and details.
    pub fn parse(action: &str, details: &Value) -> Result<Event, UnknownEvent> {
        serde_json::from_value(serde_json::json!({"action": action, "details": details}))
            .map_err(|e| UnknownEvent { action: action.to_owned(), reason: e.to_string() })
    }

    /// The checkout an event belongs to, if any.
    pub fn checkout_id(&self) -> Option<&str> {
        match self {
            Event::CheckoutRequested { checkout, .. }
            | Event::ApprovalChallengeIssued { checkout, .. }
            | Event::ApprovalRecorded { checkout, .. }
            | Event::DenialRecorded { checkout, .. }
            | Event::CheckoutApproved { checkout, .. }
            | Event::CheckoutDenied { checkout }
            | Event::CheckoutCancelled { checkout }
            | Event::CheckoutExpired { checkout, .. }
            | Event::ReleaseChallengeIssued { checkout, .. }
            | Event::CheckoutReleased { checkout, .. }
            | Event::CheckoutRevealed { checkout, .. }
            | Event::RootTaskAuthorized { checkout, .. }
            | Event::RootTaskIssued { checkout, .. }
            | Event::RootTaskFailed { checkout, .. }
            | Event::CheckoutClosed { checkout, .. }
            | Event::AccountReshared { checkout, .. }
            | Event::ShareHandedOver { checkout, .. }
            | Event::QuorumFailed { checkout, .. }
            | Event::DrillPassed { checkout, .. }
            | Event::DrillFailed { checkout, .. }
            | Event::RootActivityExplained { checkout, .. } => Some(checkout),
            Event::SecretDeposited { checkout, .. } | Event::RootSignInFailed { checkout, .. } => checkout.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn details_are_exactly_the_fields_and_parse_back() {
        let e = Event::CheckoutApproved { checkout: "c1".into(), approvals: 2 };
        assert_eq!(e.action(), "checkout.approved");
        assert_eq!(e.details(), json!({"checkout": "c1", "approvals": 2}));
        assert_eq!(Event::parse("checkout.approved", &e.details()).unwrap(), e);
        assert_eq!(Event::CustodianLogout {}.details(), json!({}));
        assert_eq!(Event::parse("custodian.logout", &json!({})).unwrap(), Event::CustodianLogout {});
    }

    #[test]
    fn both_shapes_of_a_revoked_invite_round_trip_without_extra_keys() {
        let by_host = json!({"reason": "superseded by a new first-run invite"});
        let by_admin = json!({"roles": ["custodian"]});
        for d in [by_host, by_admin] {
            let e = Event::parse("invite.revoked", &d).unwrap();
            assert_eq!(e.details(), d);
        }
    }

    #[test]
    fn quorum_rules_recorded_with_a_request_are_optional_for_old_entries() {
        let old = json!({"checkout": "c", "kind": "emergency", "reason": "r", "ticket": null, "duration_minutes": 30, "approvals_required": 1});
        let e = Event::parse("checkout.requested", &old).unwrap();
        assert_eq!(e.details(), old, "an old entry re-serializes byte for byte");
        let mut new = old.clone();
        new["veto"] = json!(true);
        new["approvers"] = json!("all");
        let e = Event::parse("checkout.requested", &new).unwrap();
        assert!(matches!(e, Event::CheckoutRequested { veto: Some(true), .. }));
        assert_eq!(e.details(), new);
    }

    #[test]
    fn the_action_name_is_the_serde_tag_for_every_variant() {
        // A misspelt rename would make `action()` and the stored action disagree.
        let samples = [
            Event::CheckoutDenied { checkout: "c".into() },
            Event::DrillMissed { drill: "d".into(), period: "2026-12".into() },
            Event::CustodianLoginFailed {
                reason: Some("bad".into()),
                failures: None,
                reasons: None,
                first_at: None,
                last_at: None,
            },
            Event::InviteRevoked { roles: None, reason: None },
        ];
        for e in samples {
            assert_eq!(serde_json::to_value(&e).unwrap()["action"], e.action());
        }
    }

    #[test]
    fn unknown_actions_and_wrong_details_are_refused() {
        assert!(Event::parse("checkout.teleported", &json!({})).is_err());
        assert!(Event::parse("checkout.approved", &json!({"checkout": 7})).is_err());
        assert!(Subject::parse("account:123").is_some_and(|s| s.account_id() == Some("123")));
        assert_eq!(Subject::parse("nonsense"), None);
    }
}

//! Which audit events are announced, how loudly, and the line an e-mail subscriber
//! reads. Pure: built from the audit entry's fields and a little context.
use serde::Serialize;

use super::{Role, event::Event};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// Context for the summary line, looked up by the caller.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// `alias (123456789012)` when the event concerns an account.
    pub account: Option<String>,
    /// Display name of the actor (`Ada Lovelace <ada@example.com>`), or `host:cli`.
    pub actor: String,
    /// For checkout events: requester name, kind, reason.
    pub requester: Option<String>,
    pub kind: Option<String>,
    pub reason: Option<String>,
    /// For custodian events: the person concerned.
    pub person: Option<String>,
}

/// Whether `event` is announced at all (the same decision as [`announcement`], which
/// never looks at the context for it), so the caller can skip looking the context up.
pub fn is_announced(event: &Event) -> bool {
    announcement(event, &Context::default()).is_some()
}

/// `None` when the event is not announced (sign-ins, challenges issued…). Every
/// event is decided here: the match is exhaustive, so a new event cannot be
/// forgotten silently.
pub fn announcement(event: &Event, ctx: &Context) -> Option<(Severity, String)> {
    use Severity::*;
    let acct = ctx.account.as_deref().unwrap_or("an account");
    let req = ctx.requester.as_deref().unwrap_or("someone");
    let kind = ctx.kind.as_deref().unwrap_or("emergency");
    let reason = ctx.reason.as_deref().map(|r| format!(" Reason: {}.", r.trim_end_matches('.'))).unwrap_or_default();
    let actor = &ctx.actor;
    let person = ctx.person.as_deref().unwrap_or("a custodian");
    Some(match event {
        Event::CheckoutRequested { task_policy: Some(policy), .. } => {
            (High, format!("{req} requested a root-task session ({policy}, {kind}) in {acct}.{reason}"))
        }
        Event::CheckoutRequested { .. } => (High, format!("{req} requested {kind} root access to {acct}.{reason}")),
        Event::ApprovalRecorded { .. } => {
            (Warning, format!("{actor} approved {req}'s {kind} root access request for {acct}."))
        }
        Event::DenialRecorded { .. } => {
            (Warning, format!("{actor} denied {req}'s {kind} root access request for {acct}."))
        }
        Event::CheckoutApproved { .. } => {
            (High, format!("Root access to {acct} for {req} is approved; release pending."))
        }
        Event::CheckoutDenied { .. } => (Warning, format!("Root access request by {req} for {acct} was denied.")),
        Event::CheckoutCancelled { .. } => (Info, format!("{req} cancelled the root access request for {acct}.")),
        Event::CheckoutExpired { .. } => (Info, format!("The root access request by {req} for {acct} expired.")),
        Event::CheckoutReleased { .. } if ctx.kind.as_deref() == Some("reshare") => (
            High,
            format!(
                "{req} and the approving holders opened the key of {acct} to reshare it; no credentials were shown."
            ),
        ),
        Event::CheckoutReleased { task_policy: Some(policy), .. } => (
            Critical,
            format!(
                "ROOT TASK RELEASED for {acct} to {req} ({kind}): AWS sessions with {policy} may now be opened.{reason}"
            ),
        ),
        Event::CheckoutReleased { rotation_required, .. } => {
            let rotate = if *rotation_required { " The root password must be rotated afterwards." } else { "" };
            (Critical, format!("ROOT CREDENTIALS RELEASED for {acct} to {req} ({kind}).{reason}{rotate}"))
        }
        Event::CheckoutRevealed { .. } => (High, format!("{req} viewed the root credentials of {acct}.")),
        Event::RootTaskAuthorized { task_policy, duration_seconds, .. } => (
            Warning,
            format!(
                "{req} confirmed with their key: asking AWS for a {task_policy} root session in {acct} ({duration_seconds} s)."
            ),
        ),
        Event::RootTaskIssued { task_policy, access_key_id, expiration, .. } => (
            High,
            format!(
                "{req} received a {task_policy} ROOT SESSION in {acct} (access key {access_key_id}), valid until {expiration}."
            ),
        ),
        Event::RootTaskFailed { task_policy, code, message, .. } => {
            (High, format!("AWS opened NO {task_policy} root session in {acct} for {req}: {code}: {message}"))
        }
        Event::CheckoutClosed { checked_in: false, .. } => {
            (Warning, format!("The checkout of {acct} by {req} ended without a check-in."))
        }
        Event::CheckoutClosed { checked_in: true, .. } => {
            (Info, format!("{req} checked in the root credentials of {acct}."))
        }
        Event::SecretDeposited { rotation_completed: true, .. } => {
            (Info, format!("The root password of {acct} was rotated by {actor}."))
        }
        Event::SecretDeposited { kind: secret, .. } => {
            (Info, format!("{actor} deposited a new {} for {acct}.", secret.as_str().replace('_', " ")))
        }
        Event::AccountCreated { .. } => (Info, format!("{actor} put {acct} into custody.")),
        Event::AccountPolicyChanged { .. } => (Warning, format!("{actor} changed the release policy of {acct}.")),
        Event::CustodianEnrolled { roles: r, same_name_as: Some(others), .. } if !others.is_empty() => (
            High,
            format!(
                "{person} enrolled as a custodian (roles: {}). Another active custodian has the same name: check that this is a different person and tell them apart.",
                roles(r)
            ),
        ),
        Event::CustodianEnrolled { roles: r, .. } => {
            (Warning, format!("{person} enrolled as a custodian (roles: {}).", roles(r)))
        }
        Event::CustodianDisabled { .. } => (Warning, format!("{actor} disabled {person}.")),
        Event::CredentialAdded { .. } => (Warning, format!("{person} added a security key.")),
        Event::InviteCreated { roles: r, .. } => (Info, format!("{actor} created an invite for roles {}.", roles(r))),
        Event::InviteRevoked { .. } => (Info, format!("{actor} revoked an invite.")),
        Event::LogKeyCreated { .. } => (Info, "A new audit-log signing key was created.".to_owned()),
        Event::DatabaseRestored { source, entries, lost_entries: Some(lost), .. } => (
            Critical,
            format!(
                "The breakglass database was RESTORED from {source} ({entries} audit entries) and {lost} audited events that were already announced are LOST: {actor} accepted the loss. Compare with your saved announcements and ask what happened in them."
            ),
        ),
        Event::DatabaseRestored { source, entries, unchecked: true, .. } => (
            Critical,
            format!(
                "The breakglass database was RESTORED from {source} ({entries} audit entries) WITHOUT a published checkpoint to compare with: check that your last saved announcement is covered by this log."
            ),
        ),
        Event::DatabaseRestored { source, entries, .. } => (
            High,
            format!(
                "The breakglass database was restored from {source} ({entries} audit entries); it contains every published checkpoint it was compared with."
            ),
        ),
        Event::BackupFailed { error, .. } => (
            High,
            format!(
                "A scheduled backup of breakglass FAILED: {error}. Until one succeeds, losing this host loses everything since the last good backup."
            ),
        ),
        Event::RecoveryKitGenerated { accounts, custodians, .. } => (
            Info,
            format!(
                "{actor} printed a new recovery kit ({accounts} account(s), {custodians} custodian(s)): replace the old copies."
            ),
        ),
        Event::DrillDue { expected, grace_ends_at, .. } => (
            Warning,
            format!(
                "Root-access drill due for {acct}: request a drill checkout and complete the checklist by {grace_ends_at}. Expected: {}.",
                expected.join(", ")
            ),
        ),
        Event::DrillOverdue { overdue_since, .. } => (
            High,
            format!(
                "Root-access drill for {acct} is OVERDUE (since {overdue_since}): nobody has proven access this period."
            ),
        ),
        Event::DrillFlagged { failed_items, .. } => (
            High,
            format!(
                "Root access to {acct} is still unproven: its last drill failed ({}). Fix it and run the drill again.",
                failed_items.join("; ")
            ),
        ),
        Event::DrillPassed { .. } => {
            (Info, format!("Root-access drill for {acct} passed: {actor} and others proved access."))
        }
        Event::DrillFailed { reasons, .. } => {
            (High, format!("Root-access drill for {acct} FAILED: {}.", reasons.join("; ")))
        }
        Event::DrillMissed { period, .. } => {
            (High, format!("The root-access drill for {acct} for period {period} was never completed."))
        }
        Event::AccountQuorumEnabled { k, holders, .. } => (
            Critical,
            format!(
                "{actor} turned {acct} to QUORUM MODE: its key is now split among {} holders and {k} of them must touch their keys to open it. The vault no longer holds it.",
                holders.len()
            ),
        ),
        Event::AccountReshared { k, holders, key_version, .. } => (
            Critical,
            format!(
                "The key of {acct} was reshared (key version {key_version}): {} holders, {k} needed to open it. Old shares no longer open anything.",
                holders.len()
            ),
        ),
        Event::AccountReshareDue { reason, .. } => (
            High,
            format!(
                "{acct} needs a reshare: {reason}. Until then its holders do not match its policy; request a reshare checkout."
            ),
        ),
        Event::AccountBusFactor { live, k, reason } => (
            Critical,
            format!(
                "BUS FACTOR: only {live} live holders remain for {acct}, which needs {k} to open ({reason}). Reshare now, while {acct} can still be opened, or it is lost."
            ),
        ),
        Event::QuorumFailed { message, .. } => {
            (High, format!("A quorum release of {acct} for {req} FAILED and revealed nothing: {message}"))
        }
        Event::CredentialShareRecipient { status, .. } if status == "ready" => {
            (Info, format!("{person} prepared a security key to hold quorum shares."))
        }
        Event::RootActivityExplained { root_event: e, .. } => (
            Info,
            format!(
                "Root {} ({}) in {acct} at {}, during {req}'s {kind} checkout.",
                e.kind.replace('_', " "),
                e.event_name,
                e.event_time
            ),
        ),
        Event::RootActivityUnexplained { root_event: e, in_custody } => {
            let custody = if *in_custody { "" } else { " This account is not in breakglass custody." };
            (
                Critical,
                format!(
                    "UNEXPLAINED ROOT USE in {acct}: {} at {} from {}, outside any checkout.{custody} Find out who; an admin acknowledges it with a reason.",
                    e.event_name,
                    e.event_time,
                    e.source_ip.as_deref().unwrap_or("an unknown address")
                ),
            )
        }
        Event::RootSignInFailed { root_event: e, checkout } => {
            let during = if checkout.is_some() { format!(" (during {req}'s {kind} checkout)") } else { String::new() };
            (
                High,
                format!(
                    "A root sign-in to {acct} FAILED at {} from {}{during}: someone tried the root password.",
                    e.event_time,
                    e.source_ip.as_deref().unwrap_or("an unknown address")
                ),
            )
        }
        Event::RootActivityAcknowledged { event_id, reason } => (
            Warning,
            format!("{actor} acknowledged unexplained root use in {acct} (CloudTrail event {event_id}): {reason}"),
        ),
        Event::AccountPostureChanged { new, resolved, findings, .. } if !new.is_empty() => (
            High,
            format!(
                "Root posture of {acct} got worse: {}.{}",
                new.join(", "),
                if resolved.is_empty() { String::new() } else { format!(" Resolved: {}.", resolved.join(", ")) }
            )
            .replace(".. ", ". ")
                + if findings.len() > new.len() { " Other findings remain." } else { "" },
        ),
        Event::AccountPostureChanged { resolved, findings, .. } => (
            Info,
            if findings.is_empty() {
                format!(
                    "Root posture of {acct} is clean (MFA on, no root access keys, contacts set, root e-mail as on file)."
                )
            } else {
                format!(
                    "Root posture of {acct} improved: resolved {}; remaining: {}.",
                    resolved.join(", "),
                    findings.join(", ")
                )
            },
        ),
        Event::VaultInitialized { .. }
        | Event::CredentialShareRecipient { .. }
        | Event::ShareHandedOver { .. }
        | Event::CustodianLogin { .. }
        | Event::CustodianLoginFailed { .. }
        | Event::CustodianLogout {}
        | Event::CredentialRenamed { .. }
        | Event::ApprovalChallengeIssued { .. }
        | Event::ReleaseChallengeIssued { .. } => return None,
    })
}

fn roles(roles: &[Role]) -> String {
    roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
}

/// SNS `Subject`: printable ASCII, at most 100 characters, no line breaks.
pub fn subject_line(summary: &str) -> String {
    let ascii: String = format!("[breakglass] {summary}")
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .collect();
    if ascii.len() <= 100 { ascii } else { format!("{}...", &ascii[..97]) }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn releases_are_critical_and_say_so_plainly() {
        let ctx = Context {
            account: Some("prod (123456789012)".into()),
            requester: Some("Bo".into()),
            kind: Some("emergency".into()),
            reason: Some("lockout".into()),
            ..Context::default()
        };
        let released = Event::CheckoutReleased {
            checkout: "c".into(),
            window_ends_at: "2026-11-21T09:15:00Z".into(),
            rotation_required: true,
            task_policy: None,
        };
        let (sev, line) = announcement(&released, &ctx).unwrap();
        assert_eq!(sev, Severity::Critical);
        assert_eq!(
            line,
            "ROOT CREDENTIALS RELEASED for prod (123456789012) to Bo (emergency). Reason: lockout. The root password must be rotated afterwards."
        );
        assert!(announcement(&Event::CustodianLogin { credential_id: "k".into() }, &ctx).is_none());
        let challenge = Event::parse(
            "approval.challenge_issued",
            &json!({"checkout": "c", "ceremony": "e", "challenge": "x", "rp_id": "localhost", "origin": "http://localhost"}),
        )
        .unwrap();
        assert!(announcement(&challenge, &ctx).is_none());
    }

    #[test]
    fn subjects_are_short_ascii_single_lines() {
        let s = subject_line(&format!("Zoë\nline {}", "x".repeat(200)));
        assert!(s.len() <= 100 && s.is_ascii() && !s.contains('\n'), "{s}");
        assert!(s.starts_with("[breakglass] Zo?"));
    }
}

//! Which audit events are announced, how loudly, and the line an e-mail subscriber
//! reads. Pure: built from the audit entry's fields and a little context.
use serde::Serialize;

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

/// `None` when the event is not announced (sign-ins, challenges issued…).
pub fn announcement(action: &str, details: &serde_json::Value, ctx: &Context) -> Option<(Severity, String)> {
    use Severity::*;
    let acct = ctx.account.as_deref().unwrap_or("an account");
    let req = ctx.requester.as_deref().unwrap_or("someone");
    let kind = ctx.kind.as_deref().unwrap_or("emergency");
    let reason = ctx.reason.as_deref().map(|r| format!(" Reason: {}.", r.trim_end_matches('.'))).unwrap_or_default();
    let actor = &ctx.actor;
    let person = ctx.person.as_deref().unwrap_or("a custodian");
    Some(match action {
        "checkout.requested" => (High, format!("{req} requested {kind} root access to {acct}.{reason}")),
        "checkout.approval_recorded" => {
            (Warning, format!("{actor} approved {req}'s {kind} root access request for {acct}."))
        }
        "checkout.denial_recorded" => {
            (Warning, format!("{actor} denied {req}'s {kind} root access request for {acct}."))
        }
        "checkout.approved" => (High, format!("Root access to {acct} for {req} is approved; release pending.")),
        "checkout.denied" => (Warning, format!("Root access request by {req} for {acct} was denied.")),
        "checkout.cancelled" => (Info, format!("{req} cancelled the root access request for {acct}.")),
        "checkout.expired" => (Info, format!("The root access request by {req} for {acct} expired.")),
        "checkout.released" => {
            let rotate = if details["rotation_required"].as_bool() == Some(true) {
                " The root password must be rotated afterwards."
            } else {
                ""
            };
            (Critical, format!("ROOT CREDENTIALS RELEASED for {acct} to {req} ({kind}).{reason}{rotate}"))
        }
        "checkout.revealed" => (High, format!("{req} viewed the root credentials of {acct}.")),
        "checkout.closed" => {
            if details["checked_in"].as_bool() == Some(false) {
                (Warning, format!("The checkout of {acct} by {req} ended without a check-in."))
            } else {
                (Info, format!("{req} checked in the root credentials of {acct}."))
            }
        }
        "secret.deposited" => {
            let what = details["kind"].as_str().unwrap_or("a secret").replace('_', " ");
            if details["rotation_completed"].as_bool() == Some(true) {
                (Info, format!("The root password of {acct} was rotated by {actor}."))
            } else {
                (Info, format!("{actor} deposited a new {what} for {acct}."))
            }
        }
        "account.created" => (Info, format!("{actor} put {acct} into custody.")),
        "account.policy_changed" => (Warning, format!("{actor} changed the release policy of {acct}.")),
        "custodian.enrolled" if details["same_name_as"].as_array().is_some_and(|a| !a.is_empty()) => (
            High,
            format!(
                "{person} enrolled as a custodian (roles: {}). Another active custodian has the same name: check that this is a different person and tell them apart.",
                roles(details)
            ),
        ),
        "custodian.enrolled" => (Warning, format!("{person} enrolled as a custodian (roles: {}).", roles(details))),
        "custodian.disabled" => (Warning, format!("{actor} disabled {person}.")),
        "credential.added" => (Warning, format!("{person} added a security key.")),
        "invite.created" => (Info, format!("{actor} created an invite for roles {}.", roles(details))),
        "invite.revoked" => (Info, format!("{actor} revoked an invite.")),
        "log_key.created" => (Info, "A new audit-log signing key was created.".to_owned()),
        "drill.due" => {
            let who = details["expected"]
                .as_array()
                .map(|v| v.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            let by = details["grace_ends_at"].as_str().unwrap_or("within the grace period");
            (
                Warning,
                format!(
                    "Root-access drill due for {acct}: request a drill checkout and complete the checklist by {by}. Expected: {who}."
                ),
            )
        }
        "drill.overdue" => (
            High,
            format!(
                "Root-access drill for {acct} is OVERDUE (since {}): nobody has proven access this period.",
                details["overdue_since"].as_str().unwrap_or("?")
            ),
        ),
        "drill.flagged" => (
            High,
            format!(
                "Root access to {acct} is still unproven: its last drill failed ({}). Fix it and run the drill again.",
                str_list(&details["failed_items"])
            ),
        ),
        "drill.passed" => (Info, format!("Root-access drill for {acct} passed: {actor} and others proved access.")),
        "drill.failed" => (High, format!("Root-access drill for {acct} FAILED: {}.", str_list(&details["reasons"]))),
        "drill.missed" => (
            High,
            format!(
                "The root-access drill for {acct} for period {} was never completed.",
                details["period"].as_str().unwrap_or("?")
            ),
        ),
        _ => return None,
    })
}

fn str_list(v: &serde_json::Value) -> String {
    v.as_array().map(|r| r.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join("; ")).unwrap_or_default()
}

fn roles(details: &serde_json::Value) -> String {
    details["roles"]
        .as_array()
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
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
        let (sev, line) = announcement("checkout.released", &json!({"rotation_required": true}), &ctx).unwrap();
        assert_eq!(sev, Severity::Critical);
        assert_eq!(
            line,
            "ROOT CREDENTIALS RELEASED for prod (123456789012) to Bo (emergency). Reason: lockout. The root password must be rotated afterwards."
        );
        assert!(announcement("custodian.login", &json!({}), &ctx).is_none());
        assert!(announcement("approval.challenge_issued", &json!({}), &ctx).is_none());
    }

    #[test]
    fn subjects_are_short_ascii_single_lines() {
        let s = subject_line(&format!("Zoë\nline {}", "x".repeat(200)));
        assert!(s.len() <= 100 && s.is_ascii() && !s.contains('\n'), "{s}");
        assert!(s.starts_with("[breakglass] Zo?"));
    }
}

//! One human line per audit entry, for the audit page and a checkout's story. Pure:
//! built from the entry's action and details and names looked up by the caller.
//! Announced events read exactly as their announcement (`announce::announcement`);
//! the others (sign-ins, challenges, share handovers…) are written here. The match
//! is exhaustive, like the announcement's: a new event cannot be forgotten.
use serde_json::Value;

use super::{
    announce::{Context, announcement},
    event::Event,
};

/// Names for one entry, looked up by the caller.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// The words the announcement line uses (account alias, actor's name, requester…).
    pub ctx: Context,
    /// The checkout's ticket, when the entry belongs to one that has a ticket.
    pub ticket: Option<String>,
}

/// The line for an entry. An entry whose action or details are not a known event
/// (never written by this version) is summarised by its action.
pub fn summary(action: &str, details: &str, names: &Names) -> String {
    let parsed = serde_json::from_str::<Value>(details).ok().and_then(|d| Event::parse(action, &d).ok());
    let Some(event) = parsed else { return format!("{action} (details not readable by this version)") };
    let line = match announcement(&event, &names.ctx) {
        Some((_, line)) => line,
        None => unannounced(&event, &names.ctx),
    };
    match (&names.ticket, event.checkout_id()) {
        (Some(t), Some(_)) if !line.contains(t.as_str()) => format!("{line} Ticket: {t}."),
        _ => line,
    }
}

fn unannounced(event: &Event, ctx: &Context) -> String {
    let acct = ctx.account.as_deref().unwrap_or("an account");
    let req = ctx.requester.as_deref().unwrap_or("someone");
    let kind = ctx.kind.as_deref().unwrap_or("emergency");
    let actor = &ctx.actor;
    let person = ctx.person.as_deref().unwrap_or(actor);
    match event {
        Event::VaultInitialized { seal, dev_mode, .. } => {
            let dev = if *dev_mode { ", development mode" } else { "" };
            format!("The vault was initialized ({seal} seal{dev}).")
        }
        Event::CredentialShareRecipient { status, .. } if status == "ready" => {
            format!("{person} prepared a security key to hold quorum shares.")
        }
        Event::CredentialShareRecipient { .. } => {
            format!("{person}'s security key cannot hold quorum shares (no PRF); it still signs in and approves.")
        }
        Event::ShareHandedOver { share_index, key_version, .. } => format!(
            "{actor} handed over share {share_index} (key version {key_version}) of {acct} for {req}'s {kind} request."
        ),
        Event::CustodianLogin { .. } => format!("{actor} signed in."),
        Event::CustodianLoginFailed { failures, .. } => {
            let n = failures.unwrap_or(1);
            format!("{n} failed sign-in attempt{} for {person}.", if n == 1 { "" } else { "s" })
        }
        Event::CustodianLogout {} => format!("{actor} signed out."),
        Event::CredentialRenamed { .. } => format!("{actor} renamed a security key."),
        Event::ApprovalChallengeIssued { .. } => {
            format!("{actor} was asked to confirm a decision on {req}'s {kind} request for {acct} with a security key.")
        }
        Event::ReleaseChallengeIssued { .. } => {
            format!("{actor} was asked to confirm the release for {acct} with a security key.")
        }
        // Announced events are summarised by their announcement; this is only reached
        // if one stops being announced in some context.
        other => format!("{actor}: {}.", other.action()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn names() -> Names {
        Names {
            ctx: Context {
                account: Some("prod-payer".into()),
                actor: "Cy".into(),
                requester: Some("Bo".into()),
                kind: Some("emergency".into()),
                reason: Some("lockout".into()),
                person: None,
            },
            ticket: Some("INC-4711".into()),
        }
    }

    #[test]
    fn an_approval_reads_like_its_announcement_with_the_ticket() {
        let details = json!({"checkout": "c", "decision": "approve", "comment": null, "evidence": {}}).to_string();
        assert_eq!(
            summary("checkout.approval_recorded", &details, &names()),
            "Cy approved Bo's emergency root access request for prod-payer. Ticket: INC-4711."
        );
    }

    #[test]
    fn unannounced_events_get_their_own_line_and_unknown_ones_their_action() {
        let handed = json!({"checkout": "c", "key_version": 1, "share_index": 2, "sha256": "ab"}).to_string();
        assert_eq!(
            summary("checkout.share_handed_over", &handed, &names()),
            "Cy handed over share 2 (key version 1) of prod-payer for Bo's emergency request. Ticket: INC-4711."
        );
        let login = json!({"credential_id": "k"}).to_string();
        assert_eq!(summary("custodian.login", &login, &Names { ticket: None, ..names() }), "Cy signed in.");
        assert_eq!(
            summary("checkout.teleported", "{}", &names()),
            "checkout.teleported (details not readable by this version)"
        );
    }
}

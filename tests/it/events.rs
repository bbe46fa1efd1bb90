//! Typed events: every audit entry a real scenario writes is one `Event` whose details
//! re-serialize byte for byte, and the documented actions are exactly the enum's.
use breakglass::domain::{audit::canonical_details, event::Event};
use reqwest::StatusCode;
use serde_json::json;

use crate::{
    checkouts::{ACCOUNT, decide, open_drills, request_id, reveal, team},
    support::*,
};

/// Every action name the enum knows, read from serde's own "expected one of" list.
fn all_actions() -> Vec<String> {
    let err = Event::parse("no.such_action", &json!({})).unwrap_err().reason;
    let list = err.split("expected one of").nth(1).expect("serde lists the variants");
    list.split(',').map(|s| s.trim().trim_matches('`').to_owned()).filter(|s| !s.is_empty()).collect()
}

#[tokio::test]
async fn every_entry_a_scenario_writes_is_a_typed_event_that_reserializes_exactly() {
    let mut t = team().await;
    let id = request_id(&t.s, &t.bo, ACCOUNT).await;
    assert_eq!(decide(&t.s, &mut t.cy, &id, "approve").await.0, StatusCode::OK);
    assert_eq!(reveal(&t.s, &mut t.bo, &id).await.0, StatusCode::OK);
    let got = post(&t.bo.client, t.s.url(format!("/api/v1/checkouts/{id}/close")), json!({"note": "done"})).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let denied = request_id(&t.s, &t.bo, ACCOUNT).await;
    assert_eq!(decide(&t.s, &mut t.cy, &denied, "deny").await.0, StatusCode::OK);
    open_drills(&mut t).await;
    let (code, out) = crate::audit_replay::python_verify(crate::checkouts::snapshot_db(&t.s).path());
    assert_eq!(code, 0, "the independent Python verifier agrees: {out}");

    let conn = t.s.db();
    let mut stmt = conn.prepare("SELECT seq, action, details FROM audit_log ORDER BY seq").unwrap();
    let rows: Vec<(i64, String, String)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect();
    let mut seen = std::collections::BTreeSet::new();
    for (seq, action, details) in &rows {
        let value: serde_json::Value = serde_json::from_str(details).unwrap();
        let event = Event::parse(action, &value).unwrap_or_else(|e| panic!("seq {seq}: {e}"));
        assert_eq!(event.action(), action, "seq {seq}");
        assert_eq!(&canonical_details(&event.details()), details, "seq {seq} re-serializes byte for byte");
        seen.insert(action.clone());
    }
    for action in [
        "vault.initialized",
        "custodian.enrolled",
        "account.created",
        "secret.deposited",
        "checkout.requested",
        "checkout.approval_recorded",
        "checkout.denial_recorded",
        "checkout.released",
        "checkout.revealed",
        "checkout.closed",
        "checkout.denied",
        "drill.due",
    ] {
        assert!(seen.contains(action), "the scenario wrote {action}");
    }
}

#[test]
fn the_documented_actions_are_exactly_the_typed_events() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/audit-log.md")).unwrap();
    let mut documented = std::collections::BTreeSet::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap_or_default();
        for name in first.split('`').skip(1).step_by(2) {
            if name.contains('.')
                && !name.contains(' ')
                && name.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
            {
                documented.insert(name.to_owned());
            }
        }
    }
    let actions: std::collections::BTreeSet<String> = all_actions().into_iter().collect();
    assert!(actions.len() >= 30, "{actions:?}");
    let missing: Vec<_> = actions.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&actions).collect();
    assert!(missing.is_empty(), "events not in docs/audit-log.md: {missing:?}");
    assert!(unknown.is_empty(), "documented actions that are no event: {unknown:?}");
}

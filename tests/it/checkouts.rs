//! Two-person checkout over HTTP with soft authenticators: the full flow, every
//! refusal with its code, races, clock-driven expiry, and offline evidence checks.
use breakglass::{clock::Clock, domain::Role};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::Duration;
use webauthn_authenticator_rs::WebauthnAuthenticator;

use crate::support::*;

pub const PASSWORD: &str = "Root-Pa55word-for-prod!";
pub const ACCOUNT: &str = "123456789012";
pub const OTHER: &str = "210987654321";

pub struct Team {
    pub s: TestServer,
    pub ada: Person,
    pub bo: Person,
    pub cy: Person,
}

/// Ada (admin + custodian), Bo and Cy (custodians), two accounts with secrets; the
/// clock moved past everyone's cooling-off, everyone signed in again.
pub async fn team() -> Team {
    team_with(|_| {}).await
}

pub async fn team_with(adjust: impl FnOnce(&mut breakglass::config::Config)) -> Team {
    team_on(TestServer::start_with(adjust).await).await
}

/// The same team on a server started by the caller.
pub async fn team_on(s: TestServer) -> Team {
    let mut ada = s.admin().await;
    let mut bo = s.enrol(&[Role::Custodian], "Bo Requester", "bo@example.com").await;
    let mut cy = s.enrol(&[Role::Custodian], "Cy Approver", "cy@example.com").await;
    for (id, alias) in [(ACCOUNT, "prod-payer"), (OTHER, "sandbox")] {
        let got = post(
            &ada.client,
            s.url("/api/v1/accounts"),
            json!({"account_id": id, "alias": alias, "root_email": format!("root+{alias}@example.com")}),
        )
        .await;
        assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
        let got =
            put(&ada.client, s.url(format!("/api/v1/accounts/{id}/secrets/root_password")), json!({"value": PASSWORD}))
                .await;
        assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
        let got =
            put(&ada.client, s.url(format!("/api/v1/accounts/{id}/secrets/totp_seed")), json!({"value": AWS_SEED}))
                .await;
        assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    }
    s.clock.advance(Duration::hours(25));
    for p in [&mut ada, &mut bo, &mut cy] {
        assert_eq!(s.login(p).await.0, StatusCode::OK);
    }
    Team { s, ada, bo, cy }
}

/// Move to the first drill period (1 December, 09:00 UTC), open its drills and sign
/// everyone in again (a week of idle time ended their sessions).
pub async fn open_drills(t: &mut Team) {
    t.s.clock.set(time::macros::datetime!(2026-12-01 09:00:00 UTC));
    t.s.app.run_drills().await.unwrap();
    sign_in_all(t).await;
}

/// Sign everyone in again (after the clock moved past their sessions).
pub async fn sign_in_all(t: &mut Team) {
    for p in [&mut t.ada, &mut t.bo, &mut t.cy] {
        t.s.login(p).await;
    }
}

pub async fn request(s: &TestServer, p: &Person, account: &str) -> (StatusCode, Value) {
    post(&p.client, s.url("/api/v1/checkouts"), json!({"account_id": account, "reason": "Billing lockout: restore IAM admin role", "ticket": "INC-4711", "duration_minutes": 30})).await
}

pub async fn request_id(s: &TestServer, p: &Person, account: &str) -> String {
    let got = request(s, p, account).await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    got.1["id"].as_str().unwrap().to_owned()
}

/// Start an approval ceremony; returns the start body.
pub async fn approval_start(s: &TestServer, p: &Person, id: &str) -> (StatusCode, Value) {
    post(&p.client, s.url(format!("/api/v1/checkouts/{id}/approvals/start")), json!({})).await
}

/// Sign a started ceremony with the person's key and finish it.
pub async fn approval_finish(
    s: &TestServer,
    p: &mut Person,
    id: &str,
    start: Value,
    decision: &str,
) -> (StatusCode, Value) {
    let st: AuthStart = serde_json::from_value(start).unwrap();
    let cred = p.key.do_authentication(s.origin_url(), st.options).unwrap();
    post(&p.client, s.url(format!("/api/v1/checkouts/{id}/approvals/finish")), json!({"ceremony_id": st.ceremony_id, "credential": cred, "decision": decision, "comment": "ok, on the bridge call"})).await
}

pub async fn decide(s: &TestServer, p: &mut Person, id: &str, decision: &str) -> (StatusCode, Value) {
    let (status, start) = approval_start(s, p, id).await;
    if status != StatusCode::OK {
        return (status, start);
    }
    approval_finish(s, p, id, start, decision).await
}

pub async fn reveal(s: &TestServer, p: &mut Person, id: &str) -> (StatusCode, Value) {
    let (status, start) = post(&p.client, s.url(format!("/api/v1/checkouts/{id}/release/start")), json!({})).await;
    if status != StatusCode::OK {
        return (status, start);
    }
    let st: AuthStart = serde_json::from_value(start).unwrap();
    let cred = p.key.do_authentication(s.origin_url(), st.options).unwrap();
    post(
        &p.client,
        s.url(format!("/api/v1/checkouts/{id}/release/finish")),
        json!({"ceremony_id": st.ceremony_id, "credential": cred}),
    )
    .await
}

fn totp_at(unix: u64) -> String {
    let totp = totp_rs::Totp::from_url(format!("otpauth://totp/x?secret={AWS_SEED}")).unwrap();
    totp.generate(unix).to_string()
}

/// `oathtool --totp` at a given time, as an implementation independent of ours.
fn oathtool_at(t: time::OffsetDateTime) -> Option<String> {
    let now = format!(
        "{} UTC",
        t.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]")).unwrap()
    );
    match std::process::Command::new("oathtool").args(["--totp", "-b", "--now", &now, AWS_SEED]).output() {
        Ok(out) if out.status.success() => Some(String::from_utf8(out.stdout).unwrap().trim().to_owned()),
        Ok(out) => panic!("oathtool failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("oathtool is required in CI (.ci/run installs the Debian package)")
        }
        Err(_) => None,
    }
}

// Multi-thread, as `serve` runs: the database work runs in place on a worker thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_person_checkout_releases_the_password_and_a_correct_totp_code() {
    let Team { s, mut ada, mut bo, mut cy } = team().await;
    let id = request_id(&s, &bo, ACCOUNT).await;
    let (_, c) = get(&bo.client, s.url(format!("/api/v1/checkouts/{id}"))).await;
    assert_eq!((c["state"].as_str(), c["approvals_still_needed"].as_u64()), (Some("pending"), Some(1)));

    // Cy sees exactly what she approves, then approves with her key.
    let (status, start) = approval_start(&s, &cy, &id).await;
    assert_eq!(status, StatusCode::OK, "{start}");
    let r = &start["request"];
    assert_eq!(r["requester"]["email"], "bo@example.com");
    assert_eq!((r["account_id"].as_str(), r["account_alias"].as_str()), (Some(ACCOUNT), Some("prod-payer")));
    assert_eq!(r["reason"], "Billing lockout: restore IAM admin role");
    assert_eq!(
        (r["ticket"].as_str(), r["duration_minutes"].as_i64(), r["kind"].as_str()),
        (Some("INC-4711"), Some(30), Some("emergency"))
    );
    assert_eq!(start["publicKey"]["userVerification"], "required");
    let (status, c) = approval_finish(&s, &mut cy, &id, start, "approve").await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(c["state"], "approved");
    assert_eq!(c["decisions"][0]["custodian"]["email"], "cy@example.com");

    let (_, awaiting) = get(&ada.client, s.url("/api/v1/checkouts?awaiting_me=true")).await;
    assert_eq!(awaiting["checkouts"].as_array().unwrap().len(), 0, "nothing pending any more");

    // Bo confirms with his own key and sees the password and the current code.
    let (status, rel) = reveal(&s, &mut bo, &id).await;
    assert_eq!(status, StatusCode::OK, "{rel}");
    assert_eq!(rel["password"], PASSWORD);
    assert_eq!(rel["root_email"], "root+prod-payer@example.com");
    let now = s.clock.now();
    let code = rel["totp"]["code"].as_str().unwrap();
    assert_eq!(code, totp_at(now.unix_timestamp() as u64));
    if let Some(independent) = oathtool_at(now) {
        assert_eq!(code, independent, "oathtool agrees");
    }
    let left = rel["totp"]["valid_for_seconds"].as_u64().unwrap();
    assert!((1..=30).contains(&left));
    assert_eq!(rel["totp"]["next_code"].is_null(), left >= 5);
    let text = rel.to_string();
    assert!(
        !text.contains(AWS_SEED)
            && !text.to_lowercase().contains(&AWS_SEED.to_lowercase())
            && !text.contains("otpauth"),
        "the seed never leaves: {text}"
    );
    assert_eq!(rel["window_ends_at"], c["expires_at"].as_str().map(|_| rel["window_ends_at"].clone()).unwrap());

    // Near the end of a step the next code is shown too; another reveal is a new audited reveal.
    let into_step = s.clock.now().unix_timestamp() % 30;
    s.clock.advance(Duration::seconds(27 - into_step + 30));
    let (_, again) = reveal(&s, &mut bo, &id).await;
    assert_eq!(again["totp"]["valid_for_seconds"], 3);
    assert_eq!(again["totp"]["next_code"].as_str().unwrap(), totp_at(s.clock.now().unix_timestamp() as u64 + 30));

    let (_, a) = get(&bo.client, s.url(format!("/api/v1/accounts/{ACCOUNT}"))).await;
    assert_eq!(a["state"], "checked_out");

    // Check-in: an emergency release leaves the account rotation_due until a new password.
    let (status, c) = post(
        &bo.client,
        s.url(format!("/api/v1/checkouts/{id}/close")),
        json!({"note": "Restored the IAM admin role; no other change."}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(c["state"], "closed");
    let (_, a) = get(&bo.client, s.url(format!("/api/v1/accounts/{ACCOUNT}"))).await;
    assert_eq!(a["state"], "rotation_due");
    assert_error(&reveal(&s, &mut bo, &id).await, StatusCode::GONE, "checkout_ended");
    let (status, d) =
        put(&bo.client, s.url(format!("/api/v1/checkouts/{id}/rotation")), json!({"value": "A-brand-new-root-pw-2"}))
            .await;
    assert_eq!(status, StatusCode::CREATED, "{d}");
    assert_eq!((d["version"].as_u64(), d["account_state"].as_str()), (Some(2), Some("available")));
    let conn = s.db();
    let (actor, details): (String, String) = conn
        .query_row(
            "SELECT actor, details FROM audit_log WHERE action = 'secret.deposited' ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(actor, format!("custodian:{}", bo.id), "the audit shows who rotated");
    assert!(details.contains("\"rotation_completed\":true"));

    let actions = audit_actions(&conn);
    for a in [
        "checkout.requested",
        "approval.challenge_issued",
        "checkout.approval_recorded",
        "checkout.approved",
        "checkout.released",
        "checkout.revealed",
        "checkout.closed",
    ] {
        assert!(actions.contains(&a.to_string()), "{a} missing from {actions:?}");
    }
    assert_eq!(actions.iter().filter(|a| *a == "checkout.revealed").count(), 2, "every reveal is audited");
    let all: Vec<String> = conn
        .prepare("SELECT details FROM audit_log")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        all.iter().all(|d| !d.contains(PASSWORD) && !d.contains(AWS_SEED) && !d.contains(code)),
        "no secret or code in the audit log"
    );

    // The whole story verifies offline, approval signature included.
    let dir = tempfile::tempdir().unwrap();
    conn.execute("VACUUM INTO ?1", [dir.path().join("breakglass.db").to_str().unwrap()]).unwrap();
    let out = breakglass(dir.path(), &["audit", "verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("3 WebAuthn signatures verified"), "{stdout}");
    let _ = &mut ada;
}

#[tokio::test]
async fn every_refusal_has_its_own_code() {
    let Team { s, mut ada, mut bo, mut cy } = team().await;
    let id = request_id(&s, &bo, ACCOUNT).await;

    // Self-approval.
    assert_error(&approval_start(&s, &bo, &id).await, StatusCode::FORBIDDEN, "self_approval");
    // A second open request on the same account names the open one.
    let busy = request(&s, &cy, ACCOUNT).await;
    assert_error(&busy, StatusCode::CONFLICT, "account_busy");
    assert!(busy.1["error"]["message"].as_str().unwrap().contains(&id), "{}", busy.1);
    // Reveal before quorum.
    assert_error(&reveal(&s, &mut bo, &id).await, StatusCode::CONFLICT, "quorum_not_met");
    // An auditor cannot approve; a custodian in cooling-off cannot approve.
    let au = s.enrol(&[Role::Auditor], "Au Ditor", "au@example.com").await;
    assert_error(&approval_start(&s, &au, &id).await, StatusCode::FORBIDDEN, "not_a_custodian");
    let dee = s.enrol(&[Role::Custodian], "Dee New", "dee@example.com").await;
    assert_error(&approval_start(&s, &dee, &id).await, StatusCode::FORBIDDEN, "cooling_off");

    // A challenge issued for request A, used on request B.
    let other = request_id(&s, &bo, OTHER).await;
    let (_, start_a) = approval_start(&s, &cy, &id).await;
    let got = approval_finish(&s, &mut cy, &other, start_a, "approve").await;
    assert_error(&got, StatusCode::BAD_REQUEST, "challenge_not_for_this_request");
    let (_, b) = get(&cy.client, s.url(format!("/api/v1/checkouts/{other}"))).await;
    assert_eq!((b["state"].as_str(), b["decisions"].as_array().unwrap().len()), (Some("pending"), 0));
    // ... and that ceremony is spent: it cannot be replayed on A either.

    // An expired challenge.
    let (_, start) = approval_start(&s, &cy, &id).await;
    s.clock.advance(Duration::seconds(301));
    assert_error(&approval_finish(&s, &mut cy, &id, start, "approve").await, StatusCode::GONE, "ceremony_expired");

    // A replayed assertion.
    let (_, start) = approval_start(&s, &cy, &id).await;
    let st: AuthStart = serde_json::from_value(start).unwrap();
    let cred = cy.key.do_authentication(s.origin_url(), st.options).unwrap();
    let body = json!({"ceremony_id": st.ceremony_id, "credential": cred, "decision": "approve"});
    let first = post(&cy.client, s.url(format!("/api/v1/checkouts/{id}/approvals/finish")), body.clone()).await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    assert_error(
        &post(&cy.client, s.url(format!("/api/v1/checkouts/{id}/approvals/finish")), body).await,
        StatusCode::BAD_REQUEST,
        "ceremony_not_found",
    );
    // Approved now: a decision after the fact is refused.
    assert_error(&approval_start(&s, &ada, &id).await, StatusCode::CONFLICT, "not_pending");

    // Reveal by someone other than the requester.
    assert_error(&reveal(&s, &mut cy, &id).await, StatusCode::FORBIDDEN, "not_the_requester");
    // Reveal after the window.
    assert_eq!(reveal(&s, &mut bo, &id).await.0, StatusCode::OK);
    s.clock.advance(Duration::minutes(16));
    assert_error(&reveal(&s, &mut bo, &id).await, StatusCode::GONE, "reveal_window_closed");
    // Only the requester or an admin checks in; a pending request is cancelled, not closed.
    assert_error(
        &post(&cy.client, s.url(format!("/api/v1/checkouts/{id}/close")), json!({"note": "x"})).await,
        StatusCode::FORBIDDEN,
        "not_the_requester",
    );
    assert_eq!(
        post(&ada.client, s.url(format!("/api/v1/checkouts/{id}/close")), json!({"note": "closed by admin"})).await.0,
        StatusCode::OK
    );
    assert_error(
        &post(&bo.client, s.url(format!("/api/v1/checkouts/{other}/close")), json!({"note": "x"})).await,
        StatusCode::CONFLICT,
        "not_released",
    );
    assert_error(
        &post(&cy.client, s.url(format!("/api/v1/checkouts/{other}/cancel")), json!({})).await,
        StatusCode::FORBIDDEN,
        "not_the_requester",
    );
    let (status, c) = post(&bo.client, s.url(format!("/api/v1/checkouts/{other}/cancel")), json!({})).await;
    assert_eq!((status, c["state"].as_str()), (StatusCode::OK, Some("cancelled")));
    let _ = &mut ada;
}

#[tokio::test]
async fn one_person_counts_once_whatever_number_of_keys_they_hold() {
    let Team { s, ada, bo, mut cy } = team().await;
    put(&ada.client, s.url(format!("/api/v1/accounts/{ACCOUNT}/policy")), json!({"approvals_required": 2})).await;
    // Cy enrols a second key.
    let second = s.add_key(&cy).await;
    // Let the new key's own cooling-off pass (sessions end meanwhile).
    s.clock.advance(Duration::hours(25));
    let mut bo = bo;
    for p in [&mut bo, &mut cy] {
        s.login(p).await;
    }

    let id = request_id(&s, &bo, ACCOUNT).await;
    // Two ceremonies started before either finishes; one signed with each key.
    let (_, start1) = approval_start(&s, &cy, &id).await;
    let (_, start2) = approval_start(&s, &cy, &id).await;
    let (status, c) = approval_finish(&s, &mut cy, &id, start1, "approve").await;
    assert_eq!(
        (status, c["state"].as_str(), c["approvals_received"].as_u64()),
        (StatusCode::OK, Some("pending"), Some(1)),
        "{c}"
    );
    let first_key = std::mem::replace(&mut cy.key, second);
    let got = approval_finish(&s, &mut cy, &id, start2, "approve").await;
    assert_error(&got, StatusCode::CONFLICT, "already_decided");
    let (_, c) = get(&cy.client, s.url(format!("/api/v1/checkouts/{id}"))).await;
    assert_eq!(
        (c["state"].as_str(), c["approvals_received"].as_u64(), c["approvals_still_needed"].as_u64()),
        (Some("pending"), Some(1), Some(1))
    );
    drop(first_key);
}

#[tokio::test]
async fn only_the_accounts_approver_set_counts_and_denials_follow_the_veto_policy() {
    let Team { s, mut ada, bo, mut cy } = team().await;
    let got =
        put(&ada.client, s.url(format!("/api/v1/accounts/{ACCOUNT}/policy")), json!({"approvers": [cy.id]})).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert_eq!(got.1["approvers"], json!([cy.id]));
    let id = request_id(&s, &bo, ACCOUNT).await;
    assert_error(&approval_start(&s, &ada, &id).await, StatusCode::FORBIDDEN, "not_an_approver");
    // Policy checks: a list shorter than the quorum, unknown people.
    assert_error(
        &put(
            &ada.client,
            s.url(format!("/api/v1/accounts/{ACCOUNT}/policy")),
            json!({"approvers": [cy.id], "approvals_required": 2}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_policy",
    );
    assert_error(
        &put(&ada.client, s.url(format!("/api/v1/accounts/{ACCOUNT}/policy")), json!({"approvers": ["nobody"]})).await,
        StatusCode::BAD_REQUEST,
        "invalid_approver",
    );
    assert_error(
        &put(&cy.client, s.url(format!("/api/v1/accounts/{ACCOUNT}/policy")), json!({"approvers": "all"})).await,
        StatusCode::FORBIDDEN,
        "forbidden_role",
    );

    // With veto (the default) one denial ends the request.
    let (status, c) = decide(&s, &mut cy, &id, "deny").await;
    assert_eq!((status, c["state"].as_str()), (StatusCode::OK, Some("denied")), "{c}");
    assert!(audit_actions(&s.db()).contains(&"checkout.denied".to_string()));
    // Without veto a denial is recorded and the request stays open for others.
    put(&ada.client, s.url(format!("/api/v1/accounts/{OTHER}/policy")), json!({"veto": false})).await;
    let other = request_id(&s, &bo, OTHER).await;
    let (_, c) = decide(&s, &mut cy, &other, "deny").await;
    assert_eq!((c["state"].as_str(), c["decisions"][0]["decision"].as_str()), (Some("pending"), Some("deny")));
    let (_, c) = decide(&s, &mut ada, &other, "approve").await;
    assert_eq!(c["state"], "approved", "{c}");
}

/// Sign a started approval ceremony; returns the finish body (to send more than once).
fn signed_approval(s: &TestServer, p: &mut Person, start: Value) -> (String, Value) {
    let st: AuthStart = serde_json::from_value(start).unwrap();
    let cred = p.key.do_authentication(s.origin_url(), st.options).unwrap();
    (st.ceremony_id.clone(), json!({"ceremony_id": st.ceremony_id, "credential": cred, "decision": "approve"}))
}

fn ceremony_rows(s: &TestServer, id: &str) -> i64 {
    s.db().query_row("SELECT count(*) FROM ceremonies WHERE id = ?1", [id], |r| r.get(0)).unwrap()
}

/// Approvals and releases take their ceremony in the step's own transaction (one
/// commit): a refused attempt, whether refused before or after the assertion verified,
/// still spends it, and of two concurrent uses exactly one gets through.
#[tokio::test]
async fn a_checkout_ceremony_works_once_whatever_happens_in_its_step() {
    let Team { s, mut ada, bo, mut cy } = team().await;
    let a = request_id(&s, &bo, ACCOUNT).await;
    let b = request_id(&s, &bo, OTHER).await;
    let finish = |id: &str| s.url(format!("/api/v1/checkouts/{id}/approvals/finish"));

    // Refused before verification (issued for A, sent for B): spent, A refuses it too.
    let (ceremony, body) = {
        let start = approval_start(&s, &cy, &a).await.1;
        signed_approval(&s, &mut cy, start)
    };
    assert_error(
        &post(&cy.client, finish(&b), body.clone()).await,
        StatusCode::BAD_REQUEST,
        "challenge_not_for_this_request",
    );
    assert_eq!(ceremony_rows(&s, &ceremony), 0);
    assert_error(&post(&cy.client, finish(&a), body).await, StatusCode::BAD_REQUEST, "ceremony_not_found");

    // A valid assertion refused by the step (the request was cancelled meanwhile):
    // nothing of the step is kept, and the ceremony is spent all the same.
    let (ceremony, body) = {
        let start = approval_start(&s, &ada, &a).await.1;
        signed_approval(&s, &mut ada, start)
    };
    assert_eq!(post(&bo.client, s.url(format!("/api/v1/checkouts/{a}/cancel")), json!({})).await.0, StatusCode::OK);
    let actions = audit_actions(&s.db()).len();
    assert_error(&post(&ada.client, finish(&a), body.clone()).await, StatusCode::CONFLICT, "not_pending");
    assert_eq!(ceremony_rows(&s, &ceremony), 0);
    assert_eq!(audit_actions(&s.db()).len(), actions, "a refused step writes no audit entry");
    let approvals: i64 =
        s.db().query_row("SELECT count(*) FROM approvals WHERE checkout_id = ?1", [&a], |r| r.get(0)).unwrap();
    assert_eq!(approvals, 0);
    assert_error(&post(&ada.client, finish(&a), body).await, StatusCode::BAD_REQUEST, "ceremony_not_found");

    // The same signed answer sent twice at once: one approval, one `ceremony_not_found`.
    let (_, body) = {
        let start = approval_start(&s, &cy, &b).await.1;
        signed_approval(&s, &mut cy, start)
    };
    let (x, y) = tokio::join!(post(&cy.client, finish(&b), body.clone()), post(&cy.client, finish(&b), body));
    let (ok, refused) = if x.0 == StatusCode::OK { (x, y) } else { (y, x) };
    assert_eq!(ok.0, StatusCode::OK, "{}", ok.1);
    assert_error(&refused, StatusCode::BAD_REQUEST, "ceremony_not_found");
    assert_eq!(ok.1["approvals_received"], 1);
}

// Multi-thread, as `serve` runs: the database work runs in place on a worker thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_approvals_count_correctly_and_racing_requests_leave_exactly_one() {
    let Team { s, mut ada, bo, mut cy } = team().await;
    put(&ada.client, s.url(format!("/api/v1/accounts/{ACCOUNT}/policy")), json!({"approvals_required": 2})).await;
    let id = request_id(&s, &bo, ACCOUNT).await;
    let (_, sa) = approval_start(&s, &ada, &id).await;
    let (_, sc) = approval_start(&s, &cy, &id).await;
    let (a, c) = tokio::join!(
        approval_finish(&s, &mut ada, &id, sa, "approve"),
        approval_finish(&s, &mut cy, &id, sc, "approve")
    );
    assert_eq!((a.0, c.0), (StatusCode::OK, StatusCode::OK), "{} {}", a.1, c.1);
    let (_, v) = get(&bo.client, s.url(format!("/api/v1/checkouts/{id}"))).await;
    assert_eq!((v["state"].as_str(), v["approvals_received"].as_u64()), (Some("approved"), Some(2)));
    let approved_events = audit_actions(&s.db()).iter().filter(|a| *a == "checkout.approved").count();
    assert_eq!(approved_events, 1, "the transition happens once");

    // Two people race to open a checkout on the same account: exactly one wins.
    for _ in 0..5 {
        let (x, y) = tokio::join!(request(&s, &ada, OTHER), request(&s, &cy, OTHER));
        let mut statuses = [x.0, y.0];
        statuses.sort();
        assert_eq!(statuses, [StatusCode::CREATED, StatusCode::CONFLICT], "{} {}", x.1, y.1);
        let winner = if x.0 == StatusCode::CREATED { (&ada, x.1) } else { (&cy, y.1) };
        let wid = winner.1["id"].as_str().unwrap();
        assert_eq!(
            post(&winner.0.client, s.url(format!("/api/v1/checkouts/{wid}/cancel")), json!({})).await.0,
            StatusCode::OK
        );
    }
    let open: i64 = s
        .db()
        .query_row(
            "SELECT count(*) FROM checkouts WHERE account_id = ?1 AND state IN ('pending','approved','released')",
            [OTHER],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(open, 0);
}

#[tokio::test]
async fn deadlines_pass_on_the_clock_without_sleeping() {
    let Team { s, ada, mut bo, mut cy } = team().await;
    // Pending for 24 h: expired.
    let id = request_id(&s, &bo, ACCOUNT).await;
    assert_eq!(s.app.get_checkout(id.clone()).await.unwrap().expires_in_seconds, Some(24 * 3600));
    s.clock.advance(Duration::hours(24));
    assert_eq!(s.app.expire_due().await.unwrap(), 1);
    assert_eq!(s.app.get_checkout(id.clone()).await.unwrap().state, "expired");
    assert_eq!(s.app.expire_due().await.unwrap(), 0, "idempotent");

    // Approved but not released within an hour: expired.
    for p in [&mut bo, &mut cy] {
        s.login(p).await;
    }
    let id = request_id(&s, &bo, ACCOUNT).await;
    assert_eq!(decide(&s, &mut cy, &id, "approve").await.1["state"], "approved");
    s.clock.advance(Duration::minutes(59));
    assert_eq!(s.app.get_checkout(id.clone()).await.unwrap().state, "approved");
    s.clock.advance(Duration::minutes(1));
    assert_eq!(s.app.get_checkout(id.clone()).await.unwrap().state, "expired");
    for p in [&mut bo, &mut cy] {
        s.login(p).await; // an hour idle ended their sessions too
    }
    assert_error(&reveal(&s, &mut bo, &id).await, StatusCode::GONE, "checkout_ended");

    // Released, never checked in: closed by the system at the end of its duration.
    let id = request_id(&s, &bo, ACCOUNT).await;
    decide(&s, &mut cy, &id, "approve").await;
    let revealed = reveal(&s, &mut bo, &id).await;
    assert_eq!(revealed.0, StatusCode::OK);
    // Countdowns are relative to the server's clock: seconds left, not only an instant.
    assert_eq!(revealed.1["window_seconds_left"], 15 * 60);
    s.clock.advance(Duration::minutes(10));
    let c = s.app.get_checkout(id.clone()).await.unwrap();
    assert_eq!(
        (c.window_seconds_left, c.checkout_ends_in_seconds, c.expires_in_seconds),
        (Some(300), Some(1200), None)
    );
    s.clock.advance(Duration::minutes(6));
    assert_eq!(s.app.get_checkout(id.clone()).await.unwrap().window_seconds_left, Some(0), "never negative");
    s.clock.advance(Duration::minutes(13));
    assert_eq!(s.app.get_checkout(id.clone()).await.unwrap().state, "released");
    s.clock.advance(Duration::minutes(1));
    s.app.housekeeping().await.unwrap();
    let c = s.app.get_checkout(id).await.unwrap();
    assert_eq!((c.state.as_str(), c.ended_by.as_deref()), ("closed", Some("system")));
    assert_eq!(s.app.get_account(ACCOUNT.into()).await.unwrap().state, "rotation_due");
    drop(ada);
}

#[tokio::test]
async fn a_drill_release_does_not_force_rotation() {
    let mut t = team().await;
    // Without a drill due, `kind: drill` is refused: it cannot be used to dodge rotation.
    let refused = post(
        &t.bo.client,
        t.s.url("/api/v1/checkouts"),
        json!({"account_id": ACCOUNT, "reason": "Monthly drill", "kind": "drill"}),
    )
    .await;
    assert_error(&refused, StatusCode::CONFLICT, "no_drill_due");
    open_drills(&mut t).await;
    let Team { s, ada: _ada, mut bo, mut cy } = t;
    let got = post(
        &bo.client,
        s.url("/api/v1/checkouts"),
        json!({"account_id": ACCOUNT, "reason": "Monthly drill", "kind": "drill"}),
    )
    .await;
    let id = got.1["id"].as_str().unwrap().to_owned();
    assert_eq!(got.1["duration_minutes"], 60, "default duration");
    decide(&s, &mut cy, &id, "approve").await;
    assert_eq!(reveal(&s, &mut bo, &id).await.0, StatusCode::OK);
    post(
        &bo.client,
        s.url(format!("/api/v1/checkouts/{id}/close")),
        json!({"note": "Drill: password and MFA accepted."}),
    )
    .await;
    assert_eq!(s.app.get_account(ACCOUNT.into()).await.unwrap().state, "available");
}

#[tokio::test]
async fn bad_checkout_input_is_refused_clearly() {
    let Team { s, ada, bo, .. } = team().await;
    let new = |body: Value| post(&bo.client, s.url("/api/v1/checkouts"), body);
    assert_error(&new(json!({"account_id": ACCOUNT, "reason": ""})).await, StatusCode::BAD_REQUEST, "invalid_text");
    assert_error(
        &new(json!({"account_id": ACCOUNT, "reason": "x".repeat(501)})).await,
        StatusCode::BAD_REQUEST,
        "invalid_text",
    );
    assert_error(
        &new(json!({"account_id": ACCOUNT, "reason": "r", "duration_minutes": 241})).await,
        StatusCode::BAD_REQUEST,
        "invalid_duration",
    );
    assert_error(
        &new(json!({"account_id": ACCOUNT, "reason": "r", "kind": "fun"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    assert_error(
        &new(json!({"account_id": "999999999999", "reason": "r"})).await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    assert_error(&new(json!({"reason": "r"})).await, StatusCode::BAD_REQUEST, "invalid_body");
    post(
        &ada.client,
        s.url("/api/v1/accounts"),
        json!({"account_id": "333333333333", "alias": "empty", "root_email": "e@example.com"}),
    )
    .await;
    assert_error(
        &new(json!({"account_id": "333333333333", "reason": "r"})).await,
        StatusCode::CONFLICT,
        "account_not_ready",
    );
    assert_error(&get(&bo.client, s.url("/api/v1/checkouts/nope")).await, StatusCode::NOT_FOUND, "checkout_not_found");
    assert_error(
        &get(&bo.client, s.url("/api/v1/checkouts?state=open")).await,
        StatusCode::BAD_REQUEST,
        "invalid_state",
    );
    assert_error(
        &post(&bo.client, s.url("/api/v1/checkouts/nope/approvals/start"), json!({})).await,
        StatusCode::NOT_FOUND,
        "checkout_not_found",
    );
    assert_error(
        &post(&s.client(), s.url("/api/v1/checkouts"), json!({"account_id": ACCOUNT, "reason": "r"})).await,
        StatusCode::UNAUTHORIZED,
        "not_signed_in",
    );
    let n: i64 = s.db().query_row("SELECT count(*) FROM checkouts", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn an_altered_approval_signature_makes_audit_verify_fail() {
    let Team { s, bo, mut cy, .. } = team().await;
    let id = request_id(&s, &bo, ACCOUNT).await;
    assert_eq!(decide(&s, &mut cy, &id, "approve").await.1["state"], "approved");
    let snapshot = || {
        let dir = tempfile::tempdir().unwrap();
        s.db().execute("VACUUM INTO ?1", [dir.path().join("breakglass.db").to_str().unwrap()]).unwrap();
        dir
    };
    let clean = snapshot();
    let out = breakglass(clean.path(), &["audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // Flip one signature byte in the approvals table.
    let bad = snapshot();
    let conn = rusqlite::Connection::open(bad.path().join("breakglass.db")).unwrap();
    let sig: String = conn.query_row("SELECT signature FROM approvals", [], |r| r.get(0)).unwrap();
    let mut raw = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &sig).unwrap();
    let last = raw.len() - 2;
    raw[last] ^= 0x01;
    conn.execute(
        "UPDATE approvals SET signature = ?1",
        [base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &raw)],
    )
    .unwrap();
    drop(conn);
    let out = breakglass(bad.path(), &["audit", "verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("approval") && stdout.contains("differs from the evidence in the audit log"), "{stdout}");

    // Swapping in another person's public key (to launder a forged approval) does not
    // help: keys are taken from the hash-chained enrolment entries.
    let swapped = snapshot();
    let conn = rusqlite::Connection::open(swapped.path().join("breakglass.db")).unwrap();
    conn.execute(
        "UPDATE credentials SET public_key = (SELECT public_key FROM credentials WHERE custodian_id = ?1 LIMIT 1)",
        [&bo.id],
    )
    .unwrap();
    drop(conn);
    let out = breakglass(swapped.path(), &["audit", "verify"]);
    assert!(out.status.success(), "the table copy of the key is not what verification trusts");
}

/// Copy the live database into a fresh dir and return it.
pub fn snapshot_db(s: &TestServer) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    s.db().execute("VACUUM INTO ?1", [dir.path().join("breakglass.db").to_str().unwrap()]).unwrap();
    dir
}

pub fn verify_out(dir: &std::path::Path) -> (i32, String) {
    let out = breakglass(dir, &["audit", "verify"]);
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `audit verify` must fail (exit 1); its report, for the caller to check what it names.
#[track_caller]
pub fn verify_fails(dir: &std::path::Path) -> String {
    let (code, out) = verify_out(dir);
    assert_eq!(code, 1, "{out}");
    out
}

/// Append entries to a copied log as a modified server would: the chain stays valid.
/// Entries are dated by the test's fixed clock; returns their seq numbers.
pub fn forge(s: &TestServer, dir: &std::path::Path, entries: &[(&str, &str, serde_json::Value)]) -> Vec<u64> {
    let conn = rusqlite::Connection::open(dir.join("breakglass.db")).unwrap();
    entries
        .iter()
        .map(|(actor, action, details)| {
            breakglass::store::audit::append(&conn, s.clock.now(), actor, action, "account:123456789012", details)
                .unwrap()
                .seq
        })
        .collect()
}

#[tokio::test]
async fn audit_verify_replays_quorum_and_catches_a_release_a_modified_server_wrote() {
    let Team { s, bo, mut cy, .. } = team().await;
    let id = request_id(&s, &bo, ACCOUNT).await;
    let requester = format!("custodian:{}", bo.id);

    // No approval at all, yet "approved" and "released": the chain is intact, the story is not.
    let forged = snapshot_db(&s);
    forge(
        &s,
        forged.path(),
        &[
            (&requester, "checkout.approved", json!({"checkout": id, "approvals": 1})),
            (&requester, "checkout.released", json!({"checkout": id})),
        ],
    );
    let out = verify_fails(forged.path());
    assert!(out.contains("approved with 0 verified approval(s)"), "{out}");

    // A real approval by Cy, then a copy of her signed evidence claimed as Ada's.
    assert_eq!(decide(&s, &mut cy, &id, "approve").await.1["state"], "approved");
    let (details,): (String,) = s
        .db()
        .query_row("SELECT details FROM audit_log WHERE action = 'checkout.approval_recorded'", [], |r| {
            Ok((r.get(0)?,))
        })
        .unwrap();
    let d: Value = serde_json::from_str(&details).unwrap();
    let (issued,): (String,) = s
        .db()
        .query_row("SELECT details FROM audit_log WHERE action = 'approval.challenge_issued'", [], |r| Ok((r.get(0)?,)))
        .unwrap();
    let someone_else = "custodian:00000000-0000-4000-8000-000000000000";
    let stolen = snapshot_db(&s);
    forge(
        &s,
        stolen.path(),
        &[
            (someone_else, "approval.challenge_issued", serde_json::from_str(&issued).unwrap()),
            (someone_else, "checkout.approval_recorded", d.clone()),
        ],
    );
    let out = verify_fails(stolen.path());
    assert!(out.contains("signed with a credential of custodian:"), "{out}");

    // Turning Cy's recorded decision into its opposite in the table is caught too.
    let flipped = snapshot_db(&s);
    rusqlite::Connection::open(flipped.path().join("breakglass.db"))
        .unwrap()
        .execute("UPDATE approvals SET decision = 'deny'", [])
        .unwrap();
    let out = verify_fails(flipped.path());
    assert!(out.contains("stored decision or evidence differs"), "{out}");

    // The untouched log verifies, including the release's own assertion.
    let mut bo = bo;
    assert_eq!(reveal(&s, &mut bo, &id).await.0, StatusCode::OK);
    let (code, out) = verify_out(snapshot_db(&s).path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 WebAuthn signatures verified"), "approval + release: {out}");
}

#[tokio::test]
async fn an_approval_by_someone_disabled_since_no_longer_counts_at_release() {
    let Team { s, ada, mut bo, mut cy } = team().await;
    let id = request_id(&s, &bo, ACCOUNT).await;
    assert_eq!(decide(&s, &mut cy, &id, "approve").await.1["state"], "approved");
    let got = post(
        &ada.client,
        s.url(format!("/api/v1/custodians/{}/disable", cy.id)),
        json!({"reason": "lost laptop with key"}),
    )
    .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert_error(&reveal(&s, &mut bo, &id).await, StatusCode::CONFLICT, "quorum_no_longer_met");
    let n: i64 = s
        .db()
        .query_row("SELECT count(*) FROM audit_log WHERE action = 'checkout.revealed'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn rotation_through_a_checkout_only_when_that_checkout_made_it_due() {
    let mut t = team().await;
    open_drills(&mut t).await;
    let Team { s, ada: _ada, mut bo, mut cy } = t;
    // A drill does not make rotation due, so its requester cannot overwrite the password.
    let got = post(
        &bo.client,
        s.url("/api/v1/checkouts"),
        json!({"account_id": ACCOUNT, "reason": "Monthly drill", "kind": "drill"}),
    )
    .await;
    let drill = got.1["id"].as_str().unwrap().to_owned();
    decide(&s, &mut cy, &drill, "approve").await;
    reveal(&s, &mut bo, &drill).await;
    post(&bo.client, s.url(format!("/api/v1/checkouts/{drill}/close")), json!({"note": "drill ok"})).await;
    assert_error(
        &put(&bo.client, s.url(format!("/api/v1/checkouts/{drill}/rotation")), json!({"value": "Attacker-chosen-1"}))
            .await,
        StatusCode::CONFLICT,
        "rotation_not_due",
    );
    // An emergency: rotation once, then never again through the same checkout.
    let id = request_id(&s, &bo, ACCOUNT).await;
    decide(&s, &mut cy, &id, "approve").await;
    reveal(&s, &mut bo, &id).await;
    assert_eq!(
        put(&bo.client, s.url(format!("/api/v1/checkouts/{id}/rotation")), json!({"value": "New-root-pw-001"})).await.0,
        StatusCode::CREATED
    );
    assert_error(
        &put(&bo.client, s.url(format!("/api/v1/checkouts/{id}/rotation")), json!({"value": "New-root-pw-002"})).await,
        StatusCode::CONFLICT,
        "rotation_not_due",
    );
    assert_error(
        &put(&cy.client, s.url(format!("/api/v1/checkouts/{id}/rotation")), json!({"value": "New-root-pw-003"})).await,
        StatusCode::FORBIDDEN,
        "not_the_requester",
    );
    let versions: i64 = s
        .db()
        .query_row(
            "SELECT count(*) FROM secret_versions WHERE account_id = ?1 AND kind = 'root_password'",
            [ACCOUNT],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(versions, 2, "the deposit plus exactly one rotation");
}

#[tokio::test]
async fn a_newly_added_key_cannot_approve_until_its_own_cooling_off_ends() {
    let Team { s, bo, mut cy, .. } = team().await;
    let new_key = s.add_key(&cy).await;
    let id = request_id(&s, &bo, ACCOUNT).await;
    let (_, start) = approval_start(&s, &cy, &id).await;
    assert_eq!(
        start["publicKey"]["allowCredentials"].as_array().unwrap().len(),
        1,
        "only the old key is offered: {start}"
    );
    let old_key = std::mem::replace(&mut cy.key, new_key);
    let st: AuthStart = serde_json::from_value(start).unwrap();
    assert!(cy.key.do_authentication(s.origin_url(), st.options).is_err(), "the new key cannot answer");
    cy.key = old_key;
    assert_eq!(decide(&s, &mut cy, &id, "approve").await.1["state"], "approved");
}

#[tokio::test]
async fn a_rotation_through_a_checkout_is_announced_with_that_checkout() {
    let Team { s, ada, mut bo, mut cy } = team().await;
    let id = request_id(&s, &bo, ACCOUNT).await;
    decide(&s, &mut cy, &id, "approve").await;
    reveal(&s, &mut bo, &id).await;
    let got =
        put(&bo.client, s.url(format!("/api/v1/checkouts/{id}/rotation")), json!({"value": "New-root-pw-001"})).await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    let last_deposit = || -> (Option<String>, Value) {
        let (checkout, message): (Option<String>, String) = s
            .db()
            .query_row(
                "SELECT checkout_id, message FROM outbox WHERE event = 'secret.deposited' ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        (checkout, serde_json::from_str(&message).unwrap())
    };
    let (checkout, message) = last_deposit();
    assert_eq!(checkout.as_deref(), Some(id.as_str()));
    assert_eq!(message["checkout"]["id"], id.as_str(), "{message}");
    assert!(message["checkout"]["requester"].as_str().unwrap().starts_with("Bo Requester"), "{message}");
    // An admin's deposit on the account belongs to no checkout.
    let got = put(
        &ada.client,
        s.url(format!("/api/v1/accounts/{ACCOUNT}/secrets/root_password")),
        json!({"value": "Admin-set-pw-0001"}),
    )
    .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    let (checkout, message) = last_deposit();
    assert_eq!((checkout, &message["checkout"]), (None, &Value::Null));
}

#[tokio::test]
async fn a_release_challenge_used_by_someone_else_is_refused_without_inviting_them_to_release() {
    let Team { s, ada: _ada, bo, mut cy } = team().await;
    let id = request_id(&s, &bo, ACCOUNT).await;
    decide(&s, &mut cy, &id, "approve").await;
    let (status, start) = post(&bo.client, s.url(format!("/api/v1/checkouts/{id}/release/start")), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{start}");
    let st: AuthStart = serde_json::from_value(start).unwrap();
    // Cy answers Bo's release challenge with her own key, in her own session.
    let mut options = st.options;
    let cy_cred: Vec<String> = s
        .db()
        .prepare("SELECT k.id FROM credentials k JOIN custodians c ON c.id = k.custodian_id WHERE c.email = 'cy@example.com'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut json_options = serde_json::to_value(&options).unwrap();
    json_options["publicKey"]["allowCredentials"] = json!([{"type": "public-key", "id": cy_cred[0]}]);
    options = serde_json::from_value(json_options).unwrap();
    let cred = cy.key.do_authentication(s.origin_url(), options).unwrap();
    let got = post(
        &cy.client,
        s.url(format!("/api/v1/checkouts/{id}/release/finish")),
        json!({"ceremony_id": st.ceremony_id, "credential": cred}),
    )
    .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "challenge_not_for_this_person");
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(!message.contains("Start your own"), "{message}");
    assert!(message.contains("Only the requester"), "{message}");
}

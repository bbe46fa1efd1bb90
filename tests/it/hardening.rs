//! Outside-review findings (issue 9, section 3 and 5): policies that can never be met,
//! display names that lie, a full disk, sessions that do not write on every request,
//! and a refused enrolment that leaves its invite usable.
use breakglass::domain::Role;
use reqwest::StatusCode;
use serde_json::json;
use time::Duration;
use webauthn_authenticator_rs::{WebauthnAuthenticator, softpasskey::SoftPasskey};

use crate::{
    checkouts::{ACCOUNT, Team, team},
    support::*,
};

fn policy_url(s: &TestServer) -> String {
    s.url(format!("/api/v1/accounts/{ACCOUNT}/policy"))
}

fn approvals_required(s: &TestServer) -> i64 {
    s.db().query_row("SELECT approvals_required FROM accounts WHERE account_id = ?1", [ACCOUNT], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn a_policy_change_is_checked_against_the_resulting_approver_set() {
    let Team { s, ada, bo, cy } = team().await;
    let audit_before = audit_actions(&s.db()).len();
    // Every custodian may approve: three are enrolled, so a requester has two others.
    let got = put(&ada.client, policy_url(&s), json!({"approvals_required": 3})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_policy");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("3 are enrolled"), "{}", got.1);
    let got = put(&ada.client, policy_url(&s), json!({"approvals_required": 2})).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);

    // Two listed approvers, then approvals_required alone raised past them: refused.
    let got = put(&ada.client, policy_url(&s), json!({"approvers": [bo.id, cy.id]})).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let audit_mid = audit_actions(&s.db()).len();
    assert_eq!(audit_mid, audit_before + 2);
    let got = put(&ada.client, policy_url(&s), json!({"approvals_required": 3})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_policy");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("2 active custodian"), "{}", got.1);
    assert_eq!(approvals_required(&s), 2, "nothing changed");
    assert_eq!(audit_actions(&s.db()).len(), audit_mid, "and nothing was audited");

    // A listed approver who is disabled no longer counts.
    let got = post(&ada.client, s.url(format!("/api/v1/custodians/{}/disable", cy.id)), json!({})).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let got = put(&ada.client, policy_url(&s), json!({"veto": false})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_policy");
    let got = put(&ada.client, policy_url(&s), json!({"approvals_required": 1, "veto": false})).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert_eq!(approvals_required(&s), 1);
}

#[tokio::test]
async fn names_with_direction_overrides_or_invisible_characters_are_refused_and_the_invite_survives() {
    let s = TestServer::start().await;
    let token = s.invite(&[Role::Custodian]).await;
    let c = s.client();
    for name in ["Bo\u{202E}nimda", "B\u{200B}o", "\u{2067}Bo", "Bo\u{FEFF}"] {
        let got = post(
            &c,
            s.url("/api/v1/enrol/start"),
            json!({"invite_token": token, "name": name, "email": "bo@example.com"}),
        )
        .await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_text");
    }
    let got =
        post(&c, s.url("/api/v1/enrol/start"), json!({"invite_token": token, "name": "Bo", "email": "bo@example.com"}))
            .await;
    assert_eq!(got.0, StatusCode::OK, "the invite is still usable: {}", got.1);

    // Aliases and labels go through the same check.
    let ada = s.admin().await;
    let got = post(
        &ada.client,
        s.url("/api/v1/accounts"),
        json!({"account_id": "123456789012", "alias": "prod\u{202E}ved", "root_email": "a@example.com"}),
    )
    .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_text");
}

#[tokio::test]
async fn a_second_custodian_with_the_same_name_is_flagged_in_the_announcement() {
    let s = TestServer::start().await;
    let ada = s.admin().await;
    let twin = s.enrol(&[Role::Custodian], "  ada   ADMIN ", "ada2@example.com").await;
    let other = s.enrol(&[Role::Custodian], "Bo", "bo@example.com").await;
    let details = |id: &str| -> serde_json::Value {
        let d: String = s
            .db()
            .query_row(
                "SELECT details FROM audit_log WHERE action = 'custodian.enrolled' AND subject = ?1",
                [format!("custodian:{id}")],
                |r| r.get(0),
            )
            .unwrap();
        serde_json::from_str(&d).unwrap()
    };
    assert_eq!(details(&twin.id)["same_name_as"], json!([ada.id]));
    assert!(details(&other.id).get("same_name_as").is_none());
    assert!(details(&ada.id).get("same_name_as").is_none());
    let announced = |id: &str| -> (String, String) {
        s.db()
            .query_row(
                "SELECT o.severity, o.message FROM outbox o JOIN audit_log a ON a.seq = o.audit_seq \
                 WHERE a.action = 'custodian.enrolled' AND a.subject = ?1",
                [format!("custodian:{id}")],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    let (severity, message) = announced(&twin.id);
    assert_eq!(severity, "high");
    assert!(message.contains("Another active custodian has the same name"), "announced: {message}");
    let (severity, message) = announced(&other.id);
    assert_eq!(severity, "warning");
    assert!(!message.contains("same name"), "{message}");
}

#[tokio::test]
async fn a_refused_enrolment_does_not_use_up_the_invite() {
    let s = TestServer::start().await;
    let token = s.invite(&[Role::Custodian]).await;
    let c = s.client();
    let start = || {
        post(&c, s.url("/api/v1/enrol/start"), json!({"invite_token": token, "name": "Bo", "email": "bo@example.com"}))
    };
    let (_, a) = start().await;
    let (_, b) = start().await;
    let a: RegStart = serde_json::from_value(a).unwrap();
    let b: RegStart = serde_json::from_value(b).unwrap();
    let mut key = SoftPasskey::new(true);
    // An answer to another ceremony's challenge is refused...
    let wrong = key.do_registration(s.origin_url(), a.options).unwrap();
    let got = post(&c, s.url("/api/v1/enrol/finish"), json!({"ceremony_id": b.ceremony_id, "credential": wrong})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "webauthn_failed");
    let used: Option<i64> = s.db().query_row("SELECT used_at FROM invites", [], |r| r.get(0)).unwrap();
    assert_eq!(used, None, "the refused attempt did not use the invite");
    // ...and the invite still enrols, through a fresh ceremony.
    let (_, fresh) = start().await;
    let fresh: RegStart = serde_json::from_value(fresh).unwrap();
    let cred = key.do_registration(s.origin_url(), fresh.options).unwrap();
    let got =
        post(&c, s.url("/api/v1/enrol/finish"), json!({"ceremony_id": fresh.ceremony_id, "credential": cred})).await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
}

#[tokio::test]
async fn a_full_disk_gets_a_clear_error_and_changes_nothing() {
    let s = TestServer::start().await;
    let ada = s.admin().await;
    let accounts =
        |s: &TestServer| -> i64 { s.db().query_row("SELECT count(*) FROM accounts", [], |r| r.get(0)).unwrap() };
    let audit_before = audit_actions(&s.db()).len();
    // SQLITE_FULL on the server's own connection: the database may not grow.
    s.app.db.with(|conn| {
        let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0)).unwrap();
        conn.pragma_update(None, "max_page_count", pages).unwrap();
    });
    let mut last = (StatusCode::OK, json!(null));
    for i in 0..200 {
        let alias = format!("acct-{i}-{}", "x".repeat(50));
        last = post(
            &ada.client,
            s.url("/api/v1/accounts"),
            json!({"account_id": format!("{:012}", 100_000_000_000u64 + i), "alias": alias, "root_email": "root@example.com"}),
        )
        .await;
        if last.0 != StatusCode::CREATED {
            break;
        }
    }
    assert_error(&last, StatusCode::INSUFFICIENT_STORAGE, "storage_full");
    assert!(last.1["error"]["message"].as_str().unwrap().contains("disk is full"), "{}", last.1);
    let created = accounts(&s);
    assert_eq!(audit_actions(&s.db()).len() as i64, audit_before as i64 + created, "no account without its entry");
    // Reads still work while the disk is full; writes work again once there is room.
    assert_eq!(get(&ada.client, s.url("/api/v1/accounts")).await.0, StatusCode::OK);
    s.app.db.with(|conn| conn.pragma_update(None, "max_page_count", 1_000_000).unwrap());
    let got = post(
        &ada.client,
        s.url("/api/v1/accounts"),
        json!({"account_id": "999999999999", "alias": "after", "root_email": "root@example.com"}),
    )
    .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
}

#[tokio::test]
async fn an_authenticated_read_writes_the_session_at_most_once_a_minute() {
    let s = TestServer::start().await;
    let ada = s.admin().await;
    let conn = s.db();
    let last_seen = || -> i64 { conn.query_row("SELECT last_seen_at FROM sessions", [], |r| r.get(0)).unwrap() };
    let data_version = || -> i64 { conn.query_row("PRAGMA data_version", [], |r| r.get(0)).unwrap() };
    let t0 = last_seen();
    let v0 = data_version();
    for _ in 0..5 {
        assert_eq!(get(&ada.client, s.url("/api/v1/me")).await.0, StatusCode::OK);
    }
    s.clock.advance(Duration::seconds(59));
    assert_eq!(get(&ada.client, s.url("/api/v1/accounts")).await.0, StatusCode::OK);
    assert_eq!(last_seen(), t0);
    assert_eq!(data_version(), v0, "no write at all for six authenticated reads within a minute");
    s.clock.advance(Duration::seconds(1));
    assert_eq!(get(&ada.client, s.url("/api/v1/me")).await.0, StatusCode::OK);
    assert_eq!(last_seen(), t0 + 60, "touched once the minute is up");
    assert_ne!(data_version(), v0);
    // Idle expiry still holds: 30 minutes after the last touch the session is over.
    s.clock.advance(Duration::minutes(30));
    assert_error(&get(&ada.client, s.url("/api/v1/me")).await, StatusCode::UNAUTHORIZED, "session_expired");
}

#[tokio::test]
async fn the_audit_export_streams_the_whole_log_in_order() {
    let s = TestServer::start().await;
    let _ada = s.admin().await;
    let au = s.enrol(&[Role::Auditor], "Au", "au@example.com").await;
    {
        let mut conn = breakglass::store::open(&s.config.db_path()).unwrap();
        let tx = conn.transaction().unwrap();
        for i in 0..20_000 {
            breakglass::store::audit::append(
                &tx,
                start_time(),
                "host:cli",
                "secret.deposited",
                "account:123456789012",
                &json!({"kind": "recovery_notes", "version": i, "note": "x".repeat(200)}),
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let total: i64 = s.db().query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0)).unwrap();
    let res = au.client.get(s.url("/api/v1/audit/export")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    // Streamed: the length is not known up front (a body built in memory has one).
    assert!(res.headers().get("content-length").is_none(), "{:?}", res.headers());
    let body = res.text().await.unwrap();
    assert!(body.len() > 4 * breakglass::app::audit_export::CHUNK_BYTES, "several chunks: {}", body.len());
    let mut expected = 1;
    for line in body.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(entry["seq"], expected);
        expected += 1;
    }
    assert_eq!(expected - 1, total, "every entry, once, in order");
    assert!(body.ends_with('\n'));
}

/// The bundled SQLite (built with STAT4) re-prepares a cached statement for every new
/// value bound before an ORDER BY or min/max on an index: tens of microseconds each, on
/// every checkout step. The hot per-checkout lookups sort in Rust instead; each is run
/// for three different keys and must never have been re-prepared.
#[test]
fn hot_per_checkout_lookups_are_prepared_once_not_for_every_key() {
    use breakglass::store::{accounts, checkouts, outbox, people};
    use rusqlite::StatementStatus::{RePrepare, Run};
    let dir = tempfile::tempdir().unwrap();
    let conn = breakglass::store::open(&dir.path().join("t.db")).unwrap();
    // And the savepoint's statement journal never spills to a temporary file (2 = MEMORY).
    let temp_store: i64 = conn.pragma_query_value(None, "temp_store", |r| r.get(0)).unwrap();
    assert_eq!(temp_store, 2);
    for key in ["a", "b", "c"] {
        checkouts::approvals_of(&conn, key).unwrap();
        people::credentials_of(&conn, key).unwrap();
        accounts::latest_secret(&conn, key, "root_password").unwrap();
        outbox::list(&conn, None, Some(key), 100, 10).unwrap();
    }
    for sql in [
        checkouts::approvals_of_sql(),
        people::credentials_of_sql(),
        accounts::SECRET_VERSIONS_SQL.to_owned(),
        outbox::by_checkout_sql(),
    ] {
        let stmt = conn.prepare_cached(&sql).unwrap();
        assert_eq!(stmt.get_status(Run), 3, "the function runs this very statement: {sql}");
        assert_eq!(stmt.get_status(RePrepare), 0, "re-prepared: {sql}");
    }
    // The check can fail: the same lookup with an ORDER BY is re-prepared for each key.
    let sorted = format!("{} ORDER BY at, id", checkouts::approvals_of_sql());
    for key in ["a", "b", "c"] {
        conn.prepare_cached(&sorted).unwrap().query([key]).unwrap().next().unwrap();
    }
    assert_eq!(conn.prepare_cached(&sorted).unwrap().get_status(RePrepare), 2);
}

/// The deployment files carry what the server relies on and SECURITY.md promises of
/// them: the unit's limits and hardening, and a proxy block in the RUNBOOK that appends
/// the address it saw to `X-Forwarded-For` instead of passing the client's claim through
/// (the server's side of that is `behind_a_trusted_proxy_…` in http_hygiene).
#[test]
fn the_unit_and_the_runbooks_proxy_block_set_what_the_server_relies_on() {
    let read = |path: &str| std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let unit = read("deploy/breakglass.service");
    let directives: Vec<&str> = unit.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    for wanted in [
        "LimitNOFILE=65536",
        "LimitCORE=0",
        "UMask=0077",
        "StateDirectoryMode=0700",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "MemoryDenyWriteExecute=yes",
        "CapabilityBoundingSet=",
    ] {
        assert!(directives.contains(&wanted), "deploy/breakglass.service lacks {wanted}");
    }
    let runbook = read("deploy/RUNBOOK.md");
    let block = runbook.split("```nginx").nth(1).and_then(|rest| rest.split("```").next()).expect("the nginx block");
    let live: Vec<&str> = block.lines().map(|l| l.split('#').next().unwrap_or_default().trim()).collect();
    assert!(live.contains(&"proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"), "{block}");
    assert!(!live.iter().any(|l| l.contains("$http_x_forwarded_for")), "passes the client's claim through: {block}");
    assert!(live.contains(&"client_max_body_size  64k;"), "the body limit matches http.body_limit_bytes: {block}");
}

//! Monthly drills on a fixed clock: reminders, overdue escalation, catch-up after
//! downtime, the checklist, evidence and coverage.
use breakglass::{app::drills::DrillTick, clock::Clock};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::{Duration, macros::datetime};

use crate::{checkouts::*, support::*};

fn count(s: &TestServer, sql: &str) -> i64 {
    s.db().query_row(sql, [], |r| r.get(0)).unwrap()
}

fn all_pass() -> Value {
    all_pass_of(&breakglass::domain::drill::CHECKLIST)
}

/// Every item of `checklist` answered "pass".
pub fn all_pass_of(checklist: &[(&str, &str)]) -> Value {
    checklist.iter().map(|(k, _)| ((*k).to_owned(), json!({"result": "pass"}))).collect()
}

/// Bo runs a drill checkout on `account` with Cy approving; returns its id.
async fn drill_checkout(t: &mut Team, account: &str) -> String {
    let got = post(
        &t.bo.client,
        t.s.url("/api/v1/checkouts"),
        json!({"account_id": account, "reason": "Monthly drill", "kind": "drill"}),
    )
    .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    let id = got.1["id"].as_str().unwrap().to_owned();
    assert_eq!(decide(&t.s, &mut t.cy, &id, "approve").await.1["state"], "approved");
    assert_eq!(reveal(&t.s, &mut t.bo, &id).await.0, StatusCode::OK);
    id
}

/// `client` submits the checklist `items` for `drill`, run in `checkout`.
pub async fn submit_checklist(
    s: &TestServer,
    client: &reqwest::Client,
    drill: &str,
    checkout: &str,
    items: Value,
) -> (StatusCode, Value) {
    post(client, s.url(format!("/api/v1/drills/{drill}/checklist")), json!({"checkout_id": checkout, "items": items}))
        .await
}

pub async fn open_drill_id(t: &Team, account: &str) -> String {
    let (_, st) = get(&t.ada.client, t.s.url("/api/v1/drills/status")).await;
    st["accounts"].as_array().unwrap().iter().find(|a| a["account_id"] == account).unwrap()["open_drill"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_due_drill_is_announced_then_escalated_when_overdue_and_weekly_after() {
    let t = team().await;
    assert_eq!(t.s.app.run_drills().await.unwrap(), DrillTick::default(), "nothing due in November");
    t.s.clock.set(datetime!(2026-12-01 08:59:59 UTC));
    assert_eq!(t.s.app.run_drills().await.unwrap().opened, 0);
    t.s.clock.set(datetime!(2026-12-01 09:00:00 UTC));
    assert_eq!(t.s.app.run_drills().await.unwrap().opened, 2, "one per account");
    assert_eq!(t.s.app.run_drills().await.unwrap(), DrillTick::default(), "a second tick in the period opens nothing");
    assert_eq!(count(&t.s, "SELECT count(*) FROM drills"), 2);
    let (sev, subject, message): (String, String, String) =
        t.s.db()
            .query_row(
                "SELECT severity, subject, message FROM outbox WHERE event = 'drill.due' ORDER BY id LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
    assert_eq!(sev, "warning");
    assert!(subject.contains("drill due"), "{subject}");
    let m: Value = serde_json::from_str(&message).unwrap();
    for who in ["ada@example.com", "bo@example.com", "cy@example.com"] {
        assert!(m["summary"].as_str().unwrap().contains(who), "the reminder names the custodians: {m}");
    }

    t.s.clock.set(datetime!(2026-12-08 08:59:59 UTC));
    assert_eq!(t.s.app.run_drills().await.unwrap().became_overdue, 0, "still within the grace period");
    t.s.clock.set(datetime!(2026-12-08 09:00:00 UTC));
    assert_eq!(t.s.app.run_drills().await.unwrap().became_overdue, 2);
    assert_eq!(count(&t.s, "SELECT count(*) FROM outbox WHERE event = 'drill.overdue' AND severity = 'high'"), 2);
    t.s.clock.advance(Duration::days(6));
    assert_eq!(t.s.app.run_drills().await.unwrap(), DrillTick::default());
    t.s.clock.advance(Duration::days(1));
    assert_eq!(t.s.app.run_drills().await.unwrap().reminded_overdue, 2, "weekly repeats");
    assert_eq!(count(&t.s, "SELECT count(*) FROM outbox WHERE event = 'drill.overdue'"), 4);
}

#[tokio::test]
async fn a_drill_completed_on_time_passes_sends_no_overdue_and_counts_for_coverage() {
    let mut t = team().await;
    open_drills(&mut t).await;
    let drill = open_drill_id(&t, ACCOUNT).await;
    let checkout = drill_checkout(&mut t, ACCOUNT).await;
    let (status, d) = submit_checklist(&t.s, &t.bo.client, &drill, &checkout, all_pass()).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["state"], "passed");
    let emails: Vec<&str> =
        d["participants"].as_array().unwrap().iter().map(|p| p["email"].as_str().unwrap()).collect();
    assert_eq!(emails.len(), 2, "requester and approver: {d}");
    assert_eq!(
        t.s.app.get_account(ACCOUNT.into()).await.unwrap().state,
        "checked_out",
        "a drill release does not force rotation"
    );
    post(&t.bo.client, t.s.url(format!("/api/v1/checkouts/{checkout}/close")), json!({"note": "drill"})).await;
    assert_eq!(t.s.app.get_account(ACCOUNT.into()).await.unwrap().state, "available");

    t.s.clock.set(datetime!(2026-12-09 09:00:00 UTC));
    assert_eq!(t.s.app.run_drills().await.unwrap().became_overdue, 1, "only the other account");
    let overdue: String =
        t.s.db().query_row("SELECT account_id FROM drills WHERE state = 'overdue'", [], |r| r.get(0)).unwrap();
    assert_eq!(overdue, OTHER);

    let st = t.s.app.drill_status().await.unwrap();
    let mine = st.accounts.iter().find(|a| a.account_id == ACCOUNT).unwrap();
    assert_eq!(mine.last_proven_access.as_ref().unwrap().completed_at.as_deref(), Some("2026-12-01T09:00:00Z"));
    assert!(mine.open_drill.is_none() && mine.flag.is_none());
    let exercised: Vec<&str> =
        st.coverage.iter().filter(|c| c.last_took_part.is_some()).map(|c| c.custodian.email.as_str()).collect();
    assert_eq!(exercised, ["bo@example.com", "cy@example.com"]);
    assert_eq!(
        st.not_exercised.iter().map(|p| p.email.as_str()).collect::<Vec<_>>(),
        ["ada@example.com"],
        "listed so every key-holder is exercised"
    );
    let actions = audit_actions(&t.s.db());
    assert!(actions.contains(&"drill.passed".to_string()));
}

#[tokio::test]
async fn three_months_of_downtime_catch_up_with_one_drill_per_account() {
    let t = team().await;
    t.s.clock.set(datetime!(2027-03-15 12:00:00 UTC));
    let tick = t.s.app.run_drills().await.unwrap();
    assert_eq!(tick.opened, 2);
    let periods: Vec<String> =
        t.s.db()
            .prepare("SELECT period FROM drills ORDER BY account_id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    assert_eq!(periods, ["2027-03-01T09:00:00Z", "2027-03-01T09:00:00Z"]);
    assert_eq!(t.s.app.run_drills().await.unwrap().opened, 0);
    let next: i64 =
        t.s.db()
            .query_row("SELECT next_drill_due_at FROM accounts WHERE account_id = ?1", [ACCOUNT], |r| r.get(0))
            .unwrap();
    assert_eq!(next, datetime!(2027-04-01 09:00:00 UTC).unix_timestamp());
    // The next period's drill supersedes an undone one.
    t.s.clock.set(datetime!(2027-04-01 09:00:00 UTC));
    let tick = t.s.app.run_drills().await.unwrap();
    assert_eq!((tick.opened, tick.missed), (2, 2));
}

#[tokio::test]
async fn a_failed_item_flags_the_account_and_wrong_checkouts_are_refused() {
    let mut t = team().await;
    open_drills(&mut t).await;
    let drill = open_drill_id(&t, ACCOUNT).await;
    // An emergency checkout is not a drill.
    let emergency = request_id(&t.s, &t.bo, OTHER).await;
    let url = t.s.url(format!("/api/v1/drills/{drill}/checklist"));
    assert_error(
        &post(&t.bo.client, &url, json!({"checkout_id": emergency, "items": all_pass()})).await,
        StatusCode::CONFLICT,
        "checkout_not_for_this_drill",
    );
    let checkout = drill_checkout(&mut t, ACCOUNT).await;
    assert_error(
        &post(&t.cy.client, &url, json!({"checkout_id": checkout, "items": all_pass()})).await,
        StatusCode::FORBIDDEN,
        "not_the_requester",
    );
    let mut items = all_pass();
    items.as_object_mut().unwrap().remove("mfa_accepted");
    assert_error(
        &post(&t.bo.client, &url, json!({"checkout_id": checkout, "items": items})).await,
        StatusCode::BAD_REQUEST,
        "invalid_checklist",
    );
    let mut items = all_pass();
    items["no_root_access_keys"] = json!({"result": "fail", "note": "an old access key AKIA… still exists"});
    let (status, d) = post(&t.bo.client, &url, json!({"checkout_id": checkout, "items": items.clone()})).await;
    assert_eq!((status, d["state"].as_str()), (StatusCode::OK, Some("failed")), "{d}");
    assert_eq!(d["failed_items"], json!(["no_root_access_keys"]));
    let st = t.s.app.drill_status().await.unwrap();
    let flag = st.accounts.iter().find(|a| a.account_id == ACCOUNT).unwrap().flag.clone().unwrap();
    assert_eq!(flag["failed_items"], json!(["no_root_access_keys"]));
    assert_eq!(count(&t.s, "SELECT count(*) FROM outbox WHERE event = 'drill.failed' AND severity = 'high'"), 1);
    // The same checkout cannot simply be re-submitted as a pass…
    assert_error(
        &post(&t.bo.client, &url, json!({"checkout_id": checkout, "items": all_pass()})).await,
        StatusCode::CONFLICT,
        "checkout_not_for_this_drill",
    );
    post(&t.bo.client, t.s.url(format!("/api/v1/checkouts/{checkout}/close")), json!({"note": "drill"})).await;
    // …and while access is unproven, the team is reminded weekly (high).
    t.s.clock.advance(Duration::days(7));
    assert_eq!(t.s.app.run_drills().await.unwrap().reminded_overdue, 1);
    assert_eq!(count(&t.s, "SELECT count(*) FROM outbox WHERE event = 'drill.flagged' AND severity = 'high'"), 1);
    // After fixing it, a new drill checkout and a passing checklist clear the flag.
    sign_in_all(&mut t).await;
    let retest = drill_checkout(&mut t, ACCOUNT).await;
    let (status, d) = post(&t.bo.client, &url, json!({"checkout_id": retest, "items": all_pass()})).await;
    assert_eq!((status, d["state"].as_str()), (StatusCode::OK, Some("passed")), "{d}");
    assert!(
        t.s.app.drill_status().await.unwrap().accounts.iter().find(|a| a.account_id == ACCOUNT).unwrap().flag.is_none()
    );
    assert_error(
        &post(&t.bo.client, &url, json!({"checkout_id": retest, "items": all_pass()})).await,
        StatusCode::CONFLICT,
        "drill_closed",
    );
    t.s.clock.advance(Duration::days(7));
    t.s.app.run_drills().await.unwrap();
    assert_eq!(
        count(&t.s, "SELECT count(*) FROM outbox WHERE event = 'drill.flagged'"),
        1,
        "no more reminders once it passed"
    );
    sign_in_all(&mut t).await;
    assert_error(
        &post(
            &t.bo.client,
            t.s.url("/api/v1/drills/nope/checklist"),
            json!({"checkout_id": checkout, "items": all_pass()}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "drill_not_found",
    );
}

#[tokio::test]
async fn the_export_holds_exactly_the_drills_checklists_and_approvals_of_the_period() {
    let mut t = team().await;
    open_drills(&mut t).await;
    let drill = open_drill_id(&t, ACCOUNT).await;
    let checkout = drill_checkout(&mut t, ACCOUNT).await;
    submit_checklist(&t.s, &t.bo.client, &drill, &checkout, all_pass()).await;
    t.s.clock.set(datetime!(2027-01-01 09:00:00 UTC));
    t.s.app.run_drills().await.unwrap();
    sign_in_all(&mut t).await;

    let (status, body) =
        send(t.ada.client.get(t.s.url("/api/v1/drills/export?since=2026-12-01T00:00:00Z&until=2027-01-01T00:00:00Z")))
            .await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<Value> = body.as_str().unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "December's two drills, not January's");
    let passed = lines.iter().find(|l| l["drill"]["id"] == drill.as_str()).unwrap();
    assert_eq!(passed["drill"]["checklist"]["mfa_accepted"]["result"], "pass");
    assert_eq!(passed["checkout"]["id"], checkout.as_str());
    assert_eq!(passed["approvals"].as_array().unwrap().len(), 1);
    assert!(passed["approvals"][0]["evidence"]["signature"].as_str().unwrap().len() > 40);
    let other = lines.iter().find(|l| l["drill"]["account_id"] == OTHER).unwrap();
    assert_eq!(other["drill"]["state"], "missed");

    let (status, csv) = send(
        t.ada
            .client
            .get(t.s.url("/api/v1/drills/export?format=csv&since=2026-12-01T00:00:00Z&until=2027-01-01T00:00:00Z")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let csv = csv.as_str().unwrap().to_owned();
    assert_eq!(csv.lines().count(), 3, "header and two rows:\n{csv}");
    assert!(csv.lines().next().unwrap().contains("root_password_accepted,mfa_accepted"));
    assert_error(&get(&t.bo.client, t.s.url("/api/v1/drills/export")).await, StatusCode::FORBIDDEN, "forbidden_role");
    assert_error(
        &get(&t.ada.client, t.s.url("/api/v1/drills/export?format=xml")).await,
        StatusCode::BAD_REQUEST,
        "invalid_format",
    );
    assert_error(
        &get(&t.ada.client, t.s.url("/api/v1/drills/export?since=yesterday")).await,
        StatusCode::BAD_REQUEST,
        "invalid_time",
    );

    // The same from the host.
    let dir = tempfile::tempdir().unwrap();
    t.s.db().execute("VACUUM INTO ?1", [dir.path().join("breakglass.db").to_str().unwrap()]).unwrap();
    let out = breakglass(
        dir.path(),
        &["drill", "export", "--format", "csv", "--since", "2026-12-01T00:00:00Z", "--until", "2027-01-01T00:00:00Z"],
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    // As of the test's own clock: a report never depends on the day the suite runs.
    // (Bo and Cy took part in the drill this month; only Ada has not.)
    let as_of = t.s.clock.now().format(&time::format_description::well_known::Rfc3339).unwrap();
    let out = breakglass(dir.path(), &["drill", "status", "--as-of", &as_of]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.contains("not in a passed drill for 3 months: Ada Admin <ada@example.com>") && !l.contains("Bo")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn drill_schedules_are_validated() {
    let t = team().await;
    let url = t.s.url(format!("/api/v1/accounts/{ACCOUNT}/policy"));
    for bad in ["monthly", "61 9 1 * *", "0 9 31 2 *", "0 9 1 * * *"] {
        let got = put(&t.ada.client, &url, json!({"drill_schedule": bad})).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_policy");
        assert!(
            got.1["error"]["message"].as_str().unwrap().contains("0 9 1 * *"),
            "says what a good one looks like: {}",
            got.1
        );
    }
    let got = put(&t.ada.client, &url, json!({"drill_schedule": "0 8 * * 1"})).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let next: i64 =
        t.s.db()
            .query_row("SELECT next_drill_due_at FROM accounts WHERE account_id = ?1", [ACCOUNT], |r| r.get(0))
            .unwrap();
    assert_eq!(next, datetime!(2026-11-23 08:00:00 UTC).unix_timestamp(), "the next Monday 08:00 after the change");
}

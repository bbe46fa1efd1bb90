//! The audit page and a checkout's story as auditors read them, exports' file names,
//! and error pages for people (the API keeps its JSON).
use breakglass::{clock::Clock, domain::Role};
use reqwest::{StatusCode, header};
use serde_json::json;
use time::Duration;

use crate::{
    checkouts::{ACCOUNT, OTHER, Team, decide, request_id, reveal, team},
    support::*,
};

async fn page(p: &Person, url: String) -> (StatusCode, String) {
    let res = p.client.get(url).send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

/// The audit page's table of entries (not its filters' option lists).
fn table(html: &str) -> &str {
    let start = html.find("<table id=\"audit-log\"").expect("the audit table");
    &html[start..start + html[start..].find("</table>").unwrap()]
}

/// The team, an auditor, and one checkout of prod-payer (INC-4711) requested by Bo,
/// approved by Cy, revealed by Bo and checked in.
async fn released() -> (Team, Person, String) {
    let mut t = team().await;
    let mut au = t.s.enrol(&[Role::Auditor], "Au Ditor", "au@example.com").await;
    t.s.login(&mut au).await;
    let id = request_id(&t.s, &t.bo, ACCOUNT).await;
    assert_eq!(decide(&t.s, &mut t.cy, &id, "approve").await.1["state"], "approved");
    let got = reveal(&t.s, &mut t.bo, &id).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let got =
        post(&t.bo.client, t.s.url(format!("/api/v1/checkouts/{id}/close")), json!({"note": "Restored the role."}))
            .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    (t, au, id)
}

#[tokio::test]
async fn the_audit_page_names_people_summarises_entries_and_filters_by_person_account_family_and_day() {
    let (t, au, id) = released().await;
    let (status, html) = page(&au, t.s.url("/audit")).await;
    assert_eq!(status, StatusCode::OK);
    // Names, with the id on hover and in the entry's details.
    assert!(
        html.contains(&format!("<span class=\"who\" title=\"custodian:{}\">Cy Approver</span>", t.cy.id)),
        "{html}"
    );
    assert!(html.contains(&format!("<dd class=\"mono\">custodian:{}</dd>", t.cy.id)));
    // One line per entry, as announced, with the ticket.
    assert!(
        html.contains(
            "Cy Approver approved Bo Requester&#39;s emergency root access request for prod-payer. Ticket: INC-4711."
        ) || html.contains(
            "Cy Approver approved Bo Requester&#x27;s emergency root access request for prod-payer. Ticket: INC-4711."
        ),
        "{html}"
    );
    assert!(html.contains("Bo Requester checked in the root credentials of prod-payer."));
    assert!(html.contains("Cy Approver signed in."), "unannounced events have lines too");
    assert!(html.contains("<details><summary>Details of entry"), "details are collapsed");
    assert!(html.contains(&format!("/checkouts/{id}/story")), "entries link to their checkout's story");

    // Filters: person (by or about), account, event family, days.
    let (_, by_cy) = page(&au, t.s.url(format!("/audit?person=custodian:{}", t.cy.id))).await;
    let by_cy = table(&by_cy);
    assert!(
        by_cy.contains("Cy Approver approved") && by_cy.contains("Cy Approver enrolled"),
        "by and about Cy: {by_cy}"
    );
    assert!(!by_cy.contains("Bo Requester checked in"), "not Bo's entries");
    let (_, sandbox) = page(&au, t.s.url(format!("/audit?account={OTHER}"))).await;
    let sandbox = table(&sandbox);
    assert!(sandbox.contains("put sandbox into custody") && !sandbox.contains("prod-payer"), "{sandbox}");
    let (_, family) = page(&au, t.s.url(format!("/audit?account={ACCOUNT}&action_prefix=checkout."))).await;
    let family = table(&family);
    assert!(family.contains("checkout.approval_recorded") && !family.contains("secret.deposited"), "{family}");
    // Accounts went into custody on 21 November; the clock then moved a day on.
    let (_, first_day) = page(&au, t.s.url("/audit?from=2026-11-21&to=2026-11-21")).await;
    let first_day = table(&first_day);
    assert!(first_day.contains("account.created") && !first_day.contains("checkout.requested"));
    let (_, next_day) = page(&au, t.s.url("/audit?from=2026-11-22")).await;
    let next_day = table(&next_day);
    assert!(!next_day.contains("account.created") && next_day.contains("checkout.requested"));
    let (status, bad) = page(&au, t.s.url("/audit?from=yesterday")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad.contains("<title>") && bad.contains("is not a day such as 2026-12-01"), "{bad}");
}

#[tokio::test]
async fn the_audit_page_pages_by_seq_through_the_whole_log_without_gaps_or_repeats() {
    let (t, au, _) = released().await;
    // More than one page: Bo signs out 150 times (appended as the server would).
    let bo = format!("custodian:{}", t.bo.id);
    for _ in 0..150 {
        breakglass::store::audit::append(&t.s.db(), t.s.clock.now(), &bo, "custodian.logout", &bo, &json!({})).unwrap();
    }
    let total: i64 = t.s.db().query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0)).unwrap();
    let total = total as u64;
    assert!(total > 100, "more than one page: {total}");
    let mut seen = Vec::new();
    let mut url = t.s.url("/audit");
    loop {
        let (status, html) = page(&au, url.clone()).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(html.match_indices("<tr id=\"seq-").map(|(i, m)| {
            let rest = &html[i + m.len()..];
            rest[..rest.find('"').unwrap()].parse::<u64>().unwrap()
        }));
        match html.find("href=\"/audit?before_seq=").map(|i| &html[i + 6..]) {
            Some(rest) if html.contains("id=\"older\"") => {
                url = t.s.url(rest[..rest.find('"').unwrap()].replace("&amp;", "&"))
            }
            _ => break,
        }
    }
    let want: Vec<u64> = (1..=total).rev().collect();
    assert_eq!(seen, want, "every entry once, newest first");
}

#[tokio::test]
async fn a_checkouts_story_shows_every_step_and_each_signature_as_offline_verification_judges_it() {
    let (t, au, id) = released().await;
    let (status, html) = page(&au, t.s.url(format!("/checkouts/{id}/story"))).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    for step in [
        "checkout.requested",
        "approval.challenge_issued",
        "checkout.approval_recorded",
        "checkout.approved",
        "checkout.released",
        "checkout.revealed",
        "checkout.closed",
    ] {
        assert!(html.contains(&format!("<code>{step}</code>")), "{step} missing from the story");
    }
    assert!(html.contains("2 of 2 signatures on this checkout verified offline"), "{html}");
    assert_eq!(html.matches("Signature verified</strong>").count(), 2, "the approval and the reveal");
    assert!(html.contains("id=\"story-announcements\"") && html.contains("checkout.released</code> (critical)"));
    assert!(html.contains("Restored the role."), "the check-in note");
    // Only this checkout: nothing of the other account, nothing before the request.
    assert!(!html.contains("sandbox") && !html.contains("custodian.enrolled"));
    // The checkout page links to it for auditors.
    let (_, checkout) = page(&t.ada, t.s.url(format!("/checkouts/{id}"))).await;
    assert!(checkout.contains(&format!("href=\"/checkouts/{id}/story\"")));

    // A stored decision that no longer matches its evidence is shown as not verified.
    t.s.db().execute("UPDATE approvals SET comment = 'edited later' WHERE checkout_id = ?1", [&id]).unwrap();
    let (_, html) = page(&au, t.s.url(format!("/checkouts/{id}/story"))).await;
    assert!(html.contains("1 of 2 signatures on this checkout verified offline"), "{html}");
    assert!(html.contains("Signature NOT verified") && html.contains("differs from the evidence in the audit log"));

    // Custodians do not read the audit log; unknown checkouts are a 404 page.
    let (status, html) = page(&t.bo, t.s.url(format!("/checkouts/{id}/story"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("This page is for auditors and admins."));
    let (status, html) = page(&au, t.s.url("/checkouts/no-such-checkout/story")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("<html lang=\"en\">"));
}

#[tokio::test]
async fn exports_are_named_after_the_services_date() {
    let (t, au, _) = released().await;
    // The service's clock, not the machine's: move it into December.
    t.s.clock.set(time::macros::datetime!(2026-12-01 23:59:00 UTC));
    let mut au = au;
    t.s.login(&mut au).await;
    for (path, name, ctype) in [
        ("/api/v1/audit/export", "breakglass-audit-2026-12-01.jsonl", "application/x-ndjson"),
        ("/api/v1/drills/export", "breakglass-drills-2026-12-01.jsonl", "application/x-ndjson"),
        ("/api/v1/drills/export?format=csv", "breakglass-drills-2026-12-01.csv", "text/csv; charset=utf-8"),
    ] {
        let res = au.client.get(t.s.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(res.headers()[header::CONTENT_TYPE], ctype, "{path}");
        assert_eq!(res.headers()[header::CONTENT_DISPOSITION], format!("attachment; filename=\"{name}\"").as_str());
    }
    t.s.clock.advance(Duration::minutes(2));
    let res = au.client.get(t.s.url("/api/v1/audit/export")).send().await.unwrap();
    assert_eq!(
        res.headers()[header::CONTENT_DISPOSITION],
        "attachment; filename=\"breakglass-audit-2026-12-02.jsonl\"",
        "a minute after midnight UTC it is the next day's export"
    );
}

#[tokio::test]
async fn error_pages_are_whole_pages_and_the_api_keeps_its_json() {
    let s = TestServer::start().await;
    let ada = s.admin().await;
    let bo = s.enrol(&[Role::Custodian], "Bo", "bo@example.com").await;
    let stranger = reqwest::Client::new();
    let is_page = |html: &str| {
        html.starts_with("<!doctype html>")
            && html.contains("<html lang=\"en\">")
            && html.contains("<title>")
            && html.contains("name=\"viewport\"")
            && html.contains("href=\"/\"")
            && html.contains("rel=\"icon\"")
    };
    for (client, path, status) in [
        (&stranger, "/no/such/page", StatusCode::NOT_FOUND),
        (&ada.client, "/no/such/page", StatusCode::NOT_FOUND),
        (&bo.client, "/admin", StatusCode::FORBIDDEN),
        (&ada.client, "/checkouts/nope", StatusCode::NOT_FOUND),
    ] {
        let res = client.get(s.url(path)).send().await.unwrap();
        assert_eq!(res.status(), status, "{path}");
        assert!(res.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"), "{path}");
        let html = res.text().await.unwrap();
        assert!(is_page(&html), "{path}: {html}");
    }
    // A signed-in person keeps their navigation on an error page.
    let (_, html) = page(&ada, s.url("/no/such/page")).await;
    assert!(html.contains("<nav aria-label=\"Main\">") && html.contains("Page not found"), "{html}");
    let res = stranger.post(s.url("/audit")).header("origin", &s.origin).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(is_page(&res.text().await.unwrap()));
    // The API answers in JSON, wherever under /api/ the address is.
    for path in ["/api/v1/nope", "/api/nope"] {
        assert_error(&get(&stranger, s.url(path)).await, StatusCode::NOT_FOUND, "not_found");
    }
    // The icon is served from the binary; /favicon.ico points to it.
    let res = stranger.get(s.url("/favicon.svg")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "image/svg+xml");
    assert!(res.text().await.unwrap().starts_with("<svg"));
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res = no_redirects.get(s.url("/favicon.ico")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(res.headers()[header::LOCATION], "/favicon.svg");
}

//! Bad input, missing or wrong sessions, CSRF, rate limits and headers: always a
//! JSON 4xx with a stable code, never a 500 or a partial write.
use breakglass::domain::Role;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Needs {
    AnyOne,
    /// The custodian role (auditors are refused with `not_a_custodian`).
    Custodian,
    Admin,
    AuditReader,
}

/// Every endpoint that needs a session, with a plausible body and who may call it.
fn protected() -> Vec<(Method, &'static str, Value, Needs)> {
    use Needs::*;
    vec![
        (Method::GET, "/api/v1/me", Value::Null, AnyOne),
        (Method::GET, "/api/v1/me/credentials", Value::Null, AnyOne),
        (Method::POST, "/api/v1/me/credentials/start", json!({}), AnyOne),
        (Method::PATCH, "/api/v1/me/credentials/abc", json!({"label": "x"}), AnyOne),
        (Method::GET, "/api/v1/invites", Value::Null, Admin),
        (Method::POST, "/api/v1/invites", json!({"roles": ["custodian"]}), Admin),
        (Method::POST, "/api/v1/invites/abc/revoke", json!({}), Admin),
        (Method::GET, "/api/v1/custodians", Value::Null, AuditReader),
        (Method::POST, "/api/v1/custodians/abc/disable", json!({}), Admin),
        (Method::GET, "/api/v1/accounts", Value::Null, AnyOne),
        (
            Method::POST,
            "/api/v1/accounts",
            json!({"account_id": "123456789012", "alias": "a", "root_email": "a@example.com"}),
            Admin,
        ),
        (Method::GET, "/api/v1/accounts/123456789012", Value::Null, AnyOne),
        (Method::PUT, "/api/v1/accounts/123456789012/secrets/root_password", json!({"value": "long-enough-pw"}), Admin),
        (Method::GET, "/api/v1/audit", Value::Null, AuditReader),
        (Method::GET, "/api/v1/audit/verify", Value::Null, AuditReader),
        (Method::PUT, "/api/v1/accounts/123456789012/policy", json!({"veto": false}), Admin),
        (Method::GET, "/api/v1/checkouts", Value::Null, AnyOne),
        (Method::POST, "/api/v1/checkouts", json!({"account_id": "123456789012", "reason": "r"}), Custodian),
        (Method::GET, "/api/v1/checkouts/abc", Value::Null, AnyOne),
        (Method::POST, "/api/v1/checkouts/abc/cancel", json!({}), AnyOne),
        (Method::POST, "/api/v1/checkouts/abc/approvals/start", json!({}), AnyOne),
        (
            Method::POST,
            "/api/v1/checkouts/abc/approvals/finish",
            json!({"ceremony_id": "x", "credential": {}, "decision": "approve"}),
            AnyOne,
        ),
        (Method::POST, "/api/v1/checkouts/abc/release/start", json!({}), AnyOne),
        (Method::POST, "/api/v1/checkouts/abc/release/finish", json!({"ceremony_id": "x", "credential": {}}), AnyOne),
        (Method::POST, "/api/v1/checkouts/abc/close", json!({"note": "n"}), AnyOne),
        (Method::PUT, "/api/v1/checkouts/abc/rotation", json!({"value": "long-enough-pw"}), AnyOne),
        // Last: it ends the session.
        (Method::POST, "/api/v1/logout", json!({}), AnyOne),
    ]
}

async fn call(c: &Client, s: &TestServer, m: &Method, path: &str, body: &Value) -> (StatusCode, Value) {
    let mut req = c.request(m.clone(), s.url(path));
    if !body.is_null() {
        req = req.json(body);
    }
    send(req).await
}

#[tokio::test]
async fn every_protected_endpoint_refuses_requests_without_a_session() {
    let s = TestServer::start().await;
    let c = s.client();
    for (m, path, body, _) in protected() {
        let got = call(&c, &s, &m, path, &body).await;
        assert_error(&got, StatusCode::UNAUTHORIZED, "not_signed_in");
    }
    // A made-up session cookie is no better.
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("cookie", "breakglass_session=forged".parse().unwrap());
    h.insert("origin", s.origin.parse().unwrap());
    let forged = Client::builder().default_headers(h).build().unwrap();
    assert_error(&get(&forged, s.url("/api/v1/me")).await, StatusCode::UNAUTHORIZED, "session_expired");
}

#[tokio::test]
async fn admin_endpoints_refuse_custodians_and_auditors() {
    let s = TestServer::start().await;
    let _ada = s.admin().await;
    let bo = s.enrol(&[Role::Custodian], "Bo", "bo@example.com").await;
    let au = s.enrol(&[Role::Auditor], "Au", "au@example.com").await;
    for (m, path, body, needs) in protected() {
        for (who, p) in [("custodian", &bo), ("auditor", &au)] {
            let got = call(&p.client, &s, &m, path, &body).await;
            if needs == Needs::Custodian && who == "auditor" {
                assert_error(&got, StatusCode::FORBIDDEN, "not_a_custodian");
                continue;
            }
            let forbidden = match needs {
                Needs::AnyOne | Needs::Custodian => false,
                Needs::Admin => true,
                Needs::AuditReader => who == "custodian",
            };
            if forbidden {
                assert_error(&got, StatusCode::FORBIDDEN, "forbidden_role");
            } else {
                assert!(
                    got.0 != StatusCode::FORBIDDEN && got.0 != StatusCode::UNAUTHORIZED,
                    "{who} {m} {path}: {}",
                    got.1
                );
            }
            assert!(got.0 != StatusCode::INTERNAL_SERVER_ERROR, "{who} {m} {path}: {}", got.1);
        }
    }
}

#[tokio::test]
async fn malformed_wrongly_typed_and_oversized_bodies_get_clear_4xx_codes() {
    let s = TestServer::start().await;
    let ada = s.admin().await;
    let url = s.url("/api/v1/accounts");
    let raw = |body: &'static str, ct: &'static str| ada.client.post(url.clone()).header("content-type", ct).body(body);
    assert_error(&send(raw("{\"account_id\": ", "application/json")).await, StatusCode::BAD_REQUEST, "malformed_json");
    assert_error(
        &send(raw("account_id=1", "application/x-www-form-urlencoded")).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    assert_error(&send(raw("[1,2,3]", "application/json")).await, StatusCode::BAD_REQUEST, "invalid_body");
    assert_error(
        &post(&ada.client, &url, json!({"account_id": 123456789012u64, "alias": "a", "root_email": "a@example.com"}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    let missing = post(&ada.client, &url, json!({"alias": "a"})).await;
    assert_error(&missing, StatusCode::BAD_REQUEST, "invalid_body");
    assert!(missing.1["error"]["message"].as_str().unwrap().contains("account_id"), "{}", missing.1);

    let huge = "x".repeat(100 * 1024);
    let got =
        post(&ada.client, &url, json!({"account_id": "123456789012", "alias": huge, "root_email": "a@example.com"}))
            .await;
    assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let got = post(&s.client(), s.url("/api/v1/login/start"), json!({"email": huge})).await;
    assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let long_alias = "y".repeat(65);
    let got = post(
        &ada.client,
        &url,
        json!({"account_id": "123456789012", "alias": long_alias, "root_email": "a@example.com"}),
    )
    .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_text");

    // Ceremony endpoints with junk.
    let c = s.client();
    assert_error(
        &post(&c, s.url("/api/v1/enrol/finish"), json!({"ceremony_id": "nope", "credential": {"id": "x"}})).await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    assert_error(
        &post(&c, s.url("/api/v1/login/finish"), json!({"ceremony_id": 5})).await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    assert_error(
        &post(&c, s.url("/api/v1/enrol/start"), json!({"invite_token": "t", "name": "", "email": "e@example.com"}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_text",
    );
    assert_error(
        &post(&c, s.url("/api/v1/enrol/start"), json!({"invite_token": "t", "name": "N", "email": "bad"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_email",
    );
    assert_error(
        &post(&ada.client, s.url("/api/v1/invites"), json!({"roles": ["root"]})).await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    assert_error(
        &post(&ada.client, s.url("/api/v1/invites"), json!({"roles": []})).await,
        StatusCode::BAD_REQUEST,
        "invalid_role",
    );

    // Unknown ids.
    assert_error(
        &post(&ada.client, s.url("/api/v1/custodians/00000000-0000-0000-0000-000000000000/disable"), json!({})).await,
        StatusCode::NOT_FOUND,
        "custodian_not_found",
    );
    assert_error(
        &post(&ada.client, s.url("/api/v1/invites/nope/revoke"), json!({})).await,
        StatusCode::NOT_FOUND,
        "invite_not_found",
    );
    assert_error(
        &send(ada.client.patch(s.url("/api/v1/me/credentials/nope")).json(&json!({"label": "x"}))).await,
        StatusCode::NOT_FOUND,
        "credential_not_found",
    );
    assert_error(&get(&ada.client, s.url("/api/v1/nothing-here")).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(&get(&ada.client, s.url("/nothing-here")).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(
        &send(ada.client.delete(s.url("/api/v1/accounts"))).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let n: i64 = s.db().query_row("SELECT count(*) FROM accounts", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0, "no partial writes");
}

#[tokio::test]
async fn state_changing_requests_from_another_origin_are_refused() {
    let s = TestServer::start().await;
    let ada = s.admin().await;
    let body = json!({"account_id": "123456789012", "alias": "a", "root_email": "a@example.com"});
    // Same cookie jar, but the request comes from elsewhere.
    let evil = ada.client.post(s.url("/api/v1/accounts")).header("origin", "https://evil.example").json(&body);
    assert_error(&send(evil).await, StatusCode::FORBIDDEN, "csrf_origin_mismatch");
    let no_origin = Client::new().post(s.url("/api/v1/login/start")).json(&json!({"email": "a@example.com"}));
    assert_error(&send(no_origin).await, StatusCode::FORBIDDEN, "csrf_origin_mismatch");
    let cross_site = Client::new()
        .post(s.url("/api/v1/login/start"))
        .header("sec-fetch-site", "cross-site")
        .json(&json!({"email": "a@example.com"}));
    assert_error(&send(cross_site).await, StatusCode::FORBIDDEN, "csrf_origin_mismatch");
    let same_site_fetch = Client::new()
        .post(s.url("/api/v1/login/start"))
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"email": "a@example.com"}));
    assert_eq!(send(same_site_fetch).await.0, StatusCode::OK);
    let n: i64 = s.db().query_row("SELECT count(*) FROM accounts", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0);
    // Reads stay possible without Origin.
    assert_eq!(get(&Client::new(), s.url("/healthz")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn ceremony_endpoints_are_rate_limited_per_client() {
    let s = TestServer::start_with(|c| {
        c.http.ceremony_burst = 3;
        c.http.ceremony_rate_per_minute = 1;
    })
    .await;
    let c = s.client();
    for _ in 0..3 {
        assert_eq!(post(&c, s.url("/api/v1/login/start"), json!({"email": "a@example.com"})).await.0, StatusCode::OK);
    }
    let res = c.post(s.url("/api/v1/login/start")).json(&json!({"email": "a@example.com"})).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Other endpoints are not limited; approvals and releases least of all.
    assert_eq!(get(&c, s.url("/healthz")).await.0, StatusCode::OK);
    for path in ["/api/v1/checkouts/x/approvals/start", "/api/v1/checkouts/x/release/start"] {
        assert_error(&post(&c, s.url(path), json!({})).await, StatusCode::UNAUTHORIZED, "not_signed_in");
    }
}

#[tokio::test]
async fn responses_carry_security_headers_and_health_endpoints_answer() {
    let s = TestServer::start().await;
    let res = Client::new().get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers().clone();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    assert!(!h.contains_key("strict-transport-security"), "no HSTS on plain-http localhost");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["vault"]["sealed"], false);
    let err = Client::new().get(s.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(err.headers()["content-type"], "application/json");
    assert_eq!(err.headers()["x-frame-options"], "DENY", "error responses too");
}

#[tokio::test]
async fn pages_send_strangers_to_sign_in_and_assets_are_served_from_the_binary() {
    let s = TestServer::start().await;
    let no_redirects = Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for path in ["/", "/admin", "/audit", "/drills", "/me", "/checkouts/abc"] {
        let res = no_redirects.get(s.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{path}");
        assert!(res.headers()["location"].to_str().unwrap().starts_with("/login?next=%2F"), "{path}");
    }
    for (path, ctype) in [
        ("/static/app.js", "text/javascript"),
        ("/static/app.css", "text/css"),
        ("/login", "text/html"),
        ("/enrol", "text/html"),
    ] {
        let res = no_redirects.get(s.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with(ctype), "{path}");
        let body = res.text().await.unwrap();
        assert!(
            !body.contains("<script>") && !body.contains("http://") && !body.contains("https://cdn"),
            "{path}: no inline script, no external asset"
        );
    }
    // A signed-in custodian who is not an admin gets a clear 403 page, not the admin page.
    let bo = s.enrol(&[breakglass::domain::Role::Custodian], "Bo", "bo@example.com").await;
    let res = bo.client.get(s.url("/admin")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.text().await.unwrap().contains("This page is for admins"));
}

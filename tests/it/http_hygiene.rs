//! Bad input, missing or wrong sessions, CSRF, rate limits and headers: always a
//! JSON 4xx with a stable code, never a 500 or a partial write.
use breakglass::domain::Role;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    assert_page_error(ada.client.get(s.url("/nothing-here")), StatusCode::NOT_FOUND).await;
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

#[tokio::test]
async fn quorum_scripts_are_served_from_the_binary_under_the_page_csp() {
    let s = TestServer::start().await;
    for (path, on_disk) in [
        ("/static/quorum.js", include_str!("../../web/static/quorum.js")),
        ("/static/vendor/age-encryption.js", include_str!("../../web/static/vendor/age-encryption.js")),
    ] {
        let res = Client::new().get(s.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let h = res.headers().clone();
        assert_eq!(h["content-type"], "text/javascript; charset=utf-8", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'; script-src 'self';"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-eval") && !csp.contains("wasm-unsafe-eval"), "{path}: {csp}");
        assert_eq!(res.text().await.unwrap(), on_disk, "{path}: the committed file, byte for byte");
    }
    // quorum.js imports the bundle by a relative URL that resolves to the route above.
    assert!(include_str!("../../web/static/quorum.js").contains(r#"from "./vendor/age-encryption.js";"#));
}

/// A sign-in start as the proxy (127.0.0.1, trusted) forwards it, with these
/// `X-Forwarded-For` header lines; a fresh e-mail address each time unless given.
async fn login_start_via_proxy(s: &TestServer, lines: &[&str], email: Option<&str>) -> (StatusCode, Value) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let email = email.map(str::to_owned).unwrap_or_else(|| format!("someone{n}@example.com"));
    let mut req = s.client().post(s.url("/api/v1/login/start")).json(&json!({"email": email}));
    for line in lines {
        req = req.header("x-forwarded-for", *line);
    }
    send(req).await
}

fn behind_a_proxy(burst: u32) -> impl FnOnce(&mut breakglass::config::Config) {
    move |c| {
        c.http.ceremony_burst = burst;
        c.http.ceremony_rate_per_minute = 1;
        c.http.trusted_proxies = vec!["127.0.0.1".into()];
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_a_client_can_neither_dodge_the_limit_nor_lock_out_another_address() {
    let s = TestServer::start_with(behind_a_proxy(3)).await;
    // The attacker is 203.0.113.5 (the proxy appends it); what it writes itself is on the left.
    for i in 0..3 {
        let spoofed = format!("198.51.100.{i}, 203.0.113.5");
        assert_eq!(login_start_via_proxy(&s, &[&spoofed], None).await.0, StatusCode::OK);
    }
    let got = login_start_via_proxy(&s, &["198.51.100.99, 203.0.113.5"], None).await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // A second header line is read too: the right-most entry of all lines counts.
    let got = login_start_via_proxy(&s, &["198.51.100.100", "203.0.113.5"], None).await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // Claiming the victim's address (30 times) spends the attacker's bucket, not the victim's.
    for _ in 0..30 {
        login_start_via_proxy(&s, &["203.0.113.9, 203.0.113.5"], None).await;
    }
    for _ in 0..3 {
        assert_eq!(
            login_start_via_proxy(&s, &["203.0.113.9"], None).await.0,
            StatusCode::OK,
            "the victim is not locked out"
        );
    }
    // Clients are told apart, also when one sent a header line of its own first.
    assert_eq!(login_start_via_proxy(&s, &["203.0.113.5", "203.0.113.10"], None).await.0, StatusCode::OK);
    // Requests without the header (a misconfigured proxy) share the proxy's own bucket.
    for _ in 0..3 {
        assert_eq!(login_start_via_proxy(&s, &[], None).await.0, StatusCode::OK);
    }
    assert_error(&login_start_via_proxy(&s, &[], None).await, StatusCode::TOO_MANY_REQUESTS, "rate_limited");

    // Without trusted proxies, X-Forwarded-For is not read at all: the peer is the client.
    let direct = TestServer::start_with(|c| {
        c.http.ceremony_burst = 2;
        c.http.ceremony_rate_per_minute = 1;
    })
    .await;
    for (i, expected) in [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS].into_iter().enumerate() {
        let fresh = format!("203.0.113.{}", 50 + i);
        assert_eq!(login_start_via_proxy(&direct, &[&fresh], None).await.0, expected);
    }
}

#[tokio::test]
async fn sign_in_is_limited_per_e_mail_address_whether_or_not_it_is_enrolled() {
    let s = TestServer::start_with(behind_a_proxy(3)).await;
    let _bo = s.enrol(&[Role::Custodian], "Bo", "bo@example.com").await;
    for email in ["bo@example.com", "nobody@example.com"] {
        // Many addresses, one account: the fourth in a minute is refused whoever sends it.
        for i in 0..3 {
            let from = format!("203.0.113.{}", 100 + i);
            let spelled = if i == 1 { email.to_uppercase() } else { email.to_owned() };
            assert_eq!(login_start_via_proxy(&s, &[&from], Some(&spelled)).await.0, StatusCode::OK, "{email}");
        }
        let got = login_start_via_proxy(&s, &["203.0.113.200"], Some(email)).await;
        assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        assert!(got.1["error"]["message"].as_str().unwrap().contains("e-mail address"), "{}", got.1);
    }
    // The same address may still sign in to another account.
    assert_eq!(login_start_via_proxy(&s, &["203.0.113.200"], Some("cy@example.com")).await.0, StatusCode::OK);
}

/// Write raw bytes on a fresh connection and read until the server closes it (or
/// `limit` passes); returns what came back and how long the connection lasted.
async fn raw_exchange(s: &TestServer, request: &[u8], limit: std::time::Duration) -> (String, std::time::Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let started = std::time::Instant::now();
    conn.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection was still open after {limit:?}; got {:?}", String::from_utf8_lossy(&got)),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), started.elapsed())
}

fn json_body_of(response: &str) -> Value {
    serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap_or_default().trim()).unwrap_or(Value::Null)
}

#[tokio::test]
async fn slow_and_idle_clients_are_cut_off_and_oversized_bodies_refused_before_they_are_sent() {
    let s = TestServer::start_with(|c| {
        c.http.header_read_timeout_seconds = 1;
        c.http.request_timeout_seconds = 1;
        c.http.idle_timeout_seconds = 2;
    })
    .await;
    let limit = std::time::Duration::from_secs(6);
    // Headers that never end.
    let (got, lasted) = raw_exchange(&s, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1", limit).await;
    assert!(!got.contains("200 OK"), "{got}");
    assert!(
        lasted >= std::time::Duration::from_millis(900) && lasted < std::time::Duration::from_secs(4),
        "{lasted:?}"
    );
    // A kept-alive connection that sends no next request.
    let (got, lasted) = raw_exchange(&s, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", limit).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(lasted < std::time::Duration::from_secs(4), "idle connection closed: {lasted:?}");
    // A body that trickles: the request times out with a JSON answer.
    let req = format!(
        "POST /api/v1/login/start HTTP/1.1\r\nHost: x\r\nOrigin: {}\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{{\"em",
        s.origin
    );
    let (got, _) = raw_exchange(&s, req.as_bytes(), limit).await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert_eq!(json_body_of(&got)["error"]["code"], "request_timeout", "{got}");
    // A declared length over the limit is refused at once, without reading the body.
    let req = format!(
        "POST /api/v1/login/start HTTP/1.1\r\nHost: x\r\nOrigin: {}\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n",
        s.origin
    );
    let (got, lasted) = raw_exchange(&s, req.as_bytes(), limit).await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert_eq!(json_body_of(&got)["error"]["code"], "body_too_large", "{got}");
    assert!(lasted < std::time::Duration::from_millis(900), "answered before any timeout: {lasted:?}");
}

#[tokio::test]
async fn malformed_requests_are_refused_in_the_json_error_shape_without_echoing_secrets() {
    let s = TestServer::start().await;
    let ada = s.admin().await;
    let c = s.client();
    let login = s.url("/api/v1/login/start");
    let raw = |body: &'static str, ct: Option<&'static str>| {
        let mut r = c.post(login.clone()).body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r
    };
    let ok = "{\"email\": \"a@example.com\"}";
    // Charsets: JSON is UTF-8.
    for ct in [
        "application/json; charset=utf-16",
        "application/json;charset=ISO-8859-1",
        "application/json; charset=\"utf-32\"",
    ] {
        assert_error(&send(raw(ok, Some(ct))).await, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }
    for ct in ["application/json", "application/json; charset=utf-8", "application/json; charset=\"UTF-8\""] {
        assert_eq!(send(raw(ok, Some(ct))).await.0, StatusCode::OK, "{ct}");
    }
    // No body, an empty body, a body that is not JSON.
    assert_error(&send(raw("", None)).await, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    assert_error(&send(raw("", Some("application/json"))).await, StatusCode::BAD_REQUEST, "malformed_json");
    assert_error(&send(raw("email=a", Some("application/json"))).await, StatusCode::BAD_REQUEST, "malformed_json");
    // A secret sent as a key is not echoed; a misplaced field of the API is named.
    let secret = "Correct-Horse-Battery-9";
    let got = post(&c, &login, json!({"email": "a@example.com", secret: "x"})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_body");
    assert!(!got.1.to_string().contains("Correct-Horse"), "{}", got.1);
    let got = post(&c, &login, json!({"email": "a@example.com", "hunter2": "x"})).await;
    assert!(!got.1.to_string().contains("hunter2"), "{}", got.1);
    let got = post(&c, &login, json!({"email": "a@example.com", "invite_token": "x"})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_body");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("invite_token"), "{}", got.1);
    let got = post(&ada.client, s.url("/api/v1/accounts/123456789012/policy"), json!({"hunter2-Pw": 1})).await;
    assert!(!got.1.to_string().contains("hunter2"), "{}", got.1);
    // Bad paths and queries on pages, and a method a page does not take: pages, not JSON.
    assert_page_error(ada.client.get(s.url("/checkouts/%FF%FE")), StatusCode::BAD_REQUEST).await;
    assert_page_error(ada.client.get(s.url("/audit?subject=a&subject=b")), StatusCode::BAD_REQUEST).await;
    assert_page_error(c.post(s.url("/login")).json(&json!({})), StatusCode::METHOD_NOT_ALLOWED).await;
    assert_error(
        &send(c.put(s.url("/api/v1/login/start")).json(&json!({}))).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    // A path value that is not UTF-8 and a query that does not parse: JSON on the API.
    assert_error(
        &send(ada.client.get(s.url("/api/v1/checkouts/%FF%FE"))).await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
    );
    assert_error(
        &send(ada.client.get(s.url("/api/v1/audit?limit=many"))).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    // What is not HTTP/1.1 at all never reaches the router: hyper answers a bare 400
    // with no body and closes the connection (SECURITY.md 6e names this exception).
    for garbage in ["GET / HTTP/1.1\r\nHost localhost\r\n\r\n", "NOT HTTP AT ALL\r\n\r\n", "GET /\x01 HTTP/1.1\r\n\r\n"]
    {
        let mut raw = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        raw.write_all(garbage.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(10), raw.read_to_end(&mut got)).await.unwrap().unwrap();
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{garbage:?}: {got:?}");
        assert!(got.ends_with("\r\n\r\n"), "no body: {got:?}");
    }
}

#[tokio::test]
async fn outbox_times_are_rfc_3339() {
    let s = TestServer::start().await;
    let ada = s.admin().await;
    let (status, body) = get(&ada.client, s.url("/api/v1/outbox")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let messages = body["messages"].as_array().unwrap();
    assert!(!messages.is_empty(), "the enrolment is announced: {body}");
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    for m in messages {
        for field in ["created_at", "next_attempt_at"] {
            let t = m[field].as_str().unwrap_or_else(|| panic!("{field} is a string: {m}"));
            time::OffsetDateTime::parse(t, rfc3339).unwrap_or_else(|e| panic!("{field} {t}: {e}"));
        }
        assert!(m["delivered_at"].is_null() || m["delivered_at"].is_string(), "{m}");
    }
    assert_eq!(messages[0]["created_at"], "2026-11-21T09:00:00Z");
}

#[tokio::test]
async fn the_origin_is_normalised_once_and_everything_https_derives_from_it() {
    // Upper case scheme and host, and the default port: still https.
    let s = TestServer::start_with(|c| c.origin = "HTTPS://Custody.Example.COM:443".into()).await;
    assert_eq!(s.origin, "https://custody.example.com");
    let c = s.client();
    let mut key = webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true);
    let st = s.start_enrolment(&c, &[Role::Custodian], "Bo", "bo@example.com").await;
    assert_eq!(st.options.public_key.rp.id, "custody.example.com");
    use webauthn_authenticator_rs::WebauthnAuthenticator;
    let cred = key.do_registration(s.origin_url(), st.options).unwrap();
    let res = c
        .post(s.url("/api/v1/enrol/finish"))
        .json(&json!({"ceremony_id": st.ceremony_id, "credential": cred}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("__Host-breakglass=") && cookie.contains("; Secure"), "{cookie}");
    assert!(res.headers()["strict-transport-security"].to_str().unwrap().contains("max-age="));
    // The CSRF check compares with the normalised origin, as browsers send it.
    let other = Client::new()
        .post(s.url("/api/v1/login/start"))
        .header("origin", "HTTPS://Custody.Example.COM:443")
        .json(&json!({"email": "a@example.com"}));
    assert_error(&send(other).await, StatusCode::FORBIDDEN, "csrf_origin_mismatch");
    assert_eq!(post(&c, s.url("/api/v1/login/start"), json!({"email": "a@example.com"})).await.0, StatusCode::OK);
}

#[test]
fn config_check_prints_the_normalised_origin_and_refuses_unusable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let check = |origin: &str| {
        let out =
            breakglass_cmd(dir.path()).env("BREAKGLASS_ORIGIN", origin).args(["config", "check"]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = check("HTTPS://BG.Example.com");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("origin      https://bg.example.com (WebAuthn RP id bg.example.com)"), "{out}");
    for (bad, why) in [
        (" https://bg.example.com", "space"),
        ("https://bg.example.com ", "space"),
        ("https://bg.exa\tmple.com", "space"),
        ("https://admin@bg.example.com", "user info"),
        ("https://admin:pw@bg.example.com", "user info"),
        ("https://bg.example.com/breakglass", "no path"),
        ("http://bg.example.com", "https"),
        ("ftp://bg.example.com", "scheme"),
    ] {
        let (code, out) = check(bad);
        assert_eq!(code, Some(2), "{bad:?}: {out}");
        assert!(out.contains(why), "{bad:?}: {out}");
        assert!(!out.contains(":pw@"), "user info is not repeated (it may hold a password): {out}");
    }
}

/// An error answered to a browser page route: a whole HTML page with that status.
async fn assert_page_error(req: reqwest::RequestBuilder, status: StatusCode) {
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), status);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = res.text().await.unwrap();
    assert!(html.contains("<html lang=\"en\">") && html.contains("<title>"), "{html}");
}

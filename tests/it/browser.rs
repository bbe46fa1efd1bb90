//! The web UI in real headless Chromium, driven through the DevTools protocol, each
//! person with their own browser context and CDP virtual authenticator (ctap2, user
//! verification): the whole two-person story clicked through as people would.
//! Screenshots of every page at desktop and phone width land in target/e2e/.
use std::{
    sync::{Arc, Mutex},
    time::Duration as StdDuration,
};

use breakglass::{clock::Clock, domain::Role};
use chromiumoxide::{
    Browser, BrowserConfig, Page,
    cdp::browser_protocol::{
        emulation::{ClearDeviceMetricsOverrideParams, SetDeviceMetricsOverrideParams},
        network::{EnableParams as NetworkEnable, EventRequestWillBeSent},
        page::CaptureScreenshotFormat,
        target::{CreateBrowserContextParams, CreateTargetParams},
        web_authn::{
            AddVirtualAuthenticatorParams, AuthenticatorProtocol, AuthenticatorTransport, EnableParams,
            VirtualAuthenticatorOptions,
        },
    },
    page::ScreenshotParams,
};
use futures::StreamExt;
use time::Duration;

use crate::{
    checkouts::{ACCOUNT, PASSWORD, decide},
    support::*,
};

const CHROMIUM: &str = "/usr/bin/chromium";

async fn launch(dir: &std::path::Path) -> Browser {
    if !std::path::Path::new(CHROMIUM).exists() {
        panic!("{CHROMIUM} is missing: the browser tests need the Debian package `chromium` (.ci/run installs it)");
    }
    let config = BrowserConfig::builder()
        .chrome_executable(CHROMIUM)
        .no_sandbox()
        .user_data_dir(dir)
        .window_size(1280, 900)
        .args([
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .build()
        .unwrap();
    let (browser, mut handler) = Browser::launch(config).await.expect("chromium starts");
    tokio::spawn(async move { while handler.next().await.is_some() {} });
    browser
}

/// One person: their own cookies (browser context), their own security key.
struct Person {
    page: Page,
    requests: Arc<Mutex<Vec<String>>>,
}

async fn person(browser: &Browser) -> Person {
    let ctx = browser.create_browser_context(CreateBrowserContextParams::default()).await.unwrap();
    let page = browser
        .new_page(CreateTargetParams::builder().url("about:blank").browser_context_id(ctx).build().unwrap())
        .await
        .unwrap();
    page.execute(EnableParams::default()).await.unwrap();
    let options = VirtualAuthenticatorOptions::builder()
        .protocol(AuthenticatorProtocol::Ctap2)
        .transport(AuthenticatorTransport::Internal)
        .has_resident_key(true)
        .has_user_verification(true)
        .is_user_verified(true)
        .automatic_presence_simulation(true)
        .build()
        .unwrap();
    page.execute(AddVirtualAuthenticatorParams::new(options)).await.unwrap();
    page.execute(NetworkEnable::default()).await.unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let mut events = page.event_listener::<EventRequestWillBeSent>().await.unwrap();
    let sink = requests.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            sink.lock().unwrap().push(ev.request.url.clone());
        }
    });
    Person { page, requests }
}

async fn eval<T: serde::de::DeserializeOwned>(page: &Page, js: &str) -> T {
    page.evaluate(js).await.unwrap_or_else(|e| panic!("{js}: {e}")).into_value().unwrap()
}

/// Wait until `cond` (JS) is true; on timeout say where we are and what the page says.
async fn wait(page: &Page, cond: &str) {
    for _ in 0..150 {
        if page.evaluate(cond).await.ok().and_then(|v| v.into_value::<bool>().ok()).unwrap_or(false) {
            return;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    let url = page.url().await.ok().flatten().unwrap_or_default();
    let status: String = eval(page, "document.getElementById('status')?.textContent || ''").await;
    panic!("timed out waiting for `{cond}` on {url}; status: {status}");
}

async fn goto(page: &Page, url: &str) {
    // Navigate as a link would, then poll until a *new* document (the marker is gone)
    // has loaded at that address: robust even when navigating to the current URL.
    let _ = page
        .evaluate(format!(
            "window.__bgOld = true; const u = new URL({url:?}); \
             const same = u.pathname + u.search === location.pathname + location.search; \
             location.assign(u.href); if (same) location.reload();"
        ))
        .await;
    let path = url::Url::parse(url).unwrap();
    let target = format!("{}{}", path.path(), path.query().map(|q| format!("?{q}")).unwrap_or_default());
    wait(page, &format!("!window.__bgOld && location.pathname + location.search === {target:?} && document.readyState === 'complete'")).await;
}

/// The element, found again if the document changed under the driver's cached node
/// ids ("Could not find node with given id" right after a reload).
async fn element(page: &Page, selector: &str) -> chromiumoxide::Element {
    let mut last = String::new();
    for _ in 0..20 {
        wait(page, &format!("!!document.querySelector({selector:?})")).await;
        match page.find_element(selector).await {
            Ok(el) => return el,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    panic!("{selector}: {last}");
}

async fn fill(page: &Page, selector: &str, text: &str) {
    let el = element(page, selector).await;
    el.click().await.unwrap();
    eval::<serde_json::Value>(page, &format!("document.querySelector({selector:?}).value = ''")).await;
    el.type_str(text).await.unwrap();
}

async fn click(page: &Page, selector: &str) {
    element(page, selector).await.click().await.unwrap();
}

async fn text(page: &Page, selector: &str) -> String {
    eval(page, &format!("document.querySelector({selector:?})?.textContent ?? ''")).await
}

/// Screenshots at desktop and phone width under target/e2e/.
async fn shoot(page: &Page, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    for (label, width, height, mobile) in [("desktop", 1280, 900, false), ("phone", 375, 812, true)] {
        page.execute(SetDeviceMetricsOverrideParams::new(width, height, 1.0, mobile)).await.unwrap();
        let png = page
            .screenshot(ScreenshotParams::builder().format(CaptureScreenshotFormat::Png).full_page(true).build())
            .await
            .unwrap();
        assert!(png.len() > 1000, "a real screenshot");
        std::fs::write(dir.join(format!("{name}-{label}.png")), png).unwrap();
        if mobile {
            let overflow: bool = eval(page, "document.documentElement.scrollWidth > window.innerWidth + 1").await;
            assert!(!overflow, "{name} is readable at 375 px: nothing wider than the screen");
        }
    }
    page.execute(ClearDeviceMetricsOverrideParams::default()).await.unwrap();
}

async fn enrol(s: &TestServer, p: &Person, roles: &[Role], name: &str, email: &str) {
    let token = s.invite(roles).await;
    goto(&p.page, &format!("{}/enrol#{token}", s.origin)).await;
    fill(&p.page, "#name", name).await;
    fill(&p.page, "#email", email).await;
    click(&p.page, "#enrol-form button[type=submit]").await;
    // The new page has loaded (not only its address changed) and greets the new person.
    wait(
        &p.page,
        &format!(
            "location.pathname === '/me' && document.readyState === 'complete' && \
             (document.querySelector('h1')?.textContent ?? '').includes({name:?})"
        ),
    )
    .await;
}

async fn sign_in(s: &TestServer, p: &Person, email: &str) {
    goto(&p.page, &format!("{}/login", s.origin)).await;
    fill(&p.page, "#email", email).await;
    click(&p.page, "#login-form button[type=submit]").await;
    wait(&p.page, "location.pathname === '/' && document.readyState === 'complete'").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custodians_run_a_two_person_release_in_a_real_browser() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let browser = launch(dir.path()).await;
    let (ada, bo, cy, au) =
        (person(&browser).await, person(&browser).await, person(&browser).await, person(&browser).await);

    // Enrolment through invite links.
    goto(&ada.page, &format!("{}/enrol#not-yet", s.origin)).await;
    shoot(&ada.page, "enrol").await;
    enrol(&s, &ada, &[Role::Admin, Role::Custodian], "Ada Admin", "ada@example.com").await;
    shoot(&ada.page, "me").await;
    enrol(&s, &bo, &[Role::Custodian], "Bo Requester", "bo@example.com").await;
    enrol(&s, &cy, &[Role::Custodian], "Cy Approver", "cy@example.com").await;
    enrol(&s, &au, &[Role::Auditor], "Au Ditor", "au@example.com").await;

    // Ada puts an account into custody and deposits its secrets.
    goto(&ada.page, &format!("{}/admin", s.origin)).await;
    fill(&ada.page, "#new-account-id", "123456789012").await;
    fill(&ada.page, "#alias", "prod-payer").await;
    fill(&ada.page, "#root_email", "aws-root@example.com").await;
    click(&ada.page, "#account-form button[type=submit]").await;
    wait(&ada.page, "document.body.textContent.includes('prod-payer') && document.readyState === 'complete' && !!document.querySelector('#dep-account option')").await;
    fill(&ada.page, "#dep-value", PASSWORD).await;
    click(&ada.page, "#deposit-form button[type=submit]").await;
    wait(&ada.page, "document.getElementById('status').textContent.includes('Deposited')").await;
    eval::<serde_json::Value>(&ada.page, "document.querySelector('#dep-kind').value = 'totp_seed'").await;
    fill(&ada.page, "#dep-value", AWS_SEED).await;
    click(&ada.page, "#deposit-form button[type=submit]").await;
    wait(&ada.page, "document.getElementById('status').textContent.includes('Deposited')").await;
    shoot(&ada.page, "admin").await;

    // A day later (cooling-off over), everyone signs in again.
    s.clock.advance(Duration::hours(25));
    goto(&bo.page, &format!("{}/login", s.origin)).await;
    shoot(&bo.page, "login").await;
    for (p, email) in
        [(&ada, "ada@example.com"), (&bo, "bo@example.com"), (&cy, "cy@example.com"), (&au, "au@example.com")]
    {
        sign_in(&s, p, email).await;
    }

    // Bo asks.
    fill(&bo.page, "#reason", "Billing lockout: restore the IAM admin role").await;
    fill(&bo.page, "#ticket", "INC-4711").await;
    fill(&bo.page, "#duration_minutes", "30").await;
    shoot(&bo.page, "dashboard").await;
    click(&bo.page, "#request-form button[type=submit]").await;
    wait(&bo.page, "location.pathname.startsWith('/checkouts/')").await;
    let checkout_url: String = eval(&bo.page, "location.href").await;
    // Bo cannot approve his own request: no buttons, and the page says so.
    assert!(text(&bo.page, "#self-approval-note").await.contains("cannot approve your own request"));
    let decide_form: bool = eval(&bo.page, "!!document.querySelector('#decide-form')").await;
    assert!(!decide_form, "no approve button for the requester");
    shoot(&bo.page, "checkout-pending").await;

    // Cy sees it waiting for her, reads who asks and why, and approves with her key.
    goto(&cy.page, &format!("{}/", s.origin)).await;
    assert!(text(&cy.page, "main").await.contains("Bo Requester asks for emergency root access to prod-payer"));
    goto(&cy.page, &checkout_url).await;
    let facts = text(&cy.page, ".facts").await;
    assert!(facts.contains("Billing lockout") && facts.contains("INC-4711") && facts.contains("30 minutes"), "{facts}");
    shoot(&cy.page, "checkout-approve").await;
    // Enter in the comment box decides nothing.
    fill(&cy.page, "#comment", "ok, on the bridge call").await;
    cy.page.find_element("#comment").await.unwrap().press_key("Enter").await.unwrap();
    wait(&cy.page, "document.getElementById('status').textContent.includes('Choose Approve or Deny')").await;
    assert_eq!(text(&cy.page, "#checkout-state").await, "pending");
    click(&cy.page, "button[data-decision=approve]").await;
    wait(&cy.page, "document.getElementById('checkout-state')?.textContent === 'approved'").await;

    // Bo's page, left open, follows the request live: it updates by itself.
    wait(&bo.page, "document.getElementById('checkout-state')?.textContent === 'approved' && !!document.getElementById('reveal-button')").await;
    assert!(text(&bo.page, "main").await.contains("Cy Approver: approve"));

    // Bo reveals: the password and the current MFA code.
    click(&bo.page, "#reveal-button").await;
    wait(&bo.page, "!document.getElementById('revealed').hidden").await;
    assert_eq!(text(&bo.page, "#password").await, PASSWORD);
    let code = text(&bo.page, "#totp-code").await;
    let expected = totp_rs::Totp::from_url(format!("otpauth://totp/x?secret={AWS_SEED}"))
        .unwrap()
        .generate(s.clock.now().unix_timestamp() as u64)
        .to_string();
    assert_eq!(code, expected, "the code shown is the code for now");
    let left = text(&bo.page, "#window-ends").await;
    assert!(left == "15 min 0 s" || left == "14 min 59 s", "the whole 15-minute window is left: {left}");
    let masked: bool = eval(&bo.page, "document.getElementById('password').hidden").await;
    assert!(masked, "the password stays hidden until asked");
    click(&bo.page, "button[data-toggle=password]").await;
    shoot(&bo.page, "checkout-released").await;

    // Check in, then rotate.
    goto(&bo.page, &checkout_url).await;
    fill(&bo.page, "#note", "Restored the IAM admin role.").await;
    click(&bo.page, "#close-form button[type=submit]").await;
    wait(&bo.page, "document.getElementById('checkout-state')?.textContent === 'closed'").await;
    fill(&bo.page, "#new-password", "A-new-root-password-2").await;
    click(&bo.page, "#rotate-form button[type=submit]").await;
    wait(&bo.page, "document.readyState === 'complete' && !document.querySelector('#rotate-form')").await;
    assert_eq!(s.app.get_account("123456789012".into()).await.unwrap().state, "available");

    // The auditor sees the whole story, and a verified chain.
    goto(&au.page, &format!("{}/audit", s.origin)).await;
    let log = text(&au.page, "#audit-log").await;
    for action in [
        "custodian.enrolled",
        "account.created",
        "secret.deposited",
        "checkout.requested",
        "checkout.approval_recorded",
        "checkout.released",
        "checkout.revealed",
        "checkout.closed",
    ] {
        assert!(log.contains(action), "{action} missing from the auditor's view");
    }
    assert!(text(&au.page, "#chain-status").await.contains("The hash chain verifies"));
    shoot(&au.page, "audit").await;
    goto(&ada.page, &format!("{}/drills", s.origin)).await;
    shoot(&ada.page, "drills").await;

    // Nothing was loaded from anywhere but the service itself.
    for p in [&ada, &bo, &cy, &au] {
        for url in p.requests.lock().unwrap().iter() {
            assert!(
                url.starts_with(&s.origin) || url.starts_with("data:") || url == "about:blank",
                "external request: {url}"
            );
        }
    }
    // Every page carries a strict CSP.
    let client = reqwest::Client::new();
    for path in ["/enrol", "/login", "/", "/admin", "/audit", "/drills", "/me", "/static/app.js"] {
        let res = client.get(s.url(path)).send().await.unwrap();
        let csp = res.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
    }
    drop(browser);
}

/// Installed before any page script: the browser's wall clock is off by `skew_ms`,
/// and the test can move the page's monotonic clock (`performance.now`) forward by
/// setting `window.__bgSkipMs`. The test controls both clocks the page could read.
fn clock_script(skew_ms: i64) -> String {
    format!(
        "(() => {{ const skew = {skew_ms}; const RealDate = Date; \
         class SkewedDate extends RealDate {{ constructor(...a) {{ if (a.length === 0) super(RealDate.now() + skew); else super(...a); }} \
         static now() {{ return RealDate.now() + skew; }} }} \
         globalThis.Date = SkewedDate; window.__bgSkipMs = 0; \
         const realNow = performance.now.bind(performance); performance.now = () => realNow() + window.__bgSkipMs; }})();"
    )
}

/// One reveal in the browser with the server's fixed clock at `server_start` and the
/// browser's wall clock skewed by `skew`: the secrets show for exactly the reveal
/// window, counted from what the server said.
async fn reveal_window_in_browser(browser: &Browser, server_start: time::OffsetDateTime, skew: Duration) {
    let s = TestServer::start_at(server_start, |_| {}).await;
    let bo = person(browser).await;
    bo.page.evaluate_on_new_document(clock_script(skew.whole_milliseconds() as i64)).await.unwrap();
    let browser_now: f64 = {
        goto(&bo.page, &format!("{}/login", s.origin)).await;
        eval(&bo.page, "Date.now()").await
    };
    let real_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as f64;
    assert!(
        ((browser_now - real_now) - skew.whole_milliseconds() as f64).abs() < 60_000.0,
        "the browser's clock is skewed as asked"
    );

    let ada = s.admin().await;
    enrol(&s, &bo, &[Role::Custodian], "Bo Requester", "bo@example.com").await;
    let mut cy = s.enrol(&[Role::Custodian], "Cy Approver", "cy@example.com").await;
    let got = post(
        &ada.client,
        s.url("/api/v1/accounts"),
        serde_json::json!({"account_id": ACCOUNT, "alias": "prod-payer", "root_email": "root@example.com"}),
    )
    .await;
    assert_eq!(got.0, reqwest::StatusCode::CREATED, "{}", got.1);
    for (kind, value) in [("root_password", PASSWORD), ("totp_seed", AWS_SEED)] {
        let got = put(
            &ada.client,
            s.url(format!("/api/v1/accounts/{ACCOUNT}/secrets/{kind}")),
            serde_json::json!({"value": value}),
        )
        .await;
        assert_eq!(got.0, reqwest::StatusCode::CREATED, "{}", got.1);
    }
    s.clock.advance(Duration::hours(25));
    s.login(&mut cy).await;
    sign_in(&s, &bo, "bo@example.com").await;

    fill(&bo.page, "#reason", "Billing lockout").await;
    fill(&bo.page, "#duration_minutes", "30").await;
    click(&bo.page, "#request-form button[type=submit]").await;
    wait(&bo.page, "location.pathname.startsWith('/checkouts/')").await;
    // The approval deadline counts down from the server's answer, not the browser's clock.
    wait(&bo.page, "/^\\d+ h \\d+ min$/.test(document.getElementById('expires-in')?.textContent)").await;
    let left = text(&bo.page, "#expires-in").await;
    assert!(left == "24 h 0 min" || left == "23 h 59 min", "a day left to approve, from the server: {left}");
    let id: String = eval(&bo.page, "location.pathname.split('/').pop()").await;
    let got = decide(&s, &mut cy, &id, "approve").await;
    assert_eq!(got.0, reqwest::StatusCode::OK, "{}", got.1);
    goto(&bo.page, &format!("{}/checkouts/{id}", s.origin)).await;
    click(&bo.page, "#reveal-button").await;
    wait(&bo.page, "!document.getElementById('revealed').hidden").await;
    assert_eq!(text(&bo.page, "#password").await, PASSWORD);
    let left = text(&bo.page, "#window-ends").await;
    assert!(left == "15 min 0 s" || left == "14 min 59 s", "the whole window is shown: {left}");

    // Three seconds before the window ends (on the page's own monotonic clock) the
    // secrets are still there...
    eval::<serde_json::Value>(&bo.page, "window.__bgSkipMs = 15 * 60 * 1000 - 3000").await;
    tokio::time::sleep(StdDuration::from_millis(600)).await;
    let visible: bool = eval(&bo.page, "!document.getElementById('revealed').hidden").await;
    assert!(visible, "still inside the window");
    assert_eq!(text(&bo.page, "#password").await, PASSWORD);
    let left = text(&bo.page, "#window-ends").await;
    assert!(left.starts_with("0 min ") && left != "0 min 0 s", "seconds left: {left}");
    // ...and one second after, they are gone from the page.
    eval::<serde_json::Value>(&bo.page, "window.__bgSkipMs = 15 * 60 * 1000 + 1000").await;
    wait(&bo.page, "document.getElementById('revealed').hidden").await;
    assert_eq!(text(&bo.page, "#password").await, "");
    assert_eq!(text(&bo.page, "#totp-code").await, "");
    assert_eq!(text(&bo.page, "#window-ends").await, "ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reveal_window_follows_the_server_whatever_the_date_or_the_browsers_clock() {
    let dir = tempfile::tempdir().unwrap();
    let browser = launch(dir.path()).await;
    let year = Duration::days(365);
    // The server's fixed clock a year in the past and a year in the future of the
    // suite's usual date; then the browser's own clock wrong by hours either way.
    for (server_start, skew) in [
        (start_time() - year, Duration::ZERO),
        (start_time() + year, Duration::ZERO),
        (start_time(), Duration::hours(5)),
        (start_time(), -Duration::hours(7)),
    ] {
        reveal_window_in_browser(&browser, server_start, skew).await;
    }
    drop(browser);
}

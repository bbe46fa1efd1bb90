//! The web UI in real headless Chromium, driven through the DevTools protocol, each
//! person with their own browser context and CDP virtual authenticator (ctap2, user
//! verification): the whole two-person story clicked through as people would.
//! Screenshots of every page at desktop and phone width land in target/e2e/.
use std::{
    sync::{Arc, Mutex},
    time::Duration as StdDuration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use breakglass::{clock::Clock, domain::Role};
use chromiumoxide::{
    Browser, BrowserConfig, Page,
    cdp::browser_protocol::{
        emulation::{ClearDeviceMetricsOverrideParams, SetDeviceMetricsOverrideParams},
        network::{EnableParams as NetworkEnable, EventRequestWillBeSent},
        page::{CaptureScreenshotFormat, EventJavascriptDialogOpening, HandleJavaScriptDialogParams},
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

pub(crate) async fn launch(dir: &std::path::Path) -> Browser {
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
    requests: Arc<Mutex<Vec<Sent>>>,
}

/// A request the page sent, as the DevTools protocol saw it leave the browser.
#[derive(Clone, Debug)]
struct Sent {
    method: String,
    url: String,
    /// The body, when there is one (decoded from the protocol's base64 entries).
    body: Option<String>,
    /// The browser said there is a body but did not include it.
    body_missing: bool,
}

async fn person(browser: &Browser) -> Person {
    person_with_key(browser, false).await
}

/// `prf`: the virtual authenticator computes PRF (CTAP2 hmac-secret), so the key can
/// hold quorum shares.
async fn person_with_key(browser: &Browser, prf: bool) -> Person {
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
        .has_prf(prf)
        .build()
        .unwrap();
    page.execute(AddVirtualAuthenticatorParams::new(options)).await.unwrap();
    page.execute(NetworkEnable::default()).await.unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let mut events = page.event_listener::<EventRequestWillBeSent>().await.unwrap();
    let sink = requests.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            let r = &ev.request;
            let body = r.post_data_entries.as_ref().map(|entries| {
                let mut bytes = Vec::new();
                for e in entries.iter().filter_map(|e| e.bytes.as_ref()) {
                    let b64: &str = e.as_ref();
                    bytes.extend(STANDARD.decode(b64).expect("post data entries are base64"));
                }
                String::from_utf8(bytes).expect("the pages send UTF-8")
            });
            let body_missing = r.has_post_data == Some(true) && body.is_none();
            sink.lock().unwrap().push(Sent { method: r.method.clone(), url: r.url.clone(), body, body_missing });
        }
    });
    Person { page, requests }
}

pub(crate) async fn eval<T: serde::de::DeserializeOwned>(page: &Page, js: &str) -> T {
    page.evaluate(js).await.unwrap_or_else(|e| panic!("{js}: {e}")).into_value().unwrap()
}

/// Wait until `cond` (JS) is true; on timeout say where we are and what the page says.
pub(crate) async fn wait(page: &Page, cond: &str) {
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

/// axe-core (npm, pinned by tests/fixtures/axe-core/package-lock.json, MPL-2.0).
const AXE_JS: &str = include_str!("../fixtures/axe-core/axe.min.js");

/// Run axe-core on the page as it is now and fail on any `serious` or `critical`
/// violation, printing each with the selectors of its nodes. axe is put into the page
/// through the DevTools protocol (`Runtime.evaluate`), not as a `<script>`, so the
/// page's CSP (`script-src 'self'`, no inline script) stays on while it is checked.
async fn axe(page: &Page, state: &str) {
    let found = axe_violations(page, state).await;
    AXE_STATES.lock().unwrap().push(state.to_owned());
    if !found.is_empty() {
        let listing: Vec<String> =
            found.iter().map(|v| format!("  {} ({}): {} — {}", v["id"], v["impact"], v["help"], v["nodes"])).collect();
        panic!("axe-core: serious or critical violations on {state}:\n{}", listing.join("\n"));
    }
}

/// The serious and critical violations axe-core finds on the page now.
async fn axe_violations(page: &Page, state: &str) -> Vec<serde_json::Value> {
    let present: bool = eval(page, "typeof window.axe === 'object'").await;
    if !present {
        page.evaluate_expression(AXE_JS).await.unwrap_or_else(|e| panic!("injecting axe-core on {state}: {e}"));
    }
    let found: Vec<serde_json::Value> = page
        .evaluate_function(
            "async () => { const r = await axe.run(document, { resultTypes: ['violations'] }); \
             return r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical') \
               .map(v => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' ')) })); }",
        )
        .await
        .unwrap_or_else(|e| panic!("running axe-core on {state}: {e}"))
        .into_value()
        .unwrap();
    let rules: i64 = eval(page, "axe.getRules().length").await;
    assert!(rules > 50, "axe-core is loaded with its rules ({rules})");
    found
}

/// Every state axe checked (so a test can say it checked them).
static AXE_STATES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Screenshots at desktop and phone width under target/e2e/, each state checked by
/// axe-core first.
pub(crate) async fn shoot(page: &Page, name: &str) {
    axe(page, name).await;
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

/// On /admin: the account ACCOUNT ("prod-payer") with its root password and TOTP seed.
async fn put_account_in_custody(s: &TestServer, ada: &Person) {
    goto(&ada.page, &format!("{}/admin", s.origin)).await;
    fill(&ada.page, "#new-account-id", ACCOUNT).await;
    fill(&ada.page, "#alias", "prod-payer").await;
    fill(&ada.page, "#root_email", "aws-root@example.com").await;
    click(&ada.page, "#account-form button[type=submit]").await;
    wait(&ada.page, "document.body.textContent.includes('prod-payer') && document.readyState === 'complete' && !!document.querySelector('#dep-account option')").await;
    // The confirmation survived the reload, next to the form.
    wait(&ada.page, "(document.querySelector('#account-form .msg')?.textContent ?? '').includes('is in custody')")
        .await;
    fill(&ada.page, "#dep-value", PASSWORD).await;
    click(&ada.page, "#deposit-form button[type=submit]").await;
    // The confirmation is next to the form, and the accounts table follows.
    wait(&ada.page, "document.querySelector('#deposit-form .msg').textContent.includes('Deposited')").await;
    wait(
        &ada.page,
        &format!("document.querySelector('[data-secrets-of=\"{ACCOUNT}\"]').textContent.includes('root_password v1')"),
    )
    .await;
    click(&ada.page, "#deposit-form .msg button.dismiss").await;
    eval::<serde_json::Value>(&ada.page, "document.querySelector('#dep-kind').value = 'totp_seed'").await;
    fill(&ada.page, "#dep-value", AWS_SEED).await;
    click(&ada.page, "#deposit-form button[type=submit]").await;
    wait(&ada.page, "document.querySelector('#deposit-form .msg').textContent.includes('Deposited')").await;
    wait(
        &ada.page,
        &format!("document.querySelector('[data-secrets-of=\"{ACCOUNT}\"]').textContent.includes('totp_seed v1')"),
    )
    .await;
}

/// Nothing was loaded from, or sent to, anywhere but the service itself.
fn assert_same_origin(s: &TestServer, people: &[&Person]) {
    for p in people {
        for r in p.requests.lock().unwrap().iter() {
            let url = &r.url;
            assert!(
                url.starts_with(&s.origin) || url.starts_with("data:") || url == "about:blank",
                "external request: {url}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custodians_run_a_two_person_release_in_a_real_browser() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let browser = launch(dir.path()).await;
    let (ada, bo, cy, au) =
        (person(&browser).await, person(&browser).await, person(&browser).await, person(&browser).await);

    // Enrolment through invite links; the page states the configured cooling-off.
    goto(&ada.page, &format!("{}/enrol#not-yet", s.origin)).await;
    assert!(text(&ada.page, "#cooling-off").await.contains("a 24-hour cooling-off period"));
    // The checker can fail: an image without a text alternative is critical.
    eval::<bool>(
        &ada.page,
        "document.querySelector('main').insertAdjacentHTML('beforeend', '<img src=\"/favicon.svg\" id=\"axe-probe\">'); true",
    )
    .await;
    let probe = axe_violations(&ada.page, "enrol with a probe").await;
    assert!(
        probe.iter().any(|v| v["id"] == "image-alt" && v["nodes"].to_string().contains("#axe-probe")),
        "axe-core reports an image without alt: {probe:?}"
    );
    eval::<bool>(&ada.page, "document.getElementById('axe-probe').remove(); true").await;
    shoot(&ada.page, "enrol").await;
    enrol(&s, &ada, &[Role::Admin, Role::Custodian], "Ada Admin", "ada@example.com").await;
    shoot(&ada.page, "me").await;
    enrol(&s, &bo, &[Role::Custodian], "Bo Requester", "bo@example.com").await;
    enrol(&s, &cy, &[Role::Custodian], "Cy Approver", "cy@example.com").await;
    enrol(&s, &au, &[Role::Auditor], "Au Ditor", "au@example.com").await;

    // Ada puts an account into custody and deposits its secrets.
    put_account_in_custody(&s, &ada).await;
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

    // Cy's dashboard is open before Bo asks; an auditor's shows what auditors need.
    assert!(text(&cy.page, "#awaiting-empty").await.contains("Nothing waits for you"));
    assert!(text(&au.page, "main").await.contains("Recent checkouts"));
    let au_request_form: bool = eval(&au.page, "!!document.querySelector('#request-form')").await;
    assert!(!au_request_form, "an auditor gets no request form");

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
    // Bo sees whom to ask (names, not ids), can copy the link, and how long is left.
    let approvers = text(&bo.page, "#approver-list").await;
    assert!(
        approvers.contains("Cy Approver") && approvers.contains("Ada Admin") && !approvers.contains("Bo Requester"),
        "{approvers}"
    );
    assert!(!approvers.contains("Au Ditor"), "auditors do not approve: {approvers}");
    assert!(text(&bo.page, "#notified").await.contains("SNS"));
    let left = text(&bo.page, "#approve-left").await;
    assert!(left == "24 h 0 min" || left == "23 h 59 min", "time left to approve: {left}");
    shoot(&bo.page, "checkout-pending").await;

    // Cy's dashboard, untouched since before the request, shows it within seconds and
    // the tab title counts it.
    wait(&cy.page, "document.title.startsWith('(1) ') && document.getElementById('awaiting-list').textContent.includes('Bo Requester asks for emergency root access to prod-payer')").await;
    goto(&cy.page, &checkout_url).await;
    let facts = text(&cy.page, ".facts").await;
    assert!(facts.contains("Billing lockout") && facts.contains("INC-4711") && facts.contains("30 minutes"), "{facts}");
    shoot(&cy.page, "checkout-approve").await;
    // Enter in the comment box decides nothing.
    fill(&cy.page, "#comment", "ok, on the bridge call").await;
    cy.page.find_element("#comment").await.unwrap().press_key("Enter").await.unwrap();
    wait(&cy.page, "document.querySelector('#decide-form .msg').textContent.includes('Choose Approve or Deny')").await;
    assert_eq!(text(&cy.page, "#checkout-state").await, "pending");
    click(&cy.page, "button[data-decision=approve]").await;
    wait(&cy.page, "document.getElementById('checkout-state')?.textContent === 'approved'").await;
    // The confirmation is where Cy is looking, and the form that no longer applies is gone.
    wait(&cy.page, "document.getElementById('checkout-msg').textContent.includes('Approved')").await;
    let decide_hidden: bool = eval(&cy.page, "document.getElementById('decide-form').hidden").await;
    assert!(decide_hidden, "no decide buttons once the request is approved");

    // Bo's page, left open, follows the request live: it updates by itself.
    wait(&bo.page, "document.getElementById('checkout-state')?.textContent === 'approved' && !document.getElementById('release').hidden").await;
    assert!(text(&bo.page, "main").await.contains("Cy Approver: approve"));
    let left = text(&bo.page, "#reveal-left").await;
    assert!(left == "1 h 0 min" || left == "59 min 59 s" || left.ends_with(" s"), "time left to reveal: {left}");

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
    // Without a reload the page is current: no cancel, check-in offered, the window and
    // the end of the checkout counting down.
    wait(&bo.page, "document.getElementById('checkout-state').textContent === 'released' && document.getElementById('cancel-block').hidden && !document.getElementById('close-form').hidden").await;
    let window_left = text(&bo.page, "#window-left").await;
    assert!(window_left.starts_with("15 min") || window_left.starts_with("14 min"), "{window_left}");
    let ends = text(&bo.page, "#checkout-ends").await;
    assert!(ends.starts_with("30 min") || ends.starts_with("29 min"), "{ends}");
    let reveal_row_hidden: bool = eval(&bo.page, "document.getElementById('reveal-left').closest('dd').hidden").await;
    assert!(reveal_row_hidden, "no 'time left to reveal' once released");
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
    // People by name, one line per entry, the JSON behind a disclosure.
    assert!(
        log.contains(
            "Cy Approver approved Bo Requester's emergency root access request for prod-payer. Ticket: INC-4711."
        ),
        "{log}"
    );
    let visible: String = eval(&au.page, "document.getElementById('audit-log').innerText").await;
    assert!(
        !visible.contains("custodian:"),
        "no raw ids on screen (they are in the titles and the details): {visible}"
    );
    shoot(&au.page, "audit").await;
    click(&au.page, "#audit-log tbody tr details > summary").await;
    wait(&au.page, "document.querySelector('#audit-log tbody tr details').open").await;
    shoot(&au.page, "audit-details-open").await;
    // Filters: Cy's entries only.
    let cy_id: String = eval(
        &au.page,
        "[...document.querySelectorAll('#f-person option')].find(o => o.textContent === 'Cy Approver').value",
    )
    .await;
    eval::<serde_json::Value>(&au.page, &format!("document.querySelector('#f-person').value = {cy_id:?}")).await;
    click(&au.page, "#audit-filters button[type=submit]").await;
    wait(
        &au.page,
        &format!("location.search.includes({:?}) && document.readyState === 'complete'", "person=custodian"),
    )
    .await;
    let filtered = text(&au.page, "#audit-log").await;
    assert!(filtered.contains("Cy Approver approved") && !filtered.contains("Bo Requester checked in"), "{filtered}");
    shoot(&au.page, "audit-filtered").await;
    // The checkout's story, from its entry.
    click(&au.page, "#audit-log a[href$='/story']").await;
    wait(&au.page, "location.pathname.endsWith('/story') && document.readyState === 'complete'").await;
    let verified = text(&au.page, "#story-verification").await;
    assert!(verified.contains("2 of 2 signatures on this checkout verified offline"), "{verified}");
    assert!(text(&au.page, "#story-steps").await.contains("Signature verified"));
    shoot(&au.page, "story").await;
    // Error pages are pages, with a title, language and the way back.
    goto(&au.page, &format!("{}/no/such/page", s.origin)).await;
    assert_eq!(eval::<String>(&au.page, "document.title").await, "Page not found · breakglass");
    assert_eq!(eval::<String>(&au.page, "document.documentElement.lang").await, "en");
    shoot(&au.page, "not-found").await;
    goto(&bo.page, &format!("{}/audit", s.origin)).await;
    assert!(text(&bo.page, "main").await.contains("This page is for auditors and admins."));
    shoot(&bo.page, "forbidden").await;
    goto(&ada.page, &format!("{}/drills", s.origin)).await;
    shoot(&ada.page, "drills").await;

    // axe-core checked every state above (each `shoot`).
    let checked = AXE_STATES.lock().unwrap().clone();
    for state in [
        "enrol",
        "admin",
        "checkout-approve",
        "checkout-released",
        "audit",
        "audit-details-open",
        "story",
        "not-found",
        "forbidden",
        "drills",
    ] {
        assert!(checked.iter().any(|c| c == state), "axe-core did not check {state}: {checked:?}");
    }
    // Nothing was loaded from anywhere but the service itself.
    assert_same_origin(&s, &[&ada, &bo, &cy, &au]);
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
    wait(&bo.page, "/^\\d+ h \\d+ min$/.test(document.getElementById('approve-left')?.textContent)").await;
    let left = text(&bo.page, "#approve-left").await;
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

/// Accept every `confirm()` the page shows, through the DevTools protocol (as a person
/// clicking OK); returns the messages shown.
async fn accept_dialogs(page: &Page) -> Arc<Mutex<Vec<String>>> {
    let mut events = page.event_listener::<EventJavascriptDialogOpening>().await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (sink, page) = (seen.clone(), page.clone());
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            sink.lock().unwrap().push(ev.message.clone());
            page.execute(HandleJavaScriptDialogParams::new(true)).await.unwrap();
        }
    });
    seen
}

/// The test, not the app, asks this person's authenticator for the PRF output of
/// `credential_id` (base64url) for the quorum salt, through the page (nothing is sent
/// anywhere): what the page derives its share identity from.
async fn prf_output(p: &Person, credential_id: &str) -> [u8; 32] {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let salt = breakglass::crypto::keys::prf_salt();
    let id = URL_SAFE_NO_PAD.decode(credential_id).unwrap();
    let js = format!(
        "async () => {{ const cred = await navigator.credentials.get({{ publicKey: {{ \
           challenge: crypto.getRandomValues(new Uint8Array(32)), rpId: location.hostname, \
           allowCredentials: [{{ type: 'public-key', id: new Uint8Array({id:?}) }}], \
           userVerification: 'required', extensions: {{ prf: {{ eval: {{ first: new Uint8Array({salt:?}) }} }} }} }} }}); \
         const out = cred.getClientExtensionResults().prf?.results?.first; \
         return out ? Array.from(new Uint8Array(out)) : null; }}"
    );
    let got: Option<Vec<u8>> =
        p.page.evaluate_function(js).await.expect("the test's own assertion").into_value().unwrap();
    got.expect("the virtual authenticator computes PRF").try_into().unwrap()
}

/// The object keys anywhere in a JSON value.
fn json_keys(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                json_keys(v, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| json_keys(v, out)),
        _ => {}
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custodians_run_a_quorum_release_in_a_real_browser_with_prf_keys() {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    use breakglass::crypto::quorum::prf_share_identity;
    use secrecy::ExposeSecret;

    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let browser = launch(dir.path()).await;
    // One browser context and one PRF-capable authenticator per custodian, for the
    // whole story (a credential copied elsewhere would lose its PRF output).
    let (ada, bo, cy) = (
        person_with_key(&browser, true).await,
        person_with_key(&browser, true).await,
        person_with_key(&browser, true).await,
    );
    let shares_of = |id: &str| -> (i64, bool) {
        let db = s.db();
        let n =
            db.query_row("SELECT count(*) FROM checkout_shares WHERE checkout_id = ?1", [id], |r| r.get(0)).unwrap();
        let transit =
            db.query_row("SELECT transit_sealed IS NOT NULL FROM checkouts WHERE id = ?1", [id], |r| r.get(0)).unwrap();
        (n, transit)
    };

    // Enrolment prepares the key for quorum at once (a second touch): the profile says so.
    for (p, roles, name, email) in [
        (&ada, &[Role::Admin, Role::Custodian][..], "Ada Admin", "ada@example.com"),
        (&bo, &[Role::Custodian][..], "Bo Requester", "bo@example.com"),
        (&cy, &[Role::Custodian][..], "Cy Approver", "cy@example.com"),
    ] {
        enrol(&s, p, roles, name, email).await;
        assert_eq!(
            text(&p.page, ".quorum-status[data-prf=ready]").await,
            "Holds quorum shares.",
            "{name}'s key was prepared for quorum at enrolment"
        );
        let offered: bool = eval(&p.page, "!!document.querySelector('button[data-action=prepare-key]')").await;
        assert!(!offered, "a prepared key is not offered preparation again");
    }
    shoot(&cy.page, "quorum-me").await;
    let recipients: i64 = s
        .db()
        .query_row("SELECT count(*) FROM credentials WHERE prf_recipient GLOB 'age1*'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(recipients, 3, "one share recipient per key");

    put_account_in_custody(&s, &ada).await;

    // A day later (cooling-off over), everyone signs in again.
    s.clock.advance(Duration::hours(25));
    for (p, email) in [(&ada, "ada@example.com"), (&bo, "bo@example.com"), (&cy, "cy@example.com")] {
        sign_in(&s, p, email).await;
    }

    // Ada turns quorum on, and clicks OK in the browser's confirm().
    let dialogs = accept_dialogs(&ada.page).await;
    goto(&ada.page, &format!("{}/admin", s.origin)).await;
    click(&ada.page, &format!("button[data-action=quorum][data-account='{ACCOUNT}']")).await;
    wait(
        &ada.page,
        "document.readyState === 'complete' && document.body.textContent.includes('quorum: 2 of 3 holders')",
    )
    .await;
    assert!(
        dialogs.lock().unwrap().iter().any(|m| m.contains("quorum mode") && m.contains("no way back")),
        "the admin was asked first: {:?}",
        dialogs.lock().unwrap()
    );
    shoot(&ada.page, "quorum-admin").await;
    let account = s.app.get_account(ACCOUNT.into()).await.unwrap();
    assert_eq!(account.custody, breakglass::domain::Custody::Quorum);
    let wrapped: Option<Vec<u8>> =
        s.db().query_row("SELECT wrapped_key FROM accounts WHERE account_id = ?1", [ACCOUNT], |r| r.get(0)).unwrap();
    assert_eq!(wrapped, None, "the server keeps no copy of the account key");

    // Bo asks.
    goto(&bo.page, &format!("{}/", s.origin)).await;
    fill(&bo.page, "#reason", "Billing lockout: restore the IAM admin role").await;
    fill(&bo.page, "#ticket", "INC-4711").await;
    fill(&bo.page, "#duration_minutes", "30").await;
    click(&bo.page, "#request-form button[type=submit]").await;
    wait(&bo.page, "location.pathname.startsWith('/checkouts/') && document.readyState === 'complete'").await;
    let checkout_url: String = eval(&bo.page, "location.href").await;
    let id: String = eval(&bo.page, "location.pathname.split('/').pop()").await;
    assert_eq!(shares_of(&id), (0, true), "a sealed transit key, no shares yet");

    // Cy approves: her page opens her share with her key's PRF output and hands it over
    // re-encrypted to the checkout's transit key.
    goto(&cy.page, &checkout_url).await;
    assert!(text(&cy.page, "#quorum-approve-note").await.contains("hands over your share"));
    shoot(&cy.page, "quorum-approve").await;
    click(&cy.page, "button[data-action=decide][data-decision=approve]").await;
    wait(&cy.page, "document.getElementById('checkout-state')?.textContent === 'approved'").await;
    assert_eq!(shares_of(&id), (1, true), "Cy's share is on file");

    // Bo reveals: his own share is the second of k = 2.
    goto(&bo.page, &checkout_url).await;
    assert!(text(&bo.page, "#release").await.contains("hands over your share"));
    click(&bo.page, "#reveal-button").await;
    wait(&bo.page, "!document.getElementById('revealed').hidden").await;
    assert_eq!(text(&bo.page, "#password").await, PASSWORD);
    let expected = totp_rs::Totp::from_url(format!("otpauth://totp/x?secret={AWS_SEED}"))
        .unwrap()
        .generate(s.clock.now().unix_timestamp() as u64)
        .to_string();
    assert_eq!(text(&bo.page, "#totp-code").await, expected, "the code for the server's now");
    assert_eq!(text(&bo.page, "#checkout-state").await, "released");
    click(&bo.page, "button[data-toggle=password]").await;
    shoot(&bo.page, "quorum-released").await;
    assert_eq!(shares_of(&id), (2, true), "two shares on file while released");

    // What the pages sent: bodies for every POST, a share with the approval and the
    // reveal, and no extension output at all (the PRF output stays in the browser).
    let finish = |p: &Person, path: &str| -> Vec<serde_json::Value> {
        p.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "POST" && r.url.ends_with(path))
            .map(|r| serde_json::from_str(r.body.as_deref().expect("a body")).unwrap())
            .collect()
    };
    let approvals = finish(&cy, &format!("/checkouts/{id}/approvals/finish"));
    let releases = finish(&bo, &format!("/checkouts/{id}/release/finish"));
    assert_eq!((approvals.len(), releases.len()), (1, 1));
    for body in approvals.iter().chain(&releases) {
        assert!(body["share"].as_str().is_some_and(|s| STANDARD.decode(s).is_ok_and(|b| b.starts_with(b"age-"))));
        assert_eq!(body["credential"]["extensions"], serde_json::json!({}), "{body}");
    }
    let mut prepared_keys = Vec::new();
    for p in [&ada, &bo, &cy] {
        let prepared = finish(p, "/share-recipient/finish");
        assert_eq!(prepared.len(), 1, "prepared once, at enrolment");
        let url =
            p.requests.lock().unwrap().iter().find(|r| r.url.ends_with("/share-recipient/finish")).unwrap().url.clone();
        let credential_id = url.rsplit('/').nth(2).unwrap().to_owned();
        prepared_keys.push((credential_id, prepared[0]["recipient"].as_str().unwrap().to_owned()));
        for r in p.requests.lock().unwrap().iter().filter(|r| r.method != "GET") {
            assert!(!r.body_missing, "the protocol gave the body of {} {}", r.method, r.url);
            let body: serde_json::Value = serde_json::from_str(r.body.as_deref().unwrap_or("null")).unwrap();
            let mut keys = Vec::new();
            json_keys(&body, &mut keys);
            for k in ["prf", "results", "clientExtensionResults"] {
                assert!(!keys.iter().any(|x| x == k), "{} sent `{k}`: {body}", r.url);
            }
        }
    }

    // The PRF output itself (asked by the test from each authenticator) derives, in
    // Rust, the recipient the page derived in WebCrypto; and neither it nor the
    // identity it derives appears in anything sent or in any file of the data dir.
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for (p, (credential_id, recipient)) in [&ada, &bo, &cy].into_iter().zip(&prepared_keys) {
        let prf = prf_output(p, credential_id).await;
        let identity = prf_share_identity(&prf).unwrap();
        assert_eq!(&identity.to_public().to_string(), recipient, "page and server derive the same recipient");
        let age_identity =
            breakglass::crypto::keys::derive_age_identity(breakglass::crypto::keys::LABEL_PRF_SHARE, &prf).unwrap();
        assert_eq!(age_identity.to_public().to_string(), *recipient);
        let secret = age_identity.to_string().expose_secret().to_owned();
        for (what, v) in [
            ("raw", prf.to_vec()),
            ("hex", hex::encode(prf).into_bytes()),
            ("base64", STANDARD_NO_PAD.encode(prf).into_bytes()),
            ("base64url", URL_SAFE_NO_PAD.encode(prf).into_bytes()),
            ("identity", secret.clone().into_bytes()),
            ("identity lowercase", secret.to_lowercase().into_bytes()),
        ] {
            needles.push((what.to_owned(), v));
        }
    }
    let mut haystacks: Vec<(String, Vec<u8>)> =
        files_under(s.dir.path()).into_iter().map(|f| (f.display().to_string(), std::fs::read(&f).unwrap())).collect();
    for p in [&ada, &bo, &cy] {
        for r in p.requests.lock().unwrap().iter() {
            haystacks.push((r.url.clone(), r.body.clone().unwrap_or_default().into_bytes()));
        }
    }
    // The scan reads what the server keeps: the public recipients are in the data dir.
    for (_, recipient) in &prepared_keys {
        let on_file = haystacks.iter().any(|(f, hay)| f.starts_with('/') && contains(hay, recipient.as_bytes()));
        assert!(on_file, "{recipient} is in the data dir");
    }
    for (where_, hay) in &haystacks {
        for (what, needle) in &needles {
            assert!(!contains(hay, needle), "a PRF output ({what}) reached {where_}");
        }
    }

    // Bo checks in: the transit key and the shares are gone.
    goto(&bo.page, &checkout_url).await;
    fill(&bo.page, "#note", "Restored the IAM admin role.").await;
    click(&bo.page, "#close-form button[type=submit]").await;
    wait(&bo.page, "document.getElementById('checkout-state')?.textContent === 'closed'").await;
    assert_eq!(shares_of(&id), (0, false), "checking in deletes the transit key and the shares");
    let actions = audit_actions(&s.db());
    assert_eq!(actions.iter().filter(|a| *a == "checkout.share_handed_over").count(), 2);
    assert!(actions.contains(&"account.quorum_enabled".to_owned()));

    assert_same_origin(&s, &[&ada, &bo, &cy]);
    drop(browser);
}

// ---- keyboard only ----

/// One key press through the DevTools protocol, as a keyboard would send it.
async fn press(page: &Page, key: &str, shift: bool) {
    use chromiumoxide::cdp::browser_protocol::input::{DispatchKeyEventParams, DispatchKeyEventType};
    let (code, vk, text) = match key {
        "Tab" => ("Tab", 9, None),
        "Enter" => ("Enter", 13, Some("\r")),
        " " => ("Space", 32, Some(" ")),
        other => panic!("no key {other}"),
    };
    for kind in [DispatchKeyEventType::KeyDown, DispatchKeyEventType::KeyUp] {
        let mut b = DispatchKeyEventParams::builder()
            .r#type(kind.clone())
            .key(key)
            .code(code)
            .windows_virtual_key_code(vk)
            .native_virtual_key_code(vk)
            .modifiers(if shift { 8 } else { 0 });
        if let (Some(t), DispatchKeyEventType::KeyDown) = (text, &kind) {
            b = b.text(t);
        }
        page.execute(b.build().unwrap()).await.unwrap();
    }
}

/// Type text into whatever has the focus (what a keyboard's characters do).
async fn type_keys(page: &Page, text: &str) {
    use chromiumoxide::cdp::browser_protocol::input::InsertTextParams;
    page.execute(InsertTextParams::new(text)).await.unwrap();
}

/// Press Tab until `selector` has the focus: it must be reachable from the keyboard,
/// in a bounded number of presses.
async fn tab_to(page: &Page, selector: &str) {
    for _ in 0..60 {
        let here: bool = eval(page, &format!("document.activeElement?.matches({selector:?}) ?? false")).await;
        if here {
            return;
        }
        press(page, "Tab", false).await;
    }
    let at: String = eval(page, "document.activeElement?.outerHTML?.slice(0, 120) ?? 'nothing'").await;
    panic!("{selector} cannot be reached with Tab (focus stays on {at})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_person_release_can_be_done_with_the_keyboard_alone() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let browser = launch(dir.path()).await;
    let (ada, bo, cy) = (person(&browser).await, person(&browser).await, person(&browser).await);
    enrol(&s, &ada, &[Role::Admin, Role::Custodian], "Ada Admin", "ada@example.com").await;
    enrol(&s, &bo, &[Role::Custodian], "Bo Requester", "bo@example.com").await;
    enrol(&s, &cy, &[Role::Custodian], "Cy Approver", "cy@example.com").await;
    put_account_in_custody(&s, &ada).await;
    s.clock.advance(Duration::hours(25));

    // Sign in: type the address, Enter submits.
    for (p, email) in [(&bo, "bo@example.com"), (&cy, "cy@example.com")] {
        goto(&p.page, &format!("{}/login", s.origin)).await;
        tab_to(&p.page, "#email").await;
        type_keys(&p.page, email).await;
        press(&p.page, "Enter", false).await;
        wait(&p.page, "location.pathname === '/' && document.readyState === 'complete'").await;
    }

    // Bo asks: every field reached with Tab, the form sent with Enter on its button.
    tab_to(&bo.page, "#reason").await;
    type_keys(&bo.page, "Keyboard-only drill of the release path").await;
    tab_to(&bo.page, "#ticket").await;
    type_keys(&bo.page, "INC-42").await;
    tab_to(&bo.page, "#request-form button[type=submit]").await;
    press(&bo.page, "Enter", false).await;
    wait(&bo.page, "location.pathname.startsWith('/checkouts/') && document.readyState === 'complete'").await;
    let checkout_url: String = eval(&bo.page, "location.href").await;

    // Cy approves with the keyboard: Tab to "Approve with my key", Enter.
    goto(&cy.page, &checkout_url).await;
    tab_to(&cy.page, "button[data-decision=approve]").await;
    press(&cy.page, "Enter", false).await;
    wait(&cy.page, "document.getElementById('checkout-state')?.textContent === 'approved'").await;

    // Bo's page follows; he reveals with the keyboard, and checks in.
    wait(&bo.page, "document.getElementById('checkout-state')?.textContent === 'approved' && !document.getElementById('release').hidden").await;
    tab_to(&bo.page, "#reveal-button").await;
    press(&bo.page, "Enter", false).await;
    wait(&bo.page, "!document.getElementById('revealed').hidden").await;
    tab_to(&bo.page, "button[data-toggle=password]").await;
    press(&bo.page, " ", false).await;
    wait(&bo.page, "!document.getElementById('password').hidden").await;
    assert_eq!(text(&bo.page, "#password").await, PASSWORD);
    wait(&bo.page, "!document.getElementById('close-form').hidden").await;
    tab_to(&bo.page, "#note").await;
    type_keys(&bo.page, "Checked, nothing changed.").await;
    tab_to(&bo.page, "#close-form button[type=submit]").await;
    press(&bo.page, "Enter", false).await;
    wait(
        &bo.page,
        "document.readyState === 'complete' && document.getElementById('checkout-state')?.textContent === 'closed'",
    )
    .await;
    let id = checkout_url.rsplit('/').next().unwrap().to_owned();
    assert_eq!(s.app.get_checkout(id).await.unwrap().state, "closed");
    shoot(&bo.page, "keyboard-closed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unexplained_root_use_shows_on_the_dashboard_until_an_admin_acknowledges_it_in_a_real_browser() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let browser = launch(dir.path()).await;
    let ada = person(&browser).await;
    enrol(&s, &ada, &[Role::Admin, Role::Custodian], "Ada Admin", "ada@example.com").await;
    put_account_in_custody(&s, &ada).await;

    // A root sign-in outside any checkout, as the feed delivers it (the feed itself is
    // tested against moto in tests/it/aws.rs).
    let id = "0c3f6a2e-5555-4a8b-9d6e-000000000001";
    let when = s.clock.now() - time::Duration::minutes(4);
    let detail = crate::aws::root_sign_in(ACCOUNT, id, when, "Success", "203.0.113.66");
    s.app.ingest_root_event(&crate::aws::envelope(crate::aws::SIGN_IN, ACCOUNT, detail)).await.unwrap();

    goto(&ada.page, &format!("{}/", s.origin)).await;
    let banner = format!("#root-alert-{id}");
    wait(
        &ada.page,
        &format!("(document.querySelector({banner:?})?.textContent ?? '').includes('UNEXPLAINED ROOT USE')"),
    )
    .await;
    let said = text(&ada.page, &banner).await;
    assert!(said.contains("prod-payer") && said.contains("203.0.113.66") && said.contains("ConsoleLogin"), "{said}");

    // A posture reading with findings, as the posture check stores it (the reading itself
    // is tested against moto in tests/it/aws.rs): the dashboard names them for everyone.
    let report = breakglass::domain::posture::Report {
        root_mfa_enabled: Some(false),
        root_access_keys_present: Some(true),
        ..Default::default()
    };
    breakglass::store::posture::upsert(
        &s.db(),
        &breakglass::store::posture::PostureRow {
            account_id: ACCOUNT.into(),
            checked_at: s.clock.now().unix_timestamp(),
            report: serde_json::to_string(&report).unwrap(),
            findings: serde_json::to_string(&breakglass::domain::posture::findings(&report, "aws-root@example.com"))
                .unwrap(),
            audit_seq: None,
        },
    )
    .unwrap();
    goto(&ada.page, &format!("{}/", s.origin)).await;
    wait(&ada.page, "!!document.getElementById('posture-findings')").await;
    let posture = text(&ada.page, "#posture-findings").await;
    assert!(posture.contains(ACCOUNT) && posture.contains("root_access_keys_present, root_mfa_off"), "{posture}");
    shoot(&ada.page, "root-alert").await;

    fill(&ada.page, &format!("#ack-{id}"), "Test of the root activity feed, RUNBOOK step 5").await;
    click(&ada.page, &format!("{banner} button[type=submit]")).await;
    wait(&ada.page, &format!("document.readyState === 'complete' && !document.querySelector({banner:?})")).await;

    goto(&ada.page, &format!("{}/audit", s.origin)).await;
    let table = text(&ada.page, "#root-activity").await;
    assert!(
        table.contains(id) && table.contains("acknowledged by Ada Admin") && table.contains("RUNBOOK step 5"),
        "{table}"
    );
    assert_same_origin(&s, &[&ada]);
}

/// A `centralized_root` account in the browser: the admin creates it (nothing to deposit),
/// the requester picks a root task, the approver approves, and the requester's page shows
/// the AWS session's credentials once, counting down from the server's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_task_session_is_requested_approved_and_shown_once_in_a_real_browser() {
    let sts = crate::root_tasks::StsDouble::start().await;
    let endpoint = sts.endpoint.clone();
    let s = TestServer::start_with_app(
        crate::support::start_time(),
        |_| {},
        |_| {},
        move |app| crate::root_tasks::with_double(app, &endpoint),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let browser = launch(dir.path()).await;
    let (ada, bo) = (person(&browser).await, person(&browser).await);
    enrol(&s, &ada, &[Role::Admin, Role::Custodian], "Ada Admin", "ada@example.com").await;
    enrol(&s, &bo, &[Role::Custodian], "Bo Requester", "bo@example.com").await;

    goto(&ada.page, &format!("{}/admin", s.origin)).await;
    fill(&ada.page, "#new-account-id", "555566667777").await;
    fill(&ada.page, "#alias", "member-central").await;
    fill(&ada.page, "#root_email", "root+central@example.com").await;
    eval::<serde_json::Value>(&ada.page, "document.querySelector('#account_type').value = 'centralized_root'").await;
    click(&ada.page, "#account-form button[type=submit]").await;
    wait(&ada.page, "(document.querySelector('#account-form .msg')?.textContent ?? '').includes('Nothing to deposit')")
        .await;

    s.clock.advance(Duration::hours(25));
    sign_in(&s, &ada, "ada@example.com").await;
    sign_in(&s, &bo, "bo@example.com").await;
    assert!(text(&bo.page, "main").await.contains("AWS root tasks (no stored password)"));
    // The root-task fields appear only for an account without a stored password.
    let hidden: bool = eval(&bo.page, "document.getElementById('task-fields').hidden").await;
    assert!(!hidden, "the task fields show for the selected centralized_root account");
    eval::<serde_json::Value>(&bo.page, "document.querySelector('#task_policy').value = 'S3UnlockBucketPolicy'").await;
    fill(&bo.page, "#task_duration_seconds", "600").await;
    fill(&bo.page, "#reason", "Bucket policy locks everyone out of prod-logs").await;
    shoot(&bo.page, "dashboard-root-task").await;
    click(&bo.page, "#request-form button[type=submit]").await;
    wait(&bo.page, "location.pathname.startsWith('/checkouts/') && document.readyState === 'complete'").await;
    let checkout_url: String = eval(&bo.page, "location.href").await;

    goto(&ada.page, &checkout_url).await;
    click(&ada.page, "button[data-decision=approve]").await;
    wait(&ada.page, "document.getElementById('checkout-state')?.textContent === 'approved'").await;

    wait(&bo.page, "!document.getElementById('release').hidden").await;
    assert!(text(&bo.page, "#release").await.contains("S3UnlockBucketPolicy"));
    assert_eq!(sts.calls(), 0, "nothing asked of AWS before the requester confirms");
    click(&bo.page, "#reveal-button").await;
    wait(&bo.page, "!document.getElementById('session').hidden").await;
    assert_eq!(sts.calls(), 1);
    let shell = text(&bo.page, "#session-shell").await;
    assert!(
        shell.contains("export AWS_ACCESS_KEY_ID='ASIADOUBLE0000000001'") && shell.contains("AWS_SESSION_TOKEN"),
        "{shell}"
    );
    let json: serde_json::Value = serde_json::from_str(&text(&bo.page, "#session-json").await).unwrap();
    assert_eq!((json["Version"].as_u64(), json["AccessKeyId"].as_str()), (Some(1), Some("ASIADOUBLE0000000001")));
    let ends = text(&bo.page, "#session-ends").await;
    assert!(
        ends == "10 min 0 s" || ends == "9 min 59 s" || ends == "9 min 58 s",
        "counts down from the server: {ends}"
    );
    shoot(&bo.page, "checkout-root-session").await;
    assert_same_origin(&s, &[&ada, &bo]);
}

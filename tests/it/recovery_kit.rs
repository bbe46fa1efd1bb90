//! The printed recovery kit (`breakglass recovery-kit`): public data only, every
//! account, custodian and the verifier key in it, readable in a real browser at phone
//! width, and the dashboard says when it no longer matches the deployment.
use base64::{Engine, engine::general_purpose::STANDARD};
use breakglass::{app::recovery_kit, clock::Clock};
use reqwest::StatusCode;
use serde_json::json;

use crate::{
    browser::{eval, launch, shoot, wait},
    checkouts::*,
    support::*,
};

const NOTES: &str = "Recovery-notes: backup codes 7731-0042-9981, safe combination 31-7-22";

async fn dashboard(t: &TestServer, p: &Person) -> String {
    let res = p.client.get(t.url("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.text().await.unwrap()
}

/// Every stored ciphertext and sealed key, as bytes.
fn blobs(conn: &rusqlite::Connection) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for sql in [
        "SELECT ciphertext FROM secret_versions",
        "SELECT wrapped_key FROM accounts WHERE wrapped_key IS NOT NULL",
        "SELECT sealed_key FROM log_key",
        "SELECT ciphertext FROM account_shares",
    ] {
        let mut stmt = conn.prepare(sql).unwrap();
        out.extend(stmt.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap().map(Result::unwrap));
    }
    let vault: Vec<String> = conn.prepare("SELECT * FROM vault").unwrap().column_names().map(str::to_owned).collect();
    for col in vault.iter().filter(|c| c.contains("sealed") || c.contains("wrapped") || c.contains("key")) {
        if let Ok(v) = conn.query_row(&format!("SELECT {col} FROM vault"), [], |r| r.get::<_, Vec<u8>>(0)) {
            out.push(v);
        }
    }
    out
}

#[tokio::test]
async fn the_recovery_kit_lists_accounts_custodians_and_the_verifier_key_holds_no_secret_and_renders_at_phone_width() {
    let mut t = team().await;
    let got = put(
        &t.ada.client,
        t.s.url(format!("/api/v1/accounts/{ACCOUNT}/secrets/recovery_notes")),
        json!({"value": NOTES}),
    )
    .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    // A checkout too, so released and rotated material exists in the database.
    crate::ops::full_checkout(&mut t, ACCOUNT).await;

    // The real command, as an operator runs it on the host (the date is the wall
    // clock's and is not looked at here).
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("kit.html");
    let out = breakglass_cmd(&t.s.config.data_dir)
        .env("BREAKGLASS_ORIGIN", &t.s.config.origin)
        .args(["recovery-kit", "--out", file.to_str().unwrap()])
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("Recovery kit written to") && said.contains("2 accounts, 3 custodians"), "{said}");
    let page = std::fs::read_to_string(&file).unwrap();

    // What it must hold.
    let vkey = t.s.app.log_verifier_key().unwrap();
    assert!(page.contains(&vkey), "the verifier key is printed");
    assert!(page.contains("breakglass audit verify --checkpoint") && page.contains("docs/verify_audit.py"));
    for (id, alias) in [(ACCOUNT, "prod-payer"), (OTHER, "sandbox")] {
        assert!(page.contains(id) && page.contains(alias), "{id} {alias}");
        assert!(page.contains(&format!("root+{alias}@example.com")));
    }
    for who in ["Bo Requester", "bo@example.com", "Cy Approver", "cy@example.com", "ada@example.com"] {
        assert!(page.contains(who), "{who}");
    }
    assert!(page.contains("admin, custodian"), "roles are listed");
    assert!(page.contains(&t.s.config.data_dir.display().to_string()) && page.contains(&t.s.config.origin));
    assert!(page.contains(&recovery_kit::host_name()));
    assert!(page.contains("breakglass restore --from") && page.contains("Do not run init"), "the restore procedure");

    // What it must never hold: the deposited values, in any case or encoding, and no
    // ciphertext or sealed key from the database.
    for secret in [PASSWORD, AWS_SEED, NOTES, "7731-0042-9981"] {
        for form in [secret.to_owned(), secret.to_lowercase(), STANDARD.encode(secret), hex::encode(secret)] {
            assert!(!page.contains(&form), "{form:?} is in the kit");
        }
    }
    let conn = t.s.db();
    let stored = blobs(&conn);
    assert!(stored.len() >= 7, "secrets, account keys, the log key and the vault: {}", stored.len());
    for blob in &stored {
        let head = &blob[..blob.len().min(24)];
        for form in [hex::encode(head), STANDARD.encode(head)[..24].to_owned()] {
            assert!(!page.contains(&form), "a stored ciphertext ({form}) is in the kit");
        }
    }
    for marker in ["age-encryption.org", "AGE-SECRET-KEY", "-----BEGIN"] {
        assert!(!page.contains(marker), "{marker}");
    }
    // Self-contained: nothing loaded from anywhere.
    for external in ["<script", "<link", "src=", "@import", "url("] {
        assert!(!page.contains(external), "{external} in the kit");
    }

    // Recorded, with the hash of exactly this page.
    let (actor, details): (String, String) = conn
        .query_row(
            "SELECT actor, details FROM audit_log WHERE action = 'recovery_kit.generated' ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let details: serde_json::Value = serde_json::from_str(&details).unwrap();
    assert_eq!(actor, "host:cli");
    assert_eq!(details["page_sha256"], hex::encode(<sha2::Sha256 as sha2::Digest>::digest(page.as_bytes())));
    assert_eq!((details["accounts"].as_u64(), details["custodians"].as_u64()), (Some(2), Some(3)));
    let out = breakglass(&t.s.config.data_dir, &["audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // The date comes from the injected clock.
    let at = t.s.clock.now();
    let made = recovery_kit::generate(&t.s.config, at).unwrap();
    assert!(made.page.contains("Printed 2026-11-22T10:00:00Z"), "printed at the clock's time");

    // In a real browser: it renders, and nothing is wider than a 375 px phone.
    let dir = tempfile::tempdir().unwrap();
    let browser = launch(dir.path()).await;
    let page = browser.new_page("about:blank").await.unwrap();
    page.goto(format!("file://{}", file.display())).await.unwrap();
    wait(&page, "document.readyState === 'complete' && !!document.getElementById('verifier-key')").await;
    let shown: String = eval(&page, "document.getElementById('verifier-key').textContent").await;
    assert_eq!(shown, vkey);
    let rows: u64 = eval(&page, "document.querySelectorAll('#accounts tbody tr').length").await;
    assert_eq!(rows, 2);
    shoot(&page, "recovery-kit").await;
}

#[tokio::test]
async fn the_dashboard_says_the_recovery_kit_is_stale_after_a_change_and_not_after_printing_it_again() {
    let mut t = team().await;
    let never = dashboard(&t.s, &t.ada).await;
    assert!(never.contains("id=\"recovery-kit-stale\"") && never.contains("No recovery kit has been printed"));
    assert!(!dashboard(&t.s, &t.bo).await.contains("recovery-kit-stale"), "for admins only");

    recovery_kit::generate(&t.s.config, t.s.clock.now()).unwrap();
    assert!(!dashboard(&t.s, &t.ada).await.contains("recovery-kit-stale"), "current after printing");
    // Checkouts and deposits do not make it stale: the kit lists neither.
    crate::ops::full_checkout(&mut t, ACCOUNT).await;
    assert!(!dashboard(&t.s, &t.ada).await.contains("recovery-kit-stale"));

    // A new account: stale, saying what changed.
    let got = post(
        &t.ada.client,
        t.s.url("/api/v1/accounts"),
        json!({"account_id": "333344445555", "alias": "logging", "root_email": "root+logging@example.com"}),
    )
    .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    let stale = dashboard(&t.s, &t.ada).await;
    assert!(
        stale.contains("recovery-kit-stale")
            && stale.contains("printed 2026-11-22T10:00:00.000Z is stale: accounts changed since"),
        "{stale}"
    );
    // A new custodian as well.
    t.s.enrol(&[breakglass::domain::Role::Auditor], "Au Ditor", "au@example.com").await;
    assert!(dashboard(&t.s, &t.ada).await.contains("stale: accounts, custodians changed since"));

    // Printing it again clears the notice.
    t.s.clock.advance(time::Duration::hours(1));
    recovery_kit::generate(&t.s.config, t.s.clock.now()).unwrap();
    assert!(!dashboard(&t.s, &t.ada).await.contains("recovery-kit-stale"));
}

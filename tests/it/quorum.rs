//! Quorum mode over HTTP with a software authenticator that implements PRF
//! (1Password's `passkey` crate, hmac-secret): the two-person release, the headline
//! (the data dir + seal key + fewer than k holders open nothing), every refusal,
//! restart, purge, conversion and reshare.
use std::collections::BTreeSet;

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use breakglass::crypto::x25519::Identity;
use breakglass::{
    crypto::{keys, quorum},
    domain::Role,
};
use passkey::{
    authenticator::{
        Authenticator, MemoryStore, UiHint, UserCheck, UserValidationMethod, extensions::HmacSecretConfig,
    },
    client::{Client as PkClient, DefaultClientData},
    crypto::AvailableBackend,
    types::{Passkey, ctap2::Aaguid, ctap2::Ctap2Error, webauthn},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::Duration;
use url::Url;

use crate::{
    checkouts::{ACCOUNT, OTHER, PASSWORD},
    support::*,
};

/// A person who touches and verifies every time (the test plays the human).
struct AlwaysVerified;

#[async_trait::async_trait]
impl UserValidationMethod for AlwaysVerified {
    type PasskeyItem = Passkey;

    async fn check_user<'a>(
        &self,
        _hint: UiHint<'a, Self::PasskeyItem>,
        presence: bool,
        verification: bool,
    ) -> Result<UserCheck, Ctap2Error> {
        Ok(UserCheck { presence, verification })
    }

    fn is_presence_enabled(&self) -> bool {
        true
    }

    fn is_verification_enabled(&self) -> Option<bool> {
        Some(true)
    }
}

/// A security key with PRF (CTAP2 hmac-secret), behind a WebAuthn client.
pub struct PrfKey {
    client: PkClient<MemoryStore, AlwaysVerified, AvailableBackend, public_suffix::PublicSuffixList, ()>,
}

impl PrfKey {
    pub fn new() -> Self {
        let auth = Authenticator::new(Aaguid::new_empty(), MemoryStore::new(), AlwaysVerified, AvailableBackend)
            .hmac_secret(HmacSecretConfig::new_without_uv());
        Self { client: PkClient::new(auth).allows_insecure_localhost(true) }
    }

    /// `navigator.credentials.create()` with the server's options (JSON as sent).
    pub async fn register(&mut self, origin: &Url, options: &Value) -> Value {
        let opts: webauthn::CredentialCreationOptions = serde_json::from_value(options.clone()).unwrap();
        let cred = self.client.register(origin, opts, DefaultClientData).await.unwrap();
        serde_json::to_value(cred).unwrap()
    }

    /// `navigator.credentials.get()`: the credential as a browser page sends it (the PRF
    /// output removed: it never leaves the browser) and the PRF output.
    pub async fn assert(&mut self, origin: &Url, options: &Value) -> (Value, Option<[u8; 32]>) {
        let opts: webauthn::CredentialRequestOptions = serde_json::from_value(options.clone()).unwrap();
        let cred = self.client.authenticate(origin, opts, DefaultClientData).await.unwrap();
        let mut v = serde_json::to_value(cred).unwrap();
        let prf = v["clientExtensionResults"]["prf"]["results"]["first"].as_str().map(|s| {
            let raw = URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).or_else(|_| STANDARD.decode(s)).unwrap();
            <[u8; 32]>::try_from(raw.as_slice()).unwrap()
        });
        if let Some(ext) = v.get_mut("clientExtensionResults") {
            *ext = json!({});
        }
        (v, prf)
    }
}

pub struct Holder {
    #[allow(dead_code)]
    pub name: &'static str,
    pub client: reqwest::Client,
    pub key: PrfKey,
    pub id: String,
    pub email: String,
    /// The PRF output of this person's key for our salt (known after preparing).
    pub prf: Option<[u8; 32]>,
}

impl Holder {
    pub fn share_identity(&self) -> Identity {
        quorum::prf_share_identity(&self.prf.unwrap()).unwrap()
    }
}

/// What a holder's browser does with a share offer: open it with the identity its
/// PRF output derives and re-encrypt the plaintext to the transit recipient.
pub fn rewrap(offer: &Value, identity: &Identity) -> String {
    let share = STANDARD.decode(offer["share"].as_str().unwrap()).unwrap();
    let plain = age::decrypt(identity, &share).unwrap();
    let transit = keys::parse_recipient(offer["transit_recipient"].as_str().unwrap()).unwrap();
    STANDARD.encode(age::encrypt(&transit, &plain).unwrap())
}

pub async fn enrol_holder(s: &TestServer, roles: &[Role], name: &'static str, email: &str) -> Holder {
    let client = s.client();
    let mut key = PrfKey::new();
    let token = s.invite(roles).await;
    let (status, start) =
        post(&client, s.url("/api/v1/enrol/start"), json!({"invite_token": token, "name": name, "email": email})).await;
    assert_eq!(status, StatusCode::OK, "{start}");
    assert_eq!(start["publicKey"]["extensions"]["prf"], json!({}), "registration asks for PRF: {start}");
    let credential = key.register(&s.origin_url(), &start).await;
    let (status, body) = post(
        &client,
        s.url("/api/v1/enrol/finish"),
        json!({"ceremony_id": start["ceremony_id"], "credential": credential, "label": "PRF key"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["custodian"]["id"].as_str().unwrap().to_owned();
    Holder { name, client, key, id, email: email.to_owned(), prf: None }
}

pub async fn sign_in(s: &TestServer, h: &mut Holder) {
    h.client = s.client();
    let (status, start) = post(&h.client, s.url("/api/v1/login/start"), json!({"email": h.email})).await;
    assert_eq!(status, StatusCode::OK, "{start}");
    let (cred, _) = h.key.assert(&s.origin_url(), &start).await;
    let got = post(
        &h.client,
        s.url("/api/v1/login/finish"),
        json!({"ceremony_id": start["ceremony_id"], "credential": cred}),
    )
    .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
}

/// "Prepare this key for quorum": one assertion evaluating PRF; the browser derives
/// the share recipient and registers only that.
pub async fn prepare(s: &TestServer, h: &mut Holder) -> Value {
    let (_, creds) = get(&h.client, s.url("/api/v1/me/credentials")).await;
    let cred_id = creds["credentials"][0]["id"].as_str().unwrap().to_owned();
    let (status, start) =
        post(&h.client, s.url(format!("/api/v1/me/credentials/{cred_id}/share-recipient/start")), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{start}");
    let salt = URL_SAFE_NO_PAD.encode(keys::prf_salt());
    assert_eq!(start["publicKey"]["extensions"]["prf"]["eval"]["first"], json!(salt), "{start}");
    let (cred, prf) = h.key.assert(&s.origin_url(), &start).await;
    let prf = prf.expect("the authenticator evaluated PRF");
    h.prf = Some(prf);
    let recipient = quorum::prf_share_identity(&prf).unwrap().to_public().to_string();
    let (status, body) = post(
        &h.client,
        s.url(format!("/api/v1/me/credentials/{cred_id}/share-recipient/finish")),
        json!({"ceremony_id": start["ceremony_id"], "credential": cred, "recipient": recipient}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["prf_status"], "ready");
    assert_eq!(body["share_recipient"], json!(recipient));
    body
}

pub struct QTeam {
    pub s: TestServer,
    pub ada: Holder,
    pub bo: Holder,
    pub cy: Holder,
}

/// Ada (admin + custodian), Bo and Cy (custodians), each with a PRF key prepared for
/// quorum; two accounts with secrets, both in policy mode; everyone past cooling-off.
pub async fn qteam() -> QTeam {
    let s = TestServer::start().await;
    let mut ada = enrol_holder(&s, &[Role::Admin, Role::Custodian], "Ada Admin", "ada@example.com").await;
    let mut bo = enrol_holder(&s, &[Role::Custodian], "Bo Requester", "bo@example.com").await;
    let mut cy = enrol_holder(&s, &[Role::Custodian], "Cy Approver", "cy@example.com").await;
    for (id, alias) in [(ACCOUNT, "prod-payer"), (OTHER, "sandbox")] {
        let got = post(
            &ada.client,
            s.url("/api/v1/accounts"),
            json!({"account_id": id, "alias": alias, "root_email": format!("root+{alias}@example.com")}),
        )
        .await;
        assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
        for (kind, value) in [("root_password", PASSWORD), ("totp_seed", AWS_SEED)] {
            let got =
                put(&ada.client, s.url(format!("/api/v1/accounts/{id}/secrets/{kind}")), json!({"value": value})).await;
            assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
        }
    }
    s.clock.advance(Duration::hours(25));
    for h in [&mut ada, &mut bo, &mut cy] {
        sign_in(&s, h).await;
        prepare(&s, h).await;
    }
    QTeam { s, ada, bo, cy }
}

pub async fn enable(t: &QTeam, account: &str) -> (StatusCode, Value) {
    post(&t.ada.client, t.s.url(format!("/api/v1/accounts/{account}/quorum")), json!({})).await
}

pub async fn request(s: &TestServer, h: &Holder, account: &str, kind: &str) -> (StatusCode, Value) {
    post(
        &h.client,
        s.url("/api/v1/checkouts"),
        json!({"account_id": account, "reason": "Billing lockout: restore IAM admin role", "ticket": "INC-4711", "duration_minutes": 30, "kind": kind}),
    )
    .await
}

pub async fn request_id(s: &TestServer, h: &Holder, account: &str, kind: &str) -> String {
    let got = request(s, h, account, kind).await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    got.1["id"].as_str().unwrap().to_owned()
}

/// How an approver's share is handed over in a test.
pub enum Hand {
    /// As the page does: the offer, opened with the PRF identity, re-encrypted.
    Honest,
    /// Nothing.
    Nothing,
    /// These exact bytes.
    Raw(String),
}

pub async fn approve(s: &TestServer, h: &mut Holder, id: &str, hand: Hand) -> (StatusCode, Value) {
    let (status, start) = post(&h.client, s.url(format!("/api/v1/checkouts/{id}/approvals/start")), json!({})).await;
    if status != StatusCode::OK {
        return (status, start);
    }
    let (cred, prf) = h.key.assert(&s.origin_url(), &start).await;
    let share = match hand {
        Hand::Honest => {
            let id = quorum::prf_share_identity(&prf.expect("PRF evaluated in the approval")).unwrap();
            Some(rewrap(&start["quorum"], &id))
        }
        Hand::Nothing => None,
        Hand::Raw(b) => Some(b),
    };
    post(
        &h.client,
        s.url(format!("/api/v1/checkouts/{id}/approvals/finish")),
        json!({"ceremony_id": start["ceremony_id"], "credential": cred, "decision": "approve", "share": share}),
    )
    .await
}

pub async fn reveal(s: &TestServer, h: &mut Holder, id: &str, hand: Hand) -> (StatusCode, Value) {
    let (status, start) = post(&h.client, s.url(format!("/api/v1/checkouts/{id}/release/start")), json!({})).await;
    if status != StatusCode::OK {
        return (status, start);
    }
    let (cred, prf) = h.key.assert(&s.origin_url(), &start).await;
    let share = match hand {
        Hand::Honest => Some(rewrap(&start["quorum"], &quorum::prf_share_identity(&prf.unwrap()).unwrap())),
        Hand::Nothing => None,
        Hand::Raw(b) => Some(b),
    };
    post(
        &h.client,
        s.url(format!("/api/v1/checkouts/{id}/release/finish")),
        json!({"ceremony_id": start["ceremony_id"], "credential": cred, "share": share}),
    )
    .await
}

fn count(conn: &rusqlite::Connection, sql: &str, id: &str) -> i64 {
    conn.query_row(sql, [id], |r| r.get(0)).unwrap()
}

fn quorum_material(s: &TestServer, checkout: &str) -> (i64, bool) {
    let db = s.db();
    let shares = count(&db, "SELECT count(*) FROM checkout_shares WHERE checkout_id = ?1", checkout);
    let transit = count(&db, "SELECT transit_sealed IS NOT NULL FROM checkouts WHERE id = ?1", checkout) == 1;
    (shares, transit)
}

fn totp_now(s: &TestServer) -> String {
    let totp = totp_rs::Totp::from_url(format!("otpauth://totp/x?secret={AWS_SEED}")).unwrap();
    totp.generate(s.clock_now_unix()).to_string()
}

trait ClockNow {
    fn clock_now_unix(&self) -> u64;
}

impl ClockNow for TestServer {
    fn clock_now_unix(&self) -> u64 {
        use breakglass::clock::Clock;
        self.clock.now().unix_timestamp() as u64
    }
}

#[tokio::test]
async fn a_two_person_release_in_quorum_mode_opens_with_the_shares_and_leaves_nothing_behind() {
    let mut t = qteam().await;
    let before: Vec<u8> =
        t.s.db()
            .query_row(
                "SELECT ciphertext FROM secret_versions WHERE account_id = ?1 AND kind = 'root_password'",
                [ACCOUNT],
                |r| r.get(0),
            )
            .unwrap();
    let (status, view) = enable(&t, ACCOUNT).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["custody"], "quorum");
    assert_eq!(view["quorum"]["k"], 2);
    assert_eq!(view["quorum"]["key_version"], 2);
    assert_eq!(view["quorum"]["holders"].as_array().unwrap().len(), 3);
    {
        let db = t.s.db();
        let wrapped: Option<Vec<u8>> =
            db.query_row("SELECT wrapped_key FROM accounts WHERE account_id = ?1", [ACCOUNT], |r| r.get(0)).unwrap();
        assert_eq!(wrapped, None, "the vault-wrapped key is gone");
        let after: Vec<u8> = db
            .query_row(
                "SELECT ciphertext FROM secret_versions WHERE account_id = ?1 AND kind = 'root_password'",
                [ACCOUNT],
                |r| r.get(0),
            )
            .unwrap();
        assert_ne!(before, after, "the secret versions were re-encrypted to the new key");
        assert_eq!(count(&db, "SELECT count(*) FROM account_shares WHERE account_id = ?1", ACCOUNT), 3);
    }
    let actions = audit_actions(&t.s.db());
    assert!(actions.contains(&"account.quorum_enabled".to_owned()));

    let id = request_id(&t.s, &t.bo, ACCOUNT, "emergency").await;
    assert_eq!(quorum_material(&t.s, &id), (0, true), "a transit key per checkout, sealed");
    let got = approve(&t.s, &mut t.cy, &id, Hand::Honest).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert_eq!(got.1["state"], "approved");
    let got = reveal(&t.s, &mut t.bo, &id, Hand::Honest).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert_eq!(got.1["password"], PASSWORD);
    assert_eq!(got.1["totp"]["code"], json!(totp_now(&t.s)));
    assert_eq!(quorum_material(&t.s, &id), (2, true), "kept for the reveal window");
    // A second look within the window needs no new shares.
    let again = reveal(&t.s, &mut t.bo, &id, Hand::Nothing).await;
    assert_eq!(again.0, StatusCode::OK, "{}", again.1);
    assert_eq!(again.1["password"], PASSWORD);

    let got = post(&t.bo.client, t.s.url(format!("/api/v1/checkouts/{id}/close")), json!({"note": "done"})).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert_eq!(quorum_material(&t.s, &id), (0, false), "checking in deletes the transit key and the shares");
    let actions = audit_actions(&t.s.db());
    assert_eq!(actions.iter().filter(|a| *a == "checkout.share_handed_over").count(), 2);
    let status = breakglass::app::audit::verify_log(&t.s.db(), None).unwrap();
    assert!(status.ok, "{status:?}");
    let (code, out) = crate::audit_replay::python_verify(crate::checkouts::snapshot_db(&t.s).path());
    assert_eq!(code, 0, "the independent Python verifier agrees: {out}");
}

/// Every age file stored in any column of any table.
fn every_ciphertext(conn: &rusqlite::Connection) -> Vec<(String, Vec<u8>)> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = Vec::new();
    for t in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..n {
                let bytes = match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Blob(b) => b.to_vec(),
                    rusqlite::types::ValueRef::Text(b) => b.to_vec(),
                    _ => continue,
                };
                if bytes.starts_with(b"age-encryption.org/v1") {
                    out.push((format!("{t}.{i}"), bytes));
                }
            }
        }
    }
    out
}

/// Try every identity on every ciphertext; return the plaintexts that opened.
fn open_all(cts: &[(String, Vec<u8>)], ids: &[Identity]) -> Vec<(String, Value)> {
    let mut opened = Vec::new();
    for (where_, ct) in cts {
        for id in ids {
            if let Ok(plain) = age::decrypt(id, ct) {
                opened.push((where_.clone(), serde_json::from_slice(&plain).unwrap()));
            }
        }
    }
    opened
}

#[tokio::test]
async fn the_data_dir_and_the_seal_key_and_fewer_than_k_holders_open_nothing_k_holders_open_it() {
    let mut t = qteam().await;
    for a in [ACCOUNT, OTHER] {
        assert_eq!(enable(&t, a).await.0, StatusCode::OK);
    }
    let id = request_id(&t.s, &t.bo, ACCOUNT, "emergency").await;
    assert_eq!(approve(&t.s, &mut t.cy, &id, Hand::Honest).await.0, StatusCode::OK);
    // What was in flight: the transit key and the handed-over shares, as stored.
    let in_flight: Vec<Vec<u8>> = {
        let db = t.s.db();
        let mut v: Vec<Vec<u8>> = db
            .prepare("SELECT ciphertext FROM checkout_shares")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        v.push(db.query_row("SELECT transit_sealed FROM checkouts WHERE id = ?1", [&id], |r| r.get(0)).unwrap());
        v
    };
    assert_eq!(reveal(&t.s, &mut t.bo, &id, Hand::Honest).await.0, StatusCode::OK);
    assert_eq!(
        post(&t.bo.client, t.s.url(format!("/api/v1/checkouts/{id}/close")), json!({"note": "done"})).await.0,
        StatusCode::OK
    );

    // The attacker's haul: the data dir (every file in it) and the seal key file.
    let data = t.s.config.data_dir.clone();
    let mut files = Vec::new();
    for e in std::fs::read_dir(&data).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            files.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    assert!(files.iter().any(|(p, _)| p.extension().is_some_and(|e| e == "db")));
    for (path, bytes) in &files {
        for secret in &in_flight {
            // A distinctive slice of each deleted ciphertext (past the common age header).
            let probe = &secret[secret.len() - 48..];
            assert!(
                !bytes.windows(probe.len()).any(|w| w == probe),
                "deleted quorum material is still readable in {}",
                path.display()
            );
        }
    }
    let db = t.s.db();
    let cts = every_ciphertext(&db);
    assert!(cts.len() >= 8, "secret versions, shares, sealed keys: {}", cts.len());
    let seal_id = keys::derive_identity(keys::LABEL_SEAL, &seal_key_bytes(&t.s.config.dev_key_file())).unwrap();
    // Everything the seal key opens, and everything that opens in turn, to a fixed point.
    let mut ids = vec![seal_id, t.cy.share_identity()];
    let mut opened = open_all(&cts, &ids);
    for (_, env) in opened.clone() {
        if ["vault_key", "log_key", "account_key", "transit_key"].contains(&env["kind"].as_str().unwrap()) {
            let mut secret = [0u8; 32];
            hex::decode_to_slice(env["value"].as_str().unwrap(), &mut secret).unwrap();
            for label in [keys::LABEL_VAULT, keys::LABEL_ACCOUNT, keys::LABEL_TRANSIT] {
                ids.push(keys::derive_identity(label, &secret).unwrap());
            }
        }
    }
    opened = open_all(&cts, &ids);
    let kinds: BTreeSet<String> = opened.iter().map(|(_, e)| e["kind"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["vault_key".to_owned(), "log_key".to_owned(), "share".to_owned()]),
        "with the seal key and one holder: the vault and log keys and that holder's own shares, nothing else"
    );
    let account_recipient = |a: &str| -> String {
        db.query_row("SELECT recipient FROM accounts WHERE account_id = ?1", [a], |r| r.get(0)).unwrap()
    };
    // One share per account: combined with itself or alone it is not the key.
    for a in [ACCOUNT, OTHER] {
        let mine: Vec<_> = opened.iter().filter(|(_, e)| e["account_id"] == a && e["kind"] == "share").collect();
        assert_eq!(mine.len(), 1);
        let y = hex::decode(mine[0].1["value"].as_str().unwrap()).unwrap();
        let mut share = vec![mine[0].1["index"].as_u64().unwrap() as u8];
        share.extend(y);
        let garbage = shamirsecretsharing::hazmat::combine_keyshares(&[share]).unwrap();
        let guess = keys::derive_identity(keys::LABEL_ACCOUNT, &garbage.try_into().unwrap()).unwrap();
        assert_ne!(guess.to_public().to_string(), account_recipient(a));
        assert!(open_all(&cts, &[guess]).is_empty());
    }

    // With k = 2 holders (Cy and Bo) the shares combine and the secrets open.
    let both = open_all(&cts, &[t.cy.share_identity(), t.bo.share_identity()]);
    let ks: Vec<Vec<u8>> = both
        .iter()
        .filter(|(_, e)| e["account_id"] == ACCOUNT)
        .map(|(_, e)| {
            let mut v = vec![e["index"].as_u64().unwrap() as u8];
            v.extend(hex::decode(e["value"].as_str().unwrap()).unwrap());
            v
        })
        .collect();
    assert_eq!(ks.len(), 2);
    let key = shamirsecretsharing::hazmat::combine_keyshares(&ks).unwrap();
    let account_id = keys::derive_identity(keys::LABEL_ACCOUNT, &key.try_into().unwrap()).unwrap();
    assert_eq!(account_id.to_public().to_string(), account_recipient(ACCOUNT));
    let secrets = open_all(&cts, &[account_id]);
    assert!(secrets.iter().any(|(_, e)| e["kind"] == "root_password" && e["value"] == PASSWORD), "{secrets:?}");
}

/// The seal key file as the attacker reads it: 32 raw bytes or 64 hex characters.
fn seal_key_bytes(path: &std::path::Path) -> [u8; 32] {
    let raw = std::fs::read(path).unwrap();
    if raw.len() == 32 {
        return raw.try_into().unwrap();
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(String::from_utf8(raw).unwrap().trim(), &mut out).unwrap();
    out
}

#[tokio::test]
async fn bad_missing_foreign_or_too_few_shares_reveal_nothing_and_name_the_cause() {
    let mut t = qteam().await;
    for a in [ACCOUNT, OTHER] {
        assert_eq!(enable(&t, a).await.0, StatusCode::OK);
    }
    let id = request_id(&t.s, &t.bo, ACCOUNT, "emergency").await;
    // Approving without a share, with garbage, or with a share for the wrong transit key.
    assert_error(&approve(&t.s, &mut t.cy, &id, Hand::Nothing).await, StatusCode::BAD_REQUEST, "share_required");
    assert_error(
        &approve(&t.s, &mut t.cy, &id, Hand::Raw("bm90IGFuIGFnZSBmaWxl".into())).await,
        StatusCode::BAD_REQUEST,
        "invalid_share",
    );
    let stranger = age::x25519::Identity::generate();
    let wrong_transit = {
        let (_, start) =
            post(&t.cy.client, t.s.url(format!("/api/v1/checkouts/{id}/approvals/start")), json!({})).await;
        let mut offer = start["quorum"].clone();
        offer["transit_recipient"] = json!(stranger.to_public().to_string());
        rewrap(&offer, &t.cy.share_identity())
    };
    assert_error(
        &approve(&t.s, &mut t.cy, &id, Hand::Raw(wrong_transit)).await,
        StatusCode::BAD_REQUEST,
        "share_rejected",
    );
    // Cy's share of the other account, handed over to this checkout's transit key.
    let foreign = {
        let other = request_id(&t.s, &t.ada, OTHER, "emergency").await;
        let (_, start) =
            post(&t.cy.client, t.s.url(format!("/api/v1/checkouts/{other}/approvals/start")), json!({})).await;
        let (_, here) = post(&t.cy.client, t.s.url(format!("/api/v1/checkouts/{id}/approvals/start")), json!({})).await;
        let mut offer = start["quorum"].clone();
        offer["transit_recipient"] = here["quorum"]["transit_recipient"].clone();
        rewrap(&offer, &t.cy.share_identity())
    };
    assert_error(&approve(&t.s, &mut t.cy, &id, Hand::Raw(foreign)).await, StatusCode::BAD_REQUEST, "share_rejected");
    assert!(!audit_actions(&t.s.db()).contains(&"checkout.approval_recorded".to_owned()), "nothing was recorded");

    // An honest approval; then the stored shares are tampered with before the release.
    assert_eq!(approve(&t.s, &mut t.cy, &id, Hand::Honest).await.0, StatusCode::OK);
    let db = t.s.db();
    let good: Vec<u8> =
        db.query_row("SELECT ciphertext FROM checkout_shares WHERE checkout_id = ?1", [&id], |r| r.get(0)).unwrap();
    let set = |ct: &[u8]| {
        t.s.db()
            .execute("UPDATE checkout_shares SET ciphertext = ?2 WHERE checkout_id = ?1", rusqlite::params![id, ct])
            .unwrap();
    };
    let mut corrupt = good.clone();
    let n = corrupt.len();
    corrupt[n - 3] ^= 0x40;
    set(&corrupt);
    let got = reveal(&t.s, &mut t.bo, &id, Hand::Honest).await;
    assert_error(&got, StatusCode::CONFLICT, "share_unreadable");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("Cy Approver"), "{}", got.1);
    assert!(got.1.get("password").is_none());

    // Bo's own share presented as Cy's (a share from the wrong person).
    let bos: Vec<u8> = db
        .query_row(
            "SELECT ciphertext FROM checkout_shares WHERE checkout_id = ?1 AND custodian_id = ?2",
            [&id, &t.bo.id],
            |r| r.get(0),
        )
        .unwrap();
    set(&bos);
    db.execute(
        "UPDATE checkout_shares SET ciphertext = ?3 WHERE checkout_id = ?1 AND custodian_id = ?2",
        rusqlite::params![id, t.bo.id, good],
    )
    .unwrap();
    let got = reveal(&t.s, &mut t.bo, &id, Hand::Nothing).await;
    assert_error(&got, StatusCode::CONFLICT, "share_foreign");

    // Fewer than k: Cy's share is missing.
    db.execute(
        "UPDATE checkout_shares SET ciphertext = ?3 WHERE checkout_id = ?1 AND custodian_id = ?2",
        rusqlite::params![id, t.bo.id, bos],
    )
    .unwrap();
    db.execute("DELETE FROM checkout_shares WHERE checkout_id = ?1 AND custodian_id = ?2", [&id, &t.cy.id]).unwrap();
    let got = reveal(&t.s, &mut t.bo, &id, Hand::Nothing).await;
    assert_error(&got, StatusCode::CONFLICT, "share_missing");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("Cy Approver"), "{}", got.1);

    let failures: Vec<Value> = db
        .prepare("SELECT details FROM audit_log WHERE action = 'checkout.quorum_failed' ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|d| serde_json::from_str(&d.unwrap()).unwrap())
        .collect();
    let codes: Vec<&str> = failures.iter().map(|f| f["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["share_unreadable", "share_foreign", "share_missing"]);
    assert!(!audit_actions(&db).contains(&"checkout.revealed".to_owned()));
    let state: String = db.query_row("SELECT state FROM checkouts WHERE id = ?1", [&id], |r| r.get(0)).unwrap();
    assert_eq!(state, "approved", "nothing was released");
}

#[tokio::test]
async fn a_restart_between_approval_and_release_loses_nothing_and_every_ending_deletes_the_material() {
    let mut t = qteam().await;
    for a in [ACCOUNT, OTHER] {
        assert_eq!(enable(&t, a).await.0, StatusCode::OK);
    }
    let id = request_id(&t.s, &t.bo, ACCOUNT, "emergency").await;
    assert_eq!(approve(&t.s, &mut t.cy, &id, Hand::Honest).await.0, StatusCode::OK);
    t.s.restart().await;
    let got = reveal(&t.s, &mut t.bo, &id, Hand::Honest).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert_eq!(got.1["password"], PASSWORD);
    // The reveal window ends: the material goes even before check-in.
    t.s.clock.advance(Duration::minutes(16));
    t.s.app.expire_due().await.unwrap();
    assert_eq!(quorum_material(&t.s, &id), (0, false));
    let got = reveal(&t.s, &mut t.bo, &id, Hand::Nothing).await;
    assert_eq!(got.0, StatusCode::GONE, "{}", got.1);
    let _ = post(&t.bo.client, t.s.url(format!("/api/v1/checkouts/{id}/close")), json!({"note": "done"})).await;

    // Cancelled after approval.
    sign_in(&t.s, &mut t.bo).await;
    sign_in(&t.s, &mut t.cy).await;
    let id = request_id(&t.s, &t.bo, ACCOUNT, "emergency").await;
    assert_eq!(approve(&t.s, &mut t.cy, &id, Hand::Honest).await.0, StatusCode::OK);
    assert_eq!(quorum_material(&t.s, &id), (1, true));
    assert_eq!(
        post(&t.bo.client, t.s.url(format!("/api/v1/checkouts/{id}/cancel")), json!({})).await.0,
        StatusCode::OK
    );
    assert_eq!(quorum_material(&t.s, &id), (0, false), "cancel deletes them");

    // Expired while approved.
    let id = request_id(&t.s, &t.bo, ACCOUNT, "emergency").await;
    assert_eq!(approve(&t.s, &mut t.cy, &id, Hand::Honest).await.0, StatusCode::OK);
    t.s.clock.advance(Duration::hours(2));
    t.s.app.expire_due().await.unwrap();
    assert_eq!(quorum_material(&t.s, &id), (0, false), "expiry deletes them");

    // Denied (veto) after one approval handed a share over.
    sign_in(&t.s, &mut t.ada).await;
    sign_in(&t.s, &mut t.bo).await;
    sign_in(&t.s, &mut t.cy).await;
    let got = put(
        &t.ada.client,
        t.s.url(format!("/api/v1/accounts/{ACCOUNT}/policy")),
        json!({"approvals_required": 1, "veto": true}),
    )
    .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let id = request_id(&t.s, &t.ada, ACCOUNT, "emergency").await;
    let (_, start) = post(&t.bo.client, t.s.url(format!("/api/v1/checkouts/{id}/approvals/start")), json!({})).await;
    let (cred, _) = t.bo.key.assert(&t.s.origin_url(), &start).await;
    let got = post(
        &t.bo.client,
        t.s.url(format!("/api/v1/checkouts/{id}/approvals/finish")),
        json!({"ceremony_id": start["ceremony_id"], "credential": cred, "decision": "deny"}),
    )
    .await;
    assert_eq!(got.1["state"], "denied", "{}", got.1);
    assert_eq!(quorum_material(&t.s, &id), (0, false), "denial deletes the transit key");
}

#[tokio::test]
async fn turning_quorum_on_is_refused_until_every_holder_is_ready_and_there_are_enough() {
    let s = TestServer::start().await;
    let mut ada = enrol_holder(&s, &[Role::Admin, Role::Custodian], "Ada Admin", "ada@example.com").await;
    let mut bo = enrol_holder(&s, &[Role::Custodian], "Bo Requester", "bo@example.com").await;
    let got = post(
        &ada.client,
        s.url("/api/v1/accounts"),
        json!({"account_id": ACCOUNT, "alias": "prod", "root_email": "r@example.com"}),
    )
    .await;
    assert_eq!(got.0, StatusCode::CREATED);
    s.clock.advance(Duration::hours(25));
    sign_in(&s, &mut ada).await;
    sign_in(&s, &mut bo).await;
    prepare(&s, &mut ada).await;
    let got = post(&ada.client, s.url(format!("/api/v1/accounts/{ACCOUNT}/quorum")), json!({})).await;
    assert_error(&got, StatusCode::CONFLICT, "holders_not_ready");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("Bo Requester"), "{}", got.1);
    // A key whose authenticator has no PRF is marked so and still does not count.
    let (_, creds) = get(&bo.client, s.url("/api/v1/me/credentials")).await;
    let cred_id = creds["credentials"][0]["id"].as_str().unwrap().to_owned();
    let (_, start) =
        post(&bo.client, s.url(format!("/api/v1/me/credentials/{cred_id}/share-recipient/start")), json!({})).await;
    let (cred, _) = bo.key.assert(&s.origin_url(), &start).await;
    let got = post(
        &bo.client,
        s.url(format!("/api/v1/me/credentials/{cred_id}/share-recipient/finish")),
        json!({"ceremony_id": start["ceremony_id"], "credential": cred, "recipient": null}),
    )
    .await;
    assert_eq!(got.1["prf_status"], "unsupported", "{}", got.1);
    assert_error(
        &post(&ada.client, s.url(format!("/api/v1/accounts/{ACCOUNT}/quorum")), json!({})).await,
        StatusCode::CONFLICT,
        "holders_not_ready",
    );
    prepare(&s, &mut bo).await;
    // n ≥ k: two holders cannot hold a 3-of-n key; the policy itself already refuses
    // approvals_required = 2 with two custodians (`not_enough_holders` backs it up).
    let got =
        put(&ada.client, s.url(format!("/api/v1/accounts/{ACCOUNT}/policy")), json!({"approvals_required": 2})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_policy");
    // Not an admin: refused.
    let got = post(&bo.client, s.url(format!("/api/v1/accounts/{ACCOUNT}/quorum")), json!({})).await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
    // A recipient that is not an age recipient is refused.
    let (_, start) =
        post(&bo.client, s.url(format!("/api/v1/me/credentials/{cred_id}/share-recipient/start")), json!({})).await;
    let (cred, _) = bo.key.assert(&s.origin_url(), &start).await;
    let got = post(
        &bo.client,
        s.url(format!("/api/v1/me/credentials/{cred_id}/share-recipient/finish")),
        json!({"ceremony_id": start["ceremony_id"], "credential": cred, "recipient": "age1notarecipient"}),
    )
    .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_recipient");
}

#[tokio::test]
async fn reshare_after_a_holder_joins_and_after_one_leaves_and_the_old_share_no_longer_combines() {
    let mut t = qteam().await;
    assert_eq!(enable(&t, ACCOUNT).await.0, StatusCode::OK);
    // A fourth custodian joins: the account needs a reshare.
    let mut dee = enrol_holder(&t.s, &[Role::Custodian], "Dee Newcomer", "dee@example.com").await;
    let (_, a) = get(&t.ada.client, t.s.url(format!("/api/v1/accounts/{ACCOUNT}"))).await;
    assert!(a["quorum"]["reshare_due_since"].is_string(), "{a}");
    assert!(a["quorum"]["reshare_reason"].as_str().unwrap().contains("Dee Newcomer"), "{a}");
    t.s.clock.advance(Duration::hours(25));
    for h in [&mut t.ada, &mut t.bo, &mut t.cy, &mut dee] {
        sign_in(&t.s, h).await;
    }
    prepare(&t.s, &mut dee).await;
    // Dee holds no share yet: she cannot approve (only deny), nor request.
    assert_error(&request(&t.s, &dee, ACCOUNT, "emergency").await, StatusCode::FORBIDDEN, "no_share");

    let cy_old_share: Vec<u8> =
        t.s.db()
            .query_row("SELECT ciphertext FROM account_shares WHERE custodian_id = ?1", [&t.cy.id], |r| r.get(0))
            .unwrap();
    let id = request_id(&t.s, &t.bo, ACCOUNT, "reshare").await;
    assert_eq!(approve(&t.s, &mut t.cy, &id, Hand::Honest).await.0, StatusCode::OK);
    let got = reveal(&t.s, &mut t.bo, &id, Hand::Honest).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert_eq!(got.1["reshared"], true);
    assert_eq!(got.1["holders"], 4);
    assert_eq!(got.1["key_version"], 3);
    assert!(got.1.get("password").is_none(), "a reshare shows no credentials");
    assert_eq!(quorum_material(&t.s, &id), (0, false));
    let (_, a) = get(&t.ada.client, t.s.url(format!("/api/v1/accounts/{ACCOUNT}"))).await;
    assert!(a["quorum"]["reshare_due_since"].is_null(), "{a}");
    assert_eq!(a["state"], "available", "a reshare makes no rotation due: {a}");

    // Dee approves a real release now.
    let id = request_id(&t.s, &t.bo, ACCOUNT, "emergency").await;
    assert_eq!(approve(&t.s, &mut dee, &id, Hand::Honest).await.0, StatusCode::OK);
    let got = reveal(&t.s, &mut t.bo, &id, Hand::Honest).await;
    assert_eq!(got.1["password"], PASSWORD, "{}", got.1);
    assert_eq!(
        post(&t.bo.client, t.s.url(format!("/api/v1/checkouts/{id}/close")), json!({"note": "ok"})).await.0,
        StatusCode::OK
    );

    // Cy leaves (3 live holders remain, k = 2): allowed, reshare due; reshare to three.
    let got = post(
        &t.ada.client,
        t.s.url(format!("/api/v1/custodians/{}/disable", t.cy.id)),
        json!({"reason": "left the team"}),
    )
    .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let id = request_id(&t.s, &t.bo, ACCOUNT, "reshare").await;
    assert_eq!(approve(&t.s, &mut dee, &id, Hand::Honest).await.0, StatusCode::OK);
    let got = reveal(&t.s, &mut t.bo, &id, Hand::Honest).await;
    assert_eq!(got.1["holders"], 3, "{}", got.1);
    let db = t.s.db();
    assert_eq!(count(&db, "SELECT count(*) FROM account_shares WHERE custodian_id = ?1", &t.cy.id), 0);
    // Cy kept her old share (she could open it with her key): with a new share it
    // does not combine to the account key.
    let cy_plain: Value =
        serde_json::from_slice(&age::decrypt(&t.cy.share_identity(), &cy_old_share).unwrap()).unwrap();
    let bo_new: Vec<u8> = db
        .query_row("SELECT ciphertext FROM account_shares WHERE custodian_id = ?1", [&t.bo.id], |r| r.get(0))
        .unwrap();
    let bo_plain: Value = serde_json::from_slice(&age::decrypt(&t.bo.share_identity(), &bo_new).unwrap()).unwrap();
    assert_ne!(cy_plain["version"], bo_plain["version"], "different key versions");
    let raw = |e: &Value| {
        let mut v = vec![e["index"].as_u64().unwrap() as u8];
        v.extend(hex::decode(e["value"].as_str().unwrap()).unwrap());
        v
    };
    let mixed = shamirsecretsharing::hazmat::combine_keyshares(&[raw(&cy_plain), raw(&bo_plain)]).unwrap();
    let recipient: String =
        db.query_row("SELECT recipient FROM accounts WHERE account_id = ?1", [ACCOUNT], |r| r.get(0)).unwrap();
    let guess = keys::derive_identity(keys::LABEL_ACCOUNT, &mixed.try_into().unwrap()).unwrap();
    assert_ne!(guess.to_public().to_string(), recipient);

    // Now 3 holders, k = 2: disabling two would leave 1 < 2. The first is fine, the
    // second is refused unless it is an emergency (then a critical bus-factor alarm).
    let got = post(&t.ada.client, t.s.url(format!("/api/v1/custodians/{}/disable", dee.id)), json!({})).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let got = post(&t.ada.client, t.s.url(format!("/api/v1/custodians/{}/disable", t.bo.id)), json!({})).await;
    assert_error(&got, StatusCode::CONFLICT, "bus_factor");
    let got =
        post(&t.ada.client, t.s.url(format!("/api/v1/custodians/{}/disable", t.bo.id)), json!({"emergency": true}))
            .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert!(audit_actions(&t.s.db()).contains(&"account.bus_factor".to_owned()));
    let status = breakglass::app::audit::verify_log(&t.s.db(), None).unwrap();
    assert!(status.ok, "{status:?}");
    assert!(status.approvals_checked >= 6, "{status:?}");
}

#[tokio::test]
async fn a_drill_in_quorum_mode_opens_the_account_with_the_shares_and_passes() {
    let mut t = qteam().await;
    assert_eq!(enable(&t, ACCOUNT).await.0, StatusCode::OK);
    t.s.clock.set(time::macros::datetime!(2026-12-01 09:00:00 UTC));
    t.s.app.run_drills().await.unwrap();
    for h in [&mut t.ada, &mut t.bo, &mut t.cy] {
        sign_in(&t.s, h).await;
    }
    let (_, st) = get(&t.ada.client, t.s.url("/api/v1/drills/status")).await;
    let mine = st["accounts"].as_array().unwrap().iter().find(|a| a["account_id"] == ACCOUNT).unwrap().clone();
    assert_eq!(mine["custody"], "quorum", "{mine}");
    assert!(mine["reshare_due"].is_null(), "{mine}");
    let drill = mine["open_drill"]["id"].as_str().unwrap().to_owned();
    let id = request_id(&t.s, &t.bo, ACCOUNT, "drill").await;
    assert_eq!(approve(&t.s, &mut t.cy, &id, Hand::Honest).await.0, StatusCode::OK);
    let got = reveal(&t.s, &mut t.bo, &id, Hand::Honest).await;
    assert_eq!(got.1["password"], PASSWORD, "the shares opened it: {}", got.1);
    let items = crate::drills::all_pass_of(&breakglass::domain::drill::CHECKLIST);
    let (status, d) = crate::drills::submit_checklist(&t.s, &t.bo.client, &drill, &id, items).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["state"], "passed");
    // A newcomer makes a reshare due, and the drill status says so.
    enrol_holder(&t.s, &[Role::Custodian], "Dee Newcomer", "dee@example.com").await;
    let (_, st) = get(&t.ada.client, t.s.url("/api/v1/drills/status")).await;
    let mine = st["accounts"].as_array().unwrap().iter().find(|a| a["account_id"] == ACCOUNT).unwrap().clone();
    assert!(mine["reshare_due"].as_str().unwrap().contains("Dee Newcomer"), "{mine}");
}

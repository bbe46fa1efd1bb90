//! Accounts and deposited secrets: validated, encrypted, never returned.
use breakglass::{
    crypto::{CryptoError, UnsealedVault, seal},
    domain::Role,
};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::support::*;

const PASSWORD: &str = "Tr0ub4dor&3-correct-horse";

async fn account_with_secrets(s: &TestServer, admin: &Person) {
    let got = post(
        &admin.client,
        &s.url("/api/v1/accounts"),
        json!({"account_id": "123456789012", "alias": "prod-payer", "root_email": "aws-root+prod@example.com"}),
    )
    .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    let got =
        put(&admin.client, &s.url("/api/v1/accounts/123456789012/secrets/root_password"), json!({"value": PASSWORD}))
            .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    let got = put(
        &admin.client,
        &s.url("/api/v1/accounts/123456789012/secrets/totp_seed"),
        json!({"value": AWS_SEED.to_lowercase()}),
    )
    .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
}

fn open_vault(s: &TestServer) -> UnsealedVault {
    let key = seal::read_key_file(&s.config.dev_key_file()).unwrap();
    let (sealed, recipient): (Vec<u8>, String) =
        s.db().query_row("SELECT sealed_key, recipient FROM vault", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    UnsealedVault::unseal(&key, &sealed, &recipient).unwrap()
}

fn ciphertext(s: &TestServer, account: &str, kind: &str, version: i64) -> Vec<u8> {
    s.db()
        .query_row(
            "SELECT ciphertext FROM secret_versions WHERE account_id = ?1 AND kind = ?2 AND version = ?3",
            rusqlite::params![account, kind, version],
            |r| r.get(0),
        )
        .unwrap()
}

fn wrapped_key(s: &TestServer, account: &str) -> Vec<u8> {
    s.db().query_row("SELECT wrapped_key FROM accounts WHERE account_id = ?1", [account], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn deposited_secrets_decrypt_through_the_vault_and_are_never_returned() {
    let s = TestServer::start().await;
    let ada = s.admin().await;
    account_with_secrets(&s, &ada).await;

    let (status, list) = get(&ada.client, &s.url("/api/v1/accounts")).await;
    assert_eq!(status, StatusCode::OK);
    let a = &list["accounts"][0];
    assert_eq!(a["account_id"], "123456789012");
    assert_eq!(a["state"], "available");
    assert_eq!(a["ready_for_release"], true);
    assert_eq!(a["policy"]["approvals_required"], 1);
    assert_eq!(a["secrets"].as_array().unwrap().len(), 2);
    let text = list.to_string();
    assert!(!text.contains(PASSWORD) && !text.to_uppercase().contains(AWS_SEED), "no plaintext in listings");

    // Through the vault, the stored bytes decrypt to what was deposited.
    let vault = open_vault(&s);
    let key = vault.account_key("123456789012", &wrapped_key(&s, "123456789012")).unwrap();
    assert_eq!(
        key.open("root_password", 1, &ciphertext(&s, "123456789012", "root_password", 1)).unwrap().expose_secret(),
        PASSWORD
    );
    let seed = key.open("totp_seed", 1, &ciphertext(&s, "123456789012", "totp_seed", 1)).unwrap();
    assert!(seed.expose_secret().contains(AWS_SEED), "seed stored normalised (upper case)");

    // The database file holds no plaintext anywhere.
    drop(key);
    let raw = std::fs::read(s.config.db_path()).unwrap();
    let wal = std::fs::read(s.config.db_path().with_extension("db-wal")).unwrap_or_default();
    for hay in [&raw, &wal] {
        assert!(!hay.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()));
        assert!(!hay.windows(AWS_SEED.len()).any(|w| w == AWS_SEED.as_bytes()));
    }
    // The audit log records the deposit, not the secret.
    let details: String = s
        .db()
        .query_row("SELECT details FROM audit_log WHERE action = 'secret.deposited' LIMIT 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(details, r#"{"kind":"root_password","rotation_completed":false,"version":1}"#);
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_row_does_not_decrypt() {
    let s = TestServer::start().await;
    let ada = s.admin().await;
    account_with_secrets(&s, &ada).await;
    post(
        &ada.client,
        &s.url("/api/v1/accounts"),
        json!({"account_id": "000000000042", "alias": "sandbox", "root_email": "aws-root+sbx@example.com"}),
    )
    .await;
    let vault = open_vault(&s);
    let pw = ciphertext(&s, "123456789012", "root_password", 1);
    let key = vault.account_key("123456789012", &wrapped_key(&s, "123456789012")).unwrap();
    // Another kind, or another version, of the same account.
    assert!(matches!(key.open("totp_seed", 1, &pw), Err(CryptoError::EnvelopeMismatch { .. })));
    assert!(matches!(key.open("root_password", 2, &pw), Err(CryptoError::EnvelopeMismatch { .. })));
    // Another account: its key cannot decrypt it; its wrapped key cannot be swapped in either.
    let other = vault.account_key("000000000042", &wrapped_key(&s, "000000000042")).unwrap();
    assert!(matches!(other.open("root_password", 1, &pw), Err(CryptoError::Decrypt)));
    assert!(matches!(
        vault.account_key("000000000042", &wrapped_key(&s, "123456789012")),
        Err(CryptoError::EnvelopeMismatch { .. })
    ));
}

#[tokio::test]
async fn a_second_deposit_is_a_new_version_and_old_versions_are_kept() {
    let s = TestServer::start().await;
    let ada = s.admin().await;
    account_with_secrets(&s, &ada).await;
    let got = put(
        &ada.client,
        &s.url("/api/v1/accounts/123456789012/secrets/root_password"),
        json!({"value": "a-rotated-password-2"}),
    )
    .await;
    assert_eq!(got.1["version"], 2, "{}", got.1);
    let (_, a) = get(&ada.client, &s.url("/api/v1/accounts/123456789012")).await;
    let pw = a["secrets"].as_array().unwrap().iter().find(|s| s["kind"] == "root_password").unwrap();
    assert_eq!(
        pw["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect::<Vec<_>>(),
        vec![2, 1]
    );
    let n: i64 = s
        .db()
        .query_row("SELECT count(*) FROM secret_versions WHERE kind = 'root_password'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn bad_account_and_secret_input_is_refused_with_clear_codes_and_nothing_written() {
    let s = TestServer::start().await;
    let ada = s.admin().await;
    account_with_secrets(&s, &ada).await;
    let before: i64 = s.db().query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0)).unwrap();
    let create = |body| post(&ada.client, s.url("/api/v1/accounts"), body);
    assert_error(
        &create(json!({"account_id": "12345", "alias": "x", "root_email": "a@example.com"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_account_id",
    );
    assert_error(
        &create(json!({"account_id": "123456789013", "alias": "x", "root_email": "not-an-email"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_email",
    );
    assert_error(
        &create(json!({"account_id": "123456789013", "alias": " ", "root_email": "a@example.com"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_text",
    );
    assert_error(
        &create(
            json!({"account_id": "123456789013", "alias": "x", "root_email": "a@example.com", "approvals_required": 0}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_policy",
    );
    assert_error(&create(json!({"account_id": "123456789013", "alias": "x", "root_email": "a@example.com", "drill_schedule": "monthly"})).await, StatusCode::BAD_REQUEST, "invalid_policy");
    assert_error(
        &create(json!({"account_id": "123456789012", "alias": "dup", "root_email": "a@example.com"})).await,
        StatusCode::CONFLICT,
        "account_exists",
    );
    let got =
        create(json!({"account_id": "123456789013", "alias": "x", "root_email": "a@example.com", "approvers": "all"}))
            .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_body");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("approvers"), "names the unknown field: {}", got.1);

    let deposit = |path: &str, body| put(&ada.client, s.url(path), body);
    assert_error(
        &deposit("/api/v1/accounts/123456789012/secrets/totp_seed", json!({"value": "not a seed!"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_totp_seed",
    );
    assert_error(
        &deposit("/api/v1/accounts/123456789012/secrets/totp_seed", json!({"value": "JBSWY3DP"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_totp_seed",
    );
    assert_error(
        &deposit("/api/v1/accounts/123456789012/secrets/root_password", json!({"value": "short"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_secret",
    );
    assert_error(
        &deposit("/api/v1/accounts/123456789012/secrets/api_key", json!({"value": "whatever-long"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_secret_kind",
    );
    assert_error(
        &deposit("/api/v1/accounts/999999999999/secrets/root_password", json!({"value": "long-enough-pw"})).await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    assert_error(
        &deposit("/api/v1/accounts/abc/secrets/root_password", json!({"value": "long-enough-pw"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_account_id",
    );
    // A secret sent with the wrong JSON type is not echoed back.
    let got = deposit("/api/v1/accounts/123456789012/secrets/root_password", json!({"value": 31337424242u64})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_body");
    assert!(!got.1.to_string().contains("31337424242"), "{}", got.1);
    assert_error(
        &get(&ada.client, &s.url("/api/v1/accounts/999999999999")).await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );

    let after: i64 = s.db().query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0)).unwrap();
    assert_eq!(before, after, "refused requests write nothing");
    let n: i64 = s.db().query_row("SELECT count(*) FROM accounts", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn only_admins_create_accounts_and_deposit_but_everyone_signed_in_can_read_metadata() {
    let s = TestServer::start().await;
    let ada = s.admin().await;
    account_with_secrets(&s, &ada).await;
    let bo = s.enrol(&[Role::Custodian], "Bo", "bo@example.com").await;
    let au = s.enrol(&[Role::Auditor], "Au", "au@example.com").await;
    for p in [&bo, &au] {
        assert_error(
            &post(
                &p.client,
                &s.url("/api/v1/accounts"),
                json!({"account_id": "123456789013", "alias": "x", "root_email": "a@example.com"}),
            )
            .await,
            StatusCode::FORBIDDEN,
            "forbidden_role",
        );
        assert_error(
            &put(
                &p.client,
                &s.url("/api/v1/accounts/123456789012/secrets/root_password"),
                json!({"value": "attacker-chosen-pw"}),
            )
            .await,
            StatusCode::FORBIDDEN,
            "forbidden_role",
        );
        assert_eq!(get(&p.client, &s.url("/api/v1/accounts")).await.0, StatusCode::OK);
    }
    assert_error(&get(&s.client(), &s.url("/api/v1/accounts")).await, StatusCode::UNAUTHORIZED, "not_signed_in");
}

#[tokio::test]
async fn a_state_change_whose_audit_entry_cannot_be_written_does_not_happen() {
    let s = TestServer::start().await;
    let ada = s.admin().await;
    s.db()
        .execute_batch("CREATE TRIGGER audit_refuses BEFORE INSERT ON audit_log WHEN NEW.action = 'account.created' BEGIN SELECT RAISE(ABORT, 'disk full'); END;")
        .unwrap();
    let got = post(
        &ada.client,
        &s.url("/api/v1/accounts"),
        json!({"account_id": "123456789012", "alias": "prod", "root_email": "a@example.com"}),
    )
    .await;
    assert_error(&got, StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert!(!got.1.to_string().contains("disk full"), "internals are not sent: {}", got.1);
    let n: i64 = s.db().query_row("SELECT count(*) FROM accounts", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0, "no account without its audit entry");
}

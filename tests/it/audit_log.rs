//! The audit log: tamper evidence through `breakglass audit verify`, the API, and an
//! independent verifier in another language (docs/verify_audit.py).
use std::{path::Path, process::Command};

use breakglass::domain::Role;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

/// A server with a few dozen entries of real history.
async fn history() -> (TestServer, Person) {
    let s = TestServer::start().await;
    let ada = s.admin().await;
    for (i, alias) in ["prod", "staging", "sandbox"].iter().enumerate() {
        let id = format!("12345678901{i}");
        post(
            &ada.client,
            s.url("/api/v1/accounts"),
            json!({"account_id": id, "alias": alias, "root_email": format!("root+{alias}@example.com")}),
        )
        .await;
        put(
            &ada.client,
            s.url(format!("/api/v1/accounts/{id}/secrets/root_password")),
            json!({"value": "a-long-root-password"}),
        )
        .await;
    }
    let _bo = s.enrol(&[Role::Custodian], "Bo", "bo@example.com").await;
    (s, ada)
}

/// Copy the live database (WAL included) into a fresh data dir.
fn snapshot(s: &TestServer, name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("breakglass.db");
    s.db().execute("VACUUM INTO ?1", [target.to_str().unwrap()]).unwrap();
    let _ = name;
    dir
}

fn tamper(dir: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(dir.join("breakglass.db")).unwrap();
    // The triggers refuse edits through SQLite; an attacker with the file drops them.
    let refused = conn.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 1", []);
    assert!(refused.unwrap_err().to_string().contains("append-only"));
    conn.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;").unwrap();
    conn.execute_batch(sql).unwrap();
}

fn verify(dir: &Path) -> (i32, String) {
    let out = breakglass(dir, &["audit", "verify"]);
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn an_untouched_log_verifies_and_edits_deletions_and_swaps_fail_at_the_right_seq() {
    let (s, _ada) = history().await;
    let n: i64 = s.db().query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0)).unwrap();
    assert!(n >= 10, "{n}");

    let clean = snapshot(&s, "clean");
    let (code, out) = verify(clean.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("ok: {n} entries")), "{out}");

    let edited = snapshot(&s, "edited");
    tamper(edited.path(), "UPDATE audit_log SET details = '{\"kind\":\"root_password\",\"version\":9}' WHERE seq = 5;");
    let (code, out) = verify(edited.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("broken at seq 5") && out.contains("edited"), "{out}");

    let deleted = snapshot(&s, "deleted");
    tamper(deleted.path(), "DELETE FROM audit_log WHERE seq = 7;");
    let (code, out) = verify(deleted.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("broken at seq 7"), "{out}");

    // Swap two rows' contents, keeping their seq numbers (and even their hashes).
    let swapped = snapshot(&s, "swapped");
    tamper(
        swapped.path(),
        "CREATE TEMP TABLE t AS SELECT * FROM audit_log WHERE seq IN (3, 4);
         UPDATE audit_log SET at = (SELECT at FROM t WHERE seq = 4), actor = (SELECT actor FROM t WHERE seq = 4),
             action = (SELECT action FROM t WHERE seq = 4), subject = (SELECT subject FROM t WHERE seq = 4),
             details = (SELECT details FROM t WHERE seq = 4) WHERE seq = 3;
         UPDATE audit_log SET at = (SELECT at FROM t WHERE seq = 3), actor = (SELECT actor FROM t WHERE seq = 3),
             action = (SELECT action FROM t WHERE seq = 3), subject = (SELECT subject FROM t WHERE seq = 3),
             details = (SELECT details FROM t WHERE seq = 3) WHERE seq = 4;",
    );
    let (code, out) = verify(swapped.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("broken at seq 3"), "{out}");

    // Rewriting a row *and* recomputing its hash still breaks the next link.
    let rehashed = snapshot(&s, "rehashed");
    let conn = rusqlite::Connection::open(rehashed.path().join("breakglass.db")).unwrap();
    let e: (String, String, String, String, String, String) = conn
        .query_row("SELECT at, actor, action, subject, details, prev_hash FROM audit_log WHERE seq = 6", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })
        .unwrap();
    drop(conn);
    let mut prev = [0u8; 32];
    hex::decode_to_slice(&e.5, &mut prev).unwrap();
    let forged = breakglass::domain::audit::entry_hash(6, &prev, &e.0, "custodian:someone-else", &e.2, &e.3, &e.4);
    tamper(
        rehashed.path(),
        &format!(
            "UPDATE audit_log SET actor = 'custodian:someone-else', hash = '{}' WHERE seq = 6;",
            hex::encode(forged)
        ),
    );
    let (code, out) = verify(rehashed.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("broken at seq 7"), "{out}");
}

#[tokio::test]
async fn the_exported_log_verifies_with_the_independent_python_verifier() {
    let (s, _ada) = history().await;
    let dir = snapshot(&s, "export");
    let out = breakglass(dir.path(), &["audit", "export", "--format", "jsonl"]);
    assert!(out.status.success());
    let lines = String::from_utf8(out.stdout).unwrap();
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["seq"], 1);
    let file = dir.path().join("audit.jsonl");
    std::fs::write(&file, &lines).unwrap();
    let verifier = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/verify_audit.py");
    let py = Command::new("python3")
        .arg(verifier)
        .arg(&file)
        .output()
        .expect("python3 is required for this test (CI installs it)");
    let stdout = String::from_utf8_lossy(&py.stdout);
    assert!(py.status.success(), "{stdout}{}", String::from_utf8_lossy(&py.stderr));
    let n = lines.lines().count();
    assert!(stdout.contains(&format!("ok: {n} entries")), "{stdout}");
    // And it catches an edit too.
    let tampered = lines.replacen("\"actor\":\"host:cli\"", "\"actor\":\"host:evil\"", 1);
    std::fs::write(&file, tampered).unwrap();
    let py = Command::new("python3").arg(verifier).arg(&file).output().unwrap();
    assert!(!py.status.success());
    assert!(String::from_utf8_lossy(&py.stdout).contains("broken at seq 1"));
}

#[tokio::test]
async fn auditors_and_admins_page_and_filter_the_log_and_others_cannot() {
    let (s, ada) = history().await;
    let au = s.enrol(&[Role::Auditor], "Au", "au@example.com").await;
    let bo = s.enrol(&[Role::Custodian], "Bo2", "bo2@example.com").await;
    assert_error(&get(&bo.client, s.url("/api/v1/audit")).await, StatusCode::FORBIDDEN, "forbidden_role");
    assert_error(&get(&s.client(), s.url("/api/v1/audit")).await, StatusCode::UNAUTHORIZED, "not_signed_in");

    let (status, page) = get(&au.client, s.url("/api/v1/audit?limit=3")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let seqs: Vec<u64> = page["entries"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(page["next_after_seq"], 3);
    let (_, page2) = get(&au.client, s.url("/api/v1/audit?limit=3&after_seq=3")).await;
    assert_eq!(page2["entries"][0]["seq"], 4);

    let (_, enrolled) = get(&ada.client, s.url("/api/v1/audit?action=custodian.enrolled")).await;
    assert_eq!(enrolled["entries"].as_array().unwrap().len(), 4, "{enrolled}");
    assert!(enrolled["next_after_seq"].is_null());
    let (_, secrets) =
        get(&ada.client, s.url("/api/v1/audit?action_prefix=secret.&subject=account:123456789011")).await;
    assert_eq!(secrets["entries"].as_array().unwrap().len(), 1, "{secrets}");
    let (_, by_ada) =
        get(&ada.client, s.url(format!("/api/v1/audit?actor=custodian:{}&action=account.created", ada.id))).await;
    assert_eq!(by_ada["entries"].as_array().unwrap().len(), 3);
    let (_, none) = get(&ada.client, s.url("/api/v1/audit?since=2030-01-01T00:00:00.000Z")).await;
    assert_eq!(none["entries"].as_array().unwrap().len(), 0);
    assert_error(&get(&ada.client, s.url("/api/v1/audit?limit=lots")).await, StatusCode::BAD_REQUEST, "invalid_query");
    assert_error(&get(&ada.client, s.url("/api/v1/audit?colour=blue")).await, StatusCode::BAD_REQUEST, "invalid_query");

    // The whole log as JSON lines, for auditors only.
    let (status, body) = get(&au.client, s.url("/api/v1/audit/export")).await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<serde_json::Value> =
        body.as_str().unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let total: i64 = s.db().query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0)).unwrap();
    assert_eq!(lines.len() as i64, total, "every entry, once");
    assert_eq!(lines[0]["seq"], 1);
    assert_error(&get(&bo.client, s.url("/api/v1/audit/export")).await, StatusCode::FORBIDDEN, "forbidden_role");
    let (status, v) = get(&au.client, s.url("/api/v1/audit/verify")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["ok"], true);
    assert!(v["entries"].as_u64().unwrap() >= 10);
}

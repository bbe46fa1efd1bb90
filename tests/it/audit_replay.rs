//! `breakglass audit verify` against a modified server: evidence replayed into another
//! checkout, signed for another person or purpose, a decision that disagrees with its
//! action, a cloned authenticator, edited checkpoints and high-water file, missing
//! triggers, a read-only copy — each reported at the seq of the entry at fault. The
//! forgeries are signed by the custodians' real (software) authenticators, as a
//! compromised server that got people to touch their keys would have them.
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;

use crate::{checkouts::*, support::*};

fn actor(p: &Person) -> String {
    format!("custodian:{}", p.id)
}

/// Details of the newest entry with this action, and its seq.
fn newest(s: &TestServer, action: &str) -> (u64, Value) {
    let (seq, details): (i64, String) = s
        .db()
        .query_row("SELECT seq, details FROM audit_log WHERE action = ?1 ORDER BY seq DESC LIMIT 1", [action], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    (seq as u64, serde_json::from_str(&details).unwrap())
}

/// Have `p`'s authenticator sign `challenge`, using a ceremony started for them as the
/// template (same RP, same allowed credentials); returns the evidence as the server
/// records it.
fn sign(s: &TestServer, p: &mut Person, template: &Value, challenge: &[u8]) -> Value {
    let mut start = template.clone();
    start["publicKey"]["challenge"] = json!(URL_SAFE_NO_PAD.encode(challenge));
    let st: AuthStart = serde_json::from_value(start).unwrap();
    let cred = serde_json::to_value(p.key.do_authentication(s.origin_url(), st.options).unwrap()).unwrap();
    let cdj = cred["response"]["clientDataJSON"].as_str().unwrap();
    let cd: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(cdj).unwrap()).unwrap();
    json!({
        "credential_id": cred["rawId"],
        "challenge": cd["challenge"],
        "client_data_json": cdj,
        "authenticator_data": cred["response"]["authenticatorData"],
        "signature": cred["response"]["signature"],
    })
}

fn counter(evidence: &Value) -> u32 {
    let ad = URL_SAFE_NO_PAD.decode(evidence["authenticator_data"].as_str().unwrap()).unwrap();
    u32::from_be_bytes(ad[33..37].try_into().unwrap())
}

fn challenge_entry(s: &TestServer, checkout: &str, challenge: &[u8]) -> Value {
    json!({"checkout": checkout, "ceremony": "forged", "challenge": URL_SAFE_NO_PAD.encode(challenge), "rp_id": s.config.rp_id(), "origin": s.config.origin_header()})
}

fn decision(checkout: &str, decision: &str, evidence: &Value) -> Value {
    json!({"checkout": checkout, "decision": decision, "comment": null, "evidence": evidence})
}

/// The `approvals` row a server writes beside a decision entry.
fn insert_approval_row(dir: &std::path::Path, checkout: &str, p: &Person, decision: &str, ev: &Value) {
    rusqlite::Connection::open(dir.join("breakglass.db"))
        .unwrap()
        .execute(
            "INSERT INTO approvals (checkout_id, custodian_id, credential_id, decision, comment, at, challenge, client_data_json, authenticator_data, signature) VALUES (?1, ?2, ?3, ?4, NULL, 0, ?5, ?6, ?7, ?8)",
            rusqlite::params![
                checkout,
                p.id,
                ev["credential_id"].as_str(),
                decision,
                ev["challenge"].as_str(),
                ev["client_data_json"].as_str(),
                ev["authenticator_data"].as_str(),
                ev["signature"].as_str()
            ],
        )
        .unwrap();
}

#[tokio::test]
async fn evidence_copied_byte_for_byte_into_a_new_checkout_fails_at_the_forged_entries() {
    let Team { s, bo, mut cy, .. } = team().await;
    let a = request_id(&s, &bo, ACCOUNT).await;
    assert_eq!(decide(&s, &mut cy, &a, "approve").await.1["state"], "approved");
    let (issued_seq, issued) = newest(&s, "approval.challenge_issued");
    let (recorded_seq, recorded) = newest(&s, "checkout.approval_recorded");
    let b = request_id(&s, &bo, OTHER).await;
    let (code, out) = verify_out(snapshot_db(&s).path());
    assert_eq!(code, 0, "{out}");

    // Copied as is: its challenge belongs to checkout A.
    let copied = snapshot_db(&s);
    let seqs = forge(
        &s,
        copied.path(),
        &[(&actor(&cy), "checkout.approval_recorded", decision(&b, "approve", &recorded["evidence"]))],
    );
    let out = verify_fails(copied.path());
    assert!(
        out.contains(&format!(
            "seq {}: approve evidence (checkout {b}): its challenge was issued for checkout {a}, not for {b}",
            seqs[0]
        )),
        "{out}"
    );

    // With the old challenge issued again for B: the reissue, the replayed counter and the
    // quorum that does not follow are each caught at their own entry.
    let reissued = snapshot_db(&s);
    let mut again = issued.clone();
    again["checkout"] = json!(b);
    let seqs = forge(
        &s,
        reissued.path(),
        &[
            (&actor(&cy), "approval.challenge_issued", again),
            (&actor(&cy), "checkout.approval_recorded", decision(&b, "approve", &recorded["evidence"])),
            (&actor(&cy), "checkout.approved", json!({"checkout": b, "approvals": 1})),
        ],
    );
    let out = verify_fails(reissued.path());
    assert!(out.contains(&format!("seq {}: this challenge was already issued at seq {issued_seq}", seqs[0])), "{out}");
    assert!(out.contains(&format!("seq {}: approve evidence (checkout {b}): its signature counter", seqs[1])), "{out}");
    assert!(out.contains(&format!("seen at seq {recorded_seq}")), "{out}");
    assert!(out.contains(&format!("seq {}: checkout {b} was approved with 0 verified approval(s)", seqs[2])), "{out}");

    // Deleting the decision's row from the approvals table is detected at its entry.
    let deleted = snapshot_db(&s);
    rusqlite::Connection::open(deleted.path().join("breakglass.db"))
        .unwrap()
        .execute("DELETE FROM approvals", [])
        .unwrap();
    let out = verify_fails(deleted.path());
    assert!(out.contains(&format!("seq {recorded_seq}: no row of the approvals table holds this decision")), "{out}");

    // A real denial under the default veto replays cleanly.
    assert_eq!(decide(&s, &mut cy, &b, "deny").await.1["state"], "denied");
    let (code, out) = verify_out(snapshot_db(&s).path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 WebAuthn signatures verified"), "{out}");
}

#[tokio::test]
async fn evidence_for_another_person_another_purpose_or_another_decision_fails_at_its_seq() {
    let Team { s, mut ada, bo, mut cy } = team().await;
    let id = request_id(&s, &bo, ACCOUNT).await;
    let (status, cy_start) = approval_start(&s, &cy, &id).await;
    assert_eq!(status, StatusCode::OK, "{cy_start}");
    let (status, ada_start) = approval_start(&s, &ada, &id).await;
    assert_eq!(status, StatusCode::OK, "{ada_start}");
    let cy_challenge = URL_SAFE_NO_PAD.decode(cy_start["publicKey"]["challenge"].as_str().unwrap()).unwrap();

    // Control: Cy's own challenge, her decision and its approvals row — a consistent
    // record, as the server would have written it, verifies.
    let good = snapshot_db(&s);
    let ev = sign(&s, &mut cy, &cy_start, &cy_challenge);
    forge(&s, good.path(), &[(&actor(&cy), "checkout.approval_recorded", decision(&id, "approve", &ev))]);
    insert_approval_row(good.path(), &id, &cy, "approve", &ev);
    let (code, out) = verify_out(good.path());
    assert_eq!(code, 0, "{out}");

    // Ada signs the challenge issued to Cy.
    let other_person = snapshot_db(&s);
    let ev = sign(&s, &mut ada, &ada_start, &cy_challenge);
    let seqs =
        forge(&s, other_person.path(), &[(&actor(&ada), "checkout.approval_recorded", decision(&id, "approve", &ev))]);
    insert_approval_row(other_person.path(), &id, &ada, "approve", &ev);
    let out = verify_fails(other_person.path());
    assert!(
        out.contains(&format!(
            "seq {}: approve evidence (checkout {id}): its challenge was issued to {}, not to {}",
            seqs[0],
            actor(&cy),
            actor(&ada)
        )),
        "{out}"
    );

    // A challenge issued for a release, used for an approval.
    let other_purpose = snapshot_db(&s);
    let release_challenge = [0xA5u8; 32];
    let ev = sign(&s, &mut cy, &cy_start, &release_challenge);
    let seqs = forge(
        &s,
        other_purpose.path(),
        &[
            (&actor(&cy), "release.challenge_issued", challenge_entry(&s, &id, &release_challenge)),
            (&actor(&cy), "checkout.approval_recorded", decision(&id, "approve", &ev)),
        ],
    );
    insert_approval_row(other_purpose.path(), &id, &cy, "approve", &ev);
    let out = verify_fails(other_purpose.path());
    assert!(
        out.contains(&format!(
            "seq {}: approve evidence (checkout {id}): its challenge was issued for a release, not for an approval",
            seqs[1]
        )),
        "{out}"
    );

    // details.decision says deny on an approval entry.
    let disagreeing = snapshot_db(&s);
    let ev = sign(&s, &mut cy, &cy_start, &cy_challenge);
    let seqs =
        forge(&s, disagreeing.path(), &[(&actor(&cy), "checkout.approval_recorded", decision(&id, "deny", &ev))]);
    let out = verify_fails(disagreeing.path());
    assert!(
        out.contains(&format!(
            "seq {}: details.decision \"deny\" disagrees with its action checkout.approval_recorded",
            seqs[0]
        )),
        "{out}"
    );
}

#[tokio::test]
async fn a_signature_counter_that_does_not_increase_fails_at_the_later_entry() {
    let Team { s, bo, mut cy, .. } = team().await;
    let a = request_id(&s, &bo, ACCOUNT).await;
    let b = request_id(&s, &bo, OTHER).await;
    let (_, template) = approval_start(&s, &cy, &a).await;
    let (x1, x2) = ([0x11u8; 32], [0x22u8; 32]);
    // Signed in this order, so x1's counter is below x2's…
    let ev1 = sign(&s, &mut cy, &template, &x1);
    let ev2 = sign(&s, &mut cy, &template, &x2);
    assert!(counter(&ev1) > 0 && counter(&ev2) > counter(&ev1), "the soft authenticator counts");

    // …recorded in the same order, it verifies (apart from the rows the forger did not add).
    let in_order = snapshot_db(&s);
    forge(
        &s,
        in_order.path(),
        &[
            (&actor(&cy), "approval.challenge_issued", challenge_entry(&s, &a, &x1)),
            (&actor(&cy), "approval.challenge_issued", challenge_entry(&s, &b, &x2)),
            (&actor(&cy), "checkout.approval_recorded", decision(&a, "approve", &ev1)),
            (&actor(&cy), "checkout.approval_recorded", decision(&b, "approve", &ev2)),
        ],
    );
    insert_approval_row(in_order.path(), &a, &cy, "approve", &ev1);
    insert_approval_row(in_order.path(), &b, &cy, "approve", &ev2);
    let (code, out) = verify_out(in_order.path());
    assert_eq!(code, 0, "{out}");

    // …recorded the other way round (what a cloned or rolled-back authenticator shows).
    let reversed = snapshot_db(&s);
    let seqs = forge(
        &s,
        reversed.path(),
        &[
            (&actor(&cy), "approval.challenge_issued", challenge_entry(&s, &a, &x1)),
            (&actor(&cy), "approval.challenge_issued", challenge_entry(&s, &b, &x2)),
            (&actor(&cy), "checkout.approval_recorded", decision(&b, "approve", &ev2)),
            (&actor(&cy), "checkout.approval_recorded", decision(&a, "approve", &ev1)),
        ],
    );
    insert_approval_row(reversed.path(), &b, &cy, "approve", &ev2);
    insert_approval_row(reversed.path(), &a, &cy, "approve", &ev1);
    let out = verify_fails(reversed.path());
    assert!(
        out.contains(&format!(
            "seq {}: approve evidence (checkout {a}): its signature counter {} is not above {}, seen at seq {}",
            seqs[3],
            counter(&ev1),
            counter(&ev2),
            seqs[2]
        )),
        "{out}"
    );
}

#[tokio::test]
async fn stored_checkpoints_the_high_water_file_and_the_triggers_are_checked() {
    let Team { s, ada, .. } = team().await;
    let (status, cp) = get(&ada.client, s.url("/api/v1/audit/checkpoint")).await;
    assert_eq!(status, StatusCode::OK, "{cp}");
    let size = cp["size"].as_u64().unwrap();
    let high_water = std::fs::read_to_string(s.config.data_dir.join("checkpoint-high-water")).unwrap();
    assert!(high_water.starts_with(&format!("{size} ")), "{high_water}");
    let copy = |edit: &str, mark: &str| {
        let dir = snapshot_db(&s);
        std::fs::write(dir.path().join("checkpoint-high-water"), mark).unwrap();
        if !edit.is_empty() {
            rusqlite::Connection::open(dir.path().join("breakglass.db")).unwrap().execute_batch(edit).unwrap();
        }
        dir
    };

    let clean = copy("", &high_water);
    let (code, out) = verify_out(clean.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 stored checkpoints verified"), "{out}");
    assert!(!out.contains("warning"), "{out}");

    let edited_head = copy(&format!("UPDATE checkpoints SET head = '{}'", "0".repeat(64)), &high_water);
    let out = verify_fails(edited_head.path());
    assert!(
        out.contains(&format!("seq {size}: the checkpoints row for size {size} does not match its own signed note")),
        "{out}"
    );

    let edited_note = copy(
        &format!(
            "UPDATE checkpoints SET note = replace(note, char(10) || '{size}' || char(10), char(10) || '{}' || char(10))",
            size - 1
        ),
        &high_water,
    );
    let out = verify_fails(edited_note.path());
    assert!(out.contains(&format!("seq {size}: the checkpoint signed at size {size} is not valid")), "{out}");

    let unterminated = copy("UPDATE checkpoints SET note = rtrim(note, char(10))", &high_water);
    let (code, out) = verify_out(unterminated.path());
    assert_eq!(code, 1, "a note without its final newline is not the signed note: {out}");
    assert!(out.contains(&format!("seq {size}: the checkpoint signed at size {size} is not valid")), "{out}");

    let other_head = copy("", &format!("{size} {}\n", "ab".repeat(32)));
    let out = verify_fails(other_head.path());
    assert!(out.contains(&format!("seq {size}: the entry at seq {size} does not have the head recorded in")), "{out}");

    let beyond = copy("", &format!("{} {}", size + 50, "ab".repeat(32)));
    let out = verify_fails(beyond.path());
    assert!(
        out.contains(&format!("a checkpoint was signed at size {}", size + 50))
            && out.contains("truncated or restored"),
        "{out}"
    );

    let no_triggers = copy("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;", &high_water);
    let (code, out) = verify_out(no_triggers.path());
    assert_eq!(code, 0, "a warning, not a failure: {out}");
    assert!(out.contains("warning: the append-only triggers on audit_log are missing"), "{out}");
}

#[tokio::test]
async fn the_server_refuses_to_sign_a_checkpoint_over_an_edited_row() {
    let Team { s, ada, bo, .. } = team().await;
    let (status, first) = get(&ada.client, s.url("/api/v1/audit/checkpoint")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let id = request_id(&s, &bo, ACCOUNT).await;
    // Unedited growth is signed.
    let (status, second) = get(&ada.client, s.url("/api/v1/audit/checkpoint")).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert!(second["size"].as_u64() > first["size"].as_u64());

    post(&bo.client, s.url(format!("/api/v1/checkouts/{id}/cancel")), json!({})).await;
    let (edited, _) = newest(&s, "checkout.cancelled");
    assert!(edited > second["size"].as_u64().unwrap());
    let conn = s.db();
    conn.execute_batch("DROP TRIGGER audit_log_no_update;").unwrap();
    conn.execute("UPDATE audit_log SET details = '{\"checkout\":\"someone-else\"}' WHERE seq = ?1", [edited as i64])
        .unwrap();
    let got = get(&ada.client, s.url("/api/v1/audit/checkpoint")).await;
    assert_error(&got, StatusCode::CONFLICT, "log_inconsistent");
    assert!(got.1.to_string().contains(&format!("broken at seq {edited}")), "{}", got.1);
}

#[tokio::test]
async fn verify_reads_a_copy_on_read_only_media() {
    use std::os::unix::fs::PermissionsExt;
    let Team { s, bo, mut cy, .. } = team().await;
    let id = request_id(&s, &bo, ACCOUNT).await;
    assert_eq!(decide(&s, &mut cy, &id, "approve").await.1["state"], "approved");
    let (recorded_seq, _) = newest(&s, "checkout.approval_recorded");
    let read_only = |edit: &str| {
        let dir = snapshot_db(&s);
        let conn = rusqlite::Connection::open(dir.path().join("breakglass.db")).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        if !edit.is_empty() {
            conn.execute_batch(edit).unwrap();
        }
        drop(conn);
        std::fs::set_permissions(dir.path().join("breakglass.db"), std::fs::Permissions::from_mode(0o444)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
        dir
    };
    // Root ignores file modes: run the verifier as `nobody` then, for whom they hold.
    let verify = |dir: &std::path::Path| {
        let mut cmd = breakglass_cmd(dir);
        let as_root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap();
        if as_root {
            let inner = cmd;
            cmd = std::process::Command::new("setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(inner.get_program());
            for (k, v) in inner.get_envs() {
                match v {
                    Some(v) => cmd.env(k, v),
                    None => cmd.env_remove(k),
                };
            }
        }
        let out = cmd.args(["audit", "verify"]).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };

    let clean = read_only("");
    let (code, out) = verify(clean.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 WebAuthn signatures verified"), "{out}");
    assert!(!clean.path().join("breakglass.db-shm").exists(), "nothing written beside it");

    let flipped = read_only("UPDATE approvals SET decision = 'deny'");
    let (code, out) = verify(flipped.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("seq {recorded_seq}: approvals row")) && out.contains("differs"), "{out}");
    for dir in [&clean, &flipped] {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[tokio::test]
async fn the_quorum_rules_recorded_with_the_request_are_replayed() {
    let Team { s, mut ada, bo, mut cy } = team().await;
    // Only Cy may approve on ACCOUNT; OTHER has no veto.
    let got =
        put(&ada.client, s.url(format!("/api/v1/accounts/{ACCOUNT}/policy")), json!({"approvers": [cy.id]})).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let got = put(&ada.client, s.url(format!("/api/v1/accounts/{OTHER}/policy")), json!({"veto": false})).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let listed = request_id(&s, &bo, ACCOUNT).await;
    let (_, requested) = newest(&s, "checkout.requested");
    assert_eq!((&requested["approvers"], &requested["veto"]), (&json!([cy.id]), &json!(true)), "{requested}");
    let no_veto = request_id(&s, &bo, OTHER).await;
    let (_, requested) = newest(&s, "checkout.requested");
    assert_eq!((&requested["approvers"], &requested["veto"]), (&json!("all"), &json!(false)), "{requested}");
    assert_eq!(decide(&s, &mut cy, &no_veto, "deny").await.1["state"], "pending");
    let (_, template) = approval_start(&s, &ada, &no_veto).await;
    let (code, out) = verify_out(snapshot_db(&s).path());
    assert_eq!(code, 0, "{out}");

    // A "denied" without a veto.
    let denied = snapshot_db(&s);
    let seqs = forge(&s, denied.path(), &[(&actor(&cy), "checkout.denied", json!({"checkout": no_veto}))]);
    let out = verify_fails(denied.path());
    assert!(
        out.contains(&format!(
            "seq {}: checkout {no_veto} was denied although the policy it was requested under has no veto",
            seqs[0]
        )),
        "{out}"
    );

    // Ada's valid signature on a challenge issued to her, but she is not in the approver set.
    let outsider = snapshot_db(&s);
    let x = [0x33u8; 32];
    let ev = sign(&s, &mut ada, &template, &x);
    let seqs = forge(
        &s,
        outsider.path(),
        &[
            (&actor(&ada), "approval.challenge_issued", challenge_entry(&s, &listed, &x)),
            (&actor(&ada), "checkout.approval_recorded", decision(&listed, "approve", &ev)),
            (&actor(&ada), "checkout.approved", json!({"checkout": listed, "approvals": 1})),
        ],
    );
    insert_approval_row(outsider.path(), &listed, &ada, "approve", &ev);
    let out = verify_fails(outsider.path());
    assert!(
        out.contains(&format!(
            "seq {}: {} is not in the approver set recorded for checkout {listed}",
            seqs[1],
            actor(&ada)
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("seq {}: checkout {listed} was approved with 0 verified approval(s)", seqs[2])),
        "{out}"
    );
}

#[tokio::test]
async fn a_challenge_used_twice_an_added_approvals_row_and_another_log_key_in_its_table_are_reported() {
    let Team { s, ada, mut bo, mut cy } = team().await;
    let a = request_id(&s, &bo, ACCOUNT).await;
    assert_eq!(decide(&s, &mut cy, &a, "approve").await.1["state"], "approved");
    let (issued_seq, _) = newest(&s, "approval.challenge_issued");
    let (recorded_seq, recorded) = newest(&s, "checkout.approval_recorded");
    let (status, body) = reveal(&s, &mut bo, &a).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (release_issued_seq, _) = newest(&s, "release.challenge_issued");
    let (revealed_seq, revealed) = newest(&s, "checkout.revealed");
    let (code, out) = verify_out(snapshot_db(&s).path());
    assert_eq!(code, 0, "{out}");

    // The same approval, recorded a second time for the same checkout: the challenge
    // is spent (the approvals table cannot hold a second row of Cy's for it either).
    let approval_again = snapshot_db(&s);
    let seqs = forge(&s, approval_again.path(), &[(&actor(&cy), "checkout.approval_recorded", recorded.clone())]);
    let out = verify_fails(approval_again.path());
    assert!(
        out.contains(&format!(
            "seq {}: approve evidence (checkout {a}): its challenge (issued at seq {issued_seq}) was already used at seq {recorded_seq}",
            seqs[0]
        )),
        "{out}"
    );

    // The same reveal, recorded again: a second release needs a second assertion.
    let reveal_again = snapshot_db(&s);
    let seqs = forge(&s, reveal_again.path(), &[(&actor(&bo), "checkout.revealed", revealed.clone())]);
    let out = verify_fails(reveal_again.path());
    assert!(
        out.contains(&format!(
            "seq {}: release evidence (checkout {a}): its challenge (issued at seq {release_issued_seq}) was already used at seq {revealed_seq}",
            seqs[0]
        )),
        "{out}"
    );

    // An approvals row with no decision entry behind it.
    let added_row = snapshot_db(&s);
    insert_approval_row(added_row.path(), &a, &ada, "approve", &recorded["evidence"]);
    let out = verify_fails(added_row.path());
    assert!(out.contains(&format!("approvals row 2 (checkout {a}) is not in the audit log")), "{out}");

    // The log_key table holding another key than the one log_key.created recorded.
    let (key_seq, _) = newest(&s, "log_key.created");
    let other_key = snapshot_db(&s);
    rusqlite::Connection::open(other_key.path().join("breakglass.db"))
        .unwrap()
        .execute("UPDATE log_key SET public_key = zeroblob(32)", [])
        .unwrap();
    let out = verify_fails(other_key.path());
    assert!(
        out.contains(&format!(
            "seq {key_seq}: the log_key table holds a different key from the one this entry recorded"
        )),
        "{out}"
    );
}

/// docs/verify_audit.py, written from docs/audit-log.md with the Python standard
/// library, on the export of a copied database: `(exit code, stdout)`.
pub fn python_verify(dir: &std::path::Path) -> (i32, String) {
    let out = breakglass(dir, &["audit", "export", "--format", "jsonl"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = dir.join("audit.jsonl");
    std::fs::write(&file, &out.stdout).unwrap();
    let py = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/verify_audit.py"))
        .arg(&file)
        .output()
        .expect("python3 is required for this test (CI installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&py.stdout), String::from_utf8_lossy(&py.stderr));
    (py.status.code().unwrap(), text)
}

#[tokio::test]
async fn the_python_verifier_replays_the_evidence_and_catches_replays_without_crypto() {
    let Team { s, mut bo, mut cy, .. } = team().await;
    let a = request_id(&s, &bo, ACCOUNT).await;
    assert_eq!(decide(&s, &mut cy, &a, "approve").await.1["state"], "approved");
    let (issued_seq, issued) = newest(&s, "approval.challenge_issued");
    let (_, recorded) = newest(&s, "checkout.approval_recorded");
    let (status, body) = reveal(&s, &mut bo, &a).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (release_issued_seq, _) = newest(&s, "release.challenge_issued");
    let (revealed_seq, revealed) = newest(&s, "checkout.revealed");
    let b = request_id(&s, &bo, OTHER).await;

    let (code, out) = python_verify(snapshot_db(&s).path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 evidence records replayed"), "{out}");

    // Evidence copied into checkout B with its challenge issued again, and B approved.
    let copied = snapshot_db(&s);
    let mut again = issued.clone();
    again["checkout"] = json!(b);
    let seqs = forge(
        &s,
        copied.path(),
        &[
            (&actor(&cy), "approval.challenge_issued", again),
            (&actor(&cy), "checkout.approval_recorded", decision(&b, "approve", &recorded["evidence"])),
            (&actor(&cy), "checkout.approved", json!({"checkout": b, "approvals": 1})),
            (&actor(&bo), "checkout.revealed", revealed.clone()),
            (&actor(&cy), "checkout.denial_recorded", decision(&b, "approve", &recorded["evidence"])),
        ],
    );
    let (code, out) = python_verify(copied.path());
    assert_eq!(code, 1, "{out}");
    for expected in [
        format!("seq {}: this challenge was already issued at seq {issued_seq}", seqs[0]),
        format!(
            "seq {}: approve evidence (checkout {b}): its challenge was issued for checkout {a}, not for {b}",
            seqs[1]
        ),
        format!("seq {}: checkout {b} was approved with 0 counted approval(s); 1 required", seqs[2]),
        format!(
            "seq {}: release evidence (checkout {a}): its challenge (issued at seq {release_issued_seq}) was already used at seq {revealed_seq}",
            seqs[3]
        ),
        format!("seq {}: details.decision 'approve' disagrees with its action checkout.denial_recorded", seqs[4]),
    ] {
        assert!(out.contains(&expected), "{expected}\n{out}");
    }
    // And `breakglass audit verify` agrees that the same copy fails.
    assert_eq!(verify_out(copied.path()).0, 1);
}

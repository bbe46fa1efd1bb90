//! Operations: encrypted backups, restores checked against published checkpoints,
//! `/metrics`, and (with a real Litestream and a real moto S3) losing the host.
use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration as StdDuration,
};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{checkouts::*, support::*};

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// An offline backup key made by the real `age-keygen`: (identity file, recipient).
fn backup_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .expect("age-keygen must be installed (Debian package age; .ci/run installs it)");
    assert!(out.status.success(), "{}", text(&out));
    let out = Command::new("age-keygen").arg("-y").arg(&path).output().unwrap();
    (path, String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

/// The binary on a data dir with backup recipients set.
fn bg(data: &Path, recipient: &str, args: &[&std::ffi::OsStr]) -> std::process::Output {
    breakglass_cmd(data).env("BREAKGLASS_BACKUP_RECIPIENTS", recipient).args(args).output().unwrap()
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// A whole two-person emergency checkout: request, approve, reveal, close.
pub async fn full_checkout(t: &mut Team, account: &str) -> String {
    let id = request_id(&t.s, &t.bo, account).await;
    assert_eq!(decide(&t.s, &mut t.cy, &id, "approve").await.1["state"], "approved");
    let (status, rel) = reveal(&t.s, &mut t.bo, &id).await;
    assert_eq!(status, StatusCode::OK, "{rel}");
    assert_eq!(rel["password"], PASSWORD, "{rel}");
    let (status, body) =
        post(&t.bo.client, t.s.url(format!("/api/v1/checkouts/{id}/close")), json!({"note": "done"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    id
}

/// A second data dir that can open the same vault (dev mode: the key file sits in it).
fn fresh_data_dir(from: &Path, into: &Path) -> PathBuf {
    let data = into.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::copy(from.join("dev-seal.key"), data.join("dev-seal.key")).unwrap();
    std::fs::set_permissions(data.join("dev-seal.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    data
}

fn audit_rows(db: &Path) -> Vec<(String, String, Value)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT actor, action, details FROM audit_log ORDER BY seq").unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or(Value::Null)))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[tokio::test]
async fn a_backup_round_trips_through_verify_and_restore_and_a_wrong_key_or_truncated_file_fails_clearly() {
    let mut t = team().await;
    full_checkout(&mut t, ACCOUNT).await;
    let keys = tempfile::tempdir().unwrap();
    let (identity, recipient) = backup_key(keys.path(), "backup.key");
    let (other_identity, _) = backup_key(keys.path(), "other.key");
    let data = t.s.config.data_dir.clone();
    let file = keys.path().join("b.db.age");

    // Taken while the server runs.
    let out = bg(&data, &recipient, &[os("backup"), os("--to"), file.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let raw = std::fs::read(&file).unwrap();
    assert!(raw.starts_with(b"age-encryption.org/v1\n"), "the whole file is age-encrypted");
    for plain in [&b"SQLite format 3"[..], b"prod-payer", b"bo@example.com", b"Bo Requester"] {
        assert!(!raw.windows(plain.len()).any(|w| w == plain), "{:?} is readable in the backup", plain);
    }
    let entries = audit_rows(&t.s.config.db_path()).len();
    let out =
        bg(&data, &recipient, &[os("backup"), os("verify"), file.as_os_str(), os("--identity"), identity.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("{entries} audit entries")), "{}", text(&out));
    assert!(
        text(&out).contains("1 WebAuthn signatures") || text(&out).contains("WebAuthn signatures"),
        "{}",
        text(&out)
    );

    // Independent proof of the format: the age CLI opens it, sqlite3 reads it.
    let plain = keys.path().join("plain.db");
    let out = Command::new("age").arg("-d").arg("-i").arg(&identity).arg("-o").arg(&plain).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let conn = rusqlite::Connection::open(&plain).unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0)).unwrap();
    assert_eq!(n as usize, entries);

    // The wrong identity and a cut file fail with a sentence naming the problem.
    let out = bg(
        &data,
        &recipient,
        &[os("backup"), os("verify"), file.as_os_str(), os("--identity"), other_identity.as_os_str()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no identity in") && text(&out).contains("encrypted to other recipients"),
        "{}",
        text(&out)
    );
    let cut = keys.path().join("cut.db.age");
    std::fs::write(&cut, &raw[..raw.len() / 2]).unwrap();
    let out =
        bg(&data, &recipient, &[os("backup"), os("verify"), cut.as_os_str(), os("--identity"), identity.as_os_str()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("damaged or truncated"), "{}", text(&out));
    let out = bg(&data, &recipient, &[os("backup"), os("--to"), file.as_os_str()]);
    assert!(!out.status.success() && text(&out).contains("already exists"), "{}", text(&out));
    let out =
        breakglass_cmd(&data).args([os("backup"), os("--to"), keys.path().join("x.age").as_os_str()]).output().unwrap();
    assert!(!out.status.success() && text(&out).contains("backup.recipients"), "{}", text(&out));

    // Restore on a "new host": refused without a checkpoint to compare with, then
    // checked against the checkpoint the server published, and the service starts.
    let cp = t.s.app.checkpoint().await.unwrap();
    let saved = keys.path().join("checkpoint.json");
    std::fs::write(&saved, serde_json::to_string(&json!({"checkpoint": cp})).unwrap()).unwrap();
    let host = tempfile::tempdir().unwrap();
    let new_data = fresh_data_dir(&data, host.path());
    let restore = |extra: &[&std::ffi::OsStr]| {
        let mut args = vec![os("restore"), os("--from"), file.as_os_str(), os("--identity"), identity.as_os_str()];
        args.extend_from_slice(extra);
        bg(&new_data, &recipient, &args)
    };
    let out = restore(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("No published checkpoint"), "{}", text(&out));
    assert!(!new_data.join("breakglass.db").exists(), "a refused restore leaves nothing");
    let out = restore(&[os("--checkpoint"), saved.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("contained"), "{}", text(&out));
    let rows = audit_rows(&new_data.join("breakglass.db"));
    assert_eq!(rows.len(), entries + 1);
    let (actor, action, details) = rows.last().unwrap();
    assert_eq!((actor.as_str(), action.as_str()), ("host:cli", "database.restored"));
    assert_eq!(details["entries"], entries as u64);
    assert_eq!(details["checkpoints"][0]["verdict"], "contained");
    assert!(details.get("lost_entries").is_none(), "{details}");
    let out = breakglass(&new_data, &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out));
    // A second restore onto it is refused: nothing is overwritten.
    let out = restore(&[os("--checkpoint"), saved.as_os_str()]);
    assert!(!out.status.success() && text(&out).contains("already exists"), "{}", text(&out));
    let (server, url) = serve(&new_data, &[]);
    let (status, body) = get(&reqwest::Client::new(), format!("{url}/readyz")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    drop(server);
}

#[tokio::test]
async fn a_restore_older_than_a_published_checkpoint_is_refused_and_accepting_the_loss_is_recorded() {
    let mut t = team().await;
    let keys = tempfile::tempdir().unwrap();
    let (identity, recipient) = backup_key(keys.path(), "backup.key");
    let data = t.s.config.data_dir.clone();
    let old = keys.path().join("old.db.age");
    let out = bg(&data, &recipient, &[os("backup"), os("--to"), old.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out));
    let old_entries = audit_rows(&t.s.config.db_path()).len() as u64;

    // After the backup: a release, and a checkpoint that went out to subscribers.
    full_checkout(&mut t, ACCOUNT).await;
    let cp = t.s.app.checkpoint().await.unwrap();
    assert!(cp.size > old_entries);
    let saved = keys.path().join("announcement.json");
    std::fs::write(&saved, json!({"event": "checkout.closed", "checkpoint": cp}).to_string()).unwrap();

    let host = tempfile::tempdir().unwrap();
    let new_data = fresh_data_dir(&data, host.path());
    let restore = |extra: &[&std::ffi::OsStr]| {
        let mut args = vec![os("restore"), os("--from"), old.as_os_str(), os("--identity"), identity.as_os_str()];
        args.extend_from_slice(extra);
        bg(&new_data, &recipient, &args)
    };
    let out = restore(&[os("--checkpoint"), saved.as_os_str()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let lost = cp.size - old_entries;
    assert!(
        text(&out).contains("older than a checkpoint already published")
            && text(&out).contains(&format!("{lost} audited events"))
            && text(&out).contains("--accept-loss"),
        "{}",
        text(&out)
    );
    assert!(!new_data.join("breakglass.db").exists());

    // On the same host the high-water mark outside the database says the same,
    // with no checkpoint file given.
    std::fs::copy(data.join("checkpoint-high-water"), new_data.join("checkpoint-high-water")).unwrap();
    let out = restore(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("older than a checkpoint already published"), "{}", text(&out));

    // A checkpoint signed by another log's key is refused as such.
    let forged = keys.path().join("forged.txt");
    std::fs::write(&forged, cp.note.replace(&cp.size.to_string(), &(cp.size + 1).to_string())).unwrap();
    let out = restore(&[os("--checkpoint"), forged.as_os_str()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("is not a checkpoint signed by this log's key"), "{}", text(&out));

    // Accepting the loss restores, records exactly what was lost, and lets signing resume.
    let out = restore(&[os("--checkpoint"), saved.as_os_str(), os("--accept-loss")]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("LOSS ACCEPTED: {lost}")), "{}", text(&out));
    let db = new_data.join("breakglass.db");
    let rows = audit_rows(&db);
    assert_eq!(rows.len() as u64, old_entries + 1);
    let (_, action, details) = rows.last().unwrap();
    assert_eq!(action, "database.restored");
    assert_eq!(details["lost_entries"], lost);
    assert_eq!(details["entries"], old_entries);
    let verdicts: Vec<&str> =
        details["checkpoints"].as_array().unwrap().iter().map(|c| c["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts, ["lost", "lost"], "the saved announcement and the high-water file: {details}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let severity: String =
        conn.query_row("SELECT severity FROM outbox WHERE event = 'database.restored'", [], |r| r.get(0)).unwrap();
    assert_eq!(severity, "critical");
    drop(conn);
    assert!(!new_data.join("checkpoint-high-water").exists(), "the old mark is moved aside, not deleted");
    assert!(
        std::fs::read_dir(&new_data)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("checkpoint-high-water.before-restore-"))
    );
    let out = breakglass(&new_data, &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out));
    let (server, url) = serve(&new_data, &[]);
    let (status, body) = get(&reqwest::Client::new(), format!("{url}/readyz")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    drop(server);
}

/// `serve` as a process on a free port; stops on drop.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn serve(data: &Path, env: &[(&str, &str)]) -> (Running, String) {
    let mut cmd = breakglass_cmd(data);
    cmd.arg("serve").env("BREAKGLASS_LISTEN", "127.0.0.1:0").stdout(Stdio::piped()).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = rx.recv_timeout(StdDuration::from_secs(30)).expect("serve printed its address within 30 s");
        if let Some(rest) = line.strip_prefix("breakglass listening on ") {
            return (running, rest.split_whitespace().next().unwrap().to_owned());
        }
    }
}

fn scrape_value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.samples.iter().find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).map(
        |s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        },
    )
}

async fn scrape(t: &Team, token: Option<&str>) -> (StatusCode, String) {
    let mut req = reqwest::Client::new().get(t.s.url("/metrics"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

#[tokio::test]
async fn metrics_need_the_token_parse_as_prometheus_text_and_move_when_a_checkout_happens() {
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("metrics.token");
    let token = "m3tr1cs-t0ken-0123456789abcdef0123456789";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = token_file.clone();
    let mut t = team_with(move |c| c.metrics.token_file = path).await;

    let refused = scrape(&t, None).await;
    assert_eq!(refused.0, StatusCode::UNAUTHORIZED, "{}", refused.1);
    assert!(refused.1.contains("metrics_unauthorized"), "{}", refused.1);
    assert_eq!(scrape(&t, Some("m3tr1cs-t0ken-0123456789abcdef012345678X")).await.0, StatusCode::UNAUTHORIZED);
    // A signed-in admin's session is not the token either.
    assert_eq!(t.ada.client.get(t.s.url("/metrics")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);

    let (status, body) = scrape(&t, Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert_eq!(scrape_value(&before, "breakglass_vault_unsealed", &[]), Some(1.0));
    assert_eq!(scrape_value(&before, "breakglass_checkouts", &[("state", "closed")]), Some(0.0));
    let entries_before = scrape_value(&before, "breakglass_audit_entries", &[]).unwrap();
    let posts = |s: &prometheus_parse::Scrape| {
        scrape_value(
            s,
            "breakglass_http_requests_total",
            &[("route", "/api/v1/checkouts"), ("method", "POST"), ("status", "201")],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(posts(&before), 0.0);

    full_checkout(&mut t, ACCOUNT).await;
    let (_, body) = scrape(&t, Some(token)).await;
    let after = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert_eq!(scrape_value(&after, "breakglass_checkouts", &[("state", "closed")]), Some(1.0));
    assert_eq!(posts(&after), 1.0);
    assert!(scrape_value(&after, "breakglass_audit_entries", &[]).unwrap() > entries_before);
    assert!(scrape_value(&after, "breakglass_outbox_undelivered", &[]).unwrap() > 0.0, "no sink: they wait");
    // The latency histogram is labelled by route pattern, never by the checkout id.
    assert!(
        body.contains("breakglass_http_request_duration_seconds_bucket{route=\"/api/v1/checkouts/{id}/close\""),
        "{body}"
    );
    assert!(!body.contains("/api/v1/checkouts/0") && !body.contains("bo@example.com"), "{body}");
    assert_eq!(scrape_value(&after, "breakglass_backup_configured", &[]), Some(0.0));

    // Off unless configured.
    let plain = TestServer::start().await;
    let res = reqwest::Client::new().get(plain.url("/metrics")).bearer_auth(token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn scheduled_backups_run_when_due_keep_the_newest_and_a_failure_is_announced_once_an_hour() {
    use breakglass::app::backup::BackupStep;
    let keys = tempfile::tempdir().unwrap();
    let (identity, recipient) = backup_key(keys.path(), "backup.key");
    let dir = keys.path().join("scheduled");
    let (d, r) = (dir.clone(), recipient.clone());
    let s = TestServer::start_with(move |c| {
        c.backup.dir = d;
        c.backup.recipients = vec![r];
        c.backup.keep = 2;
    })
    .await;
    let made = |step: BackupStep| match step {
        BackupStep::Made { path, pruned } => (path, pruned),
        other => panic!("expected a backup, got {other:?}"),
    };
    let (first, pruned) = made(s.app.run_backup_due().await.unwrap());
    assert_eq!(pruned, 0);
    assert_eq!(first.file_name().unwrap(), "breakglass-20261121T090000Z.db.age");
    assert_eq!(s.app.run_backup_due().await.unwrap(), BackupStep::NotDue);
    for hours in [24, 24] {
        s.clock.advance(time::Duration::hours(hours));
        made(s.app.run_backup_due().await.unwrap());
    }
    let names: Vec<String> = breakglass::app::backup::scheduled_backups(&dir)
        .iter()
        .map(|(_, p)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["breakglass-20261123T090000Z.db.age", "breakglass-20261122T090000Z.db.age"], "keep = 2");
    let newest = dir.join(&names[0]);
    let out = bg(
        &s.config.data_dir,
        &recipient,
        &[os("backup"), os("verify"), newest.as_os_str(), os("--identity"), identity.as_os_str()],
    );
    assert!(out.status.success(), "{}", text(&out));

    // A backup that cannot be written: recorded and announced, then retried an hour later.
    let blocked = keys.path().join("not-a-dir");
    std::fs::write(&blocked, b"a file where the backup directory should be").unwrap();
    let mut config = s.config.clone();
    config.backup.dir = blocked.join("backups");
    let app = breakglass::app::App::new(
        breakglass::store::Db::open(&s.config.db_path()).unwrap(),
        std::sync::Arc::new(s.clock.clone()),
        std::sync::Arc::new(config),
        None,
    )
    .unwrap();
    assert!(matches!(app.run_backup_due().await.unwrap(), BackupStep::Failed { .. }));
    assert_eq!(app.run_backup_due().await.unwrap(), BackupStep::NotDue, "not again within the hour");
    s.clock.advance(time::Duration::minutes(61));
    assert!(matches!(app.run_backup_due().await.unwrap(), BackupStep::Failed { .. }));
    let conn = s.db();
    let rows: Vec<(String, String)> = conn
        .prepare("SELECT o.severity, a.details FROM outbox o JOIN audit_log a ON a.seq = o.audit_seq WHERE o.event = 'backup.failed'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].0, "high");
    assert!(rows[0].1.contains("not-a-dir"), "{}", rows[0].1);
}

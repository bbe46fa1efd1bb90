//! Reliability campaigns (docs/reliability.md; `tools/soak` runs them long):
//!
//! - kill -9: the real binary on a temp data dir, concurrent two-person checkouts and
//!   deposits over HTTP (software authenticators), `kill -9` at random moments, restart,
//!   `audit verify`, and every write that was acknowledged (a 2xx answer) must be there;
//!   every announced event must have exactly one outbox row;
//! - disk full: the server's connection limited with `PRAGMA max_page_count` (as
//!   `hardening::a_full_disk…`) switched on and off under concurrent writes: refused
//!   writes leave nothing, acknowledged ones are all there, the chain verifies.
//!
//! Bounded by `SOAK_KILLS` (default 20) and `SOAK_DISK_ROUNDS` (default 20); the random
//! moments come from `SOAK_SEED` (default fixed), never from the clock.
use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration as StdDuration, Instant},
};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    checkouts::PASSWORD,
    ops::{Remote, serve},
    support::*,
};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// xorshift64*: reproducible random moments from a seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

const ORIGIN: &str = "http://localhost:8080";
const STATES: [&str; 4] = ["pending", "approved", "released", "closed"];

fn rank(state: &str) -> Option<usize> {
    STATES.iter().position(|s| *s == state)
}

/// What the clients were told succeeded.
#[derive(Default)]
struct Acked {
    /// checkout id → the furthest state a 2xx answer reported.
    checkouts: BTreeMap<String, usize>,
    /// deposit versions of the deposit account.
    deposits: Vec<u64>,
}

struct Shared {
    base: RwLock<String>,
    stop: AtomicBool,
    acked: Mutex<Acked>,
    errors: AtomicU64,
}

impl Shared {
    fn remote(&self) -> Remote {
        Remote { base: self.base.read().unwrap().clone(), origin: url::Url::parse(ORIGIN).unwrap() }
    }

    fn ack(&self, id: &str, state: &str) {
        let r = rank(state).unwrap();
        let mut a = self.acked.lock().unwrap();
        let e = a.checkouts.entry(id.to_owned()).or_insert(r);
        *e = (*e).max(r);
    }
}

async fn send(req: reqwest::RequestBuilder) -> Option<(StatusCode, Value)> {
    let res = req.timeout(StdDuration::from_secs(10)).send().await.ok()?;
    let status = res.status();
    let body = res.json().await.ok()?;
    Some((status, body))
}

/// One WebAuthn step: start, sign with the person's key, finish.
async fn ceremony(
    sh: &Shared,
    p: &mut Person,
    start: String,
    finish: String,
    extra: Value,
) -> Option<(StatusCode, Value)> {
    use webauthn_authenticator_rs::WebauthnAuthenticator;
    let r = sh.remote();
    let (status, body) = send(p.client.post(r.url(&start)).json(&json!({}))).await?;
    if status != StatusCode::OK {
        return Some((status, body));
    }
    let start: AuthStart = serde_json::from_value(body).ok()?;
    let credential = p.key.do_authentication(r.origin.clone(), start.options).ok()?;
    let mut b = json!({"ceremony_id": start.ceremony_id, "credential": credential});
    if let (Some(b), Some(extra)) = (b.as_object_mut(), extra.as_object()) {
        b.extend(extra.clone());
    }
    send(p.client.post(r.url(&finish)).json(&b)).await
}

/// Checkouts of one account, round after round, picking up after each restart from
/// the state the server reports.
async fn checkout_worker(sh: Arc<Shared>, account: String, mut bo: Person, mut cy: Person) -> u64 {
    let mut current: Option<String> = None;
    let mut closed = 0;
    while !sh.stop.load(Ordering::Relaxed) {
        let r = sh.remote();
        let step = async {
            match current.clone() {
                None => {
                    let (status, body) = send(bo.client.post(r.url("/api/v1/checkouts")).json(
                        &json!({"account_id": account, "reason": "Soak: billing lockout", "duration_minutes": 30}),
                    ))
                    .await?;
                    if status == StatusCode::CREATED {
                        let id = body["id"].as_str()?.to_owned();
                        sh.ack(&id, "pending");
                        current = Some(id);
                    } else if status != StatusCode::CONFLICT {
                        eprintln!("soak: request answered {status} {body}");
                        return None;
                    } else {
                        // An open checkout whose creation was not acknowledged: carry on with it.
                        for state in ["pending", "approved", "released"] {
                            let (_, body) = send(
                                bo.client.get(r.url(&format!("/api/v1/checkouts?account={account}&state={state}"))),
                            )
                            .await?;
                            if let Some(id) = body["checkouts"].get(0).and_then(|c| c["id"].as_str()) {
                                current = Some(id.to_owned());
                            }
                        }
                    }
                }
                Some(id) => {
                    let (status, body) = send(bo.client.get(r.url(&format!("/api/v1/checkouts/{id}")))).await?;
                    if status != StatusCode::OK {
                        return None;
                    }
                    match body["state"].as_str()? {
                        "pending" => {
                            let (status, body) = ceremony(
                                &sh,
                                &mut cy,
                                format!("/api/v1/checkouts/{id}/approvals/start"),
                                format!("/api/v1/checkouts/{id}/approvals/finish"),
                                json!({"decision": "approve", "comment": "soak"}),
                            )
                            .await?;
                            if status == StatusCode::OK && body["state"] == "approved" {
                                sh.ack(&id, "approved");
                            }
                        }
                        "approved" => {
                            let (status, body) = ceremony(
                                &sh,
                                &mut bo,
                                format!("/api/v1/checkouts/{id}/release/start"),
                                format!("/api/v1/checkouts/{id}/release/finish"),
                                json!({}),
                            )
                            .await?;
                            if status == StatusCode::OK {
                                assert_eq!(body["password"], PASSWORD, "{body}");
                                sh.ack(&id, "released");
                            }
                        }
                        "released" => {
                            let (status, _) = send(
                                bo.client
                                    .post(r.url(&format!("/api/v1/checkouts/{id}/close")))
                                    .json(&json!({"note": "soak"})),
                            )
                            .await?;
                            if status == StatusCode::OK {
                                sh.ack(&id, "closed");
                                closed += 1;
                                current = None;
                            }
                        }
                        _ => current = None,
                    }
                }
            }
            Some(())
        };
        if step.await.is_none() {
            sh.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(StdDuration::from_millis(30)).await;
        }
    }
    closed
}

/// Deposits of new recovery notes, one after another.
async fn deposit_worker(sh: Arc<Shared>, account: String, ada: Person) {
    let mut n = 0u64;
    while !sh.stop.load(Ordering::Relaxed) {
        n += 1;
        let r = sh.remote();
        let got = send(
            ada.client
                .put(r.url(&format!("/api/v1/accounts/{account}/secrets/recovery_notes")))
                .json(&json!({"value": format!("soak notes {n}")})),
        )
        .await;
        match got {
            Some((StatusCode::CREATED, body)) => {
                sh.acked.lock().unwrap().deposits.push(body["version"].as_u64().unwrap())
            }
            _ => {
                sh.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(StdDuration::from_millis(30)).await;
            }
        }
    }
}

/// Every acknowledged write is in the database; every announced event has one outbox row.
/// Returns (acknowledged writes checked, lost, announcements lost, announcements duplicated).
fn check_after_kill(db: &Path, sh: &Shared, deposit_account: &str) -> (usize, Vec<String>, i64, i64) {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let acked = sh.acked.lock().unwrap();
    let mut lost = Vec::new();
    for (id, want) in &acked.checkouts {
        let state: Option<String> =
            conn.query_row("SELECT state FROM checkouts WHERE id = ?1", [id], |r| r.get(0)).ok();
        match state.as_deref().and_then(rank) {
            Some(have) if have >= *want => {}
            _ => lost.push(format!("checkout {id}: acknowledged {}, found {state:?}", STATES[*want])),
        }
    }
    for v in &acked.deposits {
        let found: i64 = conn
            .query_row(
                "SELECT count(*) FROM secret_versions WHERE account_id = ?1 AND kind = 'recovery_notes' AND version = ?2",
                rusqlite::params![deposit_account, *v as i64],
                |r| r.get(0),
            )
            .unwrap();
        if found != 1 {
            lost.push(format!("deposit version {v}"));
        }
    }
    let missing: i64 = conn
        .query_row(
            "SELECT count(*) FROM audit_log a WHERE a.action IN ('checkout.requested', 'checkout.released', 'secret.deposited') \
             AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.audit_seq = a.seq)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let duplicated: i64 = conn
        .query_row(
            "SELECT count(*) FROM (SELECT audit_seq FROM outbox GROUP BY audit_seq HAVING count(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (acked.checkouts.values().sum::<usize>() + acked.checkouts.len() + acked.deposits.len(), lost, missing, duplicated)
}

fn write_figures(name: &str, figures: &str) {
    println!("{figures}");
    let e2e = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/e2e"));
    let _ = std::fs::create_dir_all(&e2e);
    let _ = std::fs::write(e2e.join(name), figures);
}

#[tokio::test]
async fn soak_kill_9_under_concurrent_checkouts_and_deposits_loses_no_acknowledged_write() {
    let kills = env_num("SOAK_KILLS", 20);
    let seed = env_num("SOAK_SEED", 0x5eed_b1a5);
    let mut rng = Rng(seed | 1);
    let host = tempfile::tempdir().unwrap();
    let data = host.path().join("data");
    let db = data.join("breakglass.db");
    let out = breakglass(&data, &["init"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let env = [("BREAKGLASS_ORIGIN", ORIGIN), ("BREAKGLASS_SECURITY_COOLING_OFF_HOURS", "0")];
    let (mut server, base) = serve(&data, &env);
    let remote = Remote { base: base.clone(), origin: url::Url::parse(ORIGIN).unwrap() };

    // Two accounts with checkouts running concurrently (two people each), a third taking deposits.
    let ada = remote.enrol(&data, &["admin", "custodian"], "Ada Admin", "ada@example.com").await;
    let accounts = ["111111111111", "222222222222", "333333333333"];
    for a in accounts {
        let (status, body) = post(
            &ada.client,
            remote.url("/api/v1/accounts"),
            json!({"account_id": a, "alias": format!("soak-{a}"), "root_email": "root@example.com"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        for (kind, value) in [("root_password", PASSWORD), ("totp_seed", AWS_SEED)] {
            let (status, body) =
                put(&ada.client, remote.url(&format!("/api/v1/accounts/{a}/secrets/{kind}")), json!({"value": value}))
                    .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    }
    let mut pairs = Vec::new();
    for i in 0..2 {
        let bo = remote.enrol(&data, &["custodian"], &format!("Req {i}"), &format!("req{i}@example.com")).await;
        let cy = remote.enrol(&data, &["custodian"], &format!("Appr {i}"), &format!("appr{i}@example.com")).await;
        pairs.push((bo, cy));
    }
    let sh = Arc::new(Shared {
        base: RwLock::new(base),
        stop: AtomicBool::new(false),
        acked: Mutex::new(Acked::default()),
        errors: AtomicU64::new(0),
    });
    let mut workers = Vec::new();
    for (i, (bo, cy)) in pairs.into_iter().enumerate() {
        workers.push(tokio::spawn(checkout_worker(sh.clone(), accounts[i].to_owned(), bo, cy)));
    }
    let depositor = tokio::spawn(deposit_worker(sh.clone(), accounts[2].to_owned(), ada));

    let started = Instant::now();
    let mut restarts = Vec::new();
    let (mut lost_total, mut missing_total, mut duplicated_total, mut checked) = (Vec::new(), 0, 0, 0);
    for kill in 0..kills {
        tokio::time::sleep(StdDuration::from_millis(150 + rng.below(900))).await;
        // kill -9 at whatever moment this is.
        drop(server);
        let out = breakglass(&data, &["audit", "verify"]);
        assert!(
            out.status.success(),
            "kill {kill}: the audit chain does not verify: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let (n, lost, missing, duplicated) = check_after_kill(&db, &sh, accounts[2]);
        checked = n;
        lost_total.extend(lost.into_iter().map(|l| format!("after kill {kill}: {l}")));
        missing_total += missing;
        duplicated_total += duplicated;
        let t = Instant::now();
        let (s, base) = serve(&data, &env);
        let client = reqwest::Client::new();
        loop {
            if let Ok(res) = client.get(format!("{base}/readyz")).send().await
                && res.status() == StatusCode::OK
            {
                break;
            }
            assert!(t.elapsed() < StdDuration::from_secs(30), "not ready 30 s after restart {kill}");
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
        restarts.push(t.elapsed());
        *sh.base.write().unwrap() = base;
        server = s;
    }
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    sh.stop.store(true, Ordering::Relaxed);
    let mut closed = 0;
    for w in workers {
        closed += w.await.unwrap();
    }
    depositor.await.unwrap();
    drop(server);
    let out = breakglass(&data, &["audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let (n, lost, missing, duplicated) = check_after_kill(&db, &sh, accounts[2]);
    checked = checked.max(n);
    lost_total.extend(lost);
    missing_total += missing;
    duplicated_total += duplicated;
    let entries: i64 =
        rusqlite::Connection::open(&db).unwrap().query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0)).unwrap();
    let deposits = sh.acked.lock().unwrap().deposits.len();
    restarts.sort();
    let figures = format!(
        "soak kill -9 (seed {seed:#x}): {kills} kills survived in {:.1} s; {closed} checkouts closed and {deposits} deposits acknowledged \
         ({checked} acknowledged writes checked after every kill); acknowledged writes lost: {}; announcements lost: {missing_total}, \
         duplicated: {duplicated_total} (outbox rows vs announced entries); audit log {entries} entries, verified after every kill; \
         restart to /readyz 200: median {:.0} ms, max {:.0} ms; failed or cut requests retried: {}\n",
        started.elapsed().as_secs_f64(),
        lost_total.len(),
        restarts.get(restarts.len() / 2).map(|d| d.as_secs_f64() * 1000.0).unwrap_or_default(),
        restarts.last().map(|d| d.as_secs_f64() * 1000.0).unwrap_or_default(),
        sh.errors.load(Ordering::Relaxed),
    );
    write_figures("soak-kill9.txt", &figures);
    assert!(lost_total.is_empty(), "acknowledged writes lost: {lost_total:#?}");
    assert_eq!((missing_total, duplicated_total), (0, 0), "announcements lost or duplicated");
    assert!(closed > 0 && deposits > 0, "the campaign made progress: {figures}");
}

#[tokio::test]
async fn soak_disk_full_refuses_writes_whole_and_keeps_every_acknowledged_one() {
    let rounds = env_num("SOAK_DISK_ROUNDS", 20);
    let s = TestServer::start().await;
    let ada = s.admin().await;
    let account = "444444444444";
    let got = post(
        &ada.client,
        s.url("/api/v1/accounts"),
        json!({"account_id": account, "alias": "disk", "root_email": "root@example.com"}),
    )
    .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    let (mut acked, mut refused, mut other) = (Vec::new(), 0u64, Vec::new());
    let started = Instant::now();
    for round in 0..rounds {
        // Full for this round: the database may not grow past its current size.
        s.app.db.with(|conn| {
            let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0)).unwrap();
            conn.pragma_update(None, "max_page_count", pages).unwrap();
        });
        let mut batch = Vec::new();
        for i in 0..8 {
            let client = ada.client.clone();
            let url = s.url(format!("/api/v1/accounts/{account}/secrets/recovery_notes"));
            // Big enough to need new pages once the free ones are used.
            let value = format!("round {round} write {i} {}", "n".repeat(3000));
            batch.push(tokio::spawn(async move { put(&client, url, json!({"value": value})).await }));
        }
        for b in batch {
            match b.await.unwrap() {
                (StatusCode::CREATED, body) => acked.push(body["version"].as_u64().unwrap()),
                (StatusCode::INSUFFICIENT_STORAGE, body) if body["error"]["code"] == "storage_full" => refused += 1,
                (status, body) => other.push(format!("{status} {body}")),
            }
        }
        // Room again; the next writes succeed.
        s.app.db.with(|conn| conn.pragma_update(None, "max_page_count", 1_000_000_000).unwrap());
        let (status, body) = put(
            &ada.client,
            s.url(format!("/api/v1/accounts/{account}/secrets/recovery_notes")),
            json!({"value": format!("after round {round}")}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "writes resume once there is room: {body}");
        acked.push(body["version"].as_u64().unwrap());
    }
    let conn = s.db();
    let versions: Vec<u64> = conn
        .prepare(
            "SELECT version FROM secret_versions WHERE account_id = ?1 AND kind = 'recovery_notes' ORDER BY version",
        )
        .unwrap()
        .query_map([account], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|v| v.unwrap() as u64)
        .collect();
    let entries: i64 = conn
        .query_row(
            "SELECT count(*) FROM audit_log WHERE action = 'secret.deposited' AND subject = ?1",
            [format!("account:{account}")],
            |r| r.get(0),
        )
        .unwrap();
    acked.sort();
    let lost: Vec<&u64> = acked.iter().filter(|v| !versions.contains(v)).collect();
    let out = breakglass(&s.config.data_dir, &["audit", "verify"]);
    let figures = format!(
        "soak disk full (PRAGMA max_page_count on the server's connection): {rounds} rounds in {:.1} s; {} writes acknowledged, {refused} refused with 507 storage_full, {} other answers; acknowledged writes lost: {}; stored versions {} = audit entries {entries}; audit verify {}\n",
        started.elapsed().as_secs_f64(),
        acked.len(),
        other.len(),
        lost.len(),
        versions.len(),
        if out.status.success() { "ok" } else { "FAILED" },
    );
    write_figures("soak-disk-full.txt", &figures);
    assert!(other.is_empty(), "{other:?}");
    assert!(lost.is_empty(), "acknowledged deposits lost: {lost:?}");
    assert_eq!(versions, acked, "nothing refused was stored; nothing stored was unacknowledged");
    assert_eq!(versions.len() as i64, entries, "no deposit without its audit entry");
    assert!(refused > 0, "the disk was full at least once: {figures}");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

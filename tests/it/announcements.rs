//! Announcements against a real SNS-compatible server (moto) on loopback: order,
//! attributes, signed checkpoints, outages and restarts, rewritten logs.
use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration as StdDuration,
};

use aws_sdk_sns::config::{BehaviorVersion, Credentials, Region};
use breakglass::{
    app::{App, announce::Delivery, bootstrap},
    crypto::checkpoint,
    notify::SnsSink,
    store::Db,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::Duration;

use crate::{checkouts::*, support::*};

/// A moto server on a free loopback port, stopped on drop.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server must be installed for the SNS tests: pip install 'moto[server]' (.ci/run does)");
        let moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}") };
        for _ in 0..150 {
            if reqwest::get(&moto.endpoint).await.is_ok() {
                return moto;
            }
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
        panic!("moto_server did not answer on port {port} within 15 s");
    }

    pub fn client(&self) -> aws_sdk_sns::Client {
        sns_client(&self.endpoint)
    }
}

pub fn sns_client(endpoint: &str) -> aws_sdk_sns::Client {
    let conf = aws_sdk_sns::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "static"))
        .build();
    aws_sdk_sns::Client::from_conf(conf)
}

/// An HTTP endpoint subscribed to a fresh topic; collects what SNS delivers.
pub struct Subscriber {
    pub topic_arn: String,
    pub received: Arc<Mutex<Vec<Value>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn on(moto: &Moto, topic: &str) -> Self {
        Self::filtered(moto, topic, None).await
    }

    /// Subscribe with an SNS filter policy on the message attributes.
    pub async fn filtered(moto: &Moto, topic: &str, filter_policy: Option<Value>) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let app = axum::Router::new().route(
            "/sns",
            axum::routing::post(move |body: String| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(serde_json::from_str::<Value>(&body).unwrap_or(Value::String(body)));
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let client = moto.client();
        let topic_arn = client.create_topic().name(topic).send().await.unwrap().topic_arn().unwrap().to_owned();
        let mut req = client.subscribe().topic_arn(&topic_arn).protocol("http").endpoint(format!("http://{addr}/sns"));
        if let Some(policy) = filter_policy {
            req = req.attributes("FilterPolicy", policy.to_string());
        }
        req.send().await.unwrap();
        Self { topic_arn, received, _server: server }
    }

    /// The published messages (parsed), in arrival order, with attributes and subject.
    pub fn messages(&self) -> Vec<(Value, Value, String)> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|n| n["Type"] == "Notification")
            .map(|n| {
                let body: Value = serde_json::from_str(n["Message"].as_str().unwrap()).unwrap();
                (body, n["MessageAttributes"].clone(), n["Subject"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    }
}

fn topic_name(tag: &str) -> String {
    format!("breakglass-{tag}-{}", uuid::Uuid::new_v4().simple())
}

async fn full_checkout(t: &mut Team) -> String {
    let id = request_id(&t.s, &t.bo, ACCOUNT).await;
    assert_eq!(decide(&t.s, &mut t.cy, &id, "approve").await.1["state"], "approved");
    let (status, rel) = reveal(&t.s, &mut t.bo, &id).await;
    assert_eq!(status, StatusCode::OK, "{rel}");
    let (status, _) =
        post(&t.bo.client, t.s.url(format!("/api/v1/checkouts/{id}/close")), json!({"note": "done"})).await;
    assert_eq!(status, StatusCode::OK);
    id
}

const CHECKOUT_EVENTS: [&str; 6] = [
    "checkout.requested",
    "checkout.approval_recorded",
    "checkout.approved",
    "checkout.released",
    "checkout.revealed",
    "checkout.closed",
];

#[tokio::test]
async fn a_full_checkout_is_announced_in_order_with_attributes_and_a_verifiable_checkpoint() {
    let moto = Moto::start().await;
    let topic = topic_name("flow");
    let sub = Subscriber::on(&moto, &topic).await;
    // Subscribers that filter on the message attributes, as SIEMs and pagers do.
    let critical = Subscriber::filtered(&moto, &topic, Some(json!({"severity": ["critical"]}))).await;
    let this_account = Subscriber::filtered(
        &moto,
        &topic,
        Some(json!({"account_id": [ACCOUNT], "event": ["checkout.requested", "checkout.closed"]})),
    )
    .await;
    let mut t = team().await;
    let id = full_checkout(&mut t).await;
    let app = t.s.app.clone().with_sink(SnsSink::with_client(moto.client(), &sub.topic_arn));
    let delivered = app.deliver_due().await.unwrap();
    let rows: i64 = t.s.db().query_row("SELECT count(*) FROM outbox", [], |r| r.get(0)).unwrap();
    assert_eq!(delivered as i64, rows, "everything in the outbox went out");
    let undelivered: i64 = t
        .s
        .db()
        .query_row("SELECT count(*) FROM outbox WHERE state != 'delivered' OR sns_message_id IS NULL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(undelivered, 0);

    let messages = sub.messages();
    assert_eq!(messages.len() as i64, rows, "one SNS message per event");
    let for_checkout: Vec<&(Value, Value, String)> =
        messages.iter().filter(|(m, _, _)| m["checkout"]["id"] == id.as_str()).collect();
    let events: Vec<&str> = for_checkout.iter().map(|(m, _, _)| m["event"].as_str().unwrap()).collect();
    assert_eq!(events, CHECKOUT_EVENTS, "exactly these, in this order");
    let (vname, vkey) = checkpoint::parse_verifier_key(&app.log_verifier_key().unwrap()).unwrap();
    let mut last_seq = 0;
    for (m, _, subject) in &messages {
        assert_eq!(m["schema"], "breakglass.announcement/v1");
        assert!(subject.starts_with("[breakglass] ") && subject.len() <= 100, "{subject}");
        let seq = m["audit"]["seq"].as_u64().unwrap();
        assert!(seq > last_seq, "announcements follow the log's order");
        last_seq = seq;
        let cp = checkpoint::verify(m["checkpoint"]["note"].as_str().unwrap(), &vname, &vkey)
            .expect("checkpoint signature verifies");
        assert!(cp.size >= seq, "the checkpoint covers the event it travels with");
    }
    // The attributes `event`, `severity` and `account_id` drive filter policies.
    let events_of = |s: &Subscriber| {
        s.messages().iter().map(|(m, _, _)| m["event"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(events_of(&critical), ["checkout.released"]);
    assert_eq!(events_of(&this_account), ["checkout.requested", "checkout.closed"]);
    let released = for_checkout.iter().find(|(m, _, _)| m["event"] == "checkout.released").unwrap();
    assert_eq!(released.0["severity"], "critical");
    assert!(released.0["summary"].as_str().unwrap().contains("ROOT CREDENTIALS RELEASED"), "{}", released.0);
    assert_eq!(released.0["checkout"]["requester"], "Bo Requester <bo@example.com>");

    // Nothing secret, ever.
    let all = sub.received.lock().unwrap().iter().map(Value::to_string).collect::<Vec<_>>().join("\n");
    assert!(!all.contains(PASSWORD), "no password");
    assert!(!all.contains(AWS_SEED) && !all.to_lowercase().contains(&AWS_SEED.to_lowercase()), "no seed");
    assert!(!all.contains("otpauth"), "no otpauth URI");
    let (_, c) = get(&t.bo.client, t.s.url(format!("/api/v1/checkouts/{id}"))).await;
    assert!(c["announcements"].as_array().unwrap().iter().all(|a| a["state"] == "delivered"), "{c}");
    assert_eq!(c["announcements"].as_array().unwrap().len(), CHECKOUT_EVENTS.len());
}

/// A fresh `App` on the same database: what a restarted server sees.
fn restarted(s: &TestServer) -> App {
    let vault = bootstrap::unseal_vault(&s.config.db_path(), &s.config, &mut bootstrap::FileOnly(&s.config)).unwrap();
    App::new(
        Db::open(&s.config.db_path()).unwrap(),
        std::sync::Arc::new(s.clock.clone()),
        std::sync::Arc::new(s.config.clone()),
        Some(vault),
    )
    .unwrap()
}

#[tokio::test]
async fn with_sns_down_the_checkout_still_works_and_after_a_restart_everything_arrives_in_order() {
    let mut t = team().await;
    let down = t
        .s
        .app
        .clone()
        .with_sink(SnsSink::with_client(sns_client("http://127.0.0.1:9"), "arn:aws:sns:us-east-1:123456789012:down"));
    let id = full_checkout(&mut t).await; // never waits for SNS
    match down.deliver_one().await.unwrap() {
        Delivery::Retrying { attempts: 1, .. } => {}
        other => panic!("expected a retry, got {other:?}"),
    }
    assert!(
        matches!(down.deliver_one().await.unwrap(), Delivery::NotDue { .. }),
        "backing off, and later messages wait behind it"
    );
    let pending: i64 =
        t.s.db().query_row("SELECT count(*) FROM outbox WHERE state = 'pending'", [], |r| r.get(0)).unwrap();
    let total: i64 = t.s.db().query_row("SELECT count(*) FROM outbox", [], |r| r.get(0)).unwrap();
    assert_eq!(pending, total, "nothing lost, nothing skipped");
    let (_, c) = get(&t.bo.client, t.s.url(format!("/api/v1/checkouts/{id}"))).await;
    assert_eq!(c["state"], "closed");
    assert!(c["announcements"].as_array().unwrap().iter().all(|a| a["state"] == "pending"), "{c}");

    // Restart, with SNS back.
    let moto = Moto::start().await;
    let sub = Subscriber::on(&moto, &topic_name("outage")).await;
    let app = restarted(&t.s).with_sink(SnsSink::with_client(moto.client(), &sub.topic_arn));
    t.s.clock.advance(Duration::minutes(1));
    app.deliver_due().await.unwrap();
    let messages = sub.messages();
    assert_eq!(messages.len() as i64, total, "every event delivered");
    let seqs: Vec<u64> = messages.iter().map(|(m, _, _)| m["audit"]["seq"].as_u64().unwrap()).collect();
    let mut sorted = seqs.clone();
    sorted.sort();
    assert_eq!(seqs, sorted, "in order");
    let events: Vec<&str> = messages
        .iter()
        .filter(|(m, _, _)| m["checkout"]["id"] == id.as_str())
        .map(|(m, _, _)| m["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, CHECKOUT_EVENTS);
}

#[tokio::test]
async fn a_message_that_exhausts_its_attempts_is_failed_visible_and_retried_on_demand() {
    let t = team_with(|c| c.sns.max_attempts = 2).await;
    let down = t
        .s
        .app
        .clone()
        .with_sink(SnsSink::with_client(sns_client("http://127.0.0.1:9"), "arn:aws:sns:us-east-1:123456789012:down"));
    assert!(matches!(down.deliver_one().await.unwrap(), Delivery::Retrying { .. }));
    t.s.clock.advance(Duration::minutes(5));
    assert!(matches!(down.deliver_one().await.unwrap(), Delivery::Failed { .. }));
    // It keeps its place: nothing behind it overtakes it.
    assert!(matches!(down.deliver_one().await.unwrap(), Delivery::NotDue { .. }), "later messages wait behind it");
    let delivered: i64 =
        t.s.db().query_row("SELECT count(*) FROM outbox WHERE state = 'delivered'", [], |r| r.get(0)).unwrap();
    assert_eq!(delivered, 0);
    let status = t.s.app.outbox_status().await.unwrap();
    assert_eq!(status.failed, 1);
    let (_, ready) = get(&reqwest::Client::new(), t.s.url("/readyz")).await;
    assert_eq!(ready["outbox"]["failed"], 1, "{ready}");
    assert_eq!(ready["outbox"]["sink"], "no_sink", "the server itself has no topic in this test");
    let (_, list) = get(&t.ada.client, t.s.url("/api/v1/outbox?state=failed")).await;
    assert_eq!(list["messages"].as_array().unwrap().len(), 1, "{list}");
    assert!(list["messages"][0]["last_error"].as_str().unwrap().len() > 3);
    // `breakglass outbox retry` does this:
    assert_eq!(t.s.app.retry_failed().await.unwrap(), 1);
    let moto = Moto::start().await;
    let sub = Subscriber::on(&moto, &topic_name("retry")).await;
    let up = t.s.app.clone().with_sink(SnsSink::with_client(moto.client(), &sub.topic_arn));
    up.deliver_due().await.unwrap();
    assert_eq!(t.s.app.outbox_status().await.unwrap().undelivered, 0);
    assert_eq!(
        sub.messages().len() as i64,
        t.s.db().query_row::<i64, _, _>("SELECT count(*) FROM outbox", [], |r| r.get(0)).unwrap()
    );
}

#[tokio::test]
async fn without_a_topic_the_outbox_fills_and_says_no_sink() {
    let t = team().await;
    assert_eq!(t.s.app.deliver_one().await.unwrap(), Delivery::NoSink);
    let status = t.s.app.outbox_status().await.unwrap();
    assert_eq!(status.sink, "no_sink");
    assert!(status.undelivered > 5, "invites, enrolments, accounts, deposits are all waiting");
    assert!(status.oldest_undelivered_at.is_some());
}

/// Rewrite the log from `from` on, with hashes recomputed: a chain that verifies alone.
fn rewrite_log(db: &std::path::Path, from: u64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;").unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT seq, at, actor, action, subject, details, prev_hash FROM audit_log WHERE seq >= ?1 ORDER BY seq",
        )
        .unwrap();
    let rows: Vec<(u64, String, String, String, String, String, String)> = stmt
        .query_map([from as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut prev = [0u8; 32];
    hex::decode_to_slice(&rows[0].6, &mut prev).unwrap();
    for (i, (seq, at, actor, action, subject, details, _)) in rows.into_iter().enumerate() {
        let actor = if i == 0 { "custodian:someone-else".to_owned() } else { actor };
        let h = breakglass::domain::audit::entry_hash(seq, &prev, &at, &actor, &action, &subject, &details);
        conn.execute(
            "UPDATE audit_log SET actor = ?2, prev_hash = ?3, hash = ?4 WHERE seq = ?1",
            rusqlite::params![seq as i64, actor, hex::encode(prev), hex::encode(h)],
        )
        .unwrap();
        prev = h;
    }
}

#[tokio::test]
async fn a_log_rewritten_after_a_checkpoint_fails_verification_against_it() {
    let t = team().await;
    let (status, cp) = get(&t.ada.client, t.s.url("/api/v1/audit/checkpoint")).await;
    assert_eq!(status, StatusCode::OK, "{cp}");
    let size = cp["size"].as_u64().unwrap();
    let file = t.s.dir.path().join("checkpoint.json");
    std::fs::write(&file, cp.to_string()).unwrap();
    let au = t.s.enrol(&[breakglass::domain::Role::Auditor], "Au", "au@example.com").await;
    assert_error(
        &get(&t.bo.client, t.s.url("/api/v1/audit/checkpoint")).await,
        StatusCode::FORBIDDEN,
        "forbidden_role",
    );
    assert_eq!(get(&au.client, t.s.url("/api/v1/audit/checkpoint")).await.0, StatusCode::OK);

    let snapshot = |name: &str| {
        let dir = t.s.dir.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        t.s.db().execute("VACUUM INTO ?1", [dir.join("breakglass.db").to_str().unwrap()]).unwrap();
        dir
    };
    let args = ["audit", "verify", "--checkpoint", file.to_str().unwrap()];
    let clean = snapshot("clean");
    let out = breakglass(&clean, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("checkpoint ok: the log contains the {size} entries"))
    );

    // A rewrite that keeps the chain self-consistent: `verify` alone passes, the checkpoint does not.
    let rewritten = snapshot("rewritten");
    rewrite_log(&rewritten.join("breakglass.db"), 3);
    // The checkpoint the database keeps about itself already contradicts the rewrite…
    let out = breakglass(&rewritten, &["audit", "verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&format!("seq {size}: the entry at seq {size} does not have the head")), "{stdout}");
    // …so the attacker wipes those too: then the chain alone cannot tell, the outside copy can.
    rusqlite::Connection::open(rewritten.join("breakglass.db"))
        .unwrap()
        .execute("DELETE FROM checkpoints", [])
        .unwrap();
    assert!(breakglass(&rewritten, &["audit", "verify"]).status.success(), "the chain alone cannot tell");
    let out = breakglass(&rewritten, &args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rewritten after this checkpoint"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Truncation below the checkpoint's size.
    let truncated = snapshot("truncated");
    let conn = rusqlite::Connection::open(truncated.join("breakglass.db")).unwrap();
    conn.execute_batch("DROP TRIGGER audit_log_no_delete;").unwrap();
    conn.execute("DELETE FROM audit_log WHERE seq >= ?1", [size as i64 - 1]).unwrap();
    drop(conn);
    let out = breakglass(&truncated, &args);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("truncated"), "{}", String::from_utf8_lossy(&out.stdout));

    // A checkpoint verified with the wrong key is refused.
    let other = checkpoint::verifier_key("evil.example/breakglass/audit", &[7u8; 32]);
    let out = breakglass(&clean, &["audit", "verify", "--checkpoint", file.to_str().unwrap(), "--log-key", &other]);
    assert_eq!(out.status.code(), Some(1));

    // The service itself refuses to sign anything inconsistent with what it signed.
    let mut cfg = t.s.config.clone();
    cfg.data_dir = rewritten.clone();
    let vault =
        bootstrap::unseal_vault(&rewritten.join("breakglass.db"), &t.s.config, &mut bootstrap::FileOnly(&t.s.config))
            .unwrap();
    let app = App::new(
        Db::open(&rewritten.join("breakglass.db")).unwrap(),
        std::sync::Arc::new(t.s.clock.clone()),
        std::sync::Arc::new(t.s.config.clone()),
        Some(vault),
    )
    .unwrap();
    let err = app.checkpoint().await.expect_err("refused");
    assert_eq!(err.code(), "log_inconsistent");
    drop(cfg);
}

#[tokio::test]
async fn fifo_topics_get_a_group_per_account_and_the_event_id_for_deduplication() {
    let moto = Moto::start().await;
    let client = moto.client();
    let arn = client
        .create_topic()
        .name(format!("{}.fifo", topic_name("fifo")))
        .attributes("FifoTopic", "true")
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_owned();
    // Without MessageGroupId the topic refuses the publish.
    let refused = client.publish().topic_arn(&arn).message("x").send().await;
    assert!(refused.is_err(), "moto enforces FIFO parameters");
    let t = team().await;
    let app = t.s.app.clone().with_sink(SnsSink::with_client(client, &arn));
    let n = app.deliver_due().await.unwrap();
    assert!(n > 5, "{n}");
    assert_eq!(app.outbox_status().await.unwrap().undelivered, 0);
}

#[tokio::test]
async fn a_restored_older_database_cannot_make_the_service_sign_a_contradicting_checkpoint() {
    let t = team().await;
    // Backup taken now (only the database file, as the runbook does).
    let backup = t.s.dir.path().join("backup");
    std::fs::create_dir(&backup).unwrap();
    t.s.db().execute("VACUUM INTO ?1", [backup.join("breakglass.db").to_str().unwrap()]).unwrap();
    // Life goes on: more entries, and a checkpoint of them leaves the building.
    let _ = t.s.enrol(&[breakglass::domain::Role::Custodian], "Dee", "dee@example.com").await;
    let later = t.s.app.checkpoint().await.unwrap();
    // The database is restored from the backup; the server starts on it.
    let vault =
        bootstrap::unseal_vault(&backup.join("breakglass.db"), &t.s.config, &mut bootstrap::FileOnly(&t.s.config))
            .unwrap();
    let restored = App::new(
        Db::open(&backup.join("breakglass.db")).unwrap(),
        std::sync::Arc::new(t.s.clock.clone()),
        std::sync::Arc::new(t.s.config.clone()),
        Some(vault),
    )
    .unwrap();
    let err = restored.checkpoint().await.expect_err("refuses to sign below what it already signed");
    assert_eq!(err.code(), "log_inconsistent", "{err}");
    assert!(err.to_string().contains(&format!("size {}", later.size)), "{err}");
    // Delivery stops rather than publish a contradicting checkpoint.
    let moto = Moto::start().await;
    let sub = Subscriber::on(&moto, &topic_name("restore")).await;
    let app = restored.with_sink(SnsSink::with_client(moto.client(), &sub.topic_arn));
    assert!(app.deliver_one().await.is_err());
    assert!(sub.messages().is_empty());
}

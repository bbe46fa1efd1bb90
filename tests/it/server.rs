//! The one start-up path (`Server::build`, as `serve` uses it): connection limits,
//! request ids, readiness part by part, the delivery worker behind the `Sink` trait,
//! the scheduler, and pages that check roles with extractors.
use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use breakglass::{
    app::App,
    clock::FixedClock,
    domain::Role,
    notify::{Outgoing, PublishResult, Sink},
    store::Db,
};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// Read until the server closes the connection; what it sent, and how long that took.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, started.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {
                panic!("the server kept the connection open for {limit:?}; got {:?}", String::from_utf8_lossy(&got))
            }
        }
    }
}

#[tokio::test]
async fn a_client_that_sends_half_a_request_header_is_disconnected() {
    let s = TestServer::start_full(|c| c.http.header_read_timeout_seconds = 1, |_| {}, None::<RecordingSink>).await;
    let mut slow = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ").await.unwrap();
    let (sent, took) = read_until_closed(&mut slow, Duration::from_secs(10)).await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}, before the timeout");
    assert!(!String::from_utf8_lossy(&sent).contains("200 OK"), "no answer to half a request");

    // A client that sends its header in time is served on the same server.
    let mut ok = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let (sent, _) = read_until_closed(&mut ok, Duration::from_secs(10)).await;
    assert!(String::from_utf8_lossy(&sent).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&sent));
}

/// A server that closes a connection on which nothing has moved for 1 s (and gives
/// requests far longer than that).
async fn idle_after_one_second() -> TestServer {
    TestServer::start_full(
        |c| {
            c.http.idle_timeout_seconds = 1;
            c.http.request_timeout_seconds = 60;
        },
        |_| {},
        None::<RecordingSink>,
    )
    .await
}

#[tokio::test]
async fn a_stalled_upload_is_disconnected_after_the_idle_timeout() {
    let s = idle_after_one_second().await;
    let mut stalled = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/login/start HTTP/1.1\r\nHost: localhost\r\nOrigin: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"email\":",
        s.origin
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let (sent, took) = read_until_closed(&mut stalled, Duration::from_secs(10)).await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    assert!(took < Duration::from_secs(10));
    assert!(sent.is_empty(), "closed without an answer: {:?}", String::from_utf8_lossy(&sent));

    // A connection that keeps moving is not cut: three requests over ~1.5 s on one
    // kept-alive connection (each gap shorter than the idle timeout).
    let c = Client::new();
    for _ in 0..3 {
        assert_eq!(get(&c, s.url("/healthz")).await.0, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The other direction: a client that asks for a lot and then stops reading. Once the
/// socket buffers are full, no byte moves either way and the idle timeout closes the
/// connection, so the client gets only part of what it asked for. Without the timeout
/// it would get every answer once it reads again (the connection is kept alive).
#[tokio::test]
async fn a_client_that_stops_reading_its_answers_is_disconnected_after_the_idle_timeout() {
    let s = idle_after_one_second().await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader = socket.connect(s.addr).await.unwrap();
    // 200 pipelined requests for the largest static file: ~28 MiB of answers, far more
    // than the socket buffers on both sides hold.
    let asked = 200;
    let one = "GET /static/vendor/age-encryption.js HTTP/1.1\r\nHost: localhost\r\n\r\n";
    reader.write_all(one.repeat(asked).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (sent, _) = read_until_closed(&mut reader, Duration::from_secs(30)).await;
    let answers = sent.windows(15).filter(|w| w == b"HTTP/1.1 200 OK").count();
    assert!(answers > 0, "it was answering before the client stopped reading");
    assert!(answers < asked, "the connection was cut while the client did not read: {answers} of {asked} answers");
}

#[tokio::test]
async fn every_response_has_its_own_request_id_and_a_client_cannot_choose_it() {
    let s = TestServer::start().await;
    let c = Client::new();
    let a = c.get(s.url("/healthz")).send().await.unwrap();
    let b = c.get(s.url("/api/v1/me")).header("x-request-id", "forged-id").send().await.unwrap();
    let id_a = a.headers()["x-request-id"].to_str().unwrap().to_owned();
    let id_b = b.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id_a.len(), 36, "a UUID: {id_a}");
    assert_ne!(id_a, id_b);
    assert_ne!(id_b, "forged-id");
    let body: Value = b.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_signed_in");
    assert!(body["error"].get("request_id").is_none(), "4xx bodies do not need it: {body}");
}

#[tokio::test]
async fn an_internal_error_names_its_request_id_and_is_logged_once_with_its_cause() {
    let logs = CapturedLogs::start(tracing::Level::INFO);
    let s = TestServer::start().await;
    let ada = s.admin().await;
    // The server's database stops taking writes (as on a read-only mount): an
    // authenticated request that writes (here: creating an invite) fails inside the
    // handler.
    s.app.db.with(|c| c.pragma_update(None, "query_only", true)).unwrap();
    let res = ada
        .client
        .post(s.url("/api/v1/invites"))
        .json(&serde_json::json!({"roles": ["custodian"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "internal");
    assert_eq!(body["error"]["request_id"], id.as_str(), "{body}");
    let text = body.to_string().to_lowercase();
    assert!(!text.contains("readonly") && !text.contains("sqlite") && !text.contains("database"), "{body}");
    s.app.db.with(|c| c.pragma_update(None, "query_only", false)).unwrap();
    assert_eq!(get(&Client::new(), s.url("/healthz")).await.0, StatusCode::OK);

    let logs = logs.text();
    let responses: Vec<&str> = logs.lines().filter(|l| l.contains(" response ")).collect();
    assert!(
        responses.iter().any(|l| l.contains(&id) && l.contains("status=500") && l.contains("path=/api/v1/invites")),
        "one access line per request, in its span:\n{logs}"
    );
    assert!(!responses.iter().any(|l| l.contains("path=/healthz")), "health probes only at debug:\n{logs}");
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "logged once:\n{logs}");
    assert!(errors[0].contains(&id), "inside the request's span:\n{logs}");
    assert!(errors[0].contains("readonly"), "with its cause:\n{logs}");
}

#[tokio::test]
async fn readyz_reports_each_part_and_is_ready_on_a_fresh_server() {
    let s = TestServer::start().await;
    let (status, body) = get(&Client::new(), s.url("/readyz")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["failing"], serde_json::json!([]));
    assert_eq!(body["database"]["status"], "ok");
    assert_eq!(body["database"]["writable"], true);
    assert_eq!(body["vault"]["status"], "ok");
    assert_eq!(body["vault"]["sealed"], false);
    assert_eq!(body["scheduler"]["running"], true);
    assert_eq!(body["scheduler"]["every_seconds"], 3600);
    assert_eq!(body["outbox"]["sink"], "no_sink");
    assert_eq!(body["outbox"]["undelivered"], 1, "log_key.created waits: {body}");
    assert_eq!(body["outbox"]["oldest_undelivered_age_seconds"], 0);
    // The write probe leaves nothing behind.
    let probes: i64 =
        s.db().query_row("SELECT count(*) FROM settings WHERE key LIKE 'readyz%'", [], |r| r.get(0)).unwrap();
    assert_eq!(probes, 0);
}

#[tokio::test]
async fn readyz_is_503_naming_the_database_when_it_is_full_or_read_only() {
    let s = TestServer::start().await;
    let c = Client::new();
    // Full: the database may not grow by a single page.
    s.app
        .db
        .with(|conn| {
            let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| r.get::<_, i64>(0))
        })
        .unwrap();
    let (status, body) = get(&c, s.url("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["failing"], serde_json::json!(["database"]));
    assert_eq!(body["database"]["problem"], "full");
    assert_eq!(body["database"]["writable"], false);
    assert_eq!(body["vault"]["status"], "ok", "the other parts are still reported");
    assert_eq!(body["outbox"]["undelivered"], 1, "reads still work");

    // Room again: ready again.
    s.app.db.with(|conn| conn.query_row("PRAGMA max_page_count = 1073741823", [], |r| r.get::<_, i64>(0))).unwrap();
    assert_eq!(get(&c, s.url("/readyz")).await.0, StatusCode::OK);

    // Read-only.
    s.app.db.with(|conn| conn.pragma_update(None, "query_only", true)).unwrap();
    let (status, body) = get(&c, s.url("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["database"]["problem"], "read_only");
    s.app.db.with(|conn| conn.pragma_update(None, "query_only", false)).unwrap();
    assert_eq!(get(&c, s.url("/readyz")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn readyz_is_503_when_the_scheduler_stops_ticking_and_ready_again_when_it_ticks() {
    // A scheduler that ticks every 200 ms of real time, on the test's fixed clock.
    let s = TestServer::start_full(
        |_| {},
        |o| {
            o.scheduler_every = Duration::from_millis(200);
            o.scheduler_first_after = Duration::ZERO;
        },
        None::<RecordingSink>,
    )
    .await;
    let c = Client::new();
    let ticked = |body: &Value| body["scheduler"]["last_tick_at"].as_str().map(str::to_owned);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut body = Value::Null;
    while ticked(&body).is_none() {
        assert!(Instant::now() < deadline, "no tick: {body}");
        body = get(&c, s.url("/readyz")).await.1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ticked(&body).unwrap(), "2026-11-21T09:00:00Z");
    assert_eq!(body["scheduler"]["status"], "ok");
    // The clock jumps a day: within a few ticks the scheduler has caught up.
    s.clock.advance(time::Duration::days(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(&c, s.url("/readyz")).await;
        if ticked(&body).as_deref() == Some("2026-11-22T09:00:00Z") {
            assert_eq!(status, StatusCode::OK, "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "the scheduler did not tick again: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A scheduler that does not tick (the default test server ticks first after an
    // hour of real time) is reported once three periods have passed on the clock.
    let quiet = TestServer::start().await;
    assert_eq!(get(&c, quiet.url("/readyz")).await.0, StatusCode::OK);
    quiet.clock.advance(time::Duration::hours(3) + time::Duration::seconds(1));
    let (status, body) = get(&c, quiet.url("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["failing"], serde_json::json!(["scheduler"]));
    assert_eq!(body["scheduler"]["last_tick_at"], Value::Null);
}

#[tokio::test]
async fn without_a_vault_or_a_scheduler_the_process_is_not_ready() {
    let s = TestServer::start().await;
    // A host-side App (as the CLI opens): no unsealed vault, no scheduler.
    let host = App::new(
        Db::open(&s.config.db_path()).unwrap(),
        Arc::new(FixedClock::new(start_time())),
        Arc::new(s.config.clone()),
        None,
    )
    .unwrap();
    let r = host.readiness(None).await.unwrap();
    assert!(!r.is_ready());
    assert_eq!(r.failing, vec!["vault", "scheduler"]);
    assert!(r.vault.sealed);
    assert!(r.database.writable);
}

/// A second sink, to show the trait is the only seam: records what it is given, or
/// refuses while `down` is set.
#[derive(Clone, Default)]
struct RecordingSink {
    got: Arc<Mutex<Vec<Outgoing>>>,
    down: Arc<Mutex<bool>>,
}

impl Sink for RecordingSink {
    fn name(&self) -> &'static str {
        "recording"
    }

    fn publish<'a>(&'a self, m: &'a Outgoing) -> Pin<Box<dyn Future<Output = PublishResult> + Send + 'a>> {
        Box::pin(async move {
            if *self.down.lock().unwrap() {
                return Err("recording sink is down".to_owned());
            }
            let mut got = self.got.lock().unwrap();
            got.push(m.clone());
            Ok(format!("rec-{}", got.len()))
        })
    }
}

#[tokio::test]
async fn the_server_runs_the_delivery_worker_for_its_sink_with_backoff_on_failure() {
    let sink = RecordingSink::default();
    *sink.down.lock().unwrap() = true;
    let s = TestServer::start_full(|_| {}, |_| {}, Some(sink.clone())).await;
    // Down: the worker tries, records the failure and backs off (base 5 s, jitter ≥ ½).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (attempts, next_at) = loop {
        let row: (i64, i64) = s
            .db()
            .query_row("SELECT attempts, next_attempt_at FROM outbox WHERE event = 'log_key.created'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        if row.0 > 0 {
            break row;
        }
        assert!(Instant::now() < deadline, "the worker never tried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(attempts, 1);
    let now = start_time().unix_timestamp();
    assert!((now + 3..=now + 5).contains(&next_at), "backoff after the first failure: {}", next_at - now);
    let (_, ready) = get(&Client::new(), s.url("/readyz")).await;
    assert_eq!(ready["outbox"]["sink"], "recording");
    assert_eq!(ready["outbox"]["status"], "degraded", "{ready}");

    // Up again and the backoff over: the worker delivers, in order, without any call from the test.
    *sink.down.lock().unwrap() = false;
    s.clock.advance(time::Duration::seconds(10));
    let ada = s.admin().await;
    drop(ada);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let events: Vec<String> = sink.got.lock().unwrap().iter().map(|m| m.event.clone()).collect();
        if events.contains(&"custodian.enrolled".to_owned()) {
            assert_eq!(events[..2], ["log_key.created", "invite.created"], "in order");
            break;
        }
        assert!(Instant::now() < deadline, "not delivered: {events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Marked delivered with the sink's message id (the mark follows the publish).
    loop {
        let delivered: i64 = s
            .db()
            .query_row(
                "SELECT count(*) FROM outbox WHERE state = 'delivered' AND sns_message_id LIKE 'rec-%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if delivered >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "not marked delivered: {delivered}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pages_check_roles_like_the_api() {
    let s = TestServer::start().await;
    let ada = s.admin().await;
    let bo = s.enrol(&[Role::Custodian], "Bo", "bo@example.com").await;
    let au = s.enrol(&[Role::Auditor], "Au", "au@example.com").await;
    for (who, path, want) in [
        (&ada, "/admin", StatusCode::OK),
        (&ada, "/audit", StatusCode::OK),
        (&au, "/audit", StatusCode::OK),
        (&au, "/admin", StatusCode::FORBIDDEN),
        (&bo, "/admin", StatusCode::FORBIDDEN),
        (&bo, "/audit", StatusCode::FORBIDDEN),
        (&bo, "/", StatusCode::OK),
    ] {
        let res = who.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(res.status(), want, "{} on {path}", who.email);
        let html = res.text().await.unwrap();
        if want == StatusCode::FORBIDDEN {
            assert!(html.contains("This page is for"), "{html}");
        }
    }
    // The same people on the API.
    assert_eq!(get(&au.client, s.url("/api/v1/audit")).await.0, StatusCode::OK);
    assert_error(&get(&bo.client, s.url("/api/v1/audit")).await, StatusCode::FORBIDDEN, "forbidden_role");
}

#[tokio::test]
async fn shutdown_stops_accepting_lets_the_request_in_flight_finish_and_stops_the_tasks() {
    use breakglass::server::{Server, ServerOptions};
    let s = TestServer::start().await;
    // A second server on the same app, through the same start-up path, with a shutdown switch.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::build(s.app.clone(), listener, ServerOptions::from_config(&s.config));
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let url = format!("http://{addr}/healthz");
    assert_eq!(get(&Client::new(), &url).await.0, StatusCode::OK);

    // A request in flight when the shutdown comes: its header arrives in two parts.
    let mut in_flight = tokio::net::TcpStream::connect(addr).await.unwrap();
    in_flight.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    in_flight.write_all(b"\r\n").await.unwrap();
    let (sent, _) = read_until_closed(&mut in_flight, Duration::from_secs(10)).await;
    assert!(String::from_utf8_lossy(&sent).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&sent));

    tokio::time::timeout(Duration::from_secs(10), running).await.expect("run returns").unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

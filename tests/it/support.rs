//! Test harness: the real server on 127.0.0.1:0 with a fresh temp data dir and a
//! fixed clock; people are reqwest clients with their own cookie jar and a software
//! passkey (webauthn-authenticator-rs) driving the real WebAuthn HTTP flow.
#![allow(dead_code)]

use std::{net::SocketAddr, sync::Arc};

use breakglass::{
    app::{Actor, App, bootstrap},
    clock::FixedClock,
    config::Config,
    crypto::seal::KdfParams,
    domain::Role,
    notify::Sink,
    server::{Server, ServerOptions},
    store::Db,
};
use reqwest::{Client, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use tempfile::TempDir;
use time::OffsetDateTime;
use url::Url;
use webauthn_authenticator_rs::{WebauthnAuthenticator, softpasskey::SoftPasskey};
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse};

pub struct TestServer {
    pub addr: SocketAddr,
    pub origin: String,
    pub clock: FixedClock,
    pub config: Config,
    pub app: App,
    pub dir: TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A person with a browser (cookie jar) and a software security key.
pub struct Person {
    pub client: Client,
    pub key: SoftPasskey,
    pub id: String,
    pub email: String,
}

#[derive(Deserialize)]
pub struct RegStart {
    pub ceremony_id: String,
    #[serde(flatten)]
    pub options: CreationChallengeResponse,
}

#[derive(Deserialize)]
pub struct AuthStart {
    pub ceremony_id: String,
    #[serde(flatten)]
    pub options: RequestChallengeResponse,
}

pub fn start_time() -> OffsetDateTime {
    time::macros::datetime!(2026-11-21 09:00:00 UTC)
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_full(adjust, |_| {}, None::<breakglass::notify::SnsSink>).await
    }

    /// The server on a fixed clock that starts at `at` (any date: tests must pass
    /// whatever today's date is).
    pub async fn start_at(at: OffsetDateTime, adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_full_at(at, adjust, |_| {}, None::<breakglass::notify::SnsSink>).await
    }

    /// The real start-up path (`Server::build`, as `serve` uses it) with the config and
    /// server options adjusted, and optionally a sink (then the delivery worker runs).
    /// By default the scheduler ticks first after an hour, so tests that drive
    /// `run_drills`/`expire_due` by hand are not raced by it.
    pub async fn start_full(
        adjust: impl FnOnce(&mut Config),
        adjust_server: impl FnOnce(&mut ServerOptions),
        sink: Option<impl Sink>,
    ) -> Self {
        Self::start_full_at(start_time(), adjust, adjust_server, sink).await
    }

    pub async fn start_full_at(
        at: OffsetDateTime,
        adjust: impl FnOnce(&mut Config),
        adjust_server: impl FnOnce(&mut ServerOptions),
        sink: Option<impl Sink>,
    ) -> Self {
        Self::start_with_app(at, adjust, adjust_server, |app| match sink {
            Some(sink) => app.with_sink(sink),
            None => app,
        })
        .await
    }

    /// As [`TestServer::start_full_at`], with the `App` adjusted before the server is
    /// built (a sink, a root-activity feed).
    pub async fn start_with_app(
        at: OffsetDateTime,
        adjust: impl FnOnce(&mut Config),
        adjust_server: impl FnOnce(&mut ServerOptions),
        adjust_app: impl FnOnce(App) -> App,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let origin = format!("http://localhost:{}", addr.port());
        let mut config = Config {
            data_dir: dir.path().join("data"),
            origin: origin.clone(),
            listen: addr.to_string(),
            ..Config::default()
        };
        config.http.ceremony_burst = 10_000;
        config.http.ceremony_rate_per_minute = 10_000;
        adjust(&mut config);
        // The origin as configured (a test may set an unusual one), as browsers send it.
        let origin = config.origin_header();
        let clock = FixedClock::new(at);
        let vault = bootstrap::init_vault(
            &config.db_path(),
            &config,
            at,
            &mut bootstrap::FileOnly(&config),
            KdfParams::default(),
        )
        .unwrap();
        let db = Db::open(&config.db_path()).unwrap();
        let app = adjust_app(App::new(db, Arc::new(clock.clone()), Arc::new(config.clone()), Some(vault)).unwrap());
        let mut options = ServerOptions::from_config(&config);
        options.scheduler_every = std::time::Duration::from_secs(3600);
        options.scheduler_first_after = options.scheduler_every;
        adjust_server(&mut options);
        let server = Server::build(app.clone(), listener, options);
        let server = tokio::spawn(async move {
            server.run(std::future::pending()).await.unwrap();
        });
        Self { addr, origin, clock, config, app, dir, server }
    }

    pub fn url(&self, path: impl AsRef<str>) -> String {
        let path = path.as_ref();
        format!("http://{}{}", self.addr, path)
    }

    pub fn origin_url(&self) -> Url {
        Url::parse(&self.origin).unwrap()
    }

    /// A browser-like client: cookie jar, and our Origin on every request.
    pub fn client(&self) -> Client {
        let mut h = header::HeaderMap::new();
        h.insert(header::ORIGIN, self.origin.parse().unwrap());
        Client::builder().cookie_store(true).default_headers(h).build().unwrap()
    }

    /// An invite token made on the host (as `breakglass invite` does).
    pub async fn invite(&self, roles: &[Role]) -> String {
        self.app.create_invite(Actor::Host, roles.to_vec()).await.unwrap().token
    }

    /// Invite someone and start their enrolment from `client`.
    pub async fn start_enrolment(&self, client: &Client, roles: &[Role], name: &str, email: &str) -> RegStart {
        let token = self.invite(roles).await;
        let (status, body) = post(
            client,
            &self.url("/api/v1/enrol/start"),
            json!({"invite_token": token, "name": name, "email": email}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_value(body).unwrap()
    }

    /// Enrol a new person through the HTTP flow; they come back signed in.
    pub async fn enrol(&self, roles: &[Role], name: &str, email: &str) -> Person {
        let client = self.client();
        let mut key = SoftPasskey::new(true);
        let start = self.start_enrolment(&client, roles, name, email).await;
        let credential = key.do_registration(self.origin_url(), start.options).unwrap();
        let (status, body) = post(
            &client,
            &self.url("/api/v1/enrol/finish"),
            json!({"ceremony_id": start.ceremony_id, "credential": credential, "label": "YubiKey 5C"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["custodian"]["id"].as_str().unwrap().to_owned();
        Person { client, key, id, email: email.to_owned() }
    }

    pub async fn admin(&self) -> Person {
        self.enrol(&[Role::Admin, Role::Custodian], "Ada Admin", "ada@example.com").await
    }

    /// Sign in again with the person's key, in a fresh cookie jar.
    pub async fn login(&self, person: &mut Person) -> (StatusCode, Value) {
        person.client = self.client();
        let (status, body) =
            post(&person.client, &self.url("/api/v1/login/start"), json!({"email": person.email})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let start: AuthStart = serde_json::from_value(body).unwrap();
        let credential = person.key.do_authentication(self.origin_url(), start.options).unwrap();
        post(
            &person.client,
            &self.url("/api/v1/login/finish"),
            json!({"ceremony_id": start.ceremony_id, "credential": credential}),
        )
        .await
    }

    /// Enrol one more security key for a signed-in person; returns the new key.
    pub async fn add_key(&self, person: &Person) -> SoftPasskey {
        let (status, body) = post(&person.client, self.url("/api/v1/me/credentials/start"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let st: RegStart = serde_json::from_value(body).unwrap();
        let mut key = SoftPasskey::new(true);
        let cred = key.do_registration(self.origin_url(), st.options).unwrap();
        let (status, body) = post(
            &person.client,
            self.url("/api/v1/me/credentials/finish"),
            json!({"ceremony_id": st.ceremony_id, "credential": cred}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        key
    }

    /// Stop the server and start a new process-worth of it on the same data dir and
    /// port: a fresh `App` that unseals the vault from disk, as after a restart.
    pub async fn restart(&mut self) {
        self.server.abort();
        let _ = (&mut self.server).await;
        let vault =
            bootstrap::unseal_vault(&self.config.db_path(), &self.config, &mut bootstrap::FileOnly(&self.config))
                .unwrap();
        let db = Db::open(&self.config.db_path()).unwrap();
        let app = App::new(db, Arc::new(self.clock.clone()), Arc::new(self.config.clone()), Some(vault)).unwrap();
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        let mut options = ServerOptions::from_config(&self.config);
        options.scheduler_every = std::time::Duration::from_secs(3600);
        options.scheduler_first_after = options.scheduler_every;
        let server = Server::build(app.clone(), listener, options);
        self.server = tokio::spawn(async move {
            server.run(std::future::pending()).await.unwrap();
        });
        self.app = app;
    }

    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.config.db_path()).unwrap()
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, body)
}

pub async fn post(client: &Client, url: impl reqwest::IntoUrl, body: Value) -> (StatusCode, Value) {
    send(client.post(url).json(&body)).await
}

pub async fn put(client: &Client, url: impl reqwest::IntoUrl, body: Value) -> (StatusCode, Value) {
    send(client.put(url).json(&body)).await
}

pub async fn get(client: &Client, url: impl reqwest::IntoUrl) -> (StatusCode, Value) {
    send(client.get(url)).await
}

/// Assert a JSON error with the given status and stable code.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "body: {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "body: {}", got.1);
    assert!(got.1["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "body: {}", got.1);
}

/// All audit actions, in order.
pub fn audit_actions(conn: &rusqlite::Connection) -> Vec<String> {
    let mut stmt = conn.prepare("SELECT action FROM audit_log ORDER BY seq").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

pub const AWS_SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

/// Run the real binary against a data dir (no config file, default seal mode).
pub fn breakglass(data_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    breakglass_cmd(data_dir).args(args).output().unwrap()
}

pub fn breakglass_cmd(data_dir: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_breakglass"));
    c.env("BREAKGLASS_DATA_DIR", data_dir).env_remove("BREAKGLASS_CONFIG").env_remove("BREAKGLASS_SEAL_MODE");
    c
}

/// Log lines written on this thread while it is alive, at `level` and above (test
/// runtimes are single-threaded, so the server's handlers log on the test's thread).
pub struct CapturedLogs {
    buf: Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    pub fn start(level: tracing::Level) -> Self {
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = LogBuffer(buf.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(level)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        // Other tests run on other threads without this subscriber; a call site they hit
        // first while it was being installed may have cached "nobody listens". Recompute.
        tracing::callsite::rebuild_interest_cache();
        Self { buf, _guard: guard }
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.buf.lock().unwrap().clone()).unwrap()
    }
}

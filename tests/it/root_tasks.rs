//! Accounts without root passwords (`centralized_root`): a checkout names an AWS root-task
//! policy and, after the same approvals, breakglass calls `sts:AssumeRoot` and hands the
//! requester temporary credentials, never stored.
//!
//! No emulator implements AssumeRoot (moto does not), so these tests run the real AWS SDK
//! against [`StsDouble`]: a small HTTP server that accepts only what AWS documents for the
//! call and answers in AWS's documented shape:
//!
//! - request (AWS Query protocol, STS API reference "AssumeRoot"): `POST /`, form body
//!   `Action=AssumeRoot`, `Version=2011-06-15`, `TargetPrincipal` (12-digit account id),
//!   `TaskPolicyArn.arn` (`arn:aws:iam::aws:policy/root-task/<one of the five>`),
//!   `DurationSeconds` (0–900);
//! - a SigV4 `Authorization` header (`AWS4-HMAC-SHA256`, scope `<date>/<region>/sts/aws4_request`)
//!   whose signature the double recomputes with the test credentials — so the request
//!   really was signed for STS in the configured region, with the body it carries;
//! - response: `AssumeRootResponse/AssumeRootResult/Credentials/{AccessKeyId,
//!   SecretAccessKey, SessionToken, Expiration}`, `SourceIdentity`, and
//!   `ResponseMetadata/RequestId`; a refusal is AWS's `ErrorResponse/Error/{Type,Code,Message}`.
//!
//! The SDK signs with a time source that follows the test clock, and the double dates the
//! credentials from the signed `X-Amz-Date`: no wall clock is involved.
use std::{
    sync::{Arc, Mutex},
    time::SystemTime,
};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sts::config::{Credentials, SharedCredentialsProvider};
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode as AxStatus},
    response::IntoResponse,
    routing::post as axpost,
};
use breakglass::{app::App, aws::RootTasks, clock::Clock};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{checkouts::*, support::*};

const CENTRAL: &str = "555566667777";
const REGION: &str = "eu-west-1";
const KEY_ID: &str = "AKIDBREAKGLASSTEST01";
const SECRET: &str = "double/secret+key=for-sigv4-checks";
const POLICIES: [&str; 5] = [
    "IAMAuditRootUserCredentials",
    "IAMCreateRootUserPassword",
    "IAMDeleteRootUserCredentials",
    "S3UnlockBucketPolicy",
    "SQSUnlockQueuePolicy",
];

/// One request the double received: its parameters, and what it found wrong.
#[derive(Debug, Clone)]
struct Seen {
    params: Vec<(String, String)>,
    problems: Vec<String>,
    amz_date: String,
    secret_access_key: String,
    session_token: String,
}

impl Seen {
    fn param(&self, k: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
struct Double {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Answer with this AWS error code instead of credentials.
    refuse: Arc<Mutex<Option<&'static str>>>,
}

pub(crate) struct StsDouble {
    pub(crate) endpoint: String,
    state: Double,
    _server: tokio::task::JoinHandle<()>,
}

impl StsDouble {
    pub(crate) async fn start() -> Self {
        let state = Double::default();
        let app = Router::new().route("/", axpost(assume_root)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { endpoint, state, _server: server }
    }

    pub(crate) fn calls(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// Recompute the SigV4 signature of a `POST /` to STS and compare (AWS General
/// Reference, "Create a signed AWS API request").
fn check_sigv4(headers: &HeaderMap, body: &[u8], problems: &mut Vec<String>) -> String {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        problems.push(format!("Authorization is not SigV4: {auth:?}"));
        return String::new();
    };
    let field =
        |name: &str| rest.split(", ").find_map(|p| p.strip_prefix(&format!("{name}="))).unwrap_or_default().to_owned();
    let (credential, signed, signature) = (field("Credential"), field("SignedHeaders"), field("Signature"));
    let amz_date = headers.get("x-amz-date").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[0] != KEY_ID || scope[2] != REGION || scope[3] != "sts" || scope[4] != "aws4_request" {
        problems.push(format!("credential scope {credential:?} is not {KEY_ID}/<date>/{REGION}/sts/aws4_request"));
        return amz_date;
    }
    if !amz_date.starts_with(scope[1]) {
        problems.push(format!("X-Amz-Date {amz_date} is not on the scope's date {}", scope[1]));
    }
    for required in ["host", "x-amz-date"] {
        if !signed.split(';').any(|h| h == required) {
            problems.push(format!("{required} is not signed ({signed})"));
        }
    }
    let canonical_headers: String = signed
        .split(';')
        .map(|h| {
            let v = headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or_default();
            format!("{h}:{}\n", v.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .collect();
    let canonical = format!("POST\n/\n\n{canonical_headers}\n{signed}\n{}", hex::encode(Sha256::digest(body)));
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{}/{REGION}/sts/aws4_request\n{}",
        scope[1],
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let k = hmac(format!("AWS4{SECRET}").as_bytes(), scope[1]);
    let k = hmac(&hmac(&hmac(&k, REGION), "sts"), "aws4_request");
    if hex::encode(hmac(&k, &to_sign)) != signature {
        problems.push("the SigV4 signature does not verify with the test credentials".into());
    }
    amz_date
}

async fn assume_root(State(d): State<Double>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut problems = Vec::new();
    let amz_date = check_sigv4(&headers, &body, &mut problems);
    if get("Action").as_deref() != Some("AssumeRoot") || get("Version").as_deref() != Some("2011-06-15") {
        problems.push(format!("not AssumeRoot 2011-06-15: {params:?}"));
    }
    let target = get("TargetPrincipal").unwrap_or_default();
    if target.len() != 12 || !target.bytes().all(|b| b.is_ascii_digit()) {
        problems.push(format!("TargetPrincipal {target:?} is not an account id"));
    }
    let arn = get("TaskPolicyArn.arn").unwrap_or_default();
    if !POLICIES.iter().any(|p| arn == format!("arn:aws:iam::aws:policy/root-task/{p}")) {
        problems.push(format!("TaskPolicyArn.arn {arn:?} is not an AWS root-task policy"));
    }
    let duration: i64 = get("DurationSeconds").and_then(|v| v.parse().ok()).unwrap_or(-1);
    if !(0..=900).contains(&duration) {
        problems.push(format!("DurationSeconds {duration} is not 0–900"));
    }
    let n = d.seen.lock().unwrap().len() + 1;
    let secret_access_key = format!("DoubleSecret{n}x/9+Zq7wLm3Rt5Yv2Bn8Kp4Hs6Jd1Fg0");
    let session_token = format!("IQoJb3JpZ2luX2VjDoubleSessionToken{n}Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp");
    d.seen.lock().unwrap().push(Seen {
        params: params.clone(),
        problems: problems.clone(),
        amz_date: amz_date.clone(),
        secret_access_key: secret_access_key.clone(),
        session_token: session_token.clone(),
    });
    // The signed request time is "now" for the double (the test clock, through the SDK):
    // it dates the credentials and the `Date` header, from which the SDK corrects skew.
    let signed_at = time::PrimitiveDateTime::parse(
        &amz_date,
        time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"),
    )
    .map(|t| t.assume_utc())
    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let refusal = *d.refuse.lock().unwrap();
    if !problems.is_empty() || refusal.is_some() {
        let (code, message) = match refusal {
            Some(code) => (code.to_owned(), "User is not authorized to perform: sts:AssumeRoot".to_owned()),
            None => ("ValidationError".to_owned(), problems.join("; ")),
        };
        let xml = format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>req-{n}</RequestId></ErrorResponse>"
        );
        return (AxStatus::FORBIDDEN, headers_for(&signed_at, n), xml);
    }
    let expiration =
        (signed_at + time::Duration::seconds(duration)).format(&time::format_description::well_known::Rfc3339).unwrap();
    let xml = format!(
        "<AssumeRootResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRootResult><Credentials><AccessKeyId>ASIADOUBLE{n:010}</AccessKeyId><SecretAccessKey>{secret_access_key}</SecretAccessKey><SessionToken>{session_token}</SessionToken><Expiration>{expiration}</Expiration></Credentials><SourceIdentity>breakglass</SourceIdentity></AssumeRootResult><ResponseMetadata><RequestId>req-{n}</RequestId></ResponseMetadata></AssumeRootResponse>"
    );
    (AxStatus::OK, headers_for(&signed_at, n), xml)
}

/// What AWS sends with every answer: XML, the request id, and its own `Date`.
fn headers_for(now: &time::OffsetDateTime, n: usize) -> [(&'static str, String); 3] {
    let date = now
        .format(time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .unwrap();
    [("content-type", "text/xml".to_owned()), ("x-amzn-requestid", format!("req-{n}")), ("date", date)]
}

/// The AWS SDK's clock is the app's (test) clock.
struct AppTime(Arc<dyn Clock>);

impl std::fmt::Debug for AppTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppTime(test clock)")
    }
}

impl aws_smithy_async::time::TimeSource for AppTime {
    fn now(&self) -> SystemTime {
        SystemTime::from(self.0.now())
    }
}

/// `t` as RFC 3339 and as SigV4's `X-Amz-Date`.
fn stamps(t: time::OffsetDateTime) -> (String, String) {
    (
        t.format(&time::format_description::well_known::Rfc3339).unwrap(),
        t.format(time::macros::format_description!("[year][month][day]T[hour][minute][second]Z")).unwrap(),
    )
}

/// The SDK configuration of a client of `endpoint`, signing for `region` with `secret`
/// (at the time of `clock`, when given).
fn sdk_config(endpoint: &str, region: &str, secret: &str, clock: Option<Arc<dyn Clock>>) -> SdkConfig {
    let mut b = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(KEY_ID, secret, None, None, "test")));
    if let Some(clock) = clock {
        b = b.time_source(AppTime(clock));
    }
    b.build()
}

fn root_tasks(endpoint: &str, region: &str, secret: &str) -> RootTasks {
    RootTasks::with_config(&sdk_config(endpoint, region, secret, None)).unwrap()
}

pub(crate) fn with_double(app: App, endpoint: &str) -> App {
    let config = sdk_config(endpoint, REGION, SECRET, Some(app.clock.clone()));
    app.with_root_tasks(RootTasks::with_config(&config).unwrap())
}

/// Ada (admin) creates the `centralized_root` account `CENTRAL`; returns its view.
async fn create_central(t: &Team) -> (StatusCode, Value) {
    let got = post(
        &t.ada.client,
        t.s.url("/api/v1/accounts"),
        json!({"account_id": CENTRAL, "alias": "member-central", "root_email": "root+central@example.com", "account_type": "centralized_root"}),
    )
    .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    got
}

/// Bo, Cy and Ada (admin) on a server that opens root-task sessions through the double,
/// with one `centralized_root` account.
async fn central_team(sts: &StsDouble) -> Team {
    let endpoint = sts.endpoint.clone();
    let s = TestServer::start_with_app(start_time(), |_| {}, |_| {}, move |app| with_double(app, &endpoint)).await;
    let t = team_on(s).await;
    let got = create_central(&t).await;
    assert_eq!(got.1["account_type"], "centralized_root");
    assert_eq!(got.1["ready_for_release"], true, "nothing to deposit: ready at once");
    t
}

async fn request_task(t: &Team, body: Value) -> (StatusCode, Value) {
    let mut b =
        json!({"account_id": CENTRAL, "reason": "Bucket policy locks everyone out of prod-logs", "ticket": "INC-9"});
    b.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
    post(&t.bo.client, t.s.url("/api/v1/checkouts"), b).await
}

/// Every byte of the database files, to prove what is not in them.
fn database_bytes(s: &TestServer) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{}{suffix}", s.config.db_path().display());
        if let Ok(b) = std::fs::read(p) {
            all.extend(b);
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn entries(s: &TestServer, action: &str) -> Vec<Value> {
    let conn = s.db();
    let mut stmt = conn.prepare("SELECT details FROM audit_log WHERE action = ?1 ORDER BY seq").unwrap();
    stmt.query_map([action], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|d| serde_json::from_str(&d.unwrap()).unwrap())
        .collect()
}

fn announced(s: &TestServer, event: &str) -> Vec<(String, String)> {
    let conn = s.db();
    let mut stmt = conn.prepare("SELECT severity, message FROM outbox WHERE event = ?1 ORDER BY id").unwrap();
    stmt.query_map([event], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

#[tokio::test]
async fn a_centralized_root_checkout_opens_an_assume_root_session_after_the_approvals_and_stores_none_of_it() {
    let sts = StsDouble::start().await;
    let mut t = central_team(&sts).await;

    let (status, c) =
        request_task(&t, json!({"task_policy": "S3UnlockBucketPolicy", "task_duration_seconds": 600})).await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    assert_eq!(
        (c["task_policy"].as_str(), c["task_duration_seconds"].as_u64()),
        (Some("S3UnlockBucketPolicy"), Some(600))
    );
    let id = c["id"].as_str().unwrap().to_owned();

    // No quorum, no call to AWS.
    let (status, body) = reveal(&t.s, &mut t.bo, &id).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("quorum_not_met")), "{body}");
    assert!(sts.seen().is_empty(), "nothing reached STS before the approvals");

    assert_eq!(decide(&t.s, &mut t.cy, &id, "approve").await.0, StatusCode::OK);
    let now = t.s.clock.now();
    let (expires, _) = stamps(now + time::Duration::seconds(600));
    let (_, signed_at) = stamps(now);
    let (status, session) = reveal(&t.s, &mut t.bo, &id).await;
    assert_eq!(status, StatusCode::OK, "{session}");

    // Exactly one AssumeRoot, shaped and signed as AWS requires.
    let seen = sts.seen();
    assert_eq!(seen.len(), 1);
    let call = &seen[0];
    assert!(call.problems.is_empty(), "the STS double refused the request: {:?}", call.problems);
    assert_eq!(call.param("TargetPrincipal"), Some(CENTRAL));
    assert_eq!(call.param("TaskPolicyArn.arn"), Some("arn:aws:iam::aws:policy/root-task/S3UnlockBucketPolicy"));
    assert_eq!(call.param("DurationSeconds"), Some("600"));
    assert_eq!(call.amz_date, signed_at, "signed at the test clock's time");

    // Shown once, in both forms, with the countdown from the server's clock.
    let creds = &session["credential_process"];
    assert_eq!(creds["Version"], 1);
    assert_eq!(creds["AccessKeyId"], "ASIADOUBLE0000000001");
    assert_eq!(creds["SecretAccessKey"], call.secret_access_key.as_str());
    assert_eq!(creds["SessionToken"], call.session_token.as_str());
    assert_eq!(creds["Expiration"], expires.as_str());
    assert_eq!(session["expires_in_seconds"], 600);
    assert_eq!(session["task_policy_arn"], "arn:aws:iam::aws:policy/root-task/S3UnlockBucketPolicy");
    assert_eq!(session["region"], REGION);
    let shell = session["shell"].as_str().unwrap();
    assert!(shell.contains("export AWS_ACCESS_KEY_ID='ASIADOUBLE0000000001'\n"), "{shell}");
    assert!(shell.contains(&format!("export AWS_SECRET_ACCESS_KEY='{}'\n", call.secret_access_key)), "{shell}");
    assert!(shell.contains(&format!("export AWS_SESSION_TOKEN='{}'\n", call.session_token)), "{shell}");
    assert!(session.get("password").is_none() && session.get("totp").is_none());

    // On the record: released, authorised (with the requester's evidence) before the
    // call, then issued — with the key id, never the secret parts.
    let actions = audit_actions(&t.s.db());
    let at = |a: &str| actions.iter().position(|x| x == a).unwrap_or_else(|| panic!("no {a} in {actions:?}"));
    assert!(at("checkout.released") < at("checkout.root_task_authorized"));
    assert!(at("checkout.root_task_authorized") < at("checkout.root_task_issued"));
    assert!(!actions.contains(&"checkout.revealed".to_owned()));
    let issued = &entries(&t.s, "checkout.root_task_issued")[0];
    assert_eq!(issued["access_key_id"], "ASIADOUBLE0000000001");
    assert_eq!(issued["expiration"], expires.as_str());
    assert_eq!(issued["aws_request_id"], "req-1");
    let authorized = &entries(&t.s, "checkout.root_task_authorized")[0];
    assert_eq!(authorized["duration_seconds"], 600);
    assert!(authorized["evidence"]["signature"].is_string());
    let released = &entries(&t.s, "checkout.released")[0];
    assert_eq!(
        (released["task_policy"].as_str(), released["rotation_required"].as_bool()),
        (Some("S3UnlockBucketPolicy"), Some(false))
    );
    let db = database_bytes(&t.s);
    assert!(!contains(&db, &call.secret_access_key), "the secret access key is in the database files");
    assert!(!contains(&db, &call.session_token), "the session token is in the database files");
    assert!(contains(&db, "ASIADOUBLE0000000001"), "the scan looks at the right files");

    // Announced like a reveal; the offline verifier checks the authorisation's assertion.
    let (severity, message) = &announced(&t.s, "checkout.root_task_issued")[0];
    assert_eq!(severity, "high");
    assert!(message.contains("S3UnlockBucketPolicy") && message.contains("ASIADOUBLE0000000001"), "{message}");
    assert!(!message.contains(&call.secret_access_key));
    assert_eq!(announced(&t.s, "checkout.released")[0].0, "critical");
    let status = breakglass::app::audit::verify_log(&t.s.db(), None).unwrap();
    assert!(status.ok, "{status:?}");
    assert_eq!(status.approvals_checked, 2, "Cy's approval and Bo's root-task authorisation");
    let (code, out) = crate::audit_replay::python_verify(crate::checkouts::snapshot_db(&t.s).path());
    assert_eq!(code, 0, "the independent Python verifier agrees: {out}");

    // Within the window, a new confirmation opens a new session (each one audited); the
    // earlier credentials cannot be fetched again.
    let (status, again) = reveal(&t.s, &mut t.bo, &id).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["access_key_id"], "ASIADOUBLE0000000002");
    assert_eq!(entries(&t.s, "checkout.root_task_issued").len(), 2);
    assert_eq!(entries(&t.s, "checkout.released").len(), 1, "released once");

    // The checkout's view says what it was for; check-in works as for any checkout.
    let (_, view) = get(&t.bo.client, t.s.url(format!("/api/v1/checkouts/{id}"))).await;
    assert_eq!(view["task_policy"], "S3UnlockBucketPolicy");
    let (status, closed) =
        post(&t.bo.client, t.s.url(format!("/api/v1/checkouts/{id}/close")), json!({"note": "policy deleted"})).await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    let (_, account) = get(&t.ada.client, t.s.url(format!("/api/v1/accounts/{CENTRAL}"))).await;
    assert_eq!(account["state"], "available", "no rotation is due: nothing stored was shown");
}

#[tokio::test]
async fn root_task_requests_are_refused_without_a_quorum_a_known_policy_or_a_session_aws_allows() {
    let sts = StsDouble::start().await;
    let mut t = central_team(&sts).await;
    let code = |got: &(StatusCode, Value)| (got.0, got.1["error"]["code"].as_str().unwrap_or_default().to_owned());

    let got = request_task(&t, json!({"task_policy": "AdministratorAccess"})).await;
    assert_eq!(code(&got), (StatusCode::BAD_REQUEST, "unknown_task_policy".into()), "{}", got.1);
    assert!(got.1["error"]["message"].as_str().unwrap().contains("IAMDeleteRootUserCredentials"));
    let got = request_task(&t, json!({"task_policy": "S3UnlockBucketPolicy", "task_duration_seconds": 901})).await;
    assert_eq!(code(&got), (StatusCode::BAD_REQUEST, "invalid_task_duration".into()), "{}", got.1);
    let got = request_task(&t, json!({})).await;
    assert_eq!(code(&got), (StatusCode::BAD_REQUEST, "task_policy_required".into()), "{}", got.1);
    let got = request_task(&t, json!({"kind": "drill", "task_policy": "IAMDeleteRootUserCredentials"})).await;
    assert_eq!(code(&got), (StatusCode::BAD_REQUEST, "drill_task_read_only".into()), "{}", got.1);
    let got = post(
        &t.bo.client,
        t.s.url("/api/v1/checkouts"),
        json!({"account_id": ACCOUNT, "reason": "r", "task_policy": "S3UnlockBucketPolicy"}),
    )
    .await;
    assert_eq!(code(&got), (StatusCode::BAD_REQUEST, "task_policy_not_applicable".into()), "{}", got.1);

    // Nothing to deposit, no key to split — in the API and in the database itself.
    let got = put(
        &t.ada.client,
        t.s.url(format!("/api/v1/accounts/{CENTRAL}/secrets/root_password")),
        json!({"value": PASSWORD}),
    )
    .await;
    assert_eq!(code(&got), (StatusCode::CONFLICT, "no_stored_credentials".into()), "{}", got.1);
    let got = post(&t.ada.client, t.s.url(format!("/api/v1/accounts/{CENTRAL}/quorum")), json!({})).await;
    assert_eq!(code(&got), (StatusCode::CONFLICT, "no_stored_credentials".into()), "{}", got.1);
    let conn = t.s.db();
    let e = conn
        .execute(
            "INSERT INTO secret_versions (account_id, kind, version, ciphertext, deposited_at, deposited_by) VALUES (?1, 'root_password', 1, x'00', 0, 'x')",
            [CENTRAL],
        )
        .unwrap_err();
    assert!(e.to_string().contains("stores no secrets"), "{e}");

    // A release AWS refuses: nothing issued, the refusal on the record and announced.
    let (status, c) = request_task(&t, json!({"task_policy": "IAMAuditRootUserCredentials"})).await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let id = c["id"].as_str().unwrap().to_owned();
    let e = conn.execute("UPDATE checkouts SET task_duration_seconds = 901 WHERE id = ?1", [&id]).unwrap_err();
    assert!(e.to_string().contains("CHECK") || e.to_string().contains("fixed"), "{e}");
    // What the approvals are for cannot be changed under them.
    let e = conn
        .execute("UPDATE checkouts SET task_policy = 'IAMDeleteRootUserCredentials' WHERE id = ?1", [&id])
        .unwrap_err();
    assert!(e.to_string().contains("fixed when it is requested"), "{e}");
    assert_eq!(decide(&t.s, &mut t.cy, &id, "approve").await.0, StatusCode::OK);
    *sts.state.refuse.lock().unwrap() = Some("AccessDenied");
    let (status, body) = reveal(&t.s, &mut t.bo, &id).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("assume_root_failed")),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("AccessDenied") && message.contains("release again"), "{message}");
    assert!(body.get("credential_process").is_none() && !body.to_string().contains("DoubleSecret"));
    let failed = &entries(&t.s, "checkout.root_task_failed")[0];
    assert_eq!(
        (failed["code"].as_str(), failed["task_policy"].as_str()),
        (Some("AccessDenied"), Some("IAMAuditRootUserCredentials"))
    );
    assert_eq!(announced(&t.s, "checkout.root_task_failed")[0].0, "high");
    assert!(entries(&t.s, "checkout.root_task_issued").is_empty());
    // The double's own checks passed: the refusal was the one we asked for.
    assert!(sts.seen().iter().all(|s| s.problems.is_empty()), "{:?}", sts.seen());
    assert_eq!(sts.seen().len(), 1, "the refused requests never reached STS");

    // Once AWS allows it, the same window serves.
    *sts.state.refuse.lock().unwrap() = None;
    let (expires, _) = stamps(t.s.clock.now() + time::Duration::seconds(900));
    let (status, session) = reveal(&t.s, &mut t.bo, &id).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(session["credential_process"]["Expiration"], expires.as_str(), "900 s by default");
}

#[tokio::test]
async fn a_server_without_root_tasks_refuses_centralized_root_checkouts_at_the_request() {
    let t = team().await;
    create_central(&t).await;
    let got = post(
        &t.bo.client,
        t.s.url("/api/v1/checkouts"),
        json!({"account_id": CENTRAL, "reason": "r", "task_policy": "IAMAuditRootUserCredentials"}),
    )
    .await;
    assert_eq!(
        (got.0, got.1["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("root_tasks_unavailable")),
        "{}",
        got.1
    );
    assert!(got.1["error"]["message"].as_str().unwrap().contains("aws.root_tasks_enabled"));
    let got = post(
        &t.ada.client,
        t.s.url("/api/v1/accounts"),
        json!({"account_id": "444455556666", "alias": "x", "root_email": "r@example.com", "account_type": "root_only"}),
    )
    .await;
    assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.1);
}

#[test]
fn a_root_task_client_without_a_region_is_refused_with_the_reason() {
    let config = SdkConfig::builder().behavior_version(BehaviorVersion::latest()).build();
    let e = RootTasks::with_config(&config).err().unwrap();
    assert!(e.contains("AWS_REGION") && e.contains("regional"), "{e}");
}

/// The double is strict: a request signed with other credentials, or in another region,
/// is refused (so the tests above would fail if breakglass signed wrongly).
#[tokio::test]
async fn the_sts_double_refuses_a_request_signed_with_other_credentials_or_for_another_region() {
    let sts = StsDouble::start().await;
    for (secret, region) in [("not-the-secret", REGION), (SECRET, "us-east-1")] {
        let tasks = root_tasks(&sts.endpoint, region, secret);
        let e = tasks
            .assume_root(CENTRAL, breakglass::domain::root_task::TaskPolicy::IamAuditRootUserCredentials, 900)
            .await
            .err()
            .expect("refused");
        assert_eq!(e.code, "ValidationError", "{e:?}");
    }
    let seen = sts.seen();
    assert!(seen[0].problems.iter().any(|p| p.contains("signature does not verify")), "{:?}", seen[0].problems);
    assert!(seen[1].problems.iter().any(|p| p.contains("credential scope")), "{:?}", seen[1].problems);
}

/// A drill of an account without a stored password: a read-only audit session proves
/// the quorum and the AWS path still work; its checklist is its own, and the drill's
/// entry carries the session AWS opened as evidence.
#[tokio::test]
async fn a_centralized_root_drill_opens_an_audit_session_and_records_it_as_evidence() {
    let sts = StsDouble::start().await;
    let mut t = central_team(&sts).await;
    t.s.clock.set(time::macros::datetime!(2026-12-01 09:00:00 UTC));
    t.s.app.run_drills().await.unwrap();
    sign_in_all(&mut t).await;
    let drill = crate::drills::open_drill_id(&t, CENTRAL).await;

    let (status, c) = request_task(&t, json!({"kind": "drill"})).await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    assert_eq!(c["task_policy"], "IAMAuditRootUserCredentials", "a drill audits, by default and only");
    let id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(decide(&t.s, &mut t.cy, &id, "approve").await.0, StatusCode::OK);

    // AWS refuses at first: the checkout is released, but the drill cannot claim a session.
    *sts.state.refuse.lock().unwrap() = Some("AccessDenied");
    assert_eq!(reveal(&t.s, &mut t.bo, &id).await.0, StatusCode::BAD_GATEWAY);
    *sts.state.refuse.lock().unwrap() = None;
    let claimed = crate::drills::all_pass_of(&breakglass::domain::drill::CENTRALIZED_CHECKLIST);
    let got = crate::drills::submit_checklist(&t.s, &t.bo.client, &drill, &id, claimed).await;
    assert_eq!((got.0, got.1["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("no_root_session")), "{}", got.1);

    let (status, session) = reveal(&t.s, &mut t.bo, &id).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(
        sts.seen()[0].param("TaskPolicyArn.arn"),
        Some("arn:aws:iam::aws:policy/root-task/IAMAuditRootUserCredentials")
    );

    // The drills page shows this account's own checklist and the session as evidence.
    let page = t.bo.client.get(t.s.url("/drills")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("AWS opened the read-only root-task session"), "the centralized checklist");
    assert!(page.contains("ASIADOUBLE0000000002"), "the session as evidence");
    let (_, evidence) = get(&t.bo.client, t.s.url(format!("/api/v1/checkouts/{id}/aws-evidence"))).await;
    assert_eq!(evidence["root_sessions"][0]["access_key_id"], "ASIADOUBLE0000000002", "{evidence}");

    let password_items = crate::drills::all_pass_of(&breakglass::domain::drill::CHECKLIST);
    let got = crate::drills::submit_checklist(&t.s, &t.bo.client, &drill, &id, password_items).await;
    assert_eq!(
        (got.0, got.1["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_checklist")),
        "{}",
        got.1
    );
    let items = crate::drills::all_pass_of(&breakglass::domain::drill::CENTRALIZED_CHECKLIST);
    let got = crate::drills::submit_checklist(&t.s, &t.bo.client, &drill, &id, items).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert_eq!(got.1["state"], "passed");
    let passed = &entries(&t.s, "drill.passed")[0];
    assert_eq!(passed["aws_evidence"]["root_sessions"][0]["access_key_id"], "ASIADOUBLE0000000002", "{passed}");
    assert_eq!(passed["aws_evidence"]["sign_ins"], json!([]));
    let status = breakglass::app::audit::verify_log(&t.s.db(), None).unwrap();
    assert!(status.ok, "{status:?}");
    let (code, out) = crate::audit_replay::python_verify(crate::checkouts::snapshot_db(&t.s).path());
    assert_eq!(code, 0, "the independent Python verifier agrees: {out}");
}

/// A call whose answer never arrives is not "no session": AWS may have opened one. It is
/// reported as `outcome_unknown` (and never retried: a retry could open a second session).
#[tokio::test]
async fn a_lost_answer_is_an_unknown_outcome_not_a_refusal() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener); // nothing listens there any more
    let e = root_tasks(&endpoint, REGION, SECRET)
        .assume_root(CENTRAL, breakglass::domain::root_task::TaskPolicy::IamAuditRootUserCredentials, 900)
        .await
        .err()
        .expect("nothing answers");
    assert_eq!((e.code.as_str(), e.outcome_unknown), ("outcome_unknown", true), "{e:?}");
    // A refusal from AWS is known: no session.
    let sts = StsDouble::start().await;
    *sts.state.refuse.lock().unwrap() = Some("AccessDenied");
    let e = root_tasks(&sts.endpoint, REGION, SECRET)
        .assume_root(CENTRAL, breakglass::domain::root_task::TaskPolicy::IamAuditRootUserCredentials, 900)
        .await
        .err()
        .expect("refused");
    assert_eq!((e.code.as_str(), e.outcome_unknown), ("AccessDenied", false));
    assert_eq!(sts.calls(), 1, "a refusal is not retried either");
}

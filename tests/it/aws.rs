//! The AWS side against a real emulator (moto) on loopback, no mock of any SDK: the
//! CloudFormation templates in deploy/aws/ deployed into moto, CloudTrail-shaped root
//! events put on the event bus with `events:PutEvents`, the member stack's rule
//! routing them to the central queue, breakglass long-polling it with aws-sdk-sqs,
//! reconciling, announcing over SNS (read back from an SQS subscription), the banner
//! and its acknowledgement, duplicates, late events and a queue outage.
//!
//! The test drives moto's CloudFormation and EventBridge through boto3 (installed with
//! `moto[server]`), so that the service's build carries no SDK it does not use.
//!
//! Fixtures: the CloudTrail records follow AWS's documented examples —
//! - root console sign-in, success and failure: CloudTrail User Guide, "AWS Management
//!   Console sign-in events", examples "Root user sign-in event" / "failed sign-in"
//!   (https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-event-reference-aws-console-sign-in-events.html);
//! - a root API call: CloudTrail User Guide, "CloudTrail record contents", `userIdentity`
//!   with `type: Root` (https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-event-reference-user-identity.html);
//! - the envelope: EventBridge User Guide, "Events from AWS services via CloudTrail"
//!   (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-service-event-cloudtrail.html),
//!   whose `detail-type`s are `AWS Console Sign In via CloudTrail` and
//!   `AWS API Call via CloudTrail`.
//!
//! Event ids, times and addresses are changed per test; the fields and their nesting are
//! AWS's.
use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration as StdDuration, Instant},
};

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use breakglass::{
    aws::{PostureReader, RootActivityQueue, RootFeed},
    clock::Clock,
    notify::SnsSink,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    announcements::{Moto, sns_client},
    checkouts::*,
    support::*,
};

// ---- moto through boto3 ------------------------------------------------------------

const BOTO_PRELUDE: &str = "import boto3, json, sys
a = json.loads(sys.argv[1])
kw = dict(endpoint_url=a['endpoint'], region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')
c = lambda n: boto3.client(n, **kw)
out = None
";

/// Run a boto3 script against moto; it sets `out` (JSON) from the arguments in `a`.
pub async fn boto(endpoint: &str, script: &str, mut args: Value) -> Value {
    args["endpoint"] = json!(endpoint);
    let program = format!("{BOTO_PRELUDE}{script}\nprint(json.dumps(out, default=str))");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3").arg("-c").arg(program).arg(args.to_string()).output()
    })
    .await
    .unwrap()
    .expect("python3 with boto3 (installed with moto[server])");
    assert!(out.status.success(), "boto3 script failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The stacks' outputs, by name.
pub struct Stacks {
    pub central: BTreeMap<String, String>,
    pub member: BTreeMap<String, String>,
}

const DEPLOY: &str = "
cfn = c('cloudformation')
def deploy(name, path, params):
    cfn.create_stack(StackName=name, TemplateBody=open(path).read(), Capabilities=['CAPABILITY_NAMED_IAM'],
                     Parameters=[{'ParameterKey': k, 'ParameterValue': v} for k, v in params.items()])
    s = cfn.describe_stacks(StackName=name)['Stacks'][0]
    assert s['StackStatus'] == 'CREATE_COMPLETE', s['StackStatus']
    return {o['OutputKey']: o['OutputValue'] for o in s.get('Outputs', [])}
central = deploy('breakglass-central', a['central'], {'OrganizationId': 'o-abcdefghij', 'ServicePrincipalArn': 'arn:aws:iam::123456789012:role/breakglass-host'})
member = deploy('breakglass-member', a['member'], {'CentralQueueArn': central['RootActivityQueueArn'], 'BreakglassServiceRoleArn': central['ServiceRoleArn']})
out = {'central': central, 'member': member}
";

/// Deploy both templates from deploy/aws/ into moto with CloudFormation.
pub async fn deploy_stacks(moto: &Moto) -> Stacks {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/aws");
    let out = boto(
        &moto.endpoint,
        DEPLOY,
        json!({"central": format!("{dir}/breakglass-central.yaml"), "member": format!("{dir}/breakglass-member.yaml")}),
    )
    .await;
    let map = |v: &Value| -> BTreeMap<String, String> {
        v.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect()
    };
    Stacks { central: map(&out["central"]), member: map(&out["member"]) }
}

/// `events:PutEvents` on the default bus, as CloudTrail's integration does. Returns
/// the wall-clock instant PutEvents answered (to measure ingestion latency).
pub async fn put_events(moto: &Moto, entries: &[(&str, Value)]) -> std::time::SystemTime {
    let entries: Vec<Value> = entries
        .iter()
        .map(|(detail_type, detail)| {
            let source = if *detail_type == SIGN_IN { "aws.signin" } else { "aws.iam" };
            json!({"Source": source, "DetailType": detail_type, "Detail": detail.to_string()})
        })
        .collect();
    let out = boto(
        &moto.endpoint,
        "import time\nout = [c('events').put_events(Entries=a['entries'])['FailedEntryCount'], time.time()]",
        json!({"entries": entries}),
    )
    .await;
    assert_eq!(out[0], 0, "PutEvents refused an entry");
    std::time::UNIX_EPOCH + StdDuration::from_secs_f64(out[1].as_f64().unwrap())
}

pub fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "static"))
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

// ---- CloudTrail fixtures -------------------------------------------------------------

pub const SIGN_IN: &str = "AWS Console Sign In via CloudTrail";
pub const API_CALL: &str = "AWS API Call via CloudTrail";

fn at(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

/// A CloudTrail record in its EventBridge envelope, as the queue delivers it.
pub fn envelope(detail_type: &str, account: &str, detail: Value) -> String {
    json!({"version": "0", "id": uuid::Uuid::new_v4().to_string(), "detail-type": detail_type,
           "source": if detail_type == SIGN_IN { "aws.signin" } else { "aws.iam" }, "account": account,
           "time": detail["eventTime"], "region": "us-east-1", "resources": [], "detail": detail})
    .to_string()
}

/// A root console sign-in record (`Success` or `Failure`).
pub fn root_sign_in(account: &str, event_id: &str, when: OffsetDateTime, outcome: &str, ip: &str) -> Value {
    let mut d = json!({
        "eventVersion": "1.08",
        "userIdentity": {"type": "Root", "principalId": account, "arn": format!("arn:aws:iam::{account}:root"), "accountId": account, "accessKeyId": ""},
        "eventTime": at(when),
        "eventSource": "signin.amazonaws.com",
        "eventName": "ConsoleLogin",
        "awsRegion": "us-east-1",
        "sourceIPAddress": ip,
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "requestParameters": null,
        "responseElements": {"ConsoleLogin": outcome},
        "additionalEventData": {"LoginTo": "https://console.aws.amazon.com/console/home?state=hashArgs%23&isauthcode=true", "MobileVersion": "No", "MFAUsed": "Yes"},
        "eventID": event_id,
        "readOnly": false,
        "eventType": "AwsConsoleSignIn",
        "managementEvent": true,
        "recipientAccountId": account,
        "eventCategory": "Management",
    });
    if outcome == "Failure" {
        d["errorMessage"] = json!("Failed authentication");
        d["additionalEventData"]["MFAUsed"] = json!("No");
    }
    d
}

/// A root API call record (`iam:CreateAccessKey` with root credentials).
pub fn root_api_call(account: &str, event_id: &str, when: OffsetDateTime) -> Value {
    json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": "Root", "principalId": account, "arn": format!("arn:aws:iam::{account}:root"), "accountId": account, "accessKeyId": "ASIAEXAMPLEROOT", "sessionContext": {"attributes": {"creationDate": at(when - Duration::minutes(3)), "mfaAuthenticated": "true"}}},
        "eventTime": at(when),
        "eventSource": "iam.amazonaws.com",
        "eventName": "CreateAccessKey",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2.17.0",
        "requestParameters": null,
        "responseElements": {"accessKey": {"accessKeyId": "AKIAEXAMPLEKEY", "status": "Active", "createDate": at(when)}},
        "eventID": event_id,
        "readOnly": false,
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": account,
        "eventCategory": "Management",
    })
}

// ---- helpers -----------------------------------------------------------------------------

/// The server with SNS to the stack's topic and the feed on the stack's queue
/// (one-second long polls so the test does not wait for 20-second ones).
async fn server_on(moto: &Moto, stacks: &Stacks, queue_endpoint: &str) -> TestServer {
    let sink = SnsSink::with_client(sns_client(&moto.endpoint), &stacks.central["AnnouncementTopicArn"]);
    let queue = RootActivityQueue::with_client(sqs_client(queue_endpoint), &stacks.central["RootActivityQueueUrl"]);
    let feed = RootFeed::new(queue, 1);
    TestServer::start_with_app(
        start_time(),
        |c| {
            c.aws.root_activity_wait_seconds = 1;
        },
        |_| {},
        move |app| app.with_sink(sink).with_root_feed(feed),
    )
    .await
}

/// A queue subscribed to the announcements topic: what an SNS subscriber receives.
async fn subscribe_reader(moto: &Moto, topic: &str) -> String {
    let sqs = sqs_client(&moto.endpoint);
    let url =
        sqs.create_queue().queue_name("announcement-reader").send().await.unwrap().queue_url().unwrap().to_owned();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    sns_client(&moto.endpoint)
        .subscribe()
        .topic_arn(topic)
        .protocol("sqs")
        .endpoint(arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();
    url
}

/// Every announcement delivered so far to the reader queue: the message bodies.
async fn announcements(moto: &Moto, reader: &str) -> Vec<Value> {
    let sqs = sqs_client(&moto.endpoint);
    let mut all = Vec::new();
    loop {
        let got = sqs.receive_message().queue_url(reader).max_number_of_messages(10).send().await.unwrap();
        if got.messages().is_empty() {
            return all;
        }
        for m in got.messages() {
            all.push(serde_json::from_str(m.body().unwrap()).unwrap());
            sqs.delete_message().queue_url(reader).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
        }
    }
}

async fn root_activity(s: &TestServer, p: &Person) -> Value {
    let (status, body) = get(&p.client, s.url("/api/v1/root-activity")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Wait until breakglass has stored `n` root events (or fail after 20 s).
async fn wait_for_events(s: &TestServer, p: &Person, n: usize) -> Value {
    let deadline = Instant::now() + StdDuration::from_secs(20);
    loop {
        let body = root_activity(s, p).await;
        if body["events"].as_array().unwrap().len() >= n {
            return body;
        }
        assert!(Instant::now() < deadline, "only {} of {n} root events arrived: {body}", body["events"]);
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
}

/// Wait until every announcement is delivered (the outbox is drained).
async fn wait_delivered(s: &TestServer) {
    let deadline = Instant::now() + StdDuration::from_secs(20);
    while s.app.outbox_status().await.unwrap().undelivered > 0 {
        assert!(Instant::now() < deadline, "announcements not delivered");
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
}

fn event<'a>(body: &'a Value, event_id: &str) -> &'a Value {
    body["events"].as_array().unwrap().iter().find(|e| e["event_id"] == event_id).unwrap_or_else(|| {
        panic!("no root event {event_id} in {body}");
    })
}

async fn readyz(s: &TestServer) -> Value {
    reqwest::get(s.url("/readyz")).await.unwrap().json().await.unwrap()
}

// ---- tests ---------------------------------------------------------------------------

#[tokio::test]
async fn root_activity_flows_from_eventbridge_through_the_deployed_stacks_and_is_reconciled_with_checkouts() {
    let moto = Moto::start().await;
    let stacks = deploy_stacks(&moto).await;
    assert!(stacks.member["RootActivityRuleArn"].contains(":rule/"), "{:?}", stacks.member);
    let reader = subscribe_reader(&moto, &stacks.central["AnnouncementTopicArn"]).await;
    let mut t = team_on(server_on(&moto, &stacks, &moto.endpoint).await).await;
    let t0 = t.s.clock.now();

    // A released emergency checkout of prod, checked in ten minutes later.
    let checkout = request_id(&t.s, &t.bo, ACCOUNT).await;
    assert_eq!(decide(&t.s, &mut t.cy, &checkout, "approve").await.1["state"], "approved");
    assert_eq!(reveal(&t.s, &mut t.bo, &checkout).await.0, StatusCode::OK);
    t.s.clock.advance(Duration::minutes(10));
    let (status, _) =
        post(&t.bo.client, t.s.url(format!("/api/v1/checkouts/{checkout}/close")), json!({"note": "done"})).await;
    assert_eq!(status, StatusCode::OK);

    // Root signs in during it (explained), and again two hours later (unexplained);
    // someone fails the root password; a root API call in an account not in custody;
    // an IAM user's sign-in, which the rule does not route at all.
    t.s.clock.advance(Duration::hours(2));
    sign_in_all(&mut t).await;
    let inside = "0c3f6a2e-1111-4a8b-9d6e-000000000001";
    let outside = "0c3f6a2e-1111-4a8b-9d6e-000000000002";
    let failed = "0c3f6a2e-1111-4a8b-9d6e-000000000003";
    let stranger = "0c3f6a2e-1111-4a8b-9d6e-000000000004";
    let mut iam_user = root_sign_in(ACCOUNT, "0c3f6a2e-1111-4a8b-9d6e-000000000005", t0, "Success", "192.0.2.1");
    iam_user["userIdentity"]["type"] = json!("IAMUser");
    let answered = put_events(
        &moto,
        &[
            (SIGN_IN, root_sign_in(ACCOUNT, inside, t0 + Duration::minutes(2), "Success", "192.0.2.10")),
            (SIGN_IN, root_sign_in(ACCOUNT, outside, t0 + Duration::hours(2), "Success", "203.0.113.66")),
            (SIGN_IN, root_sign_in(ACCOUNT, failed, t0 + Duration::hours(2), "Failure", "203.0.113.66")),
            (API_CALL, root_api_call("999988887777", stranger, t0 + Duration::hours(2))),
            (SIGN_IN, iam_user),
        ],
    )
    .await;
    let deadline = Instant::now() + StdDuration::from_secs(20);
    while t.s.app.root_feed_health().unwrap().stored < 4 {
        assert!(Instant::now() < deadline, "the events did not arrive");
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
    println!(
        "ingestion latency: PutEvents answered → 4 events stored, at most {:?} later",
        std::time::SystemTime::now().duration_since(answered).unwrap_or_default()
    );
    let body = wait_for_events(&t.s, &t.bo, 4).await;

    let e = event(&body, inside);
    assert_eq!(e["status"], "explained", "{e}");
    assert_eq!(e["explanation"]["checkout"], checkout.as_str());
    assert_eq!(e["explanation"]["requester"], "Bo Requester <bo@example.com>");
    assert_eq!(e["explanation"]["reason"], "Billing lockout: restore IAM admin role");
    assert_eq!(e["explanation"]["ticket"], "INC-4711");
    let e = event(&body, outside);
    assert_eq!((e["status"].as_str(), e["source_ip"].as_str()), (Some("unexplained"), Some("203.0.113.66")));
    assert!(e["explanation"].is_null());
    assert_eq!(event(&body, failed)["status"], "failed_sign_in");
    let e = event(&body, stranger);
    assert_eq!((e["status"].as_str(), e["kind"].as_str()), (Some("unexplained"), Some("api_call")));
    assert_eq!(body["events"].as_array().unwrap().len(), 4, "the IAM user's sign-in is not root activity");
    let unacked: Vec<&str> =
        body["unacknowledged"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(unacked, [outside, stranger], "the banner lists unexplained use only, oldest first");
    // Monitoring sees it too (`breakglass_root_activity_unexplained_open`, alert rule in deploy/).
    assert_eq!(t.s.app.metrics_snapshot().await.unwrap().root_activity_unexplained_open, 2);

    // Every custodian's dashboard shows the red banner; only admins get the form.
    let page = t.bo.client.get(t.s.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("UNEXPLAINED ROOT USE") && page.contains(outside) && page.contains("203.0.113.66"), "{page}");
    assert!(!page.contains("data-action=\"acknowledge-root\""));
    let page = t.ada.client.get(t.s.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("data-action=\"acknowledge-root\""));

    // SNS: critical for each unexplained use, high for the failed sign-in, info for
    // the explained one — read back from a subscribed queue.
    wait_delivered(&t.s).await;
    let got = announcements(&moto, &reader).await;
    let of = |event: &str| got.iter().filter(|m| m["event"] == event).collect::<Vec<_>>();
    let critical = of("root_activity.unexplained");
    assert_eq!(critical.len(), 2, "{got:?}");
    assert!(critical.iter().all(|m| m["severity"] == "critical"));
    assert!(critical.iter().any(|m| m["summary"].as_str().unwrap().contains("UNEXPLAINED ROOT USE in prod-payer")));
    assert!(
        critical.iter().any(|m| m["summary"].as_str().unwrap().contains("not in breakglass custody")),
        "{critical:?}"
    );
    let high = of("root_activity.sign_in_failed");
    assert_eq!((high.len(), high[0]["severity"].as_str()), (1, Some("high")));
    let info = of("root_activity.explained");
    assert_eq!(info[0]["checkout"]["id"], checkout.as_str());

    // The same CloudTrail event delivered again (EventBridge and SQS are at-least-once):
    // stored once. A late event — inside the checkout, arriving hours after it ended —
    // is still explained by its time in AWS.
    let late = "0c3f6a2e-1111-4a8b-9d6e-000000000006";
    t.s.clock.advance(Duration::hours(3));
    sign_in_all(&mut t).await;
    put_events(
        &moto,
        &[
            (SIGN_IN, root_sign_in(ACCOUNT, inside, t0 + Duration::minutes(2), "Success", "192.0.2.10")),
            (API_CALL, root_api_call(ACCOUNT, late, t0 + Duration::minutes(5))),
        ],
    )
    .await;
    let body = wait_for_events(&t.s, &t.bo, 5).await;
    let e = event(&body, late);
    assert_eq!(e["status"], "explained");
    assert_eq!(e["explanation"]["checkout"], checkout.as_str());
    assert!(e["delay_seconds"].as_i64().unwrap() > 5 * 3600 - 600, "{e}");
    let deadline = Instant::now() + StdDuration::from_secs(10);
    while t.s.app.root_feed_health().unwrap().duplicates < 1 {
        assert!(Instant::now() < deadline, "the redelivery was not seen");
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    assert_eq!(root_activity(&t.s, &t.bo).await["events"].as_array().unwrap().len(), 5, "stored once");

    // Acknowledging: an admin with a reason; every refusal with its code.
    let ack = |id: &str| t.s.url(format!("/api/v1/root-activity/{id}/acknowledge"));
    let (status, body) = post(&t.bo.client, ack(outside), json!({"reason": "it was me"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden_role")));
    let (status, body) = post(&t.ada.client, ack(outside), json!({"reason": "  "})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("reason_required")));
    let (status, body) = post(&t.ada.client, ack(inside), json!({"reason": "x"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_unexplained")));
    let (status, body) = post(&t.ada.client, ack("no-such-event"), json!({"reason": "x"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("root_event_not_found")));
    let (status, body) = post(
        &t.ada.client,
        ack(outside),
        json!({"reason": "Cy reset MFA with AWS support on the phone, INC-4712; checkout to follow"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "acknowledged");
    assert_eq!(body["acknowledged_by"], "Ada Admin <ada@example.com>");
    let (status, body) = post(&t.ada.client, ack(outside), json!({"reason": "again"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("already_acknowledged")));
    let page = t.bo.client.get(t.s.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(!page.contains(outside) && page.contains(stranger), "the acknowledged banner is gone, the other stays");
    assert_eq!(t.s.app.metrics_snapshot().await.unwrap().root_activity_unexplained_open, 1);

    // Audited (and the chain still verifies); the auditor's page lists it all.
    let (status, log) = get(&t.ada.client, t.s.url("/api/v1/audit?action_prefix=root_activity.")).await;
    assert_eq!(status, StatusCode::OK);
    let actions: Vec<&str> = log["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "root_activity.acknowledged").count(), 1, "{actions:?}");
    assert_eq!(actions.len(), 6, "five events, one acknowledgement: {actions:?}");
    let (status, v) = get(&t.ada.client, t.s.url("/api/v1/audit/verify")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["ok"], true, "{v}");
    let page = t.ada.client.get(t.s.url("/audit")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"root-activity\"") && page.contains("INC-4712") && page.contains("INC-4711"));

    // Nothing left behind on the queue; the health part says the feed works.
    let ready = readyz(&t.s).await;
    assert_eq!(ready["root_activity"]["status"], "ok", "{ready}");
    assert_eq!(ready["root_activity"]["stored"], 5);
    let left = boto(
        &moto.endpoint,
        "out = c('sqs').get_queue_attributes(QueueUrl=a['q'], AttributeNames=['All'])['Attributes']",
        json!({"q": stacks.central["RootActivityQueueUrl"]}),
    )
    .await;
    assert_eq!(left["ApproximateNumberOfMessages"], "0", "{left}");
    assert_eq!(left["ApproximateNumberOfMessagesNotVisible"], "0", "every message deleted after its commit");
}

#[tokio::test]
async fn messages_that_are_not_root_events_are_dropped_or_left_for_the_dead_letter_queue() {
    let moto = Moto::start().await;
    let stacks = deploy_stacks(&moto).await;
    let t = team_on(server_on(&moto, &stacks, &moto.endpoint).await).await;
    let q = &stacks.central["RootActivityQueueUrl"];
    let sqs = sqs_client(&moto.endpoint);
    // A non-root event (a rule wider than ours) and something that is no event at all.
    let mut user =
        root_sign_in(ACCOUNT, "0c3f6a2e-2222-4a8b-9d6e-000000000001", t.s.clock.now(), "Success", "192.0.2.1");
    user["userIdentity"]["type"] = json!("IAMUser");
    let envelope = json!({"version": "0", "id": "x", "detail-type": SIGN_IN, "source": "aws.signin", "account": ACCOUNT,
                          "time": "2026-11-22T10:00:00Z", "region": "us-east-1", "resources": [], "detail": user});
    sqs.send_message().queue_url(q).message_body(envelope.to_string()).send().await.unwrap();
    sqs.send_message().queue_url(q).message_body("hello, not json").send().await.unwrap();
    let deadline = Instant::now() + StdDuration::from_secs(20);
    loop {
        let h = t.s.app.root_feed_health().unwrap();
        if h.ignored >= 1 && h.malformed >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{h:?}");
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    assert!(root_activity(&t.s, &t.ada).await["events"].as_array().unwrap().is_empty());
    let (status, body) = post(&t.ada.client, t.s.url(format!("/api/v1/accounts/{ACCOUNT}/posture")), json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("posture_not_configured")),
        "without aws.posture_enabled"
    );
    let ready = readyz(&t.s).await;
    assert_eq!(ready["root_activity"]["status"], "degraded", "a malformed message is worth a look: {ready}");
    assert!(
        !ready["failing"].as_array().unwrap().contains(&json!("root_activity")),
        "but it never makes the service unready: {ready}"
    );
    // The malformed one was not deleted: it is in flight, waiting to be redelivered
    // (and, after maxReceiveCount, moved to the dead-letter queue by SQS).
    let left = boto(
        &moto.endpoint,
        "out = c('sqs').get_queue_attributes(QueueUrl=a['q'], AttributeNames=['All'])['Attributes']",
        json!({"q": q}),
    )
    .await;
    let total = left["ApproximateNumberOfMessages"].as_str().unwrap().parse::<i64>().unwrap()
        + left["ApproximateNumberOfMessagesNotVisible"].as_str().unwrap().parse::<i64>().unwrap();
    assert_eq!(total, 1, "{left}");
}

/// A TCP forwarder to moto that can be switched off (connections are dropped): the
/// queue unreachable, then back.
struct Gate {
    open: Arc<AtomicBool>,
    endpoint: String,
    _task: tokio::task::JoinHandle<()>,
}

impl Gate {
    async fn to(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let target = target.trim_start_matches("http://").to_owned();
        let open = Arc::new(AtomicBool::new(true));
        let gate = open.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !gate.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { open, endpoint, _task: task }
    }
}

#[tokio::test]
async fn with_the_queue_unreachable_the_service_works_says_so_and_loses_nothing_when_it_is_back() {
    let moto = Moto::start().await;
    let stacks = deploy_stacks(&moto).await;
    let gate = Gate::to(&moto.endpoint).await;
    gate.open.store(false, Ordering::SeqCst);
    let mut t = team_on(server_on(&moto, &stacks, &gate.endpoint).await).await;
    let t0 = t.s.clock.now();
    let ids: Vec<String> = (1..=3).map(|i| format!("0c3f6a2e-3333-4a8b-9d6e-00000000000{i}")).collect();
    put_events(
        &moto,
        &ids.iter()
            .map(|id| (SIGN_IN, root_sign_in(ACCOUNT, id, t0 - Duration::hours(1), "Success", "203.0.113.9")))
            .collect::<Vec<_>>(),
    )
    .await;
    // The feed reports the outage; the service stays ready and a checkout still works.
    let deadline = Instant::now() + StdDuration::from_secs(20);
    while t.s.app.root_feed_health().unwrap().consecutive_failures < 2 {
        assert!(Instant::now() < deadline, "the outage was not noticed");
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    let ready = readyz(&t.s).await;
    assert!(!ready["failing"].as_array().unwrap().contains(&json!("root_activity")), "{ready}");
    assert_eq!(ready["root_activity"]["status"], "degraded", "{ready}");
    let (_, body) = get(&t.ada.client, t.s.url("/api/v1/root-activity")).await;
    assert!(body["feed"]["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    let id = request_id(&t.s, &t.bo, ACCOUNT).await;
    assert_eq!(decide(&t.s, &mut t.cy, &id, "approve").await.1["state"], "approved");
    assert_eq!(reveal(&t.s, &mut t.bo, &id).await.0, StatusCode::OK, "a release never waits for AWS");
    assert!(root_activity(&t.s, &t.bo).await["events"].as_array().unwrap().is_empty());

    // Back: everything arrives, once, and the feed is healthy again.
    gate.open.store(true, Ordering::SeqCst);
    let body = wait_for_events(&t.s, &t.bo, 3).await;
    for id in &ids {
        assert_eq!(event(&body, id)["status"], "unexplained", "an hour before any release");
    }
    let deadline = Instant::now() + StdDuration::from_secs(20);
    while readyz(&t.s).await["root_activity"]["consecutive_failures"] != 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    assert_eq!(body["events"].as_array().unwrap().len(), 3);
}

// ---- root posture ----------------------------------------------------------------------

/// The standard SDK configuration (`aws_config::defaults`, as `serve` loads it) pointed
/// at moto with static credentials.
async fn moto_sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "static"))
        .load()
        .await
}

#[tokio::test]
async fn root_posture_is_read_from_iam_account_and_organizations_through_the_posture_role_and_changes_are_announced() {
    let moto = Moto::start().await;
    let stacks = deploy_stacks(&moto).await;
    assert!(stacks.member["PostureRoleArn"].ends_with(":role/breakglass-posture-reader"));
    // An organization (moto's account 123456789012 = ACCOUNT is its management account,
    // root e-mail master@example.com) and two of the three alternate contacts.
    boto(
        &moto.endpoint,
        "c('organizations').create_organization(FeatureSet='ALL')
for t in ['BILLING', 'OPERATIONS']:
    c('account').put_alternate_contact(AlternateContactType=t, EmailAddress=t.lower() + '@example.com', Name='Team', PhoneNumber='+1 555 0100', Title='Team')
out = True",
        json!({}),
    )
    .await;
    let reader = PostureReader::with_config(moto_sdk_config(&moto.endpoint).await, "breakglass-posture-reader");
    let s = TestServer::start_with_app(start_time(), |_| {}, |_| {}, move |app| app.with_posture_reader(reader)).await;
    let t = team_on(s).await;
    let url = t.s.url(format!("/api/v1/accounts/{ACCOUNT}/posture"));

    let (status, body) = get(&t.bo.client, &url).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("posture_not_checked")));
    let (status, body) = post(&t.bo.client, &url, json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden_role")));
    let (status, body) = post(&t.ada.client, t.s.url("/api/v1/accounts/111111111111/posture"), json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("account_not_found")));

    let (status, first) = post(&t.ada.client, &url, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let r = &first["report"];
    // moto's root user has no MFA device and no access keys.
    assert_eq!((r["root_mfa_enabled"].as_bool(), r["root_access_keys_present"].as_bool()), (Some(false), Some(false)));
    assert_eq!(r["root_email"], "master@example.com", "from organizations:DescribeAccount");
    assert_eq!(r["alternate_contacts"]["BILLING"], "billing@example.com");
    assert!(r["alternate_contacts"]["SECURITY"].is_null(), "ResourceNotFound is a missing contact: {r}");
    // moto does not implement iam:ListOrganizationsFeatures: unknown, and said so.
    assert!(r["centralized_root_access"].is_null());
    assert!(
        r["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("iam:ListOrganizationsFeatures")),
        "{r}"
    );
    assert_eq!(
        first["findings"],
        json!(["alternate_contact_missing:security", "root_email_mismatch", "root_mfa_off"]),
        "the root e-mail on file is root+prod-payer@example.com"
    );
    assert_eq!(first["changed"], true);
    assert_eq!(
        first["checklist_evidence"],
        json!([{"item": "no_root_access_keys", "passes": true}, {"item": "alternate_contacts_correct", "passes": false}])
    );

    // Someone sets the security contact: the next reading resolves that finding and is
    // announced; a reading with nothing new writes nothing.
    boto(
        &moto.endpoint,
        "c('account').put_alternate_contact(AlternateContactType='SECURITY', EmailAddress='security@example.com', Name='Sec', PhoneNumber='+1 555 0101', Title='Sec')
out = True",
        json!({}),
    )
    .await;
    let (status, second) = post(&t.ada.client, &url, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["findings"], json!(["root_email_mismatch", "root_mfa_off"]));
    assert_eq!(second["changed"], true);
    assert_eq!(t.s.app.check_all_postures().await, 1, "the scheduled run: the sandbox account's first reading only");
    assert_eq!(t.s.app.check_all_postures().await, 0, "nothing changed since");

    let (_, outbox) = get(&t.ada.client, t.s.url("/api/v1/outbox")).await;
    let posture: Vec<&Value> =
        outbox["messages"].as_array().unwrap().iter().filter(|m| m["event"] == "account.posture_changed").collect();
    let posture: Vec<&Value> = posture.into_iter().filter(|m| m["account_id"] == ACCOUNT).collect();
    assert_eq!(posture.len(), 2, "one per change: {posture:?}");
    let severities: Vec<&str> = posture.iter().map(|m| m["severity"].as_str().unwrap()).collect();
    assert!(severities.contains(&"high") && severities.contains(&"info"), "{severities:?}");
    let (_, log) = get(&t.ada.client, t.s.url("/api/v1/audit?action_prefix=account.posture_changed")).await;
    let details: Vec<Value> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str(e["details"].as_str().unwrap()).unwrap())
        .collect();
    assert!(details.iter().any(|d| d["resolved"] == json!(["alternate_contact_missing:security"])), "{details:?}");

    // Every custodian sees the findings on the dashboard.
    let page = t.bo.client.get(t.s.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"posture-findings\"") && page.contains("root_email_mismatch, root_mfa_off"), "{page}");
    let (status, got) = get(&t.bo.client, &url).await;
    assert_eq!((status, got["findings"].clone()), (StatusCode::OK, second["findings"].clone()));

    // When a drill falls due, its checklist shows the posture as pre-filled evidence.
    let mut t = t;
    open_drills(&mut t).await;
    let page = t.bo.client.get(t.s.url("/drills")).send().await.unwrap().text().await.unwrap();
    let at = page.find("The root user has no access keys").expect("the checklist item");
    assert!(page[at..].starts_with("The root user has no access keys</legend>"), "the item's legend");
    let after = &page[at..at + 400];
    assert!(after.contains("AWS posture (read 2026-11-22T10:00:00Z): passes."), "{after}");
    let at = page.find("Alternate contacts (billing, operations, security) are correct").unwrap();
    assert!(
        page[at..at + 400].contains("AWS posture (read 2026-11-22T10:00:00Z): passes."),
        "the contact was set since"
    );
}

// ---- drill evidence ----------------------------------------------------------------------

#[tokio::test]
async fn a_drill_checkout_shows_the_root_sign_in_aws_reported_inside_its_window_as_evidence() {
    let mut t = team().await;
    open_drills(&mut t).await;
    let (status, body) = post(
        &t.bo.client,
        t.s.url("/api/v1/checkouts"),
        json!({"account_id": ACCOUNT, "kind": "drill", "reason": "monthly drill", "duration_minutes": 30}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let url = t.s.url(format!("/api/v1/checkouts/{id}/aws-evidence"));
    let (status, before) = get(&t.bo.client, &url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(before["sign_ins"].as_array().unwrap().is_empty() && before["items"].as_object().unwrap().is_empty());
    assert_eq!(decide(&t.s, &mut t.cy, &id, "approve").await.1["state"], "approved");
    assert_eq!(reveal(&t.s, &mut t.bo, &id).await.0, StatusCode::OK);
    let released = t.s.clock.now();

    // A sign-in without MFA a day before (not this drill's), a failed one, and the
    // drill's sign-in with MFA three minutes after the release, as the feed delivers them.
    let envelope = |detail: Value| {
        json!({"version": "0", "id": uuid::Uuid::new_v4().to_string(), "detail-type": SIGN_IN, "source": "aws.signin",
               "account": ACCOUNT, "time": "2026-12-01T09:05:00Z", "region": "us-east-1", "resources": [], "detail": detail})
        .to_string()
    };
    let mut earlier = root_sign_in(
        ACCOUNT,
        "0c3f6a2e-4444-4a8b-9d6e-000000000001",
        released - Duration::days(1),
        "Success",
        "192.0.2.5",
    );
    earlier["additionalEventData"]["MFAUsed"] = json!("No");
    let failed = root_sign_in(
        ACCOUNT,
        "0c3f6a2e-4444-4a8b-9d6e-000000000002",
        released + Duration::minutes(2),
        "Failure",
        "192.0.2.5",
    );
    let drill = root_sign_in(
        ACCOUNT,
        "0c3f6a2e-4444-4a8b-9d6e-000000000003",
        released + Duration::minutes(3),
        "Success",
        "192.0.2.5",
    );
    for d in [earlier, failed, drill] {
        t.s.app.ingest_root_event(&envelope(d)).await.unwrap();
    }
    let (status, got) = get(&t.bo.client, &url).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let ids: Vec<&str> = got["sign_ins"].as_array().unwrap().iter().map(|s| s["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["0c3f6a2e-4444-4a8b-9d6e-000000000003"], "only successful sign-ins inside the window");
    assert_eq!(got["items"]["root_password_accepted"]["event_id"], "0c3f6a2e-4444-4a8b-9d6e-000000000003");
    assert_eq!(got["items"]["mfa_accepted"]["event_time"], "2026-12-01T09:03:00Z");
    let (status, body) = get(&t.bo.client, t.s.url("/api/v1/checkouts/nope/aws-evidence")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("checkout_not_found")));

    // The drills page puts the evidence next to the items, and the drill's entry keeps it.
    let page = t.bo.client.get(t.s.url("/drills")).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains(
            "AWS: root sign-in at 2026-12-01T09:03:00Z with MFA, CloudTrail event 0c3f6a2e-4444-4a8b-9d6e-000000000003."
        ),
        "the drills page shows the sign-in next to the items"
    );
    let drill = crate::drills::open_drill_id(&t, ACCOUNT).await;
    let items = crate::drills::all_pass_of(&breakglass::domain::drill::CHECKLIST);
    let (status, d) = crate::drills::submit_checklist(&t.s, &t.bo.client, &drill, &id, items).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    let details: String =
        t.s.db().query_row("SELECT details FROM audit_log WHERE action = 'drill.passed'", [], |r| r.get(0)).unwrap();
    let details: Value = serde_json::from_str(&details).unwrap();
    assert_eq!(details["aws_evidence"]["sign_ins"][0]["event_id"], "0c3f6a2e-4444-4a8b-9d6e-000000000003", "{details}");
}

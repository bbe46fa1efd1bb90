//! Root activity from AWS: CloudTrail events about an account's root user, as
//! EventBridge delivers them to the central queue, and the rule that decides whether
//! a checkout explains one. Pure: parsing and reconciliation take their inputs.
//!
//! Shapes (docs/root-activity.md cites AWS's documentation for each):
//!
//! - the EventBridge envelope `{version, id, detail-type, source, account, time,
//!   region, resources, detail}`;
//! - `detail-type = "AWS Console Sign In via CloudTrail"`: a `ConsoleLogin` record with
//!   `responseElements.ConsoleLogin` = `Success` | `Failure`;
//! - `detail-type = "AWS API Call via CloudTrail"` with `userIdentity.type = Root`: a
//!   root API call (also what a root session opened with `sts:AssumeRoot` does).
use serde::Serialize;
use serde_json::Value;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// What a root event is, for reconciliation and severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RootEventKind {
    /// A successful root sign-in to the console.
    SignIn,
    /// A root sign-in that failed (wrong password or MFA): someone is trying.
    SignInFailed,
    /// An API call made with root credentials (access keys or a root session).
    ApiCall,
}

impl RootEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignIn => "sign_in",
            Self::SignInFailed => "sign_in_failed",
            Self::ApiCall => "api_call",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sign_in" => Self::SignIn,
            "sign_in_failed" => Self::SignInFailed,
            "api_call" => Self::ApiCall,
            _ => return None,
        })
    }
}

/// One root event, as parsed from the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootEvent {
    /// CloudTrail's `eventID`: the same for every delivery of one event (dedup key).
    pub event_id: String,
    /// The 12-digit account whose root user acted.
    pub account_id: String,
    pub kind: RootEventKind,
    /// CloudTrail `eventName` (`ConsoleLogin`, `CreateAccessKey`, …).
    pub event_name: String,
    pub event_source: String,
    /// CloudTrail `eventTime`, unix seconds: when it happened in AWS.
    pub event_time: i64,
    pub region: String,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    /// `additionalEventData.MFAUsed` for sign-ins (`Yes`/`No`).
    pub mfa_used: Option<String>,
    /// `errorMessage`/`errorCode` when the call or sign-in failed.
    pub error: Option<String>,
    /// The CloudTrail record itself (`detail`), kept as evidence.
    pub detail: Value,
}

/// Why a message is not a root event we store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// Not JSON, or not an EventBridge envelope with a CloudTrail record: left on the
    /// queue so that its redrive policy moves it to the dead-letter queue.
    #[error("not a CloudTrail event envelope: {0}")]
    Malformed(String),
    /// A well-formed event that is not about a root user (a too-wide rule): deleted.
    #[error("not a root event: {0}")]
    NotRoot(String),
}

fn text(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parse one SQS message body: an EventBridge envelope around a CloudTrail record.
pub fn parse_envelope(body: &str) -> Result<RootEvent, FeedError> {
    let v: Value = serde_json::from_str(body).map_err(|e| FeedError::Malformed(format!("invalid JSON: {e}")))?;
    let detail_type = text(&v, "/detail-type").ok_or_else(|| FeedError::Malformed("no detail-type".into()))?;
    let detail = v.get("detail").filter(|d| d.is_object()).ok_or_else(|| FeedError::Malformed("no detail".into()))?;
    let event_id = text(detail, "/eventID").ok_or_else(|| FeedError::Malformed("no detail.eventID".into()))?;
    let event_name = text(detail, "/eventName").ok_or_else(|| FeedError::Malformed("no detail.eventName".into()))?;
    let time_text = text(detail, "/eventTime").ok_or_else(|| FeedError::Malformed("no detail.eventTime".into()))?;
    let event_time = OffsetDateTime::parse(&time_text, &Rfc3339)
        .map_err(|e| FeedError::Malformed(format!("detail.eventTime {time_text:?}: {e}")))?
        .unix_timestamp();
    let identity = text(detail, "/userIdentity/type").unwrap_or_default();
    if identity != "Root" {
        return Err(FeedError::NotRoot(format!("{event_name} by a {identity:?} identity")));
    }
    // The account the root user belongs to; the envelope's `account` is where the
    // event was recorded (the same for root events).
    let account_id = text(detail, "/userIdentity/accountId")
        .or_else(|| text(detail, "/recipientAccountId"))
        .or_else(|| text(&v, "/account"))
        .filter(|a| is_account_id(a))
        .ok_or_else(|| FeedError::Malformed("no 12-digit account id".into()))?;
    let error = text(detail, "/errorMessage").or_else(|| text(detail, "/errorCode"));
    let kind = match detail_type.as_str() {
        "AWS Console Sign In via CloudTrail" => {
            let outcome = text(detail, "/responseElements/ConsoleLogin");
            if outcome.as_deref() == Some("Success") && error.is_none() {
                RootEventKind::SignIn
            } else {
                RootEventKind::SignInFailed
            }
        }
        "AWS API Call via CloudTrail" => RootEventKind::ApiCall,
        other => return Err(FeedError::NotRoot(format!("detail-type {other:?}"))),
    };
    Ok(RootEvent {
        event_id,
        account_id,
        kind,
        event_name,
        event_source: text(detail, "/eventSource").unwrap_or_default(),
        event_time,
        region: text(detail, "/awsRegion").or_else(|| text(&v, "/region")).unwrap_or_default(),
        source_ip: text(detail, "/sourceIPAddress"),
        user_agent: text(detail, "/userAgent"),
        mfa_used: text(detail, "/additionalEventData/MFAUsed"),
        error,
        detail: detail.clone(),
    })
}

/// A released checkout of an account, as a time window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseWindow {
    pub checkout_id: String,
    pub released_at: i64,
    /// When it ended (check-in, window end); `None` while it is still released.
    pub ended_at: Option<i64>,
}

/// The checkout that explains a root event at `event_time`: released at most
/// `slack` seconds after the event and not ended more than `slack` seconds before
/// it. The slack absorbs clock differences and AWS's delivery delay; it is the only
/// tolerance. The latest release wins when windows overlap.
pub fn explaining(event_time: i64, windows: &[ReleaseWindow], slack: i64) -> Option<&ReleaseWindow> {
    windows
        .iter()
        .filter(|w| w.released_at - slack <= event_time && w.ended_at.is_none_or(|end| event_time <= end + slack))
        .max_by_key(|w| w.released_at)
}

/// How a stored root event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RootEventStatus {
    /// Inside a released checkout of the same account.
    Explained,
    /// No checkout explains it and nobody has acknowledged it: the banner shows.
    Unexplained,
    /// Unexplained, then acknowledged by an admin with a reason.
    Acknowledged,
    /// A failed root sign-in: nobody got in; announced `high`, no acknowledgement.
    FailedSignIn,
}

impl RootEventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Explained => "explained",
            Self::Unexplained => "unexplained",
            Self::Acknowledged => "acknowledged",
            Self::FailedSignIn => "failed_sign_in",
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn envelope(detail_type: &str, detail: Value) -> String {
        json!({"version": "0", "id": "6f87d04b-9f74-4f04-a780-7acf4b0a9b38", "detail-type": detail_type,
               "source": "aws.signin", "account": "111122223333", "time": "2026-11-21T09:05:00Z",
               "region": "us-east-1", "resources": [], "detail": detail})
        .to_string()
    }

    fn sign_in(outcome: &str) -> Value {
        json!({"eventVersion": "1.08",
               "userIdentity": {"type": "Root", "principalId": "111122223333", "arn": "arn:aws:iam::111122223333:root",
                                "accountId": "111122223333", "accessKeyId": ""},
               "eventTime": "2026-11-21T09:04:31Z", "eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin",
               "awsRegion": "us-east-1", "sourceIPAddress": "192.0.2.10", "userAgent": "Mozilla/5.0",
               "requestParameters": null, "responseElements": {"ConsoleLogin": outcome},
               "additionalEventData": {"LoginTo": "https://console.aws.amazon.com/console/home", "MobileVersion": "No", "MFAUsed": "Yes"},
               "eventID": "3fcfb586-bd4f-4c8c-bc2b-2a2a1d0ae3b4", "readOnly": false, "eventType": "AwsConsoleSignIn",
               "managementEvent": true, "recipientAccountId": "111122223333", "eventCategory": "Management"})
    }

    #[test]
    fn a_root_console_sign_in_parses_with_its_cloudtrail_event_id_and_time() {
        let e = parse_envelope(&envelope("AWS Console Sign In via CloudTrail", sign_in("Success"))).unwrap();
        assert_eq!(e.kind, RootEventKind::SignIn);
        assert_eq!(e.event_id, "3fcfb586-bd4f-4c8c-bc2b-2a2a1d0ae3b4");
        assert_eq!(e.account_id, "111122223333");
        assert_eq!(e.event_time, time::macros::datetime!(2026-11-21 09:04:31 UTC).unix_timestamp());
        assert_eq!(e.mfa_used.as_deref(), Some("Yes"));
        let mut failed = sign_in("Failure");
        failed["errorMessage"] = json!("Failed authentication");
        let e = parse_envelope(&envelope("AWS Console Sign In via CloudTrail", failed)).unwrap();
        assert_eq!((e.kind, e.error.as_deref()), (RootEventKind::SignInFailed, Some("Failed authentication")));
    }

    #[test]
    fn non_root_identities_and_garbage_are_told_apart() {
        let mut user = sign_in("Success");
        user["userIdentity"]["type"] = json!("IAMUser");
        assert!(matches!(
            parse_envelope(&envelope("AWS Console Sign In via CloudTrail", user)),
            Err(FeedError::NotRoot(_))
        ));
        assert!(matches!(parse_envelope("{not json"), Err(FeedError::Malformed(_))));
        let mut no_id = sign_in("Success");
        no_id.as_object_mut().unwrap().remove("eventID");
        assert!(matches!(
            parse_envelope(&envelope("AWS Console Sign In via CloudTrail", no_id)),
            Err(FeedError::Malformed(_))
        ));
        let mut bad_account = sign_in("Success");
        bad_account["userIdentity"]["accountId"] = json!("12345");
        bad_account["recipientAccountId"] = json!("x");
        let body =
            envelope("AWS Console Sign In via CloudTrail", bad_account).replace("111122223333\",\"time", "x\",\"time");
        assert!(parse_envelope(&body).is_err());
    }

    #[test]
    fn a_checkout_explains_events_inside_its_window_plus_the_slack_only() {
        let w = [
            ReleaseWindow { checkout_id: "old".into(), released_at: 1_000, ended_at: Some(2_000) },
            ReleaseWindow { checkout_id: "open".into(), released_at: 10_000, ended_at: None },
        ];
        let slack = 300;
        assert_eq!(explaining(1_500, &w, slack).map(|w| w.checkout_id.as_str()), Some("old"));
        assert_eq!(explaining(700, &w, slack).map(|w| w.checkout_id.as_str()), Some("old"), "skew before release");
        assert_eq!(explaining(2_300, &w, slack).map(|w| w.checkout_id.as_str()), Some("old"), "at the slack's end");
        assert_eq!(explaining(2_301, &w, slack), None, "one second past the slack");
        assert_eq!(explaining(699, &w, slack), None);
        assert_eq!(explaining(50_000, &w, slack).map(|w| w.checkout_id.as_str()), Some("open"));
        assert_eq!(explaining(9_699, &w, slack), None);
    }
}

//! `sts:AssumeRoot`: a short root session in a member account, scoped by one
//! AWS-managed root-task policy. Called with the service's own credentials (the
//! management account or the IAM delegated administrator) through the standard SDK
//! chain, always at a regional endpoint (AssumeRoot has no global one). The
//! credentials it returns are handed to the requester once and never stored.
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_sts::types::PolicyDescriptorType;
use secrecy::SecretString;

use super::short;
use crate::domain::root_task::{TaskPolicy, partition_of};

/// Temporary credentials for one root-task session.
pub struct SessionCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: SecretString,
    /// Unix seconds, as AWS gave it.
    pub expiration: i64,
    /// AWS's request id, for support cases and CloudTrail.
    pub request_id: Option<String>,
}

/// The code of a call whose outcome is unknown (timeout, lost connection).
pub const OUTCOME_UNKNOWN: &str = "outcome_unknown";

/// Why no session reached breakglass: AWS's error code (`outcome_unknown` when AWS may
/// have opened one whose answer was lost; `not_sent` when no request left) and a message.
#[derive(Debug, Clone)]
pub struct AssumeRootError {
    pub code: String,
    pub message: String,
    /// AWS may have opened a session anyway: look for `AssumeRoot` in CloudTrail.
    pub outcome_unknown: bool,
}

#[derive(Clone)]
pub struct RootTasks {
    client: aws_sdk_sts::Client,
    region: String,
}

impl RootTasks {
    /// The standard AWS chain, bounded: 20 s per call and **no retry** — AssumeRoot is not
    /// idempotent: a retry after a lost answer would open a second root session.
    pub async fn from_environment() -> Result<Self, String> {
        let base = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .timeout_config(TimeoutConfig::builder().operation_timeout(Duration::from_secs(20)).build())
            .load()
            .await;
        Self::with_config(&base)
    }

    /// With an SDK configuration built by the caller (tests point it at a double).
    /// Refuses a configuration without a region: the global endpoint would refuse
    /// every call.
    pub fn with_config(base: &SdkConfig) -> Result<Self, String> {
        let region = base.region().map(|r| r.as_ref().to_owned()).ok_or_else(|| {
            "aws.root_tasks_enabled needs an AWS region (AWS_REGION): sts:AssumeRoot is only served by regional endpoints"
                .to_owned()
        })?;
        // Whatever the caller's configuration says: never retry (see `from_environment`).
        let config = aws_sdk_sts::config::Builder::from(base).retry_config(RetryConfig::disabled()).build();
        Ok(Self { client: aws_sdk_sts::Client::from_conf(config), region })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The ARN of a task policy in this region's partition.
    pub fn policy_arn(&self, policy: TaskPolicy) -> String {
        policy.arn(partition_of(&self.region))
    }

    pub async fn assume_root(
        &self,
        account_id: &str,
        policy: TaskPolicy,
        duration_seconds: u32,
    ) -> Result<SessionCredentials, AssumeRootError> {
        let out = self
            .client
            .assume_root()
            .target_principal(account_id)
            .task_policy_arn(PolicyDescriptorType::builder().arn(self.policy_arn(policy)).build())
            .duration_seconds(i32::try_from(duration_seconds).unwrap_or(900))
            .send()
            .await
            .map_err(|e| {
                use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
                let context = || short(aws_sdk_sts::error::DisplayErrorContext(&e));
                match &e {
                    // AWS answered with an error: no session was opened.
                    SdkError::ServiceError(_) => AssumeRootError {
                        code: e.code().unwrap_or("unknown_error").to_owned(),
                        message: e.message().map(short).unwrap_or_else(context),
                        outcome_unknown: false,
                    },
                    // The request was never built, so never sent.
                    SdkError::ConstructionFailure(_) => {
                        AssumeRootError { code: "not_sent".into(), message: context(), outcome_unknown: false }
                    }
                    // Timeout, connection lost, unreadable answer: AWS may have opened a
                    // session whose answer never arrived.
                    _ => AssumeRootError { code: OUTCOME_UNKNOWN.into(), message: context(), outcome_unknown: true },
                }
            })?;
        let request_id = aws_sdk_sts::operation::RequestId::request_id(&out).map(str::to_owned);
        let c = out.credentials().ok_or_else(|| AssumeRootError {
            code: OUTCOME_UNKNOWN.into(),
            message: "AWS answered AssumeRoot without credentials".into(),
            outcome_unknown: true,
        })?;
        Ok(SessionCredentials {
            access_key_id: c.access_key_id().to_owned(),
            secret_access_key: SecretString::from(c.secret_access_key().to_owned()),
            session_token: SecretString::from(c.session_token().to_owned()),
            expiration: c.expiration().secs(),
            request_id,
        })
    }
}

//! Accounts without root passwords: AWS centralized root access removes the root
//! credentials of member accounts, and the few root-only tasks run through
//! `sts:AssumeRoot`, scoped by one of five AWS-managed task policies, for at most
//! 15 minutes. breakglass stores nothing for such an account; a released checkout
//! asks AWS for that short session instead of revealing a password. Pure.
use serde::{Deserialize, Serialize};

use super::ValidationError;

/// What breakglass holds for an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AccountType {
    /// The vault holds the root password and the TOTP seed; a release reveals them.
    #[default]
    StoredRoot,
    /// Nothing is stored: a release opens an `sts:AssumeRoot` session.
    CentralizedRoot,
}

impl AccountType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StoredRoot => "stored_root",
            Self::CentralizedRoot => "centralized_root",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::StoredRoot, Self::CentralizedRoot].into_iter().find(|t| t.as_str() == s)
    }
}

/// The AWS-managed root-task policies `sts:AssumeRoot` accepts (IAM User Guide,
/// "Perform a privileged task on an AWS Organizations member account").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskPolicy {
    /// Read the root user's credentials (password, access keys, certificates, MFA).
    #[serde(rename = "IAMAuditRootUserCredentials")]
    IamAuditRootUserCredentials,
    /// Let the root user have a password again (account recovery).
    #[serde(rename = "IAMCreateRootUserPassword")]
    IamCreateRootUserPassword,
    /// Delete the root user's password, access keys, certificates and MFA devices.
    #[serde(rename = "IAMDeleteRootUserCredentials")]
    IamDeleteRootUserCredentials,
    /// Delete a bucket policy that denies every principal.
    #[serde(rename = "S3UnlockBucketPolicy")]
    S3UnlockBucketPolicy,
    /// Delete a queue policy that denies every principal.
    #[serde(rename = "SQSUnlockQueuePolicy")]
    SqsUnlockQueuePolicy,
}

impl TaskPolicy {
    pub const ALL: [TaskPolicy; 5] = [
        Self::IamAuditRootUserCredentials,
        Self::IamCreateRootUserPassword,
        Self::IamDeleteRootUserCredentials,
        Self::S3UnlockBucketPolicy,
        Self::SqsUnlockQueuePolicy,
    ];

    /// The policy's name, as in its ARN.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IamAuditRootUserCredentials => "IAMAuditRootUserCredentials",
            Self::IamCreateRootUserPassword => "IAMCreateRootUserPassword",
            Self::IamDeleteRootUserCredentials => "IAMDeleteRootUserCredentials",
            Self::S3UnlockBucketPolicy => "S3UnlockBucketPolicy",
            Self::SqsUnlockQueuePolicy => "SQSUnlockQueuePolicy",
        }
    }

    /// What the session may do, in words for the person choosing.
    pub fn describe(self) -> &'static str {
        match self {
            Self::IamAuditRootUserCredentials => "Audit the root user's credentials (read only)",
            Self::IamCreateRootUserPassword => "Allow the root user a password again (account recovery)",
            Self::IamDeleteRootUserCredentials => "Delete the root user's password, access keys, certificates and MFA",
            Self::S3UnlockBucketPolicy => "Delete an S3 bucket policy that locks everyone out",
            Self::SqsUnlockQueuePolicy => "Delete an SQS queue policy that locks everyone out",
        }
    }

    /// Only the exact names (case matters, as in the ARN); anything else is refused
    /// with the list of names.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        Self::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            ValidationError::new(
                "unknown_task_policy",
                format!(
                    "{:?} is not an AWS root-task policy; use one of {}.",
                    s.chars().take(80).collect::<String>(),
                    Self::ALL.map(Self::as_str).join(", ")
                ),
            )
        })
    }

    /// `arn:<partition>:iam::aws:policy/root-task/<name>`.
    pub fn arn(self, partition: &str) -> String {
        format!("arn:{partition}:iam::aws:policy/root-task/{}", self.as_str())
    }
}

/// The longest session `sts:AssumeRoot` grants (its `DurationSeconds` maximum).
pub const MAX_DURATION_SECONDS: u32 = 900;
/// The shortest session breakglass asks for: less is not enough to do anything.
pub const MIN_DURATION_SECONDS: u32 = 60;

/// A requested session length, or the longest when none is given.
pub fn validate_duration(requested: Option<u32>) -> Result<u32, ValidationError> {
    let d = requested.unwrap_or(MAX_DURATION_SECONDS);
    if !(MIN_DURATION_SECONDS..=MAX_DURATION_SECONDS).contains(&d) {
        return Err(ValidationError::new(
            "invalid_task_duration",
            format!(
                "task_duration_seconds must be from {MIN_DURATION_SECONDS} to {MAX_DURATION_SECONDS}: AWS grants root-task sessions of at most 15 minutes."
            ),
        ));
    }
    Ok(d)
}

/// The AWS partition of a region (for the task policy's ARN).
pub fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// What a checkout of a `centralized_root` account asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootTask {
    pub policy: TaskPolicy,
    pub duration_seconds: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_five_aws_task_policies_are_accepted_by_their_exact_names() {
        for p in TaskPolicy::ALL {
            assert_eq!(TaskPolicy::parse(p.as_str()).unwrap(), p);
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        for bad in ["AdministratorAccess", "iamauditrootusercredentials", "", "IAMAuditRootUserCredentials "] {
            let e = TaskPolicy::parse(bad).unwrap_err();
            assert_eq!(e.code, "unknown_task_policy", "{bad:?}");
            assert!(e.message.contains("SQSUnlockQueuePolicy"), "{}", e.message);
        }
        assert_eq!(
            TaskPolicy::S3UnlockBucketPolicy.arn("aws"),
            "arn:aws:iam::aws:policy/root-task/S3UnlockBucketPolicy"
        );
        assert_eq!(partition_of("eu-west-1"), "aws");
        assert_eq!(partition_of("cn-north-1"), "aws-cn");
        assert_eq!(partition_of("us-gov-west-1"), "aws-us-gov");
    }

    #[test]
    fn sessions_last_one_to_fifteen_minutes_and_default_to_fifteen() {
        assert_eq!(validate_duration(None).unwrap(), 900);
        assert_eq!(validate_duration(Some(60)).unwrap(), 60);
        assert_eq!(validate_duration(Some(900)).unwrap(), 900);
        for bad in [0, 59, 901, 3600] {
            assert_eq!(validate_duration(Some(bad)).unwrap_err().code, "invalid_task_duration", "{bad}");
        }
    }

    #[test]
    fn account_types_round_trip_as_text() {
        for t in [AccountType::StoredRoot, AccountType::CentralizedRoot] {
            assert_eq!(AccountType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert_eq!(AccountType::parse("root"), None);
        assert_eq!(AccountType::default(), AccountType::StoredRoot);
    }
}

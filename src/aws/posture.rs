//! Reading an account's root posture without root: `iam:GetAccountSummary` and
//! `account:GetAlternateContact` in the account (through its read-only posture role,
//! when one is configured), the root e-mail from Organizations and whether centralized
//! root access is on (with the service's own credentials, in the management or a
//! delegated-administrator account). What cannot be read is `None`, with the error.
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_iam::types::{FeatureType, SummaryKeyType};

use super::short;
use crate::domain::posture::{CONTACT_TYPES, Report};

#[derive(Clone)]
pub struct PostureReader {
    base: SdkConfig,
    /// The role to assume in each account (`arn:aws:iam::<id>:role/<name>`); empty:
    /// use the service's own credentials (single account, or tests).
    role_name: String,
}

impl PostureReader {
    /// The standard AWS chain, one attempt per call, bounded.
    pub async fn from_environment(role_name: &str) -> Self {
        let base = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .timeout_config(TimeoutConfig::builder().operation_timeout(Duration::from_secs(20)).build())
            .load()
            .await;
        Self { base, role_name: role_name.to_owned() }
    }

    /// With an SDK configuration built by the caller with `aws_config::defaults(..)
    /// .load()` (tests point it at moto); assuming a role needs its time source.
    pub fn with_config(base: SdkConfig, role_name: &str) -> Self {
        Self { base, role_name: role_name.to_owned() }
    }

    async fn in_account(&self, account_id: &str) -> Result<SdkConfig, String> {
        if self.role_name.is_empty() {
            return Ok(self.base.clone());
        }
        if self.base.time_source().is_none() || self.base.sleep_impl().is_none() {
            // AssumeRoleProvider would panic; aws_config::defaults always sets both.
            return Err("sts:AssumeRole: the SDK configuration has no time source or sleep implementation".into());
        }
        let arn = format!("arn:aws:iam::{account_id}:role/{}", self.role_name);
        let provider = aws_config::sts::AssumeRoleProvider::builder(arn)
            .session_name("breakglass-posture")
            .configure(&self.base)
            .build()
            .await;
        Ok(self
            .base
            .to_builder()
            .credentials_provider(aws_sdk_iam::config::SharedCredentialsProvider::new(provider))
            .build())
    }

    pub async fn read(&self, account_id: &str) -> Report {
        let mut report = Report::default();
        let member = match self.in_account(account_id).await {
            Ok(c) => c,
            Err(e) => {
                report.errors.push(e);
                return report;
            }
        };

        let iam = aws_sdk_iam::Client::new(&member);
        match iam.get_account_summary().send().await {
            Ok(out) => {
                let map = out.summary_map();
                let flag = |k: SummaryKeyType| map.and_then(|m| m.get(&k)).map(|v| *v == 1);
                report.root_mfa_enabled = flag(SummaryKeyType::AccountMfaEnabled);
                report.root_access_keys_present = flag(SummaryKeyType::AccountAccessKeysPresent);
                report.root_signing_certificates_present = flag(SummaryKeyType::AccountSigningCertificatesPresent);
            }
            Err(e) => report
                .errors
                .push(format!("iam:GetAccountSummary: {}", short(aws_sdk_iam::error::DisplayErrorContext(&e)))),
        }

        let account = aws_sdk_account::Client::new(&member);
        for t in CONTACT_TYPES {
            let kind = aws_sdk_account::types::AlternateContactType::from(t);
            match account.get_alternate_contact().alternate_contact_type(kind).send().await {
                Ok(out) => {
                    let email = out.alternate_contact().and_then(|c| c.email_address()).map(str::to_owned);
                    report.alternate_contacts.insert(t.to_owned(), email);
                }
                Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
                    report.alternate_contacts.insert(t.to_owned(), None);
                }
                Err(e) => report.errors.push(format!(
                    "account:GetAlternateContact {t}: {}",
                    short(aws_sdk_account::error::DisplayErrorContext(&e))
                )),
            }
        }

        let orgs = aws_sdk_organizations::Client::new(&self.base);
        match orgs.describe_account().account_id(account_id).send().await {
            Ok(out) => report.root_email = out.account().and_then(|a| a.email()).map(str::to_owned),
            Err(e) => report.errors.push(format!(
                "organizations:DescribeAccount: {}",
                short(aws_sdk_organizations::error::DisplayErrorContext(&e))
            )),
        }

        let iam = aws_sdk_iam::Client::new(&self.base);
        match iam.list_organizations_features().send().await {
            Ok(out) => {
                report.centralized_root_access =
                    Some(out.enabled_features().contains(&FeatureType::RootCredentialsManagement));
            }
            Err(e) => report
                .errors
                .push(format!("iam:ListOrganizationsFeatures: {}", short(aws_sdk_iam::error::DisplayErrorContext(&e)))),
        }
        report
    }
}

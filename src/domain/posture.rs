//! Root posture: what AWS says about an account's root user without using root, and
//! the findings it leads to. Pure: the report is read elsewhere (`aws::posture`).
use serde::{Deserialize, Serialize};

/// The alternate contacts AWS keeps per account.
pub const CONTACT_TYPES: [&str; 3] = ["BILLING", "OPERATIONS", "SECURITY"];

/// What was read. `None` where the call was not allowed or not answered: unknown is
/// not a finding (it is shown as unknown).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `iam:GetAccountSummary` → `AccountMFAEnabled` = 1.
    pub root_mfa_enabled: Option<bool>,
    /// `AccountAccessKeysPresent` = 1.
    pub root_access_keys_present: Option<bool>,
    /// `AccountSigningCertificatesPresent` = 1.
    pub root_signing_certificates_present: Option<bool>,
    /// `account:GetAlternateContact` per type: the e-mail address, or `None` when AWS
    /// has none (`ResourceNotFoundException`). Absent types were not readable.
    pub alternate_contacts: std::collections::BTreeMap<String, Option<String>>,
    /// The root e-mail from Organizations (`DescribeAccount`).
    pub root_email: Option<String>,
    /// Whether the organization has centralized root access enabled
    /// (`iam:ListOrganizationsFeatures` has `RootCredentialsManagement`).
    pub centralized_root_access: Option<bool>,
    /// Calls that failed, `action: error` (no secrets in SDK errors).
    pub errors: Vec<String>,
}

/// Findings: stable codes, sorted.
pub fn findings(report: &Report, root_email_on_file: &str) -> Vec<String> {
    let mut f = Vec::new();
    if report.root_access_keys_present == Some(true) {
        f.push("root_access_keys_present".to_owned());
    }
    if report.root_mfa_enabled == Some(false) {
        f.push("root_mfa_off".to_owned());
    }
    if report.root_signing_certificates_present == Some(true) {
        f.push("root_signing_certificates_present".to_owned());
    }
    for t in CONTACT_TYPES {
        if let Some(None) = report.alternate_contacts.get(t) {
            f.push(format!("alternate_contact_missing:{}", t.to_ascii_lowercase()));
        }
    }
    if let Some(email) = &report.root_email
        && !email.eq_ignore_ascii_case(root_email_on_file)
    {
        f.push("root_email_mismatch".to_owned());
    }
    f.sort();
    f
}

/// Which drill checklist items a report speaks to, and whether it says they pass.
pub fn checklist_evidence(report: &Report) -> Vec<(&'static str, bool)> {
    let mut e = Vec::new();
    if let Some(keys) = report.root_access_keys_present {
        e.push(("no_root_access_keys", !keys));
    }
    let contacts: Vec<&Option<String>> =
        CONTACT_TYPES.iter().filter_map(|t| report.alternate_contacts.get(*t)).collect();
    if contacts.len() == CONTACT_TYPES.len() {
        e.push(("alternate_contacts_correct", contacts.iter().all(|c| c.is_some())));
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_name_what_is_wrong_and_unknown_is_not_a_finding() {
        let clean = Report {
            root_mfa_enabled: Some(true),
            root_access_keys_present: Some(false),
            root_signing_certificates_present: Some(false),
            alternate_contacts: CONTACT_TYPES
                .iter()
                .map(|t| ((*t).to_owned(), Some("ops@example.com".into())))
                .collect(),
            root_email: Some("Root+Prod@example.com".into()),
            ..Report::default()
        };
        assert!(findings(&clean, "root+prod@example.com").is_empty(), "e-mail compared without case");
        assert!(findings(&Report::default(), "x@example.com").is_empty(), "nothing read, nothing found");
        let mut bad = clean.clone();
        bad.root_access_keys_present = Some(true);
        bad.root_mfa_enabled = Some(false);
        bad.alternate_contacts.insert("SECURITY".into(), None);
        bad.root_email = Some("someone@else.example".into());
        assert_eq!(
            findings(&bad, "root+prod@example.com"),
            ["alternate_contact_missing:security", "root_access_keys_present", "root_email_mismatch", "root_mfa_off"]
        );
        assert_eq!(checklist_evidence(&bad), [("no_root_access_keys", false), ("alternate_contacts_correct", false)]);
        assert_eq!(checklist_evidence(&clean), [("no_root_access_keys", true), ("alternate_contacts_correct", true)]);
    }
}

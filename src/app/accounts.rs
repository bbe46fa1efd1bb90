//! Accounts and their secrets. Depositing needs only the account's public key;
//! nothing here returns a stored secret.
use crate::domain::event::{Event, Subject};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Actor, App, rfc3339};
use crate::{
    crypto::{EnvelopeHeader, vault},
    domain::{
        AccountState, AwsAccountId, Email, Policy, SecretKind, display_text, root_task::AccountType,
        secrets::normalize_secret,
    },
    error::AppError,
    store::accounts as store,
};

/// What an admin sends to create an account. Policy fields default from config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    pub account_id: String,
    pub alias: String,
    pub root_email: String,
    pub approvals_required: Option<u32>,
    pub reveal_window_minutes: Option<u32>,
    pub max_checkout_minutes: Option<u32>,
    pub veto: Option<bool>,
    pub drill_schedule: Option<String>,
    /// `stored_root` (default: the vault holds the root password and TOTP seed) or
    /// `centralized_root` (nothing stored; checkouts open `sts:AssumeRoot` sessions).
    pub account_type: Option<AccountType>,
}

/// A policy change. Absent fields stay as they are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpdate {
    pub approvals_required: Option<u32>,
    pub reveal_window_minutes: Option<u32>,
    pub max_checkout_minutes: Option<u32>,
    pub veto: Option<bool>,
    pub drill_schedule: Option<String>,
    /// `"all"` (every custodian) or a list of custodian ids.
    pub approvers: Option<ApproverSet>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ApproverSet {
    All(AllMarker),
    Listed(Vec<String>),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AllMarker {
    All,
}

impl ApproverSet {
    pub fn is_all(&self) -> bool {
        matches!(self, ApproverSet::All(_))
    }

    /// Whether this custodian is listed (false for `all`: nobody is listed).
    pub fn lists(&self, id: &str) -> bool {
        matches!(self, ApproverSet::Listed(ids) if ids.iter().any(|x| x == id))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SecretVersionView {
    pub version: u64,
    pub deposited_at: String,
    pub deposited_by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SecretView {
    pub kind: String,
    /// Newest version first; older versions are kept encrypted and never shown.
    pub versions: Vec<SecretVersionView>,
}

/// Account metadata and secret history. Never plaintext.
#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    pub account_id: String,
    pub alias: String,
    pub root_email: String,
    pub state: String,
    pub policy: Policy,
    /// The account's age recipient: anything encrypted to it can be deposited.
    pub recipient: String,
    pub created_at: String,
    pub created_by: String,
    pub secrets: Vec<SecretView>,
    /// True when both a root password and a TOTP seed are on file (always for a
    /// `centralized_root` account, which needs none).
    pub ready_for_release: bool,
    /// Who may approve: `"all"` custodians, or the listed custodian ids.
    pub approvers: ApproverSet,
    /// Since when a new root password is due after an emergency release.
    pub rotation_due_since: Option<String>,
    /// `policy` (the vault holds the key; approvals are a rule) or `quorum` (the key
    /// is split among the holders; approvals hand over shares).
    pub custody: crate::domain::Custody,
    /// Quorum mode: the dealing in force. `None` in policy mode.
    pub quorum: Option<super::quorum::QuorumView>,
    /// `stored_root` or `centralized_root` (no secrets: checkouts name a task policy).
    pub account_type: AccountType,
}

#[derive(Debug, Clone, Serialize)]
pub struct Deposited {
    pub account_id: String,
    pub kind: SecretKind,
    pub version: u64,
    pub deposited_at: String,
    pub account_state: String,
}

pub(crate) fn view(conn: &rusqlite::Connection, a: store::AccountRow) -> Result<AccountView, AppError> {
    let versions = store::secret_versions(conn, &a.account_id)?;
    let secrets: Vec<SecretView> = SecretKind::ALL
        .iter()
        .filter_map(|k| {
            let mut vs: Vec<SecretVersionView> = versions
                .iter()
                .filter(|v| v.kind == k.as_str())
                .map(|v| SecretVersionView {
                    version: v.version,
                    deposited_at: rfc3339(v.deposited_at),
                    deposited_by: v.deposited_by.clone(),
                })
                .collect();
            vs.reverse();
            (!vs.is_empty()).then(|| SecretView { kind: k.as_str().into(), versions: vs })
        })
        .collect();
    let has = |k: SecretKind| secrets.iter().any(|s| s.kind == k.as_str());
    let rotation_due_since = a.rotation_due_since;
    let approvers = if a.approver_set == store::ApproverMode::Listed {
        ApproverSet::Listed(crate::store::checkouts::approvers(conn, &a.account_id)?)
    } else {
        ApproverSet::All(AllMarker::All)
    };
    let quorum = super::quorum::quorum_view(conn, &a)?;
    let centralized = a.account_type == AccountType::CentralizedRoot;
    Ok(AccountView {
        account_type: a.account_type,
        custody: a.custody,
        quorum,
        approvers,
        rotation_due_since: rotation_due_since.map(rfc3339),
        ready_for_release: centralized || (has(SecretKind::RootPassword) && has(SecretKind::TotpSeed)),
        policy: Policy {
            approvals_required: a.approvals_required,
            reveal_window_minutes: a.reveal_window_minutes,
            max_checkout_minutes: a.max_checkout_minutes,
            veto: a.veto,
            drill_schedule: a.drill_schedule,
        },
        account_id: a.account_id,
        alias: a.alias,
        root_email: a.root_email,
        state: a.state.as_str().into(),
        recipient: a.recipient,
        created_at: rfc3339(a.created_at),
        created_by: a.created_by,
        secrets,
    })
}

fn not_found(id: &str) -> AppError {
    AppError::not_found(
        "account_not_found",
        format!("No account {id} is in custody. List accounts with GET /api/v1/accounts."),
    )
}

impl App {
    #[tracing::instrument(skip_all)]
    pub async fn create_account(&self, actor: Actor, input: NewAccount) -> Result<AccountView, AppError> {
        let id = AwsAccountId::parse(&input.account_id)?;
        let alias = display_text("alias", &input.alias, 64)?;
        let root_email = Email::parse("root_email", &input.root_email)?;
        let d = &self.config.policy;
        let policy = Policy {
            approvals_required: input.approvals_required.unwrap_or(d.approvals_required),
            reveal_window_minutes: input.reveal_window_minutes.unwrap_or(d.reveal_window_minutes),
            max_checkout_minutes: input.max_checkout_minutes.unwrap_or(d.max_checkout_minutes),
            veto: input.veto.unwrap_or(true),
            drill_schedule: input.drill_schedule.unwrap_or_else(|| d.drill_schedule.clone()),
        };
        policy.validate()?;
        let account_type = input.account_type.unwrap_or_default();
        let now = self.now();
        self.db
            .transact(move |tx| {
                let vault_recipient = store::vault(tx)?
                    .ok_or_else(|| {
                        AppError::unavailable(
                            "vault_not_initialized",
                            "The vault is not initialised: run `breakglass init`.",
                        )
                    })?
                    .recipient;
                if store::account(tx, id.as_str())?.is_some() {
                    return Err(AppError::conflict("account_exists", format!("Account {id} is already in custody.")));
                }
                let key = vault::new_account_key(&vault_recipient, id.as_str())?;
                let row = store::AccountRow {
                    account_id: id.to_string(),
                    alias,
                    root_email: root_email.as_str().into(),
                    state: AccountState::Available,
                    approvals_required: policy.approvals_required,
                    reveal_window_minutes: policy.reveal_window_minutes,
                    max_checkout_minutes: policy.max_checkout_minutes,
                    veto: policy.veto,
                    drill_schedule: policy.drill_schedule.clone(),
                    recipient: key.recipient,
                    wrapped_key: Some(key.wrapped),
                    created_at: now.unix_timestamp(),
                    created_by: actor.audit_name(),
                    approver_set: store::ApproverMode::All,
                    rotation_due_since: None,
                    next_drill_due_at: None,
                    drill_flag: None,
                    custody: crate::domain::Custody::Policy,
                    key_version: 1,
                    quorum_k: None,
                    reshare_due_since: None,
                    reshare_reason: None,
                    account_type,
                };
                store::insert_account(tx, &row)?;
                crate::app::announce::record(
                    tx,
                    now,
                    &actor.audit_name(),
                    &Subject::Account(id.to_string()),
                    &Event::AccountCreated {
                        alias: row.alias.clone(),
                        root_email: row.root_email.clone(),
                        policy: json!(policy),
                        recipient: row.recipient.clone(),
                        account_type: Some(account_type.as_str().to_owned()),
                    },
                )?;
                view(tx, row)
            })
            .await
    }

    #[tracing::instrument(skip_all)]
    pub async fn list_accounts(&self) -> Result<Vec<AccountView>, AppError> {
        self.db
            .call(|conn| {
                store::list_accounts(conn)?.into_iter().map(|a| view(conn, a)).collect::<Result<Vec<_>, AppError>>()
            })
            .await
    }

    #[tracing::instrument(skip_all)]
    pub async fn get_account(&self, account_id: String) -> Result<AccountView, AppError> {
        let id = AwsAccountId::parse(&account_id)?;
        self.db
            .call(move |conn| {
                let a = store::account(conn, id.as_str())?.ok_or_else(|| not_found(id.as_str()))?;
                view(conn, a)
            })
            .await
    }

    #[tracing::instrument(skip_all)]
    pub async fn update_policy(
        &self,
        actor: Actor,
        account_id: String,
        u: PolicyUpdate,
    ) -> Result<AccountView, AppError> {
        let id = AwsAccountId::parse(&account_id)?;
        let now = self.now();
        self.db
            .transact(move |tx| {
                let a = store::account(tx, id.as_str())?.ok_or_else(|| not_found(id.as_str()))?;
                let policy = Policy {
                    approvals_required: u.approvals_required.unwrap_or(a.approvals_required),
                    reveal_window_minutes: u.reveal_window_minutes.unwrap_or(a.reveal_window_minutes),
                    max_checkout_minutes: u.max_checkout_minutes.unwrap_or(a.max_checkout_minutes),
                    veto: u.veto.unwrap_or(a.veto),
                    drill_schedule: u.drill_schedule.clone().unwrap_or_else(|| a.drill_schedule.clone()),
                };
                policy.validate()?;
                store::update_policy(tx, id.as_str(), &policy)?;
                if u.drill_schedule.as_deref().is_some_and(|s| s != a.drill_schedule) {
                    // A new schedule counts from now: no surprise drill for a past period.
                    let next = crate::domain::drill::Schedule::parse(&policy.drill_schedule)?.next_after(now.unix_timestamp());
                    store::set_next_drill_due(tx, id.as_str(), next)?;
                }
                if let Some(set) = &u.approvers {
                    match set {
                        ApproverSet::All(_) => {
                            store::set_approver_mode(tx, id.as_str(), store::ApproverMode::All)?;
                            crate::store::checkouts::set_approvers(tx, id.as_str(), &[])?;
                        }
                        ApproverSet::Listed(ids) => {
                            let mut ids = ids.clone();
                            ids.sort();
                            ids.dedup();
                            for cid in &ids {
                                let c = crate::store::people::custodian(tx, cid)?
                                    .ok_or_else(|| AppError::invalid("invalid_approver", format!("No custodian with id {cid}.")))?;
                                if !c.has_role(crate::domain::Role::Custodian) || !c.is_active() {
                                    return Err(AppError::invalid("invalid_approver", format!("{} is not an active custodian.", c.email)));
                                }
                            }
                            if (ids.len() as u32) < policy.approvals_required {
                                return Err(AppError::invalid(
                                    "invalid_policy",
                                    format!("The approver list has {} people but {} approvals are required: no request could ever be approved.", ids.len(), policy.approvals_required),
                                ));
                            }
                            store::set_approver_mode(tx, id.as_str(), store::ApproverMode::Listed)?;
                            crate::store::checkouts::set_approvers(tx, id.as_str(), &ids)?;
                        }
                    }
                }
                // The resulting policy, not the request: a lone approvals_required (or
                // a new list) must still leave enough people to approve.
                let (listed, pool) = crate::store::checkouts::approver_pool(tx, id.as_str())?;
                policy.check_reachable(listed, pool)?;
                let a = store::account(tx, id.as_str())?.ok_or_else(|| not_found(id.as_str()))?;
                let v = view(tx, a)?;
                crate::app::announce::record(tx, now, &actor.audit_name(), &Subject::Account(id.to_string()), &Event::AccountPolicyChanged { policy: json!(v.policy), approvers: json!(v.approvers) })?;
                if super::quorum::mark_reshare_due_where_needed(tx, now, &actor.audit_name(), "its policy changed (approvals required or approver set)")?.contains(&id.to_string()) {
                    let a = store::account(tx, id.as_str())?.ok_or_else(|| not_found(id.as_str()))?;
                    return view(tx, a);
                }
                Ok(v)
            })
            .await
    }

    /// Store a new version of a secret, encrypted to the account's public key.
    /// A new root password ends a `rotation_due` state.
    #[tracing::instrument(skip_all)]
    pub async fn deposit_secret(
        &self,
        actor: Actor,
        account_id: String,
        kind: SecretKind,
        value: SecretString,
    ) -> Result<Deposited, AppError> {
        let id = AwsAccountId::parse(&account_id)?;
        let value = normalize_secret(kind, &value)?;
        let now = self.now();
        self.db.transact(move |tx| deposit_in_tx(tx, &actor, &id, kind, &value, now, None)).await
    }
}

/// Store a new, already normalised version of a secret inside the caller's
/// transaction. A new root password completes any rotation due after an emergency.
/// A rotation through a checkout names it (`checkout`), so its announcement carries it.
pub(crate) fn deposit_in_tx(
    tx: &rusqlite::Connection,
    actor: &Actor,
    id: &AwsAccountId,
    kind: SecretKind,
    value: &SecretString,
    now: time::OffsetDateTime,
    checkout: Option<&str>,
) -> Result<Deposited, AppError> {
    let account = store::account(tx, id.as_str())?.ok_or_else(|| not_found(id.as_str()))?;
    if account.account_type == AccountType::CentralizedRoot {
        return Err(AppError::conflict(
            "no_stored_credentials",
            format!(
                "Account {id} is centralized_root: AWS holds no root password for it and breakglass stores none. Its checkouts open sts:AssumeRoot sessions instead."
            ),
        ));
    }
    let version = store::next_secret_version(tx, id.as_str(), kind.as_str())?;
    let header = EnvelopeHeader::new(id.as_str(), kind.as_str(), version);
    let ciphertext = vault::encrypt_secret(&account.recipient, &header, value)?;
    store::insert_secret_version(
        tx,
        id.as_str(),
        kind.as_str(),
        version,
        &ciphertext,
        now.unix_timestamp(),
        &actor.audit_name(),
    )?;
    let rotated = kind == SecretKind::RootPassword && account.rotation_due_since.is_some();
    if rotated {
        store::complete_rotation(tx, id.as_str())?;
    }
    let state = store::account(tx, id.as_str())?.ok_or_else(|| not_found(id.as_str()))?.state.as_str().to_owned();
    crate::app::announce::record(
        tx,
        now,
        &actor.audit_name(),
        &Subject::Account(id.to_string()),
        &Event::SecretDeposited { kind, version, rotation_completed: rotated, checkout: checkout.map(str::to_owned) },
    )?;
    Ok(Deposited {
        account_id: id.to_string(),
        kind,
        version,
        deposited_at: rfc3339(now.unix_timestamp()),
        account_state: state,
    })
}

//! Quorum mode (docs/quorum.md): an account's key split among its holders, so that
//! the database, the seal key and fewer than k people's security keys open nothing.
//!
//! - **Share recipients**: a credential registers the public `age1…` recipient its
//!   authenticator's PRF output derives (the browser does the derivation; the PRF
//!   output never reaches the server), proven by a fresh assertion with that key.
//! - **Turning it on** deals a fresh account key to the holders and deletes the
//!   vault-wrapped one, in one transaction with its audit entry.
//! - **Handing over**: approvals (and the requester's release) carry the holder's
//!   share, re-encrypted by their browser to the checkout's transit key.
//! - **Opening** (`open_account_key`): the one place shares become a key.
//! - **Holder changes** mark the account `reshare_due`; a `reshare` checkout deals a
//!   fresh key to the current holders at its release step.
use base64::{Engine, engine::general_purpose::STANDARD};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{PasskeyAuthentication, PublicKeyCredential, RequestChallengeResponse};

use super::{
    Actor, App, Principal, b64url,
    ceremony::{self, Binding, Purpose},
    rfc3339,
};
use crate::{
    crypto::{
        AccountKey, EnvelopeHeader, keys,
        quorum::{self as q, Contribution, Holder, QuorumError},
        vault,
    },
    domain::{
        Custody, Role,
        event::{Event, ShareDealt, Subject},
    },
    error::AppError,
    store::{
        accounts::{self as store_accounts, AccountRow, ApproverMode},
        checkouts::{self as store_checkouts, CheckoutRow, HandedShare, Transit},
        people::{self, CustodianRow},
        shares::{self, ShareRow},
    },
};

/// Largest handed-over share accepted (an age file of a ~250-byte envelope).
pub const HANDED_SHARE_MAX_BYTES: usize = 4096;

fn internal(e: impl std::fmt::Display) -> AppError {
    AppError::Internal(e.to_string())
}

/// The PRF salt every client evaluates: SHA-256 of `breakglass/prf/v1`, base64url.
pub fn prf_salt_b64url() -> String {
    b64url(&keys::prf_salt())
}

/// webauthn-rs's options as JSON with `publicKey.extensions.prf` set (webauthn-rs has
/// no PRF field; it ignores what it does not know).
fn with_prf_extension(options: &impl Serialize, prf: serde_json::Value) -> Result<serde_json::Value, AppError> {
    let mut v = serde_json::to_value(options).map_err(internal)?;
    let pk = v.get_mut("publicKey").and_then(|p| p.as_object_mut()).ok_or_else(|| internal("no publicKey"))?;
    let ext = pk.entry("extensions").or_insert_with(|| serde_json::json!({}));
    if ext.is_null() {
        *ext = serde_json::json!({});
    }
    ext["prf"] = prf;
    Ok(v)
}

/// Assertion options evaluating PRF with the documented salt
/// (`extensions.prf.eval.first`).
pub(crate) fn with_prf(options: &RequestChallengeResponse) -> Result<serde_json::Value, AppError> {
    with_prf_extension(options, serde_json::json!({ "eval": { "first": prf_salt_b64url() } }))
}

/// Registration options asking the authenticator to enable PRF (`extensions.prf =
/// {}`): CTAP authenticators only compute hmac-secret for credentials created with it.
pub(crate) fn creation_with_prf(
    options: &webauthn_rs::prelude::CreationChallengeResponse,
) -> Result<serde_json::Value, AppError> {
    with_prf_extension(options, serde_json::json!({}))
}

/// What a holder's browser needs to hand over their share for one checkout.
#[derive(Debug, Clone, Serialize)]
pub struct ShareOffer {
    /// The holder's share: a binary age file, standard base64, encrypted to every
    /// share recipient of their keys.
    pub share: String,
    pub share_index: u8,
    pub key_version: u64,
    /// Re-encrypt the share's plaintext to this recipient and send it back.
    pub transit_recipient: String,
    /// The PRF salt (base64url) the assertion evaluates.
    pub prf_salt: String,
}

/// One holder in an account's current dealing.
#[derive(Debug, Clone, Serialize)]
pub struct HolderView {
    pub custodian_id: String,
    pub name: String,
    pub share_index: u8,
    pub keys: usize,
    pub active: bool,
}

/// Quorum-mode facts shown with an account.
#[derive(Debug, Clone, Serialize)]
pub struct QuorumView {
    pub key_version: u64,
    /// Shares needed to open the key (approvals + the requester).
    pub k: u32,
    pub holders: Vec<HolderView>,
    /// Holders who are still active custodians.
    pub live_holders: u32,
    pub reshare_due_since: Option<String>,
    pub reshare_reason: Option<String>,
}

pub(crate) fn quorum_view(conn: &rusqlite::Connection, a: &AccountRow) -> Result<Option<QuorumView>, AppError> {
    if a.custody != Custody::Quorum {
        return Ok(None);
    }
    let mut holders = Vec::new();
    for s in shares::shares_of_account(conn, &a.account_id)? {
        let who = people::custodian(conn, &s.custodian_id)?;
        holders.push(HolderView {
            name: who.as_ref().map(|c| c.name.clone()).unwrap_or_default(),
            active: who.as_ref().is_some_and(|c| c.is_active() && c.has_role(Role::Custodian)),
            custodian_id: s.custodian_id,
            share_index: s.share_index,
            keys: s.recipients.len(),
        });
    }
    Ok(Some(QuorumView {
        key_version: a.key_version,
        k: a.quorum_k.unwrap_or_default(),
        live_holders: holders.iter().filter(|h| h.active).count() as u32,
        holders,
        reshare_due_since: a.reshare_due_since.map(rfc3339),
        reshare_reason: a.reshare_reason.clone(),
    }))
}

/// The people who should hold shares of `a`'s key: its approver set (every active
/// custodian, or the listed ones who are active custodians), oldest first.
pub(crate) fn intended_holders(conn: &rusqlite::Connection, a: &AccountRow) -> Result<Vec<CustodianRow>, AppError> {
    let listed = match a.approver_set {
        ApproverMode::Listed => Some(store_checkouts::approvers(conn, &a.account_id)?),
        ApproverMode::All => None,
    };
    let mut out: Vec<CustodianRow> = people::list_custodians(conn)?
        .into_iter()
        .filter(|c| c.is_active() && c.has_role(Role::Custodian))
        .filter(|c| listed.as_ref().is_none_or(|ids| ids.contains(&c.id)))
        .collect();
    out.sort_by(|x, y| (x.enrolled_at, &x.id).cmp(&(y.enrolled_at, &y.id)));
    Ok(out)
}

/// Shares needed for a policy: the approvals plus the requester's own.
pub(crate) fn k_for(approvals_required: u32) -> u32 {
    approvals_required + 1
}

/// Holders with their share recipients; refuses with the names of anyone without one
/// and when there are fewer holders than shares needed.
fn ready_holders(conn: &rusqlite::Connection, a: &AccountRow, k: u32) -> Result<Vec<Holder>, AppError> {
    let people = intended_holders(conn, a)?;
    let mut holders = Vec::new();
    let mut missing = Vec::new();
    for c in &people {
        let recipients = people::share_recipients_of(conn, &c.id)?;
        if recipients.is_empty() {
            missing.push(c.name.clone());
        } else {
            holders.push(Holder { person: c.id.clone(), recipients });
        }
    }
    if !missing.is_empty() {
        return Err(AppError::conflict(
            "holders_not_ready",
            format!(
                "Every holder needs a security key prepared for quorum shares (a key with PRF), and these have none: {}. Each of them opens their profile and chooses \"Prepare this key for quorum\".",
                missing.join(", ")
            ),
        ));
    }
    if (holders.len() as u32) < k {
        return Err(AppError::conflict(
            "not_enough_holders",
            format!(
                "Opening account {} takes {k} people (the requester and {} approvers), but only {} could hold a share. Add custodians to its approver set, or lower approvals_required.",
                a.account_id,
                k - 1,
                holders.len()
            ),
        ));
    }
    if holders.len() > q::MAX_HOLDERS {
        return Err(AppError::conflict("too_many_holders", "A key can be split among at most 255 holders."));
    }
    Ok(holders)
}

/// Re-encrypt every secret version of an account from `old` to `new_recipient`.
fn reencrypt_secrets(
    tx: &rusqlite::Connection,
    account_id: &str,
    old: &AccountKey,
    new_recipient: &str,
) -> Result<u64, AppError> {
    let mut n = 0;
    for s in store_accounts::all_secret_versions(tx, account_id)? {
        let value: SecretString = old.open(&s.kind, s.version, &s.ciphertext)?;
        let fresh = vault::encrypt_secret(new_recipient, &EnvelopeHeader::new(account_id, s.kind, s.version), &value)?;
        store_accounts::replace_secret_ciphertext(tx, s.row_id, &fresh)?;
        n += 1;
    }
    Ok(n)
}

/// A fresh key, the secrets re-encrypted to it, shares dealt, the account updated.
/// Returns what the audit entry records.
fn deal_fresh_key(
    tx: &rusqlite::Connection,
    a: &AccountRow,
    old: &AccountKey,
    holders: &[Holder],
    k: u32,
    now: i64,
) -> Result<(u64, Vec<ShareDealt>, String, u64), AppError> {
    let fresh = q::fresh_account_key()?;
    let key_version = a.key_version + 1;
    let n = reencrypt_secrets(tx, &a.account_id, old, &fresh.recipient)?;
    let dealt = q::deal(&a.account_id, key_version, &fresh.secret, holders, k as usize)?;
    let rows: Vec<ShareRow> = dealt
        .iter()
        .zip(holders)
        .map(|(d, h)| ShareRow {
            account_id: a.account_id.clone(),
            key_version,
            custodian_id: d.person.clone(),
            share_index: d.index,
            recipients: h.recipients.clone(),
            ciphertext: d.ciphertext.clone(),
            dealt_at: now,
        })
        .collect();
    shares::replace(tx, &a.account_id, &rows)?;
    store_accounts::set_quorum_key(tx, &a.account_id, &fresh.recipient, key_version, k)?;
    let summary = rows
        .iter()
        .map(|r| ShareDealt {
            custodian: r.custodian_id.clone(),
            share_index: r.share_index,
            recipients: r.recipients.clone(),
        })
        .collect();
    Ok((key_version, summary, fresh.recipient, n))
}

/// Mark every quorum-mode account whose holders no longer match: those `person`
/// holds a share in (`held`), or whose intended holders differ from the dealt ones.
pub(crate) fn mark_reshare_due_where_needed(
    tx: &rusqlite::Connection,
    now: time::OffsetDateTime,
    actor: &str,
    reason: &str,
) -> Result<Vec<String>, AppError> {
    let mut marked = Vec::new();
    for a in store_accounts::list_accounts(tx)?.into_iter().filter(|a| a.custody == Custody::Quorum) {
        let dealt = shares::shares_of_account(tx, &a.account_id)?;
        let intended = intended_holders(tx, &a)?;
        let mut dealt_ids: Vec<&str> = dealt.iter().map(|s| s.custodian_id.as_str()).collect();
        let mut intended_ids: Vec<&str> = intended.iter().map(|c| c.id.as_str()).collect();
        dealt_ids.sort_unstable();
        intended_ids.sort_unstable();
        let k_changed = a.quorum_k != Some(k_for(a.approvals_required));
        let mut keys_changed = false;
        for s in &dealt {
            let current = people::share_recipients_of(tx, &s.custodian_id)?;
            if s.recipients.iter().any(|r| !current.contains(r)) {
                keys_changed = true;
            }
        }
        if (dealt_ids != intended_ids || k_changed || keys_changed)
            && store_accounts::mark_reshare_due(tx, &a.account_id, reason, now.unix_timestamp())?
        {
            crate::app::announce::record(
                tx,
                now,
                actor,
                &Subject::Account(a.account_id.clone()),
                &Event::AccountReshareDue { reason: reason.to_owned(), key_version: a.key_version },
            )?;
            marked.push(a.account_id.clone());
        }
    }
    Ok(marked)
}

/// How many of an account's dealt holders are still live custodians.
pub(crate) fn live_holders(tx: &rusqlite::Connection, account_id: &str, except: Option<&str>) -> Result<u32, AppError> {
    let mut n = 0;
    for s in shares::shares_of_account(tx, account_id)? {
        if except == Some(s.custodian_id.as_str()) {
            continue;
        }
        if people::custodian(tx, &s.custodian_id)?.is_some_and(|c| c.is_active() && c.has_role(Role::Custodian)) {
            n += 1;
        }
    }
    Ok(n)
}

/// Quorum accounts that disabling `custodian_id` would leave with fewer than k live
/// holders: `(account, live after, k)`.
pub(crate) fn bus_factor_if_disabled(
    tx: &rusqlite::Connection,
    custodian_id: &str,
) -> Result<Vec<(String, u32, u32)>, AppError> {
    let mut out = Vec::new();
    for account_id in shares::accounts_held_by(tx, custodian_id)? {
        let a = store_accounts::account(tx, &account_id)?.ok_or_else(|| internal("account vanished"))?;
        let k = a.quorum_k.unwrap_or_default();
        let live = live_holders(tx, &account_id, Some(custodian_id))?;
        if live < k {
            out.push((account_id, live, k));
        }
    }
    Ok(out)
}

/// The start of preparing a key for quorum: an assertion with that one credential,
/// evaluating PRF.
#[derive(Debug, Serialize)]
pub struct ShareRecipientStart {
    pub ceremony_id: String,
    #[serde(flatten)]
    pub options: serde_json::Value,
    pub prf_salt: String,
}

/// A handed-over share as a client sends it (standard base64 of a binary age file).
pub(crate) fn decode_handed_share(b64: &str) -> Result<Vec<u8>, AppError> {
    let bad = || {
        AppError::invalid(
            "invalid_share",
            "The share sent is not a base64 age file. Use the breakglass page, or see docs/api.md, \"Quorum mode\".",
        )
    };
    if b64.len() > HANDED_SHARE_MAX_BYTES * 4 / 3 + 4 {
        return Err(bad());
    }
    let bytes = STANDARD.decode(b64.trim()).map_err(|_| bad())?;
    if bytes.len() > HANDED_SHARE_MAX_BYTES || !bytes.starts_with(b"age-encryption.org/v1\n") {
        return Err(bad());
    }
    Ok(bytes)
}

fn share_missing() -> AppError {
    AppError::invalid(
        "share_required",
        "This account is in quorum mode: approving hands over your share of its key. Approve from the breakglass page with a security key prepared for quorum (it must support PRF).",
    )
}

impl App {
    pub(crate) fn vault(&self) -> Result<&crate::crypto::UnsealedVault, AppError> {
        self.vault
            .as_deref()
            .ok_or_else(|| AppError::unavailable("vault_sealed", "The vault is sealed on this process."))
    }

    /// Start preparing one of my keys for quorum shares.
    #[tracing::instrument(skip_all)]
    pub async fn share_recipient_start(
        &self,
        p: Principal,
        credential_id: String,
    ) -> Result<ShareRecipientStart, AppError> {
        let now = self.now();
        let app = self.clone();
        self.db
            .transact(move |tx| {
                let rows: Vec<_> = people::credentials_of(tx, &p.custodian.id)?
                    .into_iter()
                    .filter(|r| r.id == credential_id)
                    .collect();
                if rows.is_empty() {
                    return Err(AppError::not_found(
                        "credential_not_found",
                        "You hold no security key with that id (see GET /api/v1/me/credentials).",
                    ));
                }
                let keys = ceremony::passkeys(&rows)?;
                let (options, state) = app.webauthn.start_passkey_authentication(&keys).map_err(internal)?;
                let binding = Binding {
                    custodian_id: Some(p.custodian.id.clone()),
                    pending: Some(credential_id),
                    ..Binding::default()
                };
                let ceremony_id =
                    app.issue_ceremony(tx, Purpose::ShareRecipient, binding, Some(ceremony::state_json(&state)?), now)?;
                Ok(ShareRecipientStart { ceremony_id, options: with_prf(&options)?, prf_salt: prf_salt_b64url() })
            })
            .await
    }

    /// Record the share recipient the browser derived from this key's PRF output, or
    /// (`recipient: None`) that the authenticator gave none.
    #[tracing::instrument(skip_all)]
    pub async fn share_recipient_finish(
        &self,
        p: Principal,
        ceremony_id: String,
        credential: PublicKeyCredential,
        recipient: Option<String>,
    ) -> Result<people::CredentialRow, AppError> {
        let now = self.now();
        let row = self.take_ceremony(ceremony_id, Purpose::ShareRecipient).await?;
        if row.custodian_id.as_deref() != Some(p.custodian.id.as_str()) {
            return Err(ceremony::ceremony_unknown());
        }
        ceremony::unexpired(&row, now.unix_timestamp())?;
        let recipient = recipient
            .map(|r| {
                let r = r.trim().to_owned();
                keys::parse_recipient(&r).map(|_| r).map_err(|_| {
                    AppError::invalid(
                        "invalid_recipient",
                        "recipient must be an age X25519 recipient (age1…) derived from the key's PRF output.",
                    )
                })
            })
            .transpose()?;
        let state: PasskeyAuthentication = ceremony::state(&row)?;
        let result =
            self.webauthn.finish_passkey_authentication(&credential, &state).map_err(|e| ceremony::refused(&e))?;
        let cred_id = b64url(result.cred_id());
        if row.pending.as_deref() != Some(cred_id.as_str()) {
            return Err(AppError::invalid("wrong_credential", "Touch the security key you chose to prepare."));
        }
        self.db
            .transact(move |tx| {
                let me = &p.custodian.id;
                if !ceremony::record_use(tx, me, &result, now.unix_timestamp())? {
                    return Err(internal("credential vanished"));
                }
                people::set_prf_recipient(tx, me, &cred_id, recipient.as_deref(), now.unix_timestamp())?;
                let actor = p.actor().audit_name();
                crate::app::announce::record(
                    tx,
                    now,
                    &actor,
                    &Subject::Custodian(me.clone()),
                    &Event::CredentialShareRecipient {
                        credential_id: cred_id.clone(),
                        status: if recipient.is_some() { "ready" } else { "unsupported" }.into(),
                        recipient: recipient.clone(),
                    },
                )?;
                mark_reshare_due_where_needed(
                    tx,
                    now,
                    &actor,
                    &format!("{}'s security keys changed", p.custodian.name),
                )?;
                people::credentials_of(tx, me)?
                    .into_iter()
                    .find(|r| r.id == cred_id)
                    .ok_or_else(|| internal("credential vanished"))
            })
            .await
    }

    /// Turn a policy-mode account to quorum mode (admin).
    #[tracing::instrument(skip_all)]
    pub async fn enable_quorum(
        &self,
        actor: Actor,
        account_id: String,
    ) -> Result<super::accounts::AccountView, AppError> {
        let id = crate::domain::AwsAccountId::parse(&account_id)?;
        let now = self.now();
        let app = self.clone();
        self.db
            .transact(move |tx| {
                let a = store_accounts::account(tx, id.as_str())?.ok_or_else(|| {
                    AppError::not_found("account_not_found", format!("No account {id} is in custody."))
                })?;
                if a.custody == Custody::Quorum {
                    return Err(AppError::conflict(
                        "already_quorum",
                        format!(
                            "Account {id} is already in quorum mode. To change its holders, request a reshare checkout."
                        ),
                    ));
                }
                if a.account_type == crate::domain::root_task::AccountType::CentralizedRoot {
                    return Err(AppError::conflict(
                        "no_stored_credentials",
                        format!(
                            "Account {id} is centralized_root: breakglass stores no secrets for it, so there is no key to split. Its releases are AWS root-task sessions."
                        ),
                    ));
                }
                if let Some(open) = store_checkouts::open_for_account(tx, id.as_str())?
                    && open.state.is_open()
                {
                    return Err(AppError::conflict(
                        "account_busy",
                        format!(
                            "Account {id} has an open checkout ({}); turn on quorum mode once it has ended.",
                            open.state
                        ),
                    ));
                }
                let k = k_for(a.approvals_required);
                let holders = ready_holders(tx, &a, k)?;
                let wrapped =
                    a.wrapped_key.clone().ok_or_else(|| internal("policy-mode account without a wrapped key"))?;
                let old = app.vault()?.account_key(&a.account_id, &wrapped)?;
                let (key_version, dealt, recipient, n) =
                    deal_fresh_key(tx, &a, &old, &holders, k, now.unix_timestamp())?;
                drop(old);
                crate::app::announce::record(
                    tx,
                    now,
                    &actor.audit_name(),
                    &Subject::Account(a.account_id.clone()),
                    &Event::AccountQuorumEnabled {
                        key_version,
                        k,
                        holders: dealt,
                        recipient,
                        secret_versions_reencrypted: n,
                    },
                )?;
                let a = store_accounts::account(tx, id.as_str())?.ok_or_else(|| internal("account vanished"))?;
                super::accounts::view(tx, a)
            })
            .await
    }

    /// Quorum mode at a checkout's request: the transit key, sealed to the vault.
    pub(crate) fn prepare_transit(
        &self,
        tx: &rusqlite::Connection,
        a: &AccountRow,
        c: &CheckoutRow,
    ) -> Result<(), AppError> {
        if shares::share_of(tx, &a.account_id, &c.requester_id)?.is_none() {
            return Err(AppError::forbidden(
                "no_share",
                format!(
                    "Account {} is in quorum mode and you hold no share of its key, so a release by you could not open it. Ask a holder to request, or an admin to reshare (see the account's holders).",
                    a.account_id
                ),
            ));
        }
        let t = q::new_transit(self.vault()?.recipient(), &a.account_id, &c.id)?;
        store_checkouts::set_transit(
            tx,
            &c.id,
            &Transit { key_version: a.key_version, recipient: t.recipient, sealed: Some(t.sealed) },
        )?;
        Ok(())
    }

    /// The share offer for `who` on checkout `c` (quorum mode), or `None` in policy mode.
    pub(crate) fn share_offer(
        &self,
        tx: &rusqlite::Connection,
        c: &CheckoutRow,
        who: &str,
    ) -> Result<Option<ShareOffer>, AppError> {
        let Some(t) = store_checkouts::transit(tx, &c.id)? else {
            return Ok(None);
        };
        if t.sealed.is_none() {
            return Err(AppError::gone(
                "quorum_material_gone",
                "The shares handed over for this checkout were deleted (its reveal window ended). Make a new request.",
            ));
        }
        let share = shares::share_of(tx, &c.account_id, who)?
            .filter(|s| s.key_version == t.key_version)
            .ok_or_else(|| {
                AppError::forbidden(
                    "no_share",
                    "You hold no share of this account's current key, so you cannot take part in opening it. An admin can reshare the account to include you.",
                )
            })?;
        Ok(Some(ShareOffer {
            share: STANDARD.encode(&share.ciphertext),
            share_index: share.share_index,
            key_version: share.key_version,
            transit_recipient: t.recipient,
            prf_salt: prf_salt_b64url(),
        }))
    }

    /// Store `who`'s handed-over share for checkout `c`, after checking that it opens
    /// with the transit key and carries their envelope. Audited.
    pub(crate) fn accept_handed_share(
        &self,
        tx: &rusqlite::Connection,
        c: &CheckoutRow,
        who: &str,
        actor: &str,
        handed: Option<&str>,
        now: time::OffsetDateTime,
    ) -> Result<(), AppError> {
        let Some(t) = store_checkouts::transit(tx, &c.id)? else {
            return Ok(());
        };
        let Some(handed) = handed else {
            return Err(share_missing());
        };
        let ciphertext = decode_handed_share(handed)?;
        let share = shares::share_of(tx, &c.account_id, who)?
            .filter(|s| s.key_version == t.key_version)
            .ok_or_else(|| AppError::forbidden("no_share", "You hold no share of this account's current key."))?;
        let sealed = t.sealed.as_deref().ok_or_else(|| {
            AppError::gone("quorum_material_gone", "This checkout's transit key is gone. Make a new request.")
        })?;
        let transit = self.vault()?.transit_identity(&c.account_id, &c.id, sealed)?;
        let header = q::share_header(&c.account_id, t.key_version, who, share.share_index);
        crate::crypto::envelope::open(&transit, &header, &ciphertext).map_err(|e| {
            AppError::invalid(
                "share_rejected",
                format!(
                    "The share you handed over was refused ({e}). Use the security key you prepared for quorum, on the breakglass page, and try again."
                ),
            )
        })?;
        let sha = hex::encode(Sha256::digest(&ciphertext));
        store_checkouts::insert_handed_share(
            tx,
            &c.id,
            &HandedShare {
                custodian_id: who.to_owned(),
                share_index: share.share_index,
                key_version: t.key_version,
                ciphertext,
                at: now.unix_timestamp(),
            },
        )?;
        crate::app::announce::record(
            tx,
            now,
            actor,
            &Subject::Account(c.account_id.clone()),
            &Event::ShareHandedOver {
                checkout: c.id.clone(),
                key_version: t.key_version,
                share_index: share.share_index,
                sha256: sha,
            },
        )?;
        Ok(())
    }

    /// **Quorum mode's side of the seam**: open the account key from the shares
    /// handed over by `people` (the standing approvers and the requester).
    pub(crate) fn open_from_shares(
        &self,
        tx: &rusqlite::Connection,
        a: &AccountRow,
        c: &CheckoutRow,
        standing: &[String],
    ) -> Result<AccountKey, QuorumFailure> {
        let fail =
            |code: &'static str, person: Option<String>, message: String| QuorumFailure { code, person, message };
        let t = store_checkouts::transit(tx, &c.id)
            .map_err(|e| fail("internal", None, e.to_string()))?
            .ok_or_else(|| fail("no_transit_key", None, "this checkout has no transit key".into()))?;
        let sealed = t.sealed.as_deref().ok_or_else(|| {
            fail(
                "quorum_material_gone",
                None,
                "the shares handed over for this checkout were deleted when its reveal window ended".into(),
            )
        })?;
        let vault = self.vault().map_err(|e| fail("vault_sealed", None, e.to_string()))?;
        let transit = vault
            .transit_identity(&c.account_id, &c.id, sealed)
            .map_err(|e| fail("transit_key", None, e.to_string()))?;
        let name = |id: &str| -> String {
            people::custodian(tx, id).ok().flatten().map(|p| format!("{} ({id})", p.name)).unwrap_or_else(|| id.into())
        };
        let handed = store_checkouts::handed_shares(tx, &c.id).map_err(|e| fail("internal", None, e.to_string()))?;
        let k = a.quorum_k.unwrap_or_default() as usize;
        let mut contributions = Vec::new();
        for who in standing {
            let Some(h) = handed.iter().find(|h| &h.custodian_id == who) else {
                return Err(fail(
                    "share_missing",
                    Some(who.clone()),
                    format!("{} approved but no share of theirs is on file for this checkout", name(who)),
                ));
            };
            if h.key_version != a.key_version {
                return Err(fail(
                    "share_stale",
                    Some(who.clone()),
                    format!(
                        "the share handed over by {} is for key version {}, but the account's key is version {} (it was reshared since)",
                        name(who),
                        h.key_version,
                        a.key_version
                    ),
                ));
            }
            contributions.push(Contribution {
                person: h.custodian_id.clone(),
                index: h.share_index,
                ciphertext: h.ciphertext.clone(),
            });
        }
        q::combine(&transit, &a.account_id, a.key_version, &a.recipient, &contributions, k).map_err(|e| {
            let person = match &e {
                QuorumError::Unreadable { person }
                | QuorumError::Foreign { person, .. }
                | QuorumError::Duplicate { person } => Some(person.clone()),
                _ => None,
            };
            let code = match &e {
                QuorumError::Unreadable { .. } => "share_unreadable",
                QuorumError::Foreign { .. } => "share_foreign",
                QuorumError::Duplicate { .. } => "share_duplicate",
                QuorumError::TooFew { .. } => "too_few_shares",
                QuorumError::WrongKey => "shares_do_not_combine",
                QuorumError::Crypto(_) => "share_crypto",
            };
            let message = match person.as_deref() {
                Some(p) => e.to_string().replace(p, &name(p)),
                None => e.to_string(),
            };
            fail(code, person, message)
        })
    }

    /// A reshare checkout's release step: deal a fresh key to the current holders.
    pub(crate) fn reshare_in_tx(
        &self,
        tx: &rusqlite::Connection,
        c: &CheckoutRow,
        old: &AccountKey,
        actor: &str,
        evidence: serde_json::Value,
        now: time::OffsetDateTime,
    ) -> Result<ReshareDone, AppError> {
        let a = &store_accounts::account(tx, &c.account_id)?.ok_or_else(|| internal("account vanished"))?;
        let k = k_for(a.approvals_required);
        let holders = ready_holders(tx, a, k)?;
        let (key_version, dealt, recipient, n) = deal_fresh_key(tx, a, old, &holders, k, now.unix_timestamp())?;
        let holders_n = dealt.len();
        crate::app::announce::record(
            tx,
            now,
            actor,
            &Subject::Account(a.account_id.clone()),
            &Event::AccountReshared {
                checkout: c.id.clone(),
                key_version,
                k,
                holders: dealt,
                recipient: recipient.clone(),
                secret_versions_reencrypted: n,
                evidence,
            },
        )?;
        Ok(ReshareDone {
            checkout_id: c.id.clone(),
            account_id: a.account_id.clone(),
            reshared: true,
            key_version,
            k,
            holders: holders_n,
            recipient,
            secret_versions_reencrypted: n,
        })
    }
}

/// What a reshare's release step answers (no credentials are shown).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReshareDone {
    pub checkout_id: String,
    pub account_id: String,
    pub reshared: bool,
    pub key_version: u64,
    pub k: u32,
    pub holders: usize,
    pub recipient: String,
    pub secret_versions_reencrypted: u64,
}

/// Why the shares did not open the account: audited, announced and shown.
#[derive(Debug, Clone)]
pub struct QuorumFailure {
    pub code: &'static str,
    pub person: Option<String>,
    pub message: String,
}

impl QuorumFailure {
    pub(crate) fn into_error(self) -> AppError {
        AppError::conflict(
            self.code,
            format!(
                "The shares handed over did not open the account, and nothing was revealed: {}. Cancel this request and make a new one; if it happens again, the holder named should prepare their key for quorum again and an admin should reshare.",
                self.message
            ),
        )
    }
}

//! WebAuthn ceremonies, in one place: every enrolment, sign-in, added key, approval
//! and release goes through these functions.
//!
//! A ceremony is **issued** inside the use case's transaction: a row with its
//! purpose, what it is bound to (a person, an invite, a checkout), the webauthn-rs
//! state and a short expiry (`security.ceremony_ttl_seconds`). It is **taken** —
//! deleted before its answer is verified, in a committed transaction — so it works at
//! most once whatever happens next: sign-in and enrolment take it in a transaction of
//! its own; approvals and releases take it in the step's own transaction
//! ([`App::with_ceremony`]: the deletion is kept even when the step fails), which saves
//! a commit and its fsync per step. Then its purpose, binding and expiry are
//! checked, in that order, each with its own error code. A verified assertion's
//! signature counter is written back to the credential (`record_use`), so a cloned
//! authenticator whose counter goes backwards is refused next time.
use serde::{Serialize, de::DeserializeOwned};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use webauthn_rs::prelude::{AuthenticationResult, Passkey, PublicKeyCredential, WebauthnError};

use super::{App, b64url};
use crate::{
    crypto::evidence::AssertionEvidence,
    error::AppError,
    store::{
        StoreError,
        people::{self, CeremonyRow, CredentialRow},
    },
};

/// What a ceremony is for; stored as its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    Enrol,
    Login,
    AddCredential,
    Approve,
    Release,
    ShareRecipient,
}

impl Purpose {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Purpose::Enrol => "enrol",
            Purpose::Login => "login",
            Purpose::AddCredential => "add_credential",
            Purpose::Approve => "approve",
            Purpose::Release => "release",
            Purpose::ShareRecipient => "share_recipient",
        }
    }
}

/// Who or what a ceremony is bound to, and any data its finish step needs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Binding {
    pub custodian_id: Option<String>,
    pub invite_id: Option<String>,
    pub checkout_id: Option<String>,
    pub pending: Option<String>,
}

pub(crate) fn ceremony_unknown() -> AppError {
    AppError::invalid(
        "ceremony_not_found",
        "This security-key request is unknown or was already used. Start again: each request works once.",
    )
}

pub(crate) fn ceremony_expired() -> AppError {
    AppError::gone(
        "ceremony_expired",
        "This security-key request has expired. Start again and touch your key within a few minutes.",
    )
}

/// An authenticator's answer that webauthn-rs refused: missing user verification has
/// its own code (the person must set up a PIN or biometric), anything else is one code.
pub(crate) fn refused(e: &WebauthnError) -> AppError {
    match e {
        WebauthnError::UserNotVerified => AppError::invalid(
            "user_verification_required",
            "Your authenticator did not verify you (PIN, fingerprint or face). breakglass requires user verification: set up a PIN on the key and try again.",
        ),
        _ => AppError::invalid(
            "webauthn_failed",
            "The authenticator's response could not be verified. Start again with the same key or another one.",
        ),
    }
}

fn internal(e: impl std::fmt::Display) -> AppError {
    AppError::Internal(e.to_string())
}

/// webauthn-rs state as stored in a ceremony row.
pub(crate) fn state_json(state: &impl Serialize) -> Result<String, AppError> {
    serde_json::to_string(state).map_err(internal)
}

/// The webauthn-rs state a ceremony was issued with.
pub(crate) fn state<T: DeserializeOwned>(row: &CeremonyRow) -> Result<T, AppError> {
    serde_json::from_str(row.state.as_deref().unwrap_or_default()).map_err(internal)
}

/// Passkeys as stored.
pub(crate) fn passkeys(rows: &[CredentialRow]) -> Result<Vec<Passkey>, AppError> {
    rows.iter().map(|r| serde_json::from_str::<Passkey>(&r.passkey)).collect::<Result<Vec<_>, _>>().map_err(internal)
}

/// Every passkey a person holds.
pub(crate) fn passkeys_of(conn: &rusqlite::Connection, custodian_id: &str) -> Result<Vec<Passkey>, AppError> {
    passkeys(&people::credentials_of(conn, custodian_id)?)
}

/// Store a verified assertion's use of a credential (counter, backup state, last
/// used). `false` when the person holds no such credential.
pub(crate) fn record_use(
    tx: &rusqlite::Connection,
    custodian_id: &str,
    result: &AuthenticationResult,
    now: i64,
) -> Result<bool, AppError> {
    let cred_id = b64url(result.cred_id());
    let Some(stored) = people::credentials_of(tx, custodian_id)?.into_iter().find(|r| r.id == cred_id) else {
        return Ok(false);
    };
    let mut passkey: Passkey = serde_json::from_str(&stored.passkey).map_err(internal)?;
    passkey.update_credential(result);
    people::update_credential_use(tx, &cred_id, &state_json(&passkey)?, now)?;
    Ok(true)
}

/// What an auditor needs to check an assertion offline (docs/audit-log.md).
pub(crate) fn evidence(credential: &PublicKeyCredential, result: &AuthenticationResult) -> AssertionEvidence {
    let challenge = serde_json::from_slice::<serde_json::Value>(&credential.response.client_data_json)
        .ok()
        .and_then(|v| v["challenge"].as_str().map(str::to_owned))
        .unwrap_or_default();
    AssertionEvidence {
        credential_id: b64url(result.cred_id()),
        challenge,
        client_data_json: b64url(&credential.response.client_data_json),
        authenticator_data: b64url(&credential.response.authenticator_data),
        signature: b64url(&credential.response.signature),
    }
}

/// Refuse a ceremony past its expiry.
pub(crate) fn unexpired(row: &CeremonyRow, now: i64) -> Result<(), AppError> {
    if row.expires_at <= now { Err(ceremony_expired()) } else { Ok(()) }
}

impl App {
    /// Store a new ceremony in the caller's transaction; returns its id.
    pub(crate) fn issue_ceremony(
        &self,
        tx: &rusqlite::Connection,
        purpose: Purpose,
        binding: Binding,
        state: Option<String>,
        now: OffsetDateTime,
    ) -> Result<String, AppError> {
        let id = Uuid::new_v4().to_string();
        people::insert_ceremony(
            tx,
            &CeremonyRow {
                id: id.clone(),
                purpose: purpose.as_str().into(),
                custodian_id: binding.custodian_id,
                invite_id: binding.invite_id,
                checkout_id: binding.checkout_id,
                pending: binding.pending,
                state,
                created_at: now.unix_timestamp(),
                expires_at: (now + Duration::seconds(i64::from(self.config.security.ceremony_ttl_seconds)))
                    .unix_timestamp(),
            },
        )?;
        Ok(id)
    }

    /// Remove a ceremony (single use, whatever happens next) and check its purpose.
    /// Binding and expiry are the caller's next checks (`unexpired`, `bound_to_checkout`).
    pub(crate) async fn take_ceremony(&self, id: String, purpose: Purpose) -> Result<CeremonyRow, AppError> {
        let row = self.db.transact(move |tx| Ok::<_, AppError>(people::take_ceremony(tx, &id)?)).await?;
        row.filter(|r| r.purpose == purpose.as_str()).ok_or_else(ceremony_unknown)
    }

    /// Take a ceremony and run the step it authorises, in **one** transaction (one
    /// commit, one WAL fsync): the ceremony row is deleted first, then `step` runs
    /// inside a savepoint. When `step` fails (a refused assertion, a binding or expiry
    /// check, a refused decision) only the savepoint is rolled back: the deletion is
    /// still committed, so the ceremony is spent whatever happens, as with
    /// [`App::take_ceremony`]. The transaction is IMMEDIATE, so of two concurrent uses
    /// the second finds no row (`ceremony_not_found`).
    pub(crate) async fn with_ceremony<T, F>(&self, id: String, purpose: Purpose, step: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection, CeremonyRow) -> Result<T, AppError> + Send + 'static,
    {
        self.db
            .call(move |conn| {
                let mut tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(StoreError::from)?;
                let taken = people::take_ceremony(&tx, &id)?.filter(|r| r.purpose == purpose.as_str());
                let out = match taken {
                    None => Err(ceremony_unknown()),
                    Some(row) => {
                        let sp = tx.savepoint().map_err(StoreError::from)?;
                        let out = step(&sp, row);
                        if out.is_ok() {
                            sp.commit().map_err(StoreError::from)?;
                        } else {
                            drop(sp); // rolls back to the savepoint: the step's writes only
                        }
                        out
                    }
                };
                match tx.commit() {
                    Ok(()) => out,
                    // The step's own error says more than a failed commit after it.
                    Err(e) => out.and(Err(StoreError::from(e).into())),
                }
            })
            .await
    }
}

/// A checkout ceremony must be for this checkout and this person.
pub(crate) fn bound_to_checkout(
    row: &CeremonyRow,
    purpose: Purpose,
    checkout_id: &str,
    custodian_id: &str,
) -> Result<(), AppError> {
    if row.checkout_id.as_deref() != Some(checkout_id) {
        return Err(AppError::invalid(
            "challenge_not_for_this_request",
            "This security-key challenge was issued for a different request. Start again from this request.",
        ));
    }
    if row.custodian_id.as_deref() != Some(custodian_id) {
        return Err(AppError::invalid(
            "challenge_not_for_this_person",
            if purpose == Purpose::Release {
                "This security-key challenge was issued to someone else. Only the requester releases a checkout, with a release started in their own session."
            } else {
                "This security-key challenge was issued to someone else. Start your own approval."
            },
        ));
    }
    Ok(())
}

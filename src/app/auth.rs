//! Enrolment, sign-in, sessions and credentials: WebAuthn passkey ceremonies with
//! user verification required, state kept server-side, single use, short-lived.
use std::collections::BTreeMap;

use crate::domain::event::{Event, Subject};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use time::Duration;
use uuid::Uuid;
use webauthn_rs::prelude::{
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, WebauthnError,
};
use webauthn_rs_proto::{AllowCredentials, PublicKeyCredentialRequestOptions, UserVerificationPolicy};

use super::{
    Actor, App, Principal, b64url,
    ceremony::{self, Binding, Purpose, ceremony_unknown},
    new_token, rfc3339, token_hash,
};
use crate::{
    crypto::evidence::PublicKeyRecord,
    domain::{Email, display_text},
    error::AppError,
    store::people,
};

/// A session's `last_seen_at` is rewritten at most this often (seconds). Idle expiry
/// is therefore exact to within this interval (it can end a session up to a minute
/// early, never late).
pub const SESSION_TOUCH_INTERVAL_SECS: i64 = 60;

/// The first half of a ceremony: its id and the W3C options for the browser.
#[derive(Debug, Serialize)]
pub struct CeremonyStart<T> {
    pub ceremony_id: String,
    #[serde(flatten)]
    pub options: T,
}

/// A new session. The token goes into the cookie and nowhere else.
pub struct SignedIn {
    pub session_token: String,
    pub custodian: people::CustodianRow,
    pub expires_at: i64,
}

#[derive(Serialize, Deserialize)]
struct PendingEnrolment {
    user_id: Uuid,
    name: String,
    email: String,
}

/// `(decoy credential id, stand-in credential id)` pairs, base64url, kept in a decoy
/// sign-in ceremony's `pending` column.
type StandInIds = Vec<(String, String)>;

fn sign_in_failed() -> AppError {
    AppError::unauthenticated(
        "authentication_failed",
        "Sign-in failed. Check the e-mail address and use a security key enrolled for it.",
    )
}

fn internal(e: impl std::fmt::Display) -> AppError {
    AppError::Internal(e.to_string())
}

fn label_or_default(label: Option<String>, n: usize) -> Result<String, AppError> {
    match label {
        Some(l) => Ok(display_text("label", &l, 64)?),
        None => Ok(format!("Security key {n}")),
    }
}

impl App {
    /// Take a ceremony of this purpose (single use) and refuse it once expired.
    async fn take_unexpired(&self, id: String, purpose: Purpose, now: i64) -> Result<people::CeremonyRow, AppError> {
        let row = self.take_ceremony(id, purpose).await?;
        ceremony::unexpired(&row, now)?;
        Ok(row)
    }

    fn new_session(
        &self,
        conn: &Connection,
        custodian_id: &str,
        credential_id: &str,
        now: i64,
    ) -> Result<(String, i64), AppError> {
        let token = new_token()?;
        let expires_at = now + i64::from(self.config.security.session_absolute_hours) * 3600;
        people::insert_session(
            conn,
            &token_hash(&token),
            &people::SessionRow {
                custodian_id: custodian_id.into(),
                credential_id: credential_id.into(),
                created_at: now,
                last_seen_at: now,
                expires_at,
            },
        )?;
        Ok((token, expires_at))
    }

    // ---- enrolment ----

    #[tracing::instrument(skip_all)]
    pub async fn enrol_start(
        &self,
        invite_token: String,
        name: String,
        email: String,
    ) -> Result<CeremonyStart<serde_json::Value>, AppError> {
        let name = display_text("name", &name, 100)?;
        let email = Email::parse("email", &email)?;
        let now = self.now();
        let app = self.clone();
        self.db
            .transact(move |tx| {
                // Whether the address is taken is not checked here: the answer must not
                // tell an invite holder who is enrolled (see enrol_finish).
                let invite = usable_invite(tx, &invite_token, now.unix_timestamp())?;
                let user_id = Uuid::new_v4();
                let (ccr, state) =
                    app.webauthn.start_passkey_registration(user_id, email.as_str(), &name, None).map_err(internal)?;
                let pending = PendingEnrolment { user_id, name, email: email.as_str().into() };
                let binding = Binding {
                    invite_id: Some(invite.id),
                    pending: Some(ceremony::state_json(&pending)?),
                    ..Binding::default()
                };
                let id = app.issue_ceremony(tx, Purpose::Enrol, binding, Some(ceremony::state_json(&state)?), now)?;
                Ok(CeremonyStart { ceremony_id: id, options: super::quorum::creation_with_prf(&ccr)? })
            })
            .await
    }

    #[tracing::instrument(skip_all)]
    pub async fn enrol_finish(
        &self,
        ceremony_id: String,
        credential: RegisterPublicKeyCredential,
        label: Option<String>,
    ) -> Result<SignedIn, AppError> {
        let now = self.now();
        let label = label_or_default(label, 1)?;
        let c = self.take_unexpired(ceremony_id, Purpose::Enrol, now.unix_timestamp()).await?;
        let state: PasskeyRegistration = ceremony::state(&c)?;
        let pending: PendingEnrolment =
            serde_json::from_str(c.pending.as_deref().unwrap_or_default()).map_err(internal)?;
        let passkey =
            self.webauthn.finish_passkey_registration(&credential, &state).map_err(|e| ceremony::refused(&e))?;
        let invite_id = c.invite_id.unwrap_or_default();
        let app = self.clone();
        let enrolled = self
            .db
            .transact(move |tx| {
                let invite = people::invite(tx, &invite_id)?.ok_or_else(invite_invalid)?;
                check_invite_usable(&invite, now.unix_timestamp())?;
                if people::custodian_by_email(tx, &pending.email)?.is_some() {
                    // The one place an invite holder can learn that an address is
                    // enrolled: it costs them the invite (revoked, audited, announced
                    // to the admins), so each invite answers this at most once.
                    people::revoke_invite(tx, &invite.id, now.unix_timestamp())?;
                    crate::app::announce::record(
                        tx,
                        now,
                        &Actor::System.audit_name(),
                        &Subject::Invite(invite.id.clone()),
                        &Event::InviteRevoked { roles: Some(invite.roles.clone()), reason: Some("email_taken".into()) },
                    )?;
                    return Ok(None);
                }
                let custodian = people::CustodianRow {
                    id: pending.user_id.to_string(),
                    name: pending.name,
                    email: pending.email,
                    status: "active".into(),
                    roles: invite.roles.clone(),
                    enrolled_at: now.unix_timestamp(),
                    approve_after: (now + Duration::hours(i64::from(app.config.security.cooling_off_hours)))
                        .unix_timestamp(),
                    disabled_at: None,
                };
                // Two people with one name can be mistaken for each other in every list
                // and request: allowed (it happens), but flagged in the announcement.
                let same_name: Vec<String> = people::list_custodians(tx)?
                    .into_iter()
                    .filter(|c| c.is_active() && same_display_name(&c.name, &custodian.name))
                    .map(|c| c.id)
                    .collect();
                people::insert_custodian(tx, &custodian)?;
                if !people::use_invite(tx, &invite.id, now.unix_timestamp(), &custodian.id)? {
                    return Err(invite_used());
                }
                let (cred_id, public_key) = insert_passkey(tx, &custodian.id, &passkey, &label, now.unix_timestamp())?;
                let (session_token, expires_at) = app.new_session(tx, &custodian.id, &cred_id, now.unix_timestamp())?;
                let actor = Actor::Custodian(custodian.id.clone()).audit_name();
                if !same_name.is_empty() {
                    tracing::warn!(custodian = %custodian.id, others = ?same_name, "a custodian enrolled with the name of another active custodian");
                }
                crate::app::announce::record(
                    tx,
                    now,
                    &actor,
                    &Subject::Custodian(custodian.id.clone()),
                    &Event::CustodianEnrolled {
                        name: custodian.name.clone(),
                        email: custodian.email.clone(),
                        roles: custodian.roles.clone(),
                        invite: json!(invite.id),
                        invited_by: json!(invite.created_by),
                        credential_id: cred_id.clone(),
                        public_key: json!(public_key),
                        label: json!(label),
                        cooling_off_until: Some(rfc3339(custodian.approve_after)),
                        same_name_as: (!same_name.is_empty()).then_some(same_name),
                    },
                )?;
                super::quorum::mark_reshare_due_where_needed(
                    tx,
                    now,
                    &actor,
                    &format!("{} enrolled and holds no share yet", custodian.name),
                )?;
                Ok(Some(SignedIn { session_token, custodian, expires_at }))
            })
            .await?;
        enrolled.ok_or_else(|| {
            AppError::conflict(
                "email_taken",
                "This e-mail address cannot be enrolled: it already belongs to a custodian. The invite is now used up; ask an admin for a new one if this was a mistake.",
            )
        })
    }

    // ---- sign-in ----

    #[tracing::instrument(skip_all)]
    pub async fn login_start(&self, email: String) -> Result<CeremonyStart<RequestChallengeResponse>, AppError> {
        let now = self.now();
        // An address that is not an e-mail cannot belong to anyone: answer like an unknown one.
        let email = Email::parse("email", &email).map(|e| e.as_str().to_owned()).unwrap_or(email);
        let app = self.clone();
        self.db
            .transact(move |tx| {
                let custodian = people::custodian_by_email(tx, &email)?.filter(|c| c.is_active());
                // The same steps for every address, enrolled or not: pick the stand-in
                // an unknown address gets, load one person's keys, start one ceremony
                // over them and make decoy ids for them. Only whose keys they are, and
                // whether the ids are then replaced, differ.
                let stand_in = app.stand_in_for(tx, &email)?;
                let own = match &custodian {
                    Some(c) => people::credentials_of(tx, &c.id)?,
                    None => Vec::new(),
                };
                let custodian_id = custodian.filter(|_| !own.is_empty()).map(|c| c.id);
                let keys = match (&custodian_id, &stand_in) {
                    (Some(_), _) => own,
                    (None, Some(stand_in)) => people::credentials_of(tx, stand_in)?,
                    (None, None) => Vec::new(),
                };
                let (options, state, pending) = if keys.is_empty() {
                    // Nobody holds a key yet, so there is nobody to hide.
                    (app.decoy_login_options(&email)?, None, Some("[]".to_owned()))
                } else {
                    let (mut options, state) =
                        app.webauthn.start_passkey_authentication(&ceremony::passkeys(&keys)?).map_err(internal)?;
                    let state = ceremony::state_json(&state)?;
                    let stand_in_ids = app.decoy_ids(&email, &options);
                    let pending = serde_json::to_string(&stand_in_ids).map_err(internal)?;
                    if custodian_id.is_some() {
                        (options, Some(state), None)
                    } else {
                        for (allowed, (decoy, _)) in options.public_key.allow_credentials.iter_mut().zip(&stand_in_ids)
                        {
                            allowed.id = URL_SAFE_NO_PAD.decode(decoy).map_err(internal)?;
                        }
                        (options, Some(state), Some(pending))
                    }
                };
                let binding = Binding { custodian_id, pending, ..Binding::default() };
                let id = app.issue_ceremony(tx, Purpose::Login, binding, state, now)?;
                Ok(CeremonyStart { ceremony_id: id, options })
            })
            .await
    }

    /// The stand-in for an address nobody active holds (computed for every address, so
    /// both kinds of answer cost the same): a custodian who holds keys, chosen per
    /// address by keyed HMAC, so the same address always gets the same answer. `None`
    /// when nobody holds a key.
    ///
    /// The answer for an unknown address is then indistinguishable from a real one:
    /// the options are made by the same webauthn-rs call over the stand-in's keys (same
    /// shape, same number of keys with the same id lengths and transports as a real
    /// person) and every credential id is replaced by keyed HMAC output of the same
    /// length. The state is stored like a real one, with which decoy id stands for
    /// which stand-in key, so `login_finish` does the same work (down to checking the
    /// signature of an assertion naming a listed id), but a ceremony without a
    /// custodian never signs anyone in.
    fn stand_in_for(&self, conn: &Connection, email: &str) -> Result<Option<String>, AppError> {
        let mut population = people::custodians_with_credentials(conn)?;
        let pick = u64::from_be_bytes(
            self.decoy_bytes(b"stand-in", email, 8).try_into().map_err(|_| internal("decoy length"))?,
        );
        let at = (pick % population.len().max(1) as u64) as usize;
        Ok((at < population.len()).then(|| population.swap_remove(at)))
    }

    /// A decoy id (base64url) for each allowed credential, with the id it stands for.
    fn decoy_ids(&self, email: &str, options: &RequestChallengeResponse) -> StandInIds {
        options
            .public_key
            .allow_credentials
            .iter()
            .enumerate()
            .map(|(i, allowed)| {
                let label = format!("credential-id/{i}");
                (b64url(&self.decoy_bytes(label.as_bytes(), email, allowed.id.len())), b64url(&allowed.id))
            })
            .collect()
    }

    /// `len` bytes of HMAC-SHA256(decoy key, label ‖ 0 ‖ email ‖ counter), stable per address.
    fn decoy_bytes(&self, label: &[u8], email: &str, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 32);
        let mut counter = 0u32;
        while out.len() < len {
            // A 32-byte key is always a valid HMAC key.
            if let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(self.decoy_key.as_slice()) {
                mac.update(label);
                mac.update(&[0]);
                mac.update(email.as_bytes());
                mac.update(&counter.to_be_bytes());
                out.extend_from_slice(&mac.finalize().into_bytes());
            }
            counter += 1;
        }
        out.truncate(len);
        out
    }

    /// Options for an address when nobody at all holds a key (a fresh install).
    fn decoy_login_options(&self, email: &str) -> Result<RequestChallengeResponse, AppError> {
        let id = self.decoy_bytes(b"credential-id/0", email, 16);
        let challenge = crate::crypto::random_bytes::<32>()?.to_vec();
        Ok(RequestChallengeResponse {
            public_key: PublicKeyCredentialRequestOptions {
                challenge,
                timeout: Some(self.config.security.ceremony_ttl_seconds * 1000),
                rp_id: self.origin.host().to_owned(),
                allow_credentials: vec![AllowCredentials { type_: "public-key".into(), id, transports: None }],
                user_verification: UserVerificationPolicy::Required,
                hints: None,
                extensions: None,
            },
            mediation: None,
        })
    }

    #[tracing::instrument(skip_all)]
    pub async fn login_finish(
        &self,
        ceremony_id: String,
        credential: PublicKeyCredential,
    ) -> Result<SignedIn, AppError> {
        let now = self.now();
        let c = self.take_unexpired(ceremony_id, Purpose::Login, now.unix_timestamp()).await?;
        let Some(state) = c.state else {
            return Err(sign_in_failed());
        };
        let state: PasskeyAuthentication = serde_json::from_str(&state).map_err(internal)?; // issued by login_start
        // Known or unknown address, the same verification runs: a decoy's state holds a
        // stand-in's keys, and an assertion naming a decoy id is checked against the
        // stand-in key that id stands for. Only then does the ceremony's owner matter.
        let mut credential = credential;
        if c.custodian_id.is_none()
            && let Some(pending) = c.pending.as_deref()
        {
            let stand_in_ids: StandInIds = serde_json::from_str(pending).map_err(internal)?;
            let named = b64url(&credential.raw_id);
            if let Some((_, stand_in)) = stand_in_ids.iter().find(|(decoy, _)| *decoy == named)
                && let Ok(raw) = URL_SAFE_NO_PAD.decode(stand_in)
            {
                credential.id = stand_in.clone();
                credential.raw_id = raw;
            } else if stand_in_ids.iter().any(|(_, stand_in)| *stand_in == named) {
                // The stand-in's own key, named directly: unlisted, as it would be for
                // a real person's ceremony, so it must not get further than that.
                credential.id = String::new();
                credential.raw_id = Vec::new();
            }
        }
        let verified = self.webauthn.finish_passkey_authentication(&credential, &state);
        if let Err(e) = &verified {
            // The same line whether or not the address is enrolled, naming the check
            // that refused the assertion: a decoy's fails at the same check a real one's
            // would (its signature, not "credential not found").
            tracing::debug!(error = ?e, "sign-in assertion refused");
        }
        let Some(custodian_id) = c.custodian_id else {
            return Err(match verified {
                Err(WebauthnError::UserNotVerified) => ceremony::refused(&WebauthnError::UserNotVerified),
                _ => sign_in_failed(),
            });
        };
        let result = match verified {
            Ok(r) => r,
            Err(e) => {
                let reason = match e {
                    WebauthnError::UserNotVerified => "user_verification_missing",
                    WebauthnError::CredentialPossibleCompromise => "counter_regression",
                    _ => "assertion_invalid",
                };
                // Counted, not written now: `record_sign_in_failures` writes at most one
                // entry per person per minute, so failures cannot flood the log and a
                // failure costs the same whether or not the address is enrolled.
                self.sign_in_failures.note(&custodian_id, reason, now.unix_timestamp());
                return Err(match e {
                    WebauthnError::UserNotVerified => ceremony::refused(&e),
                    _ => sign_in_failed(),
                });
            }
        };
        let app = self.clone();
        self.db
            .transact(move |tx| {
                let custodian =
                    people::custodian(tx, &custodian_id)?.filter(|c| c.is_active()).ok_or_else(sign_in_failed)?;
                let cred_id = b64url(result.cred_id());
                if !ceremony::record_use(tx, &custodian.id, &result, now.unix_timestamp())? {
                    return Err(sign_in_failed());
                }
                let (session_token, expires_at) = app.new_session(tx, &custodian.id, &cred_id, now.unix_timestamp())?;
                crate::app::announce::record(
                    tx,
                    now,
                    &Actor::Custodian(custodian.id.clone()).audit_name(),
                    &Subject::Custodian(custodian.id.clone()),
                    &Event::CustodianLogin { credential_id: cred_id.clone() },
                )?;
                Ok(SignedIn { session_token, custodian, expires_at })
            })
            .await
    }

    /// Resolve a session cookie into a principal, enforcing idle and absolute expiry.
    /// A plain read: `last_seen_at` is written at most once per
    /// [`SESSION_TOUCH_INTERVAL_SECS`] per session, so authenticated GETs do not take
    /// the database's write lock (and an fsync) on every request.
    #[tracing::instrument(skip_all)]
    pub async fn authenticate(&self, session_token: String) -> Result<Principal, AppError> {
        let now = self.now().unix_timestamp();
        let idle = i64::from(self.config.security.session_idle_minutes) * 60;
        self.db
            .call(move |conn| {
                let hash = token_hash(&session_token);
                let expired = || {
                    AppError::unauthenticated(
                        "session_expired",
                        "Your session has ended. Sign in again with your security key.",
                    )
                };
                let s = people::session(conn, &hash)?.ok_or_else(expired)?;
                if s.expires_at <= now || s.last_seen_at + idle <= now {
                    people::delete_session(conn, &hash)?;
                    return Err(expired());
                }
                let custodian =
                    people::custodian(conn, &s.custodian_id)?.filter(|c| c.is_active()).ok_or_else(expired)?;
                if now - s.last_seen_at >= SESSION_TOUCH_INTERVAL_SECS {
                    people::touch_session(conn, &hash, now)?;
                }
                Ok(Principal {
                    custodian,
                    credential_id: s.credential_id,
                    authenticated_at: s.created_at,
                    token_hash: hash,
                })
            })
            .await
    }

    #[tracing::instrument(skip_all)]
    pub async fn logout(&self, principal: Principal) -> Result<(), AppError> {
        let now = self.now();
        self.db
            .transact(move |tx| {
                people::delete_session(tx, &principal.token_hash)?;
                crate::app::announce::record(
                    tx,
                    now,
                    &principal.actor().audit_name(),
                    &Subject::Custodian(principal.custodian.id.clone()),
                    &Event::CustodianLogout {},
                )?;
                Ok::<_, AppError>(())
            })
            .await
    }

    // ---- more credentials ----

    #[tracing::instrument(skip_all)]
    pub async fn credential_add_start(
        &self,
        principal: Principal,
    ) -> Result<CeremonyStart<serde_json::Value>, AppError> {
        let now = self.now();
        let window = i64::from(self.config.security.reauth_window_minutes) * 60;
        if principal.authenticated_at + window < now.unix_timestamp() {
            return Err(AppError::forbidden(
                "reauthentication_required",
                format!(
                    "Adding a security key needs a sign-in from the last {} minutes. Sign out, sign in again, then add the key.",
                    window / 60
                ),
            ));
        }
        let app = self.clone();
        self.db
            .transact(move |tx| {
                let c = &principal.custodian;
                let user_id = Uuid::parse_str(&c.id).map_err(internal)?;
                let existing =
                    ceremony::passkeys_of(tx, &c.id)?.iter().map(|p| p.cred_id().clone()).collect::<Vec<_>>();
                let (ccr, state) = app
                    .webauthn
                    .start_passkey_registration(user_id, &c.email, &c.name, Some(existing))
                    .map_err(internal)?;
                let binding = Binding { custodian_id: Some(c.id.clone()), ..Binding::default() };
                let id =
                    app.issue_ceremony(tx, Purpose::AddCredential, binding, Some(ceremony::state_json(&state)?), now)?;
                Ok(CeremonyStart { ceremony_id: id, options: super::quorum::creation_with_prf(&ccr)? })
            })
            .await
    }

    #[tracing::instrument(skip_all)]
    pub async fn credential_add_finish(
        &self,
        principal: Principal,
        ceremony_id: String,
        credential: RegisterPublicKeyCredential,
        label: Option<String>,
    ) -> Result<people::CredentialRow, AppError> {
        let now = self.now();
        let c = self.take_unexpired(ceremony_id, Purpose::AddCredential, now.unix_timestamp()).await?;
        if c.custodian_id.as_deref() != Some(principal.custodian.id.as_str()) {
            return Err(ceremony_unknown());
        }
        let state: PasskeyRegistration = ceremony::state(&c)?;
        let passkey =
            self.webauthn.finish_passkey_registration(&credential, &state).map_err(|e| ceremony::refused(&e))?;
        self.db
            .transact(move |tx| {
                let me = &principal.custodian.id;
                let n = people::credentials_of(tx, me)?.len() + 1;
                let label = label_or_default(label, n)?;
                let (cred_id, public_key) = insert_passkey(tx, me, &passkey, &label, now.unix_timestamp())?;
                crate::app::announce::record(
                    tx,
                    now,
                    &principal.actor().audit_name(),
                    &Subject::Custodian(me.clone()),
                    &Event::CredentialAdded {
                        credential_id: cred_id.clone(),
                        label: json!(label),
                        public_key: json!(public_key),
                    },
                )?;
                people::credentials_of(tx, me)?
                    .into_iter()
                    .find(|r| r.id == cred_id)
                    .ok_or_else(|| internal("credential vanished"))
            })
            .await
    }

    #[tracing::instrument(skip_all)]
    pub async fn credential_rename(
        &self,
        principal: Principal,
        credential_id: String,
        label: String,
    ) -> Result<people::CredentialRow, AppError> {
        let label = display_text("label", &label, 64)?;
        let now = self.now();
        self.db
            .transact(move |tx| {
                let me = &principal.custodian.id;
                if !people::rename_credential(tx, me, &credential_id, &label)? {
                    return Err(AppError::not_found("credential_not_found", "You have no security key with that id."));
                }
                crate::app::announce::record(
                    tx,
                    now,
                    &principal.actor().audit_name(),
                    &Subject::Custodian(me.clone()),
                    &Event::CredentialRenamed { credential_id: credential_id.clone(), label: json!(label) },
                )?;
                people::credentials_of(tx, me)?
                    .into_iter()
                    .find(|r| r.id == credential_id)
                    .ok_or_else(|| internal("credential vanished"))
            })
            .await
    }

    #[tracing::instrument(skip_all)]
    pub async fn my_credentials(&self, principal: &Principal) -> Result<Vec<people::CredentialRow>, AppError> {
        let me = principal.custodian.id.clone();
        self.db.call(move |conn| Ok::<_, AppError>(people::credentials_of(conn, &me)?)).await
    }
}

fn insert_passkey(
    conn: &Connection,
    custodian_id: &str,
    passkey: &Passkey,
    label: &str,
    now: i64,
) -> Result<(String, serde_json::Value), AppError> {
    let cred_id = b64url(passkey.cred_id());
    let record = PublicKeyRecord::from_cose(passkey.get_public_key()).ok_or_else(|| {
        AppError::invalid(
            "unsupported_algorithm",
            "This authenticator uses a signature algorithm breakglass does not accept.",
        )
    })?;
    let record = serde_json::to_value(&record).map_err(internal)?;
    if people::credential_exists(conn, &cred_id)? {
        return Err(AppError::conflict("credential_exists", "This security key is already enrolled."));
    }
    people::insert_credential(
        conn,
        &people::CredentialRow {
            id: cred_id.clone(),
            custodian_id: custodian_id.into(),
            label: label.into(),
            passkey: serde_json::to_string(passkey).map_err(internal)?,
            prf_capable: false,
            created_at: now,
            last_used_at: None,
            prf_status: "unknown".into(),
            prf_recipient: None,
        },
        &record.to_string(),
    )?;
    Ok((cred_id, record))
}

fn invite_invalid() -> AppError {
    AppError::invalid(
        "invite_invalid",
        "This invite link is not valid. Ask an admin for a new one (`breakglass invite` on the host).",
    )
}

fn invite_used() -> AppError {
    AppError::gone("invite_used", "This invite was already used or revoked. Ask an admin for a new one.")
}

fn check_invite_usable(invite: &people::InviteRow, now: i64) -> Result<(), AppError> {
    if invite.used_at.is_some() || invite.revoked_at.is_some() {
        return Err(invite_used());
    }
    if invite.expires_at <= now {
        return Err(AppError::gone("invite_expired", "This invite has expired. Ask an admin for a new one."));
    }
    Ok(())
}

fn usable_invite(conn: &Connection, token: &str, now: i64) -> Result<people::InviteRow, AppError> {
    let invite = people::invite_by_token_hash(conn, &token_hash(token.trim()))?.ok_or_else(invite_invalid)?;
    check_invite_usable(&invite, now)?;
    Ok(invite)
}

/// Whether two display names would look the same in a list: case and runs of spaces
/// ignored.
fn same_display_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    norm(a) == norm(b)
}

/// Failed sign-ins counted in memory per custodian until `record_sign_in_failures`
/// writes them as one audit entry each (bounded by the number of custodians).
#[derive(Default)]
pub struct SignInFailures(std::sync::Mutex<BTreeMap<String, FailureTally>>);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FailureTally {
    failures: u64,
    reasons: BTreeMap<&'static str, u64>,
    first_at: i64,
    last_at: i64,
}

impl SignInFailures {
    fn note(&self, custodian_id: &str, reason: &'static str, at: i64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let t = map.entry(custodian_id.to_owned()).or_insert_with(|| FailureTally {
            first_at: at,
            last_at: at,
            ..FailureTally::default()
        });
        t.failures += 1;
        *t.reasons.entry(reason).or_default() += 1;
        t.last_at = t.last_at.max(at);
    }

    fn take(&self) -> BTreeMap<String, FailureTally> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Put back what could not be written, merged with anything counted meanwhile.
    fn restore(&self, pending: BTreeMap<String, FailureTally>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (id, old) in pending {
            let t = map.entry(id).or_insert_with(|| FailureTally { first_at: old.first_at, ..FailureTally::default() });
            t.failures += old.failures;
            for (r, n) in old.reasons {
                *t.reasons.entry(r).or_default() += n;
            }
            t.first_at = t.first_at.min(old.first_at);
            t.last_at = t.last_at.max(old.last_at);
        }
    }
}

impl App {
    /// Write the failed sign-ins counted since the last call: one
    /// `custodian.login_failed` entry per person, with how many failures, why, and
    /// when the first and last happened. `serve` calls this every minute (and on
    /// shutdown), so the log grows by at most one such entry per custodian per minute
    /// however fast anyone fails; failures still in memory are lost on a crash.
    #[tracing::instrument(skip_all)]
    pub async fn record_sign_in_failures(&self) -> Result<usize, AppError> {
        let pending = self.sign_in_failures.take();
        if pending.is_empty() {
            return Ok(0);
        }
        let now = self.now();
        let written = pending.clone();
        let result = self
            .db
            .transact(move |tx| {
                for (id, t) in &written {
                    crate::app::announce::record(
                        tx,
                        now,
                        &Actor::Custodian(id.clone()).audit_name(),
                        &Subject::Custodian(id.clone()),
                        &Event::CustodianLoginFailed {
                            reason: None,
                            failures: Some(t.failures),
                            reasons: Some(t.reasons.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect()),
                            first_at: Some(rfc3339(t.first_at)),
                            last_at: Some(rfc3339(t.last_at)),
                        },
                    )?;
                }
                Ok::<_, AppError>(written.len())
            })
            .await;
        if result.is_err() {
            self.sign_in_failures.restore(pending);
        }
        result
    }
}

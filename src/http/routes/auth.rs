//! Enrolment, sign-in, sign-out, my profile and my security keys.
use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header::SET_COOKIE},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use super::ApiResult;
use crate::{
    app::{auth::SignedIn as NewSession, custodians::CredentialView},
    http::{
        AppState,
        extract::{ApiJson, ApiPath, SignedIn, session_cookie_name},
    },
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolStart {
    invite_token: String,
    name: String,
    email: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterFinish {
    ceremony_id: String,
    credential: RegisterPublicKeyCredential,
    label: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginStart {
    email: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginFinish {
    ceremony_id: String,
    credential: PublicKeyCredential,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    label: String,
}

fn session_cookie(state: &AppState, value: &str, max_age: i64) -> HeaderMap {
    let https = state.app.origin.is_https();
    let cookie = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        session_cookie_name(https),
        if https { "; Secure" } else { "" }
    );
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        h.insert(SET_COOKIE, v);
    }
    h
}

fn signed_in_response(state: &AppState, s: NewSession) -> Response {
    let max_age = s.expires_at - state.app.now().unix_timestamp();
    let headers = session_cookie(state, &s.session_token, max_age.max(0));
    let c = s.custodian;
    (headers, Json(json!({"custodian": {"id": c.id, "name": c.name, "email": c.email, "roles": c.roles}, "session_expires_at": crate::app::rfc3339(s.expires_at)})))
        .into_response()
}

pub async fn enrol_start(
    State(state): State<AppState>,
    ApiJson(b): ApiJson<EnrolStart>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.enrol_start(b.invite_token, b.name, b.email).await?))
}

pub async fn enrol_finish(
    State(state): State<AppState>,
    ApiJson(b): ApiJson<RegisterFinish>,
) -> ApiResult<impl IntoResponse> {
    let s = state.app.enrol_finish(b.ceremony_id, b.credential, b.label).await?;
    Ok((StatusCode::CREATED, signed_in_response(&state, s)))
}

pub async fn login_start(
    State(state): State<AppState>,
    ApiJson(b): ApiJson<LoginStart>,
) -> ApiResult<impl IntoResponse> {
    crate::http::middleware::limit_account(&state, &b.email)?;
    Ok(Json(state.app.login_start(b.email).await?))
}

pub async fn login_finish(
    State(state): State<AppState>,
    ApiJson(b): ApiJson<LoginFinish>,
) -> ApiResult<impl IntoResponse> {
    let s = state.app.login_finish(b.ceremony_id, b.credential).await?;
    Ok(signed_in_response(&state, s))
}

pub async fn logout(State(state): State<AppState>, SignedIn(p): SignedIn) -> ApiResult<impl IntoResponse> {
    state.app.logout(p).await?;
    Ok((session_cookie(&state, "", 0), Json(json!({"signed_out": true}))))
}

pub async fn me(State(state): State<AppState>, SignedIn(p): SignedIn) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.me(p.custodian.id).await?))
}

pub async fn credentials_list(State(state): State<AppState>, SignedIn(p): SignedIn) -> ApiResult<impl IntoResponse> {
    let creds: Vec<CredentialView> = state.app.my_credentials(&p).await?.into_iter().map(Into::into).collect();
    Ok(Json(json!({"credentials": creds})))
}

pub async fn credential_add_start(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.credential_add_start(p).await?))
}

pub async fn credential_add_finish(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    ApiJson(b): ApiJson<RegisterFinish>,
) -> ApiResult<impl IntoResponse> {
    let c = state.app.credential_add_finish(p, b.ceremony_id, b.credential, b.label).await?;
    Ok((StatusCode::CREATED, Json(CredentialView::from(c))))
}

pub async fn credential_rename(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<Rename>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(CredentialView::from(state.app.credential_rename(p, id, b.label).await?)))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareRecipientFinish {
    ceremony_id: String,
    credential: webauthn_rs::prelude::PublicKeyCredential,
    /// The `age1…` recipient derived from the key's PRF output; `null` when the
    /// authenticator returned no PRF output.
    recipient: Option<String>,
}

/// Prepare one of my keys for quorum shares: an assertion that evaluates PRF.
pub async fn share_recipient_start(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.share_recipient_start(p, id).await?))
}

pub async fn share_recipient_finish(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    ApiPath(_id): ApiPath<String>,
    ApiJson(b): ApiJson<ShareRecipientFinish>,
) -> ApiResult<impl IntoResponse> {
    let c = state.app.share_recipient_finish(p, b.ceremony_id, b.credential, b.recipient).await?;
    Ok(Json(CredentialView::from(c)))
}

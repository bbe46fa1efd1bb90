//! Checkouts: request, approve or deny, release, cancel, check in, rotate.
use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use webauthn_rs::prelude::PublicKeyCredential;

use super::ApiResult;
use crate::{
    app::checkouts::{Answer, NewCheckout},
    domain::{
        AwsAccountId,
        checkout::{CheckoutState, Decision},
    },
    error::AppError,
    http::{
        AppState,
        extract::{ApiJson, ApiPath, ApiQuery, SignedIn},
    },
    store::checkouts::CheckoutFilter,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    account: Option<String>,
    awaiting_me: Option<bool>,
    mine: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalFinish {
    ceremony_id: String,
    credential: PublicKeyCredential,
    decision: Decision,
    comment: Option<String>,
    /// Quorum mode: your share, re-encrypted to the checkout's transit recipient
    /// (standard base64 of a binary age file). Required to approve.
    share: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseFinish {
    ceremony_id: String,
    credential: PublicKeyCredential,
    /// Quorum mode: the requester's share, re-encrypted to the transit recipient.
    share: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Close {
    note: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    value: SecretString,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

pub async fn checkouts_create(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    ApiJson(b): ApiJson<NewCheckout>,
) -> ApiResult<impl IntoResponse> {
    Ok((StatusCode::CREATED, Json(state.app.request_checkout(p, b).await?)))
}

pub async fn checkouts_list(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    if let Some(s) = &q.state {
        CheckoutState::parse(s).ok_or_else(|| {
            AppError::invalid(
                "invalid_state",
                "state must be pending, approved, released, closed, denied, cancelled or expired.",
            )
        })?;
    }
    let account_id = q.account.as_deref().map(AwsAccountId::parse).transpose().map_err(AppError::from)?;
    let filter = CheckoutFilter {
        state: q.state,
        account_id: account_id.map(|a| a.to_string()),
        requester_id: q.mine.unwrap_or(false).then(|| p.custodian.id.clone()),
    };
    let awaiting = q.awaiting_me.unwrap_or(false).then_some(p);
    Ok(Json(json!({"checkouts": state.app.list_checkouts(filter, awaiting).await?})))
}

pub async fn checkouts_get(
    State(state): State<AppState>,
    SignedIn(_): SignedIn,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.get_checkout(id).await?))
}

pub async fn checkouts_cancel(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.cancel_checkout(p, id).await?))
}

pub async fn approvals_start(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.approval_start(p, id).await?))
}

pub async fn approvals_finish(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<ApprovalFinish>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        state
            .app
            .approval_finish(
                p,
                id,
                b.ceremony_id,
                b.credential,
                Answer { decision: b.decision, comment: b.comment, share: b.share },
            )
            .await?,
    ))
}

pub async fn release_start(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.release_start(p, id).await?))
}

pub async fn release_finish(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<ReleaseFinish>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.release_finish(p, id, b.ceremony_id, b.credential, b.share).await?))
}

pub async fn checkouts_close(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<Close>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.close_checkout(p, id, b.note).await?))
}

pub async fn checkouts_rotate(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<Rotate>,
) -> ApiResult<impl IntoResponse> {
    Ok((StatusCode::CREATED, Json(state.app.rotate_after_checkout(p, id, b.value).await?)))
}

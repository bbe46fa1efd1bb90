use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use super::ApiResult;
use crate::{
    app::accounts::{NewAccount, PolicyUpdate},
    domain::SecretKind,
    http::{
        AppState,
        extract::{Admin, ApiJson, ApiPath, SignedIn},
    },
};

/// The secret arrives straight into a zeroizing type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deposit {
    value: SecretString,
}

pub async fn accounts_list(State(state): State<AppState>, SignedIn(_): SignedIn) -> ApiResult<impl IntoResponse> {
    Ok(Json(json!({"accounts": state.app.list_accounts().await?})))
}

pub async fn accounts_create(
    State(state): State<AppState>,
    Admin(p): Admin,
    ApiJson(b): ApiJson<NewAccount>,
) -> ApiResult<impl IntoResponse> {
    Ok((StatusCode::CREATED, Json(state.app.create_account(p.actor(), b).await?)))
}

pub async fn accounts_get(
    State(state): State<AppState>,
    SignedIn(_): SignedIn,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.get_account(id).await?))
}

pub async fn secrets_deposit(
    State(state): State<AppState>,
    Admin(p): Admin,
    ApiPath((account_id, kind)): ApiPath<(String, String)>,
    ApiJson(b): ApiJson<Deposit>,
) -> ApiResult<impl IntoResponse> {
    let kind: SecretKind = kind.parse().map_err(crate::error::AppError::from)?;
    Ok((StatusCode::CREATED, Json(state.app.deposit_secret(p.actor(), account_id, kind, b.value).await?)))
}

pub async fn policy_update(
    State(state): State<AppState>,
    Admin(p): Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<PolicyUpdate>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.update_policy(p.actor(), id, b).await?))
}

/// Turn the account to quorum mode: its key is split among its holders.
pub async fn quorum_enable(
    State(state): State<AppState>,
    Admin(p): Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(_): ApiJson<super::checkouts::Empty>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.enable_quorum(p.actor(), id).await?))
}

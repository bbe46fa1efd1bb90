use axum::{Json, extract::State, response::IntoResponse};
use serde::Deserialize;
use serde_json::json;

use super::ApiResult;
use crate::http::{
    AppState,
    extract::{Admin, ApiJson, ApiPath, AuditReader},
};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Disable {
    reason: Option<String>,
    /// Go through even if a quorum-mode account is left with fewer live holders than
    /// it needs (announced `critical`).
    emergency: Option<bool>,
}

pub async fn custodians_list(
    State(state): State<AppState>,
    AuditReader(_): AuditReader,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(json!({"custodians": state.app.list_custodians().await?})))
}

pub async fn custodians_disable(
    State(state): State<AppState>,
    Admin(p): Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<Disable>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.disable_custodian(p.actor(), id, b.reason, b.emergency.unwrap_or(false)).await?))
}

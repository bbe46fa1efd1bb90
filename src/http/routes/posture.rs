//! Root posture of an account (docs/api.md, "Root posture").
use axum::{Json, extract::State, response::IntoResponse};

use super::ApiResult;
use crate::http::{
    AppState,
    extract::{Admin, ApiPath, SignedIn},
};

pub async fn posture_get(
    State(state): State<AppState>,
    SignedIn(_): SignedIn,
    ApiPath(account_id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.posture(account_id).await?))
}

/// Read it from AWS now (an admin; the scheduled check runs as `system`).
pub async fn posture_check(
    State(state): State<AppState>,
    Admin(p): Admin,
    ApiPath(account_id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.check_posture(p.actor(), account_id).await?))
}

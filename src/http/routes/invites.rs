use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::Deserialize;
use serde_json::json;

use super::ApiResult;
use crate::{
    domain::Role,
    http::{
        AppState,
        extract::{Admin, ApiJson, ApiPath},
    },
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewInvite {
    roles: Vec<Role>,
}

pub async fn invites_create(
    State(state): State<AppState>,
    Admin(p): Admin,
    ApiJson(b): ApiJson<NewInvite>,
) -> ApiResult<impl IntoResponse> {
    Ok((StatusCode::CREATED, Json(state.app.create_invite(p.actor(), b.roles).await?)))
}

pub async fn invites_list(State(state): State<AppState>, Admin(_): Admin) -> ApiResult<impl IntoResponse> {
    Ok(Json(json!({"invites": state.app.list_invites().await?})))
}

pub async fn invites_revoke(
    State(state): State<AppState>,
    Admin(p): Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.revoke_invite(p.actor(), id).await?))
}

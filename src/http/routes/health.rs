use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use super::ApiResult;
use crate::{app::health::Readiness, http::AppState};

/// Liveness: the process answers.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness, part by part (docs/api.md): 200 when every required part works, 503
/// naming the failing parts otherwise.
pub async fn readyz(State(state): State<AppState>) -> ApiResult<(StatusCode, Json<Readiness>)> {
    let r = state.app.readiness(state.scheduler.as_deref()).await?;
    let status = if r.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((status, Json(r)))
}

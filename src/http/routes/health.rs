use axum::{Extension, Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use super::ApiResult;
use crate::{
    app::health::Readiness,
    http::{AppState, request_id::HealthProbe},
};

/// Liveness: the process answers.
pub async fn healthz() -> (Extension<HealthProbe>, Json<Value>) {
    (Extension(HealthProbe), Json(json!({"status": "ok"})))
}

/// Readiness, part by part (docs/api.md): 200 when every required part works, 503
/// naming the failing parts otherwise.
pub async fn readyz(State(state): State<AppState>) -> ApiResult<(StatusCode, Extension<HealthProbe>, Json<Readiness>)> {
    let r = state.app.readiness(state.scheduler.as_deref()).await?;
    let status = if r.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((status, Extension(HealthProbe), Json(r)))
}

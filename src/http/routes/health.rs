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

/// Prometheus metrics (docs/api.md), for a scraper holding the metrics token.
pub async fn metrics(
    _scraper: crate::http::extract::MetricsScraper,
    State(state): State<AppState>,
) -> ApiResult<(Extension<HealthProbe>, [(axum::http::header::HeaderName, &'static str); 1], String)> {
    let snapshot = state.app.metrics_snapshot().await?;
    let body = crate::metrics::render(&state.app.metrics, &snapshot)
        .map_err(|e| crate::app::Error::unexpected("encoding the metrics", e))?;
    Ok((Extension(HealthProbe), [(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body))
}

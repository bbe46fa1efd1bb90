use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use crate::http::AppState;

/// Liveness: the process answers.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the database answers and the vault is unsealed (the server does not
/// start serving until it is).
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.app.ready().await {
        Ok(()) => {
            let outbox = state.app.outbox_status().await.ok();
            (StatusCode::OK, Json(json!({"status": "ready", "database": "ok", "vault": "unsealed", "outbox": outbox})))
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "not_ready", "database": "unavailable", "vault": "unsealed"})),
            )
        }
    }
}

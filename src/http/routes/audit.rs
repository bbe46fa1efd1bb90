use axum::{Json, extract::State, response::IntoResponse};
use serde::Deserialize;

use super::ApiResult;
use crate::{
    http::{
        AppState,
        extract::{ApiQuery, AuditReader},
    },
    store::audit::AuditFilter,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    after_seq: Option<u64>,
    limit: Option<u32>,
    actor: Option<String>,
    action: Option<String>,
    action_prefix: Option<String>,
    subject: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before_seq: Option<u64>,
    person: Option<String>,
}

pub async fn audit_list(
    State(state): State<AppState>,
    AuditReader(_): AuditReader,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    let filter = AuditFilter {
        after_seq: q.after_seq,
        actor: q.actor,
        action: q.action,
        action_prefix: q.action_prefix,
        subject: q.subject,
        since: q.since,
        until: q.until,
        before_seq: q.before_seq,
        person: q.person,
        newest_first: false,
    };
    Ok(Json(state.app.audit_page(filter, q.limit.unwrap_or(100)).await?))
}

pub async fn audit_verify(State(state): State<AppState>, AuditReader(_): AuditReader) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.audit_verify().await?))
}

/// A signed checkpoint of the log now (C2SP-style note).
pub async fn audit_checkpoint(
    State(state): State<AppState>,
    AuditReader(_): AuditReader,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.checkpoint().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxQuery {
    state: Option<String>,
    checkout: Option<String>,
}

/// Announcements and their delivery state.
pub async fn outbox_list(
    State(state): State<AppState>,
    AuditReader(_): AuditReader,
    ApiQuery(q): ApiQuery<OutboxQuery>,
) -> ApiResult<impl IntoResponse> {
    let status = state.app.outbox_status().await?;
    let messages = state.app.outbox_list(q.state, q.checkout).await?;
    Ok(Json(serde_json::json!({"status": status, "messages": messages})))
}

/// The whole log as JSON lines (what `breakglass audit export --format jsonl` writes),
/// streamed: memory stays bounded whatever the size of the log.
pub async fn audit_export(
    State(state): State<AppState>,
    AuditReader(_): AuditReader,
) -> ApiResult<axum::response::Response> {
    let stream = state.app.audit_export_stream().await?;
    let mut res = axum::body::Body::from_stream(stream).into_response();
    res.headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/x-ndjson"));
    attachment(&mut res, &state.app.export_file_name("audit", "jsonl"));
    Ok(res)
}

/// `Content-Disposition: attachment; filename="…"`: the browser saves the export under
/// a name that says what it is and when it was taken. The names are ASCII
/// (`breakglass-<what>-<date>.<ext>`), so they need no quoting beyond the quotes.
pub fn attachment(res: &mut axum::response::Response, file_name: &str) {
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        res.headers_mut().insert(axum::http::header::CONTENT_DISPOSITION, v);
    }
}

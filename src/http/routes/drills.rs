//! Drills: list, status and coverage, the checklist, the auditor export.
use axum::{
    Json,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::ApiResult;
use crate::{
    app::drills::{Checklist, evidence_csv},
    error::AppError,
    http::{
        AppState,
        extract::{ApiJson, ApiPath, ApiQuery, AuditReader, SignedIn},
    },
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Period {
    account: Option<String>,
    /// RFC 3339, inclusive.
    since: Option<String>,
    /// RFC 3339, exclusive.
    until: Option<String>,
    format: Option<String>,
}

fn bounds(q: &Period) -> Result<(i64, i64), AppError> {
    let parse = |s: &Option<String>, default: i64| -> Result<i64, AppError> {
        match s {
            None => Ok(default),
            Some(v) => time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                .map(|t| t.unix_timestamp())
                .map_err(|_| {
                    AppError::invalid(
                        "invalid_time",
                        format!("{v:?} is not an RFC 3339 time such as 2026-12-01T00:00:00Z."),
                    )
                }),
        }
    };
    Ok((parse(&q.since, i64::MIN)?, parse(&q.until, i64::MAX)?))
}

pub async fn drills_list(
    State(state): State<AppState>,
    SignedIn(_): SignedIn,
    ApiQuery(q): ApiQuery<Period>,
) -> ApiResult<impl IntoResponse> {
    let (since, until) = bounds(&q)?;
    Ok(Json(json!({"drills": state.app.list_drills(q.account, since, until).await?})))
}

pub async fn drills_status(State(state): State<AppState>, SignedIn(_): SignedIn) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.drill_status().await?))
}

pub async fn drills_checklist(
    State(state): State<AppState>,
    SignedIn(p): SignedIn,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<Checklist>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.submit_checklist(p, id, b).await?))
}

/// Auditor export: `format=jsonl` (default) or `csv`.
pub async fn drills_export(
    State(state): State<AppState>,
    AuditReader(_): AuditReader,
    ApiQuery(q): ApiQuery<Period>,
) -> ApiResult<Response> {
    let (since, until) = bounds(&q)?;
    let rows = state.app.drill_evidence(since, until).await?;
    let (body, ctype, ext) = match q.format.as_deref().unwrap_or("jsonl") {
        "jsonl" => {
            (rows.iter().map(|r| json!(r).to_string() + "\n").collect::<String>(), "application/x-ndjson", "jsonl")
        }
        "csv" => (evidence_csv(&rows), "text/csv; charset=utf-8", "csv"),
        other => return Err(AppError::invalid("invalid_format", format!("format {other:?}: use jsonl or csv.")).into()),
    };
    let mut res = body.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    super::audit::attachment(&mut res, &state.app.export_file_name("drills", ext));
    Ok(res)
}

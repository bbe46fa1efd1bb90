//! `ApiError`: the one error response. `{"error": {"code", "message"}}` with a
//! stable code (5xx answers add `request_id`, also in the `x-request-id` header);
//! internals are logged once here, with their cause chain, and never sent.
use axum::{
    Json,
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::error::AppError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if self.status.is_server_error()
            && let Some(id) = super::request_id::current()
        {
            error["request_id"] = json!(id);
        }
        let mut res = (self.status, Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            res.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("10"));
        }
        res
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        let status = match &e {
            AppError::Invalid { .. } => StatusCode::BAD_REQUEST,
            AppError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            AppError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AppError::NotFound { .. } => StatusCode::NOT_FOUND,
            AppError::Conflict { .. } => StatusCode::CONFLICT,
            AppError::Gone { .. } => StatusCode::GONE,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            AppError::Store(s) if s.is_disk_full() => {
                tracing::error!(error = %e, "the database's disk is full");
                return Self::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "storage_full",
                    "The server's disk is full, so nothing was changed. Tell an admin; try again once space has been freed.",
                );
            }
            AppError::Store(_) | AppError::Crypto(_) | AppError::Internal(_) | AppError::Unexpected { .. } => {
                // Logged once, here, inside the request's span (so with its request
                // id), with the whole cause chain. Never sent: it may name tables or paths.
                tracing::error!(error = %crate::error::chain(&e), "internal error");
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Something went wrong on the server. It has been logged; try again, and tell an admin if it persists.",
                );
            }
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonSyntaxError(_) => {
                Self::new(StatusCode::BAD_REQUEST, "malformed_json", "The request body is not valid JSON.")
            }
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the body as JSON with the header Content-Type: application/json.",
            ),
            JsonRejection::JsonDataError(e) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("The JSON body does not have the expected shape: {}. See docs/api.md.", data_error_detail(&e)),
            ),
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "The request body is larger than this server accepts.",
            ),
            other => Self::new(other.status(), "bad_request", "The request body could not be read."),
        }
    }
}

/// Field names of the API's own request bodies (docs/api.md). An unknown field is
/// named in an error only when it is one of these — a misplaced field of another
/// endpoint; anything else the client sent as a key could be a secret.
const API_FIELD_NAMES: &[&str] = &[
    "account_id",
    "alias",
    "root_email",
    "approvals_required",
    "reveal_window_minutes",
    "max_checkout_minutes",
    "veto",
    "drill_schedule",
    "approvers",
    "value",
    "invite_token",
    "name",
    "email",
    "ceremony_id",
    "credential",
    "label",
    "decision",
    "comment",
    "note",
    "reason",
    "roles",
    "ticket",
    "kind",
    "duration_minutes",
    "checkout_id",
    "items",
    "result",
];

/// What may be said about a JSON body of the wrong shape. serde's text can quote
/// what the client sent — a value, or the name of an unknown field, either of which
/// may be a secret put in the wrong place — so only names from our own vocabulary
/// are repeated (a missing field, or an unknown one in [`API_FIELD_NAMES`]).
fn data_error_detail(e: &axum::extract::rejection::JsonDataError) -> String {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(p) = err.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>() {
            let inner = p.inner().to_string();
            if let Some(rest) = inner.strip_prefix("missing field `") {
                let name = rest.split('`').next().unwrap_or_default();
                return format!("missing field `{name}`");
            }
            if let Some(rest) = inner.strip_prefix("unknown field `") {
                let name = rest.split('`').next().unwrap_or_default();
                return if API_FIELD_NAMES.contains(&name) {
                    format!("unknown field `{name}` (not accepted by this endpoint)")
                } else {
                    "a field it does not know (its name is not repeated, in case it was a secret)".into()
                };
            }
            break;
        }
        source = err.source();
    }
    "a field has the wrong type or an invalid value".into()
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_path", "A value in the URL path is not valid.")
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        let text = r.body_text();
        let detail = text.split(": ").last().unwrap_or_default().to_owned();
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", format!("The query string is not valid: {detail}."))
    }
}

pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "There is nothing at this address. See docs/api.md for the endpoints.",
    )
}

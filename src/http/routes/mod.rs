//! One file per resource. Handlers are named `<resource>_<verb>`.
pub mod accounts;
pub mod audit;
pub mod auth;
pub mod checkouts;
pub mod custodians;
pub mod drills;
pub mod health;
pub mod invites;
pub mod posture;
pub mod root_activity;

use axum::http::StatusCode;

use super::error::ApiError;

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This endpoint does not accept that HTTP method. See docs/api.md.",
    )
}

pub type ApiResult<T> = Result<T, ApiError>;

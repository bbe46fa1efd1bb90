//! Extractors. Authorization is in the handler's signature: a handler that takes
//! `Admin` cannot run for anyone else. Body, path and query extractors turn
//! rejections into `ApiError` JSON.
use axum::{
    Json,
    extract::{FromRequest, FromRequestParts, Path, Query, Request},
    http::{
        StatusCode,
        header::{CONTENT_TYPE, COOKIE},
        request::Parts,
    },
};
use serde::de::DeserializeOwned;

use super::{AppState, error::ApiError};
use crate::{app::Principal, domain::Role};

/// JSON body with JSON errors. JSON is UTF-8 (RFC 8259): a `charset` other than
/// UTF-8 is refused rather than misread.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(charset) = req.headers().get(CONTENT_TYPE).and_then(|v| declared_charset(v.as_bytes()))
            && !charset.eq_ignore_ascii_case("utf-8")
            && !charset.eq_ignore_ascii_case("utf8")
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the body as UTF-8 JSON: Content-Type: application/json (charset=utf-8 or no charset).",
            ));
        }
        Ok(Self(Json::<T>::from_request(req, state).await?.0))
    }
}

/// The `charset` parameter of a Content-Type value, without quotes; `Some("")` for
/// a value that cannot be read (so it is refused, not ignored).
fn declared_charset(value: &[u8]) -> Option<String> {
    let Ok(text) = std::str::from_utf8(value) else { return Some(String::new()) };
    text.split(';').skip(1).find_map(|param| {
        let (k, v) = param.split_once('=')?;
        k.trim().eq_ignore_ascii_case("charset").then(|| v.trim().trim_matches('"').to_owned())
    })
}

pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(Path::<T>::from_request_parts(parts, state).await?.0))
    }
}

pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(Query::<T>::from_request_parts(parts, state).await?.0))
    }
}

pub fn session_cookie_name(https: bool) -> &'static str {
    // The __Host- prefix makes browsers refuse the cookie unless it is Secure, has
    // Path=/ and no Domain: only possible on https.
    if https { "__Host-breakglass" } else { "breakglass_session" }
}

fn session_token(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Any signed-in, active person, whatever their roles.
pub struct SignedIn(pub Principal);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let name = session_cookie_name(state.app.origin.is_https());
        let token = session_token(parts, name).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "not_signed_in",
                "Sign in with your security key first (POST /api/v1/login/start).",
            )
        })?;
        Ok(Self(state.app.authenticate(token).await?))
    }
}

fn require(p: Principal, roles: &[Role]) -> Result<Principal, ApiError> {
    if roles.iter().any(|r| p.custodian.has_role(*r)) {
        Ok(p)
    } else {
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_role",
            format!("This needs the role {}. Ask an admin if you should have it.", names.join(" or ")),
        ))
    }
}

/// A signed-in admin.
pub struct Admin(pub Principal);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let SignedIn(p) = SignedIn::from_request_parts(parts, state).await?;
        Ok(Self(require(p, &[Role::Admin])?))
    }
}

/// A signed-in auditor or admin: may read the audit log and custodian list.
pub struct AuditReader(pub Principal);

impl FromRequestParts<AppState> for AuditReader {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let SignedIn(p) = SignedIn::from_request_parts(parts, state).await?;
        Ok(Self(require(p, &[Role::Auditor, Role::Admin])?))
    }
}

/// A Prometheus scraper that presented the metrics bearer token (`metrics.token_file`).
pub struct MetricsScraper;

impl FromRequestParts<AppState> for MetricsScraper {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        state.app.check_metrics_token(presented)?;
        Ok(Self)
    }
}

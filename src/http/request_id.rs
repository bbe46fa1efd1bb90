//! Request ids. Every request gets a fresh id (a client-sent `x-request-id` is
//! replaced, so logs cannot be made to lie about it); it is in the request's log span,
//! in the `x-request-id` response header, and in the JSON body of every 5xx error, so an
//! operator can go from a user's error message to the log line with the cause.
use std::time::Duration;

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue, Response},
    middleware::Next,
    response::IntoResponse,
};
use tower_http::{
    classify::{ServerErrorsAsFailures, SharedClassifier},
    trace::TraceLayer,
};
use tracing::Span;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being handled, when called inside one.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Outermost middleware: assign the id, expose it to the handler's task, return it.
pub async fn assign(mut req: Request, next: Next) -> axum::response::Response {
    let id = uuid::Uuid::new_v4().to_string();
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    req.headers_mut().insert(HEADER, value.clone());
    let mut res = CURRENT.scope(id, next.run(req)).await.into_response();
    res.headers_mut().insert(HEADER, value);
    res
}

/// The log span of one request: method, path and request id. Query strings are left
/// out (they are not secret today, but nothing needs them in the log). Internal errors
/// are logged inside this span by `ApiError`; one line per response at `info` (at
/// `debug` for successful health probes, which load balancers send every few seconds).
#[allow(clippy::type_complexity)]
pub fn trace_layer() -> TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    impl Fn(&Request) -> Span + Clone,
    (),
    impl Fn(&Response<axum::body::Body>, Duration, &Span) + Clone,
    (),
    (),
    (),
> {
    TraceLayer::new_for_http()
        .make_span_with(|req: &Request| {
            let id = req.headers().get(HEADER).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        })
        .on_request(())
        .on_response(|res: &Response<axum::body::Body>, latency: Duration, _span: &Span| {
            let status = res.status().as_u16();
            let latency_ms = latency.as_millis() as u64;
            let probe = res.extensions().get::<HealthProbe>().is_some();
            if probe && res.status().is_success() {
                tracing::debug!(status, latency_ms, "response");
            } else {
                tracing::info!(status, latency_ms, "response");
            }
        })
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}

/// Marks a health-probe response (`/healthz`, `/readyz`) so its log line is `debug`.
#[derive(Debug, Clone, Copy)]
pub struct HealthProbe;

//! Cross-cutting HTTP defences: CSRF origin check, security headers, rate limit.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::Instant,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{AppState, error::ApiError};

/// State-changing requests must come from our own origin. Browsers always send
/// `Origin` on POST/PUT/PATCH/DELETE; scripts must send it too (docs/api.md). This
/// stops cross-site form posts even where `SameSite` cookies do not.
pub async fn require_same_origin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let expected = state.app.config.origin_header();
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let same_site_fetch = req.headers().get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("same-origin");
    let ok = match origin {
        Some(o) => o == expected,
        None => same_site_fetch,
    };
    if ok {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_origin_mismatch",
            format!("Requests that change something must come from {expected}: send the header Origin: {expected}."),
        )
        .into_response()
    }
}

/// Headers on every response. The API serves no HTML yet, so the CSP allows nothing.
pub async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let is_page = !req.uri().path().starts_with("/api/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    // Pages may load their own script and style and call the API; nothing from
    // elsewhere, and no inline script. The API may load nothing at all.
    let csp = if is_page {
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    } else {
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    };
    set(h, "content-security-policy", csp);
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "no-referrer");
    set(h, "cache-control", "no-store");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cross-origin-resource-policy", "same-origin");
    set(
        h,
        "permissions-policy",
        "publickey-credentials-get=(self), publickey-credentials-create=(self), camera=(), microphone=(), geolocation=()",
    );
    if state.app.config.is_https() {
        set(h, "strict-transport-security", "max-age=63072000; includeSubDomains");
    }
    res
}

/// A token bucket per client address for the ceremony endpoints (enrol, sign-in,
/// adding keys): slows guessing and flooding without affecting normal use.
pub struct RateLimiter {
    per_minute: f64,
    burst: f64,
    /// Reverse proxies whose `X-Forwarded-For` names the real client.
    trusted_proxies: Vec<IpAddr>,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32, burst: u32, trusted_proxies: Vec<IpAddr>) -> Self {
        Self {
            per_minute: f64::from(per_minute),
            burst: f64::from(burst),
            trusted_proxies,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The client address: the peer, or — when the peer is a trusted proxy — the
    /// last address it appended to `X-Forwarded-For`.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.trusted_proxies.contains(&peer) {
            return peer;
        }
        forwarded_for.and_then(|v| v.rsplit(',').next()).and_then(|ip| ip.trim().parse().ok()).unwrap_or(peer)
    }

    /// Take one token for `ip`; false when its bucket is empty.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 10_000 {
            let burst = self.burst;
            let rate = self.per_minute;
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate / 60.0 < burst);
        }
        let (tokens, at) = buckets.entry(ip).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_minute / 60.0).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
    let forwarded = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let ip = state.limiter.client_ip(peer, forwarded);
    if state.limiter.allow(ip) {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many sign-in or enrolment attempts from this address. Wait a minute and try again.",
        )
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let l = RateLimiter::new(60, 2, vec![proxy]);
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(
            l.client_ip(proxy, Some("198.51.100.1, 203.0.113.7")),
            client,
            "the proxy's own addition, rightmost"
        );
        assert_eq!(l.client_ip(proxy, None), proxy);
        assert_eq!(l.client_ip(proxy, Some("garbage")), proxy);
        let stranger: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(l.client_ip(stranger, Some("203.0.113.7")), stranger, "anyone else cannot pick an address");
        // Buckets are per client.
        assert!(l.allow(client) && l.allow(client) && !l.allow(client));
        assert!(l.allow(stranger));
    }
}

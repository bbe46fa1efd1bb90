//! Cross-cutting HTTP defences: CSRF origin check, security headers, rate limit.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
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
    let expected = state.app.origin.header();
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
    if state.app.origin.is_https() {
        set(h, "strict-transport-security", "max-age=63072000; includeSubDomains");
    }
    res
}

/// Refuse a request whose declared `Content-Length` is over the body limit before
/// reading any of it, in the JSON error shape. (Bodies without a length are still
/// cut off at the limit by `DefaultBodyLimit` when they are read.)
pub async fn refuse_oversized_body(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.app.config.http.body_limit_bytes;
    let declared =
        req.headers().get(header::CONTENT_LENGTH).map(|v| v.to_str().ok().and_then(|t| t.parse::<u64>().ok()));
    match declared {
        Some(Some(n)) if n > limit as u64 => body_too_large().into_response(),
        // hyper refuses unreadable lengths itself; keep the shape if one gets here.
        Some(None) => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "The Content-Length header is not a number.")
                .into_response()
        }
        _ => next.run(req).await,
    }
}

pub fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "The request body is larger than this server accepts.",
    )
}

/// Each request must be answered within `http.request_timeout_seconds` (a slow body
/// upload counts); otherwise it is dropped with a JSON `503 request_timeout`.
pub async fn request_timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = Duration::from_secs(u64::from(state.app.config.http.request_timeout_seconds));
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            "The request took too long (a slow upload or a busy server). Try again.",
        )
        .into_response(),
    }
}

/// Token buckets for the ceremony endpoints (enrol, sign-in, adding keys): one per
/// client address and, for sign-in, one per e-mail address, so neither many
/// addresses against one account nor one address against many accounts gets far.
pub struct RateLimiter {
    /// Reverse proxies whose `X-Forwarded-For` entries are believed.
    trusted_proxies: Vec<IpAddr>,
    addresses: Buckets<IpAddr>,
    accounts: Buckets<String>,
}

/// At most this many buckets are kept per kind; full (idle) ones are dropped first.
const MAX_BUCKETS: usize = 10_000;

struct Buckets<K> {
    per_minute: f64,
    burst: f64,
    map: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: std::hash::Hash + Eq> Buckets<K> {
    fn new(per_minute: u32, burst: u32) -> Self {
        Self { per_minute: f64::from(per_minute), burst: f64::from(burst), map: Mutex::new(HashMap::new()) }
    }

    /// Take one token for `key`; false when its bucket is empty.
    fn allow(&self, key: K) -> bool {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_BUCKETS {
            let (burst, rate) = (self.burst, self.per_minute);
            map.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate / 60.0 < burst);
            if map.len() >= MAX_BUCKETS {
                // Still full of busy buckets: a flood from very many keys. Start over
                // rather than grow without bound (documented in SECURITY.md).
                map.clear();
            }
        }
        let (tokens, at) = map.entry(key).or_insert((self.burst, now));
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

impl RateLimiter {
    pub fn new(per_minute: u32, burst: u32, trusted_proxies: Vec<IpAddr>) -> Self {
        Self {
            trusted_proxies: trusted_proxies.into_iter().map(|ip| ip.to_canonical()).collect(),
            addresses: Buckets::new(per_minute, burst),
            accounts: Buckets::new(per_minute, burst),
        }
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.contains(&ip.to_canonical())
    }

    /// The client address. A peer that is not a trusted proxy is the client. Behind
    /// trusted proxies, `X-Forwarded-For` (all its header lines, in order, as one
    /// list) is read from the right: each proxy appends the address it saw, so the
    /// right-most entry that is not a trusted proxy is the client — whatever the
    /// client wrote further left is never believed. An unreadable entry ends the
    /// walk and counts as the client (a bucket of its own, never a proxy's).
    pub fn client_ip<'a>(&self, peer: IpAddr, forwarded_for: impl IntoIterator<Item = &'a str>) -> ClientAddr {
        if !self.trusted(peer) {
            return ClientAddr::Ip(peer.to_canonical());
        }
        let entries: Vec<&str> = forwarded_for.into_iter().flat_map(|line| line.split(',')).map(str::trim).collect();
        for entry in entries.iter().rev() {
            match parse_forwarded_ip(entry) {
                Some(ip) if self.trusted(ip) => continue,
                Some(ip) => return ClientAddr::Ip(ip.to_canonical()),
                None => return ClientAddr::Unreadable,
            }
        }
        // Only proxies (or no header at all): the nearest proxy is the client, and all
        // its clients share one bucket. That is a proxy misconfiguration: say so once.
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if entries.iter().all(|e| e.is_empty()) && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                proxy = %peer,
                "a trusted proxy sent no X-Forwarded-For: its clients share one rate-limit bucket (deploy/RUNBOOK.md section 5)"
            );
        }
        ClientAddr::Ip(peer.to_canonical())
    }

    /// Take one token for a client address (IPv6 clients by their /64).
    pub fn allow(&self, client: ClientAddr) -> bool {
        let key = match client {
            ClientAddr::Ip(IpAddr::V6(v6)) => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            ClientAddr::Ip(ip) => ip,
            ClientAddr::Unreadable => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        self.addresses.allow(key)
    }

    /// Take one token for sign-ins to an e-mail address (known or not: the limit
    /// must not tell them apart).
    pub fn allow_account(&self, email: &str) -> bool {
        self.accounts.allow(email.trim().to_lowercase())
    }
}

/// Who a request is from, for rate limiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddr {
    Ip(IpAddr),
    /// A forwarded entry that is not an address: one shared bucket for all of them.
    Unreadable,
}

/// An `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

fn rate_limited(message: &'static str) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
}

pub async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
    let forwarded = req.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
    let client = state.limiter.client_ip(peer, forwarded);
    if state.limiter.allow(client) {
        next.run(req).await
    } else {
        rate_limited("Too many sign-in or enrolment attempts from this address. Wait a minute and try again.")
            .into_response()
    }
}

/// The per-account limit for sign-in, checked by `login_start` once it has the address.
pub fn limit_account(state: &AppState, email: &str) -> Result<(), ApiError> {
    if state.limiter.allow_account(email) {
        Ok(())
    } else {
        Err(rate_limited("Too many sign-in attempts for this e-mail address. Wait a minute and try again."))
    }
}

/// Count every answered request and its latency for `/metrics`, labelled by the
/// matched route pattern (never the raw path, which may carry ids or tokens).
pub async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    state.app.metrics.observe(&route, &method, res.status().as_u16(), started.elapsed().as_secs_f64());
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_read_from_the_right_past_trusted_proxies_only() {
        let proxy = ip("127.0.0.1");
        let inner = ip("10.0.0.2");
        let l = RateLimiter::new(60, 2, vec![proxy, inner]);
        let client = ClientAddr::Ip(ip("203.0.113.7"));
        assert_eq!(l.client_ip(proxy, ["198.51.100.1, 203.0.113.7"]), client, "the proxy's own addition, rightmost");
        assert_eq!(l.client_ip(proxy, ["198.51.100.1", "203.0.113.7"]), client, "all header lines, in order");
        assert_eq!(l.client_ip(proxy, ["203.0.113.7, 10.0.0.2"]), client, "a chain of trusted proxies is skipped");
        assert_eq!(l.client_ip(proxy, ["203.0.113.7:5555"]), client, "a port is allowed");
        assert_eq!(
            l.client_ip(proxy, ["garbage, 203.0.113.7"]),
            client,
            "what the client wrote on the left is never read"
        );
        assert_eq!(l.client_ip(proxy, ["203.0.113.7, garbage"]), ClientAddr::Unreadable);
        assert_eq!(l.client_ip(proxy, Vec::<&str>::new()), ClientAddr::Ip(proxy));
        assert_eq!(l.client_ip(proxy, ["10.0.0.2"]), ClientAddr::Ip(proxy), "only proxies: the proxy itself");
        let stranger = ip("192.0.2.9");
        assert_eq!(
            l.client_ip(stranger, ["203.0.113.7"]),
            ClientAddr::Ip(stranger),
            "anyone else cannot pick an address"
        );
        let mapped = ip("::ffff:127.0.0.1");
        assert_eq!(l.client_ip(mapped, ["203.0.113.7"]), client, "an IPv4-mapped proxy address is the proxy");
    }

    #[test]
    fn buckets_are_per_client_per_ipv6_64_and_per_account() {
        let l = RateLimiter::new(60, 2, vec![]);
        let a = ClientAddr::Ip(ip("203.0.113.7"));
        assert!(l.allow(a) && l.allow(a) && !l.allow(a));
        assert!(l.allow(ClientAddr::Ip(ip("192.0.2.9"))));
        let v6 = ClientAddr::Ip(ip("2001:db8:1:2::1"));
        let same_64 = ClientAddr::Ip(ip("2001:db8:1:2:ffff::9"));
        assert!(l.allow(v6) && l.allow(same_64) && !l.allow(v6), "one /64 is one client");
        assert!(l.allow(ClientAddr::Ip(ip("2001:db8:1:3::1"))));
        assert!(l.allow_account("Bo@Example.com") && l.allow_account("bo@example.com "));
        assert!(!l.allow_account("bo@example.com"), "one bucket per address, case-insensitive");
        assert!(l.allow_account("cy@example.com"));
    }
}

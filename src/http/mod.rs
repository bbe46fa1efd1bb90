//! HTTP: the router, shared state, extractors and the JSON error type.
//! Handlers are thin: extract, call one `app` method, map the result.
pub mod error;
pub mod extract;
pub mod middleware;
pub mod pages;
pub mod request_id;
pub mod routes;

use std::sync::Arc;

use crate::app::{App, health::SchedulerHeartbeat};
use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware::from_fn_with_state,
    routing::{get, patch, post, put},
};

#[derive(Clone)]
pub struct AppState {
    pub app: App,
    pub limiter: Arc<middleware::RateLimiter>,
    /// The running scheduler's pulse, for `/readyz` (set by `server::Server`).
    pub scheduler: Option<Arc<SchedulerHeartbeat>>,
}

impl AppState {
    pub fn new(app: App) -> Self {
        let h = &app.config.http;
        let limiter = Arc::new(middleware::RateLimiter::new(
            h.ceremony_rate_per_minute,
            h.ceremony_burst,
            h.trusted_proxies.iter().filter_map(|p| p.parse().ok()).collect(),
        ));
        Self { app, limiter, scheduler: None }
    }

    pub fn with_scheduler(mut self, heartbeat: Arc<SchedulerHeartbeat>) -> Self {
        self.scheduler = Some(heartbeat);
        self
    }
}

pub fn build_router(state: AppState) -> Router {
    use routes::*;
    let http = state.app.config.http.clone();

    let ceremonies = Router::new()
        .route("/enrol/start", post(auth::enrol_start))
        .route("/enrol/finish", post(auth::enrol_finish))
        .route("/login/start", post(auth::login_start))
        .route("/login/finish", post(auth::login_finish))
        .route("/me/credentials/start", post(auth::credential_add_start))
        .route("/me/credentials/finish", post(auth::credential_add_finish))
        .route_layer(from_fn_with_state(state.clone(), middleware::rate_limit));

    let api = Router::new()
        .merge(ceremonies)
        // Approval and release ceremonies need a session; they are not in the
        // unauthenticated per-address bucket, so nobody can starve them.
        .route("/checkouts/{id}/approvals/start", post(checkouts::approvals_start))
        .route("/checkouts/{id}/approvals/finish", post(checkouts::approvals_finish))
        .route("/checkouts/{id}/release/start", post(checkouts::release_start))
        .route("/checkouts/{id}/release/finish", post(checkouts::release_finish))
        .route("/logout", post(auth::logout))
        .route("/me", get(auth::me))
        .route("/me/credentials", get(auth::credentials_list))
        .route("/me/credentials/{id}", patch(auth::credential_rename))
        .route("/me/credentials/{id}/share-recipient/start", post(auth::share_recipient_start))
        .route("/me/credentials/{id}/share-recipient/finish", post(auth::share_recipient_finish))
        .route("/invites", get(invites::invites_list).post(invites::invites_create))
        .route("/invites/{id}/revoke", post(invites::invites_revoke))
        .route("/custodians", get(custodians::custodians_list))
        .route("/custodians/{id}/disable", post(custodians::custodians_disable))
        .route("/accounts", get(accounts::accounts_list).post(accounts::accounts_create))
        .route("/accounts/{account_id}", get(accounts::accounts_get))
        .route("/accounts/{account_id}/secrets/{kind}", put(accounts::secrets_deposit))
        .route("/accounts/{account_id}/policy", put(accounts::policy_update))
        .route("/accounts/{account_id}/quorum", post(accounts::quorum_enable))
        .route("/accounts/{account_id}/posture", get(posture::posture_get).post(posture::posture_check))
        .route("/checkouts", get(checkouts::checkouts_list).post(checkouts::checkouts_create))
        .route("/checkouts/{id}", get(checkouts::checkouts_get))
        .route("/checkouts/{id}/cancel", post(checkouts::checkouts_cancel))
        .route("/checkouts/{id}/close", post(checkouts::checkouts_close))
        .route("/checkouts/{id}/rotation", put(checkouts::checkouts_rotate))
        .route("/audit", get(audit::audit_list))
        .route("/audit/verify", get(audit::audit_verify))
        .route("/audit/checkpoint", get(audit::audit_checkpoint))
        .route("/audit/export", get(audit::audit_export))
        .route("/outbox", get(audit::outbox_list))
        .route("/drills", get(drills::drills_list))
        .route("/drills/status", get(drills::drills_status))
        .route("/drills/export", get(drills::drills_export))
        .route("/drills/{id}/checklist", post(drills::drills_checklist))
        .route("/root-activity", get(root_activity::root_activity_list))
        .route("/checkouts/{id}/aws-evidence", get(root_activity::checkouts_aws_evidence))
        .route("/root-activity/{event_id}/acknowledge", post(root_activity::root_activity_acknowledge))
        .fallback(error::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed);

    Router::new()
        .route("/", get(pages::page_dashboard))
        .route("/enrol", get(pages::page_enrol))
        .route("/login", get(pages::page_login))
        .route("/checkouts/{id}", get(pages::page_checkout))
        .route("/checkouts/{id}/story", get(pages::page_story))
        .route("/drills", get(pages::page_drills))
        .route("/admin", get(pages::page_admin))
        .route("/audit", get(pages::page_audit))
        .route("/me", get(pages::page_me))
        .route("/static/app.js", get(pages::static_js))
        .route("/static/app.css", get(pages::static_css))
        .route("/favicon.svg", get(pages::static_favicon))
        .route("/favicon.ico", get(pages::favicon_ico))
        .route("/static/quorum.js", get(pages::static_quorum_js))
        .route("/static/vendor/age-encryption.js", get(pages::static_age_encryption_js))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .nest("/api/v1", api)
        .fallback(pages::page_not_found)
        .method_not_allowed_fallback(pages::page_method_not_allowed)
        .layer(from_fn_with_state(state.clone(), middleware::require_same_origin))
        .layer(from_fn_with_state(state.clone(), middleware::refuse_oversized_body))
        .layer(from_fn_with_state(state.clone(), middleware::request_timeout))
        .layer(from_fn_with_state(state.clone(), middleware::security_headers))
        // Outside the timeout and the origin check: their refusals are counted too.
        .layer(from_fn_with_state(state.clone(), middleware::record_metrics))
        .layer(DefaultBodyLimit::max(http.body_limit_bytes))
        // Outermost: every request gets an id and a log span before anything else runs.
        .layer(request_id::trace_layer())
        .layer(axum::middleware::from_fn(request_id::assign))
        .with_state(state)
}

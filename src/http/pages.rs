//! Server-rendered pages (askama templates in web/templates). Every action on them
//! goes through the JSON API from web/static/app.js, so the API's Origin check and
//! `SameSite=Strict` cookies protect every form; pages themselves only read.
use askama::Template;
use axum::{
    extract::{FromRequestParts, State},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{AppState, extract::SignedIn};
use crate::{
    app::{Principal, accounts::AccountView, checkouts::CheckoutView, custodians::CustodianView, drills::DrillStatus},
    domain::{Role, audit::AuditEntry, drill::CHECKLIST},
    error::AppError,
    store::{audit::AuditFilter, checkouts::CheckoutFilter},
};

/// A signed-in person on a page; anyone else is sent to the sign-in page.
pub struct PageUser(pub Principal);

impl FromRequestParts<AppState> for PageUser {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match SignedIn::from_request_parts(parts, state).await {
            Ok(SignedIn(p)) => Ok(Self(p)),
            Err(_) => {
                let next = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
                Err(Redirect::to(&format!("/login?next={next}")).into_response())
            }
        }
    }
}

/// Pages that need a role take one of these, like the API's `Admin`/`AuditReader`:
/// a stranger is sent to sign in, a signed-in person without the role gets a 403 page.
async fn page_user_with(
    parts: &mut Parts,
    state: &AppState,
    roles: &[Role],
    refusal: &'static str,
) -> Result<Principal, Response> {
    let PageUser(p) = PageUser::from_request_parts(parts, state).await?;
    if roles.iter().any(|r| p.custodian.has_role(*r)) {
        Ok(p)
    } else {
        Err(page_error(AppError::forbidden("forbidden_role", refusal)))
    }
}

/// A signed-in admin on a page.
pub struct PageAdmin(pub Principal);

impl FromRequestParts<AppState> for PageAdmin {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        page_user_with(parts, state, &[Role::Admin], "This page is for admins.").await.map(Self)
    }
}

/// A signed-in auditor or admin on a page.
pub struct PageAuditReader(pub Principal);

impl FromRequestParts<AppState> for PageAuditReader {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        page_user_with(parts, state, &[Role::Auditor, Role::Admin], "This page is for auditors and admins.")
            .await
            .map(Self)
    }
}

/// What every page's header needs.
struct Shell {
    signed_in: bool,
    is_admin: bool,
    is_auditor: bool,
    user_name: String,
}

impl Shell {
    fn of(p: Option<&Principal>) -> Self {
        Self {
            signed_in: p.is_some(),
            is_admin: p.is_some_and(|p| p.custodian.has_role(Role::Admin)),
            is_auditor: p.is_some_and(|p| p.custodian.has_role(Role::Auditor) || p.custodian.has_role(Role::Admin)),
            user_name: p.map(|p| p.custodian.name.clone()).unwrap_or_default(),
        }
    }
}

fn render(t: impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "The page could not be rendered; it has been logged.").into_response()
        }
    }
}

fn page_error(e: AppError) -> Response {
    let status = match e {
        AppError::NotFound { .. } => StatusCode::NOT_FOUND,
        AppError::Forbidden { .. } => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        // Logged once, inside the request's span, with the cause chain.
        tracing::error!(error = %crate::error::chain(&e), "page failed");
    }
    let msg = if status == StatusCode::INTERNAL_SERVER_ERROR {
        match super::request_id::current() {
            Some(id) => format!("Something went wrong; it has been logged. Reference for an admin: {id}."),
            None => "Something went wrong; it has been logged.".to_owned(),
        }
    } else {
        e.to_string()
    };
    (status, Html(format!("<!doctype html><meta charset=utf-8><link rel=stylesheet href=/static/app.css><main><h1>{status}</h1><p>{}</p><p><a href=\"/\">Back to the dashboard</a></p></main>", html_escape(&msg)))).into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

// ---- public pages ----

#[derive(Template)]
#[template(path = "enrol.html")]
struct EnrolPage {
    signed_in: bool,
    is_admin: bool,
    is_auditor: bool,
    user_name: String,
    /// The configured cooling-off before a new custodian may approve.
    cooling_off: String,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    signed_in: bool,
    is_admin: bool,
    is_auditor: bool,
    user_name: String,
}

pub async fn page_enrol(State(state): State<AppState>) -> Response {
    let s = Shell::of(None);
    let hours = state.app.config.security.cooling_off_hours;
    let cooling_off = match hours {
        0 => "no cooling-off period: new custodians can approve at once".to_owned(),
        1 => "a 1-hour cooling-off period".to_owned(),
        h if h % 24 == 0 && h >= 48 => format!("a {}-day cooling-off period", h / 24),
        h => format!("a {h}-hour cooling-off period"),
    };
    render(EnrolPage {
        signed_in: s.signed_in,
        is_admin: s.is_admin,
        is_auditor: s.is_auditor,
        user_name: s.user_name,
        cooling_off,
    })
}

pub async fn page_login() -> Response {
    let s = Shell::of(None);
    render(LoginPage { signed_in: s.signed_in, is_admin: s.is_admin, is_auditor: s.is_auditor, user_name: s.user_name })
}

// ---- dashboard ----

struct AccountRow {
    account_id: String,
    alias: String,
    state: String,
    state_text: String,
    holder: String,
    drill_text: String,
    proven_text: String,
    /// `policy`, or `quorum 2 of 3` (with "reshare due" when it is).
    custody_text: String,
    reshare_due: bool,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    signed_in: bool,
    is_admin: bool,
    is_auditor: bool,
    user_name: String,
    accounts: Vec<AccountRow>,
    awaiting: Vec<CheckoutView>,
    mine: Vec<CheckoutView>,
    /// Auditors: the latest checkouts, whatever their state.
    recent: Vec<CheckoutView>,
    can_request: bool,
    outbox_failed: i64,
    outbox_undelivered: i64,
    outbox_sink: String,
    /// Admins: why the printed recovery kit is out of date (empty when it is current).
    kit_notice: String,
}

/// The dashboard's sentence about the printed recovery kit, for admins.
fn kit_notice(status: &crate::app::recovery_kit::KitStatus) -> String {
    use crate::app::recovery_kit::KitStatus;
    match status {
        KitStatus::Current { .. } => String::new(),
        KitStatus::Never => "No recovery kit has been printed for this deployment.".into(),
        KitStatus::Stale { printed_at, changed } => format!(
            "The recovery kit printed {printed_at} is stale: {} changed since.",
            changed.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn seconds_until(now: i64, rfc: &str) -> Option<i64> {
    time::OffsetDateTime::parse(rfc, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp() - now).max(0))
}

/// "3 days", "5 h", "40 min": never "0 days" for something due later today.
fn human_span(secs: i64) -> String {
    match secs {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 3_600 => format!("{} h", s / 3_600),
        s if s >= 60 => format!("{} min", s / 60),
        _ => "less than a minute".into(),
    }
}

pub async fn page_dashboard(State(state): State<AppState>, PageUser(p): PageUser) -> Response {
    let app = &state.app;
    let result: Result<Response, AppError> = async {
        let now = app.now().unix_timestamp();
        let accounts = app.list_accounts().await?;
        let open = app.list_checkouts(CheckoutFilter::default(), None).await?;
        let drills = app.drill_status().await?;
        let awaiting = app
            .list_checkouts(CheckoutFilter { state: Some("pending".into()), ..Default::default() }, Some(p.clone()))
            .await?;
        let mine: Vec<CheckoutView> = open
            .iter()
            .filter(|c| {
                c.requester.id == p.custodian.id && matches!(c.state.as_str(), "pending" | "approved" | "released")
            })
            .cloned()
            .collect();
        let outbox = app.outbox_status().await?;
        let rows = accounts
            .iter()
            .map(|a| {
                let holder = open
                    .iter()
                    .find(|c| c.account_id == a.account_id && c.state == "released")
                    .map(|c| format!("by {} since {}", c.requester.name, c.released_at.clone().unwrap_or_default()))
                    .unwrap_or_default();
                let d = drills.accounts.iter().find(|d| d.account_id == a.account_id);
                let drill_text = match d {
                    Some(d) if d.open_drill.as_ref().is_some_and(|o| o.state == "overdue") => {
                        "drill OVERDUE".to_owned()
                    }
                    Some(d) if d.open_drill.is_some() => "drill due now".to_owned(),
                    Some(d) => d
                        .next_drill_due_at
                        .as_deref()
                        .and_then(|n| seconds_until(now, n))
                        .map(|secs| format!("drill due in {}", human_span(secs)))
                        .unwrap_or_else(|| "—".into()),
                    None => "—".into(),
                };
                let proven_text = d
                    .and_then(|d| d.last_proven_access.as_ref())
                    .map(|l| {
                        format!(
                            "{} by {}",
                            l.completed_at.clone().unwrap_or_default(),
                            l.participants.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
                        )
                    })
                    .unwrap_or_else(|| "never".into());
                let (custody_text, reshare_due) = match &a.quorum {
                    Some(q) => {
                        (format!("quorum: {} of {} holders", q.k, q.holders.len()), q.reshare_due_since.is_some())
                    }
                    None => ("policy".to_owned(), false),
                };
                AccountRow {
                    custody_text,
                    reshare_due,
                    account_id: a.account_id.clone(),
                    alias: a.alias.clone(),
                    state_text: a.state.replace('_', " "),
                    state: a.state.clone(),
                    holder,
                    drill_text,
                    proven_text,
                }
            })
            .collect();
        let s = Shell::of(Some(&p));
        Ok(render(DashboardPage {
            signed_in: s.signed_in,
            is_admin: s.is_admin,
            is_auditor: s.is_auditor,
            user_name: s.user_name,
            accounts: rows,
            awaiting,
            mine,
            recent: open.iter().take(10).cloned().collect(),
            can_request: p.custodian.has_role(Role::Custodian),
            outbox_failed: outbox.failed,
            outbox_undelivered: outbox.undelivered,
            outbox_sink: outbox.sink.into(),
            kit_notice: if s.is_admin { kit_notice(&app.recovery_kit_status().await?) } else { String::new() },
        }))
    }
    .await;
    result.unwrap_or_else(page_error)
}

// ---- one checkout ----

#[derive(Template)]
#[template(path = "checkout.html")]
struct CheckoutPage {
    signed_in: bool,
    is_admin: bool,
    is_auditor: bool,
    user_name: String,
    c: CheckoutView,
    is_requester: bool,
    may_decide: bool,
    rotation_due: bool,
    /// The account is in quorum mode: approving and revealing hand over a share.
    quorum: bool,
}

pub async fn page_checkout(
    State(state): State<AppState>,
    PageUser(p): PageUser,
    super::extract::ApiPath(id): super::extract::ApiPath<String>,
) -> Response {
    let app = &state.app;
    let result: Result<Response, AppError> = async {
        let c = app.get_checkout(id.clone()).await?;
        let may_decide = app
            .list_checkouts(CheckoutFilter { state: Some("pending".into()), ..Default::default() }, Some(p.clone()))
            .await?
            .iter()
            .any(|x| x.id == c.id);
        let account: AccountView = app.get_account(c.account_id.clone()).await?;
        let s = Shell::of(Some(&p));
        Ok(render(CheckoutPage {
            signed_in: s.signed_in,
            is_admin: s.is_admin,
            is_auditor: s.is_auditor,
            user_name: s.user_name,
            is_requester: c.requester.id == p.custodian.id,
            rotation_due: c.kind == "emergency" && c.released_at.is_some() && account.rotation_due_since.is_some(),
            quorum: account.quorum.is_some(),
            may_decide,
            c,
        }))
    }
    .await;
    result.unwrap_or_else(page_error)
}

// ---- drills, admin, audit, profile ----

#[derive(Template)]
#[template(path = "drills.html")]
struct DrillsPage {
    signed_in: bool,
    is_admin: bool,
    is_auditor: bool,
    user_name: String,
    status: DrillStatus,
    checklist: Vec<(&'static str, &'static str)>,
    history: Vec<crate::app::drills::DrillView>,
    /// Per open drill id: my released drill checkout on that account, if any.
    drill_checkouts: Vec<(String, CheckoutView)>,
}

impl DrillsPage {
    fn checkout_for(&self, drill_id: &str) -> Option<&CheckoutView> {
        self.drill_checkouts.iter().find(|(d, _)| d == drill_id).map(|(_, c)| c)
    }
}

pub async fn page_drills(State(state): State<AppState>, PageUser(p): PageUser) -> Response {
    let result: Result<Response, AppError> = async {
        let status = state.app.drill_status().await?;
        let mine = state
            .app
            .list_checkouts(CheckoutFilter { requester_id: Some(p.custodian.id.clone()), ..Default::default() }, None)
            .await?;
        let drill_checkouts = status
            .accounts
            .iter()
            .filter_map(|a| {
                let d = a.open_drill.as_ref()?;
                let c = mine
                    .iter()
                    .find(|c| c.account_id == a.account_id && c.kind == "drill" && c.released_at.is_some())?;
                Some((d.id.clone(), c.clone()))
            })
            .collect();
        let mut history = state.app.list_drills(None, i64::MIN, i64::MAX).await?;
        history.reverse();
        history.truncate(50);
        let s = Shell::of(Some(&p));
        Ok(render(DrillsPage {
            signed_in: s.signed_in,
            is_admin: s.is_admin,
            is_auditor: s.is_auditor,
            user_name: s.user_name,
            status,
            checklist: CHECKLIST.to_vec(),
            history,
            drill_checkouts,
        }))
    }
    .await;
    result.unwrap_or_else(page_error)
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    signed_in: bool,
    is_admin: bool,
    is_auditor: bool,
    user_name: String,
    accounts: Vec<AccountView>,
    custodians: Vec<CustodianView>,
    invites: Vec<crate::app::invites::InviteView>,
}

pub async fn page_admin(State(state): State<AppState>, PageAdmin(p): PageAdmin) -> Response {
    let result: Result<Response, AppError> = async {
        let s = Shell::of(Some(&p));
        Ok(render(AdminPage {
            signed_in: s.signed_in,
            is_admin: s.is_admin,
            is_auditor: s.is_auditor,
            user_name: s.user_name,
            accounts: state.app.list_accounts().await?,
            custodians: state.app.list_custodians().await?,
            invites: state.app.list_invites().await?,
        }))
    }
    .await;
    result.unwrap_or_else(page_error)
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    signed_in: bool,
    is_admin: bool,
    is_auditor: bool,
    user_name: String,
    entries: Vec<AuditEntry>,
    chain_ok: bool,
    chain_entries: u64,
    chain_problem: String,
    signatures: u64,
    filter_action: String,
    filter_subject: String,
}

#[derive(Deserialize, Default)]
pub struct AuditPageQuery {
    action_prefix: Option<String>,
    subject: Option<String>,
}

pub async fn page_audit(
    State(state): State<AppState>,
    PageAuditReader(p): PageAuditReader,
    super::extract::ApiQuery(q): super::extract::ApiQuery<AuditPageQuery>,
) -> Response {
    let result: Result<Response, AppError> = async {
        let status = state.app.audit_verify().await?;
        let filter = AuditFilter {
            action_prefix: q.action_prefix.clone().filter(|s| !s.is_empty()),
            subject: q.subject.clone().filter(|s| !s.is_empty()),
            newest_first: true,
            ..Default::default()
        };
        let entries = state.app.audit_page(filter, 500).await?.entries;
        let s = Shell::of(Some(&p));
        Ok(render(AuditPage {
            signed_in: s.signed_in,
            is_admin: s.is_admin,
            is_auditor: s.is_auditor,
            user_name: s.user_name,
            entries,
            chain_ok: status.ok,
            chain_entries: status.entries,
            chain_problem: status
                .problem
                .clone()
                .or_else(|| status.approval_problems.first().cloned())
                .unwrap_or_default(),
            signatures: status.approvals_checked,
            filter_action: q.action_prefix.unwrap_or_default(),
            filter_subject: q.subject.unwrap_or_default(),
        }))
    }
    .await;
    result.unwrap_or_else(page_error)
}

#[derive(Template)]
#[template(path = "me.html")]
struct MePage {
    signed_in: bool,
    is_admin: bool,
    is_auditor: bool,
    user_name: String,
    me: CustodianView,
}

pub async fn page_me(State(state): State<AppState>, PageUser(p): PageUser) -> Response {
    match state.app.me(p.custodian.id.clone()).await {
        Ok(me) => {
            let s = Shell::of(Some(&p));
            render(MePage {
                signed_in: s.signed_in,
                is_admin: s.is_admin,
                is_auditor: s.is_auditor,
                user_name: s.user_name,
                me,
            })
        }
        Err(e) => page_error(e),
    }
}

// ---- static assets, embedded in the binary ----

const APP_JS: &str = include_str!("../../web/static/app.js");
const APP_CSS: &str = include_str!("../../web/static/app.css");
/// Quorum mode's browser crypto and the age library it imports (built by web/vendor-src/build.sh).
const QUORUM_JS: &str = include_str!("../../web/static/quorum.js");
const AGE_ENCRYPTION_JS: &str = include_str!("../../web/static/vendor/age-encryption.js");

fn asset(body: &'static str, ctype: &'static str) -> Response {
    let mut res = body.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    res
}

pub async fn static_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

pub async fn static_quorum_js() -> Response {
    asset(QUORUM_JS, "text/javascript; charset=utf-8")
}

pub async fn static_age_encryption_js() -> Response {
    asset(AGE_ENCRYPTION_JS, "text/javascript; charset=utf-8")
}

pub async fn static_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

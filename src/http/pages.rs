//! Server-rendered pages (askama templates in web/templates). Every action on them
//! goes through the JSON API from web/static/app.js, so the API's Origin check and
//! `SameSite=Strict` cookies protect every form; pages themselves only read.
use askama::Template;
use axum::{
    extract::{FromRequestParts, State},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{Html, IntoResponse, Redirect, Response},
};

use super::{AppState, extract::SignedIn};
use crate::{
    app::{
        Principal,
        accounts::AccountView,
        audit_view::{AuditQuery, AuditView, CheckoutStory},
        checkouts::CheckoutView,
        custodians::CustodianView,
        drills::DrillStatus,
        posture::PostureView,
        root_activity::RootActivityView,
    },
    domain::{
        Role,
        drill::CHECKLIST,
        root_task::{AccountType, TaskPolicy},
    },
    error::AppError,
    store::checkouts::CheckoutFilter,
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
        Err(error_page_for(Some(&p), AppError::forbidden("forbidden_role", refusal)))
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

/// The `{id}` of a page's address; a value that cannot be read becomes a 400 page
/// (answered by the handler, after its role check), never the API's JSON.
pub struct PagePath(Result<String, AppError>);

impl<S: Send + Sync> FromRequestParts<S> for PagePath {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            axum::extract::Path::<String>::from_request_parts(parts, state).await.map(|p| p.0).map_err(|_| {
                AppError::invalid("invalid_path", "A value in this address is not valid: check the link.")
            }),
        ))
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

/// What is sent when a template itself fails: a complete page that needs nothing.
const UNRENDERABLE: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Server error · breakglass</title>\
<link rel=\"stylesheet\" href=\"/static/app.css\"></head><body><main><h1>Server error</h1>\
<p>The page could not be rendered; it has been logged.</p><p><a href=\"/\">Back to the dashboard</a></p></main></body></html>";

fn render(t: impl Template) -> Response {
    render_with(StatusCode::OK, t)
}

fn render_with(status: StatusCode, t: impl Template) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, Html(UNRENDERABLE)).into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    signed_in: bool,
    is_admin: bool,
    is_auditor: bool,
    user_name: String,
    status: u16,
    heading: &'static str,
    message: String,
}

fn page_error(e: AppError) -> Response {
    error_page_for(None, e)
}

/// An error as a whole page (title, language, navigation), never the API's JSON.
fn error_page_for(p: Option<&Principal>, e: AppError) -> Response {
    let status = match e {
        AppError::NotFound { .. } => StatusCode::NOT_FOUND,
        AppError::Forbidden { .. } => StatusCode::FORBIDDEN,
        AppError::Invalid { .. } => StatusCode::BAD_REQUEST,
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
    let heading = match status {
        StatusCode::NOT_FOUND => "Page not found",
        StatusCode::FORBIDDEN => "Not for your role",
        StatusCode::BAD_REQUEST => "That address is not quite right",
        _ => "Something went wrong",
    };
    let s = Shell::of(p);
    render_with(
        status,
        ErrorPage {
            signed_in: s.signed_in,
            is_admin: s.is_admin,
            is_auditor: s.is_auditor,
            user_name: s.user_name,
            status: status.as_u16(),
            heading,
            message: msg,
        },
    )
}

/// Unknown addresses: a 404 page for people, the API's JSON under `/api/`.
pub async fn page_not_found(uri: axum::http::Uri, signed_in: Result<SignedIn, super::error::ApiError>) -> Response {
    if uri.path().starts_with("/api/") {
        return super::error::not_found().await.into_response();
    }
    let p = signed_in.ok().map(|SignedIn(p)| p);
    error_page_for(
        p.as_ref(),
        AppError::not_found(
            "not_found",
            "There is no page at this address. Check the link, or start again from the dashboard.",
        ),
    )
}

/// A method a page does not take: the API's JSON under `/api/`, a page elsewhere.
pub async fn page_method_not_allowed(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return super::routes::method_not_allowed().await.into_response();
    }
    let mut res = error_page_for(
        None,
        AppError::invalid("method_not_allowed", "Pages are only read; actions go through the forms on them."),
    );
    *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    res
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
    /// No stored password: checkouts name an AWS root-task policy.
    centralized: bool,
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
    /// Unexplained root use nobody has acknowledged: a red banner for everyone.
    root_alerts: Vec<RootActivityView>,
    /// Accounts whose root posture, as last read from AWS, has findings.
    posture_findings: Vec<PostureView>,
    /// Admins: why the printed recovery kit is out of date (empty when it is current).
    kit_notice: String,
    /// The AWS root-task policies (name, what it does), for centralized_root accounts.
    task_policies: Vec<(&'static str, &'static str)>,
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
        let root_alerts = app.root_alerts().await?;
        let posture_findings = app.posture_findings().await?;
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
                    None if a.account_type == AccountType::CentralizedRoot => {
                        ("AWS root tasks (no stored password)".to_owned(), false)
                    }
                    None => ("policy".to_owned(), false),
                };
                AccountRow {
                    centralized: a.account_type == AccountType::CentralizedRoot,
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
            task_policies: TaskPolicy::ALL.iter().map(|p| (p.as_str(), p.describe())).collect(),
            awaiting,
            mine,
            recent: open.iter().take(10).cloned().collect(),
            can_request: p.custodian.has_role(Role::Custodian),
            outbox_failed: outbox.failed,
            outbox_undelivered: outbox.undelivered,
            outbox_sink: outbox.sink.into(),
            root_alerts,
            posture_findings,
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

pub async fn page_checkout(State(state): State<AppState>, PageUser(p): PageUser, id: PagePath) -> Response {
    let app = &state.app;
    let result: Result<Response, AppError> = async {
        let id = id.0?;
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
    /// Per account id: its checklist (accounts without a stored root password have their own).
    checklists: Vec<(String, &'static [(&'static str, &'static str)])>,
    history: Vec<crate::app::drills::DrillView>,
    /// Per open drill id: my released drill checkout on that account, if any.
    drill_checkouts: Vec<(String, CheckoutView)>,
    /// Per open drill id with a checkout: what AWS itself reported during it.
    evidence: Vec<(String, crate::app::root_activity::AwsEvidence)>,
    /// The last root posture read from AWS, for accounts with an open drill.
    postures: Vec<PostureView>,
}

impl DrillsPage {
    fn checkout_for(&self, drill_id: &str) -> Option<&CheckoutView> {
        self.drill_checkouts.iter().find(|(d, _)| d == drill_id).map(|(_, c)| c)
    }

    fn checklist_of(&self, account_id: &str) -> &'static [(&'static str, &'static str)] {
        self.checklists.iter().find(|(a, _)| a == account_id).map(|(_, c)| *c).unwrap_or(&CHECKLIST)
    }

    fn evidence_for(&self, drill_id: &str) -> Option<&crate::app::root_activity::AwsEvidence> {
        self.evidence.iter().find(|(d, _)| d == drill_id).map(|(_, e)| e)
    }

    /// What AWS reported that bears on one checklist item, in words (empty: nothing):
    /// the drill checkout's root sign-ins and sessions, and the account's last posture.
    fn item_evidence(&self, drill_id: &str, account_id: &str, item: &str) -> String {
        let posture = self.postures.iter().find(|p| p.account_id == account_id).and_then(|p| {
            let e = p.checklist_evidence.iter().find(|e| e.item == item)?;
            Some(format!("AWS posture (read {}): {}.", p.checked_at, if e.passes { "passes" } else { "does NOT pass" }))
        });
        if let Some(text) = posture {
            return text;
        }
        let Some(e) = self.evidence_for(drill_id) else { return String::new() };
        if item == "root_session_opened" {
            return e
                .root_sessions
                .first()
                .map(|r| format!("AWS opened session {} ({}) until {}.", r.access_key_id, r.task_policy, r.expiration))
                .unwrap_or_default();
        }
        match e.items.get(item) {
            Some(Some(si)) => format!(
                "AWS: root sign-in at {}{}, CloudTrail event {}.",
                si.event_time,
                if si.mfa_used { " with MFA" } else { "" },
                si.event_id
            ),
            _ => String::new(),
        }
    }
}

pub async fn page_drills(State(state): State<AppState>, PageUser(p): PageUser) -> Response {
    let result: Result<Response, AppError> = async {
        let status = state.app.drill_status().await?;
        let mine = state
            .app
            .list_checkouts(CheckoutFilter { requester_id: Some(p.custodian.id.clone()), ..Default::default() }, None)
            .await?;
        let drill_checkouts: Vec<(String, CheckoutView)> = status
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
        let checklists = state
            .app
            .list_accounts()
            .await?
            .into_iter()
            .map(|a| (a.account_id, crate::domain::drill::checklist_for(a.account_type)))
            .collect();
        let mut evidence = Vec::new();
        for (drill_id, c) in &drill_checkouts {
            evidence.push((drill_id.clone(), state.app.checkout_aws_evidence(c.id.clone()).await?));
        }
        let mut postures = Vec::new();
        for a in status.accounts.iter().filter(|a| a.open_drill.is_some()) {
            match state.app.posture(a.account_id.clone()).await {
                Ok(p) => postures.push(p),
                Err(AppError::NotFound { .. }) => {} // never read: no evidence to show
                Err(e) => return Err(e),
            }
        }
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
            checklists,
            history,
            drill_checkouts,
            evidence,
            postures,
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

/// An event family for the audit page's filter: (action prefix, what people read).
const FAMILIES: &[(&str, &str)] = &[
    ("checkout.", "Checkouts: requests, decisions, releases, check-ins"),
    ("approval.", "Approval challenges"),
    ("release.", "Release challenges"),
    ("account.", "Accounts and policies"),
    ("secret.", "Secrets deposited and rotated"),
    ("drill.", "Drills"),
    ("custodian.", "People: enrolment, sign-in, disabling"),
    ("credential.", "Security keys"),
    ("invite.", "Invites"),
    ("vault.", "Vault"),
    ("log_key.", "Audit-log signing key"),
];

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    signed_in: bool,
    is_admin: bool,
    is_auditor: bool,
    user_name: String,
    view: AuditView,
    chain_ok: bool,
    chain_entries: u64,
    chain_problem: String,
    signatures: u64,
    q: AuditQuery,
    families: Vec<(&'static str, &'static str)>,
    /// Query strings of the paging links (`None`: no such page).
    older_href: Option<String>,
    newest_href: Option<String>,
    filtered: bool,
    root_activity: Vec<RootActivityView>,
}

/// Entries on one page of the audit page.
const AUDIT_PAGE_SIZE: u32 = 100;

pub async fn page_audit(
    State(state): State<AppState>,
    PageAuditReader(p): PageAuditReader,
    q: Result<axum::extract::Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result: Result<Response, AppError> = async {
        let axum::extract::Query(q) = q.map_err(|_| {
            AppError::invalid(
                "invalid_query",
                "A filter in this address is not valid: clear the filters and try again.",
            )
        })?;
        let status = state.app.audit_verify().await?;
        let view = state.app.audit_view(q.filter()?, AUDIT_PAGE_SIZE).await?;
        let root_activity = state.app.root_activity(None, 200).await?;
        let s = Shell::of(Some(&p));
        Ok(render(AuditPage {
            signed_in: s.signed_in,
            is_admin: s.is_admin,
            is_auditor: s.is_auditor,
            user_name: s.user_name,
            chain_ok: status.ok,
            chain_entries: status.entries,
            chain_problem: status
                .problem
                .clone()
                .or_else(|| status.approval_problems.first().cloned())
                .unwrap_or_default(),
            signatures: status.approvals_checked,
            root_activity,
            older_href: view.older_than.map(|b| q.with_before(Some(b))),
            newest_href: q.before_seq.map(|_| q.with_before(None)),
            filtered: !q.with_before(None).is_empty(),
            families: FAMILIES.to_vec(),
            view,
            q,
        }))
    }
    .await;
    result.unwrap_or_else(page_error)
}

#[derive(Template)]
#[template(path = "story.html")]
struct StoryPage {
    signed_in: bool,
    is_admin: bool,
    is_auditor: bool,
    user_name: String,
    story: CheckoutStory,
}

/// A checkout's whole story, for auditors and admins (like the audit log it reads).
pub async fn page_story(State(state): State<AppState>, PageAuditReader(p): PageAuditReader, id: PagePath) -> Response {
    let result: Result<Response, AppError> = async {
        let id = id.0?;
        let story = state.app.checkout_story(id).await?;
        let s = Shell::of(Some(&p));
        Ok(render(StoryPage {
            signed_in: s.signed_in,
            is_admin: s.is_admin,
            is_auditor: s.is_auditor,
            user_name: s.user_name,
            story,
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

/// The icon: an SVG in the binary (no external assets). `/favicon.ico`, which browsers
/// ask for on their own, points to it.
const FAVICON_SVG: &str = include_str!("../../web/static/favicon.svg");

pub async fn static_favicon() -> Response {
    asset(FAVICON_SVG, "image/svg+xml")
}

pub async fn favicon_ico() -> Response {
    Redirect::permanent("/favicon.svg").into_response()
}

//! Root activity in AWS, reconciled with checkouts (docs/api.md, "Root activity").
use axum::{Json, extract::State, response::IntoResponse};
use serde::Deserialize;
use serde_json::json;

use super::ApiResult;
use crate::http::{
    AppState,
    extract::{Admin, ApiJson, ApiPath, ApiQuery, SignedIn},
};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RootActivityQuery {
    account_id: Option<String>,
    limit: Option<u32>,
}

/// Everyone signed in sees root activity: the banner is for every custodian.
pub async fn root_activity_list(
    State(state): State<AppState>,
    SignedIn(_): SignedIn,
    ApiQuery(q): ApiQuery<RootActivityQuery>,
) -> ApiResult<impl IntoResponse> {
    let events = state.app.root_activity(q.account_id, q.limit.unwrap_or(200)).await?;
    let unacknowledged = state.app.root_alerts().await?;
    Ok(Json(json!({
        "feed": state.app.root_feed_health(),
        "unacknowledged": unacknowledged,
        "events": events,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acknowledgement {
    reason: String,
}

pub async fn root_activity_acknowledge(
    State(state): State<AppState>,
    Admin(p): Admin,
    ApiPath(event_id): ApiPath<String>,
    ApiJson(b): ApiJson<Acknowledgement>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.acknowledge_root_event(&p, event_id, b.reason).await?))
}

/// Root sign-ins AWS reported during a checkout: a drill's evidence.
pub async fn checkouts_aws_evidence(
    State(state): State<AppState>,
    SignedIn(_): SignedIn,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.app.checkout_aws_evidence(id).await?))
}

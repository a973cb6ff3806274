//! The alerting endpoints of the control API: the node's alerts (`/v1/alerts`, with their
//! root-cause suspects) and silences (`/v1/silences`; each is of one app, created and ended under
//! `/v1/apps/{app}/silences`). Served with the data endpoints, under the same tokens: reading
//! needs `read` on every app (alerts span apps, as traces do); creating and ending an app's
//! silence needs `traffic` on that app (like a traffic change, it is an operator's decision).
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use http::StatusCode;
use nimbus_observe::insight::{Alert, AlertState, Insight, NewSilence, Silence, SilenceError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::data::{DataAuth, DataState};
use crate::error::ControlError;
use nimbus_security::policy::Action;

type AlertsApp = State<Arc<DataState>>;

/// The alerting routes.
pub(crate) fn routes() -> Router<Arc<DataState>> {
    Router::new()
        .route("/v1/alerts", get(list))
        .route("/v1/alerts/{id}", get(show))
        .route("/v1/silences", get(silences))
        .route("/v1/apps/{app}/silences", post(silence))
        .route("/v1/apps/{app}/silences/{id}", delete(unsilence))
}

fn insight(s: &DataState) -> Result<&Insight, ControlError> {
    s.observer
        .insight()
        .ok_or_else(|| ControlError::NotFound("alerting is off on this node (it runs with --no-telemetry)".into()))
}

/// Which alerts to list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AlertsQuery {
    /// `firing` (the default), `resolved` or `all`.
    state: Option<String>,
    /// Only this app's alerts.
    app: Option<String>,
    /// The newest this many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Alerts, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertList {
    /// The alerts.
    pub alerts: Vec<Alert>,
}

/// The silences that have not ended.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SilenceList {
    /// The silences.
    pub silences: Vec<Silence>,
}

/// Lists the node's alerts: anomalies, forecasts with their lead time and broken objectives,
/// each with its ranked root-cause suspects.
#[utoipa::path(get, path = "/v1/alerts", tag = "observability", params(AlertsQuery),
    responses((status = 200, body = AlertList), (status = 400, body = crate::ErrorBody)))]
async fn list(
    State(s): AlertsApp,
    caller: Caller,
    q: Result<Query<AlertsQuery>, QueryRejection>,
) -> Result<Json<AlertList>, ControlError> {
    s.check(&caller, Action::Read)?;
    let q = crate::api::query(q)?;
    let state = match q.state.as_deref().unwrap_or("firing") {
        "firing" => Some(AlertState::Firing),
        "resolved" => Some(AlertState::Resolved),
        "all" => None,
        other => {
            return Err(ControlError::bad_request(
                format!("unknown state `{other}`"),
                "use `state=firing`, `state=resolved` or `state=all`",
            ));
        }
    };
    let mut alerts = insight(&s)?.alerts(state, q.app.as_deref());
    alerts.truncate(q.limit.unwrap_or(100).clamp(1, 1000));
    Ok(Json(AlertList { alerts }))
}

/// One alert with its evidence: suspects, example traces, log lines and the app's deploys.
#[utoipa::path(get, path = "/v1/alerts/{id}", tag = "observability", params(("id" = String, Path, description = "The alert's id")),
    responses((status = 200, body = Alert), (status = 404, body = crate::ErrorBody)))]
async fn show(State(s): AlertsApp, caller: Caller, Path(id): Path<String>) -> Result<Json<Alert>, ControlError> {
    s.check(&caller, Action::Read)?;
    insight(&s)?
        .alert(&id)
        .map(Json)
        .ok_or_else(|| ControlError::NotFound(format!("no alert `{id}`; `nimbus alerts list --all` shows them")))
}

/// The silences that have not ended.
#[utoipa::path(get, path = "/v1/silences", tag = "observability",
    responses((status = 200, body = SilenceList)))]
async fn silences(State(s): AlertsApp, caller: Caller) -> Result<Json<SilenceList>, ControlError> {
    s.check(&caller, Action::Read)?;
    Ok(Json(SilenceList { silences: insight(&s)?.silences() }))
}

/// Silences the app's matching alerts for a while: they are still recorded, not notified.
/// Written to disk before the answer.
#[utoipa::path(post, path = "/v1/apps/{app}/silences", tag = "observability", request_body = NewSilence,
    params(("app" = String, Path, description = "The app")),
    responses((status = 201, body = Silence), (status = 400, body = crate::ErrorBody)))]
async fn silence(
    State(s): AlertsApp,
    caller: Caller,
    Path(app): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Silence>), ControlError> {
    let by = check_write(&s, &caller, &app)?;
    let new: NewSilence = serde_json::from_slice(&body).map_err(|e| {
        ControlError::bad_request(format!("the silence: {e}"), "send a JSON body as NewSilence in /v1/openapi.json")
    })?;
    let insight = insight(&s)?.clone();
    let created = tokio::task::spawn_blocking(move || insight.silence(&app, new, &by))
        .await
        .map_err(|e| ControlError::unavailable("creating the silence failed", e))?
        .map_err(refused)?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Ends one of the app's silences.
#[utoipa::path(delete, path = "/v1/apps/{app}/silences/{id}", tag = "observability",
    params(("app" = String, Path, description = "The app"), ("id" = String, Path, description = "The silence's id")),
    responses((status = 204), (status = 404, body = crate::ErrorBody)))]
async fn unsilence(
    State(s): AlertsApp,
    caller: Caller,
    Path((app, id)): Path<(String, String)>,
) -> Result<StatusCode, ControlError> {
    check_write(&s, &caller, &app)?;
    let insight = insight(&s)?.clone();
    let key = id.clone();
    let existed = tokio::task::spawn_blocking(move || insight.unsilence(&app, &key))
        .await
        .map_err(|e| ControlError::unavailable("ending the silence failed", e))?
        .map_err(refused)?;
    if existed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ControlError::NotFound(format!("no silence `{id}`; `nimbus alerts silences` lists them")))
    }
}

/// Checks a change of `app`'s silences; who makes it (a token's id, `dev` or `local`).
fn check_write(s: &DataState, caller: &Caller, app: &str) -> Result<String, ControlError> {
    s.check_app(caller, Action::Traffic, app)?;
    match &s.auth {
        DataAuth::Tokens { tokens, dev } => {
            let principal = crate::auth::principal(&caller.headers, tokens, *dev, caller.ip)?;
            Ok(principal.token.map_or_else(|| "dev".into(), |t| t.id))
        }
        DataAuth::Local { .. } => Ok("local".into()),
    }
}

fn refused(e: SilenceError) -> ControlError {
    match e {
        SilenceError::Invalid(m) => ControlError::bad_request(m, "see NewSilence in /v1/openapi.json"),
        SilenceError::Full => ControlError::Conflict { message: e.to_string(), hint: None },
        SilenceError::Io { .. } => ControlError::unavailable("the silence could not be stored", e),
    }
}

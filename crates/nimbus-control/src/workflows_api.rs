//! The workflow endpoints of the control API (`/v1/apps/APP/workflows/NAME/...`): start runs,
//! list them, show one with its timeline, signal and cancel — the same operations as the
//! gateway's `/workflows/NAME/...`, here for the app's data tokens (`data-read` to read,
//! `data-write` to start, signal and cancel) and the CLI. Each goes to the app's workflow engine
//! through the revision that serves the workflow ([`AppWorkflows`]).
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::future::BoxFuture;
use http::{HeaderMap, StatusCode};
use nimbus_gateway::{IDEMPOTENCY_KEY_HEADER, WorkflowCalls, WorkflowOp};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::data::DataState;
use crate::error::ControlError;
use nimbus_security::policy::Action;

/// The largest input or signal payload.
const MAX_PAYLOAD_BYTES: usize = nimbus_state::journal::MAX_PAYLOAD_BYTES;

/// Finds the workflows an app serves: the server's platform, or the one revision of `nimbus up`.
pub trait AppWorkflows: Send + Sync + std::fmt::Debug {
    /// The workflows of the revision of `app` that serves them, if any.
    fn of<'a>(&'a self, app: &'a str) -> BoxFuture<'a, Option<Arc<dyn WorkflowCalls>>>;
}

type Wf = State<Arc<DataState>>;

pub(crate) fn routes() -> Router<Arc<DataState>> {
    Router::new()
        .route("/v1/apps/{app}/workflows/{name}", get(list).post(start))
        .route("/v1/apps/{app}/workflows/{name}/runs/{run}", get(show))
        .route("/v1/apps/{app}/workflows/{name}/runs/{run}/signals/{signal}", post(signal))
        .route("/v1/apps/{app}/workflows/{name}/runs/{run}/cancel", post(cancel))
}

/// Does `op` on workflow `name` of `app` (the caller checked first: before reading a body).
async fn call(
    s: &DataState,
    app: &str,
    name: &str,
    op: WorkflowOp,
) -> Result<(StatusCode, Json<serde_json::Value>), ControlError> {
    let workflows = match &s.workflows {
        Some(found) => found.of(app).await,
        None => None,
    };
    let missing = || ControlError::NotFound(format!("app `{app}` serves no workflow `{name}` here"));
    let workflows = workflows.filter(|w| w.has(name)).ok_or_else(missing)?;
    let (status, answer) = workflows.call(name, op, &Default::default()).await;
    if status.is_success() {
        return Ok((status, Json(answer)));
    }
    let message = answer["error"].as_str().unwrap_or("the workflow engine refused").to_string();
    Err(match status {
        StatusCode::NOT_FOUND => ControlError::NotFound(message),
        StatusCode::CONFLICT => ControlError::conflict(message, "see the run with `nimbus workflows show NAME RUN`"),
        StatusCode::PAYLOAD_TOO_LARGE => ControlError::TooLarge(message),
        StatusCode::BAD_REQUEST => ControlError::bad_request(message, "see `nimbus workflows --help`"),
        StatusCode::TOO_MANY_REQUESTS => ControlError::conflict(message, "start a new run for more work"),
        _ => ControlError::Unavailable { message, source: None },
    })
}

/// Which runs to list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only runs pinned to this revision.
    revision: Option<String>,
    /// Only runs in this status (`running`, `waiting`, `compensating`, `completed`, `failed`,
    /// `cancelled`; `unfinished` for the first three).
    status: Option<String>,
}

/// Lists the workflow's runs, newest first (at most 1,000): `{"runs": [...]}`.
#[utoipa::path(get, path = "/v1/apps/{app}/workflows/{name}", tag = "workflows", params(("app" = String, Path), ("name" = String, Path), ListQuery),
    responses((status = 200, body = Object), (status = 404, body = crate::ErrorBody)))]
async fn list(
    State(s): Wf,
    Path((app, name)): Path<(String, String)>,
    caller: Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ControlError> {
    s.check_app(&caller, Action::DataRead, &app)?;
    let q = crate::api::query(q)?;
    call(&s, &app, &name, WorkflowOp::List { revision: q.revision, status: q.status }).await
}

/// Starts a run with the request body as its input: 202 with the run; with an
/// `Idempotency-Key` that started a run before, 200 with that run.
#[utoipa::path(post, path = "/v1/apps/{app}/workflows/{name}", tag = "workflows", params(("app" = String, Path), ("name" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "starting twice with one key starts one run")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 202, body = Object), (status = 200, body = Object), (status = 404, body = crate::ErrorBody), (status = 413, body = crate::ErrorBody)))]
async fn start(
    State(s): Wf,
    Path((app, name)): Path<(String, String)>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ControlError> {
    s.check_app(&caller, Action::DataWrite, &app)?;
    let idempotency_key = match headers.get(IDEMPOTENCY_KEY_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) => Some(k.to_string()),
        Some(Err(_)) => {
            return Err(ControlError::bad_request(
                "the Idempotency-Key header is not printable ASCII",
                "use a printable key",
            ));
        }
    };
    let input = crate::data::read_body(body, MAX_PAYLOAD_BYTES, "a workflow's input").await?.to_vec();
    call(&s, &app, &name, WorkflowOp::Start { input, idempotency_key }).await
}

/// A run with its timeline (one entry per journal position) and the signals sent to it.
#[utoipa::path(get, path = "/v1/apps/{app}/workflows/{name}/runs/{run}", tag = "workflows", params(("app" = String, Path), ("name" = String, Path), ("run" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = crate::ErrorBody)))]
async fn show(
    State(s): Wf,
    Path((app, name, run)): Path<(String, String, String)>,
    caller: Caller,
) -> Result<(StatusCode, Json<serde_json::Value>), ControlError> {
    s.check_app(&caller, Action::DataRead, &app)?;
    call(&s, &app, &name, WorkflowOp::Show { run }).await
}

/// Sends a signal (the request body is its payload) to an unfinished run: 202.
#[utoipa::path(post, path = "/v1/apps/{app}/workflows/{name}/runs/{run}/signals/{signal}", tag = "workflows",
    params(("app" = String, Path), ("name" = String, Path), ("run" = String, Path), ("signal" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 202, body = Object), (status = 404, body = crate::ErrorBody), (status = 409, body = crate::ErrorBody)))]
async fn signal(
    State(s): Wf,
    Path((app, name, run, signal)): Path<(String, String, String, String)>,
    caller: Caller,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ControlError> {
    s.check_app(&caller, Action::DataWrite, &app)?;
    let payload = crate::data::read_body(body, MAX_PAYLOAD_BYTES, "a signal's payload").await?.to_vec();
    call(&s, &app, &name, WorkflowOp::Signal { run, signal, payload }).await
}

/// Cancels an unfinished run: its compensations run, then it ends `cancelled` (202).
#[utoipa::path(post, path = "/v1/apps/{app}/workflows/{name}/runs/{run}/cancel", tag = "workflows", params(("app" = String, Path), ("name" = String, Path), ("run" = String, Path)),
    responses((status = 202, body = Object), (status = 404, body = crate::ErrorBody), (status = 409, body = crate::ErrorBody)))]
async fn cancel(
    State(s): Wf,
    Path((app, name, run)): Path<(String, String, String)>,
    caller: Caller,
) -> Result<(StatusCode, Json<serde_json::Value>), ControlError> {
    s.check_app(&caller, Action::DataWrite, &app)?;
    call(&s, &app, &name, WorkflowOp::Cancel { run }).await
}

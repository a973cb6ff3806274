//! The secrets endpoints of the control API: set (value in the body, write-only), list names,
//! delete, and rotate the keys (`/v1/apps/APP/secrets/...`, `/v1/secrets/rotate`). No response
//! ever carries a value.
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use http::StatusCode;
use nimbus_manifest::SecretName;
use nimbus_security::secrets::SecretValue;

use crate::api::ApiState;
use crate::auth::Principal;
use crate::error::ControlError;
use crate::model::{ErrorBody, RotatedKeys, SecretInfo, SecretList};
use nimbus_security::policy::Action;

type Api = State<Arc<ApiState>>;

pub(crate) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/apps/{app}/secrets", get(list))
        .route("/v1/apps/{app}/secrets/{name}", delete(remove).put(set))
        .route("/v1/secrets/rotate", post(rotate))
}

fn name(name: &str) -> Result<SecretName, ControlError> {
    SecretName::parse(name).map_err(|e| ControlError::bad_request(e, "name secrets like `stripe-key`"))
}

/// The names of an app's secrets and when each was set; never their values.
#[utoipa::path(get, path = "/v1/apps/{app}/secrets", tag = "secrets", params(("app" = String, Path)),
    responses((status = 200, body = SecretList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list(State(s): Api, p: Principal, Path(app): Path<String>) -> Result<Json<SecretList>, ControlError> {
    p.check(Action::Read, Some(&app))?;
    Ok(Json(SecretList { secrets: s.vault.list(&app)? }))
}

/// Sets a secret to the request body (UTF-8 text, at most 64 KiB), sealed before it is stored;
/// functions granted it read the new value from their next request, services when they next
/// start (deploy again to restart them).
#[utoipa::path(put, path = "/v1/apps/{app}/secrets/{name}", tag = "secrets", params(("app" = String, Path), ("name" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = SecretInfo), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 503, description = "The server has no master key", body = ErrorBody)))]
async fn set(
    State(s): Api,
    p: Principal,
    Path((app, secret)): Path<(String, String)>,
    body: axum::body::Body,
) -> Result<Json<SecretInfo>, ControlError> {
    p.check(Action::Secrets, Some(&app))?;
    nimbus_manifest::check_app_name(&app).map_err(|e| ControlError::bad_request(format!("app {e}"), "name the app"))?;
    let secret = name(&secret)?;
    let bytes = crate::data::read_body(body, crate::MAX_SECRET_BYTES, "a secret value").await?;
    let value = String::from_utf8(bytes.to_vec()).map_err(|_| {
        ControlError::bad_request("a secret value must be UTF-8 text", "encode binary values, e.g. as base64")
    })?;
    // The vault writes to the store (in a cluster, over the network) under its lock: off the
    // async workers, so that waiting for it never holds up the tasks it waits on.
    Ok(Json(tokio::task::block_in_place(|| s.vault.set(&app, &secret, SecretValue::new(value)))?))
}

/// Deletes a secret. Revisions granted it keep what they read at start; the next deploy fails
/// until it is set again or the grant removed.
#[utoipa::path(delete, path = "/v1/apps/{app}/secrets/{name}", tag = "secrets", params(("app" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove(
    State(s): Api,
    p: Principal,
    Path((app, secret)): Path<(String, String)>,
) -> Result<StatusCode, ControlError> {
    p.check(Action::Secrets, Some(&app))?;
    let secret = name(&secret)?;
    tokio::task::block_in_place(|| s.vault.remove(&app, secret.as_str()))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Reads the master key again (a new one may be in its file), starts a new data key for new
/// values and re-wraps every data key under the master key; values stay readable, nothing
/// restarts.
#[utoipa::path(post, path = "/v1/secrets/rotate", tag = "secrets",
    responses((status = 200, body = RotatedKeys), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn rotate(State(s): Api, p: Principal) -> Result<Json<RotatedKeys>, ControlError> {
    p.check(Action::RotateKeys, None)?;
    Ok(Json(tokio::task::block_in_place(|| s.vault.rotate())?))
}

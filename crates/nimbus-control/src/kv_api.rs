//! The KV endpoints of the control API: read, write, delete and list the keys of an app's bucket
//! (`/v1/apps/APP/kv/BUCKET/...`).
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::{HeaderValue, StatusCode};
use nimbus_state::Bucket;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::data::DataState;
use crate::error::ControlError;
use nimbus_security::policy::Action;

/// The largest value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// The response header carrying a value's revision.
pub const REVISION_HEADER: &str = "x-nimbus-kv-revision";

type KvApp = State<Arc<DataState>>;

pub(crate) fn routes() -> Router<Arc<DataState>> {
    Router::new()
        .route("/v1/apps/{app}/kv/{bucket}/keys", get(list))
        .route("/v1/apps/{app}/kv/{bucket}/keys/{*key}", get(read).put(write).delete(remove))
}

/// The bucket `name` of `app`, once the caller may make calls of `scope` on the app's data. The
/// platform's own buckets (`actors`, `workflows`) are read-only here: a write would forge an
/// actor's state or a workflow run's history.
fn bucket(s: &DataState, caller: &Caller, action: Action, app: &str, name: &str) -> Result<Bucket, ControlError> {
    s.check_app(caller, action, app)?;
    if action == Action::DataWrite && nimbus_manifest::RESERVED_BUCKETS.contains(&name) {
        return Err(ControlError::Forbidden(format!(
            "bucket `{name}` is Nimbus's own (actor state, workflow journals) and cannot be written through the API; \
             change it through its actors or workflows"
        )));
    }
    Ok(Bucket::new(app, name)?)
}

/// Which keys to list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only keys starting with this.
    prefix: Option<String>,
    /// The `cursor` of the previous page.
    cursor: Option<String>,
    /// Most keys to return (default and maximum 1000).
    limit: Option<usize>,
}

/// A page of keys.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyPage {
    /// Keys in byte order.
    pub keys: Vec<String>,
    /// Pass as `cursor` for the next page; absent at the end.
    pub cursor: Option<String>,
}

/// Lists keys by prefix, a page at a time.
#[utoipa::path(get, path = "/v1/apps/{app}/kv/{bucket}/keys", tag = "kv", params(("app" = String, Path), ("bucket" = String, Path), ListQuery),
    responses((status = 200, body = KeyPage), (status = 400, body = crate::ErrorBody)))]
async fn list(
    State(s): KvApp,
    Path((app, name)): Path<(String, String)>,
    caller: Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<KeyPage>, ControlError> {
    let bucket = bucket(&s, &caller, Action::DataRead, &app, &name)?;
    let q = crate::api::query(q)?;
    let page = s
        .kv()?
        .list(&bucket, q.prefix.as_deref().unwrap_or(""), q.cursor.as_deref(), q.limit.unwrap_or(1000).clamp(1, 1000))
        .await?;
    Ok(Json(KeyPage { keys: page.keys, cursor: page.cursor }))
}

/// The value of a key (bytes as stored), with its revision in `x-nimbus-kv-revision`.
#[utoipa::path(get, path = "/v1/apps/{app}/kv/{bucket}/keys/{key}", tag = "kv", params(("app" = String, Path), ("bucket" = String, Path), ("key" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 404, body = crate::ErrorBody)))]
async fn read(
    State(s): KvApp,
    Path((app, name, key)): Path<(String, String, String)>,
    caller: Caller,
) -> Result<Response, ControlError> {
    let bucket = bucket(&s, &caller, Action::DataRead, &app, &name)?;
    let entry = s
        .kv()?
        .get(&bucket, &key)
        .await?
        .ok_or_else(|| ControlError::NotFound(format!("no key {key:?} in bucket `{name}` of app `{app}`")))?;
    let mut resp = (StatusCode::OK, entry.value).into_response();
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    resp.headers_mut().insert(REVISION_HEADER, HeaderValue::from(entry.revision));
    Ok(resp)
}

/// How to write.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct WriteQuery {
    /// Expire the key after this many seconds.
    ttl_s: Option<u64>,
}

/// A durable write.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Written {
    /// The key's new revision.
    pub revision: u64,
}

/// Sets a key to the request body; answers once it is durable.
#[utoipa::path(put, path = "/v1/apps/{app}/kv/{bucket}/keys/{key}", tag = "kv", params(("app" = String, Path), ("bucket" = String, Path), ("key" = String, Path), WriteQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = Written), (status = 400, body = crate::ErrorBody), (status = 413, body = crate::ErrorBody)))]
async fn write(
    State(s): KvApp,
    Path((app, name, key)): Path<(String, String, String)>,
    caller: Caller,
    q: Result<Query<WriteQuery>, QueryRejection>,
    body: axum::body::Body,
) -> Result<Json<Written>, ControlError> {
    let bucket = bucket(&s, &caller, Action::DataWrite, &app, &name)?;
    let q = crate::api::query(q)?;
    let value = crate::data::read_body(body, MAX_VALUE_BYTES, "a value").await?;
    let revision = s.kv()?.set(&bucket, &key, value, q.ttl_s.map(Duration::from_secs)).await?;
    Ok(Json(Written { revision }))
}

/// Deletes a key (absent keys are fine).
#[utoipa::path(delete, path = "/v1/apps/{app}/kv/{bucket}/keys/{key}", tag = "kv", params(("app" = String, Path), ("bucket" = String, Path), ("key" = String, Path)),
    responses((status = 204), (status = 400, body = crate::ErrorBody)))]
async fn remove(
    State(s): KvApp,
    Path((app, name, key)): Path<(String, String, String)>,
    caller: Caller,
) -> Result<StatusCode, ControlError> {
    let bucket = bucket(&s, &caller, Action::DataWrite, &app, &name)?;
    s.kv()?.delete(&bucket, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

//! The KV endpoints of the control API: read, write, delete and list the keys of an app's bucket
//! (`/v1/apps/APP/kv/BUCKET/...`).
//!
//! Compare-and-swap is HTTP's conditional request: a value's revision is its `ETag` (`"17"`); a
//! write with `If-Match: "17"` happens only if the key is still at revision 17, one with
//! `If-None-Match: *` only if the key has no value, one with `If-Match: *` only if it has one —
//! otherwise nothing is written and the answer is `412 precondition_failed` with the current
//! revision's `ETag`. A `DELETE` with `If-Match` is a compare-and-delete the same way. A read
//! with `If-None-Match: "17"` answers `304` while the key is at 17.
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::header::{ETAG, IF_MATCH, IF_NONE_MATCH};
use http::{HeaderMap, HeaderValue, StatusCode};
use nimbus_state::{Bucket, KvStore, Removal, Swap};
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

/// A revision as an entity tag: `"17"`.
fn etag(revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\"")).expect("digits and quotes")
}

/// `resp` with the revision's `ETag` (and `x-nimbus-kv-revision`, as before ETags).
fn tagged(mut resp: Response, revision: Option<u64>) -> Response {
    if let Some(revision) = revision {
        resp.headers_mut().insert(ETAG, etag(revision));
        resp.headers_mut().insert(REVISION_HEADER, HeaderValue::from(revision));
    }
    resp
}

/// What a conditional request requires of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precondition {
    /// Nothing: an unconditional request.
    Any,
    /// The key is at this revision (`If-Match: "N"`).
    At(u64),
    /// The key has a value (`If-Match: *`).
    Present,
    /// The key has no value (`If-None-Match: *` on a write).
    Absent,
}

fn bad_condition(message: String) -> ControlError {
    ControlError::BadRequest {
        message,
        hint: Some("send one revision as read from `ETag`, e.g. `If-Match: \"17\"`, or `*`".into()),
    }
}

/// The one revision or `*` a conditional header names.
fn condition(name: &str, value: &HeaderValue) -> Result<Option<u64>, ControlError> {
    let text = value.to_str().map_err(|_| bad_condition(format!("{name} is not ASCII text")))?.trim();
    if text == "*" {
        return Ok(None);
    }
    let unquoted = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
    unquoted.parse().map(Some).map_err(|_| {
        bad_condition(format!("{name}: {text:?} is not a revision of this store (one quoted number, or `*`)"))
    })
}

/// The precondition of a write, from `If-Match` / `If-None-Match`.
fn write_precondition(headers: &HeaderMap) -> Result<Precondition, ControlError> {
    match (headers.get(IF_MATCH), headers.get(IF_NONE_MATCH)) {
        (None, None) => Ok(Precondition::Any),
        (Some(_), Some(_)) => Err(bad_condition("send If-Match or If-None-Match, not both".into())),
        (Some(v), None) => Ok(condition("If-Match", v)?.map_or(Precondition::Present, Precondition::At)),
        (None, Some(v)) => match condition("If-None-Match", v)? {
            None => Ok(Precondition::Absent),
            Some(_) => {
                Err(bad_condition("on a write If-None-Match takes only `*`: write only if the key has no value".into()))
            }
        },
    }
}

/// The 412 of a failed precondition, with the key's current revision; `what` would have
/// happened: `written`, `deleted`.
fn failed(key: &str, wanted: Precondition, current: Option<u64>, what: &str) -> Response {
    let now = current.map_or("has no value".to_string(), |r| format!("is at revision {r}"));
    let wanted = match wanted {
        Precondition::At(r) => format!("revision {r}"),
        Precondition::Absent => "no value".into(),
        Precondition::Present | Precondition::Any => "a value".into(),
    };
    tagged(
        ControlError::PreconditionFailed(format!("key {key:?} {now}, not {wanted}; nothing was {what}"))
            .into_response(),
        current,
    )
}

/// The value of a key (bytes as stored), with its revision as its `ETag` (and in
/// `x-nimbus-kv-revision`); `If-None-Match` with its current revision answers 304.
#[utoipa::path(get, path = "/v1/apps/{app}/kv/{bucket}/keys/{key}", tag = "kv",
    params(("app" = String, Path), ("bucket" = String, Path), ("key" = String, Path),
        ("If-None-Match" = Option<String>, Header, description = "a revision read before, e.g. `\"17\"`: 304 while the key is still at it")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>,
            headers(("ETag" = String, description = "the value's revision, quoted"))),
        (status = 304, description = "the key is still at the revision of `If-None-Match`"),
        (status = 404, body = crate::ErrorBody)))]
async fn read(
    State(s): KvApp,
    Path((app, name, key)): Path<(String, String, String)>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ControlError> {
    let bucket = bucket(&s, &caller, Action::DataRead, &app, &name)?;
    let seen = headers.get(IF_NONE_MATCH).map(|v| condition("If-None-Match", v)).transpose()?.flatten();
    let entry = s
        .kv()?
        .get(&bucket, &key)
        .await?
        .ok_or_else(|| ControlError::NotFound(format!("no key {key:?} in bucket `{name}` of app `{app}`")))?;
    if seen == Some(entry.revision) {
        return Ok(tagged(StatusCode::NOT_MODIFIED.into_response(), Some(entry.revision)));
    }
    let mut resp = (StatusCode::OK, entry.value).into_response();
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    Ok(tagged(resp, Some(entry.revision)))
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

/// Sets a key to the request body; answers once it is durable, with the new revision as the
/// `ETag`. Conditional with `If-Match` (a revision, or `*`: only if the key has a value) or
/// `If-None-Match: *` (only if it has none): compare-and-swap, 412 when it does not hold.
#[utoipa::path(put, path = "/v1/apps/{app}/kv/{bucket}/keys/{key}", tag = "kv",
    params(("app" = String, Path), ("bucket" = String, Path), ("key" = String, Path), WriteQuery,
        ("If-Match" = Option<String>, Header, description = "write only if the key is at this revision (`\"17\"`), or has a value (`*`)"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: write only if the key has no value")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = Written, headers(("ETag" = String, description = "the new revision, quoted"))),
        (status = 400, body = crate::ErrorBody),
        (status = 412, body = crate::ErrorBody, headers(("ETag" = String, description = "the key's current revision, if it has a value"))),
        (status = 413, body = crate::ErrorBody)))]
async fn write(
    State(s): KvApp,
    Path((app, name, key)): Path<(String, String, String)>,
    caller: Caller,
    q: Result<Query<WriteQuery>, QueryRejection>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ControlError> {
    let bucket = bucket(&s, &caller, Action::DataWrite, &app, &name)?;
    let q = crate::api::query(q)?;
    let wanted = write_precondition(&headers)?;
    if wanted != Precondition::Any && q.ttl_s.is_some() {
        return Err(bad_condition(
            "a conditional write cannot set `ttl_s`; write without If-Match to set a TTL".into(),
        ));
    }
    let value = crate::data::read_body(body, MAX_VALUE_BYTES, "a value").await?;
    let kv = s.kv()?;
    let swap = match wanted {
        Precondition::Any => Swap::Done(kv.set(&bucket, &key, value, q.ttl_s.map(Duration::from_secs)).await?),
        Precondition::At(revision) => kv.compare_and_swap(&bucket, &key, Some(revision), value).await?,
        Precondition::Absent => kv.compare_and_swap(&bucket, &key, None, value).await?,
        Precondition::Present => swap_present(&*kv, &bucket, &key, value).await?,
    };
    Ok(match swap {
        Swap::Done(revision) => tagged(Json(Written { revision }).into_response(), Some(revision)),
        Swap::Conflict(current) => failed(&key, wanted, current, "written"),
    })
}

/// Writes `value` if `key` has a value, whichever revision it is at.
async fn swap_present(kv: &dyn KvStore, bucket: &Bucket, key: &str, value: bytes::Bytes) -> Result<Swap, ControlError> {
    loop {
        let Some(entry) = kv.get(bucket, key).await? else { return Ok(Swap::Conflict(None)) };
        match kv.compare_and_swap(bucket, key, Some(entry.revision), value.clone()).await? {
            // Changed in between but still has a value: try again at its new revision.
            Swap::Conflict(Some(_)) => continue,
            swap => return Ok(swap),
        }
    }
}

/// Deletes a key (absent keys are fine). Conditional with `If-Match` (a revision, or `*`: only
/// if the key has a value): compare-and-delete, 412 when it does not hold.
#[utoipa::path(delete, path = "/v1/apps/{app}/kv/{bucket}/keys/{key}", tag = "kv",
    params(("app" = String, Path), ("bucket" = String, Path), ("key" = String, Path),
        ("If-Match" = Option<String>, Header, description = "delete only if the key is at this revision (`\"17\"`), or has a value (`*`)")),
    responses((status = 204), (status = 400, body = crate::ErrorBody),
        (status = 412, body = crate::ErrorBody, headers(("ETag" = String, description = "the key's current revision, if it has a value")))))]
async fn remove(
    State(s): KvApp,
    Path((app, name, key)): Path<(String, String, String)>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ControlError> {
    let bucket = bucket(&s, &caller, Action::DataWrite, &app, &name)?;
    if headers.contains_key(IF_NONE_MATCH) {
        return Err(bad_condition("a delete takes If-Match, not If-None-Match".into()));
    }
    let wanted = write_precondition(&headers)?;
    let kv = s.kv()?;
    let removal = match wanted {
        Precondition::At(revision) => kv.compare_and_delete(&bucket, &key, revision).await?,
        Precondition::Present => delete_present(&*kv, &bucket, &key).await?,
        Precondition::Any | Precondition::Absent => {
            kv.delete(&bucket, &key).await?;
            Removal::Deleted
        }
    };
    Ok(match removal {
        Removal::Deleted => StatusCode::NO_CONTENT.into_response(),
        Removal::Conflict(current) => failed(&key, wanted, current, "deleted"),
    })
}

/// Deletes `key` if it has a value, whichever revision it is at.
async fn delete_present(kv: &dyn KvStore, bucket: &Bucket, key: &str) -> Result<Removal, ControlError> {
    loop {
        let Some(entry) = kv.get(bucket, key).await? else { return Ok(Removal::Conflict(None)) };
        match kv.compare_and_delete(bucket, key, entry.revision).await? {
            // Changed in between but still has a value: try again at its new revision.
            Removal::Conflict(Some(_)) => continue,
            removal => return Ok(removal),
        }
    }
}

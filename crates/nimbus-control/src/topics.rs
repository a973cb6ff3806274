//! The topic endpoints of the control API: publish to, read (and long-poll, for tailing) an
//! app's topic, see how far its consumer groups are, and replay a dead-letter topic
//! (`/v1/apps/APP/topics/TOPIC/...`).
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use nimbus_bus::{AttributesReader, PublishOptions, Topic};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::data::DataState;
use crate::error::ControlError;
use nimbus_security::policy::Action;

/// The most events one read returns.
const MAX_PAGE: usize = 1000;
/// The longest a read waits for new events.
const MAX_WAIT: Duration = Duration::from_secs(30);

type TopicsApp = State<Arc<DataState>>;

/// The topic routes.
pub(crate) fn routes() -> Router<Arc<DataState>> {
    Router::new()
        .route("/v1/apps/{app}/topics/{topic}/events", post(publish).get(read))
        .route("/v1/apps/{app}/topics/{topic}/groups", get(groups))
        .route("/v1/apps/{app}/topics/{topic}/replay", post(replay))
}

/// The topic `name` of `app`, once the caller may make calls of `scope` on the app's data.
fn topic(s: &DataState, caller: &Caller, action: Action, app: &str, name: &str) -> Result<Topic, ControlError> {
    s.check_app(caller, action, app)?;
    Topic::new(app, name)
        .map_err(|e| ControlError::bad_request(e.to_string(), "topics are named like `orders` or `orders.dlq`"))
}

/// An acknowledged publish.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublishedEvent {
    /// The topic.
    pub topic: String,
    /// The event's id.
    pub id: String,
    /// Its position in the topic.
    pub seq: u64,
    /// It repeated an event (same `source` and `id`) published within the dedup window and was
    /// not appended again.
    pub duplicate: bool,
}

/// Publishes a CloudEvent (structured mode: `application/cloudevents+json`; or binary mode:
/// `ce-*` headers) and answers once it is durable.
#[utoipa::path(post, path = "/v1/apps/{app}/topics/{topic}/events", tag = "events", params(("app" = String, Path), ("topic" = String, Path)),
    request_body(content = Object, content_type = "application/cloudevents+json", description = "A CloudEvent"),
    responses((status = 202, body = PublishedEvent), (status = 400, body = crate::ErrorBody), (status = 413, body = crate::ErrorBody), (status = 503, body = crate::ErrorBody)))]
async fn publish(
    State(s): TopicsApp,
    Path((app, name)): Path<(String, String)>,
    caller: Caller,
    body: axum::body::Body,
) -> Result<Response, ControlError> {
    let topic = topic(&s, &caller, Action::DataWrite, &app, &name)?;
    let bytes = crate::data::read_body(body, nimbus_gateway::MAX_EVENT_BYTES, "an event").await?;
    let event = nimbus_bus::http::read_event(&caller.headers, bytes.to_vec())?;
    let p = s.bus()?.publish(&topic, &event, PublishOptions::default()).await?;
    let body = PublishedEvent { topic: name, id: event.id().to_string(), seq: p.seq, duplicate: p.duplicate };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Which events to read.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ReadQuery {
    /// First position to return (default 1: the oldest retained event).
    from: Option<u64>,
    /// Start after the newest event instead (with `wait_ms`: only events published from now on).
    latest: Option<bool>,
    /// Most events to return (default and maximum 1000).
    limit: Option<usize>,
    /// If there is nothing yet, wait up to this long for events (at most 30000).
    wait_ms: Option<u64>,
}

/// A page of a topic.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// Events, oldest first.
    pub events: Vec<StoredEvent>,
    /// Where the next read starts.
    pub next: u64,
}

/// An event with its position.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StoredEvent {
    /// Position in the topic.
    pub seq: u64,
    /// The CloudEvent (JSON format).
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

/// The consumer groups of a topic.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupList {
    /// One entry per group that ever subscribed, by name.
    pub groups: Vec<GroupInfo>,
}

/// How far one consumer group is.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupInfo {
    /// The group's name (a trigger's group).
    pub group: String,
    /// Every event up to this position is acknowledged by the group (0: maybe none is).
    pub acked: u64,
    /// Events the group has not acknowledged yet, delivered or not.
    pub lag: u64,
}

/// Where each consumer group of a topic is: its acknowledged position and its lag.
#[utoipa::path(get, path = "/v1/apps/{app}/topics/{topic}/groups", tag = "events", params(("app" = String, Path), ("topic" = String, Path)),
    responses((status = 200, body = GroupList), (status = 400, body = crate::ErrorBody), (status = 404, body = crate::ErrorBody)))]
async fn groups(
    State(s): TopicsApp,
    Path((app, name)): Path<(String, String)>,
    caller: Caller,
) -> Result<Json<GroupList>, ControlError> {
    let topic = topic(&s, &caller, Action::DataRead, &app, &name)?;
    let groups = s
        .bus()?
        .groups(&topic)
        .await?
        .into_iter()
        .map(|g| GroupInfo { group: g.group.name().to_string(), acked: g.acked, lag: g.pending })
        .collect();
    Ok(Json(GroupList { groups }))
}

/// Reads events; with `wait_ms`, waits for the first one (for `nimbus events tail`).
#[utoipa::path(get, path = "/v1/apps/{app}/topics/{topic}/events", tag = "events", params(("app" = String, Path), ("topic" = String, Path), ReadQuery),
    responses((status = 200, body = EventPage), (status = 400, body = crate::ErrorBody)))]
async fn read(
    State(s): TopicsApp,
    Path((app, name)): Path<(String, String)>,
    caller: Caller,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Json<EventPage>, ControlError> {
    let topic = topic(&s, &caller, Action::DataRead, &app, &name)?;
    let q = crate::api::query(q)?;
    let from = match q.latest {
        Some(true) => s.bus()?.last(&topic).await?.map_or(1, |e| e.seq + 1),
        _ => q.from.unwrap_or(1).max(1),
    };
    let limit = q.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let deadline = Instant::now() + Duration::from_millis(q.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    loop {
        let stored = s.bus()?.read(&topic, from, limit).await?;
        if !stored.is_empty() || Instant::now() >= deadline {
            let next = stored.last().map_or(from, |e| e.seq + 1);
            let events = stored
                .into_iter()
                .map(|e| {
                    Ok(StoredEvent {
                        seq: e.seq,
                        event: serde_json::to_value(&e.event)
                            .map_err(|e| ControlError::internal("encoding a stored event", e))?,
                    })
                })
                .collect::<Result<_, ControlError>>()?;
            return Ok(Json(EventPage { events, next }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Dead letters replayed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Replayed {
    /// Events republished to the topics they came from.
    pub replayed: usize,
}

/// Republishes every dead letter of this (dead-letter) topic not replayed yet to its original
/// topic, without the failure attributes.
#[utoipa::path(post, path = "/v1/apps/{app}/topics/{topic}/replay", tag = "events", params(("app" = String, Path), ("topic" = String, Path)),
    responses((status = 200, body = Replayed), (status = 400, body = crate::ErrorBody)))]
async fn replay(
    State(s): TopicsApp,
    Path((app, name)): Path<(String, String)>,
    caller: Caller,
) -> Result<Json<Replayed>, ControlError> {
    let topic = topic(&s, &caller, Action::DataWrite, &app, &name)?;
    let replayed = nimbus_bus::dispatch::replay(&*s.bus()?, &topic, Duration::from_millis(300)).await?;
    tracing::info!(%topic, replayed, "dead letters replayed");
    Ok(Json(Replayed { replayed }))
}

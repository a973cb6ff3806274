//! Events at the gateway: the CloudEvents ingress (`POST /events/{topic}`, binary or structured
//! mode, for the topics the app declares). Delivering a topic's events to components is
//! `nimbus-triggers`'.
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, StatusCode, header};
use hyper::body::Incoming;
use nimbus_bus::{AttributesReader, EventBus, PublishOptions, Topic};

use crate::body::GatewayBody;
use crate::request_body::read_whole;
use crate::request_id::RequestId;
use crate::respond::{error, set_request_id};

/// The largest event accepted, in bytes (by the ingress and by the control API's topic endpoint).
pub const MAX_EVENT_BYTES: usize = 1 << 20;
/// How long a published event's body may take to arrive.
const MAX_EVENT_TIME: Duration = Duration::from_secs(30);

/// The path prefix of the ingress: `POST /events/{topic}`.
pub const EVENTS_PREFIX: &str = "/events/";

/// The CloudEvents ingress of an app.
#[derive(Debug)]
pub struct EventIngress {
    app: String,
    bus: Arc<dyn EventBus>,
    topics: BTreeSet<String>,
}

impl EventIngress {
    /// Accepts events for `app`'s `topics` (its triggers and publish grants: other topics are
    /// 404), up to [`MAX_EVENT_BYTES`] each.
    pub fn new(app: &str, bus: Arc<dyn EventBus>, topics: BTreeSet<String>) -> Self {
        Self { app: app.to_string(), bus, topics }
    }

    /// `POST /events/{topic}`: 202 once the event is durable, 400 for anything that is not a
    /// valid CloudEvent (never stored, never retried).
    pub(crate) async fn handle(&self, req: http::Request<Incoming>, id: &RequestId) -> http::Response<GatewayBody> {
        let name = req.uri().path().strip_prefix(EVENTS_PREFIX).unwrap_or_default().to_string();
        let topic = match Topic::new(&self.app, &name) {
            Ok(t) if self.topics.contains(&name) => t,
            Ok(_) => {
                return error(
                    StatusCode::NOT_FOUND,
                    id,
                    &format!("no topic `{name}` in this app; topics: {}", self.list()),
                );
            }
            Err(e) => return error(StatusCode::NOT_FOUND, id, &e.to_string()),
        };
        if req.method() != Method::POST {
            let mut resp = error(StatusCode::METHOD_NOT_ALLOWED, id, "publish events with POST");
            resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
            return resp;
        }
        let (parts, body) = req.into_parts();
        let body = match read_whole(body, MAX_EVENT_BYTES, MAX_EVENT_TIME).await {
            Ok(body) => body,
            Err(e) => return e.response(id, "event", MAX_EVENT_BYTES),
        };
        let event = match nimbus_bus::http::read_event(&parts.headers, body.to_vec()) {
            Ok(e) => e,
            Err(e) => return error(StatusCode::BAD_REQUEST, id, &e.to_string()),
        };
        match self.bus.publish(&topic, &event, PublishOptions::default()).await {
            Ok(p) => {
                let body = serde_json::json!({"topic": name, "id": event.id(), "seq": p.seq, "duplicate": p.duplicate});
                let mut resp = http::Response::new(GatewayBody::full(format!("{body}\n")));
                *resp.status_mut() = StatusCode::ACCEPTED;
                resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                set_request_id(&mut resp, id);
                resp
            }
            Err(e) => {
                tracing::error!(request_id = %id, topic = %name, error = %e, "publish failed");
                let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, id, &format!("the event was not stored: {e}"));
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                resp
            }
        }
    }

    fn list(&self) -> String {
        self.topics.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
    }
}

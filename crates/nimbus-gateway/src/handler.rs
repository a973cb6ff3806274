//! One request through the gateway: request id, health, routing, body limit, admission, the
//! function, and the mapping of failures to status codes.
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use nimbus_services::{Service, ServiceError};
use nimbus_wasm::{Function, Invocation, InvokeError};
use tokio::sync::OwnedSemaphorePermit;

use crate::admission::Rejected;
use crate::body::GatewayBody;
use crate::request_id::{REQUEST_ID_HEADER, request_id};
use crate::respond::{error, set_request_id};
use crate::router::RouteMatch;
use crate::{Backend, Gateway, HEALTH_PATH, Target};

impl Gateway {
    /// Serves one request. Never fails: every problem becomes a response.
    pub async fn handle(
        &self,
        mut req: http::Request<Incoming>,
        client: Option<SocketAddr>,
    ) -> http::Response<GatewayBody> {
        let id = request_id(req.headers());
        if req.uri().path() == HEALTH_PATH {
            return health(&id);
        }
        if let Some(events) = &self.events
            && req.uri().path().starts_with(crate::EVENTS_PREFIX)
        {
            return events.handle(req, &id).await;
        }
        if let Some(actors) = &self.actors
            && req.uri().path().starts_with(crate::ACTORS_PATH)
        {
            return actors.handle_http(req, &id).await;
        }
        let route = match self.router.find(req.method(), req.uri().path()) {
            RouteMatch::Found(route) => route,
            RouteMatch::NotFound => return error(StatusCode::NOT_FOUND, &id, "no route matches this path"),
            RouteMatch::MethodNotAllowed(allowed) => {
                let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
                let mut resp =
                    error(StatusCode::METHOD_NOT_ALLOWED, &id, &format!("method not allowed; use {}", list.join(", ")));
                if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                    resp.headers_mut().insert(header::ALLOW, v);
                }
                return resp;
            }
        };
        let target = &route.target;
        let limit = target.max_body_bytes;
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return error(StatusCode::PAYLOAD_TOO_LARGE, &id, &format!("request body is larger than {limit} bytes"));
        }
        if let Ok(v) = HeaderValue::from_str(&id) {
            req.headers_mut().insert(REQUEST_ID_HEADER, v);
        }
        if !req.headers().contains_key(header::HOST) && req.uri().authority().is_none() {
            req.headers_mut().insert(header::HOST, HeaderValue::from_static("localhost"));
        }
        let (parts, body) = req.into_parts();
        match &target.backend {
            Backend::Function(function) => invoke(function, target, &route.route, parts, body, &id, client).await,
            Backend::Service(service) => proxy(service, target, parts, body, &id, client).await,
        }
    }
}

/// A function: the body is read whole (bounded), then a fresh instance handles it.
async fn invoke(
    function: &Function,
    target: &Target,
    route: &str,
    parts: http::request::Parts,
    body: Incoming,
    id: &str,
    client: Option<SocketAddr>,
) -> http::Response<GatewayBody> {
    let limit = target.max_body_bytes;
    let body: Bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, id, &format!("request body is larger than {limit} bytes"));
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, id, &format!("could not read the request body: {e}")),
    };
    let permit = match admit(target, id).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let mut inv = Invocation::new(id, route);
    inv.client = client;
    inv.lease = Some(permit);
    match function.handle(http::Request::from_parts(parts, body), inv).await {
        Ok(resp) => {
            let mut resp = resp.map(GatewayBody::streaming);
            set_request_id(&mut resp, id);
            resp
        }
        Err(e) => failed(target, id, status_for(&e), &e),
    }
}

/// A service: the body streams through (bounded), the response streams back; the admission slot
/// is held until the response is fully sent.
async fn proxy(
    service: &Arc<Service>,
    target: &Target,
    parts: http::request::Parts,
    body: Incoming,
    id: &str,
    client: Option<SocketAddr>,
) -> http::Response<GatewayBody> {
    let permit = match admit(target, id).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let body = Limited::new(body, target.max_body_bytes).boxed();
    match service.handle(http::Request::from_parts(parts, body), client, target.admission.queue_timeout()).await {
        Ok(resp) => {
            let mut resp = resp.map(|b| GatewayBody::proxied(b, permit));
            set_request_id(&mut resp, id);
            resp
        }
        Err(e) => {
            let status = match e {
                ServiceError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
                ServiceError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                ServiceError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            };
            failed(target, id, status, &e)
        }
    }
}

/// Waits for an admission slot, or answers 503 + `Retry-After`.
async fn admit(target: &Target, id: &str) -> Result<OwnedSemaphorePermit, http::Response<GatewayBody>> {
    target.admission.admit().await.map_err(|why| {
        let message = match why {
            Rejected::QueueFull => "component is at capacity and its queue is full; retry later",
            Rejected::QueueTimeout => "component is at capacity; no instance freed up in time; retry later",
        };
        tracing::debug!(request_id = %id, component = target.backend.name(), ?why, "request shed");
        let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, id, message);
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        resp
    })
}

fn failed(target: &Target, id: &str, status: StatusCode, e: &dyn std::error::Error) -> http::Response<GatewayBody> {
    let component = target.backend.name();
    match target.backend {
        Backend::Function(_) => {
            tracing::warn!(request_id = %id, component, status = status.as_u16(), error = %e, "invocation failed");
        }
        Backend::Service(_) => {
            tracing::warn!(request_id = %id, component, status = status.as_u16(), error = %e, "service request failed");
        }
    }
    let mut resp = error(status, id, &e.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// `{"status":"ok"}`, the answer to [`HEALTH_PATH`].
pub(crate) fn health(request_id: &str) -> http::Response<GatewayBody> {
    let mut resp = http::Response::new(GatewayBody::full("{\"status\":\"ok\"}\n"));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    set_request_id(&mut resp, request_id);
    resp
}

fn status_for(e: &InvokeError) -> StatusCode {
    if e.is_timeout() {
        StatusCode::GATEWAY_TIMEOUT
    } else if e.is_capacity() {
        StatusCode::SERVICE_UNAVAILABLE
    } else if matches!(e, InvokeError::Guest(_) | InvokeError::Cgi(_)) {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

//! One request through the gateway: request id, health, the server span, routing, body limit,
//! admission, the function or service, the mapping of failures to status codes, and the
//! request's metrics.
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use nimbus_observe::{HttpRequest, Span, SpanKind, Telemetry, TraceContext};
use nimbus_services::{RequestBody, Service, ServiceError};
use nimbus_wasm::{Function, Invocation, InvokeError};
use tokio::sync::OwnedSemaphorePermit;

use crate::body::GatewayBody;
use crate::callers::Opened;
use crate::idle::{BodyWatch, ClientBody};
use crate::request_body::{BodyError, read_whole};
use crate::request_id::{REQUEST_ID_HEADER, RequestId};
use crate::respond::{error, set_request_id};
use crate::router::RouteMatch;
use crate::{Backend, Gateway, HEALTH_PATH, Target};
use nimbus_target::Rejected;

/// The response header carrying the trace context of the gateway's span (W3C Trace Context
/// Level 2), so a caller can find its request with `nimbus traces show`.
pub const TRACERESPONSE_HEADER: http::HeaderName = http::HeaderName::from_static("traceresponse");

impl Gateway {
    /// Serves one request. Never fails: every problem becomes a response.
    pub async fn handle(
        &self,
        req: http::Request<Incoming>,
        client: Option<SocketAddr>,
    ) -> http::Response<GatewayBody> {
        if req.uri().path() == HEALTH_PATH {
            return health(&RequestId::from_headers(req.headers()));
        }
        if let Some(why) = crate::hygiene::refusal(&req) {
            return error(StatusCode::BAD_REQUEST, &RequestId::from_headers(req.headers()), why);
        }
        self.serve(req, client).await
    }

    /// Serves a request [`Gateway::handle`] (or the [`crate::Ingress`]) has checked.
    pub(crate) async fn serve(
        &self,
        mut req: http::Request<Incoming>,
        client: Option<SocketAddr>,
    ) -> http::Response<GatewayBody> {
        // Only the mesh says who is calling and how deep: a client cannot claim to be a component.
        nimbus_security::identity::strip_claims(req.headers_mut());
        let id = RequestId::from_headers(req.headers());
        let started = Instant::now();
        let mut span = self.server_span(&req, &id, client);
        let (resp, target) = self.dispatch(req, client, &id, &mut span).await;
        finish(resp, target, span, started)
    }

    /// The server span of a request, continuing the trace its `traceparent` names.
    pub(crate) fn server_span(
        &self,
        req: &http::Request<Incoming>,
        id: &RequestId,
        client: Option<SocketAddr>,
    ) -> Span {
        let mut span =
            self.tracer.start(method_str(req.method()), SpanKind::Server, TraceContext::from_headers(req.headers()));
        span.set_http_request(|| HttpRequest::new(req, id.header_value(), client.map(|c| c.ip())));
        span
    }

    /// Whether this revision serves actors.
    pub fn has_actors(&self) -> bool {
        self.actors.is_some()
    }

    /// Routes and serves the request; says which component served it.
    async fn dispatch(
        &self,
        mut req: http::Request<Incoming>,
        client: Option<SocketAddr>,
        id: &RequestId,
        span: &mut Span,
    ) -> (http::Response<GatewayBody>, Option<Arc<Target>>) {
        if let Some(events) = &self.events
            && let Some(topic) = req.uri().path().strip_prefix(crate::EVENTS_PREFIX)
        {
            span.set("http.route", "/events/{topic}");
            span.rename("POST /events/{topic}");
            if let Some(refused) = self.openness.gate(Opened::Topic, topic, req.headers(), client.map(|c| c.ip()), id) {
                return (refused, None);
            }
            continue_trace(span, &mut req);
            return (Box::pin(events.handle(req, id)).await, None);
        }
        if let Some(actors) = &self.actors
            && let Some(path) = req.uri().path().strip_prefix(crate::ACTORS_PATH)
        {
            span.set("http.route", "/actors/{type}/{key}/{method}");
            span.rename("POST /actors/{type}/{key}/{method}");
            let actor_type = path.split('/').next().unwrap_or_default();
            if let Some(refused) =
                self.openness.gate(Opened::ActorType, actor_type, req.headers(), client.map(|c| c.ip()), id)
            {
                return (refused, None);
            }
            continue_trace(span, &mut req);
            return Box::pin(crate::actor_ingress::serve(&**actors, req, id, span, false)).await;
        }
        if let Some(workflows) = &self.workflows
            && let Some(path) = req.uri().path().strip_prefix(crate::WORKFLOWS_PATH)
        {
            span.set("http.route", "/workflows/{name}/...");
            span.rename(format!("{} /workflows/{{name}}", req.method()));
            let name = path.split('/').next().unwrap_or_default();
            if let Some(refused) = self.openness.gate(Opened::Workflow, name, req.headers(), client.map(|c| c.ip()), id)
            {
                return (refused, None);
            }
            continue_trace(span, &mut req);
            return (Box::pin(crate::workflow_ingress::serve(&**workflows, req, id, span)).await, None);
        }
        let found = {
            let _routing = span.child("route", SpanKind::Internal);
            self.router.find(req.method(), req.uri().path())
        };
        let route = match found {
            RouteMatch::Found(route) => route,
            RouteMatch::NotFound => {
                return (error(StatusCode::NOT_FOUND, id, "no route matches this path"), None);
            }
            RouteMatch::MethodNotAllowed(allowed) => {
                let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
                let mut resp =
                    error(StatusCode::METHOD_NOT_ALLOWED, id, &format!("method not allowed; use {}", list.join(", ")));
                if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                    resp.headers_mut().insert(header::ALLOW, v);
                }
                return (resp, None);
            }
        };
        let target = route.target.clone();
        span.set_http_route(&route.route, &target.telemetry);
        span.set_with("nimbus.workload.id", || self.workload(&target.telemetry.component).to_string());
        let limit = target.max_body_bytes;
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            target.telemetry.metrics.error("too_large");
            let message = format!("request body is larger than {limit} bytes");
            return (error(StatusCode::PAYLOAD_TOO_LARGE, id, &message), Some(target));
        }
        req.headers_mut().insert(REQUEST_ID_HEADER, id.header_value());
        if !req.headers().contains_key(header::HOST) && req.uri().authority().is_none() {
            req.headers_mut().insert(header::HOST, HeaderValue::from_static("localhost"));
        }
        let resp = match &target.backend {
            Backend::Function(function) => {
                continue_trace(span, &mut req);
                let (parts, body) = req.into_parts();
                let call = Serve { target: &target, route: &route.route, id, client, span, depth: 0, here: None };
                Box::pin(invoke(function, call, parts, body)).await
            }
            // The proxy's client span is what the service continues. Boxed like the other
            // backends: the futures around this one (`handle`, hyper's, the connection's) then
            // hold a pointer instead of the proxy's ~2.4 KB state, which each of them copied
            // when it started (~0.13 us of `memcpy` per request).
            Backend::Service(service) => {
                let (mut parts, body) = req.into_parts();
                let body = client_body(body, &mut parts, &target);
                let call = Serve { target: &target, route: &route.route, id, client, span, depth: 0, here: None };
                Box::pin(proxy(service, call, parts, body)).await
            }
        };
        (resp, Some(target))
    }
}

/// Ends a request's server span with its status (and the trace context in `traceresponse`),
/// counted in its component's metrics; the span ends when the body is sent.
pub(crate) fn finish(
    mut resp: http::Response<GatewayBody>,
    target: Option<Arc<Target>>,
    mut span: Span,
    started: Instant,
) -> http::Response<GatewayBody> {
    let status = resp.status();
    span.set_http_status(status.as_u16());
    if status.is_server_error() {
        span.set_error("http", status);
    }
    if let Some(ctx) = span.context().filter(|_| span.is_recording()) {
        resp.headers_mut().insert(TRACERESPONSE_HEADER, ctx.header_value());
    }
    match target {
        Some(t) => {
            t.telemetry.metrics.http_request(status.as_u16(), started.elapsed());
            resp.map(|b| b.metered(&t.telemetry).traced(span))
        }
        None => resp.map(|b| b.traced(span)),
    }
}

/// Hands the server span's context on to whatever serves the request (its `traceparent`).
fn continue_trace(span: &Span, req: &mut http::Request<Incoming>) {
    if let Some(ctx) = span.context() {
        ctx.inject(req.headers_mut());
    }
}

/// The method as a span name or attribute: standard ones without an allocation.
fn method_str(method: &Method) -> Cow<'static, str> {
    match *method {
        Method::GET => "GET".into(),
        Method::POST => "POST".into(),
        Method::PUT => "PUT".into(),
        Method::DELETE => "DELETE".into(),
        Method::HEAD => "HEAD".into(),
        Method::PATCH => "PATCH".into(),
        Method::OPTIONS => "OPTIONS".into(),
        _ => method.to_string().into(),
    }
}

/// One request to serve on a component: from a client, or a call from another component.
pub(crate) struct Serve<'a> {
    pub(crate) target: &'a Target,
    /// The route that matched, as written in the manifest.
    pub(crate) route: &'a str,
    pub(crate) id: &'a RequestId,
    pub(crate) client: Option<SocketAddr>,
    /// The server span, parent of what serving does.
    pub(crate) span: &'a mut Span,
    /// How many component-to-component calls deep (0: from a client).
    pub(crate) depth: u32,
    /// Set for a request another node forwarded: served on this node's processes, waiting at
    /// most this long for one.
    pub(crate) here: Option<std::time::Duration>,
}

/// A function: once admitted, the body is read whole (bounded in size, and in time by the
/// function's time limit, so a client that stops sending cannot hold the connection or its slot
/// for long), then a fresh instance handles it.
pub(crate) async fn invoke<B>(
    function: &Function,
    call: Serve<'_>,
    parts: http::request::Parts,
    body: B,
) -> http::Response<GatewayBody>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<crate::body::BoxError>,
{
    let Serve { target, route, id, client, span, depth, .. } = call;
    // Admitted first: a body is read only for a request holding one of the component's
    // `max_concurrency` slots, so bodies waiting in the queue hold no memory.
    let permit = match admit(target, id, span).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let limit = target.max_body_bytes;
    let body = match read_whole(body, limit, function.timeout()).await {
        Ok(body) => body,
        Err(e) => {
            match e {
                BodyError::TooLarge => target.telemetry.metrics.error("too_large"),
                BodyError::TimedOut(_) => target.telemetry.metrics.error("timeout"),
                BodyError::Broken(_) => {}
            }
            return e.response(id, "request body", limit);
        }
    };
    target.telemetry.metrics.bytes_in(body.len() as u64);
    let mut inv = Invocation::new(id.as_str(), route);
    inv.client = client;
    inv.depth = depth;
    inv.lease = Some(permit);
    inv.telemetry = Some(Telemetry { component: target.telemetry.clone(), parent: span.handle() });
    match function.handle(http::Request::from_parts(parts, body), inv).await {
        Ok(resp) => {
            let mut resp = resp.map(GatewayBody::streaming);
            set_request_id(&mut resp, id);
            resp
        }
        Err(e) => failed(target, id, span, status_for(&e), &e, &e.to_string()),
    }
}

/// A service: the body streams through (bounded; a client that stops sending it is cut by its
/// connection's idle timeout), the response streams back; the admission slot is held until the
/// response is fully sent. The upstream request is a client span whose context the service
/// receives in `traceparent`.
pub(crate) async fn proxy(
    service: &Arc<Service>,
    call: Serve<'_>,
    mut parts: http::request::Parts,
    body: RequestBody,
) -> http::Response<GatewayBody> {
    let Serve { target, id, client, span, here, .. } = call;
    let permit = match admit(target, id, span).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    // The server span already names the path and component; the client span is the hop.
    let mut upstream = span.child(method_str(&parts.method), SpanKind::Client);
    upstream.set_with("http.request.method", || method_str(&parts.method));
    if let Some(ctx) = upstream.context() {
        ctx.inject(&mut parts.headers);
    }
    let req = http::Request::from_parts(parts, body);
    let wait = target.admission.queue_timeout();
    let result = match here {
        Some(limit) => service.handle_here(req, client, wait.min(limit)).await,
        None => service.handle(req, client, wait).await,
    };
    match result {
        Ok(resp) => {
            upstream.set_http_status(resp.status().as_u16());
            let mut resp = resp.map(|b| GatewayBody::proxied(b, permit));
            set_request_id(&mut resp, id);
            resp
        }
        Err(e) => {
            // The client learns what happened, not why: the cause (a process's failure, its
            // files' location on the server) goes to the log only.
            let (status, class, public) = match &e {
                ServiceError::Unavailable { name, .. } => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("service `{name}` has no ready process; retry later"),
                ),
                ServiceError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout", e.to_string()),
                ServiceError::Upstream { name, .. } => {
                    (StatusCode::BAD_GATEWAY, "upstream", format!("service `{name}` failed the request"))
                }
            };
            upstream.set_error(class, nimbus_observe::report(&e));
            drop(upstream);
            target.telemetry.metrics.error(class);
            failed(target, id, span, status, &e, &public)
        }
    }
}

/// A client's request body on its way to a service: bounded by the component's limit, counted,
/// and cut by the connection's idle timeout when the client stops sending.
pub(crate) fn client_body(body: Incoming, parts: &mut http::request::Parts, target: &Target) -> RequestBody {
    if http_body::Body::is_end_stream(&body) {
        // Most proxied requests have no body: an empty one, which boxes without allocating.
        return http_body_util::Empty::new().map_err(|never| match never {}).boxed();
    }
    let watch = parts.extensions.remove::<BodyWatch>();
    limited(ClientBody::new(body, watch), target)
}

/// `body` bounded by `target`'s body limit and counted in its `bytes_in`.
pub(crate) fn limited<B>(body: B, target: &Target) -> RequestBody
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
    B::Error: Into<crate::body::BoxError>,
{
    let telemetry = target.telemetry.clone();
    Limited::new(body, target.max_body_bytes)
        .map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                telemetry.metrics.bytes_in(data.len() as u64);
            }
            frame
        })
        .boxed()
}

/// Waits for an admission slot (in the `admission` span), or answers 503 + `Retry-After`.
async fn admit(
    target: &Target,
    id: &RequestId,
    span: &Span,
) -> Result<OwnedSemaphorePermit, http::Response<GatewayBody>> {
    let mut waiting = span.child("admission", SpanKind::Internal);
    target.admit().await.map_err(|why| {
        let message = match why {
            Rejected::QueueFull => "component is at capacity and its queue is full; retry later",
            Rejected::QueueTimeout => "component is at capacity; no instance freed up in time; retry later",
            Rejected::Throttled(why) => {
                waiting.set_error("budget", &*why);
                target.telemetry.metrics.error("budget");
                return error(StatusCode::TOO_MANY_REQUESTS, id, &format!("budget_exhausted: {why}"));
            }
        };
        waiting.set_error("shed", message);
        target.telemetry.metrics.error("shed");
        target.telemetry.log(
            span.context(),
            Some(id.as_str()),
            "platform",
            "warn",
            &format!("request shed: {message}"),
        );
        let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, id, message);
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        resp
    })
}

pub(crate) fn failed(
    target: &Target,
    id: &RequestId,
    span: &mut Span,
    status: StatusCode,
    e: &(dyn std::error::Error + 'static),
    public: &str,
) -> http::Response<GatewayBody> {
    let what = match target.backend {
        Backend::Function(_) => "invocation failed",
        Backend::Service(_) => "service request failed",
    };
    span.set_error("http", e);
    target.telemetry.log(
        span.context(),
        Some(id.as_str()),
        "platform",
        "warn",
        &format!("{what} ({}): {}", status.as_u16(), nimbus_observe::report(e)),
    );
    let mut resp = error(status, id, public);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// `{"status":"ok"}`, the answer to [`HEALTH_PATH`].
pub(crate) fn health(request_id: &RequestId) -> http::Response<GatewayBody> {
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

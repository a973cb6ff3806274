//! A service's requests on a node that does not run it: sent over the transport to the nodes
//! that do. Each names its service (`APP/REVISION/COMPONENT`) and how long the caller still
//! waits; its `Host` and `traceparent` (the gateway's client span) go with it, and nothing a
//! client wrote into the headers nodes read from each other does. Nodes are tried in the order
//! the scheduler gave (those with room first); a request none of them can take (unreachable, or
//! not loaded the revision yet) is served where it arrived, and an idempotent one without a body that a node
//! failed mid-flight is sent again. A service no node has room for is answered `503`.
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http::{HeaderValue, StatusCode, header};
use hyper::body::Incoming;
use nimbus_gateway::{DEADLINE_HEADER, FORWARD_HEADER, strip_peer_headers};
use nimbus_services::{Forward, RequestBody, ServiceError, Unforwarded};

use super::schedule::ServiceKey;
use super::transport::{Transport, Unsent};

/// Where one service's requests go from a node that does not run it.
#[derive(Debug)]
pub(crate) struct ForwardTo {
    transport: Arc<Transport>,
    service: ServiceKey,
    /// `APP/REVISION/COMPONENT`.
    header: HeaderValue,
    /// Peer addresses of the nodes running it that have loaded its revision, in the order they
    /// are tried.
    nodes: Vec<String>,
    /// No node has room for it: its requests are answered `503`.
    unplaced: bool,
}

impl ForwardTo {
    /// To `nodes` (peer addresses); `unplaced` when the scheduler found no node with room.
    pub(crate) fn new(transport: Arc<Transport>, service: ServiceKey, nodes: Vec<String>, unplaced: bool) -> Self {
        let header = format!("{}/{}/{}", service.app, service.revision, service.component);
        let header = HeaderValue::from_str(&header).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        Self { transport, service, header, nodes, unplaced }
    }

    async fn forward(
        &self,
        mut req: http::Request<RequestBody>,
        wait: Duration,
    ) -> Result<http::Response<Incoming>, Unforwarded> {
        if self.unplaced {
            let why = "no node of the cluster has room for it (see `nimbus nodes list` and --capacity-mb)".into();
            return Err(Unforwarded::Failed(ServiceError::Unavailable { name: self.service.component.clone(), why }));
        }
        // HTTP/2 carries the authority in the URI: the client's `Host`, so the service sees it.
        let authority = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .unwrap_or_else(|| http::uri::Authority::from_static("service.nimbus.internal"));
        let path = req.uri().path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() =
            http::Uri::builder().scheme("https").authority(authority).path_and_query(path).build().unwrap_or_default();
        strip_peer_headers(req.headers_mut());
        req.headers_mut().insert(FORWARD_HEADER, self.header.clone());
        req.headers_mut().insert(DEADLINE_HEADER, HeaderValue::from(wait.as_millis() as u64));
        // A request that can be sent again (idempotent, no body) is, when a node fails it after
        // it was sent (the node died with it in flight) or has not loaded the revision yet.
        let again = replayable(&req).then(|| {
            let mut copy = http::Request::new(());
            *copy.method_mut() = req.method().clone();
            *copy.uri_mut() = req.uri().clone();
            *copy.headers_mut() = req.headers().clone();
            copy
        });
        for addr in &self.nodes {
            let missed = match self.transport.send(addr, req).await {
                Ok(resp) if resp.status() != StatusCode::MISDIRECTED_REQUEST => return Ok(resp),
                Ok(_) => ServiceError::Unavailable {
                    name: self.service.component.clone(),
                    why: "the node running it has not loaded this revision yet".into(),
                },
                Err(Unsent::Back(back)) => {
                    tracing::debug!(service = ?self.service, node = %addr, "node unreachable; trying the next");
                    req = *back;
                    continue;
                }
                Err(Unsent::Failed(e)) => {
                    ServiceError::Upstream { name: self.service.component.clone(), source: nimbus_observe::cause(e) }
                }
            };
            let Some(copy) = &again else { return Err(Unforwarded::Failed(missed)) };
            tracing::debug!(service = ?self.service, node = %addr, error = %nimbus_observe::report(&missed),
                "the node did not serve an idempotent request; sending it again");
            req = copy.clone().map(|()| empty());
        }
        strip_peer_headers(req.headers_mut());
        Err(Unforwarded::Unsent(req))
    }
}

/// Whether `req` may be sent again after a failure: an idempotent method without a body.
fn replayable(req: &http::Request<RequestBody>) -> bool {
    use http_body::Body as _;
    matches!(*req.method(), http::Method::GET | http::Method::HEAD | http::Method::OPTIONS)
        && req.body().is_end_stream()
}

/// An empty request body.
pub(crate) fn empty() -> RequestBody {
    use http_body_util::BodyExt as _;
    http_body_util::Empty::new().map_err(|never| match never {}).boxed()
}

impl Forward for ForwardTo {
    fn forward(
        &self,
        req: http::Request<RequestBody>,
        wait: Duration,
    ) -> BoxFuture<'_, Result<http::Response<Incoming>, Unforwarded>> {
        Box::pin(ForwardTo::forward(self, req, wait))
    }
}

//! The receiving end of the inter-node transport: what a node's peer listener serves (under
//! mutual TLS with the cluster CA, so every request on it comes from another node). A request
//! names the service it is for in [`FORWARD_HEADER`] (`APP/REVISION/COMPONENT`) and how long
//! the forwarding node still waits in [`DEADLINE_HEADER`]; it is served on this node's
//! processes of exactly that revision, never forwarded again, and the response says which node
//! served it in [`NODE_HEADER`]. An actor call forwarded to the node owning its key names its
//! app in [`FORWARD_ACTOR_HEADER`] and runs on this node's activation of the key; a wake-up of
//! a workflow run this node owns names its app in [`WAKE_RUN_HEADER`].
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use hyper::body::Incoming;

use crate::body::GatewayBody;
use crate::request_id::{REQUEST_ID_HEADER, RequestId};
use crate::respond::error;
use crate::{HEALTH_PATH, Ingress};

/// The request header naming the service a forwarded request is for: `APP/REVISION/COMPONENT`.
pub const FORWARD_HEADER: &str = "x-nimbus-forward";
/// The request header of an actor call forwarded to the node owning the key: the app's name
/// (the request is `POST /actors/TYPE/KEY/METHOD`).
pub const FORWARD_ACTOR_HEADER: &str = "x-nimbus-forward-actor";
/// The request header of a wake-up sent to the node owning a workflow run: the app's name (the
/// request is `POST /wake/RUN`, `?cancel=true` when it was asked to cancel).
pub const WAKE_RUN_HEADER: &str = "x-nimbus-wake-run";
/// The request header saying how many milliseconds the forwarding node still waits for the
/// response's headers.
pub const DEADLINE_HEADER: &str = "x-nimbus-deadline-ms";
/// The response header naming the node whose process served a request.
pub const NODE_HEADER: &str = "x-nimbus-node";

/// Longest wait a forwarded request may ask for.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// The peer listener's handler: forwarded requests onto this node's services.
#[derive(Debug)]
pub struct PeerIngress {
    ingress: Arc<Ingress>,
    node: HeaderValue,
}

impl PeerIngress {
    /// Serves forwarded requests on the revisions `ingress` has loaded, as node `node`.
    pub fn new(ingress: Arc<Ingress>, node: &str) -> Self {
        let node = HeaderValue::from_str(node).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        Self { ingress, node }
    }

    /// Serves one forwarded request. Never fails: every problem becomes a response.
    pub async fn handle(&self, mut req: http::Request<Incoming>) -> http::Response<GatewayBody> {
        let id = RequestId::from_headers(req.headers());
        req.headers_mut().insert(REQUEST_ID_HEADER, id.header_value());
        if req.uri().path() == HEALTH_PATH && !req.headers().contains_key(FORWARD_HEADER) {
            return crate::handler::health(&id);
        }
        if let Some(app) = req.headers().get(WAKE_RUN_HEADER) {
            let app = app.to_str().unwrap_or_default();
            let run = req.uri().path().strip_prefix("/wake/").unwrap_or_default();
            let Some(workflows) = self.ingress.workflows_of(app) else {
                let message = format!("app `{app}` runs no workflows on this node");
                return error(StatusCode::MISDIRECTED_REQUEST, &id, &message);
            };
            workflows.wake(run, req.uri().query() == Some("cancel=true"));
            let mut resp = http::Response::new(GatewayBody::full(""));
            *resp.status_mut() = StatusCode::NO_CONTENT;
            return resp;
        }
        if let Some(app) = req.headers_mut().remove(FORWARD_ACTOR_HEADER) {
            let app = app.to_str().unwrap_or_default();
            let Some(live) = self.ingress.actors_of(app) else {
                let message = format!("app `{app}` serves no actors on this node");
                return error(StatusCode::MISDIRECTED_REQUEST, &id, &message);
            };
            let mut resp = live.gateway.serve_forwarded_actor(req).await;
            resp.headers_mut().insert(NODE_HEADER, self.node.clone());
            return resp;
        }
        let Some(to) = req.headers_mut().remove(FORWARD_HEADER) else {
            return error(
                StatusCode::BAD_REQUEST,
                &id,
                "a request between nodes names its service in x-nimbus-forward",
            );
        };
        let Some((app, revision, component)) = to.to_str().ok().and_then(split) else {
            return error(StatusCode::BAD_REQUEST, &id, "x-nimbus-forward is APP/REVISION/COMPONENT");
        };
        let wait = req
            .headers_mut()
            .remove(DEADLINE_HEADER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map_or(MAX_WAIT, |ms| Duration::from_millis(ms).min(MAX_WAIT));
        let Some(live) = self.ingress.live(app, revision) else {
            let message = format!("revision {revision} of app `{app}` is not loaded on this node");
            return error(StatusCode::MISDIRECTED_REQUEST, &id, &message);
        };
        let mut resp = live.gateway.serve_forwarded(component, req, wait).await;
        resp.headers_mut().insert(NODE_HEADER, self.node.clone());
        resp
    }
}

fn split(to: &str) -> Option<(&str, &str, &str)> {
    let mut parts = to.splitn(3, '/');
    let (app, revision, component) = (parts.next()?, parts.next()?, parts.next()?);
    (![app, revision, component].iter().any(|p| p.is_empty())).then_some((app, revision, component))
}

impl crate::Handler for PeerIngress {
    type Body = GatewayBody;

    fn handle(
        &self,
        req: http::Request<Incoming>,
        _client: Option<SocketAddr>,
    ) -> impl Future<Output = http::Response<GatewayBody>> + Send {
        PeerIngress::handle(self, req)
    }
}

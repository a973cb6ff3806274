//! The receiving end of the inter-node transport: what a node's peer listener serves (under
//! mutual TLS with the cluster CA, so every request on it comes from another node). A request
//! names the service it is for in [`FORWARD_HEADER`] (`APP/REVISION/COMPONENT`) and how long
//! the forwarding node still waits in [`DEADLINE_HEADER`]; it is served on this node's
//! processes of exactly that revision, never forwarded again, and the response says which node
//! served it in [`NODE_HEADER`]. An actor call forwarded to the node owning its key names its
//! app and revision in [`FORWARD_ACTOR_HEADER`] and runs on this node's activation of the key;
//! a wake-up of a workflow run this node owns names its app in [`WAKE_RUN_HEADER`]. A request
//! names one of these; the sender removes whatever its client sent ([`strip_peer_headers`]).
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
/// The request header of an actor call forwarded to the node owning the key: `APP/REVISION` of
/// the caller (the request is `POST /actors/TYPE/KEY/METHOD`).
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
        let Some(what) = Forwarded::of(req.headers_mut()) else {
            if req.uri().path() == HEALTH_PATH {
                return crate::handler::health(&id);
            }
            return error(
                StatusCode::BAD_REQUEST,
                &id,
                "a request between nodes names its service in x-nimbus-forward",
            );
        };
        let mut resp = match what {
            Forwarded::Service { to, wait } => {
                let Some((app, revision, component)) = to.to_str().ok().and_then(|t| split(t, 3)) else {
                    return error(StatusCode::BAD_REQUEST, &id, "x-nimbus-forward is APP/REVISION/COMPONENT");
                };
                let Some(live) = self.ingress.live(app, revision) else {
                    let message = format!("revision {revision} of app `{app}` is not loaded on this node");
                    return error(StatusCode::MISDIRECTED_REQUEST, &id, &message);
                };
                live.gateway.serve_forwarded(component, req, wait).await
            }
            Forwarded::Actor(to) => {
                let Some((app, revision, _)) = to.to_str().ok().and_then(|t| split(t, 2)) else {
                    return error(StatusCode::BAD_REQUEST, &id, "x-nimbus-forward-actor is APP/REVISION");
                };
                // The caller's revision if this node has it, else the app's revision serving actors.
                let live = self.ingress.live(app, revision).filter(|r| r.gateway.has_actors());
                let Some(live) = live.or_else(|| self.ingress.actors_of(app)) else {
                    let message = format!("app `{app}` serves no actors on this node");
                    return error(StatusCode::MISDIRECTED_REQUEST, &id, &message);
                };
                live.gateway.serve_forwarded_actor(req).await
            }
            Forwarded::Wake(app) => {
                let app = app.to_str().unwrap_or_default();
                let Some(workflows) = self.ingress.workflows_of(app) else {
                    let message = format!("app `{app}` runs no workflows on this node");
                    return error(StatusCode::MISDIRECTED_REQUEST, &id, &message);
                };
                let run = req.uri().path().strip_prefix("/wake/").unwrap_or_default();
                workflows.wake(&crate::actor_ingress::percent_decode(run), req.uri().query() == Some("cancel=true"));
                let mut resp = http::Response::new(GatewayBody::full(""));
                *resp.status_mut() = StatusCode::NO_CONTENT;
                resp
            }
        };
        resp.headers_mut().insert(NODE_HEADER, self.node.clone());
        resp
    }
}

/// What a request between nodes is, from its headers (all of which are taken out: a forwarded
/// service request is served as the client sent it).
enum Forwarded {
    /// A service's request: `APP/REVISION/COMPONENT`, and how long the caller still waits.
    Service { to: HeaderValue, wait: Duration },
    /// An actor call: `APP/REVISION` of the caller.
    Actor(HeaderValue),
    /// A wake-up of a workflow run of this app.
    Wake(HeaderValue),
}

impl Forwarded {
    /// A service's request first: whatever else its client's headers claim is dropped.
    fn of(headers: &mut http::HeaderMap) -> Option<Self> {
        let (to, actor, wake, deadline) = (
            headers.remove(FORWARD_HEADER),
            headers.remove(FORWARD_ACTOR_HEADER),
            headers.remove(WAKE_RUN_HEADER),
            headers.remove(DEADLINE_HEADER),
        );
        if let Some(to) = to {
            let wait = deadline
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .map_or(MAX_WAIT, |ms| Duration::from_millis(ms).min(MAX_WAIT));
            return Some(Self::Service { to, wait });
        }
        actor.map(Self::Actor).or(wake.map(Self::Wake))
    }
}

/// Removes every header a node reads from a request between nodes: a request on its way to
/// another node carries only the ones its sender sets, never its client's.
pub fn strip_peer_headers(headers: &mut http::HeaderMap) {
    for name in [FORWARD_HEADER, FORWARD_ACTOR_HEADER, WAKE_RUN_HEADER, DEADLINE_HEADER] {
        headers.remove(name);
    }
}

/// `to` split at `/` into `parts` (2 or 3) non-empty parts; the third is `""` for two.
fn split(to: &str, parts: usize) -> Option<(&str, &str, &str)> {
    let mut it = to.splitn(parts, '/');
    let (a, b) = (it.next()?, it.next()?);
    let c = if parts == 3 { it.next()? } else { "" };
    let empty = a.is_empty() || b.is_empty() || (parts == 3 && c.is_empty());
    (!empty && it.next().is_none()).then_some((a, b, c))
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

//! The sending end of the inter-node transport: a service's requests on a node that does not
//! run it go to one that does, over mutual TLS with the cluster CA ([`PeerTls`]). One HTTP/2
//! connection per peer carries every forwarded request to it at once (kept alive, opened again
//! when it breaks); a WebSocket upgrade gets an HTTP/1.1 connection of its own. Each request
//! names its service (`APP/REVISION/COMPONENT`) and how long the caller still waits; its
//! `traceparent` (the gateway's client span) continues the trace on the other node.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{HeaderValue, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use nimbus_actors::{ActorError, RemoteCall, Unowned};
use nimbus_gateway::{DEADLINE_HEADER, FORWARD_ACTOR_HEADER, FORWARD_HEADER, REQUEST_ID_HEADER, WAKE_RUN_HEADER};
use nimbus_security::tls::peer::PeerTls;
use nimbus_services::{Forward, RequestBody, ServiceError, Unforwarded};

use super::schedule::ServiceKey;

/// How long connecting to a peer (TCP and TLS) may take before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections to the other nodes.
#[derive(Debug)]
pub struct Transport {
    tls: Arc<PeerTls>,
    /// The HTTP/1.1-only configuration, for upgrades.
    h1: Arc<rustls::ClientConfig>,
    /// One HTTP/2 connection per peer address.
    pool: Mutex<HashMap<String, hyper::client::conn::http2::SendRequest<RequestBody>>>,
}

/// Why a peer could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach node at {addr}: {why}")]
struct Unreachable {
    addr: String,
    why: String,
}

impl Transport {
    /// Connections made with `tls`.
    pub fn new(tls: Arc<PeerTls>) -> Self {
        let mut h1 = (*tls.client()).clone();
        h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self { tls, h1: Arc::new(h1), pool: Mutex::default() }
    }

    /// The node's TLS (to renew its certificate).
    pub fn tls(&self) -> &Arc<PeerTls> {
        &self.tls
    }

    async fn tls_stream(
        &self,
        addr: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Unreachable> {
        let failed = |why: String| Unreachable { addr: addr.to_string(), why };
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| failed(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(config)
                .connect(PeerTls::server_name(), tcp)
                .await
                .map_err(|e| failed(format!("TLS: {e}")))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect).await.map_err(|_| failed("timed out".into()))?
    }

    /// The pooled HTTP/2 connection to `addr`, opened if there is none (or it broke).
    async fn h2(&self, addr: &str) -> Result<hyper::client::conn::http2::SendRequest<RequestBody>, Unreachable> {
        if let Some(sender) = self.pool.lock().expect("peer pool").get(addr).filter(|s| !s.is_closed()).cloned() {
            return Ok(sender);
        }
        let stream = self.tls_stream(addr, self.tls.client()).await?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Unreachable { addr: addr.to_string(), why: e.to_string() })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.pool.lock().expect("peer pool").insert(addr.to_string(), sender.clone());
        Ok(sender)
    }

    /// Sends `req` on a connection of its own over HTTP/1.1 (an upgrade keeps its connection).
    async fn h1(&self, addr: &str, req: http::Request<RequestBody>) -> Result<http::Response<Incoming>, Unforwarded> {
        let stream = match self.tls_stream(addr, self.h1.clone()).await {
            Ok(stream) => stream,
            Err(_) => return Err(Unforwarded::Unsent(req)),
        };
        let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(_) => return Err(Unforwarded::Unsent(req)),
        };
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        sender.try_send_request(req).await.map_err(|mut e| match e.take_message() {
            Some(req) => Unforwarded::Unsent(req),
            None => Unforwarded::Failed(failed_upstream(e.into_error())),
        })
    }

    /// Sends `req` to the node at `addr`.
    async fn send(
        &self,
        addr: &str,
        mut req: http::Request<RequestBody>,
    ) -> Result<http::Response<Incoming>, Unforwarded> {
        if req.headers().contains_key(header::UPGRADE) {
            *req.version_mut() = http::Version::HTTP_11;
            return self.h1(addr, req).await;
        }
        let mut sender = match self.h2(addr).await {
            Ok(sender) => sender,
            Err(e) => {
                tracing::debug!(error = %e, "peer unreachable");
                return Err(Unforwarded::Unsent(req));
            }
        };
        *req.version_mut() = http::Version::HTTP_2;
        if sender.ready().await.is_err() {
            self.pool.lock().expect("peer pool").remove(addr);
            return Err(Unforwarded::Unsent(req));
        }
        sender.try_send_request(req).await.map_err(|mut e| match e.take_message() {
            Some(req) => {
                self.pool.lock().expect("peer pool").remove(addr);
                Unforwarded::Unsent(req)
            }
            None => Unforwarded::Failed(failed_upstream(e.into_error())),
        })
    }
}

/// Largest answer of a forwarded actor call read.
const MAX_ACTOR_ANSWER: usize = 16 << 20;

impl Transport {
    /// Runs an actor call of `app` on the node at `addr`, which owns its key. A node that
    /// cannot be reached, or that does not serve the app's actors yet (`421`), leaves the call
    /// to this node.
    pub(crate) async fn call_actor(&self, addr: &str, app: &str, call: RemoteCall) -> Result<Vec<u8>, Unowned> {
        use http_body_util::BodyExt as _;
        let path = format!("/actors/{}/{}/{}", escape(&call.actor_type), escape(&call.key), escape(&call.method));
        let mut req = http::Request::new(
            http_body_util::Full::new(bytes::Bytes::from(call.input)).map_err(|never| match never {}).boxed(),
        );
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = format!("https://actors.nimbus.internal{path}").parse().map_err(|_| Unowned::Unreachable)?;
        let headers = req.headers_mut();
        let named =
            [(http::HeaderName::from_static(FORWARD_ACTOR_HEADER), app), (REQUEST_ID_HEADER, call.request_id.as_str())];
        let traced = call.traceparent.as_deref().map(|t| (http::HeaderName::from_static("traceparent"), t));
        for (name, value) in named.into_iter().chain(traced) {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        }
        let resp = match self.send(addr, req).await {
            Ok(resp) => resp,
            Err(Unforwarded::Unsent(_)) => return Err(Unowned::Unreachable),
            Err(Unforwarded::Failed(e)) => {
                let message = format!("the call was sent but not answered: {}", nimbus_observe::report(&e));
                return Err(Unowned::Failed(ActorError::Remote { status: 502, message }));
            }
        };
        let status = resp.status();
        if status == http::StatusCode::MISDIRECTED_REQUEST {
            return Err(Unowned::Unreachable);
        }
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ACTOR_ANSWER).collect().await;
        let body = body.map_err(|e| {
            let message = format!("its answer broke off: {e}");
            Unowned::Failed(ActorError::Remote { status: 502, message })
        })?;
        let body = body.to_bytes().to_vec();
        if status.is_success() {
            return Ok(body);
        }
        // The gateway's error body: `{"error": MESSAGE, ...}`.
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        Err(Unowned::Failed(ActorError::Remote { status: status.as_u16(), message }))
    }
}

impl Transport {
    /// Tells the node at `addr`, which owns workflow run `run` of `app`, to drive it.
    pub(crate) async fn wake_run(&self, addr: &str, app: &str, run: &str, cancel: bool) -> Result<(), ()> {
        use http_body_util::BodyExt as _;
        let query = if cancel { "?cancel=true" } else { "" };
        let uri = format!("https://workflows.nimbus.internal/wake/{}{query}", escape(run));
        let mut req = http::Request::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed());
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = uri.parse().map_err(drop)?;
        req.headers_mut().insert(WAKE_RUN_HEADER, HeaderValue::from_str(app).map_err(drop)?);
        match self.send(addr, req).await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            _ => Err(()),
        }
    }
}

/// A path segment with every byte but the unreserved ones `%XX`-escaped.
fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn failed_upstream(e: hyper::Error) -> ServiceError {
    ServiceError::Upstream { name: "(forwarded)".into(), source: nimbus_observe::cause(e) }
}

/// Where one service's requests go from a node that does not run it: the nodes that do, in the
/// scheduler's order.
#[derive(Debug)]
pub(crate) struct ForwardTo {
    pub(crate) transport: Arc<Transport>,
    pub(crate) service: ServiceKey,
    /// `APP/REVISION/COMPONENT`.
    pub(crate) header: HeaderValue,
    /// Peer addresses of the nodes running it.
    pub(crate) nodes: Vec<String>,
}

impl ForwardTo {
    pub(crate) fn new(transport: Arc<Transport>, service: ServiceKey, nodes: Vec<String>) -> Self {
        let header = format!("{}/{}/{}", service.app, service.revision, service.component);
        let header = HeaderValue::from_str(&header).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        Self { transport, service, header, nodes }
    }

    async fn forward(
        &self,
        mut req: http::Request<RequestBody>,
        wait: Duration,
    ) -> Result<http::Response<Incoming>, Unforwarded> {
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
        req.headers_mut().insert(FORWARD_HEADER, self.header.clone());
        req.headers_mut().insert(DEADLINE_HEADER, HeaderValue::from(wait.as_millis() as u64));
        // A request that can be sent again (idempotent, no body) is, when a node fails it after
        // it was sent (the node died with it in flight): to the next node, or served here.
        let again = replayable(&req).then(|| {
            let mut copy = http::Request::new(());
            *copy.method_mut() = req.method().clone();
            *copy.uri_mut() = req.uri().clone();
            *copy.headers_mut() = req.headers().clone();
            copy
        });
        // Nodes in the scheduler's order, starting at a random one so they share the load.
        let start = if self.nodes.is_empty() { 0 } else { fastrand::usize(..self.nodes.len()) };
        for i in 0..self.nodes.len() {
            let addr = &self.nodes[(start + i) % self.nodes.len()];
            match self.transport.send(addr, req).await {
                Ok(resp) => return Ok(resp),
                Err(Unforwarded::Unsent(back)) => {
                    tracing::debug!(service = ?self.service, node = %addr, "node unreachable; trying the next");
                    req = back;
                }
                Err(Unforwarded::Failed(e)) => match &again {
                    Some(copy) => {
                        tracing::debug!(service = ?self.service, node = %addr, error = %nimbus_observe::report(&e), "node failed an idempotent request; sending it again");
                        req = copy.clone().map(|()| empty());
                    }
                    None => return Err(Unforwarded::Failed(e)),
                },
            }
        }
        req.headers_mut().remove(FORWARD_HEADER);
        req.headers_mut().remove(DEADLINE_HEADER);
        Err(Unforwarded::Unsent(req))
    }
}

/// Whether `req` may be sent again after a failure: an idempotent method without a body.
fn replayable(req: &http::Request<RequestBody>) -> bool {
    use http_body::Body as _;
    matches!(*req.method(), http::Method::GET | http::Method::HEAD | http::Method::OPTIONS)
        && req.body().is_end_stream()
}

fn empty() -> RequestBody {
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

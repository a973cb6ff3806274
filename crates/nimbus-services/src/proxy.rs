//! Forwarding one request to a service process over HTTP/1.1 (pooled keep-alive connections),
//! bodies streamed both ways, and protocol upgrades (WebSocket) spliced through.
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::InFlight;

/// Errors while streaming a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request body on its way to a service.
pub type RequestBody = BoxBody<Bytes, BoxError>;

/// The pooled HTTP/1.1 client to service processes.
pub(crate) type HttpClient = Client<HttpConnector, RequestBody>;

pub(crate) fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(connector)
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Rewrites a request for the process on `port`; returns whether it asks for an upgrade.
pub(crate) fn prepare<B>(req: &mut http::Request<B>, port: u16, client: Option<SocketAddr>) -> bool {
    let upgrade = req.headers().get(header::UPGRADE).cloned();
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if let Ok(uri) = format!("http://127.0.0.1:{port}{path}").parse() {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = http::Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    if let Some(addr) = client {
        let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {}", addr.ip()),
            None => addr.ip().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&forwarded) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), v);
        }
    }
    headers.entry(HeaderName::from_static("x-forwarded-proto")).or_insert(HeaderValue::from_static("http"));
    match upgrade {
        Some(protocol) => {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol);
            true
        }
        None => false,
    }
}

pub(crate) fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim).filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()))
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Splices the client's and the process's upgraded connections (after a `101`).
pub(crate) fn splice(client_side: hyper::upgrade::OnUpgrade, service_side: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (Ok(a), Ok(b)) = (client_side.await, service_side.await) else { return };
        let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
    });
}

/// A service's response body; counts as in flight until it is fully sent or dropped.
pub struct ServiceBody {
    inner: Incoming,
    _in_flight: InFlight,
}

impl ServiceBody {
    pub(crate) fn new(inner: Incoming, in_flight: InFlight) -> Self {
        Self { inner, _in_flight: in_flight }
    }
}

impl std::fmt::Debug for ServiceBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBody").finish_non_exhaustive()
    }
}

impl Body for ServiceBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

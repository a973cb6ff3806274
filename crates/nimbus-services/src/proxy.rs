//! Forwarding one request to a service process over HTTP/1.1 (pooled keep-alive connections),
//! bodies streamed both ways, and protocol upgrades (WebSocket) spliced through.
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::netns::Dial;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::InFlight;

/// Errors while streaming a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request body on its way to a service.
pub type RequestBody = BoxBody<Bytes, BoxError>;

/// Keep-alive HTTP/1.1 connections to one process: idle ones wait here, a busy one comes back
/// when its response body is done.
///
/// Idle connections are kept per thread (in shards a thread picks once): a connection's reading
/// task runs on the thread that opened it, so a request that reuses it there is woken on its own
/// thread when the response arrives (the gateway serves each client connection on one thread).
#[derive(Debug, Default)]
pub(crate) struct Connections {
    idle: [Shard; SHARDS],
}

/// One shard of idle connections, alone on its cache lines so that threads using neighbouring
/// shards do not contend for them.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(std::sync::Mutex<Vec<SendRequest<RequestBody>>>);

/// Shards of idle connections per process; threads beyond this many share them.
const SHARDS: usize = 16;
/// Idle connections kept per shard.
const MAX_IDLE: usize = 128;

/// This thread's shard of idle connections.
fn shard() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// How a request to a process failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    #[error("the HTTP exchange failed")]
    Http(#[source] hyper::Error),
}

impl Connections {
    /// Sends a request on an idle connection (or a new one); also returns the connection, to be
    /// put back once the response body is done.
    pub(crate) async fn send(
        &self,
        dial: &Dial,
        mut req: http::Request<RequestBody>,
    ) -> Result<(http::Response<Incoming>, SendRequest<RequestBody>), SendError> {
        loop {
            let pooled = self.idle[shard()].0.lock().expect("connections").pop();
            let (mut sender, reused) = match pooled {
                Some(s) if !s.is_closed() => (s, true),
                Some(_) => continue,
                // Connecting is the rare path: boxed, so the common one's future stays small.
                None => (Box::pin(connect(dial)).await?, false),
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(SendError::Connect(std::io::Error::other("the connection closed at once")));
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, sender)),
                // The process closed a kept-alive connection before the request went out: retry.
                Err(mut e) if reused && e.message().is_some() => {
                    req = e.take_message().expect("checked");
                }
                Err(e) => return Err(SendError::Http(e.into_error())),
            }
        }
    }

    /// Closes every idle connection (before the process is told to stop, so that servers that
    /// wait for their connections to close can exit).
    pub(crate) fn close_idle(&self) {
        for idle in &self.idle {
            idle.0.lock().expect("connections").clear();
        }
    }

    /// Puts a connection whose exchange is complete back for reuse.
    pub(crate) fn put_back(&self, sender: SendRequest<RequestBody>) {
        if !sender.is_closed() {
            let mut idle = self.idle[shard()].0.lock().expect("connections");
            if idle.len() < MAX_IDLE {
                idle.push(sender);
            }
        }
    }
}

async fn connect(dial: &Dial) -> Result<SendRequest<RequestBody>, SendError> {
    let stream = dial.connect().await.map_err(SendError::Connect)?;
    let _ = stream.set_nodelay(true);
    // Flattened writes, as on the gateway's side (see `nimbus_gateway::serve`).
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(SendError::Http)?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Rewrites a request for the process on `port`; returns whether it asks for an upgrade.
pub(crate) fn prepare<B>(req: &mut http::Request<B>, port: u16, client: Option<SocketAddr>) -> bool {
    let upgrade = req.headers().get(header::UPGRADE).cloned();
    if !req.headers().contains_key(header::HOST) {
        let authority = req.uri().authority().map_or_else(|| format!("127.0.0.1:{port}"), ToString::to_string);
        if let Ok(v) = HeaderValue::from_str(&authority) {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    // Origin form (`/path?query`) on the connection to the process; `Host` stays the client's.
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let origin = req.uri().path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = http::Uri::from(origin);
    }
    *req.version_mut() = http::Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    forwarded_for(headers, client);
    headers.entry(X_FORWARDED_PROTO).or_insert(HeaderValue::from_static("http"));
    ask_upgrade(headers, upgrade)
}

/// Readies a request for another node running the service: the client's address joins
/// `X-Forwarded-For` (that node's process sees the client, not this node), the hop-by-hop
/// headers go, an upgrade is asked for again; returns whether it is one. `Host` and the URI
/// stay as the client sent them: the transport carries them.
pub(crate) fn prepare_forward<B>(req: &mut http::Request<B>, client: Option<SocketAddr>) -> bool {
    let upgrade = req.headers().get(header::UPGRADE).cloned();
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    forwarded_for(headers, client);
    ask_upgrade(headers, upgrade)
}

/// Adds the client's address to `X-Forwarded-For`.
fn forwarded_for(headers: &mut http::HeaderMap, client: Option<SocketAddr>) {
    if let Some(addr) = client {
        let forwarded = match headers.get(X_FORWARDED_FOR).map(HeaderValue::to_str) {
            Some(Ok(prior)) => HeaderValue::from_str(&format!("{prior}, {}", addr.ip())).ok(),
            Some(Err(_)) | None => ip_value(addr.ip()),
        };
        if let Some(v) = forwarded {
            headers.insert(X_FORWARDED_FOR, v);
        }
    }
}

/// Asks the next hop for the client's `upgrade` again (hop-by-hop headers were removed);
/// whether there is one.
fn ask_upgrade(headers: &mut http::HeaderMap, upgrade: Option<HeaderValue>) -> bool {
    match upgrade {
        Some(protocol) => {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol);
            true
        }
        None => false,
    }
}

/// `ip` as a header value. Every proxied request carries one, and a connection's requests (most
/// of a thread's, behind a load balancer) come from one address: each thread keeps the last one
/// it wrote, so a repeat costs a reference count instead of formatting and an allocation.
fn ip_value(ip: std::net::IpAddr) -> Option<HeaderValue> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(std::net::IpAddr, HeaderValue)>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| {
        if let Some((cached, value)) = last.as_ref()
            && *cached == ip
        {
            return Some(value.clone());
        }
        use std::io::Write as _;
        let mut text = [0u8; 45];
        let mut cursor = std::io::Cursor::new(&mut text[..]);
        write!(cursor, "{ip}").ok()?;
        let len = usize::try_from(cursor.position()).ok()?;
        let value = HeaderValue::from_bytes(&text[..len]).ok()?;
        *last = Some((ip, value.clone()));
        Some(value)
    })
}

/// Removes the hop-by-hop headers and those `Connection` names. Most messages have none, which
/// one pass over the names finds without hashing anything.
pub(crate) fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim).filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()))
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
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

/// A service's response body; counts as in flight until it is fully sent or dropped, then gives
/// its connection back for reuse if the exchange completed.
pub struct ServiceBody {
    inner: Incoming,
    connection: Option<SendRequest<RequestBody>>,
    /// The process it counts on (none for a response from another node).
    in_flight: Option<InFlight>,
}

impl ServiceBody {
    pub(crate) fn new(
        inner: Incoming,
        connection: Option<SendRequest<RequestBody>>,
        in_flight: Option<InFlight>,
    ) -> Self {
        Self { inner, connection, in_flight }
    }
}

impl Drop for ServiceBody {
    fn drop(&mut self) {
        if let Some(sender) = self.connection.take()
            && let Some(in_flight) = &self.in_flight
            && self.inner.is_end_stream()
        {
            in_flight.instance().connections.put_back(sender);
        }
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

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    #[test]
    fn a_client_address_is_written_as_itself_whether_or_not_it_repeats() {
        let (v4, v6): (IpAddr, IpAddr) = ("192.0.2.7".parse().unwrap(), "2001:db8::1".parse().unwrap());
        for ip in [v4, v4, v6, v6, v4] {
            assert_eq!(super::ip_value(ip).unwrap().to_str().unwrap(), ip.to_string());
        }
    }
}

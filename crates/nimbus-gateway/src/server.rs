//! The accept loop: hyper connections (HTTP/1.1 and HTTP/2) on a listener, each served on one of
//! the connection threads (`workers.rs`), and a graceful shutdown that stops accepting, lets
//! in-flight requests finish, then returns. A connection with no request in progress for the idle
//! timeout, or only ones whose uploads wait for the client, is closed (`idle.rs`). A listener
//! holds at most its configured number of connections: at the cap it stops accepting (new
//! connections wait in the kernel's backlog) until one closes, so one listener cannot take the
//! file descriptors another one needs; accept errors (out of file descriptors) back off. With
//! [`ServeConfig::tls`], each connection's TLS handshake runs in its own task on its connection
//! thread, never in the accept loop, under the idle timeout and inside the connection cap
//! (`tls.rs`).
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

use crate::GatewayBody;
use crate::idle::{Activity, BodyWatch, ClientBody, Tracked};

/// What the accept loop serves: one app ([`crate::Gateway`], or [`crate::Swap`] when its revision
/// is replaced while serving) or every app of a server ([`crate::Ingress`]).
pub trait Handler: Send + Sync + 'static {
    /// The body of its responses.
    type Body: http_body::Body<Data = bytes::Bytes, Error: Into<crate::body::BoxError>> + Send + Unpin + 'static;

    /// Serves one request. Never fails: every problem becomes a response.
    fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
        client: Option<std::net::SocketAddr>,
    ) -> impl Future<Output = http::Response<Self::Body>> + Send;
}

impl Handler for crate::Gateway {
    type Body = GatewayBody;

    fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
        client: Option<std::net::SocketAddr>,
    ) -> impl Future<Output = http::Response<GatewayBody>> + Send {
        crate::Gateway::handle(self, req, client)
    }
}

impl Handler for crate::Swap {
    type Body = GatewayBody;

    fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
        client: Option<std::net::SocketAddr>,
    ) -> impl Future<Output = http::Response<GatewayBody>> + Send {
        crate::Swap::handle(self, req, client)
    }
}

impl Handler for crate::Ingress {
    type Body = GatewayBody;

    fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
        client: Option<std::net::SocketAddr>,
    ) -> impl Future<Output = http::Response<GatewayBody>> + Send {
        crate::Ingress::handle(self, req, client)
    }
}

/// `req` with its body seen by its connection's idle watch: while a handler waits for the client
/// to send more of it, the connection counts as idle, so a client that stops sending an upload is
/// cut after the idle timeout like one that stops sending its headers. For handlers that read
/// bodies themselves (the gateway's own handler does this for bodies streaming to services).
pub fn watch_body(req: http::Request<hyper::body::Incoming>) -> http::Request<ClientBody<hyper::body::Incoming>> {
    let (mut parts, body) = req.into_parts();
    let watch = parts.extensions.remove::<BodyWatch>();
    http::Request::from_parts(parts, ClientBody::new(body, watch))
}

/// Settings of the accept loop.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// How long shutdown waits for in-flight requests before giving up on them.
    pub drain_timeout: Duration,
    /// How long a connection may go without a request in progress (a client that sends nothing,
    /// or its headers too slowly, or stops sending a body that streams to a service, or keeps an
    /// unused connection open) before it is closed; zero keeps connections open.
    pub idle_timeout: Duration,
    /// Most connections open at once on this listener (at least 1); beyond it, new connections
    /// wait in the kernel's backlog until one closes.
    pub max_connections: usize,
    /// Serve HTTPS only (ALPN `h2` and `http/1.1`; certificates picked by SNI, replaceable while
    /// serving); plaintext HTTP sent to the port is answered `400` with the `https://` URL.
    /// `None` serves plain HTTP/1.1 and h2c.
    pub tls: Option<nimbus_security::tls::ServerTls>,
    /// With TLS, adds `Strict-Transport-Security: max-age=SECS` to every response that does not
    /// set it (browsers then use HTTPS for the host for that long).
    pub hsts_max_age: Option<u64>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            tls: None,
            hsts_max_age: None,
        }
    }
}

/// Serves `gateway` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve<H: Handler, F, T>(
    listener: TcpListener,
    gateway: Arc<H>,
    shutdown: F,
    config: ServeConfig,
) -> std::io::Result<()>
where
    F: Future<Output = T>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // One buffer per write instead of `writev` of the head and the body's chunks: responses are
    // mostly small, and on loopback TCP the flattened write costs less CPU on both ends (measured
    // in bench/RESULTS.md, "Flattened writes"); large bodies pay one extra copy.
    builder.http1().writev(false);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let tls = config.tls.as_ref().map(|tls| Tls {
        acceptor: tls.acceptor(),
        port: listener.local_addr().map_or(443, |a| a.port()),
        hsts: config.hsts_max_age.map(crate::tls::hsts_value),
    });
    let mut backoff = Backoff::default();
    let mut cap_logged: Option<std::time::Instant> = None;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if cap_logged.is_none_or(|at| at.elapsed() >= Backoff::MAX) {
                    tracing::warn!(listener = %local, max_connections = config.max_connections, "connection cap reached; new connections wait until one closes");
                    cap_logged = Some(std::time::Instant::now());
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    _ = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    backoff.succeeded();
                    conn
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    let pause = backoff.failed(&e);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        _ = &mut shutdown => break,
                    }
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The connection moves to its thread's reactor; accepting stays here.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot hand the connection to a connection thread");
                continue;
            }
        };
        let conn = Connection { peer, slot, builder: builder.clone(), watcher: graceful.watcher(), tls: tls.clone() };
        spawn_connection(stream, conn, gateway.clone(), config.idle_timeout);
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; draining in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(config.drain_timeout) => {
            tracing::warn!(timeout = ?config.drain_timeout, "drain timeout reached; closing remaining connections");
        }
    }
    Ok(())
}

/// What a TLS listener's connections share.
#[derive(Clone)]
struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    /// The listener's port, for the `https://` URL told to plaintext clients.
    port: u16,
    /// `Strict-Transport-Security` for every response.
    hsts: Option<http::HeaderValue>,
}

/// One accepted connection and what serving it takes.
struct Connection {
    peer: std::net::SocketAddr,
    /// Its place under the listener's cap, held until it closes.
    slot: tokio::sync::OwnedSemaphorePermit,
    builder: auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    tls: Option<Tls>,
}

/// Serves one accepted connection on the next connection thread, holding its slot of the
/// listener's cap until it closes, and closing it after `idle_timeout` without activity (the
/// TLS handshake, when there is one, counts as inactivity).
fn spawn_connection<H: Handler>(
    stream: std::net::TcpStream,
    conn: Connection,
    gateway: Arc<H>,
    idle_timeout: Duration,
) {
    crate::workers::next().spawn(async move {
        let peer = conn.peer;
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => return tracing::debug!(%peer, error = %e, "cannot register the connection"),
        };
        let activity = Arc::new(Activity::default());
        let requests = activity.clone();
        let Connection { slot: _slot, builder, watcher, tls, .. } = conn;
        let mut served = tokio::spawn(async move {
            let Some(tls) = tls else {
                return serve_io(TokioIo::new(stream), peer, &builder, watcher, gateway, requests, None).await;
            };
            match crate::tls::opening(&stream).await {
                Ok(crate::tls::Opening::Tls) => {}
                Ok(crate::tls::Opening::PlainHttp) => return crate::tls::refuse_plaintext(stream, tls.port).await,
                Ok(crate::tls::Opening::Closed) | Err(_) => return,
            }
            match tls.acceptor.accept(stream).await {
                Ok(stream) => {
                    serve_io(TokioIo::new(stream), peer, &builder, watcher, gateway, requests, tls.hsts).await
                }
                Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            }
        });
        // The idle watch waits beside the connection's task: serving a request never polls it.
        tokio::select! {
            _ = &mut served => {}
            () = activity.idle(idle_timeout) => {
                served.abort();
                tracing::debug!(%peer, ?idle_timeout, "closed an idle connection");
            }
        }
    });
}

/// Serves HTTP/1.1 or HTTP/2 on `io` (a TCP stream or a TLS one) until it closes.
async fn serve_io<H, I>(
    io: I,
    peer: std::net::SocketAddr,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    gateway: Arc<H>,
    requests: Arc<Activity>,
    hsts: Option<http::HeaderValue>,
) where
    H: Handler,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let (gateway, mut request, hsts) = (gateway.clone(), requests.start(), hsts.clone());
        // A body that streams on lets the idle watch see it wait for the client.
        if !hyper::body::Body::is_end_stream(req.body()) {
            req.extensions_mut().insert(request.watch_body());
        }
        async move {
            let mut resp = gateway.handle(req, Some(peer)).await;
            if let Some(hsts) = hsts {
                resp.headers_mut().entry(http::header::STRICT_TRANSPORT_SECURITY).or_insert(hsts);
            }
            Ok::<_, Infallible>(resp.map(|b| Tracked::new(b, request)))
        }
    });
    let conn = builder.serve_connection_with_upgrades(io, service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// How long the accept loop pauses after failed accepts: 10 ms after the first, doubling up to
/// 1 s while they keep failing. The first failure of a run is logged, then one line per second
/// of failures at most, so a process out of file descriptors neither spins nor floods its log.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    logged: Option<std::time::Instant>,
    unlogged: u64,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn failed(&mut self, error: &std::io::Error) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let now = std::time::Instant::now();
        if self.logged.is_none_or(|at| now.duration_since(at) >= Self::MAX) {
            tracing::warn!(%error, suppressed = self.unlogged, "accept failed; backing off");
            self.logged = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        self.pause()
    }

    fn pause(&self) -> Duration {
        Self::FIRST.saturating_mul(1 << self.failures.saturating_sub(1).min(10)).min(Self::MAX)
    }

    fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "accepting again");
        }
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_up_to_a_second_and_log_sparingly() {
        let mut backoff = Backoff::default();
        let e = std::io::Error::from_raw_os_error(24);
        let pauses: Vec<_> = (0..10).map(|_| backoff.failed(&e).as_millis()).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert_eq!(backoff.unlogged, 9, "one line for a burst of failures");
        backoff.succeeded();
        assert_eq!(backoff.failed(&e).as_millis(), 10);
        assert_eq!(backoff.unlogged, 0);
    }
}

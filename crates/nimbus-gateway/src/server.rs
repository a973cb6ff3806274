//! The accept loop: hyper connections (HTTP/1.1 and HTTP/2) on a listener, each served on one of
//! the connection threads (`workers.rs`), and a graceful shutdown that stops accepting, lets
//! in-flight requests finish, then returns. A connection with no request in progress for the idle
//! timeout, or only ones whose uploads wait for the client, is closed (`idle.rs`).
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

use crate::GatewayBody;
use crate::idle::{Activity, Tracked};

/// What the accept loop serves: one app ([`crate::Gateway`]) or every app of a server
/// ([`crate::Ingress`]).
pub trait Handler: Send + Sync + 'static {
    /// Serves one request. Never fails: every problem becomes a response.
    fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
        client: Option<std::net::SocketAddr>,
    ) -> impl Future<Output = http::Response<GatewayBody>> + Send;
}

impl Handler for crate::Gateway {
    fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
        client: Option<std::net::SocketAddr>,
    ) -> impl Future<Output = http::Response<GatewayBody>> + Send {
        crate::Gateway::handle(self, req, client)
    }
}

impl Handler for crate::Ingress {
    fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
        client: Option<std::net::SocketAddr>,
    ) -> impl Future<Output = http::Response<GatewayBody>> + Send {
        crate::Ingress::handle(self, req, client)
    }
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
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self { drain_timeout: Duration::from_secs(30), idle_timeout: Duration::from_secs(30) }
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
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
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
        let (builder, watcher, gateway) = (builder.clone(), graceful.watcher(), gateway.clone());
        let idle_timeout = config.idle_timeout;
        crate::workers::next().spawn(async move {
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(e) => return tracing::debug!(%peer, error = %e, "cannot register the connection"),
            };
            let activity = Arc::new(Activity::default());
            let requests = activity.clone();
            let mut served = tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                    let (gateway, mut request) = (gateway.clone(), requests.start());
                    // A body that streams on lets the idle watch see it wait for the client.
                    if !hyper::body::Body::is_end_stream(req.body()) {
                        req.extensions_mut().insert(request.watch_body());
                    }
                    async move {
                        Ok::<_, Infallible>(gateway.handle(req, Some(peer)).await.map(|b| Tracked::new(b, request)))
                    }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
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

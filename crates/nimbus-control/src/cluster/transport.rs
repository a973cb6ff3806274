//! The sending end of the inter-node transport: connections to the other nodes over mutual TLS
//! with the cluster CA ([`PeerTls`]). A few HTTP/2 connections per peer carry every request to
//! it (kept alive with pings, opened again when one breaks; several, so that long streams on
//! one do not hold up the rest); a WebSocket upgrade gets an HTTP/1.1 connection of its own. A
//! peer that could not be reached is not tried again for a moment, so requests meant for a node
//! that just died do not each wait for a connect timeout. When the node's certificate is
//! renewed (perhaps from a new cluster CA), new requests go over new connections; the old ones
//! finish the requests they carry and close. What goes over it is in
//! [`super::forward`] (services' requests) and [`super::remote`] (actor calls, workflow
//! wake-ups).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use nimbus_security::tls::peer::PeerTls;
use nimbus_services::RequestBody;

/// How long connecting to a peer (TCP and TLS) may take before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a peer that could not be reached is not tried again.
const DOWN_FOR: Duration = Duration::from_secs(2);
/// HTTP/2 connections kept per peer.
const CONNECTIONS_PER_PEER: usize = 4;

/// Connections to the other nodes.
#[derive(Debug)]
pub struct Transport {
    tls: Arc<PeerTls>,
    /// The HTTP/1.1-only configuration, for upgrades.
    h1: Arc<rustls::ClientConfig>,
    peers: Mutex<HashMap<String, Peer>>,
}

/// What is known of one peer address.
#[derive(Debug, Default)]
struct Peer {
    /// Open connections, with the generation of the certificate they were opened with.
    connections: Vec<(u64, SendRequest<RequestBody>)>,
    /// When it last could not be reached.
    down_since: Option<Instant>,
}

/// How sending a request to a peer failed.
#[derive(Debug)]
pub(crate) enum Unsent {
    /// It was not sent (the peer could not be reached): the request, to send elsewhere.
    Back(Box<http::Request<RequestBody>>),
    /// It was sent and the exchange failed (the peer died or broke the connection).
    Failed(hyper::Error),
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
        Self { tls, h1: Arc::new(h1), peers: Mutex::default() }
    }

    /// The node's TLS (to renew its certificate).
    pub fn tls(&self) -> &Arc<PeerTls> {
        &self.tls
    }

    /// Sends `req` to the node at `addr`: over a pooled HTTP/2 connection, or an upgrade over
    /// an HTTP/1.1 one of its own.
    pub(crate) async fn send(
        &self,
        addr: &str,
        mut req: http::Request<RequestBody>,
    ) -> Result<http::Response<Incoming>, Unsent> {
        if self.down(addr) {
            return Err(Unsent::Back(Box::new(req)));
        }
        if req.headers().contains_key(header::UPGRADE) {
            *req.version_mut() = http::Version::HTTP_11;
            return self.h1(addr, req).await;
        }
        let mut sender = match self.h2(addr).await {
            Ok(sender) => sender,
            Err(e) => {
                tracing::debug!(error = %e, "peer unreachable");
                self.mark_down(addr);
                return Err(Unsent::Back(Box::new(req)));
            }
        };
        *req.version_mut() = http::Version::HTTP_2;
        if sender.ready().await.is_err() {
            self.forget(addr);
            return Err(Unsent::Back(Box::new(req)));
        }
        sender.try_send_request(req).await.map_err(|mut e| match e.take_message() {
            Some(req) => {
                self.forget(addr);
                Unsent::Back(Box::new(req))
            }
            None => Unsent::Failed(e.into_error()),
        })
    }

    fn down(&self, addr: &str) -> bool {
        let peers = self.peers.lock().expect("peers");
        peers.get(addr).and_then(|p| p.down_since).is_some_and(|at| at.elapsed() < DOWN_FOR)
    }

    fn mark_down(&self, addr: &str) {
        let mut peers = self.peers.lock().expect("peers");
        let peer = peers.entry(addr.to_string()).or_default();
        peer.down_since = Some(Instant::now());
        peer.connections.clear();
    }

    /// Drops the broken connections from the pool.
    fn forget(&self, addr: &str) {
        if let Some(peer) = self.peers.lock().expect("peers").get_mut(addr) {
            peer.connections.retain(|(_, c)| !c.is_closed());
        }
    }

    /// A pooled HTTP/2 connection to `addr` (a random one of its few), opened if there are
    /// fewer, or it broke, or the node's certificate was renewed since (dropped from the pool,
    /// a connection closes once its requests are done).
    async fn h2(&self, addr: &str) -> Result<SendRequest<RequestBody>, Unreachable> {
        let generation = self.tls.generation();
        {
            let mut peers = self.peers.lock().expect("peers");
            let peer = peers.entry(addr.to_string()).or_default();
            peer.connections.retain(|(g, c)| *g == generation && !c.is_closed());
            if peer.connections.len() >= CONNECTIONS_PER_PEER {
                return Ok(peer.connections[fastrand::usize(..peer.connections.len())].1.clone());
            }
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
        let mut peers = self.peers.lock().expect("peers");
        let peer = peers.entry(addr.to_string()).or_default();
        peer.down_since = None;
        peer.connections.push((generation, sender.clone()));
        Ok(sender)
    }

    /// Sends `req` on a connection of its own over HTTP/1.1 (an upgrade keeps its connection).
    async fn h1(&self, addr: &str, req: http::Request<RequestBody>) -> Result<http::Response<Incoming>, Unsent> {
        let Ok(stream) = self.tls_stream(addr, self.h1.clone()).await else {
            self.mark_down(addr);
            return Err(Unsent::Back(Box::new(req)));
        };
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
            return Err(Unsent::Back(Box::new(req)));
        };
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        sender.try_send_request(req).await.map_err(|mut e| match e.take_message() {
            Some(req) => Unsent::Back(Box::new(req)),
            None => Unsent::Failed(e.into_error()),
        })
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
}

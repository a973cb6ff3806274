//! TLS of the inter-node transport of a cluster: mutual, and only with the cluster CA. Every
//! node holds a short-lived certificate of its node identity (`spiffe://DOMAIN/node/NAME`, and
//! [`PEER_SERVER_NAME`] for the handshake) signed by the cluster CA, a [`LocalCa`] whose
//! directory the operator gives every node (`--cluster-ca`). A node's peer listener requires a
//! client certificate chaining to that CA, and a node connecting to a peer checks the peer's
//! the same way — so a process without the CA's key (a service, a client on the network) can
//! neither send a node forwarded requests nor pose as one. [`PeerTls::renew`] replaces the
//! node's certificate; open connections keep theirs, new ones use the new one.
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use super::ca::LocalCa;
use super::{Certificates, ServerTls, TlsError};
use crate::identity::{TrustDomain, WorkloadId};

/// The name every node's certificate carries and every connecting node checks: each node
/// certificate is good for any node (the CA issues them to nodes only).
pub const PEER_SERVER_NAME: &str = "peer.nodes.nimbus.internal";

/// A node's TLS for its peers: the server side of its peer listener and the client side of its
/// connections to other nodes, sharing one renewable certificate.
pub struct PeerTls {
    ca: LocalCa,
    id: WorkloadId,
    ttl: Duration,
    key: Arc<ArcSwap<CertifiedKey>>,
    server: ServerTls,
    client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").field("id", &self.id).field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

/// Presents the node's current certificate to the peers it connects to.
#[derive(Debug)]
struct Current(Arc<ArcSwap<CertifiedKey>>);

impl ResolvesClientCert for Current {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl PeerTls {
    /// Node `node`'s TLS under `domain`, with a first certificate from the cluster CA `ca`, valid
    /// for `ttl` (renew it before: [`PeerTls::renew`]). ALPN offers `h2` and `http/1.1`.
    pub fn new(ca: LocalCa, domain: &TrustDomain, node: &str, ttl: Duration) -> Result<Self, TlsError> {
        let id = domain.node(node);
        let first = ca.issue_svid(&id, Some(PEER_SERVER_NAME), ttl)?.certified_key()?;
        let mut roots = rustls::RootCertStore::empty();
        let root = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes())
            .map_err(|e| TlsError::Certificate { path: ca.cert_path(), source: Some(e) })?;
        roots.add(root).map_err(TlsError::Config)?;
        let roots = Arc::new(roots);
        let key = Arc::new(ArcSwap::new(first.clone()));
        let server = ServerTls::mutual(Certificates::new(first), roots.clone())?;
        let mut client = rustls::ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::new(Current(key.clone())));
        client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self { ca, id, ttl, key, server, client: Arc::new(client) })
    }

    /// The node's identity.
    pub fn id(&self) -> &WorkloadId {
        &self.id
    }

    /// How long each certificate is valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A fresh certificate for the handshakes from now on, both ways.
    pub fn renew(&self) -> Result<(), TlsError> {
        let next = self.ca.issue_svid(&self.id, Some(PEER_SERVER_NAME), self.ttl)?.certified_key()?;
        self.server.replace(Certificates::new(next.clone()));
        self.key.store(next);
        Ok(())
    }

    /// The peer listener's TLS (client certificates required).
    pub fn server(&self) -> ServerTls {
        self.server.clone()
    }

    /// The configuration of connections to peers.
    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }

    /// The name to connect to a peer under.
    pub fn server_name() -> ServerName<'static> {
        ServerName::try_from(PEER_SERVER_NAME).expect("a DNS name")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Handshakes `client` with a listener using `server`; whether it succeeded on both ends.
    async fn handshake(server: ServerTls, client: Arc<rustls::ClientConfig>) -> bool {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            server.acceptor().accept(tcp).await.is_ok()
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let connected = tokio_rustls::TlsConnector::from(client).connect(PeerTls::server_name(), tcp).await;
        // TLS 1.3: the client is done before the server has checked its certificate.
        let accepted = accept.await.unwrap();
        if let Ok(mut conn) = connected {
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut conn).await;
        }
        accepted
    }

    #[tokio::test]
    async fn nodes_of_one_cluster_ca_connect_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let domain = TrustDomain::default();
        let ca = || LocalCa::open_or_create(&dir.path().join("cluster")).unwrap();
        let a = PeerTls::new(ca(), &domain, "node-a", Duration::from_secs(3600)).unwrap();
        let b = PeerTls::new(ca(), &domain, "node-b", Duration::from_secs(3600)).unwrap();
        assert_eq!(a.id().as_str(), "spiffe://nimbus.local/node/node-a");
        assert!(handshake(a.server(), b.client()).await, "b connects to a");
        b.renew().unwrap();
        assert!(handshake(a.server(), b.client()).await, "with its renewed certificate too");

        // A node of another cluster CA: refused both ways.
        let other = LocalCa::open_or_create(&dir.path().join("other")).unwrap();
        let stranger = PeerTls::new(other, &domain, "node-x", Duration::from_secs(3600)).unwrap();
        assert!(!handshake(a.server(), stranger.client()).await, "a refuses a stranger's certificate");
        assert!(!handshake(stranger.server(), a.client()).await, "a does not talk to a stranger");

        // A client with no certificate at all.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca().cert_pem().as_bytes()).unwrap()).unwrap();
        let anonymous = rustls::ClientConfig::builder_with_provider(super::super::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        assert!(!handshake(a.server(), Arc::new(anonymous)).await, "a client must present a certificate");
    }
}

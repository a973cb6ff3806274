//! TLS of the inter-node transport of a cluster: mutual, and only with the cluster CA. Every
//! node holds a short-lived certificate of its node identity (`spiffe://DOMAIN/node/NAME`, and
//! [`PEER_SERVER_NAME`] for the handshake) signed by the cluster CA, whose directory the
//! operator gives every node (`--cluster-ca`). A node's peer listener requires a client
//! certificate chaining to that CA, and a node connecting to a peer checks the peer's the same
//! way — so a process without the CA's key (a service, a client on the network) can neither
//! send a node forwarded requests nor pose as one. [`PeerTls::renew`] replaces the node's
//! certificate, and [`PeerTls::reload`] reads the directory again — the CA itself is rotated
//! there (see [`super::rotation`]). Open connections keep their certificates; new ones use the
//! new, and [`PeerTls::generation`] tells the connection pools when to open new ones.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::ResolvesClientCert;
use rustls::client::danger::ServerCertVerifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::ca::{CA_CERT, CA_KEY, LocalCa};
use super::rotation::{NEXT_CERT, PREVIOUS_CERT};
use super::trust::Trust;
use super::{Certificates, ServerTls, TlsError};
use crate::identity::{TrustDomain, WorkloadId};

/// The name every node's certificate carries and every connecting node checks: each node
/// certificate is good for any node (the CA issues them to nodes only).
pub const PEER_SERVER_NAME: &str = "peer.nodes.nimbus.internal";

/// A node's TLS for its peers: the server side of its peer listener and the client side of its
/// connections to other nodes, sharing one renewable certificate and one set of trusted CAs.
pub struct PeerTls {
    id: WorkloadId,
    ttl: Duration,
    /// The cluster CA's directory, as last read.
    dir: Mutex<CaDir>,
    trust: Arc<Trust>,
    key: Arc<ArcSwap<CertifiedKey>>,
    generation: AtomicU64,
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

/// The files of the cluster CA's directory that decide what a node signs with and trusts.
const FILES: [&str; 4] = [CA_CERT, CA_KEY, NEXT_CERT, PREVIOUS_CERT];

/// What a node read from the cluster CA's directory.
struct CaDir {
    path: PathBuf,
    /// The bytes of [`FILES`] (absent ones `None`), to see a change.
    files: Vec<Option<Vec<u8>>>,
    /// The CA that signs.
    ca: LocalCa,
    /// Its certificate and the next and previous ones present.
    roots: rustls::RootCertStore,
}

fn snapshot(dir: &Path) -> Vec<Option<Vec<u8>>> {
    FILES.iter().map(|f| std::fs::read(dir.join(f)).ok()).collect()
}

impl CaDir {
    /// Reads `path`; refused if a file is unreadable, or if the CA's key does not sign
    /// certificates the roots verify (a key put in place without its certificate).
    fn read(path: &Path) -> Result<Self, TlsError> {
        let files = snapshot(path);
        let ca = LocalCa::open(path)?;
        let mut roots = rustls::RootCertStore::empty();
        for name in [CA_CERT, NEXT_CERT, PREVIOUS_CERT] {
            let file = path.join(name);
            let pem = match std::fs::read(&file) {
                Ok(pem) => pem,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                // Unreadable is not absent: trusting less than the operator put there would
                // refuse peers the next step relies on.
                Err(source) => return Err(TlsError::Read { path: file, source }),
            };
            let cert = CertificateDer::from_pem_slice(&pem)
                .map_err(|e| TlsError::Certificate { path: file.clone(), source: Some(e) })?;
            roots.add(cert).map_err(TlsError::Config)?;
        }
        let dir = Self { path: path.into(), files, ca, roots };
        dir.check_signs()?;
        Ok(dir)
    }

    fn check_signs(&self) -> Result<(), TlsError> {
        let id = TrustDomain::default().node("check");
        let leaf = self.ca.issue_svid(&id, Some(PEER_SERVER_NAME), Duration::from_secs(120))?.certified_key()?;
        let verifier = Trust::new(self.roots.clone())?;
        let name = PeerTls::server_name();
        verifier
            .verify_server_cert(&leaf.cert[0], &leaf.cert[1..], &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|source| TlsError::Unsigned { dir: self.path.clone(), source })
    }

    fn issue(&self, id: &WorkloadId, ttl: Duration) -> Result<Arc<CertifiedKey>, TlsError> {
        self.ca.issue_svid(id, Some(PEER_SERVER_NAME), ttl)?.certified_key()
    }
}

impl PeerTls {
    /// Node `node`'s TLS under `domain` with the cluster CA in `dir` (`ca.pem`, `ca.key`), and
    /// a first certificate from it, valid for `ttl` (renew it before: [`PeerTls::renew`]).
    /// ALPN offers `h2` and `http/1.1`.
    pub fn open(dir: &Path, domain: &TrustDomain, node: &str, ttl: Duration) -> Result<Self, TlsError> {
        let id = domain.node(node);
        let read = CaDir::read(dir)?;
        let first = read.issue(&id, ttl)?;
        let trust = Trust::new(read.roots.clone())?;
        let key = Arc::new(ArcSwap::new(first.clone()));
        let server = ServerTls::mutual(Certificates::new(first), trust.clone())?;
        let mut client = rustls::ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(trust.clone())
            .with_client_cert_resolver(Arc::new(Current(key.clone())));
        client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let client = Arc::new(client);
        let generation = AtomicU64::new(0);
        Ok(Self { id, ttl, dir: Mutex::new(read), trust, key, generation, server, client })
    }

    /// The node's identity.
    pub fn id(&self) -> &WorkloadId {
        &self.id
    }

    /// How long each certificate is valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How many times the certificate was renewed: connections opened before a change hold an
    /// older one (perhaps from a CA being retired), so pools replace them.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A fresh certificate for the handshakes from now on, both ways.
    pub fn renew(&self) -> Result<(), TlsError> {
        let next = self.dir.lock().expect("cluster CA").issue(&self.id, self.ttl)?;
        self.server.replace(Certificates::new(next.clone()));
        self.key.store(next);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Reads the cluster CA's directory again. If it changed (a rotation step), trusts what it
    /// holds now and renews the certificate from its CA: `Ok(true)`. A directory that cannot
    /// be read or caught mid-step is an error and changes nothing.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let path = {
            let dir = self.dir.lock().expect("cluster CA");
            if snapshot(&dir.path) == dir.files {
                return Ok(false);
            }
            dir.path.clone()
        };
        let read = CaDir::read(&path)?;
        self.trust.replace(read.roots.clone())?;
        *self.dir.lock().expect("cluster CA") = read;
        self.renew()?;
        Ok(true)
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

    fn open(dir: &Path, node: &str) -> PeerTls {
        PeerTls::open(dir, &TrustDomain::default(), node, Duration::from_secs(3600)).unwrap()
    }

    #[tokio::test]
    async fn nodes_of_one_cluster_ca_connect_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = dir.path().join("cluster");
        let ca = LocalCa::open_or_create(&cluster).unwrap();
        let (a, b) = (open(&cluster, "node-a"), open(&cluster, "node-b"));
        assert_eq!(a.id().as_str(), "spiffe://nimbus.local/node/node-a");
        assert!(handshake(a.server(), b.client()).await, "b connects to a");
        b.renew().unwrap();
        assert_eq!(b.generation(), 1);
        assert!(handshake(a.server(), b.client()).await, "with its renewed certificate too");

        // A node of another cluster CA: refused both ways.
        let other = dir.path().join("other");
        LocalCa::open_or_create(&other).unwrap();
        let stranger = open(&other, "node-x");
        assert!(!handshake(a.server(), stranger.client()).await, "a refuses a stranger's certificate");
        assert!(!handshake(stranger.server(), a.client()).await, "a does not talk to a stranger");

        // A client with no certificate at all.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap()).unwrap();
        let anonymous = rustls::ClientConfig::builder_with_provider(super::super::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        assert!(!handshake(a.server(), Arc::new(anonymous)).await, "a client must present a certificate");
    }

    fn copy_dir(from: &Path, to: &Path) {
        let _ = std::fs::remove_dir_all(to);
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap().flatten() {
            if entry.path().is_file() {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }

    /// Each node has its own copy of the directory, updated one after the other, as an operator
    /// copying it around would: at every moment of the three steps every pair still connects,
    /// and once the rotation is finished the old CA's certificates are refused.
    #[tokio::test]
    async fn the_cluster_ca_rotates_in_three_steps_without_a_refused_handshake() {
        use super::super::rotation::{Rotation, rotate};
        let dir = tempfile::tempdir().unwrap();
        let (da, db, stale) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("stale"));
        LocalCa::open_or_create(&da).unwrap();
        copy_dir(&da, &db);
        copy_dir(&da, &stale);
        let (a, b, old) = (open(&da, "node-a"), open(&db, "node-b"), open(&stale, "node-old"));
        let both_ways = |x: &PeerTls, y: &PeerTls| {
            let (xs, xc, ys, yc) = (x.server(), x.client(), y.server(), y.client());
            async move { handshake(xs, yc).await && handshake(ys, xc).await }
        };
        assert!(!a.reload().unwrap(), "nothing changed");

        for step in [Rotation::Stage, Rotation::Activate, Rotation::Finish] {
            rotate(&da, step).unwrap();
            assert!(a.reload().unwrap(), "{step:?}: a reads the change");
            assert!(both_ways(&a, &b).await, "{step:?}: a updated, b not yet");
            copy_dir(&da, &db);
            assert!(b.reload().unwrap(), "{step:?}: b reads the change");
            assert!(both_ways(&a, &b).await, "{step:?}: both updated");
            if step == Rotation::Activate {
                assert!(!handshake(old.server(), a.client()).await, "a node that skipped the stage cannot check a");
            }
        }
        assert_eq!(a.generation(), 3, "one renewal per step");
        assert!(!handshake(a.server(), old.client()).await, "the old CA's certificates are refused at the end");
        assert!(!handshake(old.server(), b.client()).await, "both ways");
    }

    #[test]
    fn a_key_signing_for_no_trusted_certificate_is_refused_and_changes_nothing() {
        use super::super::rotation::{NEXT_KEY, Rotation, rotate};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca");
        LocalCa::open_or_create(&path).unwrap();
        let a = open(&path, "node-a");
        rotate(&path, Rotation::Stage).unwrap();
        a.reload().unwrap();
        // The next key in place of `ca.key` without its certificate anywhere (copied by hand,
        // half a directory): what the key signs verifies against no root.
        std::fs::rename(path.join(NEXT_KEY), path.join(CA_KEY)).unwrap();
        std::fs::remove_file(path.join(NEXT_CERT)).unwrap();
        let err = a.reload().unwrap_err();
        assert!(matches!(err, TlsError::Unsigned { .. }), "{err}");
        assert_eq!(a.generation(), 1, "no certificate issued from it");
    }
}

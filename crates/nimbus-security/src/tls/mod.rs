//! TLS for the listeners: a server configuration (rustls with the `ring` provider, ALPN `h2` and
//! `http/1.1`) whose certificates are picked per handshake by SNI — a certificate per host, else
//! the default one — from a set that can be swapped while the server runs ([`ServerTls::replace`]):
//! new handshakes use the new set, connections already open keep the certificate they started
//! with. The set comes from PEM files, reloaded when they change ([`files`]), or from a local CA
//! created once under the data directory ([`ca`]).
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub mod ca;
pub mod files;
pub mod peer;
pub mod rotation;
mod trust;

/// Why a TLS configuration could not be built or a certificate could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A certificate file is not PEM or holds no certificate.
    #[error("{} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// The PEM error, if the file did not parse.
        #[source]
        source: Option<rustls_pki_types::pem::Error>,
    },
    /// A key file is not a PEM private key.
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// The PEM error.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The key is of a type rustls cannot sign with, or is not the certificate's.
    #[error("the key in {} cannot be used with the certificate in {}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// The local CA or one of its certificates could not be generated or parsed.
    #[error("cannot {what}")]
    Generate {
        /// What was being done.
        what: &'static str,
        /// What rcgen said.
        #[source]
        source: rcgen::Error,
    },
    /// rustls refused the configuration.
    #[error("cannot build the TLS configuration")]
    Config(#[source] rustls::Error),
    /// A step of a rotation of the cluster CA is out of order or the directory is not one.
    #[error("cannot rotate the cluster CA: {0}")]
    Rotation(String),
    /// The cluster CA's key does not sign certificates its own certificate verifies.
    #[error("the cluster CA's key in {} does not belong to its certificate (a rotation in progress?)", dir.display())]
    Unsigned {
        /// The CA's directory.
        dir: PathBuf,
        /// Why a certificate it signed does not verify.
        #[source]
        source: rustls::Error,
    },
}

/// The certificates a listener presents: one per host name (exact, or `*.example.com` for one
/// label below it), and a default for every other name and for clients that send no SNI.
#[derive(Debug, Clone)]
pub struct Certificates {
    default: Arc<CertifiedKey>,
    hosts: HashMap<String, Arc<CertifiedKey>>,
}

impl Certificates {
    /// Only the default certificate.
    pub fn new(default: Arc<CertifiedKey>) -> Self {
        Self { default, hosts: HashMap::new() }
    }

    /// Adds the certificate for `host` (case-insensitive; `*.example.com` covers one label).
    pub fn with_host(mut self, host: &str, key: Arc<CertifiedKey>) -> Self {
        self.hosts.insert(host.to_ascii_lowercase(), key);
        self
    }

    /// The certificate presented for the SNI `name`.
    pub fn for_name(&self, name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = name.map(str::to_ascii_lowercase) else { return &self.default };
        let wildcard = || name.split_once('.').and_then(|(_, parent)| self.hosts.get(&format!("*.{parent}")));
        self.hosts.get(&name).or_else(wildcard).unwrap_or(&self.default)
    }
}

/// The TLS side of a listener: a rustls server configuration whose certificates can be replaced
/// while it serves. Cheap to clone; clones share the certificates.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    certs: Arc<ArcSwap<Certificates>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("hosts", &self.certs.load().hosts.keys().collect::<Vec<_>>()).finish()
    }
}

/// Picks the certificate of each handshake from the current set.
#[derive(Debug)]
struct BySni(Arc<ArcSwap<Certificates>>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().for_name(hello.server_name()).clone())
    }
}

impl ServerTls {
    /// A configuration presenting `certs`, offering HTTP/2 and HTTP/1.1 by ALPN.
    pub fn new(certs: Certificates) -> Result<Self, TlsError> {
        Self::build(certs, None)
    }

    /// Like [`ServerTls::new`], and every client must present a certificate that `clients`
    /// accepts: a handshake without one, or with another, fails.
    pub fn mutual(
        certs: Certificates,
        clients: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    ) -> Result<Self, TlsError> {
        Self::build(certs, Some(clients))
    }

    fn build(
        certs: Certificates,
        clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    ) -> Result<Self, TlsError> {
        let certs = Arc::new(ArcSwap::from_pointee(certs));
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?;
        let builder = match clients {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(BySni(certs.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self { config: Arc::new(config), certs })
    }

    /// Presents `certs` from the next handshake on; open connections keep theirs.
    pub fn replace(&self, certs: Certificates) {
        self.certs.store(Arc::new(certs));
    }

    /// The acceptor that runs a connection's handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

/// rustls's `ring` provider (the only one built).
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key, from PEM text; `cert` and `key` name their origin in errors.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate { path: cert.into(), source: Some(e) })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate { path: cert.into(), source: None });
    }
    let private =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::Key { path: key.into(), source })?;
    CertifiedKey::from_der(chain, private, &provider()).map(Arc::new).map_err(|source| TlsError::Mismatch {
        cert: cert.into(),
        key: key.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::HandshakeKind;
    use rustls_pki_types::ServerName;
    use rustls_pki_types::pem::PemObject;

    use super::{Certificates, ServerTls, ca::LocalCa};

    /// A returning client resumes from the ticket of its first handshake instead of a full one.
    #[tokio::test]
    async fn a_returning_client_resumes_its_session() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::open_or_create(dir.path()).unwrap();
        let leaf = ca.issue(&["localhost".into()]).unwrap();
        let tls = ServerTls::new(Certificates::new(leaf.certified_key().unwrap())).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls.acceptor();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut conn) = acceptor.accept(tcp).await {
                        let _ = tokio::io::AsyncWriteExt::write_all(&mut conn, b"x").await;
                    }
                });
            }
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls_pki_types::CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut conn = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
            // Reading the server's first byte also takes in the ticket it sent after the handshake.
            let mut byte = [0u8; 1];
            tokio::io::AsyncReadExt::read_exact(&mut conn, &mut byte).await.unwrap();
            kinds.push(conn.get_ref().1.handshake_kind());
        }
        assert_eq!(kinds, [Some(HandshakeKind::Full), Some(HandshakeKind::Resumed)]);
    }
}

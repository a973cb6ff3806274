//! The CA certificates a node of a cluster trusts, replaceable while it runs: rustls fixes a
//! configuration's verifiers when it is built, so the peer listener and the connections to peers
//! are given [`Trust`], which verifies with whatever set of roots it holds at each handshake.
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::{TlsError, provider};

/// Both verifiers of one set of roots.
#[derive(Debug)]
struct Verifiers {
    clients: Arc<dyn ClientCertVerifier>,
    servers: Arc<WebPkiServerVerifier>,
}

/// Certificates chaining to the current roots, checked on both ends of a connection. The
/// handshake signatures are checked with the provider's algorithms, whatever the roots.
#[derive(Debug)]
pub(crate) struct Trust {
    current: ArcSwap<Verifiers>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Trust {
    /// Trusts `roots`.
    pub(crate) fn new(roots: rustls::RootCertStore) -> Result<Arc<Self>, TlsError> {
        let current = ArcSwap::from_pointee(verifiers(roots)?);
        Ok(Arc::new(Self { current, algorithms: provider().signature_verification_algorithms }))
    }

    /// Trusts `roots` from the next handshake on (open connections are not checked again).
    pub(crate) fn replace(&self, roots: rustls::RootCertStore) -> Result<(), TlsError> {
        self.current.store(Arc::new(verifiers(roots)?));
        Ok(())
    }

    fn tls12(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Signature {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn tls13(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Signature {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

type Signature = Result<HandshakeSignatureValid, rustls::Error>;

fn verifiers(roots: rustls::RootCertStore) -> Result<Verifiers, TlsError> {
    let roots = Arc::new(roots);
    let config = |e: &dyn std::fmt::Display| TlsError::Config(rustls::Error::General(e.to_string()));
    let clients =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider()).build().map_err(|e| config(&e))?;
    let servers = WebPkiServerVerifier::builder_with_provider(roots, provider()).build().map_err(|e| config(&e))?;
    Ok(Verifiers { clients, servers })
}

impl ClientCertVerifier for Trust {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: a node has one certificate to present anyway.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current.load().clients.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Signature {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Signature {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for Trust {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.current.load().servers.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Signature {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Signature {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

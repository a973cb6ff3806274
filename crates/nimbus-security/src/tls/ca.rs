//! The local CA of `--tls auto`: an ECDSA P-256 root created once in a directory (`ca.pem`, and
//! `ca.key` readable by its owner only) that signs a leaf certificate for the names a server
//! answers on (`localhost`, `127.0.0.1`, `::1`, its listen hosts) each time it starts. Clients
//! trust the root alone (`curl --cacert ca.pem`, `nimbus login --cacert ca.pem`); the leaves are
//! never stored. The same kind of CA, in a directory of its own, issues the short-lived
//! certificates of workload identities ([`LocalCa::issue_workload`]).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

use super::{TlsError, certified_key};
use crate::identity::WorkloadId;

/// The root's file in the CA's directory.
pub const CA_CERT: &str = "ca.pem";
/// The root's private key in the CA's directory (mode 0600).
pub const CA_KEY: &str = "ca.key";

/// A CA whose root lives in a directory.
pub struct LocalCa {
    dir: PathBuf,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// A leaf certificate and its key, as PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate (the leaf alone: clients hold the root).
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// The root's subject and usages; the same on every start, so a stored root key signs leaves
/// whose issuer and authority key id match the stored root certificate.
fn root_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "Nimbus local CA");
    params.distinguished_name.push(DnType::OrganizationName, "Nimbus");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

fn generate(what: &'static str) -> impl FnOnce(rcgen::Error) -> TlsError {
    move |source| TlsError::Generate { what, source }
}

impl LocalCa {
    /// The CA in `dir`, created (with the directory, mode 0700) if `dir` holds no root yet.
    pub fn open_or_create(dir: &Path) -> Result<Self, TlsError> {
        let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
        if cert_path.exists() {
            return Self::open(dir);
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate("generate a CA key"))?;
        let cert = root_params().self_signed(&key).map_err(generate("sign the local CA's root"))?;
        create_private_dir(dir)?;
        // The key first: the root certificate's presence means both are complete.
        write(&key_path, key.serialize_pem().as_bytes(), 0o600, None)?;
        write(&cert_path, cert.pem().as_bytes(), 0o644, None)?;
        Ok(Self { dir: dir.into(), cert_pem: cert.pem(), issuer: Issuer::new(root_params(), key) })
    }

    /// The CA in `dir`, which must hold one (`ca.pem` and `ca.key`).
    pub fn open(dir: &Path) -> Result<Self, TlsError> {
        let read =
            |path: &Path| std::fs::read_to_string(path).map_err(|source| TlsError::Read { path: path.into(), source });
        let key = KeyPair::from_pem(&read(&dir.join(CA_KEY))?).map_err(generate("read the local CA's key"))?;
        Ok(Self { dir: dir.into(), cert_pem: read(&dir.join(CA_CERT))?, issuer: Issuer::new(root_params(), key) })
    }

    /// The root certificate's file, for clients to trust.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }

    /// The root certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A new workload certificate (an X.509 SVID): the SPIFFE ID `id` as its only name (a URI
    /// SAN), for TLS clients and servers alike, valid from a minute ago for `ttl`.
    pub fn issue_workload(&self, id: &WorkloadId, ttl: Duration) -> Result<Issued, TlsError> {
        self.issue_svid(id, None, ttl)
    }

    /// A workload certificate of `id` that also names `dns` (the name peers check when they
    /// connect to it, see [`super::peer`]).
    pub fn issue_svid(&self, id: &WorkloadId, dns: Option<&str>, ttl: Duration) -> Result<Issued, TlsError> {
        let mut params = CertificateParams::default();
        let uri = rcgen::string::Ia5String::try_from(id.as_str()).map_err(generate("name a workload certificate"))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        if let Some(dns) = dns {
            let name = rcgen::string::Ia5String::try_from(dns).map_err(generate("name a workload certificate"))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params.distinguished_name.push(DnType::CommonName, id.as_str());
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(60);
        params.not_after = now + ttl;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate("generate a workload key"))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate("sign a workload certificate"))?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A new leaf for `names` (DNS names or IP addresses), signed by the root, for serving.
    pub fn issue(&self, names: &[String]) -> Result<Issued, TlsError> {
        let mut params = CertificateParams::new(names.to_vec()).map_err(generate("name a leaf certificate"))?;
        params.distinguished_name.push(DnType::CommonName, names.first().map_or("nimbus", String::as_str));
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate("generate a leaf key"))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate("sign a leaf certificate"))?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

impl Issued {
    /// The leaf as rustls serves it.
    pub fn certified_key(&self) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
        let origin = Path::new("(issued by the local CA)");
        certified_key(self.cert_pem.as_bytes(), self.key_pem.as_bytes(), origin, origin)
    }
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::Write { path: dir.into(), source })
}

/// Writes `bytes` to `path` with `mode`: whole or not at all (beside it, synced, renamed).
/// Owned by `owner` (uid, gid) when given.
pub(crate) fn write(path: &Path, bytes: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("tmp");
    let failed = |source| TlsError::Write { path: path.into(), source };
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(failed)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(failed)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(failed)?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(failed)?;
    std::fs::rename(&tmp, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    /// Whether `leaf` verifies for `name` against `root` alone.
    fn verifies(root: &str, leaf: &Issued, name: &str) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(root.as_bytes()).unwrap()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
        let name = ServerName::try_from(name.to_string()).unwrap();
        verifier.verify_server_cert(&leaf, &[], &name, &[], UnixTime::now()).is_ok()
    }

    #[test]
    fn the_root_is_created_once_and_signs_leaves_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = LocalCa::open_or_create(&dir.path().join("tls")).unwrap();
        let again = LocalCa::open_or_create(&dir.path().join("tls")).unwrap();
        assert_eq!(first.cert_pem(), again.cert_pem(), "the stored root is reused");
        let leaf = again.issue(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert!(verifies(first.cert_pem(), &leaf, "localhost"));
        assert!(verifies(first.cert_pem(), &leaf, "127.0.0.1"));
        assert!(!verifies(first.cert_pem(), &leaf, "example.com"), "only the names asked for");
        let other = LocalCa::open_or_create(&dir.path().join("other")).unwrap();
        assert!(!verifies(other.cert_pem(), &leaf, "localhost"), "another root does not vouch for it");
        leaf.certified_key().unwrap();
    }

    #[test]
    fn workload_certificates_name_their_spiffe_id_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::open_or_create(dir.path()).unwrap();
        let id = crate::identity::TrustDomain::default().component("shop", "web");
        let svid = ca.issue_workload(&id, Duration::from_secs(3600)).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::from_pem_slice(svid.cert_pem.as_bytes()).unwrap();
        let now = UnixTime::now();
        assert!(verifier.verify_client_cert(&leaf, &[], now).is_ok(), "a client certificate the CA vouches for");
        let later = UnixTime::since_unix_epoch(Duration::from_secs(now.as_secs() + 3700));
        assert!(verifier.verify_client_cert(&leaf, &[], later).is_err(), "expired after its ttl");
        let text = String::from_utf8_lossy(leaf.as_ref()).into_owned();
        assert!(text.contains("spiffe://nimbus.local/app/shop/component/web"), "the URI SAN names the workload");
    }

    #[test]
    fn sni_picks_the_host_then_a_wildcard_then_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::open_or_create(dir.path()).unwrap();
        let key = |name: &str| ca.issue(&[name.to_string()]).unwrap().certified_key().unwrap();
        let (default, shop, any) = (key("localhost"), key("shop.test"), key("x.apps.test"));
        let certs = super::super::Certificates::new(default.clone())
            .with_host("Shop.Test", shop.clone())
            .with_host("*.apps.test", any.clone());
        assert!(Arc::ptr_eq(certs.for_name(Some("shop.test")), &shop));
        assert!(Arc::ptr_eq(certs.for_name(Some("a.apps.test")), &any));
        assert!(Arc::ptr_eq(certs.for_name(Some("a.b.apps.test")), &default), "a wildcard covers one label");
        assert!(Arc::ptr_eq(certs.for_name(None), &default));
    }
}

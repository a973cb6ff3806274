//! Certificates from PEM files, watched for changes: every [`POLL`] the files' modification times
//! and sizes are compared with the last load; when one changed, all are parsed again and, if they
//! are valid, swapped in for new handshakes. A file that does not parse (half written, a key that
//! does not match yet) keeps the certificates in use and is logged; the next change tries again.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Certificates, ServerTls, TlsError, certified_key};

/// How often the files are checked for changes.
pub const POLL: Duration = Duration::from_secs(1);

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl PemFiles {
    fn load(&self) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
        let read = |path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { path: path.into(), source });
        certified_key(&read(&self.cert)?, &read(&self.key)?, &self.cert, &self.key)
    }
}

/// The files of a listener's certificates: the default one and one per host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// Presented to clients whose SNI names no host below (or who send none).
    pub default: PemFiles,
    /// Host name (or `*.example.com`) and its certificate.
    pub hosts: Vec<(String, PemFiles)>,
}

impl CertFiles {
    /// Parses every file.
    pub fn load(&self) -> Result<Certificates, TlsError> {
        let mut certs = Certificates::new(self.default.load()?);
        for (host, files) in &self.hosts {
            certs = certs.with_host(host, files.load()?);
        }
        Ok(certs)
    }

    fn paths(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(&self.default).chain(self.hosts.iter().map(|(_, f)| f)).flat_map(|f| [&*f.cert, &*f.key])
    }

    /// Modification time and size of every file (`None` for one that cannot be read now).
    fn stamp(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.paths().map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())))).collect()
    }

    /// Loads the files into a [`ServerTls`] and reloads them on change, on the current tokio
    /// runtime, for as long as a clone of the returned value lives.
    pub fn serve(self) -> Result<ServerTls, TlsError> {
        let mut stamp = self.stamp();
        let tls = ServerTls::new(self.load()?)?;
        let certs = Arc::downgrade(&tls.certs);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(certs) = certs.upgrade() else { return };
                let now = self.stamp();
                if now == stamp {
                    continue;
                }
                stamp = now;
                match self.load() {
                    Ok(loaded) => {
                        certs.store(Arc::new(loaded));
                        tracing::info!(cert = %self.default.cert.display(), hosts = self.hosts.len(), "reloaded the TLS certificates");
                    }
                    Err(e) => tracing::warn!(
                        error = %nimbus_observe::report(&e),
                        "the TLS certificate files changed but cannot be used; new connections keep the certificates in use"
                    ),
                }
            }
        });
        Ok(tls)
    }
}

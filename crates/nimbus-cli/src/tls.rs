//! TLS flags of `nimbus server` and `nimbus up`: `--tls auto` (a local CA under the data dir signs
//! a certificate for this machine's loopback names, the listen addresses and `--tls-name`s) or
//! certificate files (`--tls-cert`/`--tls-key`, plus `--tls-host-cert` per host, picked by SNI,
//! reloaded when they change). One setting covers every listener of the process.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use nimbus_security::tls::files::{CertFiles, PemFiles};
use nimbus_security::tls::{Certificates, ServerTls, ca::LocalCa};

/// How the listeners serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TlsMode {
    /// Plain HTTP (the control API then listens on loopback only).
    Off,
    /// HTTPS with a certificate from a local CA that Nimbus creates in DATA_DIR/tls.
    Auto,
    /// HTTPS with the certificate of --tls-cert/--tls-key (and --tls-host-cert).
    Files,
}

#[derive(Debug, Args)]
pub(crate) struct TlsArgs {
    /// Serve HTTPS on every listener: `auto` creates a local CA in DATA_DIR/tls once and prints
    /// its root for `curl --cacert` and `nimbus login --cacert`; `files` uses --tls-cert and
    /// --tls-key (implied by them). Default: off, plain HTTP.
    #[arg(long, env = "NIMBUS_TLS", value_enum)]
    tls: Option<TlsMode>,
    /// The default certificate chain (PEM, leaf first); reloaded when the file changes.
    #[arg(long, env = "NIMBUS_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM); reloaded when the file changes.
    #[arg(long, env = "NIMBUS_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A certificate for one host name (or `*.example.com`), presented when a client asks for
    /// that name (SNI): HOST=CERT.pem,KEY.pem. Repeatable; needs --tls-cert for the others.
    #[arg(long, value_name = "HOST=CERT,KEY", value_parser = host_cert, requires = "tls_cert")]
    tls_host_cert: Vec<(String, PemFiles)>,
    /// With `--tls auto`: another DNS name or address the certificate covers, besides
    /// localhost, 127.0.0.1, ::1 and the listen addresses. Repeatable.
    #[arg(long, value_name = "NAME")]
    tls_name: Vec<String>,
}

fn host_cert(s: &str) -> Result<(String, PemFiles), String> {
    let usage = || format!("`{s}` is not HOST=CERT.pem,KEY.pem");
    let (host, files) = s.split_once('=').ok_or_else(usage)?;
    let (cert, key) = files.split_once(',').ok_or_else(usage)?;
    if host.is_empty() || cert.is_empty() || key.is_empty() {
        return Err(usage());
    }
    Ok((host.to_string(), PemFiles { cert: cert.into(), key: key.into() }))
}

/// The listeners' TLS, and the local CA's root when it is `--tls auto`.
pub(crate) struct Tls {
    pub(crate) server: ServerTls,
    pub(crate) ca: Option<PathBuf>,
}

impl TlsArgs {
    fn mode(&self) -> anyhow::Result<TlsMode> {
        Ok(match (self.tls, &self.tls_cert) {
            (None | Some(TlsMode::Files), Some(_)) => TlsMode::Files,
            (Some(TlsMode::Files), None) => bail!("--tls files needs --tls-cert CERT.pem and --tls-key KEY.pem"),
            (Some(mode), Some(_)) => bail!("--tls-cert is for `--tls files`; drop it or --tls {mode:?}"),
            (Some(mode), None) => mode,
            (None, None) => TlsMode::Off,
        })
    }

    /// Whether the listeners will serve HTTPS (checked before anything starts).
    pub(crate) fn enabled(&self) -> anyhow::Result<bool> {
        Ok(self.mode()? != TlsMode::Off)
    }

    /// Loads or creates the certificates (on the current runtime, which then watches the files).
    /// `data_dir/tls` holds the local CA; `listen` are the addresses served.
    pub(crate) fn load(&self, data_dir: &Path, listen: &[SocketAddr]) -> anyhow::Result<Option<Tls>> {
        match self.mode()? {
            TlsMode::Off => Ok(None),
            TlsMode::Files => {
                let files = CertFiles {
                    default: PemFiles {
                        cert: self.tls_cert.clone().expect("files mode has a cert"),
                        key: self.tls_key.clone().context("--tls-cert needs --tls-key")?,
                    },
                    hosts: self.tls_host_cert.clone(),
                };
                let server = files.serve().context("cannot load the TLS certificate")?;
                Ok(Some(Tls { server, ca: None }))
            }
            TlsMode::Auto => {
                let ca = LocalCa::open_or_create(&data_dir.join("tls")).context("cannot set up the local CA")?;
                let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).into();
                let listening =
                    listen.iter().map(|a| a.ip()).filter(|ip| !ip.is_unspecified()).map(|ip| ip.to_string());
                for name in listening.chain(self.tls_name.iter().cloned()) {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                let leaf = ca.issue(&names).context("cannot issue the server's certificate")?;
                let server = ServerTls::new(Certificates::new(leaf.certified_key()?))?;
                Ok(Some(Tls { server, ca: Some(ca.cert_path()) }))
            }
        }
    }
}

/// `http` or `https`.
pub(crate) fn scheme(tls: Option<&Tls>) -> &'static str {
    if tls.is_some() { "https" } else { "http" }
}

/// The banner line telling how to trust the local CA, if there is one.
pub(crate) fn print_ca(tls: Option<&Tls>) {
    if let Some(ca) = tls.and_then(|t| t.ca.as_deref()) {
        let ca = ca.display();
        println!("  TLS:         local CA {ca}: trust it with `curl --cacert {ca}` or `nimbus login --cacert {ca}`");
    }
}

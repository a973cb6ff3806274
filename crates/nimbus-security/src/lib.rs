//! Nimbus security primitives: the cryptography and identities the rest of the platform relies
//! on, with no knowledge of apps, stores or HTTP routes.
//!
//! This crate owns TLS configuration ([`tls`]: rustls with the `ring` provider, ALPN `h2` and
//! `http/1.1`, a certificate per host picked by SNI, certificates from PEM files reloaded on
//! change, and a local CA for `--tls auto`) and, as they land, secrets envelope encryption and
//! workload identities. It does not store anything (the control store keeps sealed records),
//! decide who may do what (the control API's tokens) or serve connections (the gateway's accept
//! loop takes a [`tls::ServerTls`] from here and runs each handshake).
//!
//! ```no_run
//! # fn demo() -> Result<(), nimbus_security::tls::TlsError> {
//! use nimbus_security::tls::{Certificates, ServerTls, ca::LocalCa};
//!
//! let ca = LocalCa::open_or_create(std::path::Path::new("/var/lib/nimbus/tls"))?;
//! let leaf = ca.issue(&["localhost".into(), "127.0.0.1".into()])?;
//! let tls = ServerTls::new(Certificates::new(leaf.certified_key()?))?;
//! println!("trust {} (curl --cacert)", ca.cert_path().display());
//! let _acceptor = tls.acceptor();
//! # Ok(()) }
//! ```

pub mod tls;

//! Nimbus security primitives: the cryptography and identities the rest of the platform relies
//! on, with no knowledge of stores or HTTP routes.
//!
//! This crate owns secrets envelope encryption ([`secrets`]: values sealed with a data key, data
//! keys wrapped by a master key; the [`secrets::SecretSource`] the runtime and app host read
//! granted secrets from), TLS configuration ([`tls`]: rustls with the `ring` provider, ALPN `h2`
//! and `http/1.1`, a certificate per host picked by SNI, certificates from PEM files reloaded on
//! change, and a local CA for `--tls auto`), workload identities ([`identity`]: SPIFFE IDs of
//! nodes and components under a trust domain; services' short-lived certificates) and the seam of component-to-component
//! calls ([`mesh`]: the [`mesh::Mesh`] a caller hands a call to `http://COMPONENT.internal/` with
//! its identity and depth) and authorization ([`policy`]: one Cedar policy set, validated
//! against a built-in schema, deciding what API tokens may do and what components' grants give
//! them, with an admin's `forbid` over every `permit`) and the audit trail's format ([`audit`]: a hash
//! chain of records with digests signed by the node's Ed25519 key, and its verification), Ed25519
//! signing keys ([`signing`]),
//! and supply-chain scans ([`supply`]: an artifact's dependencies, from its `cargo auditable`
//! section, SBOMs or lockfiles, matched against an offline OSV advisory database, its imports
//! against its grants, and artifact signatures checked against trusted keys). It does not store anything (the control
//! store keeps sealed records and the admin's policies), authenticate callers (the control API's
//! tokens), run the callee of a call (the gateway implements the mesh) or serve connections (the gateway's accept loop takes a
//! [`tls::ServerTls`] from here and runs each handshake).
//!
//! ```
//! use nimbus_security::secrets::{Keyring, MasterKey, SecretValue};
//!
//! let master = MasterKey::from_hex(&MasterKey::generate_hex()?, "example")?;
//! // A first data key; store `wrapped` (the data keys sealed under the master key).
//! let (keyring, wrapped) = Keyring::default().rotated(&master)?;
//! let sealed = keyring.seal("shop/stripe-key", &SecretValue::new("sk_live_1".into()))?.expect("a data key");
//! // After a restart: the same master key opens the data keys, which open the value.
//! let keyring = Keyring::open(&master, &wrapped)?;
//! assert_eq!(keyring.unseal("shop/stripe-key", &sealed)?.expose(), "sk_live_1");
//! # Ok::<(), nimbus_security::secrets::SecretsError>(())
//! ```
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

pub mod audit;
pub mod identity;
pub mod mesh;
pub mod policy;
pub mod secrets;
pub mod signing;
pub mod supply;
pub mod tls;

//! Nimbus security primitives: the cryptography and identities the rest of the platform relies
//! on, with no knowledge of apps, stores or HTTP routes.
//!
//! This crate owns secrets envelope encryption (values sealed with a data key, data keys wrapped
//! by a master key), TLS configuration (certificates from files, reloaded on change; a local CA
//! for `--tls auto`) and workload identities (`spiffe://DOMAIN/app/APP/component/NAME`). It does
//! not store anything (the control store keeps sealed records), decide who may do what (the
//! control API's tokens and, later, policies) or serve connections (the gateway's accept loop
//! takes a TLS configuration from here).
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

pub mod secrets;

//! Nimbus security primitives: the cryptography and identities the rest of the platform relies
//! on, with no knowledge of apps, stores or HTTP routes.
//!
//! This crate owns secrets envelope encryption (values sealed with a data key, data keys wrapped
//! by a master key), TLS configuration (certificates from files, reloaded on change; a local CA
//! for `--tls auto`) and workload identities (`spiffe://DOMAIN/app/APP/component/NAME`). It does
//! not store anything (the control store keeps sealed records), decide who may do what (the
//! control API's tokens and, later, policies) or serve connections (the gateway's accept loop
//! takes a TLS configuration from here).

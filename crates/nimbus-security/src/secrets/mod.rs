//! Secrets envelope encryption. Every secret value is sealed with AES-256-GCM under a *data key*
//! (random 96-bit nonce, the secret's owner and name as associated data, so a sealed value moved
//! to another name does not open); data keys are themselves sealed (*wrapped*) under the
//! *master key*, which never touches the store: it comes from a file or the environment. A
//! [`Keyring`] is the data keys opened with the master key; [`Keyring::rotated`] adds a new data
//! key for later writes and re-wraps every key under the (possibly new) master key, so values
//! sealed before stay readable and nothing has to be re-encrypted.
//!
//! Values are [`SecretValue`]s: zeroed when dropped, and `Debug`/`Display` print `[redacted]`,
//! so a secret cannot reach a log line or an error message by formatting.
mod keyring;
mod master;

use std::fmt;

pub use keyring::{Keyring, Sealed, WrappedKey};
pub use master::{MASTER_KEY_ENV, MasterKey};

/// A secret's value: readable only through [`SecretValue::expose`], zeroed when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(zeroize::Zeroizing<String>);

impl SecretValue {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        Self(zeroize::Zeroizing::new(value))
    }

    /// The value itself, for the one place that hands it to a component.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where components' granted secrets come from: the control plane's encrypted store on a server,
/// the environment under `nimbus up`. Implemented above this crate.
pub trait SecretSource: Send + Sync + fmt::Debug {
    /// The value of secret `name` of `app`, if it is set.
    fn get(&self, app: &str, name: &str) -> Result<Option<SecretValue>, SecretsError>;

    /// What to do so that secret `name` of `app` is set, for the error when it is not.
    fn how_to_set(&self, app: &str, name: &str) -> String;
}

/// Why a secret could not be sealed, opened or found.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The master key file could not be read.
    #[error("cannot read the master key file {path}")]
    MasterKeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The master key file can be read by other users.
    #[error(
        "the master key file {path} can be read by other users (mode {mode:o}): make it private with `chmod 600 {path}`"
    )]
    MasterKeyExposed {
        /// The file.
        path: std::path::PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The master key is not 32 bytes written as 64 hex characters.
    #[error(
        "the master key from {from} is not 64 hex characters (32 random bytes): create one with `openssl rand -hex 32`"
    )]
    MasterKeyFormat {
        /// Where it came from (a file, the environment variable).
        from: String,
    },
    /// The data keys were wrapped under another master key.
    #[error(
        "the master key (fingerprint {given}) is not the one the secrets were stored with (fingerprint {expected}): start with the master key used before, or restore it"
    )]
    WrongMasterKey {
        /// The fingerprint of the key given.
        given: String,
        /// The fingerprint of the key the data keys were wrapped under.
        expected: String,
    },
    /// A sealed record does not open: it was altered, or belongs to another name.
    #[error("a sealed {what} does not open: it was altered or moved")]
    Tampered {
        /// What (a data key, the value of a secret).
        what: String,
    },
    /// A sealed value names a data key the keyring does not have.
    #[error("secret sealed under data key {0}, which the keyring does not have")]
    UnknownDataKey(u32),
    /// A record of an unknown format version.
    #[error("{what} has format version {version}; this build reads version 1: upgrade Nimbus")]
    Version {
        /// What (a data key, a sealed value).
        what: &'static str,
        /// Its version.
        version: u32,
    },
    /// A sealed value is not UTF-8 text.
    #[error("a secret value is not UTF-8 text")]
    NotText,
    /// The system's random source failed.
    #[error("the system's random number generator failed")]
    Random,
    /// No master key is configured, so secrets can be neither stored nor read.
    #[error(
        "this server has no master key, so it cannot store or read secrets: start it with --master-key-file FILE or {MASTER_KEY_ENV} (create one with `openssl rand -hex 32`)"
    )]
    NoMasterKey,
    /// The place secrets are kept failed.
    #[error("reading secrets failed")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

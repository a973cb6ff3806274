//! Ed25519 signing keys in PKCS#8 files only their owner may read: a node's key signing its
//! audit chain's digests ([`crate::audit`]), and the keys build pipelines sign artifacts with
//! ([`crate::supply::ArtifactSignature`]). Public keys and signatures travel as hex.
use std::io::Write;
use std::path::{Path, PathBuf};

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// Why a signing key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read or written.
    #[error("cannot use the key file {}: check that it exists and its permissions", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no Ed25519 key.
    #[error("{} is not an Ed25519 key in PKCS#8 (restore it from a backup: a new key cannot sign for the old one)", path.display())]
    Invalid {
        /// The key file.
        path: PathBuf,
    },
    /// The system's random source failed.
    #[error("cannot draw random bytes for a new key")]
    Random,
}

/// An Ed25519 signing key.
#[derive(Debug)]
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// A new random key (not stored).
    pub fn generate() -> Result<Self, KeyError> {
        Self::from_pkcs8(&Self::new_pkcs8()?).ok_or(KeyError::Random)
    }

    /// The key in `path`; refused if it is missing or not a key.
    pub fn open(path: &Path) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Io { path: path.into(), source })?;
        Self::from_pkcs8(&bytes).ok_or_else(|| KeyError::Invalid { path: path.into() })
    }

    /// The key in `path`, created there (mode 0600) if there is none.
    pub fn open_or_create(path: &Path) -> Result<Self, KeyError> {
        if path.exists() {
            return Self::open(path);
        }
        let pkcs8 = Self::new_pkcs8()?;
        let io = |source| KeyError::Io { path: path.into(), source };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        file.write_all(&pkcs8).and_then(|()| file.sync_all()).map_err(io)?;
        Self::from_pkcs8(&pkcs8).ok_or(KeyError::Random)
    }

    fn new_pkcs8() -> Result<Vec<u8>, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        Ed25519KeyPair::generate_pkcs8(&rng).map(|d| d.as_ref().to_vec()).map_err(|_| KeyError::Random)
    }

    fn from_pkcs8(bytes: &[u8]) -> Option<Self> {
        Ed25519KeyPair::from_pkcs8(bytes).ok().map(|pair| Self { pair })
    }

    /// The public key, hex.
    pub fn public_hex(&self) -> String {
        hex::encode(self.pair.public_key().as_ref())
    }

    /// The signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// Whether `signature` (hex) is `public` (hex)'s signature of `message`.
pub fn signed_by(public: &str, message: &[u8], signature: &str) -> bool {
    let (Ok(public), Ok(signature)) = (hex::decode(public), hex::decode(signature)) else { return false };
    UnparsedPublicKey::new(&ED25519, public).verify(message, &signature).is_ok()
}

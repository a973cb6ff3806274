//! The master key: 32 random bytes from a private file or the environment, written as 64 hex
//! characters. Only its fingerprint is ever stored (next to the data keys it wraps), so starting
//! with the wrong key is told apart from a damaged store.
use std::path::Path;

use ring::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use zeroize::Zeroizing;

use super::SecretsError;

/// The environment variable that can hold the master key (64 hex characters).
pub const MASTER_KEY_ENV: &str = "NIMBUS_MASTER_KEY";

/// The key that wraps the data keys.
pub struct MasterKey {
    key: LessSafeKey,
    fingerprint: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

impl MasterKey {
    /// The key in `path`: 64 hex characters (surrounding whitespace ignored), readable by its
    /// owner only.
    pub fn from_file(path: &Path) -> Result<Self, SecretsError> {
        let file = |source| SecretsError::MasterKeyFile { path: path.to_path_buf(), source };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(file)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(SecretsError::MasterKeyExposed { path: path.to_path_buf(), mode });
            }
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(file)?);
        Self::from_hex(text.trim(), &path.display().to_string())
    }

    /// The key written as 64 hex characters; `from` says where it came from, for errors.
    pub fn from_hex(text: &str, from: &str) -> Result<Self, SecretsError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), bytes.as_mut_slice())
            .map_err(|_| SecretsError::MasterKeyFormat { from: from.to_string() })?;
        Ok(Self::from_bytes(&bytes))
    }

    /// A new random key, as 64 hex characters to write to a private file.
    pub fn generate_hex() -> Result<Zeroizing<String>, SecretsError> {
        Ok(Zeroizing::new(hex::encode(super::keyring::random::<32>()?.as_slice())))
    }

    fn from_bytes(bytes: &[u8; 32]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, &[b"nimbus master key\0".as_slice(), bytes].concat());
        let fingerprint = hex::encode(&digest.as_ref()[..8]);
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte key"));
        Self { key, fingerprint }
    }

    /// A short public name of the key (not enough to recover it), stored with what it wraps.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub(super) fn aead(&self) -> &LessSafeKey {
        &self.key
    }
}

//! Bucket names and keys: one set of rules on every backend.
use crate::KvError;

/// The longest key, in bytes.
pub const MAX_KEY_LEN: usize = 512;
/// The longest bucket name.
pub use nimbus_manifest::MAX_BUCKET_NAME_LEN as MAX_BUCKET_LEN;

/// A validated bucket name: lowercase ASCII letters, digits, `-` and `_`, starting with a letter
/// or digit, at most [`MAX_BUCKET_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket(String);

impl Bucket {
    /// Validates a bucket name.
    pub fn new(name: &str) -> Result<Self, KvError> {
        nimbus_manifest::check_bucket_name(name).map_err(|why| KvError::Invalid {
            what: "bucket",
            name: name.to_string(),
            why,
        })?;
        Ok(Self(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a key: any UTF-8 text (NUL and every Unicode form included, compared byte for byte),
/// 1 to [`MAX_KEY_LEN`] bytes.
pub fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(KvError::Invalid {
            what: "key",
            name: key.chars().take(40).collect(),
            why: "keys are 1 to 512 bytes",
        });
    }
    Ok(())
}

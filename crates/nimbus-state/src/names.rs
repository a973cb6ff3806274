//! Bucket names and keys: one set of rules on every backend.
use crate::KvError;

/// The longest key, in bytes.
pub const MAX_KEY_LEN: usize = 512;
/// The longest bucket name.
pub use nimbus_manifest::MAX_BUCKET_NAME_LEN as MAX_BUCKET_LEN;

/// A bucket of one app: a validated app name and a bucket name (lowercase ASCII letters, digits,
/// `-` and `_`, starting with a letter or digit, at most [`MAX_BUCKET_LEN`] bytes). Backends
/// store it under [`Bucket::storage_name`], which carries the app, so apps never share a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket {
    storage: String,
    app_len: usize,
    /// Where the bucket's name starts in `storage`.
    name_at: usize,
}

impl Bucket {
    /// Validates the app and the bucket name.
    pub fn new(app: &str, name: &str) -> Result<Self, KvError> {
        nimbus_manifest::check_app_name(app).map_err(|_| KvError::Invalid {
            what: "app",
            name: app.to_string(),
            why: "app names are 1 to 63 lower-case letters, digits, `-` or `_`",
        })?;
        nimbus_manifest::check_bucket_name(name).map_err(|why| KvError::Invalid {
            what: "bucket",
            name: name.to_string(),
            why,
        })?;
        let name_at = app.len() + nimbus_manifest::SCOPE_MARK.len();
        Ok(Self { storage: nimbus_manifest::scoped_name(app, name), app_len: app.len(), name_at })
    }

    /// A bucket as Nimbus stored it before names were scoped per app: shared by every app. Only
    /// for moving such data to its apps ([`crate::migrate`]) and for tests that build that layout.
    pub fn unscoped(name: &str) -> Self {
        Self { storage: name.to_string(), app_len: 0, name_at: 0 }
    }

    /// The bucket's name, as its app knows it.
    pub fn name(&self) -> &str {
        &self.storage[self.name_at..]
    }

    /// The app the bucket belongs to.
    pub fn app(&self) -> &str {
        &self.storage[..self.app_len]
    }

    /// The name backends store it under: unique across apps.
    pub fn storage_name(&self) -> &str {
        &self.storage
    }
}

impl std::fmt::Display for Bucket {
    /// `APP/BUCKET`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.app(), self.name())
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

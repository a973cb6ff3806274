//! Blobs: buckets of large objects behind the [`BlobStore`] trait, streamed in and out without
//! holding an object whole in memory. Backends: [`EmbeddedBlobs`] (content-addressed files on this
//! node, indexed in redb) and [`NatsBlobs`] (NATS JetStream Object Store). Keys follow the KV rules
//! ([`crate::check_key`]). Limits ([`Limits`]) are checked while the body streams in, so an
//! oversize upload stops as soon as it passes one; a failed upload leaves nothing behind and the
//! previous object under its key intact.
mod embedded;
mod error;
mod nats;
mod range;

use std::pin::Pin;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use sha2::{Digest, Sha256};

use crate::Bucket;

pub use embedded::EmbeddedBlobs;
pub use error::BlobError;
pub use nats::NatsBlobs;
pub use range::ByteRange;

/// A stream of an object's bytes, in either direction: an upload's body, or what a read returns.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// What is known about a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its key in the bucket.
    pub key: String,
    /// Its length in bytes.
    pub size: u64,
    /// The SHA-256 of its bytes, lower-case hex.
    pub digest: String,
    /// When it was stored (by the put that wrote it; an overwrite is a new object).
    pub created: SystemTime,
}

/// An object being read: what it is, the bytes read, and the stream of those bytes.
pub struct Blob {
    /// The whole object's metadata.
    pub info: ObjectInfo,
    /// The first byte the stream returns.
    pub start: u64,
    /// How many bytes the stream returns.
    pub len: u64,
    /// The bytes `start .. start + len`.
    pub body: ByteStream,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob").field("info", &self.info).field("start", &self.start).field("len", &self.len).finish()
    }
}

/// One page of objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobPage {
    /// Objects in byte order of their keys.
    pub objects: Vec<ObjectInfo>,
    /// Pass this to get the next page; `None` at the end.
    pub cursor: Option<String>,
}

/// The limits of one upload, set by the caller; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// The largest object, in bytes.
    pub max_size: Option<u64>,
    /// The most bytes the bucket may hold once the upload is in (the object it replaces, if
    /// any, not counted).
    pub quota: Option<u64>,
}

/// Buckets of large objects, durable: a put that returned survives `kill -9`, and one that
/// failed or was dropped changed nothing. Implementations: [`EmbeddedBlobs`] and [`NatsBlobs`];
/// both pass the same conformance suite.
#[async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores `body` under `key`, replacing what was there once the whole body is stored.
    async fn put(&self, bucket: &Bucket, key: &str, body: ByteStream, limits: Limits) -> Result<ObjectInfo, BlobError>;

    /// The object under `key` (or the bytes of `range` of it), unless it is absent.
    async fn get(&self, bucket: &Bucket, key: &str, range: Option<ByteRange>) -> Result<Option<Blob>, BlobError>;

    /// What is known about the object under `key`, unless it is absent.
    async fn head(&self, bucket: &Bucket, key: &str) -> Result<Option<ObjectInfo>, BlobError>;

    /// Deletes the object under `key`; whether there was one.
    async fn delete(&self, bucket: &Bucket, key: &str) -> Result<bool, BlobError>;

    /// Up to `limit` objects whose keys start with `prefix`, after `cursor`, in byte order.
    async fn list(
        &self,
        bucket: &Bucket,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<BlobPage, BlobError>;

    /// The bytes the objects of `bucket` hold (the sum of their sizes): what quotas count.
    async fn used_bytes(&self, bucket: &Bucket) -> Result<u64, BlobError>;

    /// The backend's name (`embedded`, `nats`).
    fn backend(&self) -> &'static str;
}

/// Counts and hashes an upload's bytes as they arrive and stops it once it passes a limit.
pub(crate) struct Meter {
    hasher: Sha256,
    size: u64,
    max_size: Option<u64>,
    /// The bytes the bucket's quota leaves for this object.
    room: Option<u64>,
    quota: u64,
    bucket: String,
}

impl Meter {
    /// A meter for an upload into `bucket`, whose other objects hold `used_by_others` bytes.
    pub(crate) fn new(bucket: &Bucket, limits: Limits, used_by_others: u64) -> Self {
        Self {
            hasher: Sha256::new(),
            size: 0,
            max_size: limits.max_size,
            room: limits.quota.map(|q| q.saturating_sub(used_by_others)),
            quota: limits.quota.unwrap_or(u64::MAX),
            bucket: bucket.to_string(),
        }
    }

    /// Takes the next bytes of the body; refused once the body passes a limit.
    pub(crate) fn take(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        self.size += chunk.len() as u64;
        if let Some(limit) = self.max_size.filter(|&m| self.size > m) {
            return Err(BlobError::TooLarge { limit });
        }
        if self.room.is_some_and(|room| self.size > room) {
            return Err(BlobError::QuotaExceeded { bucket: self.bucket.clone(), quota: self.quota });
        }
        self.hasher.update(chunk);
        Ok(())
    }

    /// The body's size and SHA-256.
    pub(crate) fn finish(self) -> (u64, [u8; 32]) {
        (self.size, self.hasher.finalize().into())
    }
}

/// Whether `key` is in a page that lists `prefix` after `cursor`.
pub(crate) fn listed(key: &str, prefix: &str, cursor: Option<&str>) -> bool {
    key.starts_with(prefix) && cursor.is_none_or(|c| key > c)
}

/// The first `limit` of `objects` (sorted by key) and the cursor of the next page.
pub(crate) fn page(mut objects: Vec<ObjectInfo>, limit: usize) -> BlobPage {
    let more = objects.len() > limit;
    objects.truncate(limit);
    let cursor = if more { objects.last().map(|o| o.key.clone()) } else { None };
    BlobPage { objects, cursor }
}

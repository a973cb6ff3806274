//! The [`KvStore`] trait every backend implements.
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::feed::ChangeFeed;
use crate::{Bucket, KvError};

/// A stored value with its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Bytes,
    /// Increases with every change of the bucket; what compare-and-swap compares.
    pub revision: u64,
}

/// One page of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Keys in byte order.
    pub keys: Vec<String>,
    /// Pass this to get the next page; `None` at the end.
    pub cursor: Option<String>,
}

/// The outcome of a compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swap {
    /// Written; the new revision.
    Done(u64),
    /// The key was not at the expected revision; nothing was written. Its current revision.
    Conflict(Option<u64>),
}

/// The outcome of a compare-and-delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The key was at the expected revision and is deleted.
    Deleted,
    /// The key was not at the expected revision; nothing was deleted. Its current revision
    /// (`None`: it has no value).
    Conflict(Option<u64>),
}

/// Buckets of keys and values, durable: a write that returned survives `kill -9`. Implementations:
/// [`crate::Embedded`] (redb) and [`crate::NatsKv`] (NATS JetStream KV); both pass the same
/// conformance suite.
#[async_trait]
pub trait KvStore: Send + Sync + std::fmt::Debug + 'static {
    /// The value of `key`, unless it is absent or expired.
    async fn get(&self, bucket: &Bucket, key: &str) -> Result<Option<Entry>, KvError>;

    /// Sets `key`; with `ttl` it expires after that long. Returns the new revision.
    async fn set(&self, bucket: &Bucket, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, KvError>;

    /// Deletes `key` (absent keys are fine).
    async fn delete(&self, bucket: &Bucket, key: &str) -> Result<(), KvError>;

    /// Writes `value` if `key` is at revision `expected` (`None`: only if it is absent).
    async fn compare_and_swap(
        &self,
        bucket: &Bucket,
        key: &str,
        expected: Option<u64>,
        value: Bytes,
    ) -> Result<Swap, KvError>;

    /// Deletes `key` if it is at revision `expected`.
    async fn compare_and_delete(&self, bucket: &Bucket, key: &str, expected: u64) -> Result<Removal, KvError>;

    /// Up to `limit` keys starting with `prefix`, after `cursor`, in byte order.
    async fn list(&self, bucket: &Bucket, prefix: &str, cursor: Option<&str>, limit: usize) -> Result<Page, KvError>;

    /// The backend's name (`embedded`, `nats`).
    fn backend(&self) -> &'static str;

    /// The storage names of every bucket in the store ([`Bucket::storage_name`]; for moving
    /// buckets of an older layout, [`crate::migrate`]).
    async fn bucket_names(&self) -> Result<Vec<String>, KvError>;

    /// The bytes `bucket` holds (its keys and stored values; on JetStream, its stream's bytes),
    /// for metering storage; 0 for a bucket never written.
    async fn stored_bytes(&self, bucket: &Bucket) -> Result<u64, KvError>;

    /// The change feed of `bucket` ([`crate::feed`]): from the first call on, every change of the
    /// bucket is recorded with the write itself and kept until acknowledged, across restarts;
    /// later calls resume where the acknowledgements end.
    async fn follow(&self, bucket: &Bucket) -> Result<Box<dyn ChangeFeed>, KvError>;

    /// Stops recording the changes of `bucket` and forgets those not acknowledged yet.
    async fn unfollow(&self, bucket: &Bucket) -> Result<(), KvError>;

    /// Whether `key` has a value.
    async fn exists(&self, bucket: &Bucket, key: &str) -> Result<bool, KvError> {
        Ok(self.get(bucket, key).await?.is_some())
    }

    /// Adds `delta` to the decimal integer at `key` (absent: 0) atomically; returns the result.
    async fn increment(&self, bucket: &Bucket, key: &str, delta: i64) -> Result<i64, KvError> {
        loop {
            let current = self.get(bucket, key).await?;
            let n = match &current {
                None => 0,
                Some(e) => parse_int(key, &e.value)?,
            };
            let next = n.checked_add(delta).ok_or_else(|| KvError::NotANumber(key.to_string()))?;
            let expected = current.map(|e| e.revision);
            if let Swap::Done(_) = self.compare_and_swap(bucket, key, expected, next.to_string().into()).await? {
                return Ok(next);
            }
        }
    }

    /// The values of `keys` (`None` where absent).
    async fn get_many(&self, bucket: &Bucket, keys: &[String]) -> Result<Vec<Option<Entry>>, KvError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(bucket, key).await?);
        }
        Ok(out)
    }

    /// Sets every pair.
    async fn set_many(&self, bucket: &Bucket, pairs: Vec<(String, Bytes)>) -> Result<(), KvError> {
        for (key, value) in pairs {
            self.set(bucket, &key, value, None).await?;
        }
        Ok(())
    }
}

pub(crate) fn parse_int(key: &str, value: &[u8]) -> Result<i64, KvError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| KvError::NotANumber(key.to_string()))
}

//! KV change events: a [`KvStore`] that, for the buckets some `[[trigger.kv]]` watches, publishes
//! every change it made to the bucket's topic (`nimbus-kv.BUCKET`, in the bucket's app) as a CloudEvent —
//! `dev.nimbus.kv.set` (the new value as data, `kvrevision` extension) or `dev.nimbus.kv.delete`,
//! `subject` and `partitionkey` = the key, so that one key's changes are delivered in order.
//!
//! The event is published after the write is durable; a crash between the two loses the event
//! (the write stays). Buckets nobody watches cost nothing.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use nimbus_bus::event::PARTITION_KEY;
use nimbus_bus::{EventBuilder, EventBuilderV10, EventBus, PublishOptions, Topic};
use nimbus_state::{Bucket, Entry, KvError, KvStore, Page, Swap};

/// The topic carrying a bucket's changes.
pub fn kv_topic(bucket: &str) -> String {
    format!("{}{bucket}", nimbus_manifest::KV_CHANGES_PREFIX)
}

/// A KV store publishing the changes of watched buckets.
pub struct KvChanges {
    inner: Arc<dyn KvStore>,
    bus: Arc<dyn EventBus>,
    /// Watched buckets, with how many triggers watch each.
    watched: Mutex<HashMap<Bucket, usize>>,
}

impl std::fmt::Debug for KvChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvChanges").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl KvChanges {
    /// Wraps `inner`; nothing is watched yet.
    pub fn new(inner: Arc<dyn KvStore>, bus: Arc<dyn EventBus>) -> Self {
        Self { inner, bus, watched: Mutex::default() }
    }

    /// Starts publishing the changes of `bucket` (one more watcher).
    pub fn watch(&self, bucket: &Bucket) {
        *self.watched.lock().expect("watched").entry(bucket.clone()).or_default() += 1;
    }

    /// One watcher of `bucket` fewer; at zero its changes are no longer published.
    pub fn unwatch(&self, bucket: &Bucket) {
        let mut watched = self.watched.lock().expect("watched");
        if let Some(n) = watched.get_mut(bucket) {
            *n -= 1;
            if *n == 0 {
                watched.remove(bucket);
            }
        }
    }

    async fn changed(&self, bucket: &Bucket, key: &str, change: Option<(u64, Bytes)>) {
        if !self.watched.lock().expect("watched").contains_key(bucket) {
            return;
        }
        let builder =
            EventBuilderV10::new().source(format!("/kv/{}", bucket.name())).subject(key).extension(PARTITION_KEY, key);
        let event = match change {
            Some((revision, value)) => builder
                .id(format!("{}/{revision}", bucket.name()))
                .ty("dev.nimbus.kv.set")
                .extension("kvrevision", revision as i64)
                .data("application/octet-stream", value.to_vec())
                .build(),
            None => builder.id(format!("{:032x}", fastrand::u128(..))).ty("dev.nimbus.kv.delete").build(),
        };
        let published = match (event, Topic::new(bucket.app(), &kv_topic(bucket.name()))) {
            (Ok(event), Ok(topic)) => {
                self.bus.publish(&topic, &event, PublishOptions::default()).await.map(drop).map_err(|e| e.to_string())
            }
            (Err(e), _) => Err(e.to_string()),
            (_, Err(e)) => Err(e.to_string()),
        };
        if let Err(e) = published {
            tracing::error!(%bucket, key, error = %e, "a KV change was written but its change event could not be published");
        }
    }
}

#[async_trait]
impl KvStore for KvChanges {
    async fn get(&self, bucket: &Bucket, key: &str) -> Result<Option<Entry>, KvError> {
        self.inner.get(bucket, key).await
    }

    async fn set(&self, bucket: &Bucket, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, KvError> {
        let revision = self.inner.set(bucket, key, value.clone(), ttl).await?;
        self.changed(bucket, key, Some((revision, value))).await;
        Ok(revision)
    }

    async fn delete(&self, bucket: &Bucket, key: &str) -> Result<(), KvError> {
        self.inner.delete(bucket, key).await?;
        self.changed(bucket, key, None).await;
        Ok(())
    }

    async fn compare_and_swap(
        &self,
        bucket: &Bucket,
        key: &str,
        expected: Option<u64>,
        value: Bytes,
    ) -> Result<Swap, KvError> {
        let swap = self.inner.compare_and_swap(bucket, key, expected, value.clone()).await?;
        if let Swap::Done(revision) = swap {
            self.changed(bucket, key, Some((revision, value))).await;
        }
        Ok(swap)
    }

    async fn list(&self, bucket: &Bucket, prefix: &str, cursor: Option<&str>, limit: usize) -> Result<Page, KvError> {
        self.inner.list(bucket, prefix, cursor, limit).await
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn bucket_names(&self) -> Result<Vec<String>, KvError> {
        self.inner.bucket_names().await
    }

    async fn stored_bytes(&self, bucket: &Bucket) -> Result<u64, KvError> {
        self.inner.stored_bytes(bucket).await
    }

    async fn increment(&self, bucket: &Bucket, key: &str, delta: i64) -> Result<i64, KvError> {
        let n = self.inner.increment(bucket, key, delta).await?;
        if self.watched.lock().expect("watched").contains_key(bucket)
            && let Some(entry) = self.inner.get(bucket, key).await?
        {
            self.changed(bucket, key, Some((entry.revision, entry.value))).await;
        }
        Ok(n)
    }

    async fn set_many(&self, bucket: &Bucket, pairs: Vec<(String, Bytes)>) -> Result<(), KvError> {
        self.inner.set_many(bucket, pairs.clone()).await?;
        if self.watched.lock().expect("watched").contains_key(bucket) {
            for (key, _) in pairs {
                if let Some(entry) = self.inner.get(bucket, &key).await? {
                    self.changed(bucket, &key, Some((entry.revision, entry.value))).await;
                }
            }
        }
        Ok(())
    }
}

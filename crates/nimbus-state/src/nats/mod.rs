//! The NATS JetStream KV backend: a KV bucket per bucket (`nimbus_kv_<storage name>`, file storage,
//! history 1, per-key TTL enabled). Keys are stored hex-encoded, so every key — NUL bytes and
//! any Unicode included — round-trips exactly, and prefixes and byte order carry over.
//!
//! Residency: with [`NatsKv::resident`], a bucket of an app pinned to labels this node lacks is
//! refused ([`KvError::Misplaced`]) before anything reaches NATS, and a pinned app's buckets are
//! created with JetStream placement tags (see [`nimbus_manifest::Residency`]).
//!
//! Change feeds ([`crate::feed`]) are a durable consumer on the bucket's stream ([`feed`]).
//!
//! Durability: run nats-server with `jetstream { sync_interval: always }` (see `nimbus-bus`).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod feed;

use async_nats::HeaderMap;
use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use async_nats::jetstream::{self, stream::Placement, stream::StorageType};
use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;

use nimbus_manifest::Residency;

use crate::feed::ChangeFeed;
use crate::kv::{Entry, KvStore, Page, Removal, Swap};
use crate::names::check_key;
use crate::{Bucket, KvError};

/// KV buckets on NATS JetStream.
pub struct NatsKv {
    js: jetstream::Context,
    stores: Mutex<HashMap<Bucket, kv::Store>>,
    replicas: usize,
    residency: Arc<Residency>,
}

impl std::fmt::Debug for NatsKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsKv").finish_non_exhaustive()
    }
}

fn bucket_name(bucket: &Bucket) -> String {
    format!("nimbus_kv_{}", bucket.storage_name())
}

/// JetStream on the NATS server at `url` (for KV buckets and blob buckets alike).
pub(crate) async fn jetstream(url: &str) -> Result<jetstream::Context, KvError> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| KvError::Connect { url: url.to_owned(), source: nimbus_observe::cause(e) })?;
    Ok(jetstream::new(client))
}

impl NatsKv {
    /// Connects to the NATS server at `url`.
    pub async fn connect(url: &str) -> Result<Self, KvError> {
        Ok(Self { js: jetstream(url).await?, stores: Mutex::default(), replicas: 1, residency: Arc::default() })
    }

    /// Keeps new buckets on `replicas` NATS servers (a NATS cluster's RAFT replicates them).
    #[must_use]
    pub fn replicated(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// Applies `residency` to every bucket from now on.
    #[must_use]
    pub fn resident(mut self, residency: Arc<Residency>) -> Self {
        self.residency = residency;
        self
    }

    /// The bucket's store, created if new; refused if this node may not hold its app's data.
    async fn store(&self, bucket: &Bucket) -> Result<kv::Store, KvError> {
        let tags = self.residency.bucket(bucket.app(), bucket.name())?;
        if let Some(s) = self.stores.lock().expect("stores").get(bucket) {
            return Ok(s.clone());
        }
        let config = kv::Config {
            bucket: bucket_name(bucket),
            history: 1,
            storage: StorageType::File,
            num_replicas: self.replicas,
            limit_markers: Some(Duration::from_secs(1)),
            placement: (!tags.is_empty()).then_some(Placement { cluster: None, tags }),
            ..Default::default()
        };
        let store = match self.js.get_key_value(bucket_name(bucket)).await {
            Ok(s) => s,
            Err(_) => self.js.create_key_value(config.clone()).await.map_err(KvError::nats)?,
        };
        let placed = store.stream.cached_info().config.placement.as_ref().map(|p| p.tags.clone()).unwrap_or_default();
        if let Some(Placement { tags, .. }) = config.placement
            && !tags.iter().all(|t| placed.contains(t))
        {
            // Created before its app was pinned: it may be stored anywhere.
            return Err(KvError::Unplaced { stream: store.stream_name.clone(), tags });
        }
        self.stores.lock().expect("stores").insert(bucket.clone(), store.clone());
        Ok(store)
    }
}

/// The live entry of `key`, read from the bucket stream's leader (a direct get may be
/// answered by a replica that has not applied the latest write yet: an actor's committed state
/// or a value just written would read stale), asked again for up to ~3 s while the stream has no
/// leader (its replicas are still being set up, or a new leader is being elected).
async fn entry(store: &kv::Store, key: String) -> Result<Option<Entry>, KvError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let subject = format!("{}{key}", store.prefix);
    let mut tries = 0;
    loop {
        match store.stream.get_last_raw_message_by_subject(subject.as_str()).await {
            Ok(message) => {
                let removed = deleted(&message.headers) || marker(&message.headers);
                return Ok((!removed).then(|| Entry { value: message.payload, revision: message.sequence }));
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e)
                if tries < 30
                    && matches!(e.kind(), LastRawMessageErrorKind::Other | LastRawMessageErrorKind::JetStream(_)) =>
            {
                tries += 1;
                tracing::debug!(error = %e, "the bucket's stream does not answer yet; asking again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(KvError::nats(e)),
        }
    }
}

/// Whether a bucket stream's message deletes its key.
fn deleted(headers: &HeaderMap) -> bool {
    headers.get("KV-Operation").is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"))
}

/// Whether a bucket stream's message is the server's marker of an expired key.
fn marker(headers: &HeaderMap) -> bool {
    headers.get(async_nats::header::NATS_MARKER_REASON).is_some()
}

/// Runs `write` again, for up to ~3 s, while JetStream answers `no stream found`: a bucket
/// just created with several replicas has no leader yet, and nothing was stored.
async fn written<T, E, F, Fut>(mut write: F) -> Result<T, E>
where
    E: std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut tries = 0;
    loop {
        match write().await {
            Err(e) if tries < 30 && no_leader(&e) => {
                tries += 1;
                tracing::debug!(error = %e, "the bucket's stream has no leader yet; writing again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            result => return result,
        }
    }
}

/// Whether `e` (or what caused it) is JetStream's `no stream found` for a publish.
fn no_leader(e: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::context::{PublishError, PublishErrorKind};
    let mut cause = Some(e);
    while let Some(err) = cause {
        if err.downcast_ref::<PublishError>().is_some_and(|p| p.kind() == PublishErrorKind::StreamNotFound) {
            return true;
        }
        cause = err.source();
    }
    false
}

#[async_trait]
impl KvStore for NatsKv {
    async fn get(&self, bucket: &Bucket, key: &str) -> Result<Option<Entry>, KvError> {
        check_key(key)?;
        let store = self.store(bucket).await?;
        entry(&store, hex::encode(key)).await
    }

    async fn set(&self, bucket: &Bucket, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, KvError> {
        check_key(key)?;
        let store = self.store(bucket).await?;
        let Some(ttl) = ttl else {
            return written(|| store.put(hex::encode(key), value.clone())).await.map_err(KvError::nats);
        };
        // A per-message TTL (nats-server >= 2.11) on the key's subject.
        let mut headers = HeaderMap::new();
        headers.insert("Nats-TTL", format!("{}s", ttl.as_secs().max(1)).as_str());
        let subject = format!("$KV.{}.{}", bucket_name(bucket), hex::encode(key));
        let ack = written(|| async {
            self.js.publish_with_headers(subject.clone(), headers.clone(), value.clone()).await?.await
        })
        .await
        .map_err(KvError::nats)?;
        Ok(ack.sequence)
    }

    async fn delete(&self, bucket: &Bucket, key: &str) -> Result<(), KvError> {
        check_key(key)?;
        let store = self.store(bucket).await?;
        written(|| store.delete(hex::encode(key))).await.map_err(KvError::nats)
    }

    async fn compare_and_swap(
        &self,
        bucket: &Bucket,
        key: &str,
        expected: Option<u64>,
        value: Bytes,
    ) -> Result<Swap, KvError> {
        check_key(key)?;
        let store = self.store(bucket).await?;
        let encoded = hex::encode(key);
        let conflict = |store: &kv::Store| {
            let (store, encoded) = (store.clone(), encoded.clone());
            async move { Ok(Swap::Conflict(entry(&store, encoded).await?.map(|e| e.revision))) }
        };
        match expected {
            None => match written(|| store.create(&encoded, value.clone())).await {
                Ok(revision) => Ok(Swap::Done(revision)),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => conflict(&store).await,
                Err(e) => Err(KvError::nats(e)),
            },
            Some(revision) => match written(|| store.update(&encoded, value.clone(), revision)).await {
                Ok(revision) => Ok(Swap::Done(revision)),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => conflict(&store).await,
                Err(e) => Err(KvError::nats(e)),
            },
        }
    }

    async fn compare_and_delete(&self, bucket: &Bucket, key: &str, expected: u64) -> Result<Removal, KvError> {
        check_key(key)?;
        let store = self.store(bucket).await?;
        let encoded = hex::encode(key);
        match written(|| store.delete_expect_revision(&encoded, Some(expected))).await {
            Ok(()) => Ok(Removal::Deleted),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                Ok(Removal::Conflict(entry(&store, encoded).await?.map(|e| e.revision)))
            }
            Err(e) => Err(KvError::nats(e)),
        }
    }

    async fn list(&self, bucket: &Bucket, prefix: &str, cursor: Option<&str>, limit: usize) -> Result<Page, KvError> {
        let store = self.store(bucket).await?;
        let mut keys: Vec<String> = match store.keys().await {
            Ok(stream) => {
                stream
                    .map_err(KvError::nats)
                    .try_filter_map(|k| async move { Ok(hex::decode(&k).ok().and_then(|b| String::from_utf8(b).ok())) })
                    .try_collect()
                    .await?
            }
            Err(e) => return Err(KvError::nats(e)),
        };
        keys.retain(|k| k.starts_with(prefix) && cursor.is_none_or(|c| k.as_str() > c));
        keys.sort();
        let more = keys.len() > limit;
        keys.truncate(limit);
        let cursor = if more { keys.last().cloned() } else { None };
        Ok(Page { keys, cursor })
    }

    fn backend(&self) -> &'static str {
        "nats"
    }

    async fn bucket_names(&self) -> Result<Vec<String>, KvError> {
        let names: Vec<String> = self.js.stream_names().try_collect().await.map_err(KvError::nats)?;
        Ok(names.iter().filter_map(|n| n.strip_prefix("KV_nimbus_kv_").map(str::to_string)).collect())
    }

    async fn follow(&self, bucket: &Bucket) -> Result<Box<dyn ChangeFeed>, KvError> {
        feed::follow(&self.js, &self.store(bucket).await?).await
    }

    async fn unfollow(&self, bucket: &Bucket) -> Result<(), KvError> {
        feed::unfollow(&self.js, &self.store(bucket).await?).await
    }

    async fn stored_bytes(&self, bucket: &Bucket) -> Result<u64, KvError> {
        use async_nats::jetstream::ErrorCode;
        use async_nats::jetstream::context::GetStreamErrorKind;
        // Fresh stream info (the KV store's own status is what it was when it was opened).
        match self.js.get_stream(format!("KV_{}", bucket_name(bucket))).await {
            Ok(stream) => Ok(stream.cached_info().state.bytes),
            Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) => {
                Ok(0)
            }
            Err(e) => Err(KvError::nats(e)),
        }
    }
}

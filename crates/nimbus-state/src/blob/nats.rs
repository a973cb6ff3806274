//! The NATS blob backend: a JetStream Object Store per bucket (`nimbus_blob_<storage name>`,
//! file storage), written and read in the store's own format, so `nats object` tools see the
//! objects.
//!
//! Puts are done here rather than by `ObjectStore::put`, which leaves the chunks of a failed
//! upload in the stream for good: chunks go to a subject of the upload's own (`$O.<store>.C.<id>`),
//! several acknowledgements in flight, and only once all are acknowledged does the object's
//! metadata name them; an upload that fails or is dropped has its chunks purged. Reads fetch one
//! chunk at a time from the stream's leader, so memory stays at a chunk whatever the size.
//!
//! Quotas are checked against the bucket's objects when an upload starts and while it streams;
//! two concurrent uploads into one bucket may together pass it.
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::object_store::{self, InfoErrorKind, ObjectOptions, ObjectStore};
use async_nats::jetstream::stream::{StorageType, Stream as JsStream};
use async_nats::jetstream::{self};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use bytes::BytesMut;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use super::range::select;
use super::{Blob, BlobError, BlobPage, BlobStore, ByteRange, ByteStream, Limits, Meter, ObjectInfo, listed, page};
use crate::Bucket;
use crate::names::check_key;

/// The bytes of a chunk (nats-server's default max payload is 1 MiB; reading a chunk through the
/// JetStream API base64-encodes it).
const CHUNK: usize = 256 * 1024;
/// Chunks published and not acknowledged yet, at most.
const IN_FLIGHT: usize = 8;

/// Blobs in NATS JetStream Object Stores.
pub struct NatsBlobs {
    js: jetstream::Context,
    stores: Mutex<HashMap<Bucket, Store>>,
    replicas: usize,
}

impl std::fmt::Debug for NatsBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBlobs").finish_non_exhaustive()
    }
}

/// A bucket's object store and its stream.
#[derive(Clone)]
struct Store {
    js: jetstream::Context,
    name: String,
    objects: ObjectStore,
    stream: JsStream,
}

fn store_name(bucket: &Bucket) -> String {
    format!("nimbus_blob_{}", bucket.storage_name())
}

impl NatsBlobs {
    /// Connects to the NATS server at `url`.
    pub async fn connect(url: &str) -> Result<Self, BlobError> {
        Ok(Self { js: crate::nats::jetstream(url).await?, stores: Mutex::default(), replicas: 1 })
    }

    /// Keeps new buckets on `replicas` NATS servers (a NATS cluster's RAFT replicates them).
    #[must_use]
    pub fn replicated(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// The bucket's object store, created if new.
    async fn store(&self, bucket: &Bucket) -> Result<Store, BlobError> {
        if let Some(s) = self.stores.lock().expect("stores").get(bucket) {
            return Ok(s.clone());
        }
        let name = store_name(bucket);
        let objects = match self.js.get_object_store(&name).await {
            Ok(s) => s,
            Err(_) => self
                .js
                .create_object_store(object_store::Config {
                    bucket: name.clone(),
                    storage: StorageType::File,
                    num_replicas: self.replicas,
                    ..Default::default()
                })
                .await
                .map_err(BlobError::nats)?,
        };
        let stream = self.js.get_stream(format!("OBJ_{name}")).await.map_err(BlobError::nats)?;
        let store = Store { js: self.js.clone(), name, objects, stream };
        self.stores.lock().expect("stores").insert(bucket.clone(), store.clone());
        Ok(store)
    }
}

impl Store {
    /// The object store's metadata of `key`, unless absent or deleted.
    async fn meta(&self, key: &str) -> Result<Option<object_store::ObjectInfo>, BlobError> {
        match self.objects.info(key).await {
            Ok(info) => Ok((!info.deleted).then_some(info)),
            Err(e) if e.kind() == InfoErrorKind::NotFound => Ok(None),
            Err(e) => Err(BlobError::nats(e)),
        }
    }

    /// Publishes the metadata that makes the chunks of upload `nuid` the object `key`. If the
    /// acknowledgement is lost, asks which object `key` is before answering.
    async fn name_object(
        &self,
        key: &str,
        nuid: String,
        size: u64,
        digest: [u8; 32],
        chunks: usize,
    ) -> Result<object_store::ObjectInfo, BlobError> {
        let meta = object_store::ObjectInfo {
            name: key.to_string(),
            description: None,
            metadata: HashMap::new(),
            headers: None,
            options: Some(ObjectOptions { link: None, max_chunk_size: Some(CHUNK) }),
            bucket: self.name.clone(),
            nuid,
            size: size as usize,
            chunks,
            modified: Some(std::time::SystemTime::now().into()),
            digest: Some(format!("SHA-256={}", URL_SAFE.encode(digest))),
            deleted: false,
        };
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Rollup", "sub");
        let subject = format!("$O.{}.M.{}", self.name, URL_SAFE.encode(key));
        let payload = serde_json::to_vec(&meta).map_err(BlobError::nats)?;
        let published = async { self.js.publish_with_headers(subject, headers, payload.into()).await?.await };
        match published.await {
            Ok(_) => Ok(meta),
            Err(e) => match self.meta(key).await {
                Ok(Some(stored)) if stored.nuid == meta.nuid => Ok(meta),
                _ => Err(BlobError::nats(e)),
            },
        }
    }

    /// Purges the chunks on `subject`.
    async fn purge(&self, subject: &str) -> Result<(), BlobError> {
        self.stream.purge().filter(subject).await.map(|_| ()).map_err(BlobError::nats)
    }
}

/// The chunks of one upload in flight. Unless the upload is stored, its chunks are purged once
/// every one sent is acknowledged (JetStream may store a chunk after a purge sent before it was
/// acknowledged): when the upload fails, before answering; when its future is dropped, in a task.
struct Upload {
    store: Store,
    subject: String,
    acks: VecDeque<PublishAckFuture>,
    settled: bool,
}

impl Upload {
    fn new(store: Store, nuid: &str) -> Self {
        let subject = format!("$O.{}.C.{nuid}", store.name);
        Self { store, subject, acks: VecDeque::new(), settled: false }
    }

    /// Sends `body` as chunks, some acknowledgements in flight; its size and SHA-256 and how
    /// many chunks, once all are acknowledged.
    async fn send(&mut self, mut body: ByteStream, mut meter: Meter) -> Result<(u64, [u8; 32], usize), BlobError> {
        let mut buf = BytesMut::with_capacity(CHUNK);
        let mut chunks = 0;
        let mut ended = false;
        while !ended {
            match body.next().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(BlobError::body)?;
                    meter.take(&chunk)?;
                    buf.extend_from_slice(&chunk);
                }
                None => ended = true,
            }
            while buf.len() >= CHUNK || (ended && !buf.is_empty()) {
                let payload = buf.split_to(buf.len().min(CHUNK)).freeze();
                if self.acks.len() == IN_FLIGHT {
                    self.acks.pop_front().expect("in flight").await.map_err(BlobError::nats)?;
                }
                let ack = self.store.js.publish(self.subject.clone(), payload).await.map_err(BlobError::nats)?;
                self.acks.push_back(ack);
                chunks += 1;
            }
        }
        while let Some(ack) = self.acks.pop_front() {
            ack.await.map_err(BlobError::nats)?;
        }
        let (size, digest) = meter.finish();
        Ok((size, digest, chunks))
    }

    /// Keeps the chunks if the upload is stored, else purges them before answering.
    async fn settle<T>(mut self, stored: Result<T, BlobError>) -> Result<T, BlobError> {
        self.settled = true;
        if stored.is_err() {
            discard(self.store.clone(), self.subject.clone(), std::mem::take(&mut self.acks)).await;
        }
        stored
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if !self.settled {
            let (store, subject, acks) = (self.store.clone(), self.subject.clone(), std::mem::take(&mut self.acks));
            runtime.spawn(discard(store, subject, acks));
        }
    }
}

/// Purges the chunks of a failed upload once those in flight are acknowledged (or refused); a
/// failure is logged (the chunks stay in the stream).
async fn discard(store: Store, subject: String, acks: VecDeque<PublishAckFuture>) {
    for ack in acks {
        let _ = ack.await;
    }
    if let Err(e) = store.purge(&subject).await {
        tracing::warn!(%subject, error = %nimbus_observe::report(&e), "purging the chunks of a failed upload failed");
    }
}

/// Our view of the object store's metadata: the digest as hex.
fn info(meta: &object_store::ObjectInfo) -> Result<ObjectInfo, BlobError> {
    let digest = meta
        .digest
        .as_deref()
        .and_then(|d| d.strip_prefix("SHA-256="))
        .and_then(|d| URL_SAFE.decode(d).ok())
        .ok_or_else(|| BlobError::nats(format!("object {:?} has no SHA-256 digest", meta.name)))?;
    Ok(ObjectInfo {
        key: meta.name.clone(),
        size: meta.size as u64,
        digest: hex::encode(digest),
        created: meta.modified.map_or(std::time::UNIX_EPOCH, Into::into),
    })
}

/// Reads bytes `start .. start + len` of the object whose chunks are on `subject`, one chunk at
/// a time; a whole read checks the digest.
fn read_stream(stream: JsStream, subject: String, start: u64, len: u64, digest: Option<String>) -> ByteStream {
    struct Read {
        stream: JsStream,
        subject: String,
        next_seq: u64,
        /// The object's offset of the next chunk's first byte.
        at: u64,
        start: u64,
        end: u64,
        check: Option<(Sha256, String)>,
    }
    let read = Read {
        stream,
        subject,
        next_seq: 1,
        at: 0,
        start,
        end: start + len,
        check: digest.map(|d| (Sha256::new(), d)),
    };
    Box::pin(futures::stream::try_unfold(read, |mut r| async move {
        loop {
            if r.at >= r.end {
                if let Some((hasher, want)) = r.check.take()
                    && hex::encode(hasher.finalize()) != want
                {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the object's bytes do not match its digest",
                    ));
                }
                return Ok(None);
            }
            let message = r
                .stream
                .raw_message_builder()
                .sequence(r.next_seq)
                .next_by_subject(r.subject.clone())
                .send()
                .await
                .map_err(std::io::Error::other)?;
            r.next_seq = message.sequence + 1;
            let chunk = message.payload;
            if let Some((hasher, _)) = &mut r.check {
                hasher.update(&chunk);
            }
            let (from, to) = (r.at, r.at + chunk.len() as u64);
            r.at = to;
            if to <= r.start {
                continue;
            }
            let slice = chunk.slice((r.start.max(from) - from) as usize..(r.end.min(to) - from) as usize);
            return Ok(Some((slice, r)));
        }
    }))
}

#[async_trait]
impl BlobStore for NatsBlobs {
    async fn put(&self, bucket: &Bucket, key: &str, body: ByteStream, limits: Limits) -> Result<ObjectInfo, BlobError> {
        check_key(key)?;
        let store = self.store(bucket).await?;
        let old = store.meta(key).await?;
        let others = self.used_bytes(bucket).await?.saturating_sub(old.as_ref().map_or(0, |o| o.size as u64));
        let meter = Meter::new(bucket, limits, others);
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| BlobError::nats(e.to_string()))?;
        let nuid = hex::encode(id);
        let mut upload = Upload::new(store.clone(), &nuid);
        let stored = match upload.send(body, meter).await {
            Ok((size, digest, count)) => store.name_object(key, nuid, size, digest, count).await,
            Err(e) => Err(e),
        };
        let meta = upload.settle(stored).await?;
        if let Some(old) = old {
            let subject = format!("$O.{}.C.{}", store.name, old.nuid);
            if let Err(e) = store.purge(&subject).await {
                tracing::warn!(%subject, error = %nimbus_observe::report(&e), "purging a replaced object's chunks failed");
            }
        }
        info(&meta)
    }

    async fn get(&self, bucket: &Bucket, key: &str, range: Option<ByteRange>) -> Result<Option<Blob>, BlobError> {
        check_key(key)?;
        let store = self.store(bucket).await?;
        let Some(meta) = store.meta(key).await? else { return Ok(None) };
        let info = info(&meta)?;
        let (start, len) = select(range, info.size)?;
        let whole = (start == 0 && len == info.size).then(|| info.digest.clone());
        let subject = format!("$O.{}.C.{}", store.name, meta.nuid);
        Ok(Some(Blob { info, start, len, body: read_stream(store.stream, subject, start, len, whole) }))
    }

    async fn head(&self, bucket: &Bucket, key: &str) -> Result<Option<ObjectInfo>, BlobError> {
        check_key(key)?;
        let store = self.store(bucket).await?;
        store.meta(key).await?.as_ref().map(info).transpose()
    }

    async fn delete(&self, bucket: &Bucket, key: &str) -> Result<bool, BlobError> {
        check_key(key)?;
        let store = self.store(bucket).await?;
        if store.meta(key).await?.is_none() {
            return Ok(false);
        }
        store.objects.delete(key).await.map_err(BlobError::nats)?;
        Ok(true)
    }

    async fn list(
        &self,
        bucket: &Bucket,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<BlobPage, BlobError> {
        let store = self.store(bucket).await?;
        let all: Vec<object_store::ObjectInfo> =
            store.objects.list().await.map_err(BlobError::nats)?.try_collect().await.map_err(BlobError::nats)?;
        let mut objects =
            all.iter().filter(|m| listed(&m.name, prefix, cursor)).map(info).collect::<Result<Vec<_>, _>>()?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(page(objects, limit))
    }

    async fn used_bytes(&self, bucket: &Bucket) -> Result<u64, BlobError> {
        let store = self.store(bucket).await?;
        let mut list = store.objects.list().await.map_err(BlobError::nats)?;
        let mut used = 0;
        while let Some(meta) = list.try_next().await.map_err(BlobError::nats)? {
            used += meta.size as u64;
        }
        Ok(used)
    }

    fn backend(&self) -> &'static str {
        "nats"
    }
}

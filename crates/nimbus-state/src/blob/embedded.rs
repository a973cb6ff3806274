//! The embedded blob backend: content-addressed files under a directory
//! (`sha256/ab/cdef…`, one file per distinct content) and a redb index (`index.redb`) of which
//! key names which content, how many keys name each content, and the bytes each bucket holds.
//!
//! A put streams to `tmp/` while hashing, fsyncs the file, renames it to its digest's path (or
//! drops it if that content is stored already), fsyncs the directory, then commits the index
//! durably. A delete or overwrite commits first and removes a file once no key names it. So a
//! crash leaves the old object or the new one; what it can strand (temp files, files no key
//! names) is swept when the store opens.
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::range::select;
use super::{Blob, BlobError, BlobPage, BlobStore, ByteRange, ByteStream, Limits, Meter, ObjectInfo, listed, page};
use crate::names::check_key;
use crate::{Bucket, KvError};

/// `(bucket storage name, key) -> (digest hex, size, created ms since the epoch)`.
const OBJECTS: TableDefinition<'_, (&str, &str), (&str, u64, u64)> = TableDefinition::new("blob_objects");
/// `digest hex -> how many keys name it`.
const REFS: TableDefinition<'_, &str, u64> = TableDefinition::new("blob_refs");
/// `bucket storage name -> the bytes its objects hold`.
const USAGE: TableDefinition<'_, &str, u64> = TableDefinition::new("blob_usage");
/// The bytes a read returns at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Blobs in a directory on this node.
#[derive(Debug, Clone)]
pub struct EmbeddedBlobs {
    dir: Arc<PathBuf>,
    db: Arc<Database>,
    /// Held while the index and the content files change together, so a file is never removed
    /// while a put is about to name it.
    commit: Arc<Mutex<()>>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn info(key: &str, (digest, size, created): (&str, u64, u64)) -> ObjectInfo {
    ObjectInfo {
        key: key.to_string(),
        size,
        digest: digest.to_string(),
        created: UNIX_EPOCH + Duration::from_millis(created),
    }
}

impl EmbeddedBlobs {
    /// Opens (or creates) the blob store in `dir` and sweeps what a crash left behind.
    pub fn open(dir: &Path) -> Result<Self, BlobError> {
        let open = |e: std::io::Error| KvError::Open { path: dir.to_path_buf(), source: nimbus_observe::cause(e) };
        std::fs::create_dir_all(dir.join("tmp")).map_err(open)?;
        std::fs::create_dir_all(dir.join("sha256")).map_err(open)?;
        let index = dir.join("index.redb");
        let db = crate::embedded::create_db(&index)?;
        let txn = db.begin_write().map_err(BlobError::store)?;
        txn.open_table(OBJECTS).map_err(BlobError::store)?;
        txn.open_table(REFS).map_err(BlobError::store)?;
        txn.open_table(USAGE).map_err(BlobError::store)?;
        txn.commit().map_err(BlobError::store)?;
        let store = Self { dir: Arc::new(dir.to_path_buf()), db: Arc::new(db), commit: Arc::default() };
        store.sweep().map_err(open)?;
        Ok(store)
    }

    /// Removes temp files and content files no key names.
    fn sweep(&self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(self.dir.join("tmp"))? {
            std::fs::remove_file(entry?.path())?;
        }
        let read = self.db.begin_read().map_err(std::io::Error::other)?;
        let refs = read.open_table(REFS).map_err(std::io::Error::other)?;
        for shard in std::fs::read_dir(self.dir.join("sha256"))? {
            let shard = shard?;
            for file in std::fs::read_dir(shard.path())? {
                let file = file?;
                let digest = format!("{}{}", shard.file_name().to_string_lossy(), file.file_name().to_string_lossy());
                if refs.get(digest.as_str()).map_err(std::io::Error::other)?.is_none() {
                    tracing::info!(%digest, "removing a blob no key names (left by a crash)");
                    std::fs::remove_file(file.path())?;
                }
            }
        }
        Ok(())
    }

    /// Where the content with `digest` is stored.
    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join("sha256").join(&digest[..2]).join(&digest[2..])
    }

    fn lookup(&self, bucket: &Bucket, key: &str) -> Result<Option<ObjectInfo>, BlobError> {
        let read = self.db.begin_read().map_err(BlobError::store)?;
        let objects = read.open_table(OBJECTS).map_err(BlobError::store)?;
        let found = objects.get((bucket.storage_name(), key)).map_err(BlobError::store)?;
        Ok(found.map(|v| info(key, v.value())))
    }

    fn usage(&self, bucket: &Bucket) -> Result<u64, BlobError> {
        let read = self.db.begin_read().map_err(BlobError::store)?;
        let usage = read.open_table(USAGE).map_err(BlobError::store)?;
        Ok(usage.get(bucket.storage_name()).map_err(BlobError::store)?.map_or(0, |v| v.value()))
    }

    /// Streams `body` into a synced temp file while `meter` counts and hashes it.
    async fn receive(&self, mut body: ByteStream, meter: &mut Meter) -> Result<TempFile, BlobError> {
        let mut name = [0u8; 16];
        getrandom::fill(&mut name).map_err(|e| BlobError::store(e.to_string()))?;
        let temp = TempFile(self.dir.join("tmp").join(hex::encode(name)));
        let mut file = std::fs::File::create(&temp.0).map_err(BlobError::store)?;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(BlobError::body)?;
            meter.take(&chunk)?;
            file = tokio::task::spawn_blocking(move || file.write_all(&chunk).map(|()| file))
                .await
                .map_err(BlobError::store)?
                .map_err(BlobError::store)?;
        }
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(BlobError::store)?
            .map_err(BlobError::store)?;
        Ok(temp)
    }

    /// Moves the synced `temp` to its digest's path and points `key` at it, in one durable
    /// index commit; refused if the bucket would pass its quota.
    fn install(
        &self,
        bucket: &Bucket,
        key: &str,
        temp: TempFile,
        digest: &str,
        size: u64,
        quota: Option<u64>,
    ) -> Result<ObjectInfo, BlobError> {
        let _held = self.commit.lock().expect("commit lock");
        let txn = self.db.begin_write().map_err(BlobError::store)?;
        let old = txn
            .open_table(OBJECTS)
            .map_err(BlobError::store)?
            .get((bucket.storage_name(), key))
            .map_err(BlobError::store)?
            .map(|v| info(key, v.value()));
        let used = self.usage_in(&txn, bucket)?.saturating_sub(old.as_ref().map_or(0, |o| o.size)) + size;
        if let Some(quota) = quota.filter(|&q| used > q) {
            return Err(BlobError::QuotaExceeded { bucket: bucket.to_string(), quota });
        }
        let target = self.path(digest);
        let placed = !target.exists();
        if !placed {
            drop(temp);
        } else {
            let shard = target.parent().expect("a digest's shard");
            std::fs::create_dir_all(shard).map_err(BlobError::store)?;
            temp.rename_to(&target).map_err(BlobError::store)?;
            sync_dir(shard)?;
            sync_dir(&self.dir.join("sha256"))?;
        }
        let created = now_ms();
        txn.open_table(OBJECTS)
            .map_err(BlobError::store)?
            .insert((bucket.storage_name(), key), (digest, size, created))
            .map_err(BlobError::store)?;
        add_ref(&txn, digest, 1)?;
        let freed = match &old {
            Some(o) => add_ref(&txn, &o.digest, -1)?.then(|| o.digest.clone()),
            None => None,
        };
        txn.open_table(USAGE)
            .map_err(BlobError::store)?
            .insert(bucket.storage_name(), used)
            .map_err(BlobError::store)?;
        if let Err(e) = txn.commit() {
            if placed {
                self.remove_content(digest);
            }
            return Err(BlobError::store(e));
        }
        if let Some(freed) = freed {
            self.remove_content(&freed);
        }
        Ok(info(key, (digest, size, created)))
    }

    fn usage_in(&self, txn: &WriteTransaction, bucket: &Bucket) -> Result<u64, BlobError> {
        let usage = txn.open_table(USAGE).map_err(BlobError::store)?;
        Ok(usage.get(bucket.storage_name()).map_err(BlobError::store)?.map_or(0, |v| v.value()))
    }

    fn remove(&self, bucket: &Bucket, key: &str) -> Result<bool, BlobError> {
        let _held = self.commit.lock().expect("commit lock");
        let txn = self.db.begin_write().map_err(BlobError::store)?;
        let Some(old) = txn
            .open_table(OBJECTS)
            .map_err(BlobError::store)?
            .remove((bucket.storage_name(), key))
            .map_err(BlobError::store)?
            .map(|v| info(key, v.value()))
        else {
            return Ok(false);
        };
        let used = self.usage_in(&txn, bucket)?.saturating_sub(old.size);
        txn.open_table(USAGE)
            .map_err(BlobError::store)?
            .insert(bucket.storage_name(), used)
            .map_err(BlobError::store)?;
        let freed = add_ref(&txn, &old.digest, -1)?;
        txn.commit().map_err(BlobError::store)?;
        if freed {
            self.remove_content(&old.digest);
        }
        Ok(true)
    }

    /// Removes the file of content no key names any more (a failure leaves it to the next sweep).
    fn remove_content(&self, digest: &str) {
        if let Err(e) = std::fs::remove_file(self.path(digest)) {
            tracing::warn!(%digest, error = %e, "removing an unused blob failed; the next start removes it");
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Self) -> Result<T, BlobError> + Send + 'static,
    ) -> Result<T, BlobError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(this)).await.map_err(BlobError::store)?
    }
}

/// Adds `delta` to the keys naming `digest`; whether none does any more.
fn add_ref(txn: &WriteTransaction, digest: &str, delta: i64) -> Result<bool, BlobError> {
    let mut refs = txn.open_table(REFS).map_err(BlobError::store)?;
    let n = refs.get(digest).map_err(BlobError::store)?.map_or(0, |v| v.value()).saturating_add_signed(delta);
    if n == 0 {
        refs.remove(digest).map_err(BlobError::store)?;
    } else {
        refs.insert(digest, n).map_err(BlobError::store)?;
    }
    Ok(n == 0)
}

/// Makes a directory's entries durable.
fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(BlobError::store)
}

/// A temp file, removed when dropped (an upload that failed or was abandoned).
struct TempFile(PathBuf);

impl TempFile {
    /// Moves the file to `target`, where it stays.
    fn rename_to(mut self, target: &Path) -> std::io::Result<()> {
        std::fs::rename(&self.0, target)?;
        self.0.clear();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Reads `len` bytes of `file` from `start`, a chunk at a time.
fn read_stream(file: std::fs::File, start: u64, len: u64) -> ByteStream {
    let state = (Some(file), start, len);
    Box::pin(futures::stream::unfold(state, |(file, at, left)| async move {
        let mut file = file.filter(|_| left > 0)?;
        let want = left.min(READ_CHUNK as u64) as usize;
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = BytesMut::zeroed(want);
            file.seek(SeekFrom::Start(at))?;
            std::io::Read::read_exact(&mut file, &mut buf)?;
            Ok::<_, std::io::Error>((file, buf.freeze()))
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        Some(match read {
            Ok((file, bytes)) => (Ok::<Bytes, _>(bytes), (Some(file), at + want as u64, left - want as u64)),
            Err(e) => (Err(e), (None, at, 0)),
        })
    }))
}

#[async_trait]
impl BlobStore for EmbeddedBlobs {
    async fn put(&self, bucket: &Bucket, key: &str, body: ByteStream, limits: Limits) -> Result<ObjectInfo, BlobError> {
        check_key(key)?;
        let replaced = self.lookup(bucket, key)?.map_or(0, |o| o.size);
        let mut meter = Meter::new(bucket, limits, self.usage(bucket)?.saturating_sub(replaced));
        let temp = self.receive(body, &mut meter).await?;
        let (size, digest) = meter.finish();
        let (bucket, key, digest) = (bucket.clone(), key.to_string(), hex::encode(digest));
        self.blocking(move |s| s.install(&bucket, &key, temp, &digest, size, limits.quota)).await
    }

    async fn get(&self, bucket: &Bucket, key: &str, range: Option<ByteRange>) -> Result<Option<Blob>, BlobError> {
        check_key(key)?;
        let Some(info) = self.lookup(bucket, key)? else { return Ok(None) };
        let (start, len) = select(range, info.size)?;
        let file = match std::fs::File::open(self.path(&info.digest)) {
            Ok(f) => f,
            // Deleted since it was looked up.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(BlobError::store(e)),
        };
        Ok(Some(Blob { info, start, len, body: read_stream(file, start, len) }))
    }

    async fn head(&self, bucket: &Bucket, key: &str) -> Result<Option<ObjectInfo>, BlobError> {
        check_key(key)?;
        self.lookup(bucket, key)
    }

    async fn delete(&self, bucket: &Bucket, key: &str) -> Result<bool, BlobError> {
        check_key(key)?;
        let (bucket, key) = (bucket.clone(), key.to_string());
        self.blocking(move |s| s.remove(&bucket, &key)).await
    }

    async fn list(
        &self,
        bucket: &Bucket,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<BlobPage, BlobError> {
        let read = self.db.begin_read().map_err(BlobError::store)?;
        let objects = read.open_table(OBJECTS).map_err(BlobError::store)?;
        let name = bucket.storage_name();
        let from = cursor.filter(|c| *c > prefix).unwrap_or(prefix);
        let mut out = Vec::new();
        for row in objects.range((name, from)..).map_err(BlobError::store)? {
            let (k, v) = row.map_err(BlobError::store)?;
            let (b, key) = k.value();
            if b != name || !key.starts_with(prefix) || out.len() > limit {
                break;
            }
            if listed(key, prefix, cursor) {
                out.push(info(key, v.value()));
            }
        }
        Ok(page(out, limit))
    }

    async fn used_bytes(&self, bucket: &Bucket) -> Result<u64, BlobError> {
        self.usage(bucket)
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }
}

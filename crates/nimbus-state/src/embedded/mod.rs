//! The embedded backend: every bucket a table in one redb file; writes group-committed and
//! fsynced before they return; keys with a TTL indexed by expiry and deleted by a periodic sweep;
//! the changes of followed buckets written to an outbox in the same transaction ([`feed`]).
mod feed;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use crate::feed::ChangeFeed;
use crate::kv::{Entry, KvStore, Page, Removal, Swap};
use crate::names::check_key;
use crate::value_format;
use crate::{Bucket, KvError};

const REVISIONS: TableDefinition<'_, &str, u64> = TableDefinition::new("kv_revisions");
/// Keys with a TTL by expiry time: `(expires ms, bucket, key)`, so expired keys are found without
/// scanning the buckets.
const EXPIRY: TableDefinition<'_, (u64, &str, &str), ()> = TableDefinition::new("kv_expiry");
/// How often expired keys are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// The most expired keys one sweep deletes.
const SWEEP_MAX: usize = 10_000;

fn table(bucket: &Bucket) -> String {
    format!("kv/{}", bucket.storage_name())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The entry a stored value holds, `None` if its TTL has passed.
fn decode(bytes: &[u8]) -> Result<Option<Entry>, KvError> {
    let r = value_format::decode(bytes)?;
    Ok((r.expires == 0 || r.expires > now_ms())
        .then(|| Entry { value: Bytes::copy_from_slice(r.value), revision: r.revision }))
}

/// A write run inside a shared transaction, answered once the transaction's fate is known.
trait Work: Send {
    /// Runs the write; an `Err` is a store failure that aborts the whole batch.
    fn run(&mut self, txn: &WriteTransaction) -> Result<(), KvError>;
    /// Answers the caller: its own outcome if the batch committed, else the batch's failure.
    fn finish(self: Box<Self>, committed: Result<(), KvError>);
}

struct Op<T, F> {
    f: Option<F>,
    out: Option<Result<T, KvError>>,
    reply: tokio::sync::oneshot::Sender<Result<T, KvError>>,
}

impl<T: Send, F: FnOnce(&WriteTransaction) -> Result<T, KvError> + Send> Work for Op<T, F> {
    fn run(&mut self, txn: &WriteTransaction) -> Result<(), KvError> {
        let out = (self.f.take().expect("run once"))(txn);
        if let Err(KvError::Store(e)) = &out {
            return Err(KvError::Store(e.clone()));
        }
        self.out = Some(out);
        Ok(())
    }

    fn finish(self: Box<Self>, committed: Result<(), KvError>) {
        let answer = match (committed, self.out) {
            (Ok(()), Some(out)) => out,
            (Err(e), _) => Err(e),
            (Ok(()), None) => Err(KvError::store("the write was not run")),
        };
        let _ = self.reply.send(answer);
    }
}

type Job = Box<dyn Work>;

/// The most writes one commit takes.
const MAX_BATCH: usize = 1024;

/// KV buckets in `state.redb` on this node. Writes are group-committed: every write waiting when
/// a commit starts shares its transaction and its fsync, and each is answered only after it.
#[derive(Debug, Clone)]
pub struct Embedded {
    db: Arc<Database>,
    writer: Arc<Writer>,
    /// Counts commits, so change feeds wait for one instead of polling.
    commits: tokio::sync::watch::Receiver<u64>,
}

/// The group-commit thread; when the last handle goes, it finishes what it has and is joined,
/// so the file can be opened again at once.
struct Writer {
    jobs: std::sync::Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.lock().expect("jobs").take());
        if let Some(thread) = self.thread.lock().expect("thread").take() {
            let _ = thread.join();
        }
    }
}

/// Opens (or creates) the redb file at `path`, refusing one another process holds.
pub(crate) fn create_db(path: &Path) -> Result<Database, KvError> {
    Database::create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => KvError::InUse { path: path.to_path_buf() },
        e => KvError::Open { path: path.to_path_buf(), source: nimbus_observe::cause(e) },
    })
}

impl Embedded {
    /// Opens (or creates) the state file at `path`.
    pub fn open(path: &Path) -> Result<Self, KvError> {
        let db = create_db(path)?;
        let txn = db.begin_write().map_err(KvError::store)?;
        txn.open_table(REVISIONS).map_err(KvError::store)?;
        txn.open_table(EXPIRY).map_err(KvError::store)?;
        feed::create_tables(&txn)?;
        txn.commit().map_err(KvError::store)?;
        let db = Arc::new(db);
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let (committed, commits) = tokio::sync::watch::channel(0);
        let for_thread = db.clone();
        let thread = std::thread::Builder::new()
            .name("nimbus-kv-writer".into())
            .spawn(move || group_commit(&for_thread, &rx, &committed))
            .map_err(KvError::store)?;
        let writer = Writer { jobs: std::sync::Mutex::new(Some(jobs)), thread: std::sync::Mutex::new(Some(thread)) };
        Ok(Self { db, writer: Arc::new(writer), commits })
    }

    /// Runs `f` in the next group commit and answers once that is durable.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, KvError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(Op { f: Some(f), out: None, reply });
        let jobs = self.writer.jobs.lock().expect("jobs").clone().ok_or(KvError::Closed)?;
        jobs.send(job).map_err(|_| KvError::Closed)?;
        rx.await.map_err(|_| KvError::Closed)?
    }

    /// Deletes the keys whose TTL has passed now (a background sweep does it every 10 s);
    /// returns how many.
    pub async fn delete_expired(&self) -> Result<usize, KvError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || sweep(&db)).await.map_err(|_| KvError::Closed)?
    }

    fn read_entry(&self, bucket: &Bucket, key: &str) -> Result<Option<Entry>, KvError> {
        let read = self.db.begin_read().map_err(KvError::store)?;
        let name = table(bucket);
        let t = match read.open_table(TableDefinition::<&str, &[u8]>::new(&name)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(KvError::store(e)),
        };
        t.get(key).map_err(KvError::store)?.map_or(Ok(None), |v| decode(v.value()))
    }
}

/// The writer thread: takes every job waiting, runs them in one transaction, commits it durably,
/// then answers each. A store failure in any job aborts the batch and fails all of its jobs.
fn group_commit(db: &Database, rx: &std::sync::mpsc::Receiver<Job>, committed: &tokio::sync::watch::Sender<u64>) {
    let mut last_sweep = std::time::Instant::now();
    loop {
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = std::time::Instant::now();
            if let Err(e) = sweep(db) {
                tracing::warn!(error = %nimbus_observe::report(&e), "deleting expired keys failed; trying again later");
            }
        }
        let first = match rx.recv_timeout(SWEEP_EVERY) {
            Ok(job) => job,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = (|| {
            let txn = db.begin_write().map_err(KvError::store)?;
            for job in &mut batch {
                job.run(&txn)?;
            }
            txn.commit().map_err(KvError::store)
        })();
        if let Err(e) = &outcome {
            tracing::error!(error = %nimbus_observe::report(e), "state store commit failed; the writes in it were not acknowledged");
        } else {
            committed.send_modify(|n| *n = n.wrapping_add(1));
        }
        for job in batch {
            job.finish(outcome.clone());
        }
    }
}

/// Deletes keys whose TTL has passed (reads already treat them as absent); returns how many.
fn sweep(db: &Database) -> Result<usize, KvError> {
    let txn = db.begin_write().map_err(KvError::store)?;
    let expired: Vec<(u64, String, String)> = {
        let index = txn.open_table(EXPIRY).map_err(KvError::store)?;
        let now = now_ms();
        index
            .range(..(now, "", ""))
            .map_err(KvError::store)?
            .take(SWEEP_MAX)
            .map(|e| e.map(|(k, _)| (k.value().0, k.value().1.to_string(), k.value().2.to_string())))
            .collect::<Result<_, _>>()
            .map_err(KvError::store)?
    };
    for (at, bucket, key) in &expired {
        let name = format!("kv/{bucket}");
        let mut t = txn.open_table(TableDefinition::<&str, &[u8]>::new(&name)).map_err(KvError::store)?;
        let current = t.get(key.as_str()).map_err(KvError::store)?.map(|v| expiry_of(v.value())).transpose()?;
        if current == Some(*at) {
            t.remove(key.as_str()).map_err(KvError::store)?;
        }
        drop(t);
        txn.open_table(EXPIRY)
            .map_err(KvError::store)?
            .remove((*at, bucket.as_str(), key.as_str()))
            .map_err(KvError::store)?;
    }
    txn.commit().map_err(KvError::store)?;
    if !expired.is_empty() {
        tracing::debug!(deleted = expired.len(), "expired keys deleted");
    }
    Ok(expired.len())
}

fn expiry_of(record: &[u8]) -> Result<u64, KvError> {
    Ok(value_format::decode(record)?.expires)
}

/// Removes the expiry index entry of the value `key` has now, if it has a TTL.
fn forget_expiry(txn: &WriteTransaction, bucket: &Bucket, key: &str) -> Result<(), KvError> {
    let name = table(bucket);
    let t = txn.open_table(TableDefinition::<&str, &[u8]>::new(&name)).map_err(KvError::store)?;
    let old = t.get(key).map_err(KvError::store)?.map(|v| expiry_of(v.value())).transpose()?;
    drop(t);
    if let Some(at) = old.filter(|&at| at != 0) {
        txn.open_table(EXPIRY)
            .map_err(KvError::store)?
            .remove((at, bucket.storage_name(), key))
            .map_err(KvError::store)?;
    }
    Ok(())
}

/// Takes the bucket's next revision.
fn next_revision(txn: &WriteTransaction, bucket: &Bucket) -> Result<u64, KvError> {
    let mut revisions = txn.open_table(REVISIONS).map_err(KvError::store)?;
    let revision = revisions.get(bucket.storage_name()).map_err(KvError::store)?.map_or(0, |v| v.value()) + 1;
    revisions.insert(bucket.storage_name(), revision).map_err(KvError::store)?;
    Ok(revision)
}

/// Writes `value` under the bucket's next revision.
fn put(
    txn: &WriteTransaction,
    bucket: &Bucket,
    key: &str,
    value: &[u8],
    ttl: Option<Duration>,
) -> Result<u64, KvError> {
    let revision = next_revision(txn, bucket)?;
    let expires = ttl.map_or(0, |t| now_ms() + t.as_millis().max(1) as u64);
    forget_expiry(txn, bucket, key)?;
    if expires != 0 {
        txn.open_table(EXPIRY)
            .map_err(KvError::store)?
            .insert((expires, bucket.storage_name(), key), ())
            .map_err(KvError::store)?;
    }
    let record = value_format::encode(revision, expires, value);
    let name = table(bucket);
    let mut t = txn.open_table(TableDefinition::<&str, &[u8]>::new(&name)).map_err(KvError::store)?;
    t.insert(key, record.as_slice()).map_err(KvError::store)?;
    drop(t);
    feed::record(txn, bucket, key, revision, Some(value))?;
    Ok(revision)
}

/// Deletes `key`; a key that had a value takes the bucket's next revision, and a followed
/// bucket records the deletion.
fn remove(txn: &WriteTransaction, bucket: &Bucket, key: &str) -> Result<(), KvError> {
    forget_expiry(txn, bucket, key)?;
    let name = table(bucket);
    let mut t = txn.open_table(TableDefinition::<&str, &[u8]>::new(&name)).map_err(KvError::store)?;
    let had = t.remove(key).map_err(KvError::store)?.is_some();
    drop(t);
    if had {
        let revision = next_revision(txn, bucket)?;
        feed::record(txn, bucket, key, revision, None)?;
    }
    Ok(())
}

fn current(txn: &WriteTransaction, bucket: &Bucket, key: &str) -> Result<Option<Entry>, KvError> {
    let name = table(bucket);
    let t = txn.open_table(TableDefinition::<&str, &[u8]>::new(&name)).map_err(KvError::store)?;
    t.get(key).map_err(KvError::store)?.map_or(Ok(None), |v| decode(v.value()))
}

#[async_trait]
impl KvStore for Embedded {
    async fn get(&self, bucket: &Bucket, key: &str) -> Result<Option<Entry>, KvError> {
        check_key(key)?;
        self.read_entry(bucket, key)
    }

    async fn set(&self, bucket: &Bucket, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, KvError> {
        check_key(key)?;
        let (bucket, key) = (bucket.clone(), key.to_string());
        self.write(move |txn| put(txn, &bucket, &key, &value, ttl)).await
    }

    async fn delete(&self, bucket: &Bucket, key: &str) -> Result<(), KvError> {
        check_key(key)?;
        let (bucket, key) = (bucket.clone(), key.to_string());
        self.write(move |txn| remove(txn, &bucket, &key)).await
    }

    async fn compare_and_swap(
        &self,
        bucket: &Bucket,
        key: &str,
        expected: Option<u64>,
        value: Bytes,
    ) -> Result<Swap, KvError> {
        check_key(key)?;
        let (bucket, key) = (bucket.clone(), key.to_string());
        self.write(move |txn| {
            let now = current(txn, &bucket, &key)?.map(|e| e.revision);
            if now != expected {
                return Ok(Swap::Conflict(now));
            }
            put(txn, &bucket, &key, &value, None).map(Swap::Done)
        })
        .await
    }

    async fn compare_and_delete(&self, bucket: &Bucket, key: &str, expected: u64) -> Result<Removal, KvError> {
        check_key(key)?;
        let (bucket, key) = (bucket.clone(), key.to_string());
        self.write(move |txn| {
            let now = current(txn, &bucket, &key)?.map(|e| e.revision);
            if now != Some(expected) {
                return Ok(Removal::Conflict(now));
            }
            remove(txn, &bucket, &key).map(|()| Removal::Deleted)
        })
        .await
    }

    async fn list(&self, bucket: &Bucket, prefix: &str, cursor: Option<&str>, limit: usize) -> Result<Page, KvError> {
        let read = self.db.begin_read().map_err(KvError::store)?;
        let name = table(bucket);
        let t = match read.open_table(TableDefinition::<&str, &[u8]>::new(&name)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Page { keys: Vec::new(), cursor: None }),
            Err(e) => return Err(KvError::store(e)),
        };
        let start = cursor.unwrap_or(prefix);
        let mut keys = Vec::new();
        for entry in t.range(start..).map_err(KvError::store)? {
            let (k, v) = entry.map_err(KvError::store)?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            if Some(k) == cursor || decode(v.value())?.is_none() {
                continue;
            }
            if keys.len() == limit {
                let last = keys.last().cloned();
                return Ok(Page { keys, cursor: last });
            }
            keys.push(k.to_string());
        }
        Ok(Page { keys, cursor: None })
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn bucket_names(&self) -> Result<Vec<String>, KvError> {
        let read = self.db.begin_read().map_err(KvError::store)?;
        let tables = read.list_tables().map_err(KvError::store)?;
        Ok(tables.filter_map(|t| t.name().strip_prefix("kv/").map(str::to_string)).collect())
    }

    async fn stored_bytes(&self, bucket: &Bucket) -> Result<u64, KvError> {
        let (db, name) = (self.db.clone(), table(bucket));
        let read = move || {
            let read = db.begin_read().map_err(KvError::store)?;
            match read.open_table(TableDefinition::<&str, &[u8]>::new(&name)) {
                Ok(t) => Ok(redb::ReadableTableMetadata::stats(&t).map_err(KvError::store)?.stored_bytes()),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
                Err(e) => Err(KvError::store(e)),
            }
        };
        tokio::task::spawn_blocking(read).await.map_err(|_| KvError::Closed)?
    }

    async fn follow(&self, bucket: &Bucket) -> Result<Box<dyn ChangeFeed>, KvError> {
        feed::follow(self, bucket).await
    }

    async fn unfollow(&self, bucket: &Bucket) -> Result<(), KvError> {
        feed::unfollow(self, bucket).await
    }

    async fn increment(&self, bucket: &Bucket, key: &str, delta: i64) -> Result<i64, KvError> {
        check_key(key)?;
        let (bucket, key) = (bucket.clone(), key.to_string());
        self.write(move |txn| {
            let n = match current(txn, &bucket, &key)? {
                None => 0,
                Some(e) => crate::kv::parse_int(&key, &e.value)?,
            };
            let next = n.checked_add(delta).ok_or_else(|| KvError::NotANumber(key.clone()))?;
            put(txn, &bucket, &key, next.to_string().as_bytes(), None)?;
            Ok(next)
        })
        .await
    }

    async fn set_many(&self, bucket: &Bucket, pairs: Vec<(String, Bytes)>) -> Result<(), KvError> {
        for (key, _) in &pairs {
            check_key(key)?;
        }
        let bucket = bucket.clone();
        self.write(move |txn| {
            for (key, value) in &pairs {
                put(txn, &bucket, key, value, None)?;
            }
            Ok(())
        })
        .await
    }
}

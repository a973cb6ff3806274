//! The embedded backend: every bucket a table in one redb file; every write one transaction,
//! fsynced before it returns.
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::kv::{Entry, KvStore, Page, Swap};
use crate::names::check_key;
use crate::{Bucket, KvError};

const REVISIONS: TableDefinition<'_, &str, u64> = TableDefinition::new("kv_revisions");
/// A stored value: `revision u64 | expires ms u64 (0: never) | value`.
const HEADER: usize = 16;

fn table(bucket: &Bucket) -> String {
    format!("kv/{bucket}")
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn decode(bytes: &[u8]) -> Option<Entry> {
    let revision = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let expires = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
    (expires == 0 || expires > now_ms()).then(|| Entry { value: Bytes::copy_from_slice(&bytes[HEADER..]), revision })
}

/// KV buckets in `state.redb` on this node.
#[derive(Debug, Clone)]
pub struct Embedded {
    db: Arc<Database>,
}

impl Embedded {
    /// Opens (or creates) the state file at `path`.
    pub fn open(path: &Path) -> Result<Self, KvError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => KvError::Store(format!(
                "{} is in use by another nimbus process; stop it or use another data dir",
                path.display()
            )),
            e => KvError::Store(format!("cannot open {}: {e}", path.display())),
        })?;
        let txn = db.begin_write().map_err(KvError::store)?;
        txn.open_table(REVISIONS).map_err(KvError::store)?;
        txn.commit().map_err(KvError::store)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Runs `f` in one durable write transaction on a blocking thread.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, KvError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(KvError::store)?;
            let out = f(&txn)?;
            txn.commit().map_err(KvError::store)?;
            Ok(out)
        })
        .await
        .map_err(|_| KvError::Closed)?
    }

    fn read_entry(&self, bucket: &Bucket, key: &str) -> Result<Option<Entry>, KvError> {
        let read = self.db.begin_read().map_err(KvError::store)?;
        let name = table(bucket);
        let t = match read.open_table(TableDefinition::<&str, &[u8]>::new(&name)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(KvError::store(e)),
        };
        Ok(t.get(key).map_err(KvError::store)?.and_then(|v| decode(v.value())))
    }
}

/// Writes `value` under the bucket's next revision.
fn put(
    txn: &WriteTransaction,
    bucket: &Bucket,
    key: &str,
    value: &[u8],
    ttl: Option<Duration>,
) -> Result<u64, KvError> {
    let mut revisions = txn.open_table(REVISIONS).map_err(KvError::store)?;
    let revision = revisions.get(bucket.as_str()).map_err(KvError::store)?.map_or(0, |v| v.value()) + 1;
    revisions.insert(bucket.as_str(), revision).map_err(KvError::store)?;
    let expires = ttl.map_or(0, |t| now_ms() + t.as_millis().max(1) as u64);
    let mut record = Vec::with_capacity(HEADER + value.len());
    record.extend_from_slice(&revision.to_be_bytes());
    record.extend_from_slice(&expires.to_be_bytes());
    record.extend_from_slice(value);
    let name = table(bucket);
    let mut t = txn.open_table(TableDefinition::<&str, &[u8]>::new(&name)).map_err(KvError::store)?;
    t.insert(key, record.as_slice()).map_err(KvError::store)?;
    Ok(revision)
}

fn current(txn: &WriteTransaction, bucket: &Bucket, key: &str) -> Result<Option<Entry>, KvError> {
    let name = table(bucket);
    let t = txn.open_table(TableDefinition::<&str, &[u8]>::new(&name)).map_err(KvError::store)?;
    Ok(t.get(key).map_err(KvError::store)?.and_then(|v| decode(v.value())))
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
        self.write(move |txn| {
            let name = table(&bucket);
            let mut t = txn.open_table(TableDefinition::<&str, &[u8]>::new(&name)).map_err(KvError::store)?;
            t.remove(key.as_str()).map_err(KvError::store)?;
            Ok(())
        })
        .await
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
            if Some(k) == cursor || decode(v.value()).is_none() {
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

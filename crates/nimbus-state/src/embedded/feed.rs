//! The embedded change feed: a followed bucket (a row in `kv_feeds`) gets an outbox row per
//! change in `kv_outbox`, keyed by bucket and revision, written by the same transaction as the
//! change; acknowledging deletes the rows. Followers wait on the store's commit counter.
use std::time::Duration;

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::Embedded;
use crate::feed::{self, Change, ChangeFeed};
use crate::{Bucket, KvError};

/// Followed buckets, by storage name.
const FEEDS: TableDefinition<'_, &str, ()> = TableDefinition::new("kv_feeds");
/// Unacknowledged changes: `(bucket storage name, revision)` → [`feed::encode`]d row.
const OUTBOX: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("kv_outbox");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), KvError> {
    txn.open_table(FEEDS).map_err(KvError::store)?;
    txn.open_table(OUTBOX).map_err(KvError::store)?;
    Ok(())
}

/// Records a change of `bucket` in the outbox if the bucket is followed.
pub(super) fn record(
    txn: &WriteTransaction,
    bucket: &Bucket,
    key: &str,
    revision: u64,
    value: Option<&[u8]>,
) -> Result<(), KvError> {
    if txn.open_table(FEEDS).map_err(KvError::store)?.get(bucket.storage_name()).map_err(KvError::store)?.is_none() {
        return Ok(());
    }
    let row = feed::encode(key, value);
    txn.open_table(OUTBOX)
        .map_err(KvError::store)?
        .insert((bucket.storage_name(), revision), row.as_slice())
        .map_err(KvError::store)?;
    Ok(())
}

pub(super) async fn follow(store: &Embedded, bucket: &Bucket) -> Result<Box<dyn ChangeFeed>, KvError> {
    let name = bucket.storage_name().to_string();
    store
        .write(move |txn| {
            txn.open_table(FEEDS).map_err(KvError::store)?.insert(name.as_str(), ()).map(drop).map_err(KvError::store)
        })
        .await?;
    Ok(Box::new(Feed { store: store.clone(), bucket: bucket.storage_name().to_string(), returned: None }))
}

pub(super) async fn unfollow(store: &Embedded, bucket: &Bucket) -> Result<(), KvError> {
    let name = bucket.storage_name().to_string();
    store
        .write(move |txn| {
            txn.open_table(FEEDS).map_err(KvError::store)?.remove(name.as_str()).map_err(KvError::store)?;
            forget(txn, &name, u64::MAX)
        })
        .await
}

/// Deletes the outbox rows of bucket `name` up to revision `through`.
fn forget(txn: &WriteTransaction, name: &str, through: u64) -> Result<(), KvError> {
    let mut outbox = txn.open_table(OUTBOX).map_err(KvError::store)?;
    outbox.retain_in((name, 0)..=(name, through), |_, _| false).map_err(KvError::store)
}

/// One follower of an embedded bucket.
struct Feed {
    store: Embedded,
    /// The bucket's storage name.
    bucket: String,
    /// The last revision [`ChangeFeed::next`] returned.
    returned: Option<u64>,
}

impl Feed {
    fn read(&self, max: usize) -> Result<Vec<Change>, KvError> {
        let read = self.store.db.begin_read().map_err(KvError::store)?;
        let outbox = read.open_table(OUTBOX).map_err(KvError::store)?;
        let from = self.returned.map_or(0, |r| r + 1);
        let name = self.bucket.as_str();
        outbox
            .range((name, from)..=(name, u64::MAX))
            .map_err(KvError::store)?
            .take(max)
            .map(|row| {
                let (k, v) = row.map_err(KvError::store)?;
                feed::decode(k.value().1, v.value())
            })
            .collect()
    }
}

#[async_trait]
impl ChangeFeed for Feed {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Change>, KvError> {
        let mut commits = self.store.commits.clone();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            commits.borrow_and_update();
            let changes = self.read(max.max(1))?;
            if let Some(last) = changes.last() {
                self.returned = Some(last.revision);
                return Ok(changes);
            }
            match tokio::time::timeout_at(deadline, commits.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(KvError::Closed),
                Err(_) => return Ok(Vec::new()),
            }
        }
    }

    async fn ack(&mut self) -> Result<(), KvError> {
        let Some(through) = self.returned else { return Ok(()) };
        let name = self.bucket.clone();
        self.store.write(move |txn| forget(txn, &name, through)).await
    }
}

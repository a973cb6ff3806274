//! A node's replica of the cluster's control records: on start it copies every record of the
//! cluster's bucket into its own store (and drops the rows the cluster no longer has), then
//! follows the bucket's changes as they happen, resuming after the last revision it applied
//! when the connection to NATS comes back. Each row remembers the revision it was applied at,
//! so a late or repeated change never overwrites a newer one; the changed records are reported
//! to the control plane, which converges (loads and unloads revisions) on them.
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::kv::{Entry, Operation, Watch};
use futures::StreamExt;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::mpsc;

use super::cluster::{ClusterStore, failed};
use super::keys::{self, Key};
use super::{Store, StoreError, err};

/// Per cluster key, the revision its row on this node was applied at.
pub(super) const SEEN: TableDefinition<'_, &str, u64> = TableDefinition::new("cluster_seen");

impl Store {
    /// Opens the node's replica at `path` of the cluster's records in `cluster`, brought up
    /// to date before it returns, and the records that change from then on (from this node or
    /// any other), in the order the cluster applied them.
    pub async fn replica(
        path: &Path,
        cluster: ClusterStore,
    ) -> Result<(Arc<Self>, mpsc::UnboundedReceiver<Key>), StoreError> {
        let mut store = Self::open(path)?;
        let (watch, entries) = catch_up(&cluster).await?;
        let last = entries.iter().map(|e| e.revision).max().unwrap_or(0);
        let decoded: Vec<_> = entries.iter().filter_map(decode).collect();
        let present: BTreeSet<Key> = decoded.iter().map(|(k, _, _)| k.clone()).collect();
        store.resync(&present)?;
        store.apply_replicated(decoded.iter().cloned())?;
        store.cluster = Some(cluster);
        let store = Arc::new(store);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(follow(Arc::downgrade(&store), watch, last, tx));
        tracing::info!(records = present.len(), revision = last, "control records replicated from the cluster");
        Ok((store, rx))
    }

    /// The revision of `key` this node last applied.
    pub(super) fn seen(&self, key: &Key) -> Result<Option<u64>, StoreError> {
        seen_in(&self.db.begin_read().map_err(err)?, key)
    }

    /// Applies changes the cluster made at the given revisions, skipping those older than
    /// what this node has; the keys whose rows changed.
    pub(super) fn apply_replicated<'a>(
        &self,
        entries: impl IntoIterator<Item = Replicated<'a>>,
    ) -> Result<Vec<Key>, StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        let mut changed = Vec::new();
        for (key, value, revision) in entries {
            let name = key.cluster();
            {
                let mut seen = tx.open_table(SEEN).map_err(err)?;
                let current = seen.get(name.as_str()).map_err(err)?.map(|v| v.value());
                if let (Some(current), Some(revision)) = (current, revision)
                    && current >= revision
                {
                    continue;
                }
                if let Some(revision) = revision {
                    seen.insert(name.as_str(), revision).map_err(err)?;
                }
            }
            keys::apply(&tx, &key, value)?;
            changed.push(key);
        }
        tx.commit().map_err(err)?;
        self.changed(changed.iter());
        Ok(changed)
    }

    /// Drops the rows of records the cluster does not have (deleted while this node was away).
    fn resync(&self, present: &BTreeSet<Key>) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        let gone: Vec<Key> = keys::all(&tx)?.into_iter().filter(|k| !present.contains(k)).collect();
        for key in &gone {
            keys::apply(&tx, key, None)?;
        }
        tx.open_table(SEEN).map_err(err)?.retain(|_, _| false).map_err(err)?;
        tx.commit().map_err(err)?;
        self.changed(gone.iter());
        Ok(())
    }
}

/// A change to one record: its key, its value (`None`: deleted) and the bucket revision that made
/// it (`None`: written by this node before the bucket assigned one).
pub(super) type Replicated<'a> = (Key, Option<&'a [u8]>, Option<u64>);

/// A bucket entry as a change.
fn decode(entry: &Entry) -> Option<Replicated<'_>> {
    let Some(key) = Key::parse(&entry.key) else {
        tracing::warn!(key = %entry.key, "a control record this version does not know; ignored");
        return None;
    };
    let value = (entry.operation == Operation::Put).then_some(&entry.value[..]);
    Some((key, value, Some(entry.revision)))
}

/// Every record of the bucket (with delete markers), and a watch that goes on after them.
async fn catch_up(cluster: &ClusterStore) -> Result<(Watch, Vec<Entry>), StoreError> {
    let status = cluster.kv.status().await.map_err(|e| failed("reading the control bucket")(e.into()))?;
    let mut watch =
        cluster.kv.watch_with_history(">").await.map_err(|e| failed("watching the control bucket")(e.into()))?;
    let mut entries = Vec::new();
    if status.values() > 0 {
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| failed("reading the control bucket")(e.into()))?;
            let done = entry.delta == 0;
            entries.push(entry);
            if done {
                break;
            }
        }
    }
    Ok((watch, entries))
}

/// The revision of `key` the replica read by `tx` has.
pub(super) fn seen_in(tx: &redb::ReadTransaction, key: &Key) -> Result<Option<u64>, StoreError> {
    let table = tx.open_table(SEEN).map_err(err)?;
    Ok(table.get(key.cluster().as_str()).map_err(err)?.map(|v| v.value()))
}

/// Applies the bucket's changes to the replica while it exists, reporting the changed records.
async fn follow(store: Weak<Store>, mut watch: Watch, mut last: u64, changed: mpsc::UnboundedSender<Key>) {
    loop {
        while let Some(entry) = watch.next().await {
            let Some(store) = store.upgrade() else { return };
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %nimbus_observe::report(&e), "the control bucket's watch failed; resuming");
                    break;
                }
            };
            last = last.max(entry.revision);
            let Some(change) = decode(&entry) else { continue };
            let applied = tokio::task::block_in_place(|| store.apply_replicated([change]));
            match applied {
                Ok(keys) => {
                    for key in keys {
                        let _ = changed.send(key);
                    }
                }
                Err(e) => tracing::error!(error = %nimbus_observe::report(&e), "cannot apply a control record"),
            }
        }
        // The watch ended (NATS went away): resume after the last revision applied.
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Some(store) = store.upgrade() else { return };
            let Some(cluster) = &store.cluster else { return };
            match cluster.kv.watch_all_from_revision(last + 1).await {
                Ok(w) => {
                    watch = w;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %nimbus_observe::report(&e), "cannot watch the control bucket; retrying")
                }
            }
        }
    }
}

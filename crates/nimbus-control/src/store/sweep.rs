//! Collecting the artifacts no revision refers to any more. On one node a deploy or delete
//! removes them in its transaction; in a cluster the artifact stores are shared, and a node
//! deleting a revision cannot know that another is not deploying the same content again (it
//! would find the artifact there and not store it). So each node sweeps instead: an artifact of
//! the cluster's stores is deleted once it has been unreferenced — by every revision in this
//! node's replica — for the whole grace period, on two sweeps at least that far apart, and its
//! object is at least that old. A deploy that finds one of its artifacts stored more than half
//! the grace ago stores it again (so it is young), and writes its revision within moments, long
//! before a sweep could take it. The node's own copies of unreferenced artifacts go at once
//! (they are fetched again if needed).
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Store, StoreError, cluster};

/// The artifacts seen unreferenced, and since when.
#[derive(Debug, Default)]
struct Sweeper {
    unreferenced_since: HashMap<String, Instant>,
}

impl Sweeper {
    /// One sweep of `store` with `grace`: the digests deleted from the cluster's stores.
    fn sweep(&mut self, store: &Store, grace: Duration) -> Result<Vec<String>, StoreError> {
        let used = referenced(store)?;
        store.forget_blobs_but(&used)?;
        let Some(cluster) = &store.cluster else { return Ok(Vec::new()) };
        let mut stored = cluster::block(cluster.artifacts(grace))?;
        let now = Instant::now();
        self.unreferenced_since.retain(|digest, _| stored.contains_key(digest) && !used.contains(digest));
        let mut expired = Vec::new();
        for digest in stored.keys().filter(|d| !used.contains(*d)) {
            let since = *self.unreferenced_since.entry(digest.clone()).or_insert(now);
            if now.duration_since(since) >= grace {
                expired.push(digest.clone());
            }
        }
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        // Read the records again: a deploy may have referred to one since.
        let used = referenced(store)?;
        let mut deleted = Vec::new();
        for digest in expired.into_iter().filter(|d| !used.contains(d)) {
            let holders = stored.remove(&digest).unwrap_or_default();
            cluster::block(cluster.delete_artifact(&digest, &holders))?;
            self.unreferenced_since.remove(&digest);
            deleted.push(digest);
        }
        Ok(deleted)
    }
}

/// The digests of the artifacts the revisions in `store` use.
fn referenced(store: &Store) -> Result<HashSet<String>, StoreError> {
    Ok(store.revisions()?.into_iter().flat_map(|r| r.artifacts.into_iter().map(|a| a.digest)).collect())
}

/// Sweeps `store` every quarter of `grace` (between a second and ten minutes), for as long
/// as the node runs.
pub async fn sweep_artifacts(store: Arc<Store>, grace: Duration) {
    let every = (grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    if let Some(cluster) = &store.cluster {
        cluster.set_grace(grace);
    }
    let mut sweeper = Sweeper::default();
    loop {
        tokio::time::sleep(every).await;
        let swept = tokio::task::block_in_place(|| sweeper.sweep(&store, grace));
        match swept {
            Ok(deleted) if deleted.is_empty() => {}
            Ok(deleted) => {
                tracing::info!(artifacts = deleted.len(), digests = ?deleted, "deleted artifacts no revision uses")
            }
            Err(e) => {
                tracing::warn!(error = %nimbus_observe::report(&e), "cannot sweep the unused artifacts; trying again later")
            }
        }
    }
}

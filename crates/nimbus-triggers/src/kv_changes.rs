//! KV change events: for each bucket some `[[trigger.kv]]` watches, a relay reads the bucket's
//! durable change feed ([`nimbus_state::feed`]) and publishes every change to the bucket's topic
//! (`nimbus-kv.BUCKET`, in the bucket's app) as a CloudEvent — `dev.nimbus.kv.set` (the new value
//! as data) or `dev.nimbus.kv.delete`, with the `kvrevision` extension, `subject` and
//! `partitionkey` = the key, so that one key's changes are delivered in the order they were
//! published. One relay publishes in revision order; on a cluster each node relays batches of the
//! shared feed, so across nodes a consumer compares `kvrevision` to know which change is newer.
//!
//! The store records a change with the write itself, and the relay acknowledges it only once its
//! event is published: a crash anywhere in between loses nothing, and on JetStream the writes of
//! every node reach the feed. After a crash the unacknowledged changes are published again under
//! the same event id (`BUCKET/REVISION`), which the bus's publish-side deduplication drops
//! within its window; consumers that must never see a change twice compare `kvrevision`.
//!
//! A bucket nobody has watched for [`GRACE`] is unfollowed: the store stops recording its
//! changes and forgets those not relayed. The grace covers a revision swap, which stops the old
//! triggers before it starts the new ones. Buckets never watched cost nothing.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nimbus_bus::event::PARTITION_KEY;
use nimbus_bus::{BusError, Event, EventBuilder, EventBuilderV10, EventBus, PublishOptions, Topic};
use nimbus_state::{Bucket, Change, ChangeFeed, KvStore};

/// How long a bucket stays followed after its last watcher stopped.
const GRACE: Duration = Duration::from_secs(60);
/// The most changes one relay round publishes before acknowledging them.
const BATCH: usize = 256;
/// How long a relay waits on its feed before asking again.
const POLL: Duration = Duration::from_secs(5);
/// The longest pause between attempts after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The topic carrying a bucket's changes.
pub fn kv_topic(bucket: &str) -> String {
    format!("{}{bucket}", nimbus_manifest::KV_CHANGES_PREFIX)
}

/// The relays of watched buckets, over the process's KV store and bus.
pub struct KvChanges {
    kv: Arc<dyn KvStore>,
    bus: Arc<dyn EventBus>,
    relays: Arc<Mutex<HashMap<Bucket, Relay>>>,
}

/// A bucket's relay and its watchers.
struct Relay {
    watchers: usize,
    /// Bumped by every watch and unwatch, so a grace timer knows whether it is still the last.
    generation: u64,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for KvChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvChanges").field("kv", &self.kv).finish_non_exhaustive()
    }
}

impl KvChanges {
    /// Relays over `kv` and `bus`; nothing is watched yet.
    pub fn new(kv: Arc<dyn KvStore>, bus: Arc<dyn EventBus>) -> Self {
        Self { kv, bus, relays: Arc::default() }
    }

    /// The KV store whose changes are relayed.
    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.kv
    }

    /// One more watcher of `bucket`; the first starts its relay (within a Tokio runtime).
    pub fn watch(&self, bucket: &Bucket) {
        let mut relays = self.relays.lock().expect("relays");
        let relay = relays.entry(bucket.clone()).or_insert_with(|| Relay {
            watchers: 0,
            generation: 0,
            task: tokio::spawn(relay(self.kv.clone(), self.bus.clone(), bucket.clone())),
        });
        relay.watchers += 1;
        relay.generation += 1;
    }

    /// One watcher of `bucket` fewer; without any for a minute, the relay stops and the bucket is
    /// unfollowed.
    pub fn unwatch(&self, bucket: &Bucket) {
        let generation = {
            let mut relays = self.relays.lock().expect("relays");
            let Some(relay) = relays.get_mut(bucket) else { return };
            relay.watchers = relay.watchers.saturating_sub(1);
            relay.generation += 1;
            if relay.watchers > 0 {
                return;
            }
            relay.generation
        };
        let (relays, kv, bucket) = (self.relays.clone(), self.kv.clone(), bucket.clone());
        tokio::spawn(async move {
            tokio::time::sleep(GRACE).await;
            {
                let mut relays = relays.lock().expect("relays");
                if relays.get(&bucket).is_none_or(|r| r.generation != generation) {
                    return;
                }
                if let Some(relay) = relays.remove(&bucket) {
                    relay.task.abort();
                }
            }
            if let Err(e) = kv.unfollow(&bucket).await {
                tracing::warn!(%bucket, error = %nimbus_observe::report(&e), "cannot stop recording the changes of a bucket no trigger watches");
            }
        });
    }
}

/// Publishes the changes of `bucket` until aborted; after a failure it waits, follows the bucket
/// afresh and publishes again from the first unacknowledged change.
async fn relay(kv: Arc<dyn KvStore>, bus: Arc<dyn EventBus>, bucket: Bucket) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let failed = match kv.follow(&bucket).await {
            Ok(mut feed) => relay_feed(&mut *feed, &*bus, &bucket, &mut backoff).await,
            Err(e) => nimbus_observe::report(&e),
        };
        tracing::error!(%bucket, error = %failed, retry_in = ?backoff, "KV changes are not being published; they are kept and published once this clears");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Publishes and acknowledges batches of `feed` until something fails; returns what.
async fn relay_feed(feed: &mut dyn ChangeFeed, bus: &dyn EventBus, bucket: &Bucket, backoff: &mut Duration) -> String {
    let topic = match Topic::new(bucket.app(), &kv_topic(bucket.name())) {
        Ok(topic) => topic,
        Err(e) => return e.to_string(),
    };
    loop {
        let changes = match feed.next(BATCH, POLL).await {
            Ok(changes) => changes,
            Err(e) => return nimbus_observe::report(&e),
        };
        if changes.is_empty() {
            continue;
        }
        for change in &changes {
            match publish(bus, &topic, bucket, change).await {
                Ok(()) => {}
                // Can never be published: say so and go on rather than hold back every change after it.
                Err(e @ (BusError::InvalidEvent(_) | BusError::InvalidName { .. })) => {
                    tracing::error!(%bucket, key = change.key, revision = change.revision, error = %e, "a KV change cannot be published as an event; it is skipped");
                }
                Err(e) => return nimbus_observe::report(&e),
            }
        }
        if let Err(e) = feed.ack().await {
            return nimbus_observe::report(&e);
        }
        *backoff = Duration::from_millis(100);
    }
}

async fn publish(bus: &dyn EventBus, topic: &Topic, bucket: &Bucket, change: &Change) -> Result<(), BusError> {
    bus.publish(topic, &event(bucket, change)?, PublishOptions::default()).await.map(drop)
}

/// The CloudEvent of one change.
fn event(bucket: &Bucket, change: &Change) -> Result<Event, BusError> {
    let builder = EventBuilderV10::new()
        .id(format!("{}/{}", bucket.name(), change.revision))
        .source(format!("/kv/{}", bucket.name()))
        .subject(change.key.as_str())
        .extension(PARTITION_KEY, change.key.as_str())
        .extension("kvrevision", change.revision as i64);
    let builder = match &change.value {
        Some(value) => builder.ty("dev.nimbus.kv.set").data("application/octet-stream", value.to_vec()),
        None => builder.ty("dev.nimbus.kv.delete"),
    };
    builder.build().map_err(|e| BusError::InvalidEvent(e.to_string()))
}

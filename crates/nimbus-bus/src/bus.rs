//! The [`EventBus`] trait every backend implements, and what it hands out.
use std::time::Duration;

use async_trait::async_trait;

use crate::{BusError, Event, Group, Topic};

/// Settings shared by every backend.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Partitions of a new topic. Events with the same `partitionkey` land in one partition, and
    /// a consumer group has at most one event of a partition in flight: that is per-key order.
    /// More partitions, more parallel deliveries per group.
    pub partitions: u16,
    /// How long a (`source`, `id`) pair is remembered to drop a re-publish as a duplicate.
    pub dedup_window: Duration,
    /// How long a delivery may stay unacknowledged (without [`Delivery::in_progress`]) before
    /// the event is offered again.
    pub ack_wait: Duration,
    /// How long events are kept (consumed or not); older ones are deleted.
    pub retention: Duration,
    /// On how many servers a topic is kept (JetStream's replicas; the embedded bus has one).
    pub replicas: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            partitions: 16,
            dedup_window: Duration::from_secs(120),
            ack_wait: Duration::from_secs(30),
            retention: Duration::from_secs(7 * 24 * 3600),
            replicas: 1,
        }
    }
}

/// How to publish.
#[derive(Debug, Clone, Copy)]
pub struct PublishOptions {
    /// Drop the event if one with the same `source` and `id` was published within the window.
    /// Off only for replays from a dead-letter topic.
    pub dedup: bool,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self { dedup: true }
    }
}

/// The answer to a durable publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The event's position in its topic (1-based, increasing).
    pub seq: u64,
    /// The event was a duplicate: nothing was appended, `seq` is the original's.
    pub duplicate: bool,
}

/// An event read back from a topic.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Position in the topic.
    pub seq: u64,
    /// The event.
    pub event: Event,
}

/// Where a consumer group of a topic is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPosition {
    /// The group.
    pub group: Group,
    /// Every event of the topic up to this position is acknowledged by the group (0: maybe none
    /// is): in each partition with events left to acknowledge, the last the group acknowledged;
    /// the topic's last position when nothing is left.
    pub acked: u64,
    /// Events of the topic the group has not acknowledged yet (delivered or not): its lag.
    pub pending: u64,
}

impl GroupPosition {
    /// A group from its partitions' (last acknowledged position, events left) and the topic's
    /// last position.
    pub(crate) fn new(group: Group, partitions: impl IntoIterator<Item = (u64, u64)>, last: u64) -> Self {
        let (mut acked, mut pending) = (last, 0);
        for (floor, left) in partitions {
            if left > 0 {
                acked = acked.min(floor);
                pending += left;
            }
        }
        Self { group, acked, pending }
    }
}

/// A durable, partitioned event log with consumer groups. Implementations: [`crate::Embedded`]
/// (one node, on disk) and [`crate::JetStream`] (NATS JetStream); both pass the same
/// conformance suite (`tests/conformance.rs`).
#[async_trait]
pub trait EventBus: Send + Sync + std::fmt::Debug + 'static {
    /// Appends `event` to `topic` and returns once it is durable (on disk, fsynced): an
    /// acknowledged publish survives `kill -9` of the node.
    async fn publish(&self, topic: &Topic, event: &Event, options: PublishOptions) -> Result<Published, BusError>;

    /// Joins consumer group `group` of `topic`. Every member of a group competes for the
    /// group's events; each event is delivered to one member at a time, at least once, in
    /// publish order per partition. A new group starts at the oldest retained event.
    async fn subscribe(&self, topic: &Topic, group: &Group) -> Result<Box<dyn Subscription>, BusError>;

    /// Reads up to `max` events with a position of at least `from`, oldest first (for tailing
    /// and for listing a dead-letter topic). An unknown topic reads as empty.
    async fn read(&self, topic: &Topic, from: u64, max: usize) -> Result<Vec<Stored>, BusError>;

    /// The newest event of `topic`, if any.
    async fn last(&self, topic: &Topic) -> Result<Option<Stored>, BusError>;

    /// Where each consumer group of `topic` that has ever subscribed is, by group name. An
    /// unknown topic has none.
    async fn groups(&self, topic: &Topic) -> Result<Vec<GroupPosition>, BusError>;

    /// The backend's name, for logs (`embedded`, `jetstream`).
    fn backend(&self) -> &'static str;
}

/// One member of a consumer group.
#[async_trait]
pub trait Subscription: Send {
    /// Waits for the next event this member should handle.
    async fn next(&mut self) -> Result<Delivery, BusError>;
}

/// What a backend does when a delivery is settled.
#[async_trait]
pub trait Acker: Send + Sync {
    /// The event was handled: the group moves past it.
    async fn ack(self: Box<Self>) -> Result<(), BusError>;
    /// The event was not handled: offer it again after `delay`, before anything after it in
    /// its partition.
    async fn nack(self: Box<Self>, delay: Duration) -> Result<(), BusError>;
    /// Still working on it: restart the ack-wait clock.
    async fn in_progress(&self) -> Result<(), BusError>;
}

/// One event handed to one group member. Dropping it without [`Delivery::ack`] or
/// [`Delivery::nack`] makes the event available again (after the ack wait on JetStream).
pub struct Delivery {
    /// The event.
    pub event: Event,
    /// Its position in the topic.
    pub seq: u64,
    /// 1 on the first delivery, then one more on each redelivery.
    pub attempt: u32,
    acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").field("seq", &self.seq).field("attempt", &self.attempt).finish_non_exhaustive()
    }
}

impl Delivery {
    /// For backends: a delivery settled through `acker`.
    pub fn new(event: Event, seq: u64, attempt: u32, acker: Box<dyn Acker>) -> Self {
        Self { event, seq, attempt, acker }
    }

    /// Marks the event handled.
    pub async fn ack(self) -> Result<(), BusError> {
        self.acker.ack().await
    }

    /// Asks for a redelivery after `delay`.
    pub async fn nack(self, delay: Duration) -> Result<(), BusError> {
        self.acker.nack(delay).await
    }

    /// Tells the backend the event is still being handled.
    pub async fn in_progress(&self) -> Result<(), BusError> {
        self.acker.in_progress().await
    }
}

//! Consumer groups of the embedded bus: the members of a group (subscriptions in this process)
//! share one state per group, with at most one event per partition in flight.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, TableDefinition};
use tokio::sync::{Notify, watch};

use super::record;
use super::store::{CURSORS, Command, log_table, part_table};
use crate::{Acker, BusError, Delivery, Group, Subscription, Topic};

struct Part {
    /// The first position not yet acknowledged (the next candidate).
    next: u64,
    /// Deliveries of the event at `next` so far.
    attempts: u32,
    /// The delivery of `next` now out: its generation and when it is offered again.
    in_flight: Option<(u64, Instant)>,
    /// A nacked event waits until then.
    not_before: Option<Instant>,
    /// The topic head at which this partition had nothing after `next`.
    empty_at: Option<u64>,
}

struct State {
    parts: Vec<Part>,
    /// Where the next scan starts, so that partitions take turns.
    start: usize,
    generation: u64,
}

/// One consumer group of one topic.
pub(super) struct GroupShared {
    topic: Topic,
    group: Group,
    db: Arc<Database>,
    writer: mpsc::Sender<Command>,
    ack_wait: Duration,
    state: Mutex<State>,
    /// Woken when a delivery is settled (a partition may have become free).
    settled: Notify,
}

pub(super) type Groups = Mutex<HashMap<(Topic, Group), Arc<GroupShared>>>;

impl GroupShared {
    /// Loads the group's cursors (a new group starts at the oldest event).
    pub(super) fn load(
        topic: &Topic,
        group: &Group,
        partitions: u16,
        db: Arc<Database>,
        writer: mpsc::Sender<Command>,
        ack_wait: Duration,
    ) -> Result<Self, BusError> {
        let read = db.begin_read().map_err(BusError::store)?;
        let cursors = read.open_table(CURSORS).map_err(BusError::store)?;
        let mut parts = Vec::with_capacity(usize::from(partitions));
        for p in 0..partitions {
            let (next, attempts) = cursors
                .get((topic.storage_name(), group.storage_name(), p))
                .map_err(BusError::store)?
                .map_or((1, 0), |v| v.value());
            parts.push(Part { next, attempts, in_flight: None, not_before: None, empty_at: None });
        }
        drop(cursors);
        drop(read);
        Ok(Self {
            topic: topic.clone(),
            group: group.clone(),
            db,
            writer,
            ack_wait,
            state: Mutex::new(State { parts, start: 0, generation: 0 }),
            settled: Notify::new(),
        })
    }

    /// Per partition, the first position not yet acknowledged.
    pub(super) fn cursors(&self) -> Vec<u64> {
        self.state.lock().expect("group state").parts.iter().map(|p| p.next).collect()
    }

    fn persist(&self, partition: u16, next: u64, attempts: u32) {
        let _ = self.writer.send(Command::Cursor {
            topic: self.topic.clone(),
            group: self.group.storage_name().to_string(),
            partition,
            next,
            attempts,
        });
    }

    /// The first event of `partition` at or after `from`.
    fn find(&self, partition: u16, from: u64) -> Result<Option<(u64, crate::Event)>, BusError> {
        let read = self.db.begin_read().map_err(BusError::store)?;
        let part_name = part_table(self.topic.storage_name());
        let index = read.open_table(TableDefinition::<(u16, u64), ()>::new(&part_name)).map_err(BusError::store)?;
        let Some(entry) = index.range((partition, from)..=(partition, u64::MAX)).map_err(BusError::store)?.next()
        else {
            return Ok(None);
        };
        let seq = entry.map_err(BusError::store)?.0.value().1;
        let log_name = log_table(self.topic.storage_name());
        let log = read.open_table(TableDefinition::<u64, &[u8]>::new(&log_name)).map_err(BusError::store)?;
        let bytes = log.get(seq).map_err(BusError::store)?.ok_or_else(|| {
            BusError::Corrupt(format!(
                "event {seq} of a partition index is missing from its topic; the event store is corrupt"
            ))
        })?;
        Ok(Some((seq, crate::event::decode(record::json(bytes.value())?)?)))
    }

    /// Claims the next available event, or says when to look again.
    fn claim(self: &Arc<Self>, head: u64) -> Result<Result<Delivery, Option<Instant>>, BusError> {
        let mut state = self.state.lock().expect("group state");
        let now = Instant::now();
        let n = state.parts.len();
        let mut wake: Option<Instant> = None;
        let mut earliest = |t: Instant| wake = Some(wake.map_or(t, |w: Instant| w.min(t)));
        for i in 0..n {
            let p = (state.start + i) % n;
            let part = &mut state.parts[p];
            if let Some((_, deadline)) = part.in_flight {
                if deadline > now {
                    earliest(deadline);
                    continue;
                }
                tracing::warn!(topic = %self.topic, group = %self.group, seq = part.next, "no ack within the ack wait; offering the event again");
            }
            if let Some(at) = part.not_before.filter(|&at| at > now) {
                earliest(at);
                continue;
            }
            if part.in_flight.is_none() && part.empty_at == Some(head) {
                continue;
            }
            let Some((seq, event)) = self.find(p as u16, part.next)? else {
                part.empty_at = Some(head);
                continue;
            };
            let part = &mut state.parts[p];
            part.next = seq;
            part.attempts += 1;
            part.not_before = None;
            let attempts = part.attempts;
            state.generation += 1;
            let generation = state.generation;
            state.parts[p].in_flight = Some((generation, now + self.ack_wait));
            state.start = (p + 1) % n;
            // Under the lock: the writer must see positions in the order they changed here.
            self.persist(p as u16, seq, attempts);
            drop(state);
            let acker = EmbeddedAcker { group: self.clone(), partition: p as u16, seq, generation, settled: false };
            return Ok(Ok(Delivery::new(event, seq, attempts, Box::new(acker))));
        }
        Ok(Err(wake))
    }

    /// Settles a delivery if it is still the one out for its partition.
    fn settle(&self, partition: u16, generation: u64, outcome: Outcome) {
        let mut state = self.state.lock().expect("group state");
        let part = &mut state.parts[usize::from(partition)];
        if part.in_flight.map(|(g, _)| g) != Some(generation) {
            return; // offered again after the ack wait; this settlement is stale
        }
        match outcome {
            Outcome::Ack => {
                part.next += 1;
                part.attempts = 0;
                part.in_flight = None;
                part.empty_at = None;
            }
            Outcome::Nack(delay) => {
                part.in_flight = None;
                part.not_before = Some(Instant::now() + delay);
            }
            Outcome::Progress => {
                part.in_flight = Some((generation, Instant::now() + self.ack_wait));
                return;
            }
        }
        let (next, attempts) = (part.next, part.attempts);
        // Under the lock, as in `claim`: sent after it is released, this position could reach the
        // writer after a later one (another member's claim or ack of the partition) and take the
        // stored cursor back, so that a restart delivers acknowledged events again.
        self.persist(partition, next, attempts);
        drop(state);
        self.settled.notify_waiters();
    }
}

enum Outcome {
    Ack,
    Nack(Duration),
    Progress,
}

/// A member of an embedded consumer group.
pub(super) struct EmbeddedSubscription {
    pub(super) group: Arc<GroupShared>,
    pub(super) head: watch::Receiver<u64>,
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn next(&mut self) -> Result<Delivery, BusError> {
        loop {
            let settled = self.group.settled.notified();
            let mut settled = std::pin::pin!(settled);
            settled.as_mut().enable();
            let head = *self.head.borrow_and_update();
            let wake = match self.group.claim(head)? {
                Ok(delivery) => return Ok(delivery),
                Err(wake) => wake,
            };
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.head.changed() => if changed.is_err() { return Err(BusError::Closed) },
                () = &mut settled => {}
                () = sleep => {}
            }
        }
    }
}

struct EmbeddedAcker {
    group: Arc<GroupShared>,
    partition: u16,
    seq: u64,
    generation: u64,
    settled: bool,
}

impl EmbeddedAcker {
    fn finish(&mut self, outcome: Outcome) {
        self.settled = true;
        self.group.settle(self.partition, self.generation, outcome);
    }
}

#[async_trait]
impl Acker for EmbeddedAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), BusError> {
        self.finish(Outcome::Ack);
        Ok(())
    }

    async fn nack(mut self: Box<Self>, delay: Duration) -> Result<(), BusError> {
        self.finish(Outcome::Nack(delay));
        Ok(())
    }

    async fn in_progress(&self) -> Result<(), BusError> {
        self.group.settle(self.partition, self.generation, Outcome::Progress);
        Ok(())
    }
}

impl Drop for EmbeddedAcker {
    fn drop(&mut self) {
        if !self.settled {
            tracing::debug!(topic = %self.group.topic, seq = self.seq, "delivery dropped unsettled; offering it again");
            self.group.settle(self.partition, self.generation, Outcome::Nack(Duration::ZERO));
        }
    }
}

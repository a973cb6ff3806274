//! The on-disk layout of the embedded bus (one redb file) and its single writer thread, which
//! group-commits: every publish waiting when a commit starts shares its fsync.
//!
//! Tables: `topics` (name → partitions); per topic `log/NAME` (seq → record) and `part/NAME`
//! ((partition, seq) → ()), the per-partition index; `cursors` ((topic, group, partition) →
//! (next seq, attempts)). A record's layout is in [`super::record`].
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{oneshot, watch};

use super::record;
use crate::{BusError, Published, Topic};

pub(super) const TOPICS: TableDefinition<'_, &str, u16> = TableDefinition::new("topics");
pub(super) const CURSORS: TableDefinition<'_, (&str, &str, u16), (u64, u32)> = TableDefinition::new("cursors");
/// Cursor moves are committed without fsync; a quiet bus fsyncs them after this long.
const CURSOR_FLUSH: Duration = Duration::from_millis(500);
/// The most commands one commit takes.
const MAX_BATCH: usize = 4096;
/// How often events past the retention are deleted (more often for short retentions).
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// The most events one sweep deletes per topic (the rest wait for the next sweep).
const SWEEP_MAX: usize = 10_000;

pub(super) fn log_table(topic: &str) -> String {
    format!("log/{topic}")
}

pub(super) fn part_table(topic: &str) -> String {
    format!("part/{topic}")
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(super) enum Command {
    Publish {
        topic: Topic,
        partition: u16,
        dedup: Option<[u8; 16]>,
        json: Vec<u8>,
        reply: oneshot::Sender<Result<Published, BusError>>,
    },
    Ensure {
        topic: Topic,
        reply: oneshot::Sender<Result<u16, BusError>>,
    },
    Cursor {
        topic: Topic,
        group: String,
        partition: u16,
        next: u64,
        attempts: u32,
    },
    /// Flush and end the writer thread.
    Stop,
}

/// The last sequence number of each topic, as subscribers watch it.
pub(super) type Heads = Arc<Mutex<HashMap<Topic, watch::Sender<u64>>>>;

pub(super) fn head(heads: &Heads, topic: &Topic) -> watch::Receiver<u64> {
    heads.lock().expect("heads").entry(topic.clone()).or_insert_with(|| watch::channel(0).0).subscribe()
}

struct Writer {
    db: Arc<Database>,
    heads: Heads,
    partitions: u16,
    window_ms: u64,
    retention_ms: u64,
    sweep_every: Duration,
    last_sweep: Instant,
    next_seq: HashMap<Topic, u64>,
    topics: HashMap<Topic, u16>,
    dedup: HashMap<(Topic, [u8; 16]), u64>,
    dedup_order: VecDeque<(u64, Topic, [u8; 16])>,
}

/// Starts the writer thread; it ends when every sender is gone.
pub(super) fn start(
    db: Arc<Database>,
    heads: Heads,
    config: &crate::BusConfig,
) -> Result<(mpsc::Sender<Command>, std::thread::JoinHandle<()>), BusError> {
    let retention = config.retention.max(Duration::from_millis(100));
    let mut writer = Writer {
        db,
        heads,
        partitions: config.partitions.max(1),
        window_ms: config.dedup_window.as_millis() as u64,
        retention_ms: retention.as_millis() as u64,
        sweep_every: (retention / 10).min(SWEEP_EVERY),
        last_sweep: Instant::now(),
        next_seq: HashMap::new(),
        topics: HashMap::new(),
        dedup: HashMap::new(),
        dedup_order: VecDeque::new(),
    };
    writer.recover()?;
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("nimbus-bus-writer".into())
        .spawn(move || writer.run(&rx))
        .map_err(BusError::store)?;
    Ok((tx, thread))
}

impl Writer {
    /// Loads topics, their next sequence numbers, and the dedup window from disk.
    fn recover(&mut self) -> Result<(), BusError> {
        let txn = self.db.begin_write().map_err(BusError::store)?;
        txn.open_table(TOPICS).map_err(BusError::store)?;
        txn.open_table(CURSORS).map_err(BusError::store)?;
        txn.commit().map_err(BusError::store)?;
        let read = self.db.begin_read().map_err(BusError::store)?;
        let topics = read.open_table(TOPICS).map_err(BusError::store)?;
        let since = now_ms().saturating_sub(self.window_ms);
        for entry in topics.iter().map_err(BusError::store)? {
            let (name, partitions) = entry.map_err(BusError::store)?;
            let Ok(topic) = Topic::from_storage_name(name.value()) else {
                tracing::warn!(
                    topic = name.value(),
                    "a topic stored without its app by an older Nimbus is left as it is"
                );
                continue;
            };
            let name = log_table(topic.storage_name());
            let log = read.open_table(TableDefinition::<u64, &[u8]>::new(&name)).map_err(BusError::store)?;
            let last = log.last().map_err(BusError::store)?.map_or(0, |(k, _)| k.value());
            let mut recent = Vec::new();
            for entry in log.iter().map_err(BusError::store)?.rev() {
                let (seq, bytes) = entry.map_err(BusError::store)?;
                let header = record::header(bytes.value())?;
                if header.at < since {
                    break;
                }
                if let Some(id) = header.dedup {
                    recent.push((header.at, seq.value(), id));
                }
            }
            for (at, seq, id) in recent.into_iter().rev() {
                self.dedup.insert((topic.clone(), id), seq);
                self.dedup_order.push_back((at, topic.clone(), id));
            }
            self.next_seq.insert(topic.clone(), last + 1);
            self.topics.insert(topic.clone(), partitions.value());
            let _ = self.heads.lock().expect("heads").entry(topic).or_insert_with(|| watch::channel(0).0).send(last);
        }
        Ok(())
    }

    fn run(mut self, rx: &mpsc::Receiver<Command>) {
        let mut unsynced = false;
        loop {
            if self.last_sweep.elapsed() >= self.sweep_every {
                self.last_sweep = Instant::now();
                if let Err(e) = self.sweep() {
                    tracing::warn!(error = %nimbus_observe::report(&e), "deleting events past their retention failed; trying again later");
                }
            }
            let first = match rx.recv_timeout(CURSOR_FLUSH.min(self.sweep_every)) {
                Ok(c) => c,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if unsynced {
                        unsynced = self.sync().is_err();
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if unsynced {
                        let _ = self.sync();
                    }
                    return;
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let stop = batch.iter().any(|c| matches!(c, Command::Stop));
            batch.retain(|c| !matches!(c, Command::Stop));
            let durable = stop || batch.iter().any(|c| !matches!(c, Command::Cursor { .. }));
            self.commit(batch, durable);
            unsynced = !durable;
            if stop {
                return;
            }
        }
    }

    /// Deletes the events older than the retention, oldest first, from every topic.
    fn sweep(&mut self) -> Result<(), BusError> {
        let cutoff = now_ms().saturating_sub(self.retention_ms);
        let txn = self.db.begin_write().map_err(BusError::store)?;
        let topics: Vec<String> = {
            let t = txn.open_table(TOPICS).map_err(BusError::store)?;
            t.iter().map_err(BusError::store)?.filter_map(Result::ok).map(|(k, _)| k.value().to_string()).collect()
        };
        let mut deleted = 0;
        for topic in topics {
            let log_name = log_table(&topic);
            let part_name = part_table(&topic);
            let mut log = txn.open_table(TableDefinition::<u64, &[u8]>::new(&log_name)).map_err(BusError::store)?;
            let mut part =
                txn.open_table(TableDefinition::<(u16, u64), ()>::new(&part_name)).map_err(BusError::store)?;
            let mut old = Vec::new();
            for entry in log.iter().map_err(BusError::store)?.take(SWEEP_MAX) {
                let (seq, bytes) = entry.map_err(BusError::store)?;
                let header = record::header(bytes.value())?;
                if header.at >= cutoff {
                    break;
                }
                old.push((seq.value(), header.partition));
            }
            for (seq, partition) in &old {
                log.remove(seq).map_err(BusError::store)?;
                part.remove((*partition, *seq)).map_err(BusError::store)?;
            }
            deleted += old.len();
        }
        txn.commit().map_err(BusError::store)?;
        if deleted > 0 {
            tracing::info!(deleted, "deleted events past their retention");
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        txn.commit()?;
        Ok(())
    }

    fn commit(&mut self, batch: Vec<Command>, durable: bool) {
        let now = now_ms();
        self.expire_dedup(now);
        let mut replies = Vec::new();
        let mut ensured = Vec::new();
        let mut appended: HashMap<Topic, u64> = HashMap::new();
        let mut fresh_dedup = Vec::new();
        let result = (|| -> Result<(), BusError> {
            let mut txn = self.db.begin_write().map_err(BusError::store)?;
            if !durable {
                txn.set_durability(Durability::None).map_err(BusError::store)?;
            }
            for command in batch {
                match command {
                    Command::Publish { topic, partition, dedup, json, reply } => {
                        self.create(&txn, &topic)?;
                        if let Some(seq) = dedup.and_then(|id| self.dedup.get(&(topic.clone(), id)).copied()) {
                            replies.push((reply, Published { seq, duplicate: true }));
                            continue;
                        }
                        let log_name = log_table(topic.storage_name());
                        let mut log =
                            txn.open_table(TableDefinition::<u64, &[u8]>::new(&log_name)).map_err(BusError::store)?;
                        let seq = match self.next_seq.get(&topic) {
                            Some(&seq) => seq,
                            None => log.last().map_err(BusError::store)?.map_or(0, |(k, _)| k.value()) + 1,
                        };
                        let stored = record::encode(&record::Header { partition, at: now, dedup }, &json);
                        log.insert(seq, stored.as_slice()).map_err(BusError::store)?;
                        drop(log);
                        let part_name = part_table(topic.storage_name());
                        txn.open_table(TableDefinition::<(u16, u64), ()>::new(&part_name))
                            .and_then(|mut t| t.insert((partition, seq), ()).map(drop).map_err(Into::into))
                            .map_err(BusError::store)?;
                        self.next_seq.insert(topic.clone(), seq + 1);
                        if let Some(id) = dedup {
                            self.dedup.insert((topic.clone(), id), seq);
                            fresh_dedup.push((topic.clone(), id));
                            self.dedup_order.push_back((now, topic.clone(), id));
                        }
                        appended.insert(topic, seq);
                        replies.push((reply, Published { seq, duplicate: false }));
                    }
                    Command::Ensure { topic, reply } => {
                        let partitions = self.create(&txn, &topic)?;
                        ensured.push((reply, partitions));
                    }
                    Command::Cursor { topic, group, partition, next, attempts } => {
                        let mut t = txn.open_table(CURSORS).map_err(BusError::store)?;
                        t.insert((topic.storage_name(), group.as_str(), partition), (next, attempts))
                            .map_err(BusError::store)?;
                    }
                    Command::Stop => {}
                }
            }
            txn.commit().map_err(BusError::store)
        })();
        match result {
            Ok(()) => {
                for (reply, published) in replies {
                    let _ = reply.send(Ok(published));
                }
                for (reply, partitions) in ensured {
                    let _ = reply.send(Ok(partitions));
                }
                let heads = self.heads.lock().expect("heads");
                for (topic, seq) in appended {
                    if let Some(head) = heads.get(&topic) {
                        head.send_replace(seq);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %nimbus_observe::report(&e), "event store commit failed; the publishes in it were not acknowledged");
                // Forget what the failed transaction would have added.
                for key in fresh_dedup {
                    self.dedup.remove(&key);
                }
                for topic in appended.keys() {
                    self.next_seq.remove(topic);
                }
                self.topics.clear();
                for (reply, _) in replies {
                    let _ = reply.send(Err(e.clone()));
                }
                for (reply, _) in ensured {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Registers a topic (tables and partition count) if new; returns its partitions.
    fn create(&mut self, txn: &redb::WriteTransaction, topic: &Topic) -> Result<u16, BusError> {
        if let Some(&p) = self.topics.get(topic) {
            return Ok(p);
        }
        let mut topics = txn.open_table(TOPICS).map_err(BusError::store)?;
        let stored = topics.get(topic.storage_name()).map_err(BusError::store)?.map(|p| p.value());
        let partitions = match stored {
            Some(p) => p,
            None => {
                topics.insert(topic.storage_name(), self.partitions).map_err(BusError::store)?;
                self.partitions
            }
        };
        txn.open_table(TableDefinition::<u64, &[u8]>::new(&log_table(topic.storage_name())))
            .map_err(BusError::store)?;
        txn.open_table(TableDefinition::<(u16, u64), ()>::new(&part_table(topic.storage_name())))
            .map_err(BusError::store)?;
        self.topics.insert(topic.clone(), partitions);
        Ok(partitions)
    }

    fn expire_dedup(&mut self, now: u64) {
        while let Some((at, _, _)) = self.dedup_order.front() {
            if *at + self.window_ms >= now {
                break;
            }
            let (_, topic, id) = self.dedup_order.pop_front().expect("front");
            self.dedup.remove(&(topic, id));
        }
    }
}

//! The embedded backend: every topic a durable log in one redb file on this node.
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::{
    BusConfig, BusError, Event, EventBus, Group, GroupPosition, PublishOptions, Published, Stored, Subscription, Topic,
};

mod group;
mod record;
mod store;

use group::{EmbeddedSubscription, GroupShared, Groups};
use store::{Command, Heads};

/// The embedded event bus: topics in `bus.redb` under the data dir, publishes group-committed
/// (one fsync for every publish waiting), consumer groups of subscriptions in this process.
///
/// One process opens a bus file at a time; a second gets [`BusError::InUse`].
pub struct Embedded {
    db: Arc<Database>,
    writer: Mutex<mpsc::Sender<Command>>,
    heads: Heads,
    config: BusConfig,
    partitions: Mutex<HashMap<Topic, u16>>,
    groups: Groups,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Embedded {
    /// Opens (or creates) the bus file at `path`.
    pub fn open(path: &Path, config: BusConfig) -> Result<Self, BusError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => BusError::InUse { path: path.to_path_buf() },
            e => BusError::Open { path: path.to_path_buf(), source: nimbus_observe::cause(e) },
        })?;
        let db = Arc::new(db);
        let heads = Heads::default();
        let (writer, thread) = store::start(db.clone(), heads.clone(), &config)?;
        Ok(Self {
            db,
            writer: Mutex::new(writer),
            heads,
            config,
            partitions: Mutex::default(),
            groups: Mutex::default(),
            thread: Some(thread),
        })
    }

    fn send(&self, command: Command) -> Result<(), BusError> {
        self.writer.lock().expect("writer").send(command).map_err(|_| BusError::Closed)
    }

    /// The partitions of `topic`, creating it if new.
    async fn partitions(&self, topic: &Topic) -> Result<u16, BusError> {
        if let Some(&p) = self.partitions.lock().expect("partitions").get(topic) {
            return Ok(p);
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::Ensure { topic: topic.clone(), reply })?;
        let p = rx.await.map_err(|_| BusError::Closed)??;
        self.partitions.lock().expect("partitions").insert(topic.clone(), p);
        Ok(p)
    }
}

impl Drop for Embedded {
    /// Flushes group positions and waits for the writer, so the file can be reopened at once.
    fn drop(&mut self) {
        let _ = self.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[async_trait]
impl EventBus for Embedded {
    async fn publish(&self, topic: &Topic, event: &Event, options: PublishOptions) -> Result<Published, BusError> {
        let json = crate::event::encode(event)?;
        let partitions = self.partitions(topic).await?;
        let partition = crate::event::partition(event, partitions);
        let dedup = options.dedup.then(|| {
            let id = crate::event::dedup_id(event);
            let mut raw = [0u8; 16];
            hex::decode_to_slice(&id, &mut raw).expect("dedup id is 16 hex bytes");
            raw
        });
        let (reply, rx) = oneshot::channel();
        self.send(Command::Publish { topic: topic.clone(), partition, dedup, json, reply })?;
        rx.await.map_err(|_| BusError::Closed)?
    }

    async fn subscribe(&self, topic: &Topic, group: &Group) -> Result<Box<dyn Subscription>, BusError> {
        let partitions = self.partitions(topic).await?;
        let shared = {
            let mut groups = self.groups.lock().expect("groups");
            match groups.get(&(topic.clone(), group.clone())) {
                Some(g) => g.clone(),
                None => {
                    let writer = self.writer.lock().expect("writer").clone();
                    let g = Arc::new(GroupShared::load(
                        topic,
                        group,
                        partitions,
                        self.db.clone(),
                        writer,
                        self.config.ack_wait,
                    )?);
                    groups.insert((topic.clone(), group.clone()), g.clone());
                    g
                }
            }
        };
        Ok(Box::new(EmbeddedSubscription { group: shared, head: store::head(&self.heads, topic) }))
    }

    async fn read(&self, topic: &Topic, from: u64, max: usize) -> Result<Vec<Stored>, BusError> {
        let read = self.db.begin_read().map_err(BusError::store)?;
        let name = store::log_table(topic.storage_name());
        let log = match read.open_table(TableDefinition::<u64, &[u8]>::new(&name)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(BusError::store(e)),
        };
        let mut out = Vec::new();
        for entry in log.range(from.max(1)..).map_err(BusError::store)?.take(max) {
            let (seq, bytes) = entry.map_err(BusError::store)?;
            out.push(Stored { seq: seq.value(), event: crate::event::decode(record::json(bytes.value())?)? });
        }
        Ok(out)
    }

    async fn last(&self, topic: &Topic) -> Result<Option<Stored>, BusError> {
        let read = self.db.begin_read().map_err(BusError::store)?;
        let name = store::log_table(topic.storage_name());
        let log = match read.open_table(TableDefinition::<u64, &[u8]>::new(&name)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(BusError::store(e)),
        };
        let Some((seq, bytes)) = log.last().map_err(BusError::store)? else { return Ok(None) };
        Ok(Some(Stored { seq: seq.value(), event: crate::event::decode(record::json(bytes.value())?)? }))
    }

    async fn groups(&self, topic: &Topic) -> Result<Vec<GroupPosition>, BusError> {
        let read = self.db.begin_read().map_err(BusError::store)?;
        let name = store::part_table(topic.storage_name());
        let index = match read.open_table(TableDefinition::<(u16, u64), ()>::new(&name)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(BusError::store(e)),
        };
        let partitions = read
            .open_table(store::TOPICS)
            .map_err(BusError::store)?
            .get(topic.storage_name())
            .map_err(BusError::store)?
            .map_or(0, |p| p.value());
        let log = read
            .open_table(TableDefinition::<u64, &[u8]>::new(&store::log_table(topic.storage_name())))
            .map_err(BusError::store)?;
        let last = log.last().map_err(BusError::store)?.map_or(0, |(seq, _)| seq.value());
        // Stored cursors, then those of groups live in this process (their moves are written
        // behind); a partition without one starts at the oldest event.
        let mut cursors: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for entry in read.open_table(store::CURSORS).map_err(BusError::store)?.iter().map_err(BusError::store)? {
            let (key, value) = entry.map_err(BusError::store)?;
            let (stored, group, partition) = key.value();
            if stored == topic.storage_name() && partition < partitions {
                let parts = cursors.entry(group.to_string()).or_insert_with(|| vec![1; usize::from(partitions)]);
                parts[usize::from(partition)] = value.value().0;
            }
        }
        for ((t, group), shared) in self.groups.lock().expect("groups").iter() {
            if t == topic {
                cursors.insert(group.storage_name().to_string(), shared.cursors());
            }
        }
        let mut out = Vec::with_capacity(cursors.len());
        for (group, parts) in cursors {
            let mut lags = Vec::with_capacity(parts.len());
            for (partition, next) in (0u16..).zip(parts) {
                let floor = match index.range((partition, 0)..(partition, next)).map_err(BusError::store)?.next_back() {
                    Some(entry) => entry.map_err(BusError::store)?.0.value().1,
                    None => 0,
                };
                let mut left = 0;
                for entry in index.range((partition, next)..=(partition, u64::MAX)).map_err(BusError::store)? {
                    entry.map_err(BusError::store)?;
                    left += 1;
                }
                lags.push((floor, left));
            }
            out.push(GroupPosition::new(Group::from_storage_name(&group)?, lags, last));
        }
        Ok(out)
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }
}

//! The NATS JetStream backend: a stream per topic (`NIMBUS_<topic>`, subjects
//! `nimbus.topic.<topic>.<partition>`, file storage, a duplicate window for dedup by
//! `Nats-Msg-Id`), and per consumer group and partition a durable pull consumer with explicit
//! acks and at most one unacknowledged message — the server itself keeps per-key order across
//! every process of the group.
//!
//! Durability: an acknowledged publish is on disk only if the server fsyncs before it answers;
//! run `nats-server` with `jetstream { sync_interval: always }` (nats-server ≥ 2.10; the default
//! syncs every 2 minutes and loses acknowledged writes on a crash).
//!
//! Residency: with [`JetStream::resident`], a topic of an app pinned to labels this node lacks
//! is refused ([`BusError::Misplaced`]) — publish, subscribe and reads — before anything reaches
//! NATS, and a pinned app's streams are created with JetStream placement tags (see
//! [`nimbus_manifest::Residency`]).
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, AckKind};
use async_trait::async_trait;
use futures::stream::SelectAll;
use futures::{StreamExt, TryStreamExt};
use nimbus_manifest::Residency;

use crate::{
    Acker, BusConfig, BusError, Delivery, Event, EventBus, Group, GroupPosition, PublishOptions, Published, Stored,
    Subscription, Topic,
};

const PARTITIONS_KEY: &str = "nimbus.partitions";

/// The event bus on NATS JetStream.
pub struct JetStream {
    js: jetstream::Context,
    config: BusConfig,
    streams: Mutex<HashMap<Topic, (stream::Stream, u16)>>,
    residency: Arc<Residency>,
}

impl std::fmt::Debug for JetStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStream").field("config", &self.config).finish_non_exhaustive()
    }
}

fn stream_name(topic: &Topic) -> String {
    // Stream names cannot hold `.`; topics are lowercase, so `_D_` cannot clash.
    format!("NIMBUS_{}", topic.storage_name().replace('.', "_D_"))
}

fn subject(topic: &Topic, partition: u16) -> String {
    format!("nimbus.topic.{}.{partition}", topic.storage_name())
}

impl JetStream {
    /// Connects to the NATS server at `url` (e.g. `nats://127.0.0.1:4222`).
    pub async fn connect(url: &str, config: BusConfig) -> Result<Self, BusError> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| BusError::Connect { url: url.to_owned(), source: nimbus_observe::cause(e) })?;
        Ok(Self { js: jetstream::new(client), config, streams: Mutex::default(), residency: Arc::default() })
    }

    /// Applies `residency` to every topic from now on.
    #[must_use]
    pub fn resident(mut self, residency: Arc<Residency>) -> Self {
        self.residency = residency;
        self
    }

    /// The topic's stream and partitions, creating the stream if new.
    async fn stream(&self, topic: &Topic) -> Result<(stream::Stream, u16), BusError> {
        let tags = self.residency.topic(topic.app(), topic.name())?;
        if let Some(s) = self.streams.lock().expect("streams").get(topic) {
            return Ok(s.clone());
        }
        let partitions = self.config.partitions.max(1);
        let stream = self
            .js
            .get_or_create_stream(stream::Config {
                name: stream_name(topic),
                subjects: vec![format!("nimbus.topic.{}.*", topic.storage_name())],
                storage: StorageType::File,
                num_replicas: self.config.replicas.max(1),
                // JetStream refuses a dedup window longer than the retention.
                duplicate_window: self.config.dedup_window.min(self.config.retention),
                max_age: self.config.retention,
                metadata: HashMap::from([(PARTITIONS_KEY.to_string(), partitions.to_string())]),
                placement: (!tags.is_empty()).then_some(stream::Placement { cluster: None, tags: tags.clone() }),
                ..Default::default()
            })
            .await
            .map_err(BusError::nats)?;
        let placed = stream.cached_info().config.placement.as_ref().map(|p| p.tags.clone()).unwrap_or_default();
        if !tags.iter().all(|t| placed.contains(t)) {
            // Created before its app was pinned: it may be stored anywhere.
            return Err(BusError::Unplaced { stream: stream_name(topic), tags });
        }
        let partitions =
            stream.cached_info().config.metadata.get(PARTITIONS_KEY).and_then(|p| p.parse().ok()).unwrap_or(partitions);
        self.streams.lock().expect("streams").insert(topic.clone(), (stream.clone(), partitions));
        Ok((stream, partitions))
    }
}

#[async_trait]
impl EventBus for JetStream {
    async fn publish(&self, topic: &Topic, event: &Event, options: PublishOptions) -> Result<Published, BusError> {
        let json = crate::event::encode(event)?;
        let (_, partitions) = self.stream(topic).await?;
        let mut headers = HeaderMap::new();
        if options.dedup {
            headers.insert("Nats-Msg-Id", crate::event::dedup_id(event).as_str());
        }
        let subject = subject(topic, crate::event::partition(event, partitions));
        let payload = bytes::Bytes::from(json);
        // A stream just created with several replicas answers `no stream found` (no responders)
        // until its group has a leader: nothing was stored, so the event is sent again, for up
        // to ~3 s.
        let mut tries = 0;
        loop {
            let sent = self.js.publish_with_headers(subject.clone(), headers.clone(), payload.clone()).await;
            let acked = match sent {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match acked {
                Err(e) if tries < 30 && e.kind() == PublishErrorKind::StreamNotFound => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(BusError::nats(e)),
                Ok(ack) => return Ok(Published { seq: ack.sequence, duplicate: ack.duplicate }),
            }
        }
    }

    async fn subscribe(&self, topic: &Topic, group: &Group) -> Result<Box<dyn Subscription>, BusError> {
        let (stream, partitions) = self.stream(topic).await?;
        let mut all = SelectAll::new();
        for p in 0..partitions {
            let name = format!("{}-{p}", group.storage_name());
            let consumer: jetstream::consumer::Consumer<pull::Config> = stream
                .get_or_create_consumer(
                    &name,
                    pull::Config {
                        durable_name: Some(name.clone()),
                        filter_subject: subject(topic, p),
                        ack_policy: AckPolicy::Explicit,
                        ack_wait: self.config.ack_wait,
                        max_ack_pending: 1,
                        max_deliver: -1,
                        deliver_policy: DeliverPolicy::All,
                        ..Default::default()
                    },
                )
                .await
                .map_err(BusError::nats)?;
            all.push(consumer.messages().await.map_err(BusError::nats)?);
        }
        Ok(Box::new(JetStreamSubscription { messages: all }))
    }

    async fn read(&self, topic: &Topic, from: u64, max: usize) -> Result<Vec<Stored>, BusError> {
        let Some(mut stream) = self.existing(topic).await? else { return Ok(Vec::new()) };
        let state = stream.info().await.map_err(BusError::nats)?.state.clone();
        let mut out = Vec::new();
        let mut seq = from.max(state.first_sequence).max(1);
        while seq <= state.last_sequence && out.len() < max {
            if let Some(stored) = self.get(&stream, seq).await? {
                out.push(stored);
            }
            seq += 1;
        }
        Ok(out)
    }

    async fn last(&self, topic: &Topic) -> Result<Option<Stored>, BusError> {
        let Some(mut stream) = self.existing(topic).await? else { return Ok(None) };
        let last = stream.info().await.map_err(BusError::nats)?.state.last_sequence;
        if last == 0 {
            return Ok(None);
        }
        self.get(&stream, last).await
    }

    async fn groups(&self, topic: &Topic) -> Result<Vec<GroupPosition>, BusError> {
        let Some(mut stream) = self.existing(topic).await? else { return Ok(Vec::new()) };
        let last = stream.info().await.map_err(BusError::nats)?.state.last_sequence;
        let names: Vec<String> = stream.consumer_names().try_collect().await.map_err(BusError::nats)?;
        // One durable consumer per group and partition, named `GROUP-PARTITION`.
        let mut groups: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
        for name in names {
            let Some((group, partition)) = name.rsplit_once('-') else { continue };
            if partition.parse::<u16>().is_err() {
                continue;
            }
            let info = stream.consumer_info(&name).await.map_err(BusError::nats)?;
            let left = info.num_pending + u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX);
            groups.entry(group.to_string()).or_default().push((info.ack_floor.stream_sequence, left));
        }
        groups
            .into_iter()
            .map(|(group, lags)| Ok(GroupPosition::new(Group::from_storage_name(&group)?, lags, last)))
            .collect()
    }

    fn backend(&self) -> &'static str {
        "jetstream"
    }
}

impl JetStream {
    /// The topic's stream, if it exists (reads never create one).
    async fn existing(&self, topic: &Topic) -> Result<Option<stream::Stream>, BusError> {
        self.residency.topic(topic.app(), topic.name())?;
        match self.js.get_stream(stream_name(topic)).await {
            Ok(s) => Ok(Some(s)),
            Err(e) => match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(None)
                }
                _ => Err(BusError::nats(e)),
            },
        }
    }

    /// The event at `seq`, unless it was deleted.
    async fn get(&self, stream: &stream::Stream, seq: u64) -> Result<Option<Stored>, BusError> {
        match stream.get_raw_message(seq).await {
            Ok(m) => Ok(Some(Stored { seq, event: crate::event::decode(&m.payload)? })),
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(BusError::nats(e)),
        }
    }
}

struct JetStreamSubscription {
    messages: SelectAll<pull::Stream>,
}

#[async_trait]
impl Subscription for JetStreamSubscription {
    async fn next(&mut self) -> Result<Delivery, BusError> {
        loop {
            let message = self.messages.next().await.ok_or(BusError::Closed)?.map_err(BusError::nats)?;
            let (seq, attempt) = {
                let info = message.info().map_err(BusError::nats)?;
                (info.stream_sequence, u32::try_from(info.delivered).unwrap_or(u32::MAX))
            };
            match crate::event::decode(&message.payload) {
                Ok(event) => return Ok(Delivery::new(event, seq, attempt, Box::new(JetStreamAcker(Some(message))))),
                Err(e) => {
                    // Not a CloudEvent (published around Nimbus): never deliverable, so never retried.
                    tracing::warn!(seq, error = %nimbus_observe::report(&e), "dropping a message that is not a CloudEvent");
                    let _ = message.ack_with(AckKind::Term).await;
                }
            }
        }
    }
}

struct JetStreamAcker(Option<jetstream::Message>);

impl JetStreamAcker {
    async fn send(mut self: Box<Self>, kind: AckKind) -> Result<(), BusError> {
        let message = self.0.take().expect("settled once");
        message.ack_with(kind).await.map_err(BusError::nats)
    }
}

#[async_trait]
impl Acker for JetStreamAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), BusError> {
        // Confirmed by the server: once this returns, the group has moved past the event.
        let message = self.0.take().expect("settled once");
        message.double_ack().await.map_err(BusError::nats)
    }

    async fn nack(self: Box<Self>, delay: Duration) -> Result<(), BusError> {
        self.send(AckKind::Nak(Some(delay))).await
    }

    async fn in_progress(&self) -> Result<(), BusError> {
        let message = self.0.as_ref().expect("not settled");
        message.ack_with(AckKind::Progress).await.map_err(BusError::nats)
    }
}

impl Drop for JetStreamAcker {
    fn drop(&mut self) {
        // Dropped unsettled: offer it again now rather than after the ack wait.
        if let (Some(message), Ok(rt)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move {
                let _ = message.ack_with(AckKind::Nak(None)).await;
            });
        }
    }
}

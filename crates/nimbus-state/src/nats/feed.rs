//! The JetStream change feed: a durable pull consumer named `nimbus-changes` on the bucket's
//! stream, created to deliver only what is written after it, with explicit acks. Its
//! acknowledgement floor is where every follower, on any node, resumes; at most 256 changes are
//! outstanding across the followers, each delivered to one of them.
//! Expiry markers are acknowledged and skipped, as the embedded store records no event for an
//! expired key.
//!
//! A bucket keeps one revision per key, which would drop a change overwritten before the feed
//! read it; so a followed bucket's stream keeps every revision, and acknowledging purges the
//! revisions of each acknowledged key older than the acknowledged one: the history is bounded by
//! how far the followers lag. Unfollowing keeps one revision per key again.
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{self, Config};
use async_nats::jetstream::consumer::{AckPolicy, Consumer, DeliverPolicy};
use std::collections::BTreeMap;

use async_nats::jetstream::kv;
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{AckKind, Context, Message};
use async_trait::async_trait;
use futures::StreamExt;

use crate::KvError;
use crate::feed::{Change, ChangeFeed};

/// The durable consumer's name on every bucket stream.
const CONSUMER: &str = "nimbus-changes";
/// The most changes outstanding (fetched, not acknowledged) across every follower.
const BATCH: usize = 256;
/// How long a follower that vanished keeps its batch before others get it again.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// The revisions per key a followed bucket's stream keeps: all, in effect (the client library
/// refuses to open a bucket whose limit is not positive).
const ALL_REVISIONS: i64 = i32::MAX as i64;

/// Sets how many revisions of each key the bucket's stream keeps.
async fn keep_revisions(js: &Context, store: &kv::Store, revisions: i64) -> Result<(), KvError> {
    let mut stream = store.stream.clone();
    let mut config = stream.info().await.map_err(KvError::nats)?.config.clone();
    if config.max_messages_per_subject != revisions {
        config.max_messages_per_subject = revisions;
        js.update_stream(&config).await.map_err(KvError::nats)?;
    }
    Ok(())
}

pub(super) async fn follow(js: &Context, store: &kv::Store) -> Result<Box<dyn ChangeFeed>, KvError> {
    keep_revisions(js, store, ALL_REVISIONS).await?;
    let config = Config {
        durable_name: Some(CONSUMER.into()),
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_ack_pending: BATCH as i64,
        max_deliver: -1,
        ..Default::default()
    };
    let consumer = store.stream.get_or_create_consumer(CONSUMER, config).await.map_err(KvError::nats)?;
    Ok(Box::new(Feed { consumer, stream: store.stream.clone(), prefix: store.prefix.clone(), pending: Vec::new() }))
}

pub(super) async fn unfollow(js: &Context, store: &kv::Store) -> Result<(), KvError> {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::stream::ConsumerErrorKind;
    match store.stream.delete_consumer(CONSUMER).await {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ConsumerErrorKind::JetStream(j) if j.error_code() == ErrorCode::CONSUMER_NOT_FOUND) =>
            {}
        Err(e) => return Err(KvError::nats(e)),
    }
    keep_revisions(js, store, 1).await
}

struct Feed {
    consumer: Consumer<pull::Config>,
    stream: Stream,
    /// The bucket's subject prefix, `$KV.<bucket>.`.
    prefix: String,
    /// Messages returned and not acknowledged yet.
    pending: Vec<Message>,
}

impl Feed {
    /// The change a bucket stream's message makes; `None` for an expiry marker.
    fn change(&self, message: &Message) -> Result<Option<Change>, KvError> {
        let revision = message.info().map_err(KvError::nats)?.stream_sequence;
        let headers = message.headers.clone().unwrap_or_default();
        if super::marker(&headers) {
            return Ok(None);
        }
        let key = message
            .subject
            .strip_prefix(self.prefix.as_str())
            .and_then(|k| hex::decode(k).ok())
            .and_then(|k| String::from_utf8(k).ok())
            .ok_or_else(|| {
                KvError::Corrupt(format!("the bucket stream holds a foreign subject {}", message.subject))
            })?;
        let value = (!super::deleted(&headers)).then(|| message.payload.clone());
        Ok(Some(Change { key, revision, value }))
    }
}

#[async_trait]
impl ChangeFeed for Feed {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Change>, KvError> {
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(max.clamp(1, BATCH))
            .expires(wait.max(Duration::from_millis(10)))
            .messages()
            .await
            .map_err(KvError::nats)?;
        let mut changes = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.map_err(KvError::nats)?;
            changes.extend(self.change(&message)?);
            self.pending.push(message);
        }
        Ok(changes)
    }

    async fn ack(&mut self) -> Result<(), KvError> {
        let Some(last) = self.pending.pop() else { return Ok(()) };
        let mut acked = BTreeMap::new();
        for message in self.pending.drain(..) {
            acked.insert(message.subject.to_string(), message.info().map_err(KvError::nats)?.stream_sequence);
            message.ack_with(AckKind::Ack).await.map_err(KvError::nats)?;
        }
        acked.insert(last.subject.to_string(), last.info().map_err(KvError::nats)?.stream_sequence);
        // Acks travel in order on one connection: the server confirming the last has the rest.
        last.double_ack().await.map_err(KvError::nats)?;
        for (subject, revision) in acked {
            if let Err(e) = self.stream.purge().filter(subject.as_str()).sequence(revision).await {
                // Only history stays: the next acknowledged change of the key purges it.
                tracing::warn!(subject, error = %e, "cannot purge the acknowledged revisions of a key");
            }
        }
        Ok(())
    }
}

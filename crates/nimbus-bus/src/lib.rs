//! The Nimbus event broker: durable topics of CloudEvents with consumer groups, at-least-once
//! delivery, retries with backoff, dead letters, per-key order and publish-side dedup.
//!
//! This crate owns the [`EventBus`] trait and its two backends — [`Embedded`] (a redb log on
//! this node, group commit before every acknowledgement) and [`JetStream`] (NATS JetStream
//! streams and durable pull consumers) — which pass one conformance suite; the CloudEvents
//! event format and HTTP binding ([`http`]); the [`dispatch`] loop that delivers a topic to a
//! destination with retries and a dead-letter topic; and cron schedules ([`cron`]). It does not
//! own what a destination is (a wasm function or a service: the gateway and the CLI wire those)
//! nor any HTTP server.
//!
//! Topics and consumer groups belong to one app ([`Topic::new`], [`Group::new`]): backends store
//! them under names that carry the app, so two apps' `orders` never meet.
//!
//! Topics are partitioned: an event's `partitionkey` extension (or else its id) picks the
//! partition, and a consumer group has at most one event of a partition in flight, so events
//! with the same key are handled in publish order, also across retries and restarts.
//!
//! ```
//! # async fn demo() -> Result<(), nimbus_bus::BusError> {
//! use nimbus_bus::{BusConfig, Embedded, EventBus, EventBuilder, EventBuilderV10, Group, Topic};
//! let dir = tempfile::tempdir().unwrap();
//! let bus = Embedded::open(&dir.path().join("bus.redb"), BusConfig::default())?;
//! let orders = Topic::new("shop", "orders")?;
//! let event = EventBuilderV10::new().id("1").source("/shop").ty("order.created").build().unwrap();
//! let published = bus.publish(&orders, &event, Default::default()).await?; // on disk now
//! let mut billing = bus.subscribe(&orders, &Group::new("shop", "billing")?).await?;
//! let delivery = billing.next().await?;
//! assert_eq!(delivery.seq, published.seq);
//! delivery.ack().await?;
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

mod bus;
pub mod cron;
pub mod dispatch;
mod embedded;
mod error;
pub mod event;
pub mod http;
mod jetstream;
mod topic;

pub use bus::{Acker, BusConfig, Delivery, EventBus, GroupPosition, PublishOptions, Published, Stored, Subscription};
pub use embedded::Embedded;
pub use error::BusError;
pub use event::{AttributesReader, AttributesWriter, Event, EventBuilder, EventBuilderV10};
pub use jetstream::JetStream;
pub use topic::{Group, MAX_NAME_LEN, Topic};

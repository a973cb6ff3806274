//! Nimbus durable state: KV buckets behind the [`KvStore`] trait, with an embedded backend
//! ([`Embedded`], redb on this node) and a distributed one ([`NatsKv`], NATS JetStream KV), which
//! pass one conformance suite: get / set (with TTL) / delete / exists, list by prefix with a
//! cursor, compare-and-swap on revisions, atomic increment, batch get and set, and a durable
//! [`feed`] of a bucket's changes written with the changes themselves. Keys are any text
//! up to 512 bytes, compared byte for byte. A [`Bucket`] belongs to one app: backends store it
//! under a name that carries the app (`nimbus_manifest::scoped_name`), so two apps' `carts`
//! never meet. [`migrate`] moves buckets stored before names were scoped to their apps, once.
//!
//! [`blob`] holds buckets of large objects behind the [`BlobStore`] trait, streamed in both
//! directions (never held whole in memory) with byte ranges, size limits and bucket quotas:
//! [`EmbeddedBlobs`] (content-addressed files on this node with a redb index) and [`NatsBlobs`]
//! (NATS JetStream Object Store) pass one conformance suite. Blob buckets are [`Bucket`]s too.
//!
//! [`journal`] keeps the workflow journal of an app on any of them (runs, journals, signals,
//! idempotency keys), so both backends keep it alike.
//!
//! This crate does not link anything into wasm (that is `nimbus-wasm`'s `wasi:keyvalue`) and
//! does not decide which component may touch which bucket (grants, checked by the caller).
//!
//! ```
//! # async fn demo() -> Result<(), nimbus_state::KvError> {
//! use nimbus_state::{Bucket, Embedded, KvStore, Swap};
//! let dir = tempfile::tempdir().unwrap();
//! let kv = Embedded::open(&dir.path().join("state.redb"))?;
//! let carts = Bucket::new("shop", "carts")?;
//! let rev = kv.set(&carts, "user:7", "3 items".into(), None).await?; // on disk now
//! assert_eq!(kv.compare_and_swap(&carts, "user:7", Some(rev), "4 items".into()).await?, Swap::Done(rev + 1));
//! assert_eq!(kv.increment(&carts, "count", 2).await?, 2);
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

pub mod blob;
mod embedded;
mod error;
pub mod feed;
pub mod journal;
mod kv;
mod migrate;
mod names;
mod nats;
mod value_format;

pub use blob::{
    Blob, BlobError, BlobPage, BlobStore, ByteRange, ByteStream, EmbeddedBlobs, Limits, NatsBlobs, ObjectInfo,
};
pub use embedded::Embedded;
pub use error::KvError;
pub use feed::{Change, ChangeFeed};
pub use kv::{Entry, KvStore, Page, Removal, Swap};
pub use migrate::{LAYOUT, Moved, layout, migrate};
pub use names::{Bucket, MAX_BUCKET_LEN, MAX_KEY_LEN, check_key};
pub use nats::NatsKv;

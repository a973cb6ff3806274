//! Change feeds: every change of a followed bucket, recorded by the store as part of the write
//! itself, kept until a follower acknowledges it. What the `[[trigger.kv]]` relay reads
//! (`nimbus-triggers`), so a change event is never lost between a write and its publication —
//! not on `kill -9`, not when another node made the write.
//!
//! * [`crate::Embedded`] writes each change into an outbox table in the same transaction as
//!   the write (so both are durable together or neither is); acknowledging deletes the rows.
//! * [`crate::NatsKv`] reads the bucket's own JetStream stream through a durable consumer
//!   (`nimbus-changes`): the stream is the outbox, every node's writes are in it, and the
//!   consumer's acknowledgement floor is where a follower resumes. Followers on several nodes
//!   share the consumer: each change goes to one of them, at most 256 unacknowledged at once.
//!
//! One follower reads changes in revision order. Followers on several nodes each relay their own
//! batches, so two changes of one key in different batches may be published out of order; the
//! revision says which is newer.
//!
//! Delivery is at least once: a follower that fails between publishing and acknowledging sees
//! the same changes again (same revisions, so a consumer can drop what it has seen).
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::KvError;

/// One change of a followed bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The key that changed.
    pub key: String,
    /// The bucket's revision the change made.
    pub revision: u64,
    /// The new value; `None` when the key was deleted.
    pub value: Option<Bytes>,
}

/// A bucket's change feed as one follower reads it ([`crate::KvStore::follow`]).
#[async_trait]
pub trait ChangeFeed: Send {
    /// Up to `max` changes not yet acknowledged, oldest first, after those an earlier call
    /// returned; waits up to `wait` for the first and returns none if nothing changed.
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Change>, KvError>;

    /// Acknowledges every change returned so far: no follower sees them again, even after a
    /// restart. Durable when it returns.
    async fn ack(&mut self) -> Result<(), KvError>;
}

/// The on-disk form of an outbox row (version 1): `[1][op: 1 set, 2 delete][key length, u16
/// LE][key][value]`.
pub(crate) fn encode(key: &str, value: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + key.len() + value.map_or(0, <[u8]>::len));
    out.push(1);
    out.push(if value.is_some() { 1 } else { 2 });
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(value.unwrap_or_default());
    out
}

/// Reads an outbox row written by [`encode`].
pub(crate) fn decode(revision: u64, row: &[u8]) -> Result<Change, KvError> {
    let corrupt = || KvError::Corrupt(format!("outbox row {revision} cannot be read by this build"));
    let [1, op @ (1 | 2), a, b, rest @ ..] = row else { return Err(corrupt()) };
    let len = usize::from(u16::from_le_bytes([*a, *b]));
    let (key, value) = rest.split_at_checked(len).ok_or_else(corrupt)?;
    let key = std::str::from_utf8(key).map_err(|_| corrupt())?.to_string();
    let value = (*op == 1).then(|| Bytes::copy_from_slice(value));
    Ok(Change { key, revision, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_foreign_rows_are_refused() {
        let set = decode(7, &encode("k€y", Some(b"v\0"))).unwrap();
        assert_eq!(set, Change { key: "k€y".into(), revision: 7, value: Some(Bytes::from_static(b"v\0")) });
        assert_eq!(decode(8, &encode("k", None)).unwrap().value, None);
        assert_eq!(decode(9, &encode("k", Some(b""))).unwrap().value, Some(Bytes::new()));
        for bad in [&[][..], &[2, 1, 0, 0], &[1, 3, 0, 0], &[1, 1, 9, 0, b'k']] {
            assert!(matches!(decode(1, bad), Err(KvError::Corrupt(_))), "{bad:?}");
        }
    }
}

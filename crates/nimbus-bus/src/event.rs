//! CloudEvents 1.0 as the bus stores and delivers them: the JSON event format on disk and on
//! JetStream, the `partitionkey` extension (CloudEvents Partitioning) for per-key order, the
//! `traceparent`/`tracestate` extensions (CloudEvents Distributed Tracing) for W3C trace context,
//! and the attributes a dead-lettered event carries.
use cloudevents::event::ExtensionValue;
pub use cloudevents::{AttributesReader, AttributesWriter, Event, EventBuilder, EventBuilderV10};
use nimbus_observe::TraceContext;
use sha2::{Digest, Sha256};

use crate::BusError;

/// Extension attribute naming the ordering key: events with the same key are delivered in
/// publish order.
pub const PARTITION_KEY: &str = "partitionkey";
/// Extension attribute with the W3C `traceparent` of the publisher.
pub const TRACEPARENT: &str = "traceparent";
/// Extension attribute with the W3C `tracestate` of the publisher.
pub const TRACESTATE: &str = "tracestate";

/// Attributes added to an event moved to a dead-letter topic.
pub mod dead_letter {
    /// Why the last attempt failed, as a short code (`http-503`, `trap`, `timeout`, ...).
    pub const ERROR_CODE: &str = "nimbuserrorcode";
    /// The last attempt's error message.
    pub const ERROR: &str = "nimbuserror";
    /// The destination that failed (`function:bill`, `service:orders-api`).
    pub const DESTINATION: &str = "nimbuserrordest";
    /// How many times delivery was attempted.
    pub const ATTEMPTS: &str = "nimbusattempts";
    /// The topic the event was published to.
    pub const TOPIC: &str = "nimbustopic";
    /// Every attribute above, to strip them on replay.
    pub const ALL: [&str; 5] = [ERROR_CODE, ERROR, DESTINATION, ATTEMPTS, TOPIC];
}

/// The ordering key of an event, if it has one.
pub fn partition_key(event: &Event) -> Option<String> {
    event.extension(PARTITION_KEY).map(ToString::to_string)
}

/// The partition (`0..partitions`) an event belongs to: by its ordering key, else by its id.
/// Stable across processes and versions (the first 8 bytes of a SHA-256).
pub(crate) fn partition(event: &Event, partitions: u16) -> u16 {
    let key = partition_key(event).unwrap_or_else(|| event.id().to_string());
    let digest = Sha256::digest(key.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (n % u64::from(partitions.max(1))) as u16
}

/// The identity publish-side deduplication uses: CloudEvents `source` + `id`, hashed.
pub(crate) fn dedup_id(event: &Event) -> String {
    let mut h = Sha256::new();
    h.update(event.source().as_str().as_bytes());
    h.update([0]);
    h.update(event.id().as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Encodes an event in the CloudEvents JSON format.
pub fn encode(event: &Event) -> Result<Vec<u8>, BusError> {
    serde_json::to_vec(event).map_err(|e| BusError::InvalidEvent(e.to_string()))
}

/// Decodes an event from the CloudEvents JSON format.
pub fn decode(bytes: &[u8]) -> Result<Event, BusError> {
    serde_json::from_slice(bytes).map_err(|e| BusError::InvalidEvent(e.to_string()))
}

/// An event's data as bytes: binary as it is, text as UTF-8, JSON serialized; none is empty.
pub fn data_bytes(event: &Event) -> Vec<u8> {
    use cloudevents::event::Data;
    match event.data() {
        Some(Data::Binary(b)) => b.clone(),
        Some(Data::String(s)) => s.clone().into_bytes(),
        Some(Data::Json(v)) => serde_json::to_vec(v).unwrap_or_default(),
        None => Vec::new(),
    }
}

/// The W3C trace context an event carries, if its `traceparent` is valid.
pub fn trace_context(event: &Event) -> Option<TraceContext> {
    event.extension(TRACEPARENT).and_then(|v| TraceContext::parse(&v.to_string()))
}

/// Gives an event trace context: keeps a valid `traceparent` extension, else takes `incoming`
/// (the publisher's span or request header) when valid, else starts a new trace.
pub fn ensure_trace_context(event: &mut Event, incoming: Option<&str>) {
    if trace_context(event).is_some() {
        return;
    }
    let ctx = incoming.and_then(TraceContext::parse).unwrap_or_else(TraceContext::new_root);
    event.set_extension(TRACEPARENT, ExtensionValue::String(ctx.traceparent()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, key: Option<&str>) -> Event {
        let mut b = EventBuilderV10::new().id(id).source("/test").ty("t");
        if let Some(k) = key {
            b = b.extension(PARTITION_KEY, k);
        }
        b.build().expect("event")
    }

    #[test]
    fn partition_follows_the_key() {
        let a = partition(&event("1", Some("cust-7")), 16);
        assert_eq!(a, partition(&event("2", Some("cust-7")), 16));
        assert!((0..16).contains(&partition(&event("3", None), 16)));
    }

    #[test]
    fn json_round_trip_and_dedup_identity() {
        let e = event("1", Some("k"));
        assert_eq!(decode(&encode(&e).expect("encode")).expect("decode"), e);
        assert_eq!(dedup_id(&e), dedup_id(&event("1", None)));
        assert_ne!(dedup_id(&e), dedup_id(&event("2", None)));
    }

    #[test]
    fn trace_context() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut e = event("1", None);
        ensure_trace_context(&mut e, Some(good));
        assert_eq!(e.extension(TRACEPARENT).map(ToString::to_string).as_deref(), Some(good));
        let mut e = event("1", None);
        ensure_trace_context(&mut e, Some("bad"));
        assert!(super::trace_context(&e).is_some(), "a new trace starts");
    }
}

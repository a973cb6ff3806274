//! The CloudEvents HTTP binding: reading an event from a request (binary mode: `ce-*` headers
//! and the body as data; structured mode: `application/cloudevents+json`), and writing one as a
//! binary-mode request (how events are POSTed to services, as Knative does).
use cloudevents::binding::http::{Builder, Serializer, to_event};
use cloudevents::message::{BinaryDeserializer, Error as MessageError};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::{BusError, Event};

/// Reads a CloudEvent from request headers and body, with trace context: a valid `traceparent`
/// extension is kept, else the request's `traceparent` header is taken, else a trace starts.
/// Errors say what is wrong; the caller answers 400 and never retries or stores the event.
pub fn read_event(headers: &HeaderMap, body: Vec<u8>) -> Result<Event, BusError> {
    let mut event = to_event(headers, body).map_err(|e| BusError::InvalidEvent(explain(&e)))?;
    let traceparent = headers.get(nimbus_observe::TRACEPARENT).and_then(|v| v.to_str().ok());
    crate::event::ensure_trace_context(&mut event, traceparent);
    Ok(event)
}

fn explain(e: &MessageError) -> String {
    let text = e.to_string();
    if text.contains("Unknown encoding") || text.contains("Wrong encoding") {
        "not a CloudEvent: send `ce-specversion`, `ce-id`, `ce-source` and `ce-type` headers (binary mode) or an `application/cloudevents+json` body (structured mode)".into()
    } else {
        format!("not a valid CloudEvent: {text}")
    }
}

struct Parts {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Builder<Parts> for Parts {
    fn header(&mut self, key: &str, value: HeaderValue) {
        if let Ok(name) = HeaderName::from_bytes(key.as_bytes()) {
            self.headers.insert(name, value);
        }
    }

    fn body(&mut self, bytes: Vec<u8>) -> Result<Parts, MessageError> {
        Ok(Parts { headers: std::mem::take(&mut self.headers), body: bytes })
    }

    fn finish(&mut self) -> Result<Parts, MessageError> {
        self.body(Vec::new())
    }
}

/// Writes an event in binary mode: `ce-*` headers (and `content-type` from `datacontenttype`),
/// and the data as the body.
pub fn write_binary(event: &Event) -> Result<(HeaderMap, Vec<u8>), BusError> {
    let parts = BinaryDeserializer::deserialize_binary(
        event.clone(),
        Serializer::new(Parts { headers: HeaderMap::new(), body: Vec::new() }),
    )
    .map_err(|e| BusError::InvalidEvent(e.to_string()))?;
    Ok((parts.headers, parts.body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AttributesReader, EventBuilder, EventBuilderV10};

    #[test]
    fn binary_round_trip_and_structured() {
        let e = EventBuilderV10::new()
            .id("1")
            .source("/s")
            .ty("t")
            .extension("partitionkey", "k")
            .data("application/json", serde_json::json!({"a": 1}))
            .build()
            .unwrap();
        let (headers, body) = write_binary(&e).unwrap();
        assert_eq!(headers["ce-id"], "1");
        assert_eq!(headers["ce-partitionkey"], "k");
        assert_eq!(headers["content-type"], "application/json");
        let back = read_event(&headers, body).unwrap();
        assert_eq!(back.id(), "1");
        assert!(crate::event::trace_context(&back).is_some(), "a trace starts");
        assert_eq!(back.extension("partitionkey").map(ToString::to_string).as_deref(), Some("k"));

        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/cloudevents+json"));
        let structured = br#"{"specversion":"1.0","id":"2","source":"/s","type":"t","data":{"x":true}}"#.to_vec();
        assert_eq!(read_event(&h, structured).unwrap().id(), "2");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = read_event(&HeaderMap::new(), b"hello".to_vec()).unwrap_err().to_string();
        assert!(err.contains("ce-specversion"), "{err}");
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/cloudevents+json"));
        let err = read_event(&h, b"{not json".to_vec()).unwrap_err().to_string();
        assert!(err.contains("not a valid CloudEvent"), "{err}");
        let mut h = HeaderMap::new();
        for (k, v) in [("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-type", "t")] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        assert!(read_event(&h, Vec::new()).is_err(), "ce-source is required");
    }
}

//! Request ids: an incoming `x-request-id` is kept when it is sane, otherwise one is minted.
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::HeaderValue;

/// The header carrying the request id, in both directions.
pub const REQUEST_ID_HEADER: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// A request's id: 1 to 128 characters of `[A-Za-z0-9._:-]`. It is held as the header value it
/// is written as, sharing its bytes, so putting it on the forwarded request, the response and
/// the server span costs no allocation (an id the caller sent costs none at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The caller's id if it is sane, else a fresh one.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        headers.get(REQUEST_ID_HEADER).filter(|v| sane(v.as_bytes())).map_or_else(mint, |v| Self(v.clone()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("request ids are ASCII")
    }

    /// The id as a header value (sharing its bytes).
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn sane(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A process-unique id: a random per-process prefix and a counter.
fn mint() -> RequestId {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        nanos ^ std::process::id().rotate_left(16)
    });
    // Every request without an id mints one: written in place, in one allocation that its
    // clones share. The counter's low 6 bytes are its 12 hex digits.
    let count = COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    let mut id = [b'-'; 21];
    hex::encode_to_slice(prefix.to_be_bytes(), &mut id[..8]).expect("4 bytes are 8 hex digits");
    hex::encode_to_slice(&count[2..], &mut id[9..]).expect("6 bytes are 12 hex digits");
    RequestId(HeaderValue::from_maybe_shared(Bytes::from_owner(id)).expect("hex digits and a dash"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        let mut h = http::HeaderMap::new();
        let a = RequestId::from_headers(&h);
        assert_ne!(a, RequestId::from_headers(&h), "minted ids are unique");
        h.insert(REQUEST_ID_HEADER, "abc-123".parse().unwrap());
        assert_eq!(RequestId::from_headers(&h).as_str(), "abc-123");
        h.insert(REQUEST_ID_HEADER, "has space".parse().unwrap());
        assert_ne!(RequestId::from_headers(&h).as_str(), "has space");
        h.insert(REQUEST_ID_HEADER, "x".repeat(129).parse().unwrap());
        let minted = RequestId::from_headers(&h);
        assert_eq!(minted.as_str().len(), 21);
        assert!(minted.as_str().bytes().enumerate().all(|(i, b)| if i == 8 {
            b == b'-'
        } else {
            b.is_ascii_hexdigit()
        }));
        assert_eq!(minted.header_value().as_bytes(), minted.as_str().as_bytes());
    }
}

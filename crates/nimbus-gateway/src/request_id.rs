//! Request ids: an incoming `x-request-id` is kept when it is sane, otherwise one is minted.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// The header carrying the request id, in both directions.
pub const REQUEST_ID_HEADER: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The caller's id if it is 1 to 128 characters of `[A-Za-z0-9._:-]`, else a fresh one.
pub fn request_id(headers: &http::HeaderMap) -> Arc<str> {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        })
        .map_or_else(mint, Arc::from)
}

/// A process-unique id: a random per-process prefix and a counter.
fn mint() -> Arc<str> {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        nanos ^ std::process::id().rotate_left(16)
    });
    // Every request mints one: written in place, without `format!`. The counter's low 6 bytes
    // are its 12 hex digits.
    let count = COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    let mut id = [b'-'; 21];
    hex::encode_to_slice(prefix.to_be_bytes(), &mut id[..8]).expect("4 bytes are 8 hex digits");
    hex::encode_to_slice(&count[2..], &mut id[9..]).expect("6 bytes are 12 hex digits");
    Arc::from(std::str::from_utf8(&id).expect("hex digits and a dash"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        let mut h = http::HeaderMap::new();
        let a = request_id(&h);
        assert_ne!(a, request_id(&h), "minted ids are unique");
        h.insert(REQUEST_ID_HEADER, "abc-123".parse().unwrap());
        assert_eq!(&*request_id(&h), "abc-123");
        h.insert(REQUEST_ID_HEADER, "has space".parse().unwrap());
        assert_ne!(&*request_id(&h), "has space");
        h.insert(REQUEST_ID_HEADER, "x".repeat(129).parse().unwrap());
        let minted = request_id(&h);
        assert_eq!(minted.len(), 21);
        assert!(minted.bytes().enumerate().all(|(i, b)| if i == 8 { b == b'-' } else { b.is_ascii_hexdigit() }));
    }
}

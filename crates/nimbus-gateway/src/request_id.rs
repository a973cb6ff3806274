//! Request ids: an incoming `x-request-id` is kept when it is sane, otherwise one is minted.
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The header carrying the request id, in both directions.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The caller's id if it is 1 to 128 characters of `[A-Za-z0-9._:-]`, else a fresh one.
pub fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        })
        .map_or_else(mint, str::to_string)
}

/// A process-unique id: a random per-process prefix and a counter.
fn mint() -> String {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        nanos ^ std::process::id().rotate_left(16)
    });
    format!("{prefix:08x}-{:012x}", COUNTER.fetch_add(1, Ordering::Relaxed))
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
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID_HEADER, "has space".parse().unwrap());
        assert_ne!(request_id(&h), "has space");
        h.insert(REQUEST_ID_HEADER, "x".repeat(129).parse().unwrap());
        assert_eq!(request_id(&h).len(), 21);
    }
}

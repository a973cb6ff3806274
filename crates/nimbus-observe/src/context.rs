//! W3C Trace Context: the `traceparent` header, parsed, minted and formatted.
use opentelemetry::trace::{SpanId, TraceId};

/// The `traceparent` header name.
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// The position of one span in one trace, as carried between processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace every span of the request shares.
    pub trace_id: TraceId,
    /// The span this context points at (the parent of spans started from it).
    pub span_id: SpanId,
    /// Whether the trace is recorded (the W3C `sampled` flag).
    pub sampled: bool,
}

impl TraceContext {
    /// A new trace: random ids, sampled.
    pub fn new_root() -> Self {
        Self { trace_id: TraceId::from_bytes(random_nonzero()), span_id: new_span_id(), sampled: true }
    }

    /// Parses a version-00 `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`); `None` for anything
    /// else, including all-zero ids, as the W3C spec asks (the caller then starts a new trace).
    /// Later versions are read by their first four fields, as the spec allows.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let mut parts = header.split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        let hex =
            |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id = TraceId::from_hex(trace).ok().filter(|t| *t != TraceId::INVALID)?;
        let span_id = SpanId::from_hex(span).ok().filter(|s| *s != SpanId::INVALID)?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Self { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    /// The context in a request's `traceparent` header, if it has a valid one.
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(Self::parse)
    }

    /// The context of a new span in this trace, whose parent is this one.
    pub fn child(&self) -> Self {
        Self { span_id: new_span_id(), ..*self }
    }

    /// `00-<trace id>-<span id>-<flags>`.
    pub fn traceparent(&self) -> String {
        String::from_utf8_lossy(&self.encode()).into_owned()
    }

    /// The `traceparent` as a header value.
    pub fn header_value(&self) -> http::HeaderValue {
        http::HeaderValue::from_bytes(&self.encode()).expect("hex digits and dashes are a valid header value")
    }

    /// Sets (or replaces) `traceparent` in `headers`.
    pub fn inject(&self, headers: &mut http::HeaderMap) {
        headers.insert(TRACEPARENT, self.header_value());
    }

    /// The 55 bytes of the header, without going through `fmt` (it is written on every request).
    fn encode(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        // The slices are exactly twice the bytes' length, so encoding cannot fail.
        let _ = hex::encode_to_slice(self.trace_id.to_bytes(), &mut out[3..35]);
        let _ = hex::encode_to_slice(self.span_id.to_bytes(), &mut out[36..52]);
        let _ = hex::encode_to_slice([u8::from(self.sampled)], &mut out[53..55]);
        out
    }
}

/// A random, non-zero span id.
pub(crate) fn new_span_id() -> SpanId {
    SpanId::from_bytes(random_nonzero())
}

fn random_nonzero<const N: usize>() -> [u8; N] {
    loop {
        let mut bytes = [0u8; N];
        fastrand::fill(&mut bytes);
        if bytes.iter().any(|&b| b != 0) {
            return bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_malformed_headers() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(tp).unwrap();
        assert!(ctx.sampled);
        assert_eq!(ctx.traceparent(), tp);
        assert!(!TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
        assert!(TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future").is_some());
    }

    #[test]
    fn children_share_the_trace() {
        let root = TraceContext::new_root();
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
    }
}

//! Requests refused before routing, with `400`: a `Host` that is not one host name (non-ASCII or
//! control bytes, characters no host has, or more than one `Host` header), and a path with a dot
//! segment (`.` or `..`, also percent-encoded as `%2e`). Routing and the guest see the path as
//! it was sent, so refusing dot segments (rather than resolving them) keeps the two in agreement:
//! `/b/../a/x` can neither reach the app of `/b/...` as `/a/x` nor slip past a route.

/// Why a request is refused, as its error message.
pub(crate) fn refusal<B>(req: &http::Request<B>) -> Option<&'static str> {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    if let Some(host) = hosts.next() {
        if hosts.next().is_some() {
            return Some("more than one Host header; send exactly one");
        }
        if !host.as_bytes().iter().all(|&b| host_byte(b)) {
            return Some(
                "the Host header is not a host name (letters, digits, `-`, `.`, `_`, a port, an [IPv6] address)",
            );
        }
    }
    if has_dot_segment(req.uri().path()) {
        return Some("the path has a `.` or `..` segment (possibly percent-encoded); send the resolved path");
    }
    None
}

fn host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')
}

/// Whether a segment of `path` is `.` or `..`, with any of its dots written as `%2e`/`%2E`.
fn has_dot_segment(path: &str) -> bool {
    if !path.bytes().any(|b| b == b'.' || b == b'%') {
        return false;
    }
    path.split('/').any(|segment| {
        let mut dots = 0;
        let mut rest = segment.as_bytes();
        while !rest.is_empty() {
            if rest[0] == b'.' {
                rest = &rest[1..];
            } else if rest.len() >= 3 && rest[0] == b'%' && rest[1] == b'2' && rest[2].eq_ignore_ascii_case(&b'e') {
                rest = &rest[3..];
            } else {
                return false;
            }
            dots += 1;
        }
        (1..=2).contains(&dots)
    })
}

#[cfg(test)]
mod tests {
    use super::has_dot_segment;

    #[test]
    fn dot_segments_plain_and_encoded() {
        for bad in ["/b/../a/x", "/..", "/a/.", "/a/./b", "/b/%2e%2e/a", "/b/%2E./a", "/b/.%2e", "/%2e/x"] {
            assert!(has_dot_segment(bad), "{bad}");
        }
        for good in ["/", "/a/b", "/a/.../b", "/a/.hidden", "/a/b.txt", "/a/%2e%2e%2e", "/a/%2f", "/a..b", "/%2ex"] {
            assert!(!has_dot_segment(good), "{good}");
        }
    }
}

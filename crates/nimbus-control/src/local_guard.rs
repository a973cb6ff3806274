//! What an API that trusts the local machine (`nimbus server --dev`, the local API of `nimbus up`)
//! refuses because a web page could have sent it. A page in the developer's browser can send
//! "simple" cross-origin requests without asking first (a `POST` with `content-type: text/plain`),
//! and a DNS-rebinding page can even read the answers: its own host name resolves to 127.0.0.1.
//! So, before any handler runs:
//!
//! - the `Host` must be a loopback name (`127.0.0.1`, `[::1]`, `localhost`, any port): a rebinding
//!   page's requests carry its own host name;
//! - an `Origin` must be this API's own (`http://` or, under `--tls`, `https://` + the `Host`: one
//!   port serves one scheme, so either is this API), and `Sec-Fetch-Site`, if sent,
//!   `same-origin` or `none`: a page elsewhere, including another port of this machine (the
//!   apps of the gateway), is refused;
//! - a request with a body must say what it sends with a content type a browser cannot send
//!   cross-origin without a CORS preflight (`application/json`, `application/x-tar`, …; not
//!   `text/plain`, a form or none), and this API answers no preflight.
//!
//! The CLI and `curl` send none of what is refused.
use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, header};

use crate::error::ControlError;

/// Content types a browser sends cross-origin without a preflight (the Fetch standard's
/// CORS-safelisted ones), compared by essence.
const SIMPLE_CONTENT_TYPES: [&str; 3] = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"];

/// `router` refusing every request a web page could have sent (see the module doc).
pub fn guard_local(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(guard))
}

async fn guard(req: Request, next: Next) -> Response {
    match check(req.headers(), req.uri()) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            tracing::warn!(error = %e, "refused a request a web page could have sent to the local API");
            e.into_response()
        }
    }
}

/// Why a request to a local API looks like it came from a web page, if it does.
fn check(headers: &HeaderMap, uri: &http::Uri) -> Result<(), ControlError> {
    let host = match headers.get(header::HOST) {
        Some(value) => value.to_str().ok(),
        // HTTP/2 names the host in the request's authority.
        None => uri.authority().map(http::uri::Authority::as_str),
    };
    let host = host.unwrap_or_default().to_ascii_lowercase();
    if !is_loopback_host(&host) {
        return Err(ControlError::Forbidden(format!(
            "this API answers only requests to a loopback address (Host 127.0.0.1, [::1] or localhost), not to `{host}`"
        )));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        // The web console served here sends its own origin with its writes.
        if !["http", "https"].iter().any(|scheme| origin.eq_ignore_ascii_case(&format!("{scheme}://{host}"))) {
            return Err(ControlError::Forbidden(format!(
                "this API does not answer requests from web pages (Origin `{origin}`)"
            )));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(ControlError::Forbidden(format!(
            "this API does not answer requests from web pages (Sec-Fetch-Site `{site}`)"
        )));
    }
    if has_body(headers) {
        let essence = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
            .unwrap_or_default();
        if essence.is_empty() || SIMPLE_CONTENT_TYPES.contains(&essence.as_str()) {
            let sent = if essence.is_empty() { "no content type".to_string() } else { format!("`{essence}`") };
            return Err(ControlError::UnsupportedMediaType(format!(
                "a request body must say what it is with a content type a web page cannot send; this one has {sent}"
            )));
        }
    }
    Ok(())
}

/// `127.0.0.1`, `[::1]` or `localhost`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().map(|ip| format!("[{ip}]")).unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default().to_string(),
    };
    let port_ok = match host.strip_prefix(name.as_str()) {
        Some("") => true,
        Some(rest) => rest.strip_prefix(':').is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    };
    port_ok && matches!(name.as_str(), "127.0.0.1" | "[::1]" | "localhost")
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|n| n.trim().parse::<u64>().map_or(true, |n| n > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), http::HeaderValue::from_static(v))).collect()
    }

    fn checked(pairs: &[(&'static str, &'static str)]) -> Result<(), u16> {
        check(&headers(pairs), &http::Uri::from_static("/v1/apps")).map_err(|e| e.status().as_u16())
    }

    #[test]
    fn loopback_hosts_only() {
        for ok in ["127.0.0.1:3001", "localhost:3001", "[::1]:3001", "localhost", "LOCALHOST:1"] {
            assert!(is_loopback_host(&ok.to_ascii_lowercase()), "{ok}");
        }
        for bad in
            ["evil.example:3001", "127.0.0.1.evil.example", "localhost.evil", "[::1]x", "localhost:", "127.0.0.2", ""]
        {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn what_a_web_page_sends_is_refused() {
        let host = ("host", "127.0.0.1:3001");
        assert_eq!(checked(&[host]), Ok(()));
        assert_eq!(checked(&[host, ("origin", "http://127.0.0.1:3001")]), Ok(()));
        assert_eq!(checked(&[host, ("origin", "https://127.0.0.1:3001")]), Ok(()));
        assert_eq!(checked(&[host, ("origin", "http://127.0.0.1:3000")]), Err(403));
        assert_eq!(checked(&[host, ("origin", "https://127.0.0.1:3000")]), Err(403));
        assert_eq!(checked(&[host, ("origin", "null")]), Err(403));
        assert_eq!(checked(&[host, ("sec-fetch-site", "same-site")]), Err(403));
        assert_eq!(checked(&[host, ("sec-fetch-site", "none")]), Ok(()));
        assert_eq!(checked(&[("host", "evil.example:3001")]), Err(403));
        let json = [host, ("content-length", "2"), ("content-type", "application/json")];
        assert_eq!(checked(&json), Ok(()));
        let tar = [host, ("transfer-encoding", "chunked"), ("content-type", "application/x-tar")];
        assert_eq!(checked(&tar), Ok(()));
        let text = [host, ("content-length", "2"), ("content-type", "Text/Plain; charset=application/json")];
        assert_eq!(checked(&text), Err(415));
        assert_eq!(checked(&[host, ("content-length", "2")]), Err(415));
        assert_eq!(checked(&[host, ("content-length", "0"), ("content-type", "text/plain")]), Ok(()));
    }
}

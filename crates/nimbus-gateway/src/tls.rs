//! TLS on a listener of the accept loop: the handshake of each connection (in the connection's
//! task, under its idle timeout), a clear answer to plaintext HTTP sent to a TLS port, HSTS on
//! responses over TLS, and [`RedirectToHttps`], the plain listener that sends browsers on.
use std::future::Future;

use http::{HeaderValue, StatusCode, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::GatewayBody;

/// What the first bytes of a connection to a TLS port are.
pub(crate) enum Opening {
    /// A TLS record (or anything else that is not plaintext HTTP): run the handshake.
    Tls,
    /// An HTTP request line: answered with [`refuse_plaintext`].
    PlainHttp,
    /// The client closed without sending anything.
    Closed,
}

/// Peeks at the first byte without consuming it: a TLS handshake starts with a record of type 22
/// (0x16), an HTTP/1 request with a method in capital letters and HTTP/2 prior knowledge with
/// `PRI`.
pub(crate) async fn opening(stream: &TcpStream) -> std::io::Result<Opening> {
    let mut first = [0u8; 1];
    Ok(match stream.peek(&mut first).await? {
        0 => Opening::Closed,
        _ if first[0].is_ascii_uppercase() => Opening::PlainHttp,
        _ => Opening::Tls,
    })
}

/// Reads the plaintext request's head (up to 8 KiB) and answers `400` with the `https://` URL to
/// use instead, then closes, as nginx's 497 does: a silent reset would leave the client guessing.
pub(crate) async fn refuse_plaintext(mut stream: TcpStream, port: u16) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.lines().next().and_then(|line| line.split(' ').nth(1)).filter(|p| p.starts_with('/'));
    let host = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("host"))
        .map(|(_, value)| value.trim())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| format!("HOST:{port}"), |h| h.to_string());
    let body = format!("This port speaks TLS (HTTPS), not plain HTTP: use https://{host}{}\n", path.unwrap_or("/"));
    let resp = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(resp.as_bytes()).await.is_ok() {
        let _ = stream.shutdown().await;
        // Read what the client still sends, so closing does not reset the answer away.
        let mut rest = stream.take(64 * 1024);
        let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
    }
}

/// The `Strict-Transport-Security` value for `max_age` seconds.
pub(crate) fn hsts_value(max_age: u64) -> HeaderValue {
    HeaderValue::try_from(format!("max-age={max_age}")).expect("digits are a valid header value")
}

/// Answers every request with `308 Permanent Redirect` to the same host and path over HTTPS on
/// `port` (443 leaves the port out of the URL). Serve it on a plain listener with
/// [`crate::serve`].
#[derive(Debug, Clone, Copy)]
pub struct RedirectToHttps {
    port: u16,
}

impl RedirectToHttps {
    /// Redirects to HTTPS on `port`.
    pub fn new(port: u16) -> Self {
        Self { port }
    }

    fn location(&self, req: &http::Request<hyper::body::Incoming>) -> Option<String> {
        let host = req.uri().host().map(str::to_string).or_else(|| {
            let authority = req.headers().get(header::HOST)?.to_str().ok()?.parse::<http::uri::Authority>().ok()?;
            Some(authority.host().to_string())
        })?;
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        Some(match self.port {
            443 => format!("https://{host}{path}"),
            port => format!("https://{host}:{port}{path}"),
        })
    }
}

impl crate::Handler for RedirectToHttps {
    type Body = GatewayBody;

    fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
        _client: Option<std::net::SocketAddr>,
    ) -> impl Future<Output = http::Response<GatewayBody>> + Send {
        let location = self.location(&req).and_then(|l| HeaderValue::try_from(l).ok());
        let resp = match location {
            Some(location) => {
                let mut resp = http::Response::new(GatewayBody::full(""));
                *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
                resp.headers_mut().insert(header::LOCATION, location);
                resp
            }
            None => {
                let mut resp = http::Response::new(GatewayBody::full("a Host header is needed to redirect to HTTPS\n"));
                *resp.status_mut() = StatusCode::BAD_REQUEST;
                resp
            }
        };
        std::future::ready(resp)
    }
}

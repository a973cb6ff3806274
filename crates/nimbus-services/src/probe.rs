//! Health probes of a service process: HTTP GET of a path (2xx/3xx is healthy) or a TCP connect.
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use nimbus_manifest::Probe;

use crate::netns::Dial;

/// Runs one probe against the process `dial` reaches; `Err` says why it failed.
pub(crate) async fn check(dial: &Dial, probe: &Probe) -> Result<(), String> {
    let timeout = Duration::from_millis(probe.timeout_ms);
    match tokio::time::timeout(timeout, run(dial, probe)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn run(dial: &Dial, probe: &Probe) -> Result<(), String> {
    let port = dial.port;
    let stream = dial.connect().await.map_err(|e| format!("connect to port {port}: {e}"))?;
    let Some(path) = &probe.path else { return Ok(()) };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(conn);
    let req = http::Request::get(path.as_str())
        .header(http::header::HOST, format!("127.0.0.1:{port}"))
        .header(http::header::USER_AGENT, "nimbus-probe")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| format!("GET {path}: {e}"))?;
    let status = resp.status();
    if status.is_success() || status.is_redirection() { Ok(()) } else { Err(format!("GET {path} answered {status}")) }
}

//! The WAGI executor: a WASI preview1 command module run as a CGI program per request. The
//! request arrives in environment variables and on stdin; the response is read from stdout.
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime::InstancePre;
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

use crate::scope::Run;
use crate::store::{InvocationState, MeteredLimits};
use crate::{FunctionSettings, Invocation, InvokeError, ResponseBody};

/// Largest response a CGI guest may write to stdout.
pub const MAX_CGI_OUTPUT: usize = 64 << 20;

/// Store data of one WAGI invocation.
pub(crate) struct WagiState {
    pub(crate) wasi: WasiP1Ctx,
    limits: MeteredLimits,
    _lease: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl InvocationState for WagiState {
    fn store_limits(&mut self) -> &mut MeteredLimits {
        &mut self.limits
    }
}

pub(crate) async fn handle(
    pre: &InstancePre<WagiState>,
    settings: &FunctionSettings,
    req: http::Request<Bytes>,
    mut inv: Invocation,
) -> Result<http::Response<ResponseBody>, InvokeError> {
    let limits = settings.limits;
    let (parts, body) = req.into_parts();
    let remote = || nimbus_observe::TraceContext::from_headers(&parts.headers);
    let mut run = Run::start(settings, &mut inv, remote);
    let stdout = MemoryOutputPipe::new(MAX_CGI_OUTPUT);
    let mut wasi = settings.wasi(&run.scope);
    wasi.arg(&*settings.name)
        .envs(&cgi_env(&parts, body.len(), &inv))
        .stdin(MemoryInputPipe::new(body))
        .stdout(stdout.clone());
    let metered = limits.store_limits(run.scope.telemetry.clone());
    let state = WagiState { wasi: wasi.build_p1(), limits: metered, _lease: inv.lease };
    let (mut store, deadline) = limits.new_store(pre.module().engine(), state);

    let scope = run.scope.clone();
    let call = async {
        let instance = run.instantiate(settings, pre.instantiate_async(&mut store)).await?;
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .map_err(|e| InvokeError::Instantiate(nimbus_observe::cause(e)))?;
        match start.call_async(&mut store, ()).await {
            Ok(()) => Ok(()),
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(I32Exit(0)) => Ok(()),
                Some(I32Exit(code)) => Err(InvokeError::Cgi(format!("the module exited with status {code}"))),
                None => Err(InvokeError::from_wasmtime(&e, limits.timeout)),
            },
        }
    };
    let result =
        match nimbus_observe::Busy::new(tokio::time::timeout_at(deadline.into(), call), &scope.telemetry.usage).await {
            Ok(result) => result,
            Err(_) => Err(InvokeError::Timeout(limits.timeout)),
        };
    drop(store);
    run.finish(result.as_ref().err().map(|e| e as _));
    result?;
    let output = stdout.try_into_inner().map(|b| b.freeze()).unwrap_or_default();
    parse_cgi(output)
}

fn cgi_env(parts: &http::request::Parts, content_length: usize, inv: &Invocation) -> Vec<(String, String)> {
    let path = parts.uri.path();
    let path_info = path.strip_prefix(inv.route_base.as_str()).unwrap_or(path);
    let host = parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let (server_name, server_port) = host.rsplit_once(':').unwrap_or((host, "80"));
    let mut env = vec![
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        ("SERVER_SOFTWARE".into(), concat!("nimbus/", env!("CARGO_PKG_VERSION")).into()),
        ("SERVER_PROTOCOL".into(), format!("{:?}", parts.version)),
        ("SERVER_NAME".into(), server_name.into()),
        ("SERVER_PORT".into(), server_port.into()),
        ("REQUEST_METHOD".into(), parts.method.to_string()),
        ("SCRIPT_NAME".into(), inv.route_base.clone()),
        ("PATH_INFO".into(), if path_info.is_empty() { "/".into() } else { path_info.into() }),
        ("PATH_TRANSLATED".into(), path_info.into()),
        ("QUERY_STRING".into(), parts.uri.query().unwrap_or("").into()),
        ("REQUEST_URI".into(), parts.uri.path_and_query().map_or("/", |p| p.as_str()).into()),
        ("CONTENT_LENGTH".into(), content_length.to_string()),
        ("X_REQUEST_ID".into(), inv.request_id.to_string()),
        ("X_MATCHED_ROUTE".into(), inv.route.clone()),
    ];
    if let Some(addr) = inv.client {
        env.push(("REMOTE_ADDR".into(), addr.ip().to_string()));
        env.push(("REMOTE_PORT".into(), addr.port().to_string()));
    }
    for (name, value) in &parts.headers {
        // `x_a` and `x-a` would be the same variable: a header with `_` in its name could stand in
        // for one the platform sets (`x-nimbus-caller`). Dropped, as nginx drops them.
        if name.as_str().contains('_') {
            continue;
        }
        let Ok(value) = value.to_str() else { continue };
        let key = name.as_str().to_ascii_uppercase().replace('-', "_");
        match key.as_str() {
            "CONTENT_TYPE" => env.push((key, value.into())),
            "CONTENT_LENGTH" | "AUTHORIZATION" | "PROXY_AUTHORIZATION" => {}
            _ => env.push((format!("HTTP_{key}"), value.into())),
        }
    }
    env
}

/// Splits CGI output into a response: header lines, a blank line, the body. `Status:` sets the
/// status; `Location:` without `Status:` redirects with 302.
fn parse_cgi(output: Bytes) -> Result<http::Response<ResponseBody>, InvokeError> {
    let (head_len, body_start) = find_header_end(&output).ok_or_else(|| {
        InvokeError::Cgi("its output has no header block (headers, then an empty line, then the body)".into())
    })?;
    let head = std::str::from_utf8(&output[..head_len])
        .map_err(|_| InvokeError::Cgi("its CGI headers are not UTF-8".into()))?;
    let mut builder = http::Response::builder();
    let mut status = None;
    let mut location = false;
    for line in head.lines().filter(|l| !l.trim().is_empty()) {
        let (name, value) =
            line.split_once(':').ok_or_else(|| InvokeError::Cgi(format!("invalid CGI header line `{line}`")))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            status = Some(
                code.parse::<http::StatusCode>()
                    .map_err(|_| InvokeError::Cgi(format!("invalid CGI status `{value}`")))?,
            );
            continue;
        }
        location |= name.eq_ignore_ascii_case("location");
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| InvokeError::Cgi(format!("invalid CGI header name `{name}`")))?;
        let value = http::HeaderValue::from_str(value)
            .map_err(|_| InvokeError::Cgi(format!("invalid value for CGI header `{name}`")))?;
        builder = builder.header(name, value);
    }
    let status = status.unwrap_or(if location { http::StatusCode::FOUND } else { http::StatusCode::OK });
    let body = Full::new(output.slice(body_start..)).map_err(|never| match never {}).boxed_unsync();
    builder.status(status).body(body).map_err(|e| InvokeError::Cgi(e.to_string()))
}

fn find_header_end(out: &[u8]) -> Option<(usize, usize)> {
    let lf = out.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2));
    let crlf = out.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, i + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_and_body(out: &'static str) -> (u16, String) {
        let resp = parse_cgi(Bytes::from_static(out.as_bytes())).unwrap();
        let status = resp.status().as_u16();
        let body = futures::executor::block_on(resp.into_body().collect()).unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn cgi_headers_status_and_redirects() {
        assert_eq!(status_and_body("Content-Type: text/plain\n\nhi"), (200, "hi".into()));
        assert_eq!(status_and_body("Status: 404 Not Found\r\n\r\ngone"), (404, "gone".into()));
        assert_eq!(status_and_body("Location: /x\n\n"), (302, String::new()));
        assert!(parse_cgi(Bytes::from_static(b"no header block")).is_err());
        assert!(parse_cgi(Bytes::from_static(b"Status: abc\n\n")).is_err());
    }
}

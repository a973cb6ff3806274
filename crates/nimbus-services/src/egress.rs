//! The only way out of a sandboxed service's network namespace: an HTTP proxy Nimbus runs on
//! `127.0.0.1:3128` *inside* the namespace (the service gets `HTTP_PROXY`/`HTTPS_PROXY`), which
//! forwards to an origin only if the component's `grants.outbound` allows it — `CONNECT host:port`
//! for TLS (allowed by an `https://` or `http://` grant of that host and port) and absolute-form
//! requests (`GET http://host:port/...`) for plain HTTP. Anything else is answered 403 and
//! logged; with no grants nothing listens and the namespace has no way out at all.
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use nimbus_manifest::OutboundGrant;
use tokio::net::{TcpListener, TcpStream};

/// Where the proxy listens inside a service's namespace.
pub(crate) const EGRESS_PORT: u16 = 3128;

type Body = BoxBody<Bytes, hyper::Error>;

/// Serves the proxy on `listener` until the returned task is aborted.
pub(crate) fn serve(
    listener: TcpListener,
    grants: Arc<[OutboundGrant]>,
    component: Arc<str>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (grants, component) = (grants.clone(), component.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let (grants, component) = (grants.clone(), component.clone());
                    async move { Ok::<_, Infallible>(forward(req, &grants, &component).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    })
}

async fn forward(mut req: http::Request<Incoming>, grants: &[OutboundGrant], component: &str) -> http::Response<Body> {
    let connect = req.method() == http::Method::CONNECT;
    let scheme = req.uri().scheme_str().unwrap_or(if connect { "https" } else { "" }).to_ascii_lowercase();
    let Some(authority) = req.uri().authority().cloned() else {
        return answer(400, "nimbus egress: send an absolute URL (http://host/...) or CONNECT host:port".into());
    };
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
    let port = authority.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
    if !connect && scheme != "http" {
        return answer(400, format!("nimbus egress: scheme `{scheme}` is not proxied; use CONNECT for https"));
    }
    let allowed = grants.iter().any(|g| g.allows(&scheme, &host, port) || (connect && g.allows("http", &host, port)));
    if !allowed {
        tracing::warn!(component, %host, port, "service egress refused: not in grants.outbound");
        return answer(403, format!("nimbus egress: {host}:{port} is not in this service's grants.outbound"));
    }
    let upstream = match TcpStream::connect((host.as_str(), port)).await {
        Ok(s) => s,
        Err(e) => return answer(502, format!("nimbus egress: cannot connect to {host}:{port}: {e}")),
    };
    if connect {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(client) = upgrade.await {
                let mut upstream = upstream;
                let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut upstream).await;
            }
        });
        return answer(200, String::new());
    }
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await {
        Ok(pair) => pair,
        Err(e) => return answer(502, format!("nimbus egress: {host}:{port}: {e}")),
    };
    tokio::spawn(conn);
    let origin_form = req.uri().path_and_query().map_or("/", |p| p.as_str()).parse().unwrap_or_default();
    *req.uri_mut() = origin_form;
    req.headers_mut().remove("proxy-connection");
    req.headers_mut().remove(http::header::PROXY_AUTHORIZATION);
    match sender.send_request(req).await {
        Ok(resp) => resp.map(BodyExt::boxed),
        Err(e) => answer(502, format!("nimbus egress: {host}:{port}: {e}")),
    }
}

fn answer(status: u16, text: String) -> http::Response<Body> {
    let mut resp = http::Response::new(Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed());
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    resp
}

//! The only way out of a sandboxed service's network namespace: an HTTP proxy Nimbus runs on
//! `127.0.0.1:3128` *inside* the namespace (the service gets `HTTP_PROXY`/`HTTPS_PROXY`), which
//! forwards to an origin only if the component's `grants.outbound` allows it — `CONNECT host:port`
//! for TLS (allowed by an `https://` or `http://` grant of that host and port) and absolute-form
//! requests (`GET http://host:port/...`) for plain HTTP. Anything else is answered 403 and
//! logged; with no grants nothing listens and the namespace has no way out at all.
//!
//! It is also how a service calls another component (`grants.invoke`): a request to
//! `http://NAME.internal/...` (or `http://NAME.APP.internal/...`) goes to the app's mesh, never
//! to the network, naming the service as the caller. Only this proxy, inside the service's own
//! namespace, can make such a call in its name. The call depth is the request's
//! `x-nimbus-invoke-depth` plus one: a service that passes that header on from the request it is
//! serving (like `traceparent`) keeps a cycle of calls through it bounded.
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use nimbus_manifest::Grants;
use nimbus_security::mesh::{Call, DEPTH_HEADER, MAX_DEPTH, Mesh, callee_of};
use tokio::net::{TcpListener, TcpStream};

use crate::spec::ServiceSpec;

/// Where the proxy listens inside a service's namespace.
pub(crate) const EGRESS_PORT: u16 = 3128;

/// Connections one service may hold open to its proxy at once; more wait in the kernel's accept
/// queue (using none of Nimbus's open files), so a service cannot starve the node's listeners.
pub(crate) const MAX_CONNECTIONS: usize = 256;

/// How long the proxy waits for a request's head (also on an idle keep-alive connection).
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

type Body = UnsyncBoxBody<Bytes, crate::BoxError>;

/// Whether a service needs the proxy: it was granted origins or components to call.
pub(crate) fn needed(spec: &ServiceSpec) -> bool {
    !spec.grants.outbound.is_empty() || !spec.grants.invoke.is_empty()
}

/// What one service's proxy lets through, and where its calls to components go.
pub(crate) struct Egress {
    grants: Arc<Grants>,
    app: Arc<str>,
    component: Arc<str>,
    mesh: Arc<OnceLock<Arc<dyn Mesh>>>,
}

impl Egress {
    /// The proxy of `spec`'s processes.
    pub(crate) fn of(spec: &ServiceSpec) -> Arc<Self> {
        Arc::new(Self {
            grants: spec.grants.clone(),
            app: spec.telemetry.app.clone(),
            component: spec.name.clone(),
            mesh: spec.mesh.clone(),
        })
    }
}

/// Serves the proxy on `listener` until the returned task is aborted.
pub(crate) fn serve(listener: TcpListener, egress: Arc<Egress>) -> tokio::task::JoinHandle<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let Ok((stream, _)) = listener.accept().await else { continue };
            let egress = egress.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |req| {
                    let egress = egress.clone();
                    async move { Ok::<_, Infallible>(forward(req, &egress).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    })
}

async fn forward(mut req: http::Request<Incoming>, egress: &Egress) -> http::Response<Body> {
    if req.method() != http::Method::CONNECT
        && let Some((app, component)) = req.uri().host().and_then(callee_of)
    {
        let (app, component) = (app.map(str::to_string), component.to_string());
        return invoke(req, egress, app, component).await;
    }
    let (grants, component) = (&egress.grants.outbound, &*egress.component);
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
        Ok(resp) => resp.map(|b| b.map_err(Into::into).boxed_unsync()),
        Err(e) => answer(502, format!("nimbus egress: {host}:{port}: {e}")),
    }
}

/// A call from the service to `component` of `app` (its own app when `None`), if granted.
async fn invoke(
    mut req: http::Request<Incoming>,
    egress: &Egress,
    app: Option<String>,
    component: String,
) -> http::Response<Body> {
    let own = &*egress.app;
    let app = app.unwrap_or_else(|| own.to_string());
    if !egress.grants.may_invoke(own, &app, &component) {
        let named = if app == own { component } else { format!("{app}/{component}") };
        tracing::warn!(component = %egress.component, callee = %named, "call refused: not in grants.invoke");
        return answer(403, format!("nimbus egress: `{named}` is not in this service's grants.invoke"));
    }
    let Some(mesh) = egress.mesh.get() else {
        return answer(503, "nimbus egress: calls to other components are not served yet; retry".into());
    };
    let depth = req
        .headers()
        .get(DEPTH_HEADER)
        .and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
        .map_or(1, |d| d.min(MAX_DEPTH).saturating_add(1));
    req.headers_mut().remove("proxy-connection");
    req.headers_mut().remove(http::header::PROXY_AUTHORIZATION);
    let call = Call {
        caller_app: own.to_string(),
        caller: egress.component.to_string(),
        app,
        component,
        depth,
        request: req.map(|b| b.map_err(Into::into).boxed_unsync()),
    };
    mesh.call(call).await
}

fn answer(status: u16, text: String) -> http::Response<Body> {
    let mut resp = http::Response::new(Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    resp
}

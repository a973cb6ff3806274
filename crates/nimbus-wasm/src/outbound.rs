//! The outbound HTTP capability: `wasi:http/outgoing-handler` behind the component's
//! `grants.outbound`. Unlike the others it is configured for every component and links nothing
//! of its own: `wasi:http` is in every linker because every `wasi:http/proxy` component imports
//! `outgoing-handler`, used or not. Its grants gate each request instead: one to an origin that
//! was not granted fails with `HTTP-request-denied` in the guest and a warning in the log. A
//! grant that is not an origin is refused at load. Each request is a client span whose context
//! goes out in the `traceparent` header. A request to `http://NAME.internal/...` is a call to
//! another component instead (`grants.invoke`, the `invoke` module), which never leaves the node.
use std::sync::{Arc, OnceLock};

use nimbus_manifest::{Component, Grants};
use nimbus_observe::SpanKind;
use nimbus_security::mesh::Mesh;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::capability::{Capability, PrepareContext};
use crate::error::LinkError;
use crate::guest::GuestState;
use crate::scope::Scope;

/// The outbound HTTP capability ([`Capability`]).
pub(crate) struct OutboundHttp;

impl Capability for OutboundHttp {
    const GRANT: &'static str = "outbound";
    const EXAMPLE: &'static str = r#"["https://api.example.com"]"#;
    /// None: `wasi:http` is always linked, and a request without a grant is denied when made.
    const INTERFACES: &'static [&'static str] = &[];
    type Backend = ();
    type App = Arc<OutboundApp>;
    type Instance = OutboundPolicy;

    fn configure((): &(), component: &Component) -> Result<Option<Self::App>, LinkError> {
        Ok(Some(Arc::new(OutboundApp { grants: component.grants.clone(), mesh: OnceLock::new() })))
    }

    fn link(_: &mut Linker<GuestState>) -> wasmtime::Result<()> {
        Ok(())
    }

    fn prepare(app: &Self::App, ctx: &PrepareContext<'_>) -> OutboundPolicy {
        OutboundPolicy { app: app.clone(), scope: ctx.scope.clone(), own_app: ctx.app.cloned() }
    }
}

/// What outbound requests of one loaded component may reach.
pub(crate) struct OutboundApp {
    /// Its grants: `outbound` origins, `invoke` components.
    pub(crate) grants: Grants,
    /// Where its calls to other components go, bound after load ([`crate::Function::bind_mesh`]).
    pub(crate) mesh: OnceLock<Arc<dyn Mesh>>,
}

/// The hooks of one invocation's `wasi:http` context.
pub(crate) struct OutboundPolicy {
    pub(crate) app: Arc<OutboundApp>,
    pub(crate) scope: Arc<Scope>,
    /// The app the function is bound to.
    pub(crate) own_app: Option<Arc<str>>,
}

pub(crate) type SendFuture = Box<
    dyn Future<Output = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), Error>>
        + Send,
>;

impl OutboundPolicy {
    fn allowed(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else { return false };
        let scheme = uri.scheme_str().unwrap_or("https");
        let port = uri.port_u16().unwrap_or(if scheme.eq_ignore_ascii_case("http") { 80 } else { 443 });
        self.app.grants.outbound.iter().any(|g| g.allows(scheme, host, port))
    }
}

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        if let Some((app, component)) = request.uri().host().and_then(nimbus_security::mesh::callee_of) {
            let (app, component) = (app.map(str::to_string), component.to_string());
            return crate::invoke::call(self, request, app, component);
        }
        let mut span = self.scope.span("HTTP", SpanKind::Client);
        if span.is_recording() {
            let uri = request.uri();
            span.rename(request.method().to_string());
            span.set("http.request.method", request.method().to_string());
            span.set("url.full", uri.to_string());
            if let Some(host) = uri.host() {
                span.set("server.address", host.to_string());
            }
            if let Some(port) = uri.port_u16() {
                span.set("server.port", i64::from(port));
            }
        }
        if !self.allowed(request.uri()) {
            self.scope.log("warn", &format!("outbound request denied: {} is not in grants.outbound", request.uri()));
            span.set_error("denied", "origin not in grants.outbound");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        if let Some(ctx) = span.context() {
            ctx.inject(request.headers_mut());
        }
        use http_body_util::BodyExt;
        let usage = &self.scope.telemetry.usage;
        let request = request.map(|body| body.map_frame(egress(usage.clone())).boxed_unsync());
        let usage = usage.clone();
        Box::new(async move {
            match wasmtime_wasi_http::default_send_request(request, options).await {
                Ok((res, io)) => {
                    let status = res.status().as_u16();
                    span.set_http_status(status);
                    if status >= 400 {
                        span.set_error("http", format!("HTTP {status}"));
                    }
                    let res = res.map(|body| body.map_frame(egress(usage)).boxed_unsync());
                    Ok((res, Box::new(io) as Box<dyn Future<Output = _> + Send>))
                }
                Err(e) => {
                    span.set_error("http", format!("{e:?}"));
                    Err(e)
                }
            }
        })
    }
}

/// Counts the data of each frame passing through as egress of `usage`.
fn egress(
    usage: nimbus_observe::UsageMeter,
) -> impl FnMut(http_body::Frame<bytes::Bytes>) -> http_body::Frame<bytes::Bytes> {
    move |frame| {
        if let Some(data) = frame.data_ref() {
            usage.egress(data.len() as u64);
        }
        frame
    }
}

//! `wasi:http/outgoing-handler` behind the component's `grants.outbound`: a request to an origin
//! that was not granted fails with `HTTP-request-denied` in the guest and a warning in the log.
use std::sync::Arc;

use nimbus_manifest::OutboundGrant;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The hooks of one invocation's `wasi:http` context.
pub(crate) struct OutboundPolicy {
    pub(crate) grants: Arc<[OutboundGrant]>,
    pub(crate) component: Arc<str>,
    pub(crate) request_id: Arc<str>,
}

type SendFuture = Box<
    dyn Future<Output = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), Error>>
        + Send,
>;

impl OutboundPolicy {
    fn allowed(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else { return false };
        let scheme = uri.scheme_str().unwrap_or("https");
        let port = uri.port_u16().unwrap_or(if scheme.eq_ignore_ascii_case("http") { 80 } else { 443 });
        self.grants.iter().any(|g| g.allows(scheme, host, port))
    }
}

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        if !self.allowed(request.uri()) {
            tracing::warn!(
                component = %self.component,
                request_id = %self.request_id,
                uri = %request.uri(),
                "outbound request denied: origin not in grants.outbound"
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        tracing::debug!(component = %self.component, request_id = %self.request_id, uri = %request.uri(), "outbound request");
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((res.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

//! The gateway's response body: a function's (possibly still streaming) body, a service's
//! proxied body, or a small body the gateway wrote itself. An enum rather than a boxed body: a
//! proxied or gateway-written response costs no allocation and no dynamic call per frame.
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use nimbus_observe::{ComponentTelemetry, Span};
use nimbus_services::ServiceBody;
use nimbus_wasm::ResponseBody;

/// Errors while streaming a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body served by the gateway.
pub struct GatewayBody {
    inner: Inner,
    /// Held until the body is done: the admission slot of a proxied request.
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Counts the bytes sent in the component's `nimbus_http_bytes_total{direction="out"}`.
    meter: Option<Arc<ComponentTelemetry>>,
    /// The gateway's server span, ended when the body is fully sent (or dropped unfinished).
    span: Option<Span>,
}

enum Inner {
    Full(Full<Bytes>),
    Function(ResponseBody),
    Proxied(ServiceBody),
}

impl GatewayBody {
    fn new(inner: Inner) -> Self {
        Self { inner, _slot: None, meter: None, span: None }
    }

    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::new(Inner::Full(Full::new(bytes.into())))
    }

    /// A function's body.
    pub fn streaming(body: ResponseBody) -> Self {
        Self::new(Inner::Function(body))
    }

    /// A service's body, keeping the request's admission slot until it is fully sent.
    pub fn proxied(body: ServiceBody, slot: tokio::sync::OwnedSemaphorePermit) -> Self {
        Self { _slot: Some(slot), ..Self::new(Inner::Proxied(body)) }
    }

    /// Counts the bytes of this body as sent by `component`.
    pub(crate) fn metered(mut self, component: &Arc<ComponentTelemetry>) -> Self {
        self.meter = Some(component.clone());
        self
    }

    /// Ends `span` once the body is fully sent, so the server span covers the whole response.
    pub(crate) fn traced(mut self, span: Span) -> Self {
        self.span = Some(span);
        self
    }
}

/// One frame of any of the bodies, with its error boxed.
fn poll_inner(inner: &mut Inner, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    fn boxed<E: Into<BoxError>>(
        frame: Poll<Option<Result<Frame<Bytes>, E>>>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        frame.map(|f| f.map(|r| r.map_err(Into::into)))
    }
    match inner {
        Inner::Full(body) => boxed(Pin::new(body).poll_frame(cx)),
        Inner::Function(body) => boxed(Pin::new(body).poll_frame(cx)),
        Inner::Proxied(body) => boxed(Pin::new(body).poll_frame(cx)),
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = poll_inner(&mut this.inner, cx);
        if let (Some(meter), Poll::Ready(Some(Ok(f)))) = (&this.meter, &frame)
            && let Some(data) = f.data_ref()
        {
            meter.metrics.bytes_out(data.len() as u64);
        }
        match &frame {
            Poll::Ready(None) => this.span = None,
            Poll::Ready(Some(Err(e))) => {
                if let Some(span) = &mut this.span {
                    span.set_error("response_body", format!("the response body was cut short: {e}"));
                }
                this.span = None;
            }
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(body) => body.is_end_stream(),
            Inner::Function(body) => body.is_end_stream(),
            Inner::Proxied(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(body) => body.size_hint(),
            Inner::Function(body) => body.size_hint(),
            Inner::Proxied(body) => body.size_hint(),
        }
    }
}

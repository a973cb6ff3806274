//! The gateway's response body: a function's (possibly still streaming) body, or a small body the
//! gateway wrote itself.
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use nimbus_observe::{ComponentTelemetry, Span};

/// Errors while streaming a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body served by the gateway.
pub struct GatewayBody {
    inner: UnsyncBoxBody<Bytes, BoxError>,
    /// Held until the body is done: the admission slot of a proxied request.
    _guard: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Counts the bytes sent in the component's `nimbus_http_bytes_total{direction="out"}`.
    meter: Option<Arc<ComponentTelemetry>>,
    /// The gateway's server span, ended when the body is fully sent (or dropped unfinished).
    span: Option<Span>,
}

impl GatewayBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let body = http_body_util::Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync();
        Self { inner: body, _guard: None, meter: None, span: None }
    }

    /// A function's body.
    pub fn streaming(body: nimbus_wasm::ResponseBody) -> Self {
        Self { inner: body.map_err(|e| Box::new(e) as BoxError).boxed_unsync(), _guard: None, meter: None, span: None }
    }

    /// A service's body, keeping the request's admission slot until it is fully sent.
    pub fn proxied(body: nimbus_services::ServiceBody, slot: tokio::sync::OwnedSemaphorePermit) -> Self {
        Self {
            inner: body.map_err(|e| Box::new(e) as BoxError).boxed_unsync(),
            _guard: Some(slot),
            meter: None,
            span: None,
        }
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

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Some(meter), Poll::Ready(Some(Ok(f)))) = (&self.meter, &frame)
            && let Some(data) = f.data_ref()
        {
            meter.metrics.bytes_out(data.len() as u64);
        }
        match &frame {
            Poll::Ready(None) => self.span = None,
            Poll::Ready(Some(Err(e))) => {
                if let Some(span) = &mut self.span {
                    span.set_error("response_body", format!("the response body was cut short: {e}"));
                }
                self.span = None;
            }
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

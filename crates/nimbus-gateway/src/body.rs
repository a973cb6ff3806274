//! The gateway's response body: either a function's (possibly still streaming) body, which holds
//! the component's admission slot until it ends, or a small body the gateway wrote itself.
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::sync::OwnedSemaphorePermit;

/// Errors while streaming a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body served by the gateway.
pub struct GatewayBody {
    inner: UnsyncBoxBody<Bytes, BoxError>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl GatewayBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let body = http_body_util::Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync();
        Self { inner: body, _permit: None }
    }

    /// A function's body; `permit` is released when the body ends or is dropped.
    pub fn streaming(body: nimbus_wasm::ResponseBody, permit: OwnedSemaphorePermit) -> Self {
        Self { inner: body.map_err(|e| Box::new(e) as BoxError).boxed_unsync(), _permit: Some(permit) }
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = poll {
            self._permit = None;
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

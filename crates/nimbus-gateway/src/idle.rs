//! Idle connections: one that has had no request in progress for the idle timeout is closed. That
//! covers a client that connects and sends nothing, one that sends a request's headers too
//! slowly to finish them (hyper calls the gateway only once they are complete), and a kept-alive
//! connection nobody uses any more.
//!
//! A request counts from the moment hyper hands it over until its response body is done (or the
//! request is dropped), so a long response (a stream, an upgrade) is never cut. Each connection
//! counts its requests, and one timer per connection looks at the counts every half timeout: a
//! request costs a few uncontended atomic operations, not a timer of its own.
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};

/// Requests started and finished on one connection.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    started: AtomicU64,
    finished: AtomicU64,
}

impl Activity {
    /// Counts a request as started; it finishes when the returned guard drops.
    pub(crate) fn start(self: &Arc<Self>) -> Request {
        self.started.fetch_add(1, Ordering::Relaxed);
        Request(self.clone())
    }

    fn counts(&self) -> (u64, u64) {
        // `finished` first: a request that finishes between the two loads then shows as still
        // running, never the other way round.
        let finished = self.finished.load(Ordering::Acquire);
        (self.started.load(Ordering::Acquire), finished)
    }

    /// Resolves once no request has been in progress on the connection for at least `limit`
    /// (it is noticed within `limit / 2` more); never if `limit` is zero.
    pub(crate) async fn idle(&self, limit: Duration) {
        if limit.is_zero() {
            return std::future::pending().await;
        }
        let mut last = self.counts();
        let mut quiet_halves = 0;
        loop {
            tokio::time::sleep(limit / 2).await;
            let now = self.counts();
            // Nothing started or finished during the last half, and nothing is in progress.
            quiet_halves = if now == last && now.0 == now.1 { quiet_halves + 1 } else { 0 };
            if quiet_halves >= 2 {
                return;
            }
            last = now;
        }
    }
}

/// A request in progress on its connection.
#[derive(Debug)]
pub(crate) struct Request(Arc<Activity>);

impl Drop for Request {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::Release);
    }
}

/// A response body that keeps its request in progress until the body is done.
#[derive(Debug)]
pub(crate) struct Tracked<B> {
    body: B,
    _request: Request,
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, request: Request) -> Self {
        Self { body, _request: request }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

//! Idle connections: one that has had no request in progress for the idle timeout is closed. That
//! covers a client that connects and sends nothing, one that sends a request's headers too
//! slowly to finish them (hyper calls the gateway only once they are complete), and a kept-alive
//! connection nobody uses any more.
//!
//! A request counts from the moment hyper hands it over until its response body is done (or the
//! request is dropped), so a long response (a stream, an upgrade) is never cut — unless all it
//! does is wait for the client to send more of a body that streams to a service ([`ClientBody`]):
//! a client that stops sending its upload is cut like one that stops sending its headers.
//! Each connection counts its requests and the body frames it receives, and one timer per
//! connection looks at the counts every half timeout: a request costs a few uncontended atomic
//! operations, not a timer of its own.
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};

/// Requests started and finished on one connection, and the request bodies on it that wait for
/// the client.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    started: AtomicU64,
    finished: AtomicU64,
    /// Request bodies waiting for the client to send more.
    waiting: AtomicU64,
    /// Request body frames received: progress while bodies stream.
    received: AtomicU64,
}

/// What the idle watch compares from one look to the next.
#[derive(Debug, PartialEq, Eq)]
struct Counts {
    started: u64,
    finished: u64,
    waiting: u64,
    received: u64,
}

impl Activity {
    /// Counts a request as started; it finishes when the returned guard drops.
    pub(crate) fn start(self: &Arc<Self>) -> Request {
        self.started.fetch_add(1, Ordering::Relaxed);
        Request { activity: self.clone(), body: None }
    }

    fn counts(&self) -> Counts {
        // `finished` first: a request that finishes between the loads then shows as still
        // running, never the other way round.
        let finished = self.finished.load(Ordering::Acquire);
        let waiting = self.waiting.load(Ordering::Acquire);
        let received = self.received.load(Ordering::Acquire);
        Counts { started: self.started.load(Ordering::Acquire), finished, waiting, received }
    }

    /// Resolves once the connection has had nothing in progress but waits for the client (no
    /// request at all, or only requests whose bodies wait for more) for at least `limit` (it is
    /// noticed within `limit / 2` more); never if `limit` is zero.
    pub(crate) async fn idle(&self, limit: Duration) {
        if limit.is_zero() {
            return std::future::pending().await;
        }
        let mut last = self.counts();
        let mut quiet_halves = 0;
        loop {
            tokio::time::sleep(limit / 2).await;
            let now = self.counts();
            // Nothing changed during the last half, and every request in progress (if any) waits
            // for its client to send more of its body.
            let waits_for_client = now.started - now.finished == now.waiting;
            quiet_halves = if now == last && waits_for_client { quiet_halves + 1 } else { 0 };
            if quiet_halves >= 2 {
                return;
            }
            last = now;
        }
    }
}

/// A request body seen by its connection's idle watch (one that streams to a service, or one a
/// handler reads itself, see [`crate::watch_body`]): while it waits for the client to send more,
/// its request does not count as in progress.
#[derive(Debug)]
pub struct ClientBody<B> {
    inner: B,
    watch: Option<BodyWatch>,
}

/// What a request with a body shares with its connection's idle watch (a request extension,
/// added by the accept loop).
#[derive(Debug, Clone)]
pub(crate) struct BodyWatch {
    activity: Arc<Activity>,
    /// [`RUNNING`], [`WAITING`] (the body waits for the client) or [`FINISHED`] (the request's
    /// response is done: its body, if still read, no longer counts).
    state: Arc<AtomicU8>,
}

const RUNNING: u8 = 0;
const WAITING: u8 = 1;
const FINISHED: u8 = 2;

impl BodyWatch {
    /// Moves the request between running and waiting (never out of finished).
    fn set_waiting(&self, waiting: bool) {
        let (from, to) = if waiting { (RUNNING, WAITING) } else { (WAITING, RUNNING) };
        if self.state.compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            if waiting {
                self.activity.waiting.fetch_add(1, Ordering::Release);
            } else {
                self.activity.waiting.fetch_sub(1, Ordering::Release);
            }
        }
    }
}

impl<B> ClientBody<B> {
    pub(crate) fn new(inner: B, watch: Option<BodyWatch>) -> Self {
        Self { inner, watch }
    }
}

impl<B> Drop for ClientBody<B> {
    fn drop(&mut self) {
        if let Some(watch) = &self.watch {
            watch.set_waiting(false);
        }
    }
}

impl<B: Body + Unpin> Body for ClientBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Some(watch) = &self.watch {
            watch.set_waiting(polled.is_pending());
            if let Poll::Ready(Some(Ok(_))) = &polled {
                watch.activity.received.fetch_add(1, Ordering::Release);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request in progress on its connection.
#[derive(Debug)]
pub(crate) struct Request {
    activity: Arc<Activity>,
    /// A request with a body: the state it shares with the body's [`ClientBody`].
    body: Option<Arc<AtomicU8>>,
}

impl Request {
    /// Lets the request's body, if it streams to a service, tell the idle watch when it waits
    /// for the client (one allocation, for requests with a body only).
    pub(crate) fn watch_body(&mut self) -> BodyWatch {
        let state = self.body.get_or_insert_with(|| Arc::new(AtomicU8::new(RUNNING))).clone();
        BodyWatch { activity: self.activity.clone(), state }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Some(state) = &self.body
            && state.swap(FINISHED, Ordering::AcqRel) == WAITING
        {
            self.activity.waiting.fetch_sub(1, Ordering::Release);
        }
        self.activity.finished.fetch_add(1, Ordering::Release);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn in_progress_and_waiting(activity: &Activity) -> (u64, u64) {
        let c = activity.counts();
        (c.started - c.finished, c.waiting)
    }

    #[test]
    fn a_body_counts_as_waiting_only_while_its_request_is_in_progress() {
        let activity = Arc::new(Activity::default());
        let mut request = activity.start();
        let watch = request.watch_body();
        watch.set_waiting(true);
        assert_eq!(in_progress_and_waiting(&activity), (1, 1));
        watch.set_waiting(false);
        assert_eq!(in_progress_and_waiting(&activity), (1, 0));
        // The service answered before reading the whole upload, which still waits.
        watch.set_waiting(true);
        drop(request);
        assert_eq!(in_progress_and_waiting(&activity), (0, 0));
        watch.set_waiting(false);
        watch.set_waiting(true);
        assert_eq!(in_progress_and_waiting(&activity), (0, 0), "a finished request's body no longer counts");
        // So another request in progress on the connection (HTTP/2) keeps it from looking idle.
        let _other = activity.start();
        assert_eq!(in_progress_and_waiting(&activity), (1, 0));
    }
}

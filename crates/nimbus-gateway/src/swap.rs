//! One app whose live revision is replaced as a whole (`nimbus up`, and `nimbus dev` on every
//! rebuild): a request keeps the revision it started on until it finishes, new requests get the
//! revision published last, and no request sees a half-swapped app.
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper::body::Incoming;

use crate::apps::{LiveRevision, REVISION_HEADER};
use crate::body::GatewayBody;

/// The live revision of one app, swappable while serving.
#[derive(Debug)]
pub struct Swap {
    current: ArcSwap<LiveRevision>,
}

impl Swap {
    /// Serves `revision` until [`Swap::publish`] replaces it.
    pub fn new(revision: LiveRevision) -> Self {
        Self { current: ArcSwap::from_pointee(revision) }
    }

    /// Sends new requests to `revision`; returns the one it replaces, which requests already
    /// routed to it keep until they finish (drop it, or stop its services, after that).
    pub fn publish(&self, revision: LiveRevision) -> Arc<LiveRevision> {
        self.current.swap(Arc::new(revision))
    }

    /// The revision new requests go to.
    pub fn current(&self) -> Arc<LiveRevision> {
        self.current.load_full()
    }

    /// Serves one request on the current revision, naming it in `x-nimbus-revision`. Never
    /// fails: every problem becomes a response.
    pub async fn handle(
        &self,
        req: http::Request<Incoming>,
        client: Option<SocketAddr>,
    ) -> http::Response<GatewayBody> {
        let revision = self.current();
        let mut resp = revision.gateway.handle(req, client).await;
        resp.headers_mut().insert(REVISION_HEADER, revision.header.clone());
        resp
    }
}

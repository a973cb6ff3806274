//! The control API served by the gateway's accept loop ([`nimbus_gateway::serve`]), so its
//! listener has the same idle timeout (which also cuts a client that stops sending its headers
//! or an upload), connection cap and accept backoff as the gateway's, each with its own settings.
use std::future::Future;

use axum::Router;
use tower_service::Service;

/// An axum router (the control API, the local API of `nimbus up`) as a
/// [`nimbus_gateway::Handler`].
#[derive(Debug, Clone)]
pub struct ApiHandler(Router);

impl ApiHandler {
    /// Serves `router`.
    pub fn new(router: Router) -> Self {
        Self(router)
    }
}

impl nimbus_gateway::Handler for ApiHandler {
    type Body = axum::body::Body;

    fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
        _client: Option<std::net::SocketAddr>,
    ) -> impl Future<Output = http::Response<axum::body::Body>> + Send {
        let mut router = self.0.clone();
        let req = nimbus_gateway::watch_body(req).map(axum::body::Body::new);
        async move {
            match router.call(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            }
        }
    }
}

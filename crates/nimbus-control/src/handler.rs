//! The control API served by the gateway's accept loop ([`nimbus_gateway::serve`]), so its
//! listener has the same idle timeout (which also cuts a client that stops sending its headers
//! or an upload), connection cap and accept backoff as the gateway's, each with its own settings.
use std::future::Future;

use axum::Router;
use tower_service::Service;

/// An axum router (the control API, the local API of `nimbus up`) as a
/// [`nimbus_gateway::Handler`]. Requests are handled on the runtime that created it (a
/// multi-threaded one: the platform blocks in place while it writes the store), not on the
/// gateway's single-threaded connection threads.
#[derive(Debug, Clone)]
pub struct ApiHandler {
    router: Router,
    runtime: tokio::runtime::Handle,
}

impl ApiHandler {
    /// Serves `router` on the current runtime.
    pub fn new(router: Router) -> Self {
        Self { router, runtime: tokio::runtime::Handle::current() }
    }
}

impl nimbus_gateway::Handler for ApiHandler {
    type Body = axum::body::Body;

    fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
        client: Option<std::net::SocketAddr>,
    ) -> impl Future<Output = http::Response<axum::body::Body>> + Send {
        let mut router = self.router.clone();
        let mut req = nimbus_gateway::watch_body(req).map(axum::body::Body::new);
        // Failed authentications are limited per client address.
        if let Some(client) = client {
            req.extensions_mut().insert(crate::auth::ClientIp(client.ip()));
        }
        // Dropped with the connection (closed by the client or the idle timeout), the request's
        // task is aborted, so what it holds (an upload's file) goes with it.
        let task = AbortOnDrop(self.runtime.spawn(async move {
            match router.call(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            }
        }));
        async move {
            let mut task = task;
            (&mut task.0).await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "a control API request failed");
                http::Response::builder()
                    .status(http::StatusCode::INTERNAL_SERVER_ERROR)
                    .body(axum::body::Body::empty())
                    .expect("a valid response")
            })
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<http::Response<axum::body::Body>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

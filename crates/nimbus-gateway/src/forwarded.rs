//! Requests another node of a cluster forwarded here (through [`crate::PeerIngress`]): a
//! service's request, served on this node's processes of the revision it names, and an actor
//! call, run on this node's activation of its key. Their server spans continue the forwarding
//! node's trace; neither is ever forwarded again.
use std::time::{Duration, Instant};

use http::StatusCode;
use hyper::body::Incoming;

use crate::body::GatewayBody;
use crate::handler::{Serve, client_body, finish, proxy};
use crate::request_id::RequestId;
use crate::respond::error;
use crate::{Backend, Gateway};

impl Gateway {
    /// Serves a request another node forwarded to service `component` (see [`crate::PeerIngress`])
    /// on this node's processes, waiting at most `wait` for one; the server span continues the
    /// forwarding node's trace.
    pub async fn serve_forwarded(
        &self,
        component: &str,
        req: http::Request<Incoming>,
        wait: Duration,
    ) -> http::Response<GatewayBody> {
        let id = RequestId::from_headers(req.headers());
        let started = Instant::now();
        let mut span = self.server_span(&req, &id, None);
        let service = self.target(component).and_then(|t| match &t.backend {
            Backend::Service(s) => Some((s.clone(), t)),
            Backend::Function(_) => None,
        });
        let Some((service, target)) = service else {
            let message = format!("this revision has no service `{component}`");
            return finish(error(StatusCode::NOT_FOUND, &id, &message), None, span, started);
        };
        span.set("nimbus.forwarded", true);
        span.set_with("nimbus.workload.id", || self.workload(component).to_string());
        let (mut parts, body) = req.into_parts();
        let body = client_body(body, &mut parts, &target);
        let call = Serve {
            target: &target,
            route: "/...",
            id: &id,
            client: None,
            span: &mut span,
            depth: 0,
            here: Some(wait),
        };
        let resp = Box::pin(proxy(&service, call, parts, body)).await;
        finish(resp, Some(target), span, started)
    }

    /// Serves an actor call (`POST /actors/TYPE/KEY/METHOD`) another node forwarded here, on
    /// this node's activation of the key; the server span continues the forwarding node's trace.
    pub async fn serve_forwarded_actor(&self, req: http::Request<Incoming>) -> http::Response<GatewayBody> {
        let id = RequestId::from_headers(req.headers());
        let started = Instant::now();
        let mut span = self.server_span(&req, &id, None);
        let Some(actors) = &self.actors else {
            let resp = error(StatusCode::MISDIRECTED_REQUEST, &id, "this revision serves no actors");
            return finish(resp, None, span, started);
        };
        span.set("http.route", "/actors/{type}/{key}/{method}");
        span.set("nimbus.forwarded", true);
        let (resp, target) = Box::pin(crate::actor_ingress::serve(&**actors, req, &id, &span, true)).await;
        finish(resp, target, span, started)
    }
}

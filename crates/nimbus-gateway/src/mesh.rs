//! Component-to-component calls (`grants.invoke`) served by the gateway: the [`Mesh`] each
//! revision binds into its functions and services ([`crate::Gateway::with_mesh`]). A call to a
//! component of the same app is served by that revision's target (its admission, its function
//! in-process or its service over the service's own address); a call to another app's component
//! goes, through the server's [`Ingress`], to the revision that app's traffic split picks, and is
//! served only if that app exports the component to the caller's app. Each call is a server span
//! (`invoke NAME`) carrying the caller's and the callee's workload identities, continuing the
//! caller's client span; the callee's metrics count it like any request.
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use http::{HeaderValue, StatusCode};
use http_body_util::BodyExt;
use nimbus_observe::{SpanKind, TraceContext, Tracer};
use nimbus_security::identity::{CALLER_HEADER, TrustDomain};
use nimbus_security::mesh::{Call, DEPTH_HEADER, MAX_DEPTH, Mesh, MeshBody, MeshFuture};

use crate::handler::Serve;
use crate::request_id::{REQUEST_ID_HEADER, RequestId};
use crate::respond::error;
use crate::{Backend, Ingress, Target};

/// How a revision's components call each other and other apps' components.
#[derive(Debug, Clone, Default)]
pub struct MeshConfig {
    /// The trust domain of the workload identities calls carry.
    pub trust_domain: TrustDomain,
    /// The server's ingress, through which calls reach other apps; without it only components
    /// of the same app can be called.
    pub peers: Option<Weak<Ingress>>,
}

/// What one revision offers callers: its components and which of them other apps may call.
#[derive(Debug)]
pub(crate) struct Callees {
    pub(crate) app: Arc<str>,
    pub(crate) targets: HashMap<String, Arc<Target>>,
    /// The app's `[export]`: which of its components other apps may call.
    pub(crate) exports: nimbus_manifest::Exports,
    pub(crate) tracer: Tracer,
    /// Set by [`crate::Gateway::with_mesh`]; the default domain until then.
    pub(crate) domain: OnceLock<TrustDomain>,
}

/// The [`Mesh`] of one revision. It holds its revision weakly: a function of the revision holds
/// the mesh, and a revision that is no longer served must be freed.
#[derive(Debug)]
pub(crate) struct RevisionMesh {
    pub(crate) callees: Weak<Callees>,
    pub(crate) peers: Option<Weak<Ingress>>,
}

impl Mesh for RevisionMesh {
    fn call(&self, call: Call) -> MeshFuture {
        let callees = self.callees.upgrade();
        let peers = self.peers.clone();
        Box::pin(async move {
            let Some(callees) = callees else {
                return answer(StatusCode::SERVICE_UNAVAILABLE, "the calling revision is no longer served; retry");
            };
            if call.depth > MAX_DEPTH {
                let message = format!(
                    "call from `{}/{}` to `{}/{}` would be {} calls deep (the limit is {MAX_DEPTH}): \
                     components calling each other in a cycle?",
                    call.caller_app, call.caller, call.app, call.component, call.depth
                );
                return answer(StatusCode::LOOP_DETECTED, &message);
            }
            if *call.app == *callees.app {
                return callees.serve(call).await;
            }
            let peer = peers.and_then(|p| p.upgrade()).and_then(|ingress| ingress.revision_of(&call.app));
            match peer {
                Some(revision) => revision.gateway.callees.serve(call).await,
                None => answer(StatusCode::NOT_FOUND, &format!("no app `{}` is served here", call.app)),
            }
        })
    }
}

impl Callees {
    /// The trust domain of its workload identities.
    pub(crate) fn domain(&self) -> &TrustDomain {
        self.domain.get_or_init(TrustDomain::default)
    }

    /// Serves `call` on one of these components, if the caller may call it.
    async fn serve(&self, call: Call) -> http::Response<MeshBody> {
        let Call { caller_app, caller, app, component, depth, request } = call;
        if *caller_app != *self.app && !self.exports.component_to(&component, &caller_app) {
            let message = format!(
                "component `{component}` of app `{app}` is not exported to app `{caller_app}`; \
                 app `{app}` can add `[export] components = {{ {component} = [\"{caller_app}\"] }}`"
            );
            return answer(StatusCode::FORBIDDEN, &message);
        }
        let Some(target) = self.targets.get(&component) else {
            return answer(StatusCode::NOT_FOUND, &format!("app `{app}` has no component `{component}`"));
        };
        let domain = self.domain();
        let caller_id = domain.component(&caller_app, &caller);
        let (mut parts, body) = request.into_parts();
        let id = RequestId::from_headers(&parts.headers);
        let started = Instant::now();
        let mut span = self.tracer.start(
            format!("invoke {component}"),
            SpanKind::Server,
            TraceContext::from_headers(&parts.headers),
        );
        if span.is_recording() {
            span.set("nimbus.caller.id", caller_id.to_string());
            span.set("nimbus.workload.id", domain.component(&app, &component).to_string());
            span.set("nimbus.component", component.clone());
            span.set("http.request.method", parts.method.to_string());
            span.set("url.path", parts.uri.path().to_string());
        }
        let headers = &mut parts.headers;
        nimbus_security::identity::strip_claims(headers);
        headers.insert(REQUEST_ID_HEADER, id.header_value());
        if let Ok(v) = HeaderValue::from_str(caller_id.as_str()) {
            headers.insert(CALLER_HEADER, v);
        }
        headers.insert(DEPTH_HEADER, HeaderValue::from(depth));
        if let Some(ctx) = span.context() {
            ctx.inject(headers);
        }
        if parts.uri.scheme().is_some() {
            // The callee sees the origin form, as from a client.
            parts.uri = parts.uri.path_and_query().map_or("/", |p| p.as_str()).parse().unwrap_or_default();
        }
        // A body type of its own with a concrete error type: the boxed one trips the compiler's
        // `Send` check of the generic body readers (rust-lang/rust#102211).
        let body = CallBody(std::sync::Mutex::new(body));
        let serve = Serve { target, route: "/...", id: &id, client: None, span: &mut span, depth, here: None };
        let resp = match &target.backend {
            Backend::Function(function) => Box::pin(crate::handler::invoke(function, serve, parts, body)).await,
            Backend::Service(service) => {
                let body = crate::handler::limited(body, target);
                Box::pin(crate::handler::proxy(service, serve, parts, body)).await
            }
        };
        let status = resp.status();
        span.set_http_status(status.as_u16());
        if status.is_server_error() {
            span.set_error("http", status);
        }
        target.telemetry.metrics.http_request(status.as_u16(), started.elapsed());
        resp.map(|b| b.metered(&target.telemetry).traced(span).boxed_unsync())
    }
}

/// A call's answer written by the mesh itself: a JSON error saying why.
fn answer(status: StatusCode, message: &str) -> http::Response<MeshBody> {
    error(status, &RequestId::from_headers(&http::HeaderMap::new()), message).map(BodyExt::boxed_unsync)
}

/// Why a caller's request body broke off.
#[derive(Debug)]
struct CallBodyError(nimbus_security::mesh::BoxError);

impl std::fmt::Display for CallBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the caller's request body broke off: {}", self.0)
    }
}

impl std::error::Error for CallBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// A caller's request body. `Sync` for the service proxy although a function's outgoing body is
/// not: it is only ever polled through `&mut`, so the mutex is never locked.
struct CallBody(std::sync::Mutex<MeshBody>);

impl http_body::Body for CallBody {
    type Data = bytes::Bytes;
    type Error = CallBodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let body = self.get_mut().0.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        std::pin::Pin::new(body).poll_frame(cx).map_err(CallBodyError)
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::default()
    }
}

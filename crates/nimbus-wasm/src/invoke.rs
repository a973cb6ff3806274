//! Calls from a function to another component (`grants.invoke`): a `wasi:http` outgoing request
//! to `http://NAME.internal/...` (or `http://NAME.APP.internal/...`) goes to the [`Mesh`] bound
//! to the function ([`crate::Function::bind_mesh`]) instead of the network, with the caller's
//! app, name and call depth. A call the function was not granted fails in the guest with
//! `HTTP-request-denied` and a warning in the log. The call is a client span (`invoke NAME`)
//! whose context the callee continues.
use http_body_util::BodyExt;
use nimbus_observe::SpanKind;
use nimbus_security::mesh::Call;
use wasmtime_wasi_http::{Error, WasiBody};

use crate::outbound::{OutboundPolicy, SendFuture};

/// Sends `request` to `component` of `app` (the caller's own when `None`) through the mesh.
pub(crate) fn call(
    policy: &OutboundPolicy,
    mut request: http::Request<WasiBody>,
    app: Option<String>,
    component: String,
) -> SendFuture {
    let scope = &policy.scope;
    let mut span = scope.span(format!("invoke {component}"), SpanKind::Client);
    span.set_with("http.request.method", || request.method().to_string());
    span.set_with("nimbus.invoke.component", || component.clone());
    let Some(own_app) = policy.own_app.clone() else {
        return deny(policy, &mut span, "the function is not part of an app".into());
    };
    let app = app.unwrap_or_else(|| own_app.to_string());
    span.set_with("nimbus.invoke.app", || app.clone());
    if !policy.app.grants.may_invoke(&own_app, &app, &component) {
        let named = if app == *own_app { component.clone() } else { format!("{app}/{component}") };
        return deny(policy, &mut span, format!("`{named}` is not in grants.invoke"));
    }
    let Some(mesh) = policy.app.mesh.get().cloned() else {
        return deny(policy, &mut span, "component-to-component calls are not served here".into());
    };
    if let Some(ctx) = span.context() {
        ctx.inject(request.headers_mut());
    }
    let call = Call {
        caller_app: own_app.to_string(),
        caller: scope.telemetry.component.to_string(),
        app,
        component,
        depth: scope.depth + 1,
        request: request.map(|b| b.map_err(Into::into).boxed_unsync()),
    };
    let answer = mesh.call(call);
    Box::new(async move {
        let resp = answer.await;
        let status = resp.status().as_u16();
        span.set_http_status(status);
        if status >= 500 {
            span.set_error("http", format!("HTTP {status}"));
        }
        let resp = resp.map(|b| b.map_err(|e| Error::InternalError(Some(e.to_string()))).boxed_unsync());
        Ok((resp, Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>))
    })
}

/// Refuses a call: `HTTP-request-denied` in the guest, the reason in the log and the span.
fn deny(policy: &OutboundPolicy, span: &mut nimbus_observe::Span, why: String) -> SendFuture {
    policy.scope.log("warn", &format!("call to another component denied: {why}"));
    span.set_error("denied", why);
    Box::new(async { Err(Error::HttpRequestDenied) })
}

/// A whole body for a call the host makes itself (a workflow's `call`).
pub(crate) fn full_body(bytes: Vec<u8>) -> nimbus_security::mesh::MeshBody {
    http_body_util::Full::new(bytes::Bytes::from(bytes)).map_err(|never| match never {}).boxed_unsync()
}

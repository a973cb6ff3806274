//! The seam of component-to-component calls (`grants.invoke`): a caller — a function's
//! `wasi:http` outgoing request or a service's request through its egress proxy — to
//! `http://COMPONENT.internal/...` (or `http://COMPONENT.APP.internal/...` for a component another
//! app exports) is handed to a [`Mesh`] with the caller's identity and call depth, instead of
//! going to the network. The caller's side has already checked its own grant; the mesh (the
//! gateway implements it) checks the callee's side — the component exists, serves HTTP, is
//! exported to the caller's app when the apps differ, and the call chain is not deeper than
//! [`MAX_DEPTH`] — and runs the callee: a function in-process, a service over its own address.
//! Every refusal is an HTTP answer the caller can read, never a hang.
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;

/// Errors while streaming a body through the mesh.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body of a call through the mesh.
pub type MeshBody = UnsyncBoxBody<Bytes, BoxError>;

/// The host suffix that marks a component-to-component call: `billing.internal`,
/// `billing.shop.internal`.
pub const INTERNAL_SUFFIX: &str = ".internal";

/// The request header carrying how many calls deep a request is (a service that calls on passes
/// it along, like `traceparent`, to keep a cycle through it bounded).
pub const DEPTH_HEADER: &str = "x-nimbus-invoke-depth";

/// The deepest chain of component-to-component calls: the call that would be one deeper is
/// answered `508 Loop Detected`.
pub const MAX_DEPTH: u32 = 8;

/// The callee named by a host: `(None, "billing")` for `billing.internal`, `(Some("shop"),
/// "billing")` for `billing.shop.internal`; `None` for any other host.
pub fn callee_of(host: &str) -> Option<(Option<&str>, &str)> {
    let host = host.trim_end_matches('.');
    let name = host.get(..host.len().checked_sub(INTERNAL_SUFFIX.len())?)?;
    if !host[name.len()..].eq_ignore_ascii_case(INTERNAL_SUFFIX) || name.is_empty() {
        return None;
    }
    match name.split_once('.') {
        None => Some((None, name)),
        Some((component, app)) if !component.is_empty() && !app.is_empty() && !app.contains('.') => {
            Some((Some(app), component))
        }
        Some(_) => None,
    }
}

/// One component-to-component call.
#[derive(Debug)]
pub struct Call {
    /// The calling component's app.
    pub caller_app: String,
    /// The calling component.
    pub caller: String,
    /// The callee's app (the caller's own unless it named another).
    pub app: String,
    /// The callee component.
    pub component: String,
    /// How deep this call is: 1 for a call made while serving a request from outside.
    pub depth: u32,
    /// The request, its URI in origin form or absolute (only the path and query are used).
    pub request: http::Request<MeshBody>,
}

/// A future answering a call.
pub type MeshFuture = Pin<Box<dyn Future<Output = http::Response<MeshBody>> + Send>>;

/// Runs component-to-component calls (implemented by the gateway).
pub trait Mesh: Send + Sync + std::fmt::Debug {
    /// Serves `call`; every refusal or failure is an answer (403, 404, 502, 503, 504, 508) whose
    /// body says why.
    fn call(&self, call: Call) -> MeshFuture;
}

#[cfg(test)]
mod tests {
    use super::callee_of;

    #[test]
    fn internal_hosts_name_a_component() {
        assert_eq!(callee_of("billing.internal"), Some((None, "billing")));
        assert_eq!(callee_of("billing.INTERNAL."), Some((None, "billing")));
        assert_eq!(callee_of("billing.shop.internal"), Some((Some("shop"), "billing")));
        for other in
            ["internal", ".internal", "a.b.c.internal", "example.com", "billing.internal.example.com", "x.internals"]
        {
            assert_eq!(callee_of(other), None, "{other}");
        }
    }
}

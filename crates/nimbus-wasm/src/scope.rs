//! What one invocation reports to, and the instance lifecycle it goes through: the
//! `instantiate` span (cold or warm) and metrics, the `execute` span that host calls are children
//! of, and the failure class of an invocation that fails.
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use nimbus_observe::{ComponentTelemetry, Span, SpanKind, SpanRef, Telemetry, TraceContext};

use crate::{FunctionSettings, InvokeError};

/// The telemetry, request id and span of one invocation, shared by its host capabilities.
pub(crate) struct Scope {
    pub(crate) telemetry: Arc<ComponentTelemetry>,
    pub(crate) request_id: Arc<str>,
    /// The `execute` span: host calls are its children.
    pub(crate) span: SpanRef,
    /// How many component-to-component calls deep the invocation is (0: from outside).
    pub(crate) depth: u32,
}

impl Scope {
    /// A span for a host call made by the guest.
    pub(crate) fn span(&self, name: impl Into<std::borrow::Cow<'static, str>>, kind: SpanKind) -> Span {
        self.span.child(name, kind)
    }

    /// A platform log line about this invocation.
    pub(crate) fn log(&self, level: &str, message: &str) {
        self.telemetry.log(self.span.context(), Some(&self.request_id), "platform", level, message);
    }

    /// The trace context handed to what the guest calls (when no span of its own is made).
    pub(crate) fn context(&self) -> Option<TraceContext> {
        self.span.context()
    }
}

/// One invocation's way through instantiate and execute.
pub(crate) struct Run {
    pub(crate) scope: Arc<Scope>,
    parent: SpanRef,
    execute: Span,
}

impl Run {
    /// Starts an invocation of `settings`' function under `telemetry`'s span (or detached);
    /// `remote` reads the caller's context, used when the invocation has no span of its own
    /// (tracing off), so it still reaches what the guest calls.
    pub(crate) fn start(
        settings: &FunctionSettings,
        inv: &mut crate::Invocation,
        remote: impl FnOnce() -> Option<TraceContext>,
    ) -> Self {
        let telemetry = inv.telemetry.take();
        let telemetry =
            telemetry.unwrap_or_else(|| Telemetry { component: settings.detached.clone(), parent: SpanRef::default() });
        let parent = if telemetry.parent.context().is_none() { SpanRef::remote(remote()) } else { telemetry.parent };
        let mut execute = parent.child("execute", SpanKind::Internal);
        execute.set_with("nimbus.component", || telemetry.component.component.clone());
        let scope = Arc::new(Scope {
            telemetry: telemetry.component,
            request_id: inv.request_id.clone(),
            span: execute.handle(),
            depth: inv.depth,
        });
        Self { scope, parent, execute }
    }

    /// Times `instantiate` in its own span and metrics (cold for the first instance of a
    /// loaded function), then starts the clock of the `execute` span.
    pub(crate) async fn instantiate<T>(
        &mut self,
        settings: &FunctionSettings,
        instantiate: impl Future<Output = wasmtime::Result<T>>,
    ) -> Result<T, InvokeError> {
        let mut span = self.parent.child("instantiate", SpanKind::Internal);
        let started = Instant::now();
        let result = instantiate.await;
        let metrics = &self.scope.telemetry.metrics;
        match result {
            Ok(instance) => {
                let cold = !settings.instantiated.swap(true, Ordering::Relaxed);
                metrics.instantiated(cold, started.elapsed());
                span.set("nimbus.instance.start", if cold { "cold" } else { "warm" });
                drop(span);
                self.execute.restart();
                Ok(instance)
            }
            Err(e) => {
                let e = InvokeError::Instantiate(nimbus_observe::cause(e));
                span.set_error("instantiate", nimbus_observe::report(&e));
                Err(e)
            }
        }
    }

    /// Ends the `execute` span with the invocation's outcome (and counts a failure by class).
    pub(crate) fn finish(mut self, error: Option<&dyn ErrorClass>) {
        if let Some(e) = error {
            let class = e.class();
            self.execute.set_error(class, e);
            self.scope.telemetry.metrics.error(class);
            if matches!(class, "timeout" | "memory") {
                self.scope.telemetry.metrics.eviction(class);
            }
        }
    }
}

/// A failure with a short, stable class for metrics and `error.type`.
pub(crate) trait ErrorClass: std::fmt::Display {
    fn class(&self) -> &'static str;
}

impl ErrorClass for InvokeError {
    fn class(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Trap(m) if m.starts_with("memory limit") => "memory",
            Self::Trap(_) => "trap",
            Self::NoResponse => "no_response",
            Self::Guest(_) => "guest_error",
            Self::Cgi(_) => "cgi",
            Self::Instantiate(_) => "instantiate",
            Self::Unsupported(_) => "unsupported",
        }
    }
}

//! Spans: cheap to start, recorded into their trace's buffer when they end, handed to the
//! pipeline as one batch when the last span of the trace (in this process) ends.
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::context::TraceContext;
use crate::http_request::HttpRequest;
use crate::pipeline::Pipeline;

/// Starts traces. Cheap to clone; a disabled tracer starts spans that record nothing but still
/// carry an incoming trace context on.
#[derive(Clone, Default)]
pub struct Tracer {
    inner: Option<Arc<TracerInner>>,
}

struct TracerInner {
    pipeline: Arc<Pipeline>,
    /// Share of new traces (without a sampled parent) that are recorded.
    ratio: f64,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("enabled", &self.inner.is_some()).finish()
    }
}

impl Tracer {
    pub(crate) fn new(pipeline: Arc<Pipeline>, ratio: f64) -> Self {
        Self { inner: Some(Arc::new(TracerInner { pipeline, ratio: ratio.clamp(0.0, 1.0) })) }
    }

    /// A tracer that records nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Whether spans are recorded at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Starts the first span of this process in a trace: a child of `parent` (the caller's
    /// context, whose sampling decision it follows) or the root of a new trace, sampled at the
    /// tracer's ratio.
    pub fn start(&self, name: impl Into<Cow<'static, str>>, kind: SpanKind, parent: Option<TraceContext>) -> Span {
        let Some(inner) = &self.inner else {
            return Span { ctx: parent, rec: None };
        };
        let (ctx, parent_id, remote) = match parent {
            Some(p) => (p.child(), p.span_id, true),
            None => {
                let mut root = TraceContext::new_root();
                root.sampled = inner.ratio >= 1.0 || fastrand::f64() < inner.ratio;
                (root, SpanId::INVALID, false)
            }
        };
        if !ctx.sampled {
            return Span { ctx: Some(ctx), rec: None };
        }
        let trace = Arc::new(TraceBuf { spans: Mutex::new(Spans::new()), tracer: inner.clone() });
        Span { ctx: Some(ctx), rec: Some(Recording::new(trace, parent_id, remote, name.into(), kind)) }
    }
}

/// One operation in a trace. Ends (and is recorded) when dropped.
#[derive(Default)]
pub struct Span {
    ctx: Option<TraceContext>,
    /// Inline, not boxed: a request records four or five spans, and an allocation each showed.
    rec: Option<Recording>,
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Span").field("context", &self.ctx).field("recording", &self.rec.is_some()).finish()
    }
}

struct Recording {
    trace: Arc<TraceBuf>,
    parent: SpanId,
    parent_remote: bool,
    name: Cow<'static, str>,
    kind: SpanKind,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    /// Boxed: only server spans have one, and a trace keeps its ended spans inline (see
    /// [`Spans`]).
    http: Option<Box<HttpRequest>>,
    status: Status,
}

impl Recording {
    fn new(trace: Arc<TraceBuf>, parent: SpanId, parent_remote: bool, name: Cow<'static, str>, kind: SpanKind) -> Self {
        let start = SystemTime::now();
        // Most spans get no attribute or one (a server span's request ones wait in `http`), and
        // an empty Vec allocates nothing.
        let attributes = Vec::new();
        Self { trace, parent, parent_remote, name, kind, start, attributes, http: None, status: Status::Unset }
    }
}

/// A trace's ended spans in this process. A function call records five spans, a proxied
/// request four: they fit inline, so a trace costs one allocation (its `TraceBuf`), which stays
/// within the small size classes of mimalloc (the binary's allocator, up to 1 KiB) and of glibc's
/// per-thread cache (up to 1032 bytes).
pub(crate) type Spans = smallvec::SmallVec<[Finished; 5]>;
// `Arc::new` allocates the buffer and two reference counts.
const _: () = assert!(std::mem::size_of::<TraceBuf>() + 16 <= 1024);

struct TraceBuf {
    spans: Mutex<Spans>,
    tracer: Arc<TracerInner>,
}

impl Drop for TraceBuf {
    fn drop(&mut self) {
        let spans = self.spans.get_mut().unwrap_or_else(|p| p.into_inner());
        self.tracer.pipeline.trace(spans);
    }
}

/// A handle on a span that starts children of it without owning it (what an invocation hands
/// to the host calls it makes). Keeps the trace open until dropped.
#[derive(Clone, Default)]
pub struct SpanRef {
    ctx: Option<TraceContext>,
    trace: Option<Arc<TraceBuf>>,
}

impl std::fmt::Debug for SpanRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanRef").field("context", &self.ctx).field("recording", &self.trace.is_some()).finish()
    }
}

impl SpanRef {
    /// A handle that records nothing but carries `ctx` (a caller's context) to children.
    pub fn remote(ctx: Option<TraceContext>) -> Self {
        Self { ctx, trace: None }
    }

    /// Starts a child of the span (recorded only if the span is).
    pub fn child(&self, name: impl Into<Cow<'static, str>>, kind: SpanKind) -> Span {
        match (&self.trace, self.ctx) {
            (Some(trace), Some(ctx)) => {
                let child = Recording::new(trace.clone(), ctx.span_id, false, name.into(), kind);
                Span { ctx: Some(ctx.child()), rec: Some(child) }
            }
            _ => Span { ctx: self.ctx, rec: None },
        }
    }

    /// The span's context, to hand on to what it calls.
    pub fn context(&self) -> Option<TraceContext> {
        self.ctx
    }

    /// Whether children of it are recorded.
    pub fn is_recording(&self) -> bool {
        self.trace.is_some()
    }
}

impl Span {
    /// A handle that starts children of this span.
    pub fn handle(&self) -> SpanRef {
        SpanRef { ctx: self.ctx, trace: self.rec.as_ref().map(|r| r.trace.clone()) }
    }

    /// Starts a child of this span (recorded only if this one is).
    pub fn child(&self, name: impl Into<Cow<'static, str>>, kind: SpanKind) -> Span {
        self.handle().child(name, kind)
    }

    /// Restarts the span's clock: for a span whose id had to be known (and handed out) before
    /// the work it times began.
    pub fn restart(&mut self) {
        if let Some(rec) = &mut self.rec {
            rec.start = SystemTime::now();
        }
    }

    /// The context to hand on to whatever this span calls (a `traceparent`).
    pub fn context(&self) -> Option<TraceContext> {
        self.ctx
    }

    /// The trace id as 32 hex digits, if there is a trace.
    pub fn trace_id(&self) -> Option<String> {
        self.ctx.map(|c| c.trace_id.to_string())
    }

    /// Whether this span will be recorded.
    pub fn is_recording(&self) -> bool {
        self.rec.is_some()
    }

    /// Sets an attribute (OpenTelemetry semantic-convention names where one exists).
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Some(rec) = &mut self.rec {
            rec.attributes.push(KeyValue::new(key, value));
        }
    }

    /// Sets an attribute computed only when the span is recorded.
    pub fn set_with<V: Into<Value>>(&mut self, key: &'static str, value: impl FnOnce() -> V) {
        if let Some(rec) = &mut self.rec {
            rec.attributes.push(KeyValue::new(key, value()));
        }
    }

    /// Sets the HTTP request of a server span (its attributes are written only if the trace is
    /// kept or exported).
    pub fn set_http_request(&mut self, request: impl FnOnce() -> HttpRequest) {
        if let Some(rec) = &mut self.rec {
            rec.http = Some(Box::new(request()));
        }
    }

    /// Sets the `http.route` of a server span's request and the component it routes to; the
    /// span is then named `{method} {route}`.
    pub fn set_http_route(&mut self, route: &Arc<str>, target: &crate::ComponentTelemetry) {
        if let Some(http) = self.rec.as_mut().and_then(|rec| rec.http.as_mut()) {
            http.route = Some(route.clone());
            http.target = Some((target.app.clone(), target.component.clone()));
        }
    }

    /// Sets `http.response.status_code` (deferred with the request on a server span).
    pub fn set_http_status(&mut self, status: u16) {
        let Some(rec) = &mut self.rec else { return };
        match &mut rec.http {
            Some(http) => http.status = Some(status),
            None => rec.attributes.push(KeyValue::new("http.response.status_code", i64::from(status))),
        }
    }

    /// Marks the span failed, with `error.type` (a short class such as `timeout`) and a message.
    /// The first failure recorded wins.
    pub fn set_error(&mut self, class: &'static str, message: impl std::fmt::Display) {
        if let Some(rec) = &mut self.rec
            && !matches!(rec.status, Status::Error { .. })
        {
            rec.attributes.push(KeyValue::new("error.type", class));
            rec.status = Status::error(message.to_string());
        }
    }

    /// Renames the span (a server span learns its route after it started).
    pub fn rename(&mut self, name: impl Into<Cow<'static, str>>) {
        if let Some(rec) = &mut self.rec {
            rec.name = name.into();
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let (Some(rec), Some(ctx)) = (self.rec.take(), self.ctx) else { return };
        let Recording { trace, parent, parent_remote, name, kind, start, attributes, http, status } = rec;
        let end = SystemTime::now();
        let done = Finished { ctx, parent, parent_remote, name, kind, start, end, attributes, http, status };
        trace.spans.lock().unwrap_or_else(|p| p.into_inner()).push(done);
    }
}

/// An ended span, as compact as it can be: most traces are not kept, and become [`SpanData`]
/// only if they are.
#[derive(Clone)]
pub(crate) struct Finished {
    ctx: TraceContext,
    parent: SpanId,
    parent_remote: bool,
    name: Cow<'static, str>,
    kind: SpanKind,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    attributes: Vec<KeyValue>,
    /// Boxed: only server spans have one, and a trace's ended spans are kept inline in its
    /// buffer (see [`Spans`]).
    http: Option<Box<HttpRequest>>,
    pub(crate) status: Status,
}

impl Finished {
    /// The span in the SDK's export form.
    pub(crate) fn into_data(self, scope: &InstrumentationScope) -> SpanData {
        let Self { ctx, parent, parent_remote, mut name, kind, start, end, mut attributes, http, status } = self;
        if let Some(http) = http {
            if let Some(routed) = http.span_name() {
                name = routed.into();
            }
            (*http).write_attributes(&mut attributes);
        }
        SpanData {
            span_context: SpanContext::new(ctx.trace_id, ctx.span_id, TraceFlags::SAMPLED, false, TraceState::NONE),
            parent_span_id: parent,
            parent_span_is_remote: parent_remote,
            span_kind: kind,
            name,
            start_time: start,
            end_time: end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope.clone(),
        }
    }
}

//! The embedded trace store: spans as OTLP protobuf `Span` records in a bounded segment log,
//! read back as traces (summaries for `nimbus traces`, whole span lists for `traces show`).
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span as ProtoSpan, span, status};
use opentelemetry_sdk::trace::SpanData;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::segments::SegmentLog;

/// One span as `nimbus traces show` and the API present it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpanView {
    /// The trace the span belongs to (32 hex digits).
    pub trace_id: String,
    /// The span's own id (16 hex digits).
    pub span_id: String,
    /// Empty for the root of the trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// What the span covers (`GET /hello`, `invoke hello`...).
    pub name: String,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    pub kind: String,
    /// When the span started, in nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// When the span ended, in nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
    /// `unset`, `ok` or `error`.
    pub status: String,
    /// Why the span failed, if it says; empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status_message: String,
    /// The span's attributes (`http.route`, `nimbus.component`...) as JSON values.
    pub attributes: BTreeMap<String, serde_json::Value>,
}

impl SpanView {
    /// How long the span took.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_unix_nano.saturating_sub(self.start_unix_nano))
    }

    /// A string attribute.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(serde_json::Value::as_str)
    }
}

/// One trace in a listing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TraceSummary {
    /// The trace's id (32 hex digits).
    pub trace_id: String,
    /// The name of its first span in this process (`GET /hello`, `process orders`...).
    pub name: String,
    /// The route pattern of its root span, if that span served a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The first component one of its spans names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The HTTP status of its root span, if that span served a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i64>,
    /// When its earliest stored span started, in nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// From its earliest span's start to its latest span's end, in nanoseconds.
    pub duration_ns: u64,
    /// How many of its spans this process stored.
    pub spans: usize,
    /// Whether any span of it failed.
    pub error: bool,
}

/// Which traces to list.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TraceQuery {
    /// Only traces whose root has this `http.route`.
    #[serde(default)]
    pub route: Option<String>,
    /// Only traces that took at least this long (milliseconds).
    #[serde(default)]
    pub slow_ms: Option<u64>,
    /// Only traces with a failed span.
    #[serde(default)]
    pub errors: bool,
    /// The newest this many (default 20).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Reads the trace store a pipeline writes into `dir`.
#[derive(Debug, Clone)]
pub struct TraceStore {
    dir: PathBuf,
}

impl TraceStore {
    pub(crate) fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf() }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The stored form of one span.
    pub(crate) fn encode(span: SpanData) -> Vec<u8> {
        ProtoSpan::from(span).encode_to_vec()
    }

    fn decoded(&self) -> impl Iterator<Item = ProtoSpan> {
        SegmentLog::read_all(&self.dir).into_iter().filter_map(|r| ProtoSpan::decode(r.as_slice()).ok())
    }

    /// Traces matching `query`, newest first.
    pub fn list(&self, query: &TraceQuery) -> Vec<TraceSummary> {
        // Only what a summary needs is kept of each span: a full store holds ~10^6 of them.
        let mut traces: HashMap<Vec<u8>, Vec<Brief>> = HashMap::new();
        for s in self.decoded() {
            let trace = s.trace_id.clone();
            traces.entry(trace).or_default().push(Brief::of(s));
        }
        let mut out: Vec<TraceSummary> = traces.into_iter().map(|(id, spans)| summarize(&id, spans)).collect();
        out.retain(|t| {
            query.route.as_ref().is_none_or(|r| t.route.as_ref() == Some(r))
                && query.slow_ms.is_none_or(|ms| t.duration_ns >= ms.saturating_mul(1_000_000))
                && (!query.errors || t.error)
        });
        out.sort_by_key(|t| std::cmp::Reverse(t.start_unix_nano));
        out.truncate(query.limit.unwrap_or(20));
        out
    }

    /// Every stored span of a trace, by start time; `None` if none is stored (or `trace_id` is
    /// not 32 hex digits).
    pub fn get(&self, trace_id: &str) -> Option<Vec<SpanView>> {
        let id = opentelemetry::trace::TraceId::from_hex(trace_id).ok()?.to_bytes();
        let mut spans: Vec<SpanView> = self.decoded().filter(|s| s.trace_id == id).map(view).collect();
        spans.sort_by_key(|s| (s.start_unix_nano, std::cmp::Reverse(s.end_unix_nano)));
        (!spans.is_empty()).then_some(spans)
    }

    /// The stored spans that started between `from` and `to` (Unix nanoseconds), grouped by
    /// trace, each by start time: the newest `limit` traces by their first span.
    pub fn between(&self, from: u64, to: u64, limit: usize) -> Vec<Vec<SpanView>> {
        let mut traces: HashMap<Vec<u8>, Vec<SpanView>> = HashMap::new();
        for s in self.decoded().filter(|s| (from..=to).contains(&s.start_time_unix_nano)) {
            traces.entry(s.trace_id.clone()).or_default().push(view(s));
        }
        let mut out: Vec<Vec<SpanView>> = traces.into_values().collect();
        for t in &mut out {
            t.sort_by_key(|s| (s.start_unix_nano, std::cmp::Reverse(s.end_unix_nano)));
        }
        out.sort_by_key(|t| std::cmp::Reverse(t.first().map_or(0, |s| s.start_unix_nano)));
        out.truncate(limit);
        out
    }

    /// Bytes the store uses on disk.
    pub fn disk_bytes(&self) -> u64 {
        SegmentLog::disk_bytes(&self.dir)
    }
}

/// The part of a span a trace summary needs.
struct Brief {
    span_id: Vec<u8>,
    parent: Vec<u8>,
    name: String,
    start: u64,
    end: u64,
    error: bool,
    route: Option<String>,
    component: Option<String>,
    status_code: Option<i64>,
}

impl Brief {
    fn of(s: ProtoSpan) -> Self {
        let (mut route, mut component, mut status_code) = (None, None, None);
        for kv in s.attributes {
            match (kv.key.as_str(), kv.value.and_then(|v| v.value)) {
                ("http.route", Some(any_value::Value::StringValue(v))) => route = Some(v),
                ("nimbus.component", Some(any_value::Value::StringValue(v))) => component = Some(v),
                ("http.response.status_code", Some(any_value::Value::IntValue(v))) => status_code = Some(v),
                _ => {}
            }
        }
        let error = s.status.is_some_and(|st| st.code == status::StatusCode::Error as i32);
        Self {
            span_id: s.span_id,
            parent: s.parent_span_id,
            name: s.name,
            start: s.start_time_unix_nano,
            end: s.end_time_unix_nano,
            error,
            route,
            component,
            status_code,
        }
    }
}

fn summarize(trace_id: &[u8], mut spans: Vec<Brief>) -> TraceSummary {
    let ids: std::collections::HashSet<&[u8]> = spans.iter().map(|s| s.span_id.as_slice()).collect();
    let root = spans
        .iter()
        .enumerate()
        .filter(|(_, s)| s.parent.is_empty() || !ids.contains(s.parent.as_slice()))
        .min_by_key(|(_, s)| s.start)
        .map_or(0, |(i, _)| i);
    let start = spans.iter().map(|s| s.start).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end).max().unwrap_or(start);
    let (count, error) = (spans.len(), spans.iter().any(|s| s.error));
    let component = spans.iter_mut().find_map(|s| s.component.take());
    let root = spans.swap_remove(root);
    TraceSummary {
        trace_id: hex::encode(trace_id),
        name: root.name,
        route: root.route,
        component,
        status_code: root.status_code,
        start_unix_nano: start,
        duration_ns: end - start,
        spans: count,
        error,
    }
}

fn view(s: ProtoSpan) -> SpanView {
    let kind = match span::SpanKind::try_from(s.kind).unwrap_or(span::SpanKind::Unspecified) {
        span::SpanKind::Server => "server",
        span::SpanKind::Client => "client",
        span::SpanKind::Producer => "producer",
        span::SpanKind::Consumer => "consumer",
        _ => "internal",
    };
    let (code, message) = s.status.map_or((status::StatusCode::Unset, String::new()), |st| {
        (status::StatusCode::try_from(st.code).unwrap_or(status::StatusCode::Unset), st.message)
    });
    SpanView {
        trace_id: hex::encode(&s.trace_id),
        span_id: hex::encode(&s.span_id),
        parent_span_id: (!s.parent_span_id.is_empty()).then(|| hex::encode(&s.parent_span_id)),
        name: s.name,
        kind: kind.into(),
        start_unix_nano: s.start_time_unix_nano,
        end_unix_nano: s.end_time_unix_nano,
        status: match code {
            status::StatusCode::Ok => "ok",
            status::StatusCode::Error => "error",
            status::StatusCode::Unset => "unset",
        }
        .into(),
        status_message: message,
        attributes: s.attributes.into_iter().map(|kv| (kv.key, json(kv.value))).collect(),
    }
}

fn json(v: Option<AnyValue>) -> serde_json::Value {
    use serde_json::Value as J;
    match v.and_then(|v| v.value) {
        Some(any_value::Value::StringValue(s)) => J::String(s),
        Some(any_value::Value::BoolValue(b)) => J::Bool(b),
        Some(any_value::Value::IntValue(i)) => J::from(i),
        Some(any_value::Value::DoubleValue(d)) => J::from(d),
        Some(any_value::Value::ArrayValue(a)) => J::Array(a.values.into_iter().map(|v| json(Some(v))).collect()),
        Some(any_value::Value::BytesValue(b)) => J::String(hex::encode(&b)),
        Some(other) => J::String(format!("{other:?}")),
        None => J::Null,
    }
}

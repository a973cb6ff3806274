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
    pub trace_id: String,
    pub span_id: String,
    /// Empty for the root of the trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    pub name: String,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    pub kind: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// `unset`, `ok` or `error`.
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status_message: String,
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
    pub trace_id: String,
    /// The name of its first span in this process (`GET /hello`, `process orders`...).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i64>,
    pub start_unix_nano: u64,
    pub duration_ns: u64,
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

    fn spans(&self) -> impl Iterator<Item = SpanView> {
        SegmentLog::read_all(&self.dir).into_iter().filter_map(|r| ProtoSpan::decode(r.as_slice()).ok()).map(view)
    }

    /// Traces matching `query`, newest first.
    pub fn list(&self, query: &TraceQuery) -> Vec<TraceSummary> {
        let mut traces: HashMap<String, Vec<SpanView>> = HashMap::new();
        for s in self.spans() {
            traces.entry(s.trace_id.clone()).or_default().push(s);
        }
        let mut out: Vec<TraceSummary> = traces.into_values().map(summarize).collect();
        out.retain(|t| {
            query.route.as_ref().is_none_or(|r| t.route.as_ref() == Some(r))
                && query.slow_ms.is_none_or(|ms| t.duration_ns >= ms.saturating_mul(1_000_000))
                && (!query.errors || t.error)
        });
        out.sort_by_key(|t| std::cmp::Reverse(t.start_unix_nano));
        out.truncate(query.limit.unwrap_or(20));
        out
    }

    /// Every stored span of a trace, by start time; `None` if none is stored.
    pub fn get(&self, trace_id: &str) -> Option<Vec<SpanView>> {
        let id = trace_id.to_ascii_lowercase();
        let mut spans: Vec<SpanView> = self.spans().filter(|s| s.trace_id == id).collect();
        spans.sort_by_key(|s| (s.start_unix_nano, std::cmp::Reverse(s.end_unix_nano)));
        (!spans.is_empty()).then_some(spans)
    }

    /// Bytes the store uses on disk.
    pub fn disk_bytes(&self) -> u64 {
        SegmentLog::disk_bytes(&self.dir)
    }
}

fn summarize(spans: Vec<SpanView>) -> TraceSummary {
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let root = spans
        .iter()
        .filter(|s| s.parent_span_id.as_deref().is_none_or(|p| !ids.contains(p)))
        .min_by_key(|s| s.start_unix_nano)
        .unwrap_or(&spans[0]);
    let start = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_unix_nano).max().unwrap_or(start);
    TraceSummary {
        trace_id: root.trace_id.clone(),
        name: root.name.clone(),
        route: root.attr("http.route").map(str::to_string),
        component: spans.iter().find_map(|s| s.attr("nimbus.component")).map(str::to_string),
        status_code: root.attributes.get("http.response.status_code").and_then(serde_json::Value::as_i64),
        start_unix_nano: start,
        duration_ns: end - start,
        spans: spans.len(),
        error: spans.iter().any(|s| s.status == "error"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
        trace_id: hex(&s.trace_id),
        span_id: hex(&s.span_id),
        parent_span_id: (!s.parent_span_id.is_empty()).then(|| hex(&s.parent_span_id)),
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
        Some(any_value::Value::BytesValue(b)) => J::String(hex(&b)),
        Some(other) => J::String(format!("{other:?}")),
        None => J::Null,
    }
}

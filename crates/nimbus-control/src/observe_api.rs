//! The observability endpoints of the control API: `/metrics` (OpenMetrics text), its recent
//! per-step history as JSON (`/v1/metrics/series`, for live plots), the trace store (`/v1/traces`, `/v1/traces/{id}`) and the log store (`/v1/logs`, optionally followed as
//! NDJSON). Served with the data endpoints, under the same tokens.
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::{HeaderValue, header};
use nimbus_observe::{LogQuery, LogRecord, SpanView, TraceQuery, TraceSummary};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::data::DataState;
use crate::error::ControlError;
use nimbus_security::policy::Action;

type ObserveApp = State<Arc<DataState>>;

/// The observability routes.
pub(crate) fn routes() -> Router<Arc<DataState>> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/metrics/series", get(series))
        .route("/v1/traces", get(list_traces))
        .route("/v1/traces/{id}", get(show_trace))
        .route("/v1/logs", get(logs))
}

/// Every metric of this node in OpenMetrics text (Prometheus scrapes it with the API token as a
/// bearer credential).
#[utoipa::path(get, path = "/metrics", tag = "observability",
    responses((status = 200, content_type = "application/openmetrics-text", body = String), (status = 404, body = crate::ErrorBody)))]
async fn metrics(State(s): ObserveApp, caller: Caller) -> Result<Response, ControlError> {
    s.check(&caller, Action::Read)?;
    let metrics = node_metrics(&s)?;
    let mut resp = metrics.render().into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(nimbus_observe::METRICS_CONTENT_TYPE));
    Ok(resp)
}

fn node_metrics(s: &DataState) -> Result<&nimbus_observe::Metrics, ControlError> {
    s.observer
        .metrics()
        .ok_or_else(|| ControlError::NotFound("metrics are off on this node (it runs with --no-telemetry)".into()))
}

/// Which components' history to read.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SeriesQuery {
    /// Only this app's components.
    app: Option<String>,
    /// Only components of this name.
    component: Option<String>,
    /// The last this many seconds (default 900, at most 3600).
    #[param(minimum = 1, maximum = 3600)]
    range_s: Option<u64>,
}

/// The recent history of this node's metrics, one series per component.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MetricsSeries {
    /// Seconds between two points.
    pub step_s: f64,
    /// One entry per component that was active in the last hour, by app and component.
    pub series: Vec<ComponentMetricsSeries>,
}

/// The points of one component, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ComponentMetricsSeries {
    /// The app.
    pub app: String,
    /// The component.
    pub component: String,
    /// One point per step.
    pub points: Vec<MetricsPoint>,
}

/// One step of one component: counts are of the step, gauges as of its end.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MetricsPoint {
    /// The end of the step, in Unix milliseconds.
    pub t: u64,
    /// Requests, event deliveries and actor calls that ended in the step.
    pub requests: u64,
    /// Requests per second over the step.
    pub rps: f64,
    /// Those that failed: HTTP 5xx, and event deliveries and actor calls that did not end `ok`.
    pub errors: u64,
    /// `errors / requests` (0..1); null without requests.
    pub error_rate: Option<f64>,
    /// Estimated median duration in milliseconds (from the duration histogram's buckets); null
    /// without requests.
    pub p50_ms: Option<f64>,
    /// Estimated 95th percentile duration in milliseconds.
    pub p95_ms: Option<f64>,
    /// Estimated 99th percentile duration in milliseconds.
    pub p99_ms: Option<f64>,
    /// Cold instantiations in the step.
    pub cold: u64,
    /// Warm instantiations in the step.
    pub warm: u64,
    /// Requests waiting for an admission slot at the end of the step.
    pub queue_depth: u64,
    /// Live instances at the end of the step.
    pub instances: u64,
    /// Memory of live instances at the end of the step, in bytes.
    pub memory_bytes: u64,
}

impl MetricsPoint {
    fn new(p: &nimbus_observe::SeriesPoint, step_s: f64) -> Self {
        Self {
            t: p.t,
            requests: p.requests,
            rps: p.requests as f64 / step_s,
            errors: p.errors,
            error_rate: (p.requests > 0).then(|| (p.errors as f64 / p.requests as f64).min(1.0)),
            p50_ms: p.p50_ms,
            p95_ms: p.p95_ms,
            p99_ms: p.p99_ms,
            cold: p.cold,
            warm: p.warm,
            queue_depth: p.queue_depth,
            instances: p.instances,
            memory_bytes: p.memory_bytes,
        }
    }
}

/// The most components one `/v1/metrics/series` answer holds (an hour of 100 components is ~13 MB
/// of JSON).
const MAX_SERIES: usize = 100;

/// The last `range_s` seconds of this node's metrics per component, a point per step (JSON for
/// live plots; `/metrics` has the cumulative figures).
#[utoipa::path(get, path = "/v1/metrics/series", tag = "observability", params(SeriesQuery),
    responses((status = 200, body = MetricsSeries), (status = 400, body = crate::ErrorBody), (status = 404, body = crate::ErrorBody)))]
async fn series(
    State(s): ObserveApp,
    caller: Caller,
    q: Result<Query<SeriesQuery>, QueryRejection>,
) -> Result<Json<MetricsSeries>, ControlError> {
    s.check(&caller, Action::Read)?;
    let q = crate::api::query(q)?;
    let range_s = q.range_s.unwrap_or(900);
    if !(1..=3600).contains(&range_s) {
        return Err(ControlError::bad_request(
            format!("range_s={range_s} is out of range"),
            "range_s is how many seconds back to read, from 1 to 3600 (the history is an hour deep)",
        ));
    }
    let history = node_metrics(&s)?.series();
    let matching = history.count(q.app.as_deref(), q.component.as_deref());
    if matching > MAX_SERIES {
        return Err(ControlError::bad_request(
            format!("{matching} components have a history here, and one answer holds at most {MAX_SERIES}"),
            "name an app (app=) or a component (component=)",
        ));
    }
    let step_s = history.step().as_secs_f64();
    let series = history
        .query(q.app.as_deref(), q.component.as_deref(), Duration::from_secs(range_s))
        .into_iter()
        .map(|c| ComponentMetricsSeries {
            points: c.points.iter().map(|p| MetricsPoint::new(p, step_s)).collect(),
            app: c.app,
            component: c.component,
        })
        .collect();
    Ok(Json(MetricsSeries { step_s, series }))
}

/// Which traces to list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TracesQuery {
    /// Only traces of this route (`http.route`, as written in the manifest).
    route: Option<String>,
    /// Only traces that took at least this many milliseconds.
    slow_ms: Option<u64>,
    /// Only traces with a failed span.
    errors: Option<bool>,
    /// The newest this many (default 20, at most 1000).
    limit: Option<usize>,
}

/// Traces, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TraceList {
    /// One entry per trace.
    #[schema(value_type = Vec<Object>)]
    pub traces: Vec<TraceSummary>,
}

/// The spans of one trace.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TraceDetail {
    /// The trace id (32 hex digits).
    pub trace_id: String,
    /// Its spans by start time.
    #[schema(value_type = Vec<Object>)]
    pub spans: Vec<SpanView>,
}

fn store(s: &DataState) -> Result<nimbus_observe::TraceStore, ControlError> {
    s.observer
        .traces()
        .cloned()
        .ok_or_else(|| ControlError::NotFound("this node keeps no traces (it runs with --no-telemetry)".into()))
}

/// Lists the traces in the embedded trace store.
#[utoipa::path(get, path = "/v1/traces", tag = "observability", params(TracesQuery),
    responses((status = 200, body = TraceList), (status = 400, body = crate::ErrorBody)))]
async fn list_traces(
    State(s): ObserveApp,
    caller: Caller,
    q: Result<Query<TracesQuery>, QueryRejection>,
) -> Result<Json<TraceList>, ControlError> {
    s.check(&caller, Action::Read)?;
    let q = crate::api::query(q)?;
    let store = store(&s)?;
    s.observer.flush().await;
    let query = TraceQuery {
        route: q.route,
        slow_ms: q.slow_ms,
        errors: q.errors.unwrap_or(false),
        limit: Some(q.limit.unwrap_or(20).min(1000)),
    };
    let traces = tokio::task::spawn_blocking(move || store.list(&query))
        .await
        .map_err(|e| ControlError::unavailable("reading the trace store failed", e))?;
    Ok(Json(TraceList { traces }))
}

/// Every stored span of one trace.
#[utoipa::path(get, path = "/v1/traces/{id}", tag = "observability", params(("id" = String, Path)),
    responses((status = 200, body = TraceDetail), (status = 404, body = crate::ErrorBody)))]
async fn show_trace(
    State(s): ObserveApp,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<Json<TraceDetail>, ControlError> {
    s.check(&caller, Action::Read)?;
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ControlError::bad_request(
            format!("`{id}` is not a trace id"),
            "a trace id is 32 hex digits, as in `nimbus traces` or the traceresponse header",
        ));
    }
    let store = store(&s)?;
    s.observer.flush().await;
    let wanted = id.clone();
    let spans = tokio::task::spawn_blocking(move || store.get(&wanted))
        .await
        .map_err(|e| ControlError::unavailable("reading the trace store failed", e))?
        .ok_or_else(|| ControlError::NotFound(format!("no trace `{id}` is stored (it may have aged out)")))?;
    Ok(Json(TraceDetail { trace_id: id.to_ascii_lowercase(), spans }))
}

/// Which log records to read.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LogsQuery {
    /// Only this component's records.
    component: Option<String>,
    /// Only this app's records.
    app: Option<String>,
    /// Only records of the last this many seconds.
    since_s: Option<u64>,
    /// Only records of this trace.
    trace: Option<String>,
    /// The newest this many stored records (default 200, at most 10000).
    limit: Option<usize>,
    /// Keep the response open and stream new records as they come (NDJSON).
    follow: Option<bool>,
}

/// Log records, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogList {
    /// The records.
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<LogRecord>,
}

/// Reads the log store; with `follow`, streams the stored records and then new ones as NDJSON.
#[utoipa::path(get, path = "/v1/logs", tag = "observability", params(LogsQuery),
    responses((status = 200, body = LogList, description = "JSON, or NDJSON (one record per line) with `follow`"), (status = 400, body = crate::ErrorBody)))]
async fn logs(
    State(s): ObserveApp,
    caller: Caller,
    q: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Response, ControlError> {
    s.check(&caller, Action::Read)?;
    let q = crate::api::query(q)?;
    let store =
        s.observer.logs().cloned().ok_or_else(|| ControlError::NotFound("this node keeps no logs on disk".into()))?;
    let since_unix_nano = q.since_s.map(|secs| {
        let t = SystemTime::now().checked_sub(Duration::from_secs(secs)).unwrap_or(UNIX_EPOCH);
        t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    });
    let query = LogQuery {
        component: q.component,
        app: q.app,
        since_unix_nano,
        trace_id: q.trace,
        limit: Some(q.limit.unwrap_or(200).min(10_000)),
    };
    // Subscribe before reading so nothing written in between is missed.
    let live = q.follow.unwrap_or(false).then(|| store.follow());
    s.observer.flush().await;
    let (reader, filter) = (store.clone(), query.clone());
    let stored = tokio::task::spawn_blocking(move || reader.query(&filter))
        .await
        .map_err(|e| ControlError::unavailable("reading the log store failed", e))?;
    let Some(live) = live else {
        return Ok(Json(LogList { records: stored }).into_response());
    };
    let last = stored.last().map(|r| r.time_unix_nano);
    let head = futures::stream::iter(stored.into_iter().map(line));
    let tail = futures::stream::unfold(live, move |mut live| {
        let query = query.clone();
        async move {
            loop {
                match live.recv().await {
                    Ok(r) if query.matches(&r) && last.is_none_or(|t| r.time_unix_nano > t) => {
                        return Some((line(LogRecord::clone(&r)), live));
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    let mut resp = Body::from_stream(futures::StreamExt::chain(head, tail)).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(resp)
}

fn line(r: LogRecord) -> Result<String, std::convert::Infallible> {
    Ok(format!("{}\n", serde_json::to_string(&r).unwrap_or_default()))
}

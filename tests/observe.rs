//! Observability end to end through `nimbus up`: a real OTLP collector (http/protobuf and gRPC,
//! decoding the export with opentelemetry-proto) receiving the spans of a request that calls
//! outbound HTTP, and the metrics and log records of known traffic; `/metrics` parsed after known
//! traffic, logs found by trace id (and followed), and `nimbus traces` over the embedded trace
//! store.
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{App, Server, client, ok};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use prost::Message;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// What a collector received: spans, metrics and log records, each with the `service.name` of
/// its resource.
#[derive(Default)]
struct Collected {
    spans: Vec<(String, Span)>,
    metrics: Vec<(String, Metric)>,
    logs: Vec<(String, LogRecord)>,
}

type Received = Arc<Mutex<Collected>>;

fn service(resource: Option<&Resource>) -> String {
    resource.and_then(|r| attr(&r.attributes, "service.name")).map(|v| text(&v)).unwrap_or_default()
}

fn record(received: &Received, request: ExportTraceServiceRequest) {
    let mut all = received.lock().unwrap();
    for rs in request.resource_spans {
        let service = service(rs.resource.as_ref());
        for ss in rs.scope_spans {
            all.spans.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
        }
    }
}

fn record_metrics(received: &Received, request: ExportMetricsServiceRequest) {
    let mut all = received.lock().unwrap();
    for rm in request.resource_metrics {
        let service = service(rm.resource.as_ref());
        for sm in rm.scope_metrics {
            all.metrics.extend(sm.metrics.into_iter().map(|m| (service.clone(), m)));
        }
    }
}

fn record_logs(received: &Received, request: ExportLogsServiceRequest) {
    let mut all = received.lock().unwrap();
    for rl in request.resource_logs {
        let service = service(rl.resource.as_ref());
        for sl in rl.scope_logs {
            all.logs.extend(sl.log_records.into_iter().map(|l| (service.clone(), l)));
        }
    }
}

/// An OTLP/HTTP route: `POST` of an export request `T` in protobuf, kept by `keep`, answered
/// with `response`.
fn otlp_route<T: Message + Default + 'static>(
    received: &Received,
    keep: fn(&Received, T),
    response: Vec<u8>,
) -> axum::routing::MethodRouter {
    let sink = received.clone();
    axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
        let (sink, response) = (sink.clone(), response.clone());
        async move {
            assert_eq!(headers["content-type"], "application/x-protobuf");
            keep(&sink, T::decode(body).expect("an OTLP protobuf export"));
            ([("content-type", "application/x-protobuf")], response)
        }
    })
}

/// An OTLP/HTTP collector: `POST /v1/traces`, `/v1/metrics` and `/v1/logs` with the export
/// requests in protobuf.
async fn http_collector() -> (SocketAddr, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", otlp_route(&received, record, ExportTraceServiceResponse::default().encode_to_vec()))
        .route(
            "/v1/metrics",
            otlp_route(&received, record_metrics, ExportMetricsServiceResponse::default().encode_to_vec()),
        )
        .route("/v1/logs", otlp_route(&received, record_logs, ExportLogsServiceResponse::default().encode_to_vec()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

#[derive(Clone)]
struct Collector(Received);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        record(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        record_metrics(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        record_logs(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// An OTLP/gRPC collector (tonic, the `TraceService`, `MetricsService` and `LogsService` of
/// opentelemetry-proto).
async fn grpc_collector() -> (SocketAddr, Received) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = Collector(received.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector.clone()))
            .add_service(LogsServiceServer::new(collector))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap()
    });
    (addr, received)
}

/// A service the function calls; it records the `traceparent` of each request.
async fn downstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let sink = sink.clone();
        async move {
            let tp = headers.get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
            sink.lock().unwrap().push(tp);
            "downstream ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

fn kitchen_app(downstream: SocketAddr) -> App {
    App::new(&format!(
        r#"[app]
name = "traced"

[component.kitchen]
source = "{kitchen}"
grants = {{ outbound = ["http://127.0.0.1:{port}"] }}

[[trigger.http]]
route = "/kitchen/..."
component = "kitchen"
"#,
        kitchen = nimbus_fixtures::KITCHEN,
        port = downstream.port()
    ))
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<AnyValue> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone())
}

fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn attr_text(span: &Span, key: &str) -> Option<String> {
    attr(&span.attributes, key).map(|v| text(&v))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until the collector holds `n` spans of `trace`.
async fn spans_of(received: &Received, trace: &str, n: usize) -> Vec<(String, Span)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let spans: Vec<(String, Span)> =
            received.lock().unwrap().spans.iter().filter(|(_, s)| hex(&s.trace_id) == trace).cloned().collect();
        if spans.len() >= n {
            return spans;
        }
        assert!(Instant::now() < deadline, "the collector got {} spans of {trace}, not {n}: {spans:#?}", spans.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The request's spans form one tree under the caller's span: the gateway's server span, with
/// route, admission, instantiate and execute under it, and the outbound call under execute,
/// whose context is the one the downstream service received.
fn check_tree(spans: &[(String, Span)], downstream_saw: &[String], first: bool) {
    assert!(spans.iter().all(|(service, _)| service == "nimbus"), "resource service.name is nimbus");
    let by_name = |name: &str| -> &Span {
        spans.iter().map(|(_, s)| s).find(|s| s.name == name).unwrap_or_else(|| panic!("no `{name}` span: {spans:#?}"))
    };
    let server = by_name("GET /kitchen/...");
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(hex(&server.parent_span_id), CALLER_SPAN, "the caller's span is the parent");
    assert_eq!(attr_text(server, "http.route").as_deref(), Some("/kitchen/..."));
    assert_eq!(attr_text(server, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(attr_text(server, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr_text(server, "url.path").as_deref(), Some("/kitchen/outbound"));
    assert_eq!(attr_text(server, "nimbus.component").as_deref(), Some("kitchen"));
    assert_eq!(attr_text(server, "nimbus.app").as_deref(), Some("traced"));
    let mut children: Vec<&str> =
        spans.iter().map(|(_, s)| s).filter(|s| s.parent_span_id == server.span_id).map(|s| s.name.as_str()).collect();
    children.sort_unstable();
    assert_eq!(children, ["admission", "execute", "instantiate", "route"]);
    let instantiate = by_name("instantiate");
    let start = if first { "cold" } else { "warm" };
    assert_eq!(attr_text(instantiate, "nimbus.instance.start").as_deref(), Some(start));
    let execute = by_name("execute");
    assert!(instantiate.end_time_unix_nano <= execute.start_time_unix_nano, "execute starts once the instance exists");
    let call = by_name("GET");
    assert_eq!(call.kind, SpanKind::Client as i32);
    assert_eq!(call.parent_span_id, execute.span_id, "the host call is a child of guest execution");
    assert_eq!(attr_text(call, "http.request.method").as_deref(), Some("GET"));
    assert!(attr_text(call, "url.full").unwrap().starts_with("http://127.0.0.1:"), "{call:?}");
    assert_eq!(attr_text(call, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(attr_text(call, "http.response.status_code").as_deref(), Some("200"));
    let expected = format!("00-{TRACE}-{}-01", hex(&call.span_id));
    assert!(downstream_saw.contains(&expected), "the downstream got {downstream_saw:?}, not {expected}");
    for (_, s) in spans {
        assert!(s.start_time_unix_nano <= s.end_time_unix_nano && s.start_time_unix_nano > 0);
        assert!(s.start_time_unix_nano >= server.start_time_unix_nano, "{s:?} starts within the server span");
        // The guest may go on running after its body is finished (and the server span with it),
        // so only `execute` may end after the server span.
        if s.name != "execute" {
            assert!(s.end_time_unix_nano <= server.end_time_unix_nano, "{s:?} ends within the server span");
        }
    }
}

async fn call_outbound(server: &Server, downstream: SocketAddr, span: &str) -> reqwest::Response {
    let resp = client()
        .get(server.url(&format!("/kitchen/outbound?url=http://127.0.0.1:{}/x", downstream.port())))
        .header("traceparent", format!("00-{TRACE}-{span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_reach_an_otlp_collector_over_http_protobuf_as_one_tree() {
    let (down, seen) = downstream().await;
    let (collector, received) = http_collector().await;
    let app = kitchen_app(down);
    let server = app.up_env(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{collector}")),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
    );
    // Every signal, metrics at the default interval of 60,000 ms.
    let all = format!("spans, metrics (every 1m) and logs exported over OTLP to http://{collector}");
    assert!(server.banner.contains(&all), "{}", server.banner);
    let resp = call_outbound(&server, down, CALLER_SPAN).await;
    let traceresponse = resp.headers()["traceresponse"].to_str().unwrap().to_string();
    assert!(traceresponse.starts_with(&format!("00-{TRACE}-")), "{traceresponse}");
    assert_eq!(resp.text().await.unwrap(), "upstream status 200\ndownstream ok");
    let spans = spans_of(&received, TRACE, 6).await;
    check_tree(&spans, &seen.lock().unwrap(), true);
    let server_span = spans.iter().find(|(_, s)| s.name == "GET /kitchen/...").unwrap();
    assert!(traceresponse.contains(&hex(&server_span.1.span_id)), "traceresponse names the server span");
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_reach_an_otlp_collector_over_grpc() {
    let (down, seen) = downstream().await;
    let (collector, received) = grpc_collector().await;
    let app = kitchen_app(down);
    let server = app.up_env(
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{collector}")), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
    );
    // A first request makes the instance cold; the traced one is warm.
    assert_eq!(client().get(server.url("/kitchen/echo")).send().await.unwrap().status(), 200);
    call_outbound(&server, down, CALLER_SPAN).await;
    check_tree(&spans_of(&received, TRACE, 6).await, &seen.lock().unwrap(), false);
}

/// Asks `probe` until it has an answer (the collector receives exports in the background).
async fn until<T>(what: &str, received: &Received, probe: impl Fn(&Collected) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = probe(&received.lock().unwrap()) {
            return found;
        }
        assert!(Instant::now() < deadline, "the collector never received {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn has(attrs: &[KeyValue], key: &str, value: &str) -> bool {
    attr(attrs, key).is_some_and(|v| text(&v) == value)
}

/// The largest value the collector received of the `nimbus_requests` counter of `component` of
/// the fixtures app (HTTP, 2xx), from resource `service.name=nimbus`, once it is at least `n`.
fn requests_counted(collected: &Collected, component: &str, n: i64) -> Option<i64> {
    let points = collected.metrics.iter().filter(|(service, m)| service == "nimbus" && m.name == "nimbus_requests");
    let sums = points.filter_map(|(_, m)| match &m.data {
        Some(metric::Data::Sum(sum)) if sum.is_monotonic && sum.aggregation_temporality == 2 => Some(sum),
        _ => None,
    });
    sums.flat_map(|s| &s.data_points)
        .filter(|p| {
            let a = &p.attributes;
            has(a, "app", "fixtures")
                && has(a, "component", component)
                && has(a, "kind", "http")
                && has(a, "outcome", "2xx")
        })
        .filter_map(|p| match p.value {
            Some(number_data_point::Value::AsInt(v)) => Some(v),
            _ => None,
        })
        .max()
        .filter(|v| *v >= n)
}

/// Five requests to `/kitchen/log` (a line on stdout and one on stderr each), each in a trace
/// of its own: their trace ids and request ids.
async fn five_logged_requests(server: &Server) -> Vec<(String, String)> {
    let mut sent = Vec::new();
    for i in 0..5 {
        let trace = format!("{i:x}{}", &TRACE[1..]);
        let resp = client()
            .get(server.url("/kitchen/log"))
            .header("traceparent", format!("00-{trace}-{CALLER_SPAN}-01"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        sent.push((trace, resp.headers()["x-request-id"].to_str().unwrap().to_string()));
    }
    sent
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_logs_reach_an_otlp_collector_over_http_protobuf() {
    let (collector, received) = http_collector().await;
    let app = App::new(&common::fixtures_manifest("", ""));
    let server = app.up_env(
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{collector}")), ("OTEL_METRIC_EXPORT_INTERVAL", "200")],
    );
    let all = format!("spans, metrics (every 200ms) and logs exported over OTLP to http://{collector}");
    assert!(server.banner.contains(&all), "{}", server.banner);
    let sent = five_logged_requests(&server).await;

    // (a) the request counter, cumulative, with the registry's labels as attributes; every
    // family comes along, histograms with their buckets.
    until("5 kitchen requests counted", &received, |c| requests_counted(c, "kitchen", 5)).await;
    {
        let collected = received.lock().unwrap();
        let duration =
            collected.metrics.iter().rev().find(|(_, m)| m.name == "nimbus_request_duration_seconds").unwrap();
        assert_eq!(duration.1.unit, "s");
        let Some(metric::Data::Histogram(h)) = &duration.1.data else { panic!("{duration:?}") };
        let kitchen = h.data_points.iter().find(|p| has(&p.attributes, "component", "kitchen")).unwrap();
        assert!(kitchen.count >= 5, "{kitchen:?}");
        assert_eq!(kitchen.bucket_counts.iter().sum::<u64>(), kitchen.count, "{kitchen:?}");
        assert_eq!(kitchen.bucket_counts.len(), kitchen.explicit_bounds.len() + 1);
        for family in ["nimbus_instantiations", "nimbus_instances", "nimbus_http_bytes", "nimbus_telemetry_dropped"] {
            assert!(collected.metrics.iter().any(|(_, m)| m.name == family), "no {family} exported");
        }
    }

    // (b) each request's lines, in the trace the caller sent and under a span of that trace.
    for (trace, request_id) in &sent {
        let stdout = until(&format!("the stdout line of trace {trace}"), &received, |c| {
            c.logs
                .iter()
                .find(|(_, l)| hex(&l.trace_id) == *trace && has(&l.attributes, "nimbus.stream", "stdout"))
                .cloned()
        })
        .await;
        let (service, line) = stdout;
        // (c) the resource.
        assert_eq!(service, "nimbus");
        assert_eq!(line.body.as_ref().map(text).as_deref(), Some("hello on stdout"));
        assert_eq!((line.severity_number, line.severity_text.as_str()), (9, "INFO"));
        assert!(line.time_unix_nano > 0);
        assert!(
            has(&line.attributes, "nimbus.app", "fixtures") && has(&line.attributes, "nimbus.component", "kitchen")
        );
        assert!(has(&line.attributes, "nimbus.request_id", request_id), "{line:?}");
        assert_eq!(line.span_id.len(), 8);
        assert!(line.span_id.iter().any(|b| *b != 0), "a span id: {line:?}");
        until(&format!("the span {} the line was logged in", hex(&line.span_id)), &received, |c| {
            c.spans.iter().find(|(_, s)| s.span_id == line.span_id && hex(&s.trace_id) == *trace).map(drop)
        })
        .await;
        let stderr = until("the stderr line", &received, |c| {
            c.logs
                .iter()
                .find(|(_, l)| hex(&l.trace_id) == *trace && has(&l.attributes, "nimbus.stream", "stderr"))
                .cloned()
        })
        .await;
        assert_eq!(stderr.1.body.as_ref().map(text).as_deref(), Some("hello on stderr"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn otel_logs_exporter_none_exports_metrics_and_spans_but_no_logs_over_grpc() {
    let (collector, received) = grpc_collector().await;
    let app = App::new(&common::fixtures_manifest("", ""));
    let server = app.up_env(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{collector}")),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
            ("OTEL_LOGS_EXPORTER", "none"),
        ],
    );
    let both = format!("spans and metrics (every 200ms) exported over OTLP to http://{collector}");
    assert!(server.banner.contains(&both) && !server.banner.contains("logs exported"), "{}", server.banner);
    let sent = five_logged_requests(&server).await;
    until("5 kitchen requests counted", &received, |c| requests_counted(c, "kitchen", 5)).await;
    // A request's lines are handed to the exporter before its spans (they are logged before its
    // trace ends), so once the last request's spans are in, its lines would be too.
    let (last, _) = sent.last().unwrap();
    spans_of(&received, last, 1).await;
    assert!(received.lock().unwrap().logs.is_empty(), "OTEL_LOGS_EXPORTER=none exports no log records");
}

#[test]
fn an_otel_variable_nimbus_cannot_honour_stops_up_naming_it() {
    let app = App::new(&common::fixtures_manifest("", ""));
    for (var, value, says) in [
        ("OTEL_METRIC_EXPORT_INTERVAL", "soon", "give the milliseconds between two metric exports"),
        ("OTEL_LOGS_EXPORTER", "console", "Nimbus has no `console` exporter; set it to `otlp` or `none`"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "Nimbus exports over `http/protobuf` or `grpc`"),
    ] {
        let mut up = std::process::Command::new(common::NIMBUS)
            .args(["up", ".", "--listen", "127.0.0.1:0", "--no-cache"])
            .current_dir(app.path())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
            .env(var, value)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Its stdout ends when it exits; had it started serving, the banner's last line comes.
        let stdout = std::io::BufReader::new(up.stdout.take().unwrap());
        let serving = std::io::BufRead::lines(stdout).map_while(Result::ok).any(|l| l.starts_with("Health check:"));
        if serving {
            let _ = up.kill();
        }
        let out = up.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!serving && !out.status.success(), "{var}={value} was accepted");
        assert!(
            stderr.contains("check the OTEL_* variables") && stderr.contains(&format!("{var}={value}: {says}")),
            "{stderr}"
        );
    }
}

/// `name{labels} value` lines of an OpenMetrics text, keyed by name and sorted labels.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line `{line}`"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let mut labels: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
                labels.sort_unstable();
                (name, labels.join(","))
            }
            None => (series, String::new()),
        };
        out.insert(format!("{name}{{{labels}}}"), value.parse().unwrap_or_else(|_| panic!("bad value in `{line}`")));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_known_traffic() {
    let app = App::new(&common::fixtures_manifest("", ""));
    let server = app.up(&[]);
    let c = client();
    let mut hello_bytes = 0;
    for i in 0..5 {
        let resp = c.get(server.url(&format!("/n{i}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        hello_bytes += resp.bytes().await.unwrap().len();
    }
    for _ in 0..2 {
        assert_eq!(c.get(server.url("/kitchen/panic")).send().await.unwrap().status(), 500);
    }
    let echo = c.post(server.url("/kitchen/echo")).body(vec![b'x'; 1000]).send().await.unwrap();
    assert_eq!(echo.status(), 200);
    let echo_bytes = echo.bytes().await.unwrap().len();

    let (url, token) = app.local_api();
    assert_eq!(c.get(format!("{url}/metrics")).send().await.unwrap().status(), 401, "metrics need the token");
    let resp = c.get(format!("{url}/metrics")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"));
    let m = parse_metrics(&text);
    let get = |name: &str, component: &str, extra: &[(&str, &str)]| -> f64 {
        let mut labels = vec![format!("app=\"fixtures\""), format!("component=\"{component}\"")];
        labels.extend(extra.iter().map(|(k, v)| format!("{k}=\"{v}\"")));
        labels.sort_unstable();
        let key = format!("{name}{{{}}}", labels.join(","));
        *m.get(&key).unwrap_or_else(|| panic!("no series {key} in\n{text}"))
    };
    let http = |outcome| [("kind", "http"), ("outcome", outcome)];
    assert_eq!(get("nimbus_requests_total", "hello", &http("2xx")), 5.0);
    assert_eq!(get("nimbus_requests_total", "kitchen", &http("5xx")), 2.0);
    assert_eq!(get("nimbus_requests_total", "kitchen", &http("2xx")), 1.0);
    assert_eq!(get("nimbus_errors_total", "kitchen", &[("class", "trap")]), 2.0);
    assert_eq!(get("nimbus_request_duration_seconds_count", "hello", &[]), 5.0);
    assert_eq!(get("nimbus_instantiations_total", "hello", &[("start", "cold")]), 1.0);
    assert_eq!(get("nimbus_instantiations_total", "hello", &[("start", "warm")]), 4.0);
    assert_eq!(get("nimbus_instantiate_duration_seconds_count", "hello", &[]), 5.0);
    assert_eq!(get("nimbus_admission_wait_seconds_count", "kitchen", &[]), 3.0);
    assert_eq!(get("nimbus_admission_queue_depth", "hello", &[]), 0.0);
    assert_eq!(get("nimbus_instances", "hello", &[]), 0.0, "every instance was torn down");
    assert_eq!(get("nimbus_memory_bytes", "hello", &[]), 0.0, "and its memory released");
    assert_eq!(get("nimbus_instance_memory_peak_bytes_count", "hello", &[]), 5.0);
    assert!(get("nimbus_instance_memory_peak_bytes_sum", "hello", &[]) >= 5.0 * 65536.0);
    assert_eq!(get("nimbus_http_bytes_total", "hello", &[("direction", "out")]), hello_bytes as f64);
    assert_eq!(get("nimbus_http_bytes_total", "kitchen", &[("direction", "in")]), 1000.0);
    assert!(get("nimbus_http_bytes_total", "kitchen", &[("direction", "out")]) >= echo_bytes as f64);
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_are_found_by_trace_and_followed() {
    let home = tempfile::tempdir().unwrap();
    let app = App::new(&common::fixtures_manifest("", ""));
    let server = app.up(&[]);
    let c = client();
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let resp = c
        .get(server.url("/kitchen/log"))
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(c.get(server.url("/kitchen/log")).send().await.unwrap().status(), 200, "another trace");

    // From anywhere inside the app directory.
    let sub = app.path().join("src/deeper");
    std::fs::create_dir_all(&sub).unwrap();
    let from_sub = std::process::Command::new(common::NIMBUS)
        .args(["logs", "--trace", trace])
        .current_dir(&sub)
        .env("HOME", home.path())
        .env_remove("NIMBUS_SERVER")
        .env_remove("NIMBUS_TOKEN")
        .output()
        .unwrap();
    let text = ok(app.cli(home.path(), &["logs", "--trace", trace]));
    assert_eq!(ok(from_sub), text);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines.iter().any(|l| l.contains(" kitchen stdout ") && l.ends_with("hello on stdout")), "{text}");
    assert!(lines.iter().any(|l| l.contains(" kitchen stderr ") && l.ends_with("hello on stderr")), "{text}");
    assert!(lines.iter().all(|l| l.contains(&format!("[{request_id} 0af76519]"))), "{text}");

    let json: serde_json::Value =
        serde_json::from_str(&ok(app.cli(home.path(), &["logs", "kitchen", "-o", "json"]))).unwrap();
    let records = json["records"].as_array().unwrap();
    assert_eq!(records.len(), 4, "{json:#}");
    assert!(records.iter().all(|r| r["component"] == "kitchen" && r["app"] == "fixtures"));
    assert_eq!(records.iter().filter(|r| r["trace_id"] == trace && r["request_id"] == request_id.as_str()).count(), 2);
    assert_eq!(ok(app.cli(home.path(), &["logs", "hello"])), "", "no records of another component");

    // A failed invocation leaves a platform record in its trace.
    let failed = c.get(server.url("/kitchen/panic")).send().await.unwrap();
    let failed_trace = failed.headers()["traceresponse"].to_str().unwrap().split('-').nth(1).unwrap().to_string();
    let text = ok(app.cli(home.path(), &["logs", "--trace", &failed_trace]));
    assert!(text.contains("kitchen platform WARN") && text.contains("invocation failed (500)"), "{text}");
    assert!(text.contains("kitchen stderr") && text.contains("kitchen guest panicked on purpose"), "{text}");

    // -f prints new records as they come.
    let mut follow = std::process::Command::new(common::NIMBUS)
        .args(["logs", "kitchen", "-f", "--since", "1s"])
        .current_dir(app.path())
        .env("HOME", home.path())
        .env_remove("NIMBUS_SERVER")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::collect_lines(follow.stdout.take().unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let marker = "0123456789abcdef0123456789abcdef";
    c.get(server.url("/kitchen/log"))
        .header("traceparent", format!("00-{marker}-b7ad6b7169203331-01"))
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !out.lock().unwrap().contains("01234567] hello on stdout") {
        assert!(Instant::now() < deadline, "-f did not print the new record: {}", out.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = follow.kill();
    let _ = follow.wait();
}

/// The spans of a stored trace, as `nimbus traces show -o json` prints them. A trace is stored
/// once its last span ends, which can be a moment after the client has the whole response (the
/// guest returns after finishing its body), so this asks until it is there.
fn stored_spans(app: &App, home: &std::path::Path, trace: &str) -> Vec<serde_json::Value> {
    common::stored_spans_until(app, home, trace, "was never stored", |_| true)
}

#[tokio::test(flavor = "multi_thread")]
async fn traces_are_listed_filtered_and_shown_from_the_embedded_store() {
    let home = tempfile::tempdir().unwrap();
    let app = App::new(&common::fixtures_manifest("", ""));
    let server = app.up(&[]);
    let c = client();
    let get = |path: &str, trace: &str| {
        c.get(server.url(path)).header("traceparent", format!("00-{trace}-b7ad6b7169203331-01")).send()
    };
    let (fast, slow, failing, dripping) = (
        "11111111111111111111111111111111",
        "22222222222222222222222222222222",
        "33333333333333333333333333333333",
        "55555555555555555555555555555555",
    );
    assert_eq!(get("/hi", fast).await.unwrap().status(), 200);
    assert_eq!(get("/kitchen/sleep?ms=150", slow).await.unwrap().status(), 200);
    assert_eq!(get("/kitchen/panic", failing).await.unwrap().status(), 500);

    let list = ok(app.cli(home.path(), &["traces"]));
    for id in [fast, slow, failing] {
        assert!(list.contains(id), "{list}");
    }
    let kitchen = ok(app.cli(home.path(), &["traces", "--route", "/kitchen/..."]));
    assert!(kitchen.contains(slow) && kitchen.contains(failing) && !kitchen.contains(fast), "{kitchen}");
    let errors = ok(app.cli(home.path(), &["traces", "--errors"]));
    assert!(errors.contains(failing) && !errors.contains(slow) && !errors.contains(fast), "{errors}");
    assert!(errors.contains("GET /kitchen/...") && errors.contains(" 500 "), "{errors}");
    let slow_list = ok(app.cli(home.path(), &["traces", "--slow", "100ms"]));
    assert!(slow_list.contains(slow) && !slow_list.contains(fast), "{slow_list}");

    let shown = ok(app.cli(home.path(), &["traces", "show", failing]));
    let lines: Vec<&str> = shown.lines().collect();
    assert!(lines[0].starts_with(&format!("trace {failing} ")) && lines[0].ends_with(" 5 spans"), "{shown}");
    assert!(lines[1].starts_with("GET /kitchen/... ") && lines[1].contains("ERROR"), "{shown}");
    for child in ["route", "admission", "instantiate", "execute"] {
        assert!(lines.iter().any(|l| l.starts_with(&format!("  {child} "))), "no {child} in\n{shown}");
    }
    assert!(lines.iter().any(|l| l.starts_with("  execute ") && l.contains("ERROR the guest trapped")), "{shown}");

    let spans = stored_spans(&app, home.path(), slow);
    let execute = spans.iter().find(|s| s["name"] == "execute").unwrap();
    let took = execute["end_unix_nano"].as_u64().unwrap() - execute["start_unix_nano"].as_u64().unwrap();
    assert!(took >= 150_000_000, "the guest slept 150 ms inside execute: {execute}");

    // The server span lasts until the response body is fully sent, not just its head.
    let streamed = get("/kitchen/drip?chunks=4&ms=100", dripping).await.unwrap();
    assert_eq!(streamed.text().await.unwrap(), "drop 0\ndrop 1\ndrop 2\ndrop 3\n");
    let spans = stored_spans(&app, home.path(), dripping);
    let server_span = spans.iter().find(|s| s["name"] == "GET /kitchen/...").unwrap();
    let took = server_span["end_unix_nano"].as_u64().unwrap() - server_span["start_unix_nano"].as_u64().unwrap();
    assert!(took >= 300_000_000, "the body took three 100 ms pauses to send: {server_span}");

    let missing = app.cli(home.path(), &["traces", "show", "44444444444444444444444444444444"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no trace `44444444444444444444444444444444` is stored"));
    let bad = app.cli(home.path(), &["traces", "show", "nope"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a trace id"));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_telemetry_turns_spans_and_metrics_off_but_keeps_logs() {
    let home = tempfile::tempdir().unwrap();
    let app = App::new(&common::fixtures_manifest("", ""));
    let server = app.up(&["--no-telemetry"]);
    assert!(server.banner.contains("Telemetry: off (--no-telemetry)"), "{}", server.banner);
    let resp = client()
        .get(server.url("/kitchen/log"))
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("traceresponse").is_none());
    let (url, token) = app.local_api();
    assert_eq!(client().get(format!("{url}/metrics")).bearer_auth(&token).send().await.unwrap().status(), 404);
    let out = app.cli(home.path(), &["traces"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("keeps no traces"), "{out:?}");
    let logs = ok(app.cli(home.path(), &["logs", "--trace", TRACE]));
    assert!(logs.contains("hello on stdout"), "the caller's trace id still labels the logs: {logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trace_follows_an_event_through_the_bus_and_what_its_handler_publishes() {
    let home = tempfile::tempdir().unwrap();
    let app = App::new(&format!(
        r#"[app]
name = "flow"

[component.fn]
source = "{events}"
grants = {{ publish = ["handled"] }}

[[trigger.topic]]
topic = "orders"
component = "fn"
public = true

[[trigger.topic]]
topic = "handled"
component = "fn"
retry = {{ max_attempts = 1 }}
"#,
        events = nimbus_fixtures::EVENTS
    ));
    let server = app.up(&[]);
    let trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let resp = client()
        .post(server.url("/events/orders"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "o-1")
        .header("ce-source", "/test")
        .header("ce-type", "forward")
        .header("ce-target", "handled")
        .header("traceparent", format!("00-{trace}-{CALLER_SPAN}-01"))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    // The forwarded copy is rejected by the handler (an unknown type): a failed span ends the flow.
    let spans = common::stored_spans_until(&app, home.path(), trace, "did not reach the handled topic", |spans| {
        spans.iter().any(|s| s["name"] == "process topic:handled")
    });
    let find = |name: &str| {
        spans.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no `{name}` in {spans:#?}")).clone()
    };
    let id = |s: &serde_json::Value| s["span_id"].as_str().unwrap().to_string();
    let parent = |s: &serde_json::Value| s["parent_span_id"].as_str().unwrap_or_default().to_string();
    let ingress = find("POST /events/{topic}");
    assert_eq!(parent(&ingress), CALLER_SPAN);
    let orders = find("process topic:orders");
    assert_eq!(orders["kind"], "consumer");
    assert_eq!(parent(&orders), id(&ingress), "the delivery continues the publisher's trace");
    let send = find("send handled");
    assert_eq!(send["kind"], "producer");
    assert_eq!(send["attributes"]["messaging.destination.name"], "handled");
    assert_eq!(send["attributes"]["messaging.message.id"], "fwd-o-1");
    let execute = spans.iter().find(|s| s["name"] == "execute" && parent(s) == id(&orders)).unwrap();
    assert_eq!(parent(&send), id(execute), "the publish is a host call of the handler");
    let handled = find("process topic:handled");
    assert_eq!(parent(&handled), id(&send), "the published event carries the producer span's context");
    assert_eq!(handled["status"], "error");
    assert!(handled["status_message"].as_str().unwrap().contains("unknown type `forwarded`"), "{handled}");
    // Both deliveries went through the component's admission, like HTTP requests do.
    let (url, token) = app.local_api();
    let text = client().get(format!("{url}/metrics")).bearer_auth(&token).send().await.unwrap().text().await.unwrap();
    let admitted = parse_metrics(&text)["nimbus_admission_wait_seconds_count{app=\"flow\",component=\"fn\"}"];
    assert_eq!(admitted, 2.0, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_traces_counts_and_logs_its_deployed_apps() {
    let data = tempfile::tempdir().unwrap();
    let platform = common::platform::Platform::start(data.path(), &[]);
    assert!(platform.banner.contains("Telemetry:   metrics at http://127.0.0.1:"), "{}", platform.banner);
    let app = App::new(&common::fixtures_manifest("", ""));
    platform.admin_cli(&["deploy", app.path().to_str().unwrap()]);
    let c = client();
    let trace = "6bf92f3577b34da6a3ce929d0e0e4738";
    let resp = c
        .get(format!("{}/kitchen/log", platform.gateway))
        .header("traceparent", format!("00-{trace}-{CALLER_SPAN}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["traceresponse"].to_str().unwrap().contains(trace));

    let shown = platform.admin_cli(&["traces", "show", trace]);
    assert!(shown.lines().nth(1).unwrap().starts_with("GET /kitchen/... "), "{shown}");
    let logs = platform.admin_cli(&["logs", "kitchen", "--app", "fixtures", "--trace", trace]);
    assert!(logs.contains("kitchen stdout") && logs.contains("hello on stdout"), "{logs}");

    let admin = platform.admin.clone().unwrap();
    let metrics = c.get(format!("{}/metrics", platform.api)).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    let series = r#"nimbus_requests_total{app="fixtures",component="kitchen",kind="http",outcome="2xx"} 1"#;
    assert!(text.lines().any(|l| l == series), "{text}");
    assert_eq!(c.get(format!("{}/metrics", platform.api)).send().await.unwrap().status(), 401);
    // Traces and metrics span every app: an app-scoped token may not read them.
    let created =
        platform.admin_cli(&["tokens", "create", "--name", "v", "--role", "viewer", "--app", "fixtures", "-o", "json"]);
    let scoped: serde_json::Value = serde_json::from_str(&created).unwrap();
    let out = platform.cli(scoped["token"].as_str(), &["traces"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("need a token for every app"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn services_report_their_instances_memory_requests_and_output() {
    let home = tempfile::tempdir().unwrap();
    let app = App::new(
        r#"[app]
name = "svc"

[component.web]
command = ["sh", "-c", "exec python3 -m http.server $PORT --bind 127.0.0.1"]
readiness = { path = "/" }
scale = { min = 1, max = 1 }

[[trigger.http]]
route = "/..."
component = "web"
"#,
    );
    let server = app.up(&[]);
    let resp = client()
        .get(server.url("/"))
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (url, token) = app.local_api();
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let text =
            client().get(format!("{url}/metrics")).bearer_auth(&token).send().await.unwrap().text().await.unwrap();
        let m = parse_metrics(&text);
        if m.get(r#"nimbus_memory_bytes{app="svc",component="web"}"#).is_some_and(|b| *b > 0.0) {
            break m;
        }
        assert!(Instant::now() < deadline, "no memory figure for the service:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let get = |k: &str| m.get(k).copied().unwrap_or_else(|| panic!("no {k}"));
    assert!(get(r#"nimbus_memory_bytes{app="svc",component="web"}"#) > 1e6, "a Python process holds megabytes");
    assert_eq!(get(r#"nimbus_instances{app="svc",component="web"}"#), 1.0);
    assert_eq!(get(r#"nimbus_instantiations_total{app="svc",component="web",start="cold"}"#), 1.0);
    assert_eq!(get(r#"nimbus_requests_total{app="svc",component="web",kind="http",outcome="2xx"}"#), 1.0);
    // The proxy span's context reached the process, and its output is in the logs.
    let shown = ok(app.cli(home.path(), &["traces", "show", TRACE, "-o", "json"]));
    let spans: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let names: Vec<&str> = spans["spans"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["GET /...", "route", "admission", "GET"], "{shown}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = ok(app.cli(home.path(), &["logs", "web"]));
        if logs.contains("web stderr") && logs.contains("\"GET / HTTP/1.1\" 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the service's output is not in the logs: {logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

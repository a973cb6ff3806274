//! Observability end to end through `nimbus up`: a real OTLP collector (http/protobuf and gRPC,
//! decoding the export with opentelemetry-proto) receiving the spans of a request that calls
//! outbound HTTP, `/metrics` parsed after known traffic, logs found by trace id (and followed),
//! and `nimbus traces` over the embedded trace store.
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{App, Server, client, ok};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use prost::Message;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// Spans a collector received, with the `service.name` of their resource.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

fn record(received: &Received, request: ExportTraceServiceRequest) {
    let mut all = received.lock().unwrap();
    for rs in request.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| attr(&r.attributes, "service.name"))
            .map(|v| text(&v))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            all.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
        }
    }
}

/// An OTLP/HTTP collector: `POST /v1/traces` with an `ExportTraceServiceRequest` in protobuf.
async fn http_collector() -> (SocketAddr, Received) {
    let received = Received::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                assert_eq!(headers["content-type"], "application/x-protobuf");
                record(&sink, ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export"));
                ([("content-type", "application/x-protobuf")], ExportTraceServiceResponse::default().encode_to_vec())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

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

/// An OTLP/gRPC collector (tonic, the `TraceService` of opentelemetry-proto).
async fn grpc_collector() -> (SocketAddr, Received) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(Collector(received.clone()));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
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
            received.lock().unwrap().iter().filter(|(_, s)| hex(&s.trace_id) == trace).cloned().collect();
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
    assert!(server.banner.contains(&format!("spans exported over OTLP to http://{collector}")), "{}", server.banner);
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

fn local_api(app: &App) -> (String, String) {
    let api: serde_json::Value =
        serde_json::from_slice(&std::fs::read(app.path().join(".nimbus/api.json")).unwrap()).unwrap();
    (api["url"].as_str().unwrap().to_string(), api["token"].as_str().unwrap().to_string())
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

    let (url, token) = local_api(&app);
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
    let (url, token) = local_api(&app);
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
    let (url, token) = local_api(&app);
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
    let (url, token) = local_api(&app);
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

//! What tracing costs a request on its own thread: the five spans the gateway and executor
//! record for a function call (server with its attributes, route, admission, instantiate,
//! execute), the traceparent handed on, and the trace handed to the pipeline when the last span
//! ends. `cargo bench -p nimbus-observe --bench spans`
#![allow(missing_docs, reason = "criterion_group! defines an undocumented public function")]
use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;

use nimbus_observe::{ComponentTelemetry, HttpRequest, ObserveConfig, Observer, SpanKind, StorePolicy, TraceContext};

struct Request {
    req: http::Request<()>,
    id: http::HeaderValue,
    route: Arc<str>,
    target: Arc<ComponentTelemetry>,
}

fn request(obs: &Observer, incoming: Option<TraceContext>, r: &Request) {
    let mut span = obs.tracer().start("GET", SpanKind::Server, incoming);
    let mut headers = http::HeaderMap::new();
    span.set_http_request(|| HttpRequest::new(&r.req, r.id.clone(), Some(std::net::Ipv4Addr::LOCALHOST.into())));
    if let Some(ctx) = span.context() {
        ctx.inject(&mut headers);
    }
    drop(span.child("route", SpanKind::Internal));
    drop(span.child("admission", SpanKind::Internal));
    let mut inst = span.child("instantiate", SpanKind::Internal);
    inst.set("nimbus.instance.start", "warm");
    drop(inst);
    let mut exec = span.child("execute", SpanKind::Internal);
    exec.set("nimbus.component", "hello");
    drop(exec);
    span.set_http_route(&r.route, &r.target);
    span.set_http_status(200);
    std::hint::black_box(span.context().map(|c| c.traceparent()));
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let config = |per_second| ObserveConfig {
        dir: Some(dir.path().to_path_buf()),
        store_policy: StorePolicy { per_second, ..Default::default() },
        ..Default::default()
    };
    let off = Observer::start(ObserveConfig { traces: false, ..config(0) }).unwrap();
    let budget = Observer::start(config(100)).unwrap();
    let all = Observer::start(config(0)).unwrap();
    let incoming = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let r = Request {
        req: http::Request::get("/hello/world").body(()).unwrap(),
        id: http::HeaderValue::from_static("0f0f0f0f-000000000001"),
        route: Arc::from("/hello/..."),
        target: ComponentTelemetry::detached("hello"),
    };
    let mut g = c.benchmark_group("request_trace");
    g.bench_function("tracing off", |b| b.iter(|| request(&off, incoming, &r)));
    g.bench_function("on, store budget 100/s", |b| b.iter(|| request(&budget, incoming, &r)));
    g.bench_function("on, store every trace", |b| b.iter(|| request(&all, incoming, &r)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

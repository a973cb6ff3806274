//! The observer end to end: spans and logs through the pipeline into the stores, and back.
use std::time::Duration;

use nimbus_observe::{Bounds, LogQuery, ObserveConfig, Observer, SpanKind, StorePolicy, TraceContext, TraceQuery};

fn observer(dir: &std::path::Path) -> Observer {
    Observer::start(ObserveConfig { dir: Some(dir.to_path_buf()), ..Default::default() }).unwrap()
}

#[tokio::test]
async fn a_trace_is_stored_as_a_tree_and_listed_by_route_errors_and_duration() {
    let dir = tempfile::tempdir().unwrap();
    let obs = observer(dir.path());
    let incoming = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let mut root = obs.tracer().start("GET /hello", SpanKind::Server, Some(incoming));
    root.set("http.route", "/hello");
    root.set("http.response.status_code", 200i64);
    let mut child = root.child("kv.get", SpanKind::Client);
    child.set("db.collection.name", "carts");
    let grandchild = child.child("inner", SpanKind::Internal);
    let child_ctx = child.context().unwrap();
    drop(grandchild);
    drop(child);
    drop(root);

    let mut failed = obs.tracer().start("GET /boom", SpanKind::Server, None);
    failed.set("http.route", "/boom");
    std::thread::sleep(Duration::from_millis(30));
    failed.set_error("trap", "unreachable executed");
    drop(failed);

    let unsampled = TraceContext { sampled: false, ..TraceContext::new_root() };
    let skipped = obs.tracer().start("GET /quiet", SpanKind::Server, Some(unsampled));
    assert!(!skipped.is_recording());
    assert_eq!(skipped.context().unwrap().trace_id, unsampled.trace_id, "an unsampled trace is still carried on");
    drop(skipped);
    obs.flush().await;

    let store = obs.traces().unwrap();
    let all = store.list(&TraceQuery::default());
    assert_eq!(all.len(), 2, "{all:?}");
    let hello = store.list(&TraceQuery { route: Some("/hello".into()), ..Default::default() });
    assert_eq!(hello.len(), 1);
    assert_eq!(hello[0].trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!((hello[0].spans, hello[0].status_code, hello[0].error), (3, Some(200), false));
    let errors = store.list(&TraceQuery { errors: true, ..Default::default() });
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].name, "GET /boom");
    let slow = store.list(&TraceQuery { slow_ms: Some(25), ..Default::default() });
    assert_eq!(slow.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["GET /boom"]);

    let spans = store.get("4BF92F3577B34DA6A3CE929D0E0E4736").unwrap();
    assert_eq!(spans.len(), 3);
    assert_eq!(spans[0].name, "GET /hello");
    assert_eq!(spans[0].parent_span_id.as_deref(), Some("00f067aa0ba902b7"), "the caller's span is the parent");
    assert_eq!(spans[1].name, "kv.get");
    assert_eq!(spans[1].parent_span_id.as_deref(), Some(spans[0].span_id.as_str()));
    assert_eq!(spans[1].span_id, child_ctx.span_id.to_string());
    assert_eq!(spans[1].attr("db.collection.name"), Some("carts"));
    assert_eq!(spans[2].parent_span_id.as_deref(), Some(spans[1].span_id.as_str()));
    let boom = store.get(&errors[0].trace_id).unwrap();
    assert_eq!((boom[0].status.as_str(), boom[0].status_message.as_str()), ("error", "unreachable executed"));
    assert_eq!(boom[0].attr("error.type"), Some("trap"));
}

#[tokio::test]
async fn logs_are_kept_per_invocation_and_found_by_trace_component_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let obs = observer(dir.path());
    let mut live = obs.logs().unwrap().follow();
    let a = obs.component("shop", "cart");
    let b = obs.component("shop", "search");
    let span = obs.tracer().start("GET /cart", SpanKind::Server, None);
    a.log(span.context(), Some("req-1"), "stdout", "info", "hello from the cart");
    b.log(
        obs.tracer().start("GET /search", SpanKind::Server, None).context(),
        Some("req-2"),
        "stderr",
        "info",
        "searching",
    );
    obs.flush().await;
    let store = obs.logs().unwrap();
    let by_trace = store.query(&LogQuery { trace_id: span.trace_id(), ..Default::default() });
    assert_eq!(by_trace.len(), 1);
    assert_eq!(by_trace[0].message, "hello from the cart");
    assert_eq!(by_trace[0].request_id.as_deref(), Some("req-1"));
    assert_eq!(by_trace[0].app.as_deref(), Some("shop"));
    let by_component = store.query(&LogQuery { component: Some("search".into()), ..Default::default() });
    assert_eq!(by_component.len(), 1);
    assert_eq!(by_component[0].stream, "stderr");
    let later = store.query(&LogQuery { since_unix_nano: Some(by_trace[0].time_unix_nano + 1), ..Default::default() });
    assert!(later.iter().all(|r| r.message != "hello from the cart"));
    assert_eq!(live.recv().await.unwrap().message, "hello from the cart");
}

#[tokio::test]
async fn the_trace_store_stays_within_its_bound_under_a_flood() {
    let dir = tempfile::tempdir().unwrap();
    let bound = 512 * 1024;
    let config = ObserveConfig {
        dir: Some(dir.path().to_path_buf()),
        trace_store: Bounds { max_bytes: bound, retention: Duration::from_secs(3600) },
        store_policy: StorePolicy { per_second: 0, ..Default::default() },
        ..Default::default()
    };
    let obs = Observer::start(config).unwrap();
    for i in 0..20_000 {
        let mut root = obs.tracer().start("GET /flood", SpanKind::Server, None);
        root.set("http.route", "/flood");
        root.set("n", i64::from(i));
        drop(root.child("execute", SpanKind::Internal));
        if i % 1000 == 0 {
            obs.flush().await;
        }
    }
    obs.flush().await;
    let store = obs.traces().unwrap();
    assert!(store.disk_bytes() <= bound, "{} bytes on disk, bound {bound}", store.disk_bytes());
    let newest = store.list(&TraceQuery { limit: Some(1), ..Default::default() });
    assert_eq!(newest.len(), 1, "the newest traces are kept");
    let kept = store.list(&TraceQuery { limit: Some(usize::MAX), ..Default::default() }).len();
    assert!(kept < 20_000 && kept > 1000, "{kept} traces kept");
}

#[tokio::test]
async fn the_store_keeps_failed_and_slow_traces_and_a_budget_of_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let policy = StorePolicy { slow: Duration::from_millis(20), per_second: 5 };
    let obs = Observer::start(ObserveConfig {
        dir: Some(dir.path().to_path_buf()),
        store_policy: policy,
        ..Default::default()
    })
    .unwrap();
    for _ in 0..50 {
        drop(obs.tracer().start("GET /fast", SpanKind::Server, None));
    }
    let failed = obs.tracer().start("GET /failed", SpanKind::Server, None);
    failed.child("execute", SpanKind::Internal).set_error("trap", "boom");
    drop(failed);
    let slow = obs.tracer().start("GET /slow", SpanKind::Server, None);
    std::thread::sleep(Duration::from_millis(25));
    drop(slow);
    obs.flush().await;
    let kept = obs.traces().unwrap().list(&TraceQuery { limit: Some(1000), ..Default::default() });
    let count = |name: &str| kept.iter().filter(|t| t.name == name).count();
    assert_eq!(count("GET /failed"), 1, "failed traces are always kept");
    assert_eq!(count("GET /slow"), 1, "slow traces are always kept");
    // The 50 fast ones may straddle a second boundary: one or two budgets of 5.
    assert!((5..=10).contains(&count("GET /fast")), "{} fast traces kept", count("GET /fast"));
    let text = obs.metrics().unwrap().render();
    let skipped: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("nimbus_trace_store_skipped_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(skipped as usize + count("GET /fast"), 50);
}

#[test]
fn metrics_render_in_openmetrics_text() {
    let obs = Observer::start(ObserveConfig::default()).unwrap();
    let hello = obs.component("demo", "hello");
    hello.metrics.http_request(200, Duration::from_millis(2));
    hello.metrics.http_request(503, Duration::from_millis(1));
    hello.metrics.error("shed");
    hello.metrics.instantiated(true, Duration::from_micros(900));
    hello.metrics.instantiated(false, Duration::from_micros(9));
    let text = obs.metrics().unwrap().render();
    for line in [
        r#"nimbus_requests_total{app="demo",component="hello",kind="http",outcome="2xx"} 1"#,
        r#"nimbus_requests_total{app="demo",component="hello",kind="http",outcome="5xx"} 1"#,
        r#"nimbus_errors_total{app="demo",component="hello",class="shed"} 1"#,
        r#"nimbus_instantiations_total{app="demo",component="hello",start="cold"} 1"#,
        r#"nimbus_instantiations_total{app="demo",component="hello",start="warm"} 1"#,
        r#"nimbus_request_duration_seconds_count{app="demo",component="hello"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
}

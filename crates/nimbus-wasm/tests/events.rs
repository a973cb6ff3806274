//! `nimbus:events`: the event-handler executor and the publisher capability behind
//! `grants.publish`, against the `events` guest fixture and a real embedded bus.
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use nimbus_bus::{AttributesReader, BusConfig, Embedded, EventBuilder, EventBuilderV10, EventBus, Topic};
use nimbus_manifest::Component;
use nimbus_wasm::{EventError, Function, Invocation, InvokeError, LoadError, Runtime, RuntimeConfig};

fn component(extra: &str) -> Component {
    toml::from_str(&format!("source = \"unused.wasm\"\n{extra}")).unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    bus: Arc<dyn EventBus>,
    rt: Runtime,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn EventBus> = Arc::new(Embedded::open(&dir.path().join("bus.redb"), BusConfig::default()).unwrap());
    let rt =
        Runtime::new(RuntimeConfig { max_instances: 20, ..RuntimeConfig::default() }).unwrap().with_bus(bus.clone());
    Setup { _dir: dir, bus, rt }
}

async fn load(s: &Setup, extra: &str) -> Function {
    let f = s.rt.load("events", Path::new(nimbus_fixtures::EVENTS), &component(extra)).await.unwrap();
    f.bind_app("app");
    f
}

fn event(ty: &str, extensions: &[(&str, &str)]) -> nimbus_bus::Event {
    let mut b = EventBuilderV10::new().id("e-1").source("/test").ty(ty).data("text/plain", "payload");
    for (k, v) in extensions {
        b = b.extension(k, *v);
    }
    b.build().unwrap()
}

async fn handle(f: &Function, e: &nimbus_bus::Event) -> Result<(), EventError> {
    f.handle_event(e, Invocation::new("evt-test", "topic:orders")).await
}

#[tokio::test]
async fn handler_outcomes_map_to_ack_retry_and_dead_letter() {
    let s = setup();
    let f = load(&s, "grants = { publish = [\"out\"] }\nlimits = { timeout_ms = 300 }").await;
    assert!(f.handles_events() && f.handles_http());
    handle(&f, &event("ok", &[])).await.expect("ok acknowledges");
    assert!(matches!(handle(&f, &event("fail", &[])).await, Err(EventError::Failed(m)) if m.contains("on purpose")));
    assert!(matches!(handle(&f, &event("reject", &[])).await, Err(EventError::Rejected(m)) if m.contains("malformed")));
    assert!(matches!(handle(&f, &event("trap", &[])).await, Err(EventError::Invoke(InvokeError::Trap(_)))));
    let looped = handle(&f, &event("loop", &[])).await;
    assert!(matches!(looped, Err(EventError::Invoke(ref e)) if e.is_timeout()), "{looped:?}");
    handle(&f, &event("ok", &[])).await.expect("still handles events after a trap and a timeout");
}

#[tokio::test]
async fn publishing_is_limited_to_granted_topics_and_carries_trace_context() {
    let s = setup();
    let f = load(&s, "grants = { publish = [\"out\"] }").await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let e = event("forward", &[("target", "out"), ("partitionkey", "k1"), ("traceparent", trace)]);
    handle(&f, &e).await.expect("forwarded");
    let out = s.bus.read(&Topic::new("app", "out").unwrap(), 0, 10).await.unwrap();
    assert_eq!(out.len(), 1);
    let fwd = &out[0].event;
    assert_eq!((fwd.id(), fwd.ty(), fwd.source().as_str()), ("fwd-e-1", "forwarded", "/components/events"));
    assert_eq!(fwd.extension("partitionkey").map(ToString::to_string).as_deref(), Some("k1"));
    assert_eq!(
        fwd.extension("traceparent").map(ToString::to_string).as_deref(),
        Some(trace),
        "trace context propagated"
    );
    let denied = handle(&f, &event("forward", &[("target", "secret")])).await;
    assert!(matches!(denied, Err(EventError::Failed(ref m)) if m.contains("not in grants.publish")), "{denied:?}");
    assert!(s.bus.read(&Topic::new("app", "secret").unwrap(), 0, 10).await.unwrap().is_empty());

    // Over HTTP too.
    let post = |topic: &str| {
        http::Request::post(format!("http://localhost/publish/{topic}")).body(Bytes::from_static(b"hi")).unwrap()
    };
    let resp = f.handle(post("out"), Invocation::new("req-1", "/...")).await.unwrap();
    assert_eq!(resp.status(), 202);
    let resp = f.handle(post("secret"), Invocation::new("req-2", "/...")).await.unwrap();
    assert_eq!(resp.status(), 500);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("not in grants.publish"));
    let out = s.bus.read(&Topic::new("app", "out").unwrap(), 0, 10).await.unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].event.ty(), "http");
}

#[tokio::test]
async fn importing_the_publisher_without_a_grant_is_refused_at_load() {
    let s = setup();
    let err = s.rt.load("events", Path::new(nimbus_fixtures::EVENTS), &component("")).await.unwrap_err();
    assert!(matches!(err, LoadError::Link { .. }), "{err}");
    let expected = "imports `nimbus:events/publisher@0.1.0`; add `grants.publish = [\"TOPIC\"]` to component `events`";
    assert!(nimbus_observe::report(&err).contains(expected), "{err}");
}

#[tokio::test]
async fn an_http_only_component_does_not_handle_events() {
    let s = setup();
    let f = s.rt.load("hello", Path::new(nimbus_fixtures::HELLO), &component("")).await.unwrap();
    assert!(f.handles_http() && !f.handles_events());
    let err = handle(&f, &event("ok", &[])).await.unwrap_err();
    assert!(err.to_string().contains("nimbus:events/handler"), "{err}");
}

//! Event bus figures, embedded vs NATS JetStream with the same durability (every acknowledged
//! publish fsynced: group commit in redb; `sync_interval: always` on nats-server), 1 KiB events:
//!
//! 1. durable publish acks/s with 64 concurrent publishers;
//! 2. end-to-end delivery events/s to a wasm handler (the `events` fixture's `nimbus:events/handler`,
//!    a fresh instance per event), 20,000 events published as fast as acknowledged while a
//!    16-member consumer group delivers them;
//! 3. publish → handler latency (p50/p99) at a steady 1,000 events/s.
//!
//! Run with `bench/events.sh` (or `cargo bench -p nimbus-triggers --bench events`); needs a
//! nats-server >= 2.10 on PATH.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nimbus_bus::dispatch::{DeliveryError, Destination, DispatchSpec, Dispatcher, RetryPolicy};
use nimbus_bus::{
    AttributesReader, BusConfig, Embedded, Event, EventBuilder, EventBuilderV10, EventBus, Group, JetStream,
    PublishOptions, Topic,
};
use nimbus_fixtures::nats::NatsServer;
use nimbus_gateway::{Backend, Gateway};

const PUBLISHERS: usize = 64;
const PUBLISH_FOR: Duration = Duration::from_secs(5);
const DELIVER_EVENTS: u64 = 20_000;
const LATENCY_RATE: u64 = 1_000;
const LATENCY_FOR: Duration = Duration::from_secs(5);

fn event(id: String) -> Event {
    EventBuilderV10::new()
        .id(id)
        .source("/bench")
        .ty("ok")
        .data("application/octet-stream", vec![b'x'; 1024])
        .build()
        .unwrap()
}

/// Counts handled events and records publish → handler latency.
struct Timed {
    inner: nimbus_triggers::ComponentDestination,
    published: Mutex<HashMap<String, Instant>>,
    latencies: Mutex<Vec<Duration>>,
    handled: AtomicU64,
}

#[async_trait]
impl Destination for Timed {
    fn name(&self) -> String {
        self.inner.name()
    }

    async fn deliver(&self, event: &Event) -> Result<(), DeliveryError> {
        self.inner.deliver(event).await?;
        if let Some(at) = self.published.lock().unwrap().remove(event.id()) {
            self.latencies.lock().unwrap().push(at.elapsed());
        }
        self.handled.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Timed {
    fn new(gateway: &Gateway) -> Arc<Self> {
        Arc::new(Self {
            inner: nimbus_triggers::ComponentDestination::new(
                Default::default(),
                gateway.target("fn").unwrap(),
                None,
                "topic:bench".into(),
            ),
            published: Mutex::default(),
            latencies: Mutex::default(),
            handled: AtomicU64::new(0),
        })
    }
}

async fn function_gateway() -> Gateway {
    let manifest = format!(
        "[app]\nname = \"bench\"\n[component.fn]\nsource = \"{}\"\ngrants = {{ publish = [\"unused\"] }}\nlimits = {{ max_concurrency = 1000 }}\n",
        nimbus_fixtures::EVENTS
    );
    let loaded = nimbus_manifest::LoadedManifest::parse(manifest, "bench/nimbus.toml".into()).unwrap();
    let runtime =
        nimbus_wasm::Runtime::new(nimbus_wasm::RuntimeConfig { max_instances: 200, ..Default::default() }).unwrap();
    let f = runtime.load("fn", nimbus_fixtures::EVENTS.as_ref(), &loaded.manifest.component["fn"]).await.unwrap();
    // The runtime must outlive the function's engine users: leak it for the benchmark's lifetime.
    Box::leak(Box::new(runtime));
    Gateway::from_manifest(&loaded.manifest, &[("fn".to_string(), Backend::Function(f))].into(), &Default::default())
}

async fn publish_rate(bus: Arc<dyn EventBus>) -> f64 {
    let topic = Topic::new("bench", "bench-publish").unwrap();
    bus.publish(&topic, &event("warm".into()), PublishOptions::default()).await.unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let (bus, topic, count) = (bus.clone(), topic.clone(), count.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while start.elapsed() < PUBLISH_FOR {
                    bus.publish(&topic, &event(format!("{p}-{i}")), PublishOptions::default()).await.unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn spec(topic: &Topic) -> DispatchSpec {
    DispatchSpec {
        topic: topic.clone(),
        group: Group::new("bench", "bench").unwrap(),
        retry: RetryPolicy::default(),
        dead_letter: topic.sibling(&format!("{}.dlq", topic.name())).unwrap(),
        concurrency: 16,
        heartbeat: Duration::from_secs(10),
    }
}

async fn delivery_rate(bus: Arc<dyn EventBus>, gateway: &Gateway) -> f64 {
    let topic = Topic::new("bench", "bench-deliver").unwrap();
    let dest = Timed::new(gateway);
    let dispatcher = Dispatcher::start(bus.clone(), spec(&topic), dest.clone());
    let start = Instant::now();
    let tasks: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let (bus, topic) = (bus.clone(), topic.clone());
            tokio::spawn(async move {
                for i in (p as u64..DELIVER_EVENTS).step_by(PUBLISHERS) {
                    bus.publish(&topic, &event(format!("d-{i}")), PublishOptions::default()).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    while dest.handled.load(Ordering::Relaxed) < DELIVER_EVENTS {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = DELIVER_EVENTS as f64 / start.elapsed().as_secs_f64();
    dispatcher.stop().await;
    rate
}

async fn latency(bus: Arc<dyn EventBus>, gateway: &Gateway) -> (Duration, Duration, usize) {
    let topic = Topic::new("bench", "bench-latency").unwrap();
    let dest = Timed::new(gateway);
    let dispatcher = Dispatcher::start(bus.clone(), spec(&topic), dest.clone());
    let total = LATENCY_RATE * LATENCY_FOR.as_secs();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / LATENCY_RATE));
    let mut inflight = Vec::new();
    for i in 0..total {
        tick.tick().await;
        let (bus, topic, dest) = (bus.clone(), topic.clone(), dest.clone());
        inflight.push(tokio::spawn(async move {
            let id = format!("l-{i}");
            dest.published.lock().unwrap().insert(id.clone(), Instant::now());
            bus.publish(&topic, &event(id), PublishOptions::default()).await.unwrap();
        }));
    }
    for t in inflight {
        t.await.unwrap();
    }
    while dest.handled.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    dispatcher.stop().await;
    let mut l = dest.latencies.lock().unwrap().clone();
    l.sort();
    (l[l.len() / 2], l[l.len() * 99 / 100], l.len())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let gateway = function_gateway().await;
        let config = BusConfig::default();
        let mut rows = Vec::new();
        for backend in ["embedded", "jetstream"] {
            let dir = tempfile::tempdir().unwrap();
            let server = (backend == "jetstream").then(NatsServer::start);
            let open = || async {
                match &server {
                    Some(s) => Arc::new(JetStream::connect(&s.url(), config.clone()).await.unwrap()) as Arc<dyn EventBus>,
                    None => Arc::new(Embedded::open(&dir.path().join("bus.redb"), config.clone()).unwrap()) as Arc<dyn EventBus>,
                }
            };
            let bus = open().await;
            let publish = publish_rate(bus.clone()).await;
            let deliver = delivery_rate(bus.clone(), &gateway).await;
            let (p50, p99, n) = latency(bus, &gateway).await;
            println!(
                "{backend:<10} publish {publish:>8.0} acks/s | deliver to wasm {deliver:>7.0} events/s | publish->handler p50 {:.2} ms p99 {:.2} ms ({n} events at {LATENCY_RATE}/s)",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
            rows.push((publish, deliver, p99));
        }
        println!(
            "embedded / jetstream: publish {:.2}x, delivery {:.2}x, p99 latency {:.2}x",
            rows[0].0 / rows[1].0,
            rows[0].1 / rows[1].1,
            rows[0].2.as_secs_f64() / rows[1].2.as_secs_f64()
        );
    });
}

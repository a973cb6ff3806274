//! Durable workflow runs, end to end through the engine (no HTTP): the `workflow` fixture's
//! 3-step saga with steps that do no I/O of their own (`pure`), journaled with fsync on the
//! embedded store (redb, group commit) and on NATS JetStream KV (`sync_interval: always`).
//!
//! For each backend: latency of one run at a time from start to finished (p50/p99 of 200), runs
//! completed per second with 64 starters for 5 s, and journal bytes per step; on the embedded
//! store also the wake-up lateness of 1,000 runs sleeping 2 s at once (when the step after the
//! timer started, minus when the timer was due). Run with
//! `cargo bench -p nimbus-workflows --bench workflows`.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nimbus_gateway::{Backend, Gateway};
use nimbus_state::KvStore;
use nimbus_state::journal::{EntryKind, Journal};
use nimbus_workflows::{Engine, WorkflowHost};

const STARTERS: usize = 64;
const RUN_FOR: Duration = Duration::from_secs(5);

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

async fn host(kv: Arc<dyn KvStore>) -> (Arc<WorkflowHost>, Gateway) {
    let manifest = format!(
        "[app]\nname = \"bench\"\n[component.order]\nsource = \"{}\"\ngrants = {{ kv = [\"effects\"] }}\n\
         limits = {{ max_concurrency = 1000 }}\n[[trigger.workflow]]\nname = \"order\"\ncomponent = \"order\"\n",
        nimbus_fixtures::WORKFLOW
    );
    let loaded = nimbus_manifest::LoadedManifest::parse(manifest, "bench/nimbus.toml".into()).unwrap();
    let config = nimbus_wasm::RuntimeConfig { max_instances: 1000, ..Default::default() };
    let runtime = nimbus_wasm::Runtime::new(config).unwrap().with_kv(kv.clone());
    let f =
        runtime.load("order", nimbus_fixtures::WORKFLOW.as_ref(), &loaded.manifest.component["order"]).await.unwrap();
    let backends = [("order".to_string(), Backend::Function(f))].into();
    let gateway = Gateway::from_manifest(&loaded.manifest, &backends, &Default::default());
    let engine = Engine::new("bench", kv, nimbus_observe::Tracer::disabled(), None).unwrap();
    let host = WorkflowHost::new(&loaded.manifest, &gateway, "r1", engine).unwrap();
    (host, gateway)
}

async fn run_once(engine: &Arc<Engine>, input: String) -> String {
    let (run, _) = engine.start("r1", "order", input.into_bytes(), None).await.unwrap();
    // Subscribed after the start: a run finishing first is caught by reading it back.
    let finished = engine.finished(&run.id);
    if !engine.journal().run(&run.id).await.unwrap().unwrap().0.status.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(30), finished).await;
    }
    run.id
}

async fn measure(name: &str, kv: Arc<dyn KvStore>) {
    let (host, _gateway) = host(kv).await;
    let engine = host.engine().clone();
    for i in 0..20 {
        run_once(&engine, format!("w{i};pure")).await;
    }
    let mut latencies = Vec::new();
    let mut bytes = Vec::new();
    for i in 0..200 {
        let started = Instant::now();
        let id = run_once(&engine, format!("l{i};pure")).await;
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
        for (entry, _) in engine.journal().entries(&id).await.unwrap() {
            bytes.push(Journal::stored_size(&entry) as f64);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..STARTERS)
        .map(|s| {
            let (engine, done) = (engine.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while start.elapsed() < RUN_FOR {
                    run_once(&engine, format!("t{s}-{i};pure")).await;
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    println!(
        "{name}: 3-step run p50 {:.2} ms, p99 {:.2} ms (one at a time); {rate:.0} runs/s with {STARTERS} starters; {:.0} journal bytes per step",
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        bytes.iter().sum::<f64>() / bytes.len() as f64
    );
}

async fn timers(kv: Arc<dyn KvStore>) {
    let (host, _gateway) = host(kv).await;
    let engine = host.engine().clone();
    let mut waits = Vec::new();
    for i in 0..1000 {
        let (run, _) = engine.start("r1", "order", format!("s{i};pure;sleep=2000").into_bytes(), None).await.unwrap();
        waits.push((run.id.clone(), engine.finished(&run.id)));
    }
    let mut late = Vec::new();
    for (id, finished) in waits {
        if !engine.journal().run(&id).await.unwrap().unwrap().0.status.is_finished() {
            let _ = tokio::time::timeout(Duration::from_secs(60), finished).await;
        }
        let entries = engine.journal().entries(&id).await.unwrap();
        let timer = entries.iter().position(|(e, _)| e.kind == EntryKind::Timer).unwrap();
        let due = entries[timer].0.due_ms.unwrap();
        late.push(entries[timer + 1].0.started_ms.saturating_sub(due) as f64);
    }
    late.sort_by(f64::total_cmp);
    println!(
        "timers: 1,000 runs sleeping 2 s at once: wake-up lateness p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        quantile(&late, 0.5),
        quantile(&late, 0.99),
        late.last().unwrap()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let embedded: Arc<dyn KvStore> =
            Arc::new(nimbus_state::Embedded::open(&dir.path().join("state.redb")).unwrap());
        measure("embedded (redb, fsync)", embedded.clone()).await;
        let nats_server = nimbus_fixtures::nats::NatsServer::start();
        let nats: Arc<dyn KvStore> = Arc::new(nimbus_state::NatsKv::connect(&nats_server.url()).await.unwrap());
        measure("NATS JetStream KV (sync_interval: always)", nats).await;
        let dir = tempfile::tempdir().unwrap();
        timers(Arc::new(nimbus_state::Embedded::open(&dir.path().join("timers.redb")).unwrap())).await;
    });
}

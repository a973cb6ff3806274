//! Actor invocations per second with durable commits (embedded KV, group commit): 64 concurrent
//! callers on one hot key, and on 1,000 keys; each invocation a fresh instance of the `counter`
//! fixture that reads, increments and writes its state, committed before it answers.
//! Run with `cargo bench -p nimbus-actors --bench actors`.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nimbus_actors::ActorHost;
use nimbus_gateway::{Backend, Gateway};

const CALLERS: usize = 64;
const RUN_FOR: Duration = Duration::from_secs(5);

async fn rate(host: Arc<ActorHost>, keys: usize) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (host, done) = (host.clone(), done.clone());
            tokio::spawn(async move {
                while start.elapsed() < RUN_FOR {
                    let key = format!("k{}", fastrand::usize(..keys));
                    host.invoke("counter", &key, "incr", b"1", "bench", &Default::default()).await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let manifest = format!(
            "[app]\nname = \"bench\"\n[component.counter]\nsource = \"{}\"\nlimits = {{ max_concurrency = 1000 }}\n[[trigger.actor]]\ntype = \"counter\"\ncomponent = \"counter\"\n",
            nimbus_fixtures::COUNTER
        );
        let loaded = nimbus_manifest::LoadedManifest::parse(manifest, "bench/nimbus.toml".into()).unwrap();
        let runtime = nimbus_wasm::Runtime::new(nimbus_wasm::RuntimeConfig { max_instances: 200, ..Default::default() }).unwrap();
        let f = runtime.load("counter", nimbus_fixtures::COUNTER.as_ref(), &loaded.manifest.component["counter"]).await.unwrap();
        let gateway = Gateway::from_manifest(&loaded.manifest, &[("counter".to_string(), Backend::Function(f))].into(), &Default::default());
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn nimbus_state::KvStore> = Arc::new(nimbus_state::Embedded::open(&dir.path().join("state.redb")).unwrap());
        let host = ActorHost::new(&loaded.manifest, &gateway, "bench", kv, Default::default(), None).unwrap();
        let hot = rate(host.clone(), 1).await;
        let spread = rate(host, 1000).await;
        println!("actor invocations with durable commit: one hot key {hot:.0}/s; 1,000 keys {spread:.0}/s ({CALLERS} callers)");
    });
}

//! KV figures, embedded vs NATS JetStream KV with the same durability (every acknowledged write
//! fsynced: redb `Durability::Immediate`; nats-server `sync_interval: always`): operations per
//! second for 80 % reads / 20 % writes over 10,000 keys of 100 bytes, 64 concurrent clients.
//! Run with `bench/kv.sh` (or `cargo bench -p nimbus-state --bench kv`); needs nats-server >= 2.10.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nimbus_fixtures::nats::NatsServer;
use nimbus_state::{Bucket, Embedded, KvStore, NatsKv};

const KEYS: usize = 10_000;
const CLIENTS: usize = 64;
const RUN_FOR: Duration = Duration::from_secs(5);

async fn run(kv: Arc<dyn KvStore>) -> (f64, f64) {
    let bucket = Bucket::new("bench", "bench").unwrap();
    let value = Bytes::from(vec![b'v'; 100]);
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(500) {
        kv.set_many(&bucket, chunk.iter().map(|i| (format!("key-{i}"), value.clone())).collect()).await.unwrap();
    }
    let (reads, writes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (kv, bucket, value, reads, writes) =
                (kv.clone(), bucket.clone(), value.clone(), reads.clone(), writes.clone());
            tokio::spawn(async move {
                while start.elapsed() < RUN_FOR {
                    let key = format!("key-{}", fastrand::usize(..KEYS));
                    if fastrand::u8(..100) < 80 {
                        kv.get(&bucket, &key).await.unwrap();
                        reads.fetch_add(1, Ordering::Relaxed);
                    } else {
                        kv.set(&bucket, &key, value.clone(), None).await.unwrap();
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let (r, w) = (reads.load(Ordering::Relaxed) as f64, writes.load(Ordering::Relaxed) as f64);
    ((r + w) / secs, w / secs)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let embedded = run(Arc::new(Embedded::open(&dir.path().join("state.redb")).unwrap())).await;
        println!("embedded   {:>8.0} ops/s ({:>6.0} durable writes/s)", embedded.0, embedded.1);
        let server = NatsServer::start();
        let nats = run(Arc::new(NatsKv::connect(&server.url()).await.unwrap())).await;
        println!("nats kv    {:>8.0} ops/s ({:>6.0} durable writes/s)", nats.0, nats.1);
        println!("embedded / nats kv: {:.2}x", embedded.0 / nats.0);
    });
}

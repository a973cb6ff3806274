//! A 1 GiB object streamed into and out of each blob backend with bounded memory: generated on
//! the fly from a PRNG, hashed on the way in and on the way back, and the process's peak RSS
//! (`VmHWM`, a high-water mark of the whole process, hence this test binary of its own) must not
//! grow by more than a fraction of the object, which buffering it whole would.
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use nimbus_fixtures::nats::NatsServer;
use nimbus_state::{BlobStore, Bucket, ByteStream, EmbeddedBlobs, Limits, NatsBlobs};
use sha2::{Digest, Sha256};

const SIZE: u64 = 1 << 30;
const PIECE: usize = 1 << 20;
/// The most the peak RSS may grow: a quarter of the object.
const BOUND: u64 = 256 << 20;

/// The process's peak resident set, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).expect("VmHWM in kB") * 1024
}

/// `SIZE` pseudo-random bytes in 1 MiB pieces, hashed into `digest` as they are handed out.
fn generated(seed: u64, digest: Arc<Mutex<Sha256>>) -> ByteStream {
    let rng = fastrand::Rng::with_seed(seed);
    Box::pin(futures::stream::unfold((rng, 0u64), move |(mut rng, sent)| {
        let digest = digest.clone();
        async move {
            if sent == SIZE {
                return None;
            }
            let mut piece = vec![0; PIECE];
            rng.fill(&mut piece);
            digest.lock().unwrap().update(&piece);
            Some((Ok(Bytes::from(piece)), (rng, sent + PIECE as u64)))
        }
    }))
}

/// Puts and gets 1 GiB; returns the seconds each took.
async fn round_trip(store: &dyn BlobStore, baseline: u64) -> (f64, f64) {
    let b = Bucket::new("app", "large").unwrap();
    let sent = Arc::new(Mutex::new(Sha256::new()));
    let t = Instant::now();
    let info = store.put(&b, "one-gib", generated(27, sent.clone()), Limits::default()).await.unwrap();
    let put_secs = t.elapsed().as_secs_f64();
    let want = hex::encode(sent.lock().unwrap().clone().finalize());
    assert_eq!((info.size, info.digest.as_str()), (SIZE, want.as_str()), "{} put", store.backend());

    let t = Instant::now();
    let blob = store.get(&b, "one-gib", None).await.unwrap().expect("stored");
    let (mut read, mut hasher) = (0u64, Sha256::new());
    let mut body = blob.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        read += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let get_secs = t.elapsed().as_secs_f64();
    assert_eq!((read, hex::encode(hasher.finalize())), (SIZE, want), "{} get", store.backend());
    let grown = peak_rss().saturating_sub(baseline);
    eprintln!(
        "{}: put {put_secs:.1} s, get {get_secs:.1} s, peak RSS growth so far {} MiB",
        store.backend(),
        grown >> 20
    );
    assert!(grown < BOUND, "{}: the peak RSS grew by {} MiB streaming 1 GiB", store.backend(), grown >> 20);
    assert!(store.delete(&b, "one-gib").await.unwrap());
    (put_secs, get_secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_gib_in_and_out_of_each_backend_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start();
    let baseline = peak_rss();
    let embedded = EmbeddedBlobs::open(&dir.path().join("blobs")).unwrap();
    round_trip(&embedded, baseline).await;
    drop(embedded);
    let nats = NatsBlobs::connect(&server.url()).await.unwrap();
    round_trip(&nats, baseline).await;
}

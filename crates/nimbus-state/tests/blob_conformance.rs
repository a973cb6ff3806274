//! One suite, both blob backends: every case runs against the embedded store (content-addressed
//! files and a redb index in a temp dir) and against the NATS JetStream Object Store on a real
//! `nats-server -js` (free loopback port, `sync_interval: always`).
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use nimbus_fixtures::nats::NatsServer;
use nimbus_state::{BlobError, BlobStore, Bucket, ByteRange, ByteStream, EmbeddedBlobs, Limits, NatsBlobs};

enum Backend {
    Embedded(tempfile::TempDir),
    Nats(NatsServer),
}

impl Backend {
    async fn open(&self) -> Arc<dyn BlobStore> {
        match self {
            Self::Embedded(dir) => Arc::new(EmbeddedBlobs::open(&dir.path().join("blobs")).expect("open")),
            Self::Nats(server) => Arc::new(NatsBlobs::connect(&server.url()).await.expect("connect")),
        }
    }

    /// The content files of the embedded store (none for NATS).
    fn content_files(&self) -> usize {
        match self {
            Self::Embedded(dir) => walk(&dir.path().join("blobs/sha256")),
            Self::Nats(_) => 0,
        }
    }
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).map(|p| if p.is_dir() { walk(&p) } else { 1 }).sum()
}

fn bucket(name: &str) -> Bucket {
    Bucket::new("app", name).expect("bucket")
}

/// `data` as a body of `chunk`-byte pieces.
fn body(data: &[u8], chunk: usize) -> ByteStream {
    let pieces: Vec<std::io::Result<Bytes>> =
        data.chunks(chunk.max(1)).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    Box::pin(futures::stream::iter(pieces))
}

/// `data`, then a failure, as a body.
fn failing(data: &[u8]) -> ByteStream {
    let first = futures::stream::iter(vec![Ok(Bytes::copy_from_slice(data))]);
    Box::pin(first.chain(futures::stream::iter(vec![Err(std::io::Error::other("the client went away"))])))
}

fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| rng.u8(..)).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

async fn read(store: &Arc<dyn BlobStore>, b: &Bucket, key: &str, range: Option<ByteRange>) -> Option<Vec<u8>> {
    let blob = store.get(b, key, range).await.unwrap()?;
    let bytes: Vec<Bytes> = blob.body.try_collect().await.unwrap();
    let out = bytes.concat();
    assert_eq!(out.len() as u64, blob.len, "the stream returns the bytes the blob announces");
    Some(out)
}

macro_rules! both {
    ($($case:ident),* $(,)?) => {
        mod embedded { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $case() { super::$case(super::Backend::Embedded(tempfile::tempdir().unwrap())).await } )* }
        mod nats { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $case() { super::$case(super::Backend::Nats(super::NatsServer::start())).await } )* }
    };
}

both!(
    put_get_head_list_delete,
    byte_ranges,
    overwrite_replaces_the_object,
    identical_content_under_two_keys,
    a_failing_upload_leaves_the_old_object,
    an_abandoned_upload_leaves_nothing,
    size_limit_and_quota_are_refused,
    objects_survive_reopen,
    apps_never_share_buckets,
    bad_keys_are_refused,
);

async fn put_get_head_list_delete(b: Backend) {
    let store = b.open().await;
    let photos = bucket("photos");
    let cat = data(700_000, 1);
    let info = store.put(&photos, "cats/1.jpg", body(&cat, 10_000), Limits::default()).await.unwrap();
    assert_eq!((info.key.as_str(), info.size, info.digest.clone()), ("cats/1.jpg", 700_000, sha256_hex(&cat)));
    assert_eq!(read(&store, &photos, "cats/1.jpg", None).await.unwrap(), cat);
    assert_eq!(store.head(&photos, "cats/1.jpg").await.unwrap(), Some(info.clone()));
    store.put(&photos, "cats/2.jpg", body(b"two", 1), Limits::default()).await.unwrap();
    store.put(&photos, "dogs/1.jpg", body(b"", 1), Limits::default()).await.unwrap();
    assert_eq!(read(&store, &photos, "dogs/1.jpg", None).await.unwrap(), b"", "an empty object");
    assert_eq!(store.used_bytes(&photos).await.unwrap(), 700_003);

    let first = store.list(&photos, "cats/", None, 1).await.unwrap();
    assert_eq!(first.objects, vec![info]);
    let second = store.list(&photos, "cats/", first.cursor.as_deref(), 1).await.unwrap();
    assert_eq!(second.objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), ["cats/2.jpg"]);
    assert_eq!(second.cursor, None);
    assert_eq!(store.list(&photos, "", None, 10).await.unwrap().objects.len(), 3);

    assert!(store.delete(&photos, "cats/1.jpg").await.unwrap());
    assert!(!store.delete(&photos, "cats/1.jpg").await.unwrap(), "deleting again finds nothing");
    assert!(store.get(&photos, "cats/1.jpg", None).await.unwrap().is_none());
    assert!(store.head(&photos, "cats/1.jpg").await.unwrap().is_none());
    assert_eq!(store.list(&photos, "", None, 10).await.unwrap().objects.len(), 2);
    assert_eq!(store.used_bytes(&photos).await.unwrap(), 3);
    assert!(store.list(&bucket("empty"), "", None, 10).await.unwrap().objects.is_empty());
}

async fn byte_ranges(b: Backend) {
    let store = b.open().await;
    let c = bucket("ranges");
    let bytes = data(1_000_000, 2);
    store.put(&c, "k", body(&bytes, 65_536), Limits::default()).await.unwrap();
    let first = read(&store, &c, "k", Some(ByteRange::Inclusive { start: 0, end: 9 })).await.unwrap();
    assert_eq!(first, bytes[..10]);
    let middle = read(&store, &c, "k", Some(ByteRange::Inclusive { start: 300_000, end: 599_999 })).await.unwrap();
    assert_eq!(middle, bytes[300_000..600_000], "a range across chunks");
    let last = read(&store, &c, "k", Some(ByteRange::Last(100))).await.unwrap();
    assert_eq!(last, bytes[999_900..]);
    let tail = read(&store, &c, "k", Some(ByteRange::From(999_999))).await.unwrap();
    assert_eq!(tail, bytes[999_999..]);
    let clamped = read(&store, &c, "k", Some(ByteRange::Inclusive { start: 999_000, end: 5_000_000 })).await.unwrap();
    assert_eq!(clamped, bytes[999_000..], "an end past the object reads to its end");
    let past = store.get(&c, "k", Some(ByteRange::From(1_000_000))).await.unwrap_err();
    assert!(matches!(past, BlobError::RangeNotSatisfiable { start: 1_000_000, size: 1_000_000 }), "{past}");
    assert_eq!(past.code(), "range_not_satisfiable");
    let backwards = store.get(&c, "k", Some(ByteRange::Inclusive { start: 9, end: 3 })).await.unwrap_err();
    assert!(matches!(backwards, BlobError::BadRange { .. }), "{backwards}");
}

async fn overwrite_replaces_the_object(b: Backend) {
    let store = b.open().await;
    let c = bucket("docs");
    store.put(&c, "k", body(&data(300_000, 3), 4096), Limits::default()).await.unwrap();
    let new = data(1000, 4);
    let info = store.put(&c, "k", body(&new, 100), Limits::default()).await.unwrap();
    assert_eq!(read(&store, &c, "k", None).await.unwrap(), new);
    assert_eq!(store.head(&c, "k").await.unwrap(), Some(info));
    assert_eq!(store.used_bytes(&c).await.unwrap(), 1000);
    assert_eq!(b.content_files(), usize::from(matches!(b, Backend::Embedded(_))), "the old content is freed");
}

async fn identical_content_under_two_keys(b: Backend) {
    let store = b.open().await;
    let c = bucket("docs");
    let same = data(200_000, 5);
    let one = store.put(&c, "one", body(&same, 1000), Limits::default()).await.unwrap();
    let two = store.put(&c, "two", body(&same, 7777), Limits::default()).await.unwrap();
    assert_eq!(one.digest, two.digest);
    if let Backend::Embedded(_) = b {
        assert_eq!(b.content_files(), 1, "two keys with the same content share a file");
    }
    store.delete(&c, "one").await.unwrap();
    assert_eq!(read(&store, &c, "two", None).await.unwrap(), same, "deleting one keeps the other");
    store.delete(&c, "two").await.unwrap();
    assert_eq!(b.content_files(), 0, "deleting the last key frees the content");
}

async fn a_failing_upload_leaves_the_old_object(b: Backend) {
    let store = b.open().await;
    let c = bucket("docs");
    let old = data(100_000, 6);
    store.put(&c, "k", body(&old, 1000), Limits::default()).await.unwrap();
    let err = store.put(&c, "k", failing(&data(600_000, 7)), Limits::default()).await.unwrap_err();
    assert!(matches!(err, BlobError::Body(_)), "{err}");
    assert_eq!(read(&store, &c, "k", None).await.unwrap(), old, "the old object is intact");
    let err = store.put(&c, "new", failing(&data(600_000, 8)), Limits::default()).await.unwrap_err();
    assert_eq!(err.code(), "body_failed");
    assert!(store.head(&c, "new").await.unwrap().is_none(), "nothing new");
    assert_eq!(store.list(&c, "", None, 10).await.unwrap().objects.len(), 1);
    assert_eq!(store.used_bytes(&c).await.unwrap(), 100_000);
    assert_eq!(b.content_files(), usize::from(matches!(b, Backend::Embedded(_))));
    match &b {
        Backend::Embedded(dir) => assert_eq!(walk(&dir.path().join("blobs/tmp")), 0, "no temp file is left"),
        Backend::Nats(server) => {
            let messages = stream_messages(server, &c).await;
            assert_eq!(messages, 2, "the old object's chunk and metadata; the failed uploads' chunks are purged");
        }
    }
}

/// The messages in the object store stream of `bucket`.
async fn stream_messages(server: &NatsServer, bucket: &Bucket) -> u64 {
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let stream = js.get_stream(format!("OBJ_nimbus_blob_{}", bucket.storage_name())).await.unwrap();
    stream.cached_info().state.messages
}

/// An upload whose client vanishes (its future dropped mid-body) stores nothing and leaves
/// nothing behind: no temp file; no chunk in the stream once the purge it starts is done.
async fn an_abandoned_upload_leaves_nothing(b: Backend) {
    let store = b.open().await;
    let c = bucket("docs");
    let (polled, waiting) = tokio::sync::oneshot::channel::<()>();
    let mut polled = Some(polled);
    let first = futures::stream::iter(vec![Ok(Bytes::from(data(600_000, 16)))]);
    let then_hang = futures::stream::poll_fn(move |_| {
        if let Some(tx) = polled.take() {
            tx.send(()).unwrap();
        }
        std::task::Poll::<Option<std::io::Result<Bytes>>>::Pending
    });
    let body: ByteStream = Box::pin(first.chain(then_hang));
    let upload = {
        let (store, c) = (store.clone(), c.clone());
        tokio::spawn(async move { store.put(&c, "k", body, Limits::default()).await })
    };
    waiting.await.unwrap();
    upload.abort();
    assert!(upload.await.unwrap_err().is_cancelled());
    assert!(store.head(&c, "k").await.unwrap().is_none());
    match &b {
        Backend::Embedded(dir) => assert_eq!(walk(&dir.path().join("blobs/tmp")), 0, "no temp file is left"),
        Backend::Nats(server) => {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while stream_messages(server, &c).await > 0 {
                assert!(std::time::Instant::now() < deadline, "the abandoned upload's chunks were never purged");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// What a crash can leave in the embedded store (a temp file of an upload, a content file
/// renamed into place whose index commit never happened) is removed when it opens again;
/// stored objects are kept.
#[tokio::test]
async fn embedded_open_sweeps_what_a_crash_left() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs");
    let c = bucket("docs");
    let kept = data(5000, 15);
    {
        let store = EmbeddedBlobs::open(&root).unwrap();
        store.put(&c, "k", body(&kept, 1000), Limits::default()).await.unwrap();
    }
    std::fs::write(root.join("tmp/0123abcd"), b"half an upload").unwrap();
    std::fs::create_dir_all(root.join("sha256/ff")).unwrap();
    std::fs::write(root.join("sha256/ff").join("e".repeat(62)), b"never indexed").unwrap();
    let store: Arc<dyn BlobStore> = Arc::new(EmbeddedBlobs::open(&root).unwrap());
    assert_eq!(walk(&root.join("tmp")), 0);
    assert_eq!(walk(&root.join("sha256")), 1, "only the stored object's content is left");
    assert_eq!(read(&store, &c, "k", None).await.unwrap(), kept);
}

async fn size_limit_and_quota_are_refused(b: Backend) {
    let store = b.open().await;
    let c = bucket("limited");
    let limit = Limits { max_size: Some(1000), quota: None };
    let err = store.put(&c, "big", body(&data(1001, 9), 100), limit).await.unwrap_err();
    assert!(matches!(err, BlobError::TooLarge { limit: 1000 }), "{err}");
    assert!(err.to_string().contains("upload a smaller object"), "says what to do: {err}");
    store.put(&c, "fits", body(&data(1000, 9), 100), limit).await.unwrap();

    // An endless body is stopped as soon as it passes the limit.
    let endless: ByteStream = Box::pin(futures::stream::repeat_with(|| Ok(Bytes::from_static(&[7; 4096]))));
    let err = store.put(&c, "endless", endless, limit).await.unwrap_err();
    assert_eq!(err.code(), "too_large");

    let quota = Limits { max_size: None, quota: Some(3000) };
    store.put(&c, "second", body(&data(2000, 10), 500), quota).await.unwrap();
    let err = store.put(&c, "third", body(&data(1, 11), 1), quota).await.unwrap_err();
    assert!(matches!(err, BlobError::QuotaExceeded { quota: 3000, .. }), "{err}");
    store.put(&c, "second", body(&data(1500, 12), 500), quota).await.expect("replacing counts the new size only");
    store.put(&c, "third", body(&data(500, 13), 500), quota).await.unwrap();
    assert_eq!(store.used_bytes(&c).await.unwrap(), 3000);
    assert!(store.head(&c, "big").await.unwrap().is_none() && store.head(&c, "endless").await.unwrap().is_none());
}

async fn objects_survive_reopen(b: Backend) {
    let c = bucket("kept");
    let bytes = data(400_000, 14);
    let info = {
        let store = b.open().await;
        store.put(&c, "k", body(&bytes, 9000), Limits::default()).await.unwrap()
    };
    let store = b.open().await;
    assert_eq!(store.head(&c, "k").await.unwrap(), Some(info));
    assert_eq!(read(&store, &c, "k", None).await.unwrap(), bytes);
}

async fn apps_never_share_buckets(b: Backend) {
    let store = b.open().await;
    let (a, other) = (Bucket::new("shop", "files").unwrap(), Bucket::new("blog", "files").unwrap());
    store.put(&a, "k", body(b"shop's", 3), Limits::default()).await.unwrap();
    assert!(store.get(&other, "k", None).await.unwrap().is_none());
    assert!(store.list(&other, "", None, 10).await.unwrap().objects.is_empty());
    store.put(&other, "k", body(b"blog's", 3), Limits::default()).await.unwrap();
    assert!(store.delete(&other, "k").await.unwrap());
    assert_eq!(read(&store, &a, "k", None).await.unwrap(), b"shop's");
}

async fn bad_keys_are_refused(b: Backend) {
    let store = b.open().await;
    let c = bucket("keys");
    for key in [String::new(), "x".repeat(513)] {
        let err = store.put(&c, &key, body(b"v", 1), Limits::default()).await.unwrap_err();
        assert_eq!(err.code(), "invalid", "{err}");
    }
    let odd = "a b/ü\u{0}.bin";
    store.put(&c, odd, body(b"odd", 1), Limits::default()).await.unwrap();
    assert_eq!(read(&store, &c, odd, None).await.unwrap(), b"odd");
    assert_eq!(store.list(&c, "a b/", None, 10).await.unwrap().objects[0].key, odd);
}

/// The embedded store is one process's: a second open is refused with what to do.
#[test]
fn embedded_refuses_a_second_open() {
    let dir = tempfile::tempdir().unwrap();
    let _first = EmbeddedBlobs::open(&dir.path().join("blobs")).unwrap();
    let err = EmbeddedBlobs::open(&dir.path().join("blobs")).unwrap_err();
    assert_eq!(err.code(), "unavailable");
    assert!(err.to_string().contains("in use by another nimbus process"), "{err}");
}

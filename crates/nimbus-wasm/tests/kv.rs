//! `wasi:keyvalue` behind `grants.kv`, against the `kv` guest fixture and a real embedded store.
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use nimbus_manifest::Component;
use nimbus_state::{Bucket, Embedded, KvStore};
use nimbus_wasm::{Function, Invocation, LinkError, LoadError, Runtime, RuntimeConfig};

fn component(extra: &str) -> Component {
    toml::from_str(&format!("source = \"unused.wasm\"\n{extra}")).unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    kv: Arc<dyn KvStore>,
    f: Function,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let kv: Arc<dyn KvStore> = Arc::new(Embedded::open(&dir.path().join("state.redb")).unwrap());
    let rt = Runtime::new(RuntimeConfig { max_instances: 20, ..RuntimeConfig::default() }).unwrap().with_kv(kv.clone());
    let f = rt.load("kv", Path::new(nimbus_fixtures::KV), &component("grants = { kv = [\"carts\"] }")).await.unwrap();
    f.bind_app("shop");
    Setup { _dir: dir, kv, f }
}

async fn call(f: &Function, method: &str, path: &str, body: &str) -> (u16, String) {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://localhost{path}"))
        .body(Bytes::from(body.to_string()))
        .unwrap();
    let resp = f.handle(req, Invocation::new("req-kv", "/...")).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_granted_bucket_works_through_wasi_keyvalue() {
    let s = setup().await;
    assert_eq!(call(&s.f, "GET", "/get/carts/u1", "").await, (404, "absent".into()));
    assert_eq!(call(&s.f, "PUT", "/set/carts/u1", "3 items").await.0, 204);
    assert_eq!(call(&s.f, "GET", "/get/carts/u1", "").await, (200, "3 items".into()));
    // The host store sees what the guest wrote, and the other way round.
    let carts = Bucket::new("shop", "carts").unwrap();
    assert_eq!(s.kv.get(&carts, "u1").await.unwrap().unwrap().value, "3 items");
    s.kv.set(&carts, "u2", "from host".into(), None).await.unwrap();
    assert_eq!(call(&s.f, "GET", "/get/carts/u2", "").await, (200, "from host".into()));
    assert_eq!(call(&s.f, "POST", "/incr/carts/n?by=5", "").await, (200, "5".into()));
    assert_eq!(call(&s.f, "POST", "/incr/carts/n?by=2", "").await, (200, "7".into()));
    assert_eq!(call(&s.f, "POST", "/batch/carts", "").await, (200, "a=1,b=2,-".into()));
    assert_eq!(call(&s.f, "DELETE", "/delete/carts/u2", "").await.0, 204);
    let (status, keys) = call(&s.f, "GET", "/list/carts", "").await;
    assert_eq!((status, keys.lines().collect::<Vec<_>>()), (200, vec!["a", "b", "n", "u1"]));
}

#[tokio::test]
async fn listing_follows_cursors_across_pages() {
    let s = setup().await;
    let carts = Bucket::new("shop", "carts").unwrap();
    s.kv.set_many(&carts, (0..2500).map(|i| (format!("k{i:05}"), Bytes::from_static(b"x"))).collect()).await.unwrap();
    let (status, keys) = call(&s.f, "GET", "/list/carts", "").await;
    assert_eq!(status, 200);
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 2500, "three pages of 1000, 1000, 500");
    assert_eq!((keys[0], keys[2499]), ("k00000", "k02499"));
}

#[tokio::test]
async fn other_buckets_are_denied_and_ungranted_imports_refused() {
    let s = setup().await;
    assert_eq!(call(&s.f, "GET", "/get/secrets/k", "").await, (500, "access-denied".into()));
    assert_eq!(call(&s.f, "PUT", "/set/sessions/k", "x").await, (500, "access-denied".into()));
    let rt = Runtime::new(RuntimeConfig { max_instances: 5, ..RuntimeConfig::default() }).unwrap();
    let err = rt.load("kv", Path::new(nimbus_fixtures::KV), &component("")).await.unwrap_err();
    let LoadError::Link { reason: LinkError::NotGranted { ref interface, grant, .. }, .. } = err else {
        panic!("refused for another reason: {err}")
    };
    assert!(interface.starts_with("wasi:keyvalue/") && grant == "kv", "{err}");
    let message = nimbus_observe::report(&err);
    assert!(
        message.contains(&format!("imports `{interface}`; add `grants.kv = [\"BUCKET\"]` to component `kv`")),
        "{message}"
    );
    assert!(err.hint().contains("[component.kv]"), "{}", err.hint());
}

#[tokio::test]
async fn a_bucket_of_the_same_name_in_another_app_is_not_shared() {
    let s = setup().await;
    assert_eq!(call(&s.f, "PUT", "/set/carts/u1", "shop's").await.0, 204);
    let rt =
        Runtime::new(RuntimeConfig { max_instances: 5, ..RuntimeConfig::default() }).unwrap().with_kv(s.kv.clone());
    let grant = component("grants = { kv = [\"carts\"] }");
    let other = rt.load("kv", Path::new(nimbus_fixtures::KV), &grant).await.unwrap();
    other.bind_app("other");
    assert_eq!(call(&other, "GET", "/get/carts/u1", "").await, (404, "absent".into()), "another app's carts");
    assert_eq!(call(&other, "PUT", "/set/carts/u1", "other's").await.0, 204);
    assert_eq!(call(&s.f, "GET", "/get/carts/u1", "").await, (200, "shop's".into()), "not overwritten");
    assert_eq!(s.kv.get(&Bucket::new("other", "carts").unwrap(), "u1").await.unwrap().unwrap().value, "other's");
    // A function bound to no app opens no bucket.
    let unbound = rt.load("kv", Path::new(nimbus_fixtures::KV), &grant).await.unwrap();
    assert_eq!(call(&unbound, "GET", "/get/carts/u1", "").await, (500, "access-denied".into()));
}

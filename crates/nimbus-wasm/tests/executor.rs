//! The executors through the crate's public API, against the guest fixtures.
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use nimbus_manifest::Component;
use nimbus_wasm::{CacheOutcome, Function, Invocation, InvokeError, LoadError, Runtime, RuntimeConfig, WasmKind};

fn component(extra: &str) -> Component {
    toml::from_str(&format!("source = \"unused.wasm\"\n{extra}")).unwrap()
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig { max_instances: 50, ..RuntimeConfig::default() }).unwrap()
}

async fn load(rt: &Runtime, path: &str, extra: &str) -> Function {
    rt.load("kitchen", Path::new(path), &component(extra)).await.unwrap()
}

async fn call(f: &Function, path: &str) -> Result<(u16, String), InvokeError> {
    let req = http::Request::get(format!("http://localhost{path}")).body(Bytes::new()).unwrap();
    let resp = f.handle(req, Invocation::new("req-test", "/...")).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn hello_component_answers() {
    let rt = runtime();
    let f = load(&rt, nimbus_fixtures::HELLO, "").await;
    assert_eq!(f.kind(), WasmKind::Component);
    assert_eq!(call(&f, "/").await.unwrap(), (200, "Hello from Nimbus!\n".into()));
}

#[tokio::test]
async fn env_is_only_what_the_manifest_sets_and_fs_is_closed() {
    let rt = runtime();
    let f = load(&rt, nimbus_fixtures::KITCHEN, "env = { GREETING = \"hi\" }").await;
    assert_eq!(call(&f, "/env?name=GREETING").await.unwrap().1, "hi");
    assert_eq!(call(&f, "/env?name=PATH").await.unwrap().1, "<unset>", "host env must not leak");
    let (status, body) = call(&f, "/fs").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with("fs denied"), "{body}");
}

#[tokio::test]
async fn infinite_loop_is_stopped_at_the_timeout() {
    let rt = runtime();
    let f = load(&rt, nimbus_fixtures::KITCHEN, "limits = { timeout_ms = 200 }").await;
    let started = Instant::now();
    let err = call(&f, "/loop").await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(call(&f, "/echo").await.unwrap().0, 200, "the function still serves");
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_limit() {
    let rt = runtime();
    let f = load(&rt, nimbus_fixtures::KITCHEN, "limits = { memory_mb = 16 }").await;
    let err = call(&f, "/oom").await.unwrap_err();
    assert!(matches!(err, InvokeError::Trap(_)), "{err}");
    assert!(err.to_string().contains("memory"), "{err}");
}

#[tokio::test]
async fn unbounded_recursion_overflows_the_stack() {
    let rt = runtime();
    let f = load(&rt, nimbus_fixtures::KITCHEN, "").await;
    let err = call(&f, "/recurse").await.unwrap_err();
    assert!(err.to_string().contains("stack overflow"), "{err}");
    let err = call(&f, "/recurse-frames").await.unwrap_err();
    assert!(err.to_string().contains("stack in linear memory overflowed"), "{err}");
    assert_eq!(call(&f, "/echo").await.unwrap().0, 200);
}

#[tokio::test]
async fn panic_and_missing_response_are_errors() {
    let rt = runtime();
    let f = load(&rt, nimbus_fixtures::KITCHEN, "").await;
    let err = call(&f, "/panic").await.unwrap_err();
    assert!(err.to_string().contains("unreachable"), "{err}");
    assert!(matches!(call(&f, "/never").await.unwrap_err(), InvokeError::NoResponse));
}

#[tokio::test]
async fn wagi_module_gets_cgi_request_and_answers() {
    let rt = runtime();
    let f =
        rt.load("wagi", Path::new(nimbus_fixtures::WAGI), &component("env = { GREETING = \"hey\" }")).await.unwrap();
    assert_eq!(f.kind(), WasmKind::Module);
    let req = http::Request::post("http://localhost/wagi/hello?x=1").body(Bytes::from("ping")).unwrap();
    let resp = f.handle(req, Invocation::new("req-wagi", "/wagi/...")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-wagi"], "yes");
    let body = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(body.contains("method=POST path=/hello query=x=1"), "{body}");
    assert!(body.contains("greeting=hey"), "{body}");
    assert!(body.contains("body=ping"), "{body}");
    assert!(body.contains("args=[\"wagi\"]"), "{body}");
    let req = http::Request::get("http://localhost/wagi/missing").body(Bytes::new()).unwrap();
    assert_eq!(f.handle(req, Invocation::new("r", "/wagi/...")).await.unwrap().status(), 404);
    let req = http::Request::get("http://localhost/wagi/garbage").body(Bytes::new()).unwrap();
    let err = f.handle(req, Invocation::new("r", "/wagi/...")).await.unwrap_err();
    assert!(matches!(err, InvokeError::Cgi(_)), "{err}");
}

#[tokio::test]
async fn wagi_loops_are_stopped_too() {
    let rt = runtime();
    let f = rt
        .load("loop", Path::new(nimbus_fixtures::WAGI_LOOP), &component("limits = { timeout_ms = 100 }"))
        .await
        .unwrap();
    let err = call(&f, "/").await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
}

#[tokio::test]
async fn files_that_cannot_be_functions_are_refused_clearly() {
    let rt = runtime();
    let c = component("");
    let err = rt.load("x", Path::new(nimbus_fixtures::NOT_WASM), &c).await.unwrap_err();
    assert!(matches!(err, LoadError::NotWasm { .. }), "{err}");
    let err = rt.load("x", Path::new(nimbus_fixtures::NO_START), &c).await.unwrap_err();
    assert!(nimbus_observe::report(&err).contains("without a `_start` export"), "{err}");
    let err = rt.load("x", Path::new(nimbus_fixtures::BAD_IMPORT), &c).await.unwrap_err();
    assert!(nimbus_observe::report(&err).contains("evil"), "{err}");
    let err = rt.load("x", Path::new("/definitely/not/here.wasm"), &c).await.unwrap_err();
    assert!(matches!(err, LoadError::Read { .. }), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.wasm");
    let mut bytes = std::fs::read(nimbus_fixtures::HELLO).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&corrupt, bytes).unwrap();
    let err = rt.load("x", &corrupt, &c).await.unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");

    let small =
        Runtime::new(RuntimeConfig { max_module_bytes: 1024, max_instances: 4, ..RuntimeConfig::default() }).unwrap();
    let err = small.load("x", Path::new(nimbus_fixtures::HELLO), &c).await.unwrap_err();
    assert!(matches!(err, LoadError::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn capabilities_are_linked_only_when_granted() {
    let rt = runtime();
    let caller = Path::new(nimbus_fixtures::CALLER);
    let err = rt.load("caller", caller, &component("")).await.unwrap_err();
    let expected = "imports `nimbus:actor/client@0.1.0`; add `grants.actors = [\"ACTOR_TYPE\"]` to component `caller`";
    assert!(nimbus_observe::report(&err).contains(expected), "{err}");
    let granted = rt.load("caller", caller, &component("grants = { actors = [\"counter\"] }")).await.unwrap();
    let req = http::Request::post("http://localhost/call/counter/k/incr").body(Bytes::new()).unwrap();
    let resp = granted.handle(req, Invocation::new("req-test", "/...")).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "this app serves no actors", "linked, but no actor host bound");
}

#[tokio::test]
async fn compile_cache_survives_a_new_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        RuntimeConfig { cache_dir: Some(dir.path().to_path_buf()), max_instances: 8, ..RuntimeConfig::default() };
    let c = component("");
    let first = Runtime::new(config.clone()).unwrap();
    let (_, outcome) = first.load_with_outcome("hello", Path::new(nimbus_fixtures::HELLO), &c).await.unwrap();
    assert!(matches!(outcome, CacheOutcome::Compiled(_)), "{outcome:?}");
    drop(first);
    let second = Runtime::new(config).unwrap();
    let (f, outcome) = second.load_with_outcome("hello", Path::new(nimbus_fixtures::HELLO), &c).await.unwrap();
    assert!(matches!(outcome, CacheOutcome::Hit(_)), "{outcome:?}");
    assert_eq!(call(&f, "/").await.unwrap().0, 200);
    // Compiled code is mapped from the cache file: corrupt entries only once nothing maps them.
    drop((f, second));
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let third = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        max_instances: 8,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let (_, outcome) = third.load_with_outcome("hello", Path::new(nimbus_fixtures::HELLO), &c).await.unwrap();
    assert!(matches!(outcome, CacheOutcome::Compiled(_)), "a corrupt entry is recompiled: {outcome:?}");
}

/// A plain HTTP/1.1 server on loopback that answers every request with `upstream`.
async fn upstream() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ =
                    conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream").await;
            });
        }
    });
    port
}

#[tokio::test]
async fn outbound_http_needs_a_grant() {
    let port = upstream().await;
    let rt = runtime();
    let url = format!("/outbound?url=http://127.0.0.1:{port}/");

    let granted =
        load(&rt, nimbus_fixtures::KITCHEN, &format!("grants = {{ outbound = [\"http://127.0.0.1:{port}\"] }}")).await;
    assert_eq!(call(&granted, &url).await.unwrap(), (200, "upstream status 200\nupstream".into()));

    let ungranted = load(&rt, nimbus_fixtures::KITCHEN, "").await;
    let (status, body) = call(&ungranted, &url).await.unwrap();
    assert_eq!(status, 502);
    assert!(body.contains("HttpRequestDenied"), "the guest sees the refusal: {body}");

    let other_port = load(&rt, nimbus_fixtures::KITCHEN, "grants = { outbound = [\"http://127.0.0.1:1\"] }").await;
    let (_, body) = call(&other_port, &url).await.unwrap();
    assert!(body.contains("HttpRequestDenied"), "{body}");
}

//! In-process cost of one request to the hello component: a fresh instance from the
//! pre-instantiated component, the handler call, and the response body collected.
//!
//! Two measurements side by side:
//! - `nimbus`: `Function::handle`, everything Nimbus does per request (store limits, epoch
//!   deadline, guest log capture, outbound policy, env);
//! - `wasmtime-wasi-http`: the bare baseline from the `wasmtime_wasi_http` documentation, with the
//!   same engine settings, i.e. what `wasmtime serve` does per request.
#![allow(missing_docs, reason = "criterion_group! defines an undocumented public function")]
use std::path::Path;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use nimbus_wasm::{Invocation, Runtime, RuntimeConfig};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

fn nimbus(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let runtime = Runtime::new(RuntimeConfig { max_instances: 100, ..RuntimeConfig::default() }).unwrap();
    let component: nimbus_manifest::Component = toml::from_str("source = \"hello.wasm\"").unwrap();
    let function = rt.block_on(runtime.load("hello", Path::new(nimbus_fixtures::HELLO), &component)).unwrap();
    c.bench_function("instantiate+handle/nimbus", |b| {
        b.to_async(rt).iter(|| async {
            let req = http::Request::get("http://localhost/").body(Bytes::new()).unwrap();
            let resp = function.handle(req, Invocation::new("bench", "/...")).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body.len(), 19);
        })
    });
}

struct Bare {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for Bare {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: Default::default() }
    }
}

fn baseline(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::pooling()).memory_init_cow(true);
    let engine = Engine::new(&config).unwrap();
    let component = Component::from_file(&engine, nimbus_fixtures::HELLO).unwrap();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).unwrap();
    let pre = ProxyPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    c.bench_function("instantiate+handle/wasmtime-wasi-http", |b| {
        b.to_async(rt).iter(|| async {
            let mut store = Store::new(
                &engine,
                Bare { wasi: WasiCtx::builder().build(), http: WasiHttpCtx::new(), table: ResourceTable::new() },
            );
            let req = http::Request::get("http://localhost/")
                .body(Empty::<Bytes>::new().map_err(|never| -> wasmtime_wasi_http::Error { match never {} }))
                .unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let req = store.data_mut().http().new_incoming_request(Scheme::Http, req).unwrap();
            let out = store.data_mut().http().new_response_outparam(tx).unwrap();
            let pre = pre.clone();
            let task = tokio::spawn(async move {
                let proxy = pre.instantiate_async(&mut store).await.unwrap();
                proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await.unwrap();
            });
            let resp = rx.await.unwrap().unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body.len(), 19);
            task.await.unwrap();
        })
    });
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    nimbus(c, &rt);
    baseline(c, &rt);
}

criterion_group!(instantiate, benches);
criterion_main!(instantiate);

//! Paths to the guest fixtures used by Nimbus's tests and benchmarks.
//!
//! This crate owns nothing at run time: its build script compiles the small Rust guest crates in
//! `tests/guests` (components for `wasm32-wasip2`, WAGI modules for `wasm32-wasip1`) and the `.wat`
//! edge cases, and this library hands out their paths. It is a dev-dependency only.
//!
//! ```
//! let hello = nimbus_fixtures::HELLO;
//! assert!(std::path::Path::new(hello).exists());
//! ```

/// `wasi:http` component answering every request with `Hello from Nimbus!`.
pub const HELLO: &str = concat!(env!("OUT_DIR"), "/hello.wasm");
/// `wasi:http` component with one path per behaviour (echo, log, env, outbound, loop, oom, ...).
pub const KITCHEN: &str = concat!(env!("OUT_DIR"), "/kitchen.wasm");
/// `nimbus:events/handler` component (also `wasi:http`) that publishes through
/// `nimbus:events/publisher`; its behaviour follows the event type (`ok`, `fail`, `reject`,
/// `trap`, `loop`, `forward`), and `POST /publish/TOPIC` publishes the body.
pub const EVENTS: &str = concat!(env!("OUT_DIR"), "/events.wasm");
/// `wasi:http` component using `wasi:keyvalue` (store, atomics, batch) over HTTP paths
/// (`/get/BUCKET/KEY`, `/set/...`, `/incr/...?by=N`, `/delete/...`, `/list/BUCKET`, `/batch/BUCKET`).
pub const KV: &str = concat!(env!("OUT_DIR"), "/kv.wasm");
/// `wasi:http` component reading secrets through `wasi:config/store` (`GET /secret/NAME`: the
/// value, 404 `absent`, or 500 with the error; `GET /all`: the names `get-all` returns).
pub const SECRETS: &str = concat!(env!("OUT_DIR"), "/secrets.wasm");
/// `nimbus:actor/handler` counter actor (`incr`, `get`, and `fail`/`trap`, whose writes must roll back).
pub const COUNTER: &str = concat!(env!("OUT_DIR"), "/counter.wasm");
/// `wasi:http` component calling actors through `nimbus:actor/client` (`POST /call/TYPE/KEY/METHOD`).
pub const CALLER: &str = concat!(env!("OUT_DIR"), "/caller.wasm");
/// `nimbus:workflow` order saga (reserve → charge → ship, undone by release and refund) whose
/// behaviour follows flags in its input (`ID;sleep=MS;signal;fail-ship;...`, see
/// `tests/guests/workflow`); its steps record their effects in KV bucket `effects`.
pub const WORKFLOW: &str = concat!(env!("OUT_DIR"), "/workflow.wasm");
/// WASI preview1 command module speaking CGI, for the WAGI executor.
pub const WAGI: &str = concat!(env!("OUT_DIR"), "/wagi.wasm");
/// Preview1 command module whose `_start` never returns.
pub const WAGI_LOOP: &str = concat!(env!("OUT_DIR"), "/loop.wasm");
/// Core module without a `_start` export.
pub const NO_START: &str = concat!(env!("OUT_DIR"), "/no-start.wasm");
/// Core module importing a function that is never granted.
pub const BAD_IMPORT: &str = concat!(env!("OUT_DIR"), "/bad-import.wasm");
/// A text file that is neither a component nor a core module.
pub const NOT_WASM: &str = concat!(env!("OUT_DIR"), "/not-wasm.txt");

pub mod nats;

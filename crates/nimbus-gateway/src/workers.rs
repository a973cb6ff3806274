//! Connection threads: one single-threaded tokio runtime per core, each serving the connections
//! handed to it from accept to close (nginx's worker model).
//!
//! A connection, its requests, and the keep-alive connections a proxied request takes to a
//! service (pooled per thread, see `nimbus-services`) all stay on one thread: a response coming
//! back from a service wakes a task on the same thread instead of another core, which on a
//! loaded host saves more CPU than anything else on the proxy path. Guest code cannot monopolise
//! a thread: wasm yields every epoch tick.
//!
//! The threads live as long as the process (like tokio's own blocking pool), so that the tasks a
//! request starts on them — an actor's state commit, a WebSocket splice, the reader of a new
//! connection to a service — run to their end even after the listener that accepted the request
//! has shut down.
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;

/// The connection threads, started on first use: as many as the cores this process may use.
fn threads() -> &'static [Handle] {
    static THREADS: OnceLock<Vec<Handle>> = OnceLock::new();
    THREADS.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        (0..n).map(start).collect()
    })
}

fn start(i: usize) -> Handle {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime for a connection thread");
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(format!("nimbus-conn-{i}"))
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .expect("a connection thread");
    handle
}

/// The next connection thread, round-robin.
pub(crate) fn next() -> &'static Handle {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let threads = threads();
    &threads[NEXT.fetch_add(1, Ordering::Relaxed) % threads.len()]
}

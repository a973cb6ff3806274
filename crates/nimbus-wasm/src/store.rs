//! Per-invocation store set-up shared by both executors: memory limits and the epoch deadline.
use std::time::{Duration, Instant};

use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline};

/// Store data of an invocation: whatever the executor needs, plus the memory limiter.
pub(crate) trait InvocationState: Send + 'static {
    fn store_limits(&mut self) -> &mut StoreLimits;
}

/// Limits applied to every store an invocation creates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InvocationLimits {
    pub(crate) memory_bytes: usize,
    pub(crate) timeout: Duration,
}

impl InvocationLimits {
    pub(crate) fn store_limits(&self) -> StoreLimits {
        StoreLimitsBuilder::new().memory_size(self.memory_bytes).trap_on_grow_failure(true).build()
    }

    /// A store for one invocation: memory limited, and stopped at the returned deadline.
    pub(crate) fn new_store<T: InvocationState>(&self, engine: &Engine, data: T) -> (Store<T>, Instant) {
        let deadline = Instant::now() + self.timeout;
        let mut store = Store::new(engine, data);
        store.limiter(|s| s.store_limits());
        self.arm(&mut store, deadline);
        (store, deadline)
    }

    /// Stops the guest at `deadline` and, until then, yields to other requests every epoch tick
    /// so a busy guest never monopolises a worker thread.
    fn arm<T>(&self, store: &mut Store<T>, deadline: Instant) {
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline { Err(Trap::Interrupt.into()) } else { Ok(UpdateDeadline::Yield(1)) }
        });
    }
}

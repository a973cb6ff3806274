//! Per-invocation store set-up shared by both executors: memory limits and the epoch deadline.
use std::time::{Duration, Instant};

use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline};

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

    /// Stops the guest at `deadline` and, until then, yields to other requests every epoch tick
    /// so a busy guest never monopolises a worker thread.
    pub(crate) fn arm<T>(&self, store: &mut Store<T>, deadline: Instant) {
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline { Err(Trap::Interrupt.into()) } else { Ok(UpdateDeadline::Yield(1)) }
        });
    }
}

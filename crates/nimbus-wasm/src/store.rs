//! Per-invocation store set-up shared by both executors: memory limits, instance metering and
//! the epoch deadline.
use std::sync::Arc;
use std::time::{Duration, Instant};

use nimbus_observe::ComponentTelemetry;
use wasmtime::{Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline};

/// Store data of an invocation: whatever the executor needs, plus the memory limiter.
pub(crate) trait InvocationState: Send + 'static {
    fn store_limits(&mut self) -> &mut MeteredLimits;
}

/// Limits applied to every store an invocation creates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InvocationLimits {
    pub(crate) memory_bytes: usize,
    pub(crate) timeout: Duration,
}

impl InvocationLimits {
    /// The limiter of one instance, counted in `telemetry`'s `instances` and `memory` gauges
    /// while it lives.
    pub(crate) fn store_limits(&self, telemetry: Arc<ComponentTelemetry>) -> MeteredLimits {
        let limits = StoreLimitsBuilder::new().memory_size(self.memory_bytes).trap_on_grow_failure(true).build();
        telemetry.metrics.instances.inc();
        MeteredLimits { limits, telemetry, memory: 0, born: Instant::now() }
    }

    /// A store for one invocation: memory limited, and stopped at the returned deadline.
    pub(crate) fn new_store<T: InvocationState>(&self, engine: &Engine, data: T) -> (Store<T>, Instant) {
        let deadline = Instant::now() + self.timeout;
        let mut store = Store::new(engine, data);
        store.limiter(|s| s.store_limits());
        self.arm(&mut store, deadline);
        (store, deadline)
    }

    /// A store whose guest may run for the timeout in all, not counting the time `elsewhere`
    /// says it spent outside the guest (a workflow's `run`, waiting on its steps); yields to
    /// other requests every epoch tick like [`InvocationLimits::new_store`]'s.
    pub(crate) fn new_guest_time_store<T: InvocationState>(
        &self,
        engine: &Engine,
        data: T,
        elsewhere: fn(&T) -> Duration,
    ) -> Store<T> {
        let (started, timeout) = (Instant::now(), self.timeout);
        let mut store = Store::new(engine, data);
        store.limiter(|s| s.store_limits());
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |ctx| {
            let guest_time = started.elapsed().saturating_sub(elsewhere(ctx.data()));
            if guest_time >= timeout { Err(Trap::Interrupt.into()) } else { Ok(UpdateDeadline::Yield(1)) }
        });
        store
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

/// The store's limits, and the instance's share of its component's gauges.
pub(crate) struct MeteredLimits {
    limits: StoreLimits,
    telemetry: Arc<ComponentTelemetry>,
    /// Linear memory this instance holds.
    memory: usize,
    /// When the instance was created: its lifetime is metered when it ends.
    born: Instant,
}

impl ResourceLimiter for MeteredLimits {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            let grown = desired.saturating_sub(current);
            self.memory += grown;
            self.telemetry.metrics.memory.inc_by(i64::try_from(grown).unwrap_or(i64::MAX));
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl Drop for MeteredLimits {
    fn drop(&mut self) {
        let m = &self.telemetry.metrics;
        m.instances.dec();
        m.memory.dec_by(i64::try_from(self.memory).unwrap_or(i64::MAX));
        m.memory_peak(self.memory);
        // Memory only grows: what it holds at the end is its peak.
        self.telemetry.usage.instance_ended(self.born.elapsed(), self.memory);
    }
}

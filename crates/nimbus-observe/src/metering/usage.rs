//! What one component used: the measures, their in-memory accumulators and the handle request
//! paths record into ([`UsageMeter`]).
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::Gate;

/// One measure of usage. Stored as integers in the unit its name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Function instances run (one per request, event delivery, actor call or workflow step)
    /// and requests a service answered.
    Invocations,
    /// Lifetime of function instances, from creation to the end of the response, in µs.
    WallMicros,
    /// Time functions spent on a worker thread (every poll of the invocation: the guest and
    /// the host calls it made inline), and CPU time of services' processes, in µs.
    CpuMicros,
    /// Memory × time, in KiB·ms: a function instance's peak linear memory × its lifetime; a
    /// service instance's resident memory sampled every second × the second.
    MemoryKibMillis,
    /// Lifetime of service instances (processes), in ms.
    InstanceMillis,
    /// Bytes of outbound HTTP calls, both directions (request bodies sent, response bodies
    /// received).
    EgressBytes,
    /// Events components published.
    EventsPublished,
    /// KV operations components made (each key of a batch counts).
    KvOperations,
    /// Bytes KV buckets hold × time, in KiB·s (sampled every minute).
    StoredKibSeconds,
}

/// How many measures there are.
pub const MEASURES: usize = 9;

impl Measure {
    /// Every measure, in storage order (append only: the on-disk format depends on it).
    pub const ALL: [Measure; MEASURES] = [
        Self::Invocations,
        Self::WallMicros,
        Self::CpuMicros,
        Self::MemoryKibMillis,
        Self::InstanceMillis,
        Self::EgressBytes,
        Self::EventsPublished,
        Self::KvOperations,
        Self::StoredKibSeconds,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Usage totals: one integer per [`Measure`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage([u64; MEASURES]);

/// The on-disk format of a [`Usage`]: a version byte, then one little-endian u64 per measure.
const FORMAT: u8 = 1;

impl Usage {
    /// The total of `m`.
    pub fn get(&self, m: Measure) -> u64 {
        self.0[m.index()]
    }

    /// Adds `n` to `m`.
    pub fn add(&mut self, m: Measure, n: u64) {
        self.0[m.index()] = self.0[m.index()].saturating_add(n);
    }

    /// Adds every measure of `other`.
    pub fn merge(&mut self, other: &Usage) {
        for m in Measure::ALL {
            self.add(m, other.get(m));
        }
    }

    /// Whether nothing was used.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|n| *n == 0)
    }

    /// Invocations.
    pub fn invocations(&self) -> u64 {
        self.get(Measure::Invocations)
    }

    /// Wall time of function instances, in seconds.
    pub fn wall_seconds(&self) -> f64 {
        self.get(Measure::WallMicros) as f64 / 1e6
    }

    /// CPU time, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.get(Measure::CpuMicros) as f64 / 1e6
    }

    /// Memory-time in GiB-seconds (the "GB-s" of serverless price lists, 1 GB = 1024 MB).
    pub fn memory_gib_seconds(&self) -> f64 {
        self.get(Measure::MemoryKibMillis) as f64 / (1024.0 * 1024.0 * 1000.0)
    }

    /// Lifetime of service instances, in seconds.
    pub fn instance_seconds(&self) -> f64 {
        self.get(Measure::InstanceMillis) as f64 / 1e3
    }

    /// Outbound bytes.
    pub fn egress_bytes(&self) -> u64 {
        self.get(Measure::EgressBytes)
    }

    /// Events published.
    pub fn events_published(&self) -> u64 {
        self.get(Measure::EventsPublished)
    }

    /// KV operations.
    pub fn kv_operations(&self) -> u64 {
        self.get(Measure::KvOperations)
    }

    /// KV storage in GiB-months (a month is 30 days).
    pub fn stored_gib_months(&self) -> f64 {
        self.get(Measure::StoredKibSeconds) as f64 / (1024.0 * 1024.0 * 30.0 * 86_400.0)
    }

    /// The stored form.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 8 * MEASURES);
        out.push(FORMAT);
        for n in self.0 {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out
    }

    /// Reads the stored form; measures a newer writer added are ignored, measures an older one
    /// lacked are zero. `None` for a version this build does not know.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let (&version, rest) = bytes.split_first()?;
        if version != FORMAT {
            return None;
        }
        let mut usage = Usage::default();
        for (slot, chunk) in usage.0.iter_mut().zip(rest.chunks_exact(8)) {
            *slot = u64::from_le_bytes(chunk.try_into().ok()?);
        }
        Some(usage)
    }
}

/// Accumulators of one component of one revision, taken at each flush: one set per shard, each
/// on cache lines of its own, a thread adding to its shard's, so that instances of a component on
/// different cores do not pass one cache line back and forth.
#[derive(Debug)]
pub(crate) struct Cell(Box<[Shard]>);

/// Shards per cell (threads share one when there are more).
const SHARDS: usize = 8;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard([AtomicU64; MEASURES]);

impl Default for Cell {
    fn default() -> Self {
        Self((0..SHARDS).map(|_| Shard::default()).collect())
    }
}

/// The shard of the calling thread.
fn shard() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

impl Cell {
    fn add(&self, m: Measure, n: u64) {
        if n > 0 {
            self.0[shard()].0[m.index()].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// What was recorded since the last take.
    pub(crate) fn take(&self) -> Usage {
        let mut usage = Usage::default();
        for shard in &self.0 {
            for m in Measure::ALL {
                usage.add(m, shard.0[m.index()].swap(0, Ordering::Relaxed));
            }
        }
        usage
    }

    /// Gives back what a failed flush took, to be written by the next one.
    pub(crate) fn give_back(&self, usage: &Usage) {
        for m in Measure::ALL {
            self.add(m, usage.get(m));
        }
    }
}

/// A component's accumulators and the gate of its app.
#[derive(Debug)]
pub(crate) struct Metered {
    pub(crate) cell: Cell,
    pub(crate) gate: Arc<Gate>,
}

/// What request paths record a component's usage into: atomics only, written to the usage
/// store by the next flush. A meter of an observer without metering records nothing.
#[derive(Debug, Clone, Default)]
pub struct UsageMeter(Option<Arc<Metered>>);

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl UsageMeter {
    pub(crate) fn new(metered: Arc<Metered>) -> Self {
        Self(Some(metered))
    }

    fn add(&self, m: Measure, n: u64) {
        if let Some(metered) = &self.0 {
            metered.cell.add(m, n);
        }
    }

    /// A function instance ended after living `wall` with `peak_bytes` of linear memory.
    pub fn instance_ended(&self, wall: Duration, peak_bytes: usize) {
        if let Some(metered) = &self.0 {
            let cell = &metered.cell;
            cell.add(Measure::Invocations, 1);
            cell.add(Measure::WallMicros, micros(wall));
            let kib = (peak_bytes as u64) >> 10;
            let millis = u64::try_from(wall.as_millis()).unwrap_or(u64::MAX);
            // Sub-millisecond instances still hold their memory: counted in µs, then scaled.
            let kib_millis =
                if millis == 0 { kib.saturating_mul(micros(wall)) / 1000 } else { kib.saturating_mul(millis) };
            cell.add(Measure::MemoryKibMillis, kib_millis);
        }
    }

    /// `busy` of CPU time.
    pub fn cpu(&self, busy: Duration) {
        self.add(Measure::CpuMicros, micros(busy));
    }

    /// A service answered a request.
    pub fn service_request(&self) {
        self.add(Measure::Invocations, 1);
    }

    /// A service instance lived `elapsed` more, with `resident_bytes` of memory, and used `cpu`.
    pub fn service_sample(&self, elapsed: Duration, resident_bytes: u64, cpu: Duration) {
        if let Some(metered) = &self.0 {
            let cell = &metered.cell;
            let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
            cell.add(Measure::InstanceMillis, millis);
            cell.add(Measure::MemoryKibMillis, (resident_bytes >> 10).saturating_mul(millis));
            cell.add(Measure::CpuMicros, micros(cpu));
        }
    }

    /// `n` bytes went over an outbound call.
    pub fn egress(&self, n: u64) {
        self.add(Measure::EgressBytes, n);
    }

    /// An event was published.
    pub fn event_published(&self) {
        self.add(Measure::EventsPublished, 1);
    }

    /// `n` KV operations were made.
    pub fn kv_operations(&self, n: u64) {
        self.add(Measure::KvOperations, n);
    }

    /// A bucket held `bytes` for `elapsed`.
    pub fn kv_stored(&self, bytes: u64, elapsed: Duration) {
        let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self.add(Measure::StoredKibSeconds, (bytes >> 10).saturating_mul(millis) / 1000);
    }

    /// Why new invocations of this component's app are refused (its budget's hard limit), if
    /// they are.
    pub fn throttled(&self) -> Option<Arc<str>> {
        self.0.as_ref().and_then(|m| m.gate.closed())
    }
}

pin_project_lite::pin_project! {
    /// A future whose time on a worker thread (the sum of its polls) is recorded as CPU time of
    /// a meter when it is dropped, finished or not. It borrows the meter (a handle of the
    /// invocation's own, not a clone of the component's shared one).
    pub struct Busy<'m, F> {
        #[pin]
        inner: F,
        spent: Duration,
        meter: &'m UsageMeter,
    }

    impl<'m, F> PinnedDrop for Busy<'m, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            this.meter.cpu(*this.spent);
        }
    }
}

impl<'m, F> Busy<'m, F> {
    /// Counts `inner`'s polls into `meter`.
    pub fn new(inner: F, meter: &'m UsageMeter) -> Self {
        Self { inner, spent: Duration::ZERO, meter }
    }
}

impl<F: Future> Future for Busy<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.meter.0.is_none() {
            return this.inner.poll(cx);
        }
        let began = Instant::now();
        let polled = this.inner.poll(cx);
        *this.spent += began.elapsed();
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_form_round_trips_and_tolerates_other_lengths() {
        let mut u = Usage::default();
        for (i, m) in Measure::ALL.into_iter().enumerate() {
            u.add(m, i as u64 * 1000 + 7);
        }
        assert_eq!(Usage::decode(&u.encode()), Some(u));
        let mut longer = u.encode();
        longer.extend_from_slice(&42u64.to_le_bytes());
        assert_eq!(Usage::decode(&longer), Some(u), "a measure a newer build added is ignored");
        let shorter = &u.encode()[..1 + 8 * 3];
        assert_eq!(Usage::decode(shorter).unwrap().get(Measure::MemoryKibMillis), 0);
        assert_eq!(Usage::decode(&[9, 0, 0]), None, "an unknown version is not read");
    }

    #[test]
    fn memory_time_is_peak_times_lifetime() {
        let metered = Arc::new(Metered { cell: Cell::default(), gate: Arc::default() });
        let meter = UsageMeter::new(metered.clone());
        meter.instance_ended(Duration::from_millis(250), 64 << 20);
        meter.instance_ended(Duration::from_micros(400), 1 << 20);
        let u = metered.cell.take();
        assert_eq!(u.invocations(), 2);
        assert_eq!(u.get(Measure::MemoryKibMillis), (64 << 10) * 250 + 1024 * 400 / 1000);
        assert!((u.memory_gib_seconds() - (0.0625 * 0.25 + 0.0004 / 1024.0)).abs() < 1e-6);
        assert!(metered.cell.take().is_empty(), "a take empties the cell");
    }

    #[test]
    fn busy_counts_polls_not_waits() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let metered = Arc::new(Metered { cell: Cell::default(), gate: Arc::default() });
        rt.block_on(Busy::new(
            async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let t = Instant::now();
                while t.elapsed() < Duration::from_millis(30) {
                    std::hint::spin_loop();
                }
            },
            &UsageMeter::new(metered.clone()),
        ));
        let cpu = metered.cell.take().cpu_seconds();
        assert!((0.03..0.2).contains(&cpu), "30 ms of spinning after 200 ms of sleep: {cpu}");
    }
}

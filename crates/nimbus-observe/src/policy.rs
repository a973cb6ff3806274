//! Which finished traces the embedded store keeps: every failed trace, every slow one, and of
//! the rest at most a budget per second (AWS X-Ray's reservoir idea) — so under load the store
//! holds the traces worth reading instead of the last second of identical successes, and the
//! cost of writing them stays bounded. Spans exported over OTLP are not affected (the
//! collector samples as it likes).
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::Status;

use crate::span::Finished;

/// The store's keep policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StorePolicy {
    /// Traces at least this long are always kept.
    pub slow: Duration,
    /// Other successful traces kept per second; 0 keeps them all.
    pub per_second: u32,
}

impl Default for StorePolicy {
    fn default() -> Self {
        Self { slow: Duration::from_millis(100), per_second: 100 }
    }
}

pub(crate) struct Keeper {
    policy: StorePolicy,
    second: AtomicU64,
    used: AtomicU32,
}

impl Keeper {
    pub(crate) fn new(policy: StorePolicy) -> Self {
        Self { policy, second: AtomicU64::new(0), used: AtomicU32::new(0) }
    }

    /// Whether the store keeps this trace (its spans in this process).
    pub(crate) fn keep(&self, spans: &[Finished]) -> bool {
        if self.policy.per_second == 0 || spans.iter().any(|s| matches!(s.status, Status::Error { .. })) {
            return true;
        }
        let start = spans.iter().map(|s| s.start).min();
        let end = spans.iter().map(|s| s.end).max();
        if let (Some(start), Some(end)) = (start, end)
            && end.duration_since(start).is_ok_and(|d| d >= self.policy.slow)
        {
            return true;
        }
        // Loads first: once the second's budget is spent, deciding writes no shared cache line.
        let now = end.unwrap_or_else(SystemTime::now).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if self.second.load(Ordering::Relaxed) != now && self.second.swap(now, Ordering::Relaxed) != now {
            self.used.store(0, Ordering::Relaxed);
        }
        self.used.load(Ordering::Relaxed) < self.policy.per_second
            && self.used.fetch_add(1, Ordering::Relaxed) < self.policy.per_second
    }
}

//! Per-component admission control: at most `max_concurrency` instances run at once; up to
//! `queue_depth` requests wait (FIFO) for at most `queue_timeout`; beyond that, requests are shed
//! with 503 and `Retry-After` instead of piling up.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nimbus_observe::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Admission state of one component.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue_depth: usize,
    queue_timeout: Duration,
    /// `nimbus_admission_queue_depth` of the component.
    queued: Gauge,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// The queue already holds `queue_depth` requests.
    QueueFull,
    /// The request waited `queue_timeout` without a free instance.
    QueueTimeout,
    /// The app's budget reached its hard limit; why, in words.
    Throttled(std::sync::Arc<str>),
}

impl Admission {
    /// Admission for a component with these limits; `queued` follows the queue's length.
    pub fn new(max_concurrency: usize, queue_depth: usize, queue_timeout: Duration, queued: Gauge) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_concurrency)),
            waiting: AtomicUsize::new(0),
            queue_depth,
            queue_timeout,
            queued,
        }
    }

    /// How long a request may wait for a slot (also how long a service request waits for a ready
    /// process).
    pub fn queue_timeout(&self) -> Duration {
        self.queue_timeout
    }

    /// Requests waiting for an instance right now.
    pub fn queue_len(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Waits for a free instance slot, or says why not; with the slot, how long the request
    /// waited (zero, without reading the clock, when a slot was free). The slot is released when
    /// the permit drops.
    pub async fn admit(&self) -> Result<(OwnedSemaphorePermit, Duration), Rejected> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok((permit, Duration::ZERO));
        }
        // Waiting is the rare path: boxed, so the common one's future stays small.
        let started = std::time::Instant::now();
        let permit = Box::pin(self.wait()).await?;
        Ok((permit, started.elapsed()))
    }

    async fn wait(&self) -> Result<OwnedSemaphorePermit, Rejected> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue_depth {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Rejected::QueueFull);
        }
        self.queued.inc();
        let result = tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        self.queued.dec();
        match result {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(Rejected::QueueTimeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queue_bounds_and_timeouts() {
        let a = Admission::new(1, 1, Duration::from_millis(50), Gauge::default());
        let first = a.admit().await.unwrap();
        // The second request waits in the queue; a third finds the queue full at once.
        let second = tokio::spawn(async move {
            let r = a.admit().await.map(|_| ());
            (r, a)
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (r, a) = second.await.unwrap();
        assert_eq!(r, Err(Rejected::QueueTimeout));
        drop(first);
        assert_eq!(a.admit().await.map(|(_, waited)| waited), Ok(Duration::ZERO), "a free slot is no wait");
        assert_eq!(a.queue_len(), 0);

        let b = Arc::new(Admission::new(1, 0, Duration::from_secs(5), Gauge::default()));
        let _held = b.admit().await.unwrap();
        assert_eq!(b.admit().await.unwrap_err(), Rejected::QueueFull);
    }
}

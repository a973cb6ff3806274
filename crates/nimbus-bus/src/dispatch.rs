//! Delivering a topic to a destination: a consumer group whose members hand each event to the
//! destination, acknowledge on success, retry with exponential backoff and jitter on failure,
//! and after the last attempt move the event to a dead-letter topic with the error code, the
//! failing destination and the attempt count. Replaying a dead-letter topic republishes its
//! events to the topics they came from.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cloudevents::event::ExtensionValue;
use tokio::task::JoinSet;

use crate::event::dead_letter;
use crate::{BusError, Delivery, Event, EventBus, Group, PublishOptions, Topic};

/// How often a failing event is tried, and how long to wait in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Deliveries before the event goes to the dead-letter topic (at least 1).
    pub max_attempts: u32,
    /// The wait after the first failure; doubled after each further one.
    pub backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 5, backoff: Duration::from_millis(200), max_backoff: Duration::from_secs(60) }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based): exponential, capped, with "equal
    /// jitter" (uniform in the upper half) so that retries of many events spread out.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(self.max_backoff);
        let half = exp / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryError {
    /// A short code: `http-503`, `trap`, `timeout`, `unreachable`, ...
    pub code: String,
    /// What happened, for logs and the dead-letter event.
    pub message: String,
    /// Worth retrying (a 4xx answer to a malformed event is not).
    pub retry: bool,
}

impl DeliveryError {
    /// A failure worth retrying.
    pub fn retryable(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), retry: true }
    }

    /// A failure that will not go away by retrying.
    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), retry: false }
    }
}

/// Where a topic's events go: a wasm function, a service, a test double.
#[async_trait]
pub trait Destination: Send + Sync + 'static {
    /// Names the destination in logs and dead-letter events (`function:bill`).
    fn name(&self) -> String;
    /// Handles one event; `Ok` acknowledges it.
    async fn deliver(&self, event: &Event) -> Result<(), DeliveryError>;
}

/// What a dispatcher consumes and how.
#[derive(Debug, Clone)]
pub struct DispatchSpec {
    /// The topic.
    pub topic: Topic,
    /// The consumer group (one per trigger).
    pub group: Group,
    /// Retries.
    pub retry: RetryPolicy,
    /// Where exhausted events go.
    pub dead_letter: Topic,
    /// Members of the group in this process (events handled at once).
    pub concurrency: usize,
    /// How often a long delivery tells the bus it is still in progress.
    pub heartbeat: Duration,
}

/// Running members of one consumer group; dropping it stops them (an event being handled is
/// offered again).
#[derive(Debug)]
pub struct Dispatcher {
    tasks: JoinSet<()>,
}

impl Dispatcher {
    /// Starts `spec.concurrency` members delivering to `destination`.
    pub fn start(bus: Arc<dyn EventBus>, spec: DispatchSpec, destination: Arc<dyn Destination>) -> Self {
        let mut tasks = JoinSet::new();
        let spec = Arc::new(spec);
        for _ in 0..spec.concurrency.max(1) {
            tasks.spawn(member(bus.clone(), spec.clone(), destination.clone()));
        }
        Self { tasks }
    }

    /// Stops every member.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn member(bus: Arc<dyn EventBus>, spec: Arc<DispatchSpec>, destination: Arc<dyn Destination>) {
    let mut failures = 0u32;
    loop {
        let mut subscription = match bus.subscribe(&spec.topic, &spec.group).await {
            Ok(s) => s,
            Err(e) => {
                failures += 1;
                tracing::warn!(topic = %spec.topic, group = %spec.group, error = %nimbus_observe::report(&e), "cannot subscribe; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(50)))).await;
                continue;
            }
        };
        loop {
            match subscription.next().await {
                Ok(delivery) => {
                    failures = 0;
                    handle(&*bus, &spec, &*destination, delivery).await;
                }
                Err(BusError::Closed) => return,
                Err(e) => {
                    tracing::warn!(topic = %spec.topic, group = %spec.group, error = %nimbus_observe::report(&e), "receiving failed; subscribing again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
}

async fn handle(bus: &dyn EventBus, spec: &DispatchSpec, destination: &dyn Destination, delivery: Delivery) {
    let result = if delivery.attempt > spec.retry.max_attempts {
        // Every attempt was used up by deliveries that never settled (crashes mid-handling).
        Err(DeliveryError::permanent("attempts-exhausted", "the node stopped during the last attempt"))
    } else {
        deliver_with_heartbeat(spec, destination, &delivery).await
    };
    let settled = match result {
        Ok(()) => delivery.ack().await,
        Err(e) if e.retry && delivery.attempt < spec.retry.max_attempts => {
            let delay = spec.retry.delay(delivery.attempt);
            tracing::info!(topic = %spec.topic, seq = delivery.seq, attempt = delivery.attempt, code = %e.code, error = %e.message, ?delay, "delivery failed; retrying");
            delivery.nack(delay).await
        }
        Err(e) => {
            let dead = dead_letter_event(
                &delivery.event,
                &spec.topic,
                spec.dead_letter.app(),
                &destination.name(),
                &e,
                delivery.attempt,
            );
            // No dedup: a replayed event that fails again must land in the dead-letter topic
            // again, not be dropped as a repeat of its first failure.
            match bus.publish(&spec.dead_letter, &dead, PublishOptions { dedup: false }).await {
                Ok(_) => {
                    tracing::warn!(topic = %spec.topic, seq = delivery.seq, attempts = delivery.attempt, code = %e.code, error = %e.message, dead_letter = %spec.dead_letter, "delivery failed for good; moved to the dead-letter topic");
                    delivery.ack().await
                }
                Err(publish) => {
                    tracing::error!(topic = %spec.topic, seq = delivery.seq, error = %publish, "cannot write to the dead-letter topic; keeping the event");
                    delivery.nack(spec.retry.max_backoff).await
                }
            }
        }
    };
    if let Err(e) = settled {
        tracing::warn!(topic = %spec.topic, error = %nimbus_observe::report(&e), "could not settle a delivery; it will be offered again");
    }
}

async fn deliver_with_heartbeat(
    spec: &DispatchSpec,
    destination: &dyn Destination,
    delivery: &Delivery,
) -> Result<(), DeliveryError> {
    let work = destination.deliver(&delivery.event);
    let mut work = std::pin::pin!(work);
    let mut beat = tokio::time::interval(spec.heartbeat);
    beat.tick().await;
    loop {
        tokio::select! {
            result = &mut work => return result,
            _ = beat.tick() => { let _ = delivery.in_progress().await; }
        }
    }
}

/// The event as it goes to the dead-letter topic: the original plus why it failed.
fn dead_letter_event(
    event: &Event,
    topic: &Topic,
    dead_letter_app: &str,
    destination: &str,
    error: &DeliveryError,
    attempts: u32,
) -> Event {
    let mut dead = event.clone();
    dead.set_extension(dead_letter::ERROR_CODE, ExtensionValue::String(error.code.clone()));
    dead.set_extension(dead_letter::ERROR, ExtensionValue::String(error.message.clone()));
    dead.set_extension(dead_letter::DESTINATION, ExtensionValue::String(destination.to_string()));
    dead.set_extension(dead_letter::ATTEMPTS, ExtensionValue::Integer(i64::from(attempts)));
    dead.set_extension(dead_letter::TOPIC, ExtensionValue::String(origin_name(topic, dead_letter_app)));
    dead
}

/// How a dead letter names the topic it came from: by its name within the dead-letter topic's
/// app, else (a topic another app exports) `APP/TOPIC`.
fn origin_name(topic: &Topic, dead_letter_app: &str) -> String {
    if topic.app() == dead_letter_app { topic.name().to_string() } else { topic.to_string() }
}

/// The consumer group that marks dead-letter events as replayed.
pub const REPLAY_GROUP: &str = "nimbus-replay";

/// Republishes every dead-letter event of `dead_letter` not replayed yet to the topic it came
/// from (without the failure attributes, bypassing dedup), and returns how many. Only topics of
/// the dead-letter topic's own app are replayed into: a dead letter of a topic another app
/// exports stays where it is. Stops when
/// nothing arrives for `idle`.
pub async fn replay(bus: &dyn EventBus, dead_letter: &Topic, idle: Duration) -> Result<usize, BusError> {
    // Only what is there now: a replayed event that fails again comes back to this topic, and
    // must wait for the next replay instead of looping.
    let Some(end) = bus.last(dead_letter).await?.map(|s| s.seq) else { return Ok(0) };
    let mut subscription = bus.subscribe(dead_letter, &Group::new(dead_letter.app(), REPLAY_GROUP)?).await?;
    let mut count = 0;
    while let Ok(next) = tokio::time::timeout(idle, subscription.next()).await {
        let delivery = next?;
        if delivery.seq > end {
            // Out of this replay's range: keep it out of sight until the loop has gone idle.
            delivery.nack(idle * 2).await?;
            continue;
        }
        let Some(origin) = delivery.event.extension(dead_letter::TOPIC).map(ToString::to_string) else {
            tracing::warn!(seq = delivery.seq, "a dead-letter event without its original topic; skipped");
            delivery.ack().await?;
            continue;
        };
        if origin.contains('/') {
            tracing::warn!(seq = delivery.seq, %origin, "a dead letter of another app's topic is not replayed into it; left in place");
            delivery.nack(idle * 2).await?;
            continue;
        }
        let topic = dead_letter.sibling(&origin)?;
        let mut event = delivery.event.clone();
        for name in dead_letter::ALL {
            event.remove_extension(name);
        }
        bus.publish(&topic, &event, PublishOptions { dedup: false }).await?;
        delivery.ack().await?;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_cap() {
        let p =
            RetryPolicy { max_attempts: 10, backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(1) };
        for _ in 0..100 {
            let d1 = p.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100), "{d1:?}");
            let d3 = p.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400), "{d3:?}");
            assert!(p.delay(30) <= Duration::from_secs(1));
        }
    }
}

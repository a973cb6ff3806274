//! `[[trigger.cron]]`: every tick of a schedule becomes a CloudEvent on the trigger's own topic
//! (`type = "dev.nimbus.cron.tick"`, `id` and `time` = the scheduled time), and from there is
//! delivered like any topic event — with retries and a dead-letter topic. Since the id is the
//! tick, publish-side dedup makes a tick fire once even when several nodes schedule it.
//! At start, the newest tick on the topic tells whether ticks were missed while nothing ran;
//! the trigger's policy skips them or runs once for all of them.
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use nimbus_manifest::{MissedTicks, Schedule};

use crate::{AttributesReader, BusError, Event, EventBuilder, EventBuilderV10, EventBus, PublishOptions, Topic};

/// The CloudEvents `type` of a tick.
pub const TICK_TYPE: &str = "dev.nimbus.cron.tick";

/// One scheduled trigger.
#[derive(Debug, Clone)]
pub struct CronJob {
    /// Where its ticks are published.
    pub topic: Topic,
    /// The ticks' CloudEvents `source`, e.g. `/apps/shop/cron/0`.
    pub source: String,
    /// When it fires.
    pub schedule: Schedule,
    /// What to do about ticks missed while nothing ran.
    pub missed: MissedTicks,
}

/// The event for the tick at `at`.
pub fn tick_event(source: &str, at: DateTime<Utc>) -> Event {
    EventBuilderV10::new()
        .id(at.to_rfc3339())
        .source(source)
        .ty(TICK_TYPE)
        .time(at)
        .build()
        .expect("a tick has every required attribute")
}

/// A running schedule; dropping it stops it.
#[derive(Debug)]
pub struct CronRunner(tokio::task::JoinHandle<()>);

impl Drop for CronRunner {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl CronJob {
    /// Handles missed ticks, then publishes each tick as it comes.
    pub async fn start(self, bus: Arc<dyn EventBus>) -> Result<CronRunner, BusError> {
        self.catch_up(&*bus, Utc::now()).await?;
        Ok(CronRunner(tokio::spawn(async move { self.run(&*bus).await })))
    }

    /// The tick to run now for the ticks missed since the newest one on the topic, if any.
    pub async fn missed_tick(&self, bus: &dyn EventBus, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, BusError> {
        let Some(last) = bus.last(&self.topic).await? else { return Ok(None) };
        let Some(last) = last.event.time().copied() else { return Ok(None) };
        // Ticks are whole seconds; croner keeps the sub-second part of its starting point.
        let zoned = now.trunc_subsecs(0).with_timezone(&self.schedule.zone);
        let Ok(latest) = self.schedule.cron.find_previous_occurrence(&zoned, true) else { return Ok(None) };
        let latest = latest.with_timezone(&Utc);
        Ok((latest > last).then_some(latest))
    }

    async fn catch_up(&self, bus: &dyn EventBus, now: DateTime<Utc>) -> Result<(), BusError> {
        let Some(tick) = self.missed_tick(bus, now).await? else { return Ok(()) };
        match self.missed {
            MissedTicks::Skip => {
                tracing::info!(topic = %self.topic, %tick, "cron ticks were missed while nothing ran; skipping them (missed = \"skip\")");
            }
            MissedTicks::RunOnce => {
                tracing::info!(topic = %self.topic, %tick, "cron ticks were missed while nothing ran; running once now (missed = \"run-once\")");
                bus.publish(&self.topic, &tick_event(&self.source, tick), PublishOptions::default()).await?;
            }
        }
        Ok(())
    }

    async fn run(&self, bus: &dyn EventBus) {
        let mut after = Utc::now().trunc_subsecs(0);
        loop {
            let zoned = after.with_timezone(&self.schedule.zone);
            let tick = match self.schedule.cron.find_next_occurrence(&zoned, false) {
                Ok(t) => t.with_timezone(&Utc),
                Err(e) => {
                    tracing::error!(topic = %self.topic, error = %nimbus_observe::report(&e), "the schedule has no next tick; cron trigger stopped");
                    return;
                }
            };
            let wait = (tick - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
            let event = tick_event(&self.source, tick);
            let mut delay = Duration::from_millis(100);
            while let Err(e) = bus.publish(&self.topic, &event, PublishOptions::default()).await {
                tracing::warn!(topic = %self.topic, %tick, error = %nimbus_observe::report(&e), "cannot publish a cron tick; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            after = tick;
        }
    }
}

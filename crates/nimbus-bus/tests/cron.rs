//! Cron triggers: ticks become events on the trigger's topic, once per tick, and missed ticks
//! follow the trigger's policy.
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use nimbus_bus::cron::{CronJob, TICK_TYPE, tick_event};
use nimbus_bus::{AttributesReader, BusConfig, Embedded, EventBus, PublishOptions, Topic};
use nimbus_manifest::{MissedTicks, Schedule};

fn bus(dir: &tempfile::TempDir) -> Arc<dyn EventBus> {
    Arc::new(Embedded::open(&dir.path().join("bus.redb"), BusConfig::default()).unwrap())
}

fn job(schedule: &str, missed: MissedTicks) -> CronJob {
    CronJob {
        topic: Topic::new("app", "nimbus-cron.0").unwrap(),
        source: "/apps/app/cron/0".into(),
        schedule: Schedule::parse(schedule, Some("Europe/Berlin")).unwrap(),
        missed,
    }
}

#[tokio::test]
async fn every_second_ticks_once_per_tick() {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus(&dir);
    let j = job("* * * * * *", MissedTicks::Skip);
    let topic = j.topic.clone();
    let runner = j.clone().start(bus.clone()).await.unwrap();
    // A second node scheduling the same trigger: dedup keeps one event per tick.
    let second = j.start(bus.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    drop((runner, second));
    let ticks = bus.read(&topic, 0, 100).await.unwrap();
    assert!(
        (2..=5).contains(&ticks.len()),
        "{} ticks in 3.5 s: {:?}",
        ticks.len(),
        ticks.iter().map(|t| t.event.id().to_string()).collect::<Vec<_>>()
    );
    let times: Vec<_> = ticks.iter().map(|t| *t.event.time().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[1] - w[0] == TimeDelta::seconds(1)), "one event per tick: {times:?}");
    assert!(ticks.iter().all(|t| t.event.ty() == TICK_TYPE && t.event.id() == t.event.time().unwrap().to_rfc3339()));
}

#[tokio::test]
async fn missed_ticks_are_skipped_or_run_once() {
    for (policy, expected) in [(MissedTicks::Skip, 1), (MissedTicks::RunOnce, 2)] {
        let dir = tempfile::tempdir().unwrap();
        let bus = bus(&dir);
        let j = job("0 * * * * *", policy); // every minute
        let old = Utc::now() - TimeDelta::minutes(10);
        bus.publish(&j.topic, &tick_event(&j.source, old), PublishOptions::default()).await.unwrap();
        let missed = j.missed_tick(&*bus, Utc::now()).await.unwrap().expect("ticks were missed");
        assert!(missed > old && missed <= Utc::now());
        let topic = j.topic.clone();
        let _runner = j.start(bus.clone()).await.unwrap();
        assert_eq!(bus.read(&topic, 0, 10).await.unwrap().len(), expected, "{policy:?}");
    }
    // Nothing ran before: nothing was missed.
    let dir = tempfile::tempdir().unwrap();
    assert!(job("0 * * * * *", MissedTicks::RunOnce).missed_tick(&*bus(&dir), Utc::now()).await.unwrap().is_none());
}

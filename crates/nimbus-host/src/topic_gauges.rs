//! The consumer groups the host started, read for alerting each step: each group's lag (events
//! of its topic not yet acknowledged) and the events its dead-letter topic gained since the last
//! step, as gauges of the component the group delivers to.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nimbus_bus::EventBus;
use nimbus_observe::insight::{Gauge, GaugeSignal, GaugeSource, Readings};
use nimbus_triggers::Consumer;

pub(crate) struct TopicGauges {
    bus: Arc<dyn EventBus>,
    /// Per app, the groups of the triggers delivering to its serving revision.
    consumers: Mutex<HashMap<String, Vec<Consumer>>>,
    /// Per dead-letter topic, its last position at the previous reading.
    dead: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for TopicGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicGauges").field("bus", &self.bus.backend()).finish_non_exhaustive()
    }
}

impl TopicGauges {
    pub(crate) fn new(bus: Arc<dyn EventBus>) -> Self {
        Self { bus, consumers: Mutex::default(), dead: Mutex::default() }
    }

    /// The groups delivering `app`'s topics now.
    pub(crate) fn set(&self, app: &str, consumers: Vec<Consumer>) {
        self.consumers.lock().unwrap_or_else(|p| p.into_inner()).insert(app.to_string(), consumers);
    }

    async fn read(&self) -> Vec<Gauge> {
        let consumers: Vec<(String, Consumer)> = self
            .consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flat_map(|(app, cs)| cs.iter().map(move |c| (app.clone(), c.clone())))
            .collect();
        let mut out = Vec::new();
        for (app, c) in consumers {
            let what = format!("topic {}, group {}", c.topic.name(), c.group.name());
            let gauge = |signal, value| Gauge {
                app: app.clone(),
                component: c.component.clone(),
                signal,
                value,
                what: what.clone(),
                limit: None,
            };
            if let Ok(groups) = self.bus.groups(&c.topic).await
                && let Some(g) = groups.iter().find(|g| g.group == c.group)
            {
                out.push(gauge(GaugeSignal::ConsumerLag, g.pending as f64));
            }
            let last = match self.bus.last(&c.dead_letter).await {
                Ok(stored) => stored.map_or(0, |s| s.seq),
                Err(_) => continue,
            };
            let key = format!("{}/{}", c.dead_letter.app(), c.dead_letter.name());
            let before = self.dead.lock().unwrap_or_else(|p| p.into_inner()).insert(key, last);
            if let Some(before) = before {
                out.push(gauge(GaugeSignal::DeadLetters, last.saturating_sub(before) as f64));
            }
        }
        out
    }
}

impl GaugeSource for TopicGauges {
    fn sample(&self) -> Readings<'_> {
        Box::pin(self.read())
    }
}

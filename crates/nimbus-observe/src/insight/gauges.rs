//! Gauges alerting judges besides the components' metrics, from sources outside this crate: a
//! consumer group's lag and its dead letters (the app host reads them from the bus each step),
//! judged by their own detectors and alerting on the component the group delivers to; and the
//! disk holding the node's stores, whose use is forecast towards its size.
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use super::book::AlertKind;
use super::detect::{Detector, DetectorConfig, Direction, Transition};
use super::forecast::Holt;
use super::rca::Cause;
use super::signals::{Event, HORIZON_S, Latch, Opened, TREND_WINDOW, forecast};

/// What a gauge measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GaugeSignal {
    /// Events of a topic its consumer group has not acknowledged.
    ConsumerLag,
    /// Events that went to the group's dead-letter topic since the last step.
    DeadLetters,
    /// MiB used of the disk holding the stores (with its size as the limit).
    DiskUsed,
}

/// The app node-wide gauges (the disk) alert under: no app can have this name.
pub const NODE: &str = "_node";

impl GaugeSignal {
    fn name(self) -> &'static str {
        match self {
            Self::ConsumerLag => "consumer_lag",
            Self::DeadLetters => "dead_letters",
            Self::DiskUsed => "disk",
        }
    }

    fn config(self) -> DetectorConfig {
        match self {
            Self::ConsumerLag => DetectorConfig::new(Direction::Up, 20.0),
            Self::DeadLetters => DetectorConfig::new(Direction::Up, 1.0),
            // Judged by its forecast only: a disk filling up over days is not an anomaly.
            Self::DiskUsed => DetectorConfig { warmup: usize::MAX, ..DetectorConfig::new(Direction::Up, 1.0) },
        }
    }
}

/// One reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Gauge {
    /// The app.
    pub app: String,
    /// The component it is about (the one the group delivers to).
    pub component: String,
    /// What it measures.
    pub signal: GaugeSignal,
    /// Its value.
    pub value: f64,
    /// What it is of, in words (`topic orders, group worker`).
    pub what: String,
    /// What it must stay under, if anything: its trend is forecast towards it.
    pub limit: Option<f64>,
}

/// A boxed reading.
pub type Readings<'a> = Pin<Box<dyn Future<Output = Vec<Gauge>> + Send + 'a>>;

/// Something read every step.
pub trait GaugeSource: Send + Sync + std::fmt::Debug {
    /// The current readings (a source that cannot read one leaves it out).
    fn sample(&self) -> Readings<'_>;
}

type Key = (String, String, GaugeSignal, String);

/// The judges of one gauge.
struct Judge {
    detector: Detector,
    trend: Holt,
    forecast: Latch,
}

/// The judges of the gauges, by app, component, signal and subject.
#[derive(Default)]
pub(crate) struct Judges(HashMap<Key, Judge>);

impl Judges {
    /// Judges `g` at `t` (Unix ms, with steps of `step_ms`).
    pub(crate) fn observe(&mut self, g: &Gauge, t: u64, step_ms: u64) -> Vec<Event> {
        let key = (g.app.clone(), g.component.clone(), g.signal, g.what.clone());
        let j = self.0.entry(key).or_insert_with(|| Judge {
            detector: Detector::new(g.signal.config()),
            trend: Holt::new(0.5, 0.3, TREND_WINDOW),
            forecast: Latch::default(),
        });
        let mut out: Vec<Event> = j.detector.push(g.value).map(|tr| anomaly(g, tr, t, step_ms)).into_iter().collect();
        if let Some(limit) = g.limit {
            j.trend.push(g.value);
            let step_s = step_ms as f64 / 1000.0;
            let reach = j.trend.reaches(limit, 0.9).filter(|r| r.points * step_s <= HORIZON_S);
            if let Some(opened) = j.forecast.update(reach.is_some(), 3) {
                let what = format!("MiB of {}", g.what);
                out.push(forecast(opened, g.signal.name(), &g.component, t, step_s, reach, limit, &what));
            }
        }
        out
    }
}

fn anomaly(g: &Gauge, transition: Transition, t: u64, step_ms: u64) -> Event {
    let Transition::Opened { points_ago, at } = transition else {
        return Event::Close(AlertKind::Anomaly, g.signal.name());
    };
    let summary = match g.signal {
        GaugeSignal::ConsumerLag => {
            format!(
                "{} lags {:.0} events behind (baseline {:.0}); {} handles them",
                g.what, at.value, at.expected, g.component
            )
        }
        GaugeSignal::DeadLetters => format!(
            "{} dead-lettered {:.0} events in a step (baseline {:.0}); {} failed them",
            g.what, at.value, at.expected, g.component
        ),
        GaugeSignal::DiskUsed => format!("{} uses {:.0} MiB (baseline {:.0})", g.what, at.value, at.expected),
    };
    Event::Open(Opened {
        kind: AlertKind::Anomaly,
        signal: g.signal.name(),
        cause: if g.signal == GaugeSignal::DeadLetters { Cause::Errors } else { Cause::Either },
        began: t.saturating_sub((points_ago as u64 + 1) * step_ms),
        value: at.value,
        baseline: at.expected,
        score: at.score,
        lead_time_s: None,
        critical: at.score >= 20.0,
        summary,
    })
}

impl Judges {
    /// Forgets the gauges not read this step.
    pub(crate) fn retain(&mut self, read: &[Gauge]) {
        self.0.retain(|(app, component, signal, what), _| {
            read.iter().any(|g| &g.app == app && &g.component == component && g.signal == *signal && &g.what == what)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(signal: GaugeSignal, value: f64) -> Gauge {
        Gauge {
            app: "shop".into(),
            component: "worker".into(),
            signal,
            value,
            what: "topic orders, group worker".into(),
            limit: None,
        }
    }

    fn opened(signal: GaugeSignal, series: impl IntoIterator<Item = f64>) -> Vec<(usize, &'static str)> {
        let mut judges = Judges::default();
        let mut out = Vec::new();
        for (i, v) in series.into_iter().enumerate() {
            for e in judges.observe(&reading(signal, v), i as u64 * 1000, 1000) {
                if let Event::Open(o) = e {
                    out.push((i, o.signal));
                }
            }
        }
        out
    }

    #[test]
    fn a_consumer_falling_behind_opens_a_lag_anomaly_of_its_component() {
        // A few events in flight, then a consumer that stops acknowledging: the lag grows.
        let steady = (0..60).map(|i| f64::from(i % 4));
        let stalled = (0..20).map(|i| 50.0 * f64::from(i + 1));
        let got = opened(GaugeSignal::ConsumerLag, steady.clone().chain(stalled));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!((60..65).contains(&got[0].0), "{got:?}");
        assert_eq!(got[0].1, "consumer_lag");
        assert!(opened(GaugeSignal::ConsumerLag, steady).is_empty(), "a steady small lag is normal");
    }

    #[test]
    fn dead_letters_arriving_step_after_step_open_an_anomaly() {
        let quiet = std::iter::repeat_n(0.0, 40);
        let got = opened(GaugeSignal::DeadLetters, quiet.clone().chain([3.0, 4.0, 2.0, 5.0]));
        assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), ["dead_letters"]);
        let blip = quiet.clone().chain([3.0]).chain(std::iter::repeat_n(0.0, 10));
        assert!(opened(GaugeSignal::DeadLetters, blip).is_empty(), "one dead letter is not an anomaly");
    }

    #[test]
    fn a_filling_disk_is_forecast_with_its_lead_time_and_a_steady_one_is_not() {
        let disk = |value: f64| Gauge {
            app: NODE.into(),
            component: "disk".into(),
            signal: GaugeSignal::DiskUsed,
            value,
            what: "the disk of /data".into(),
            limit: Some(10_000.0),
        };
        let mut judges = Judges::default();
        let mut forecasts = Vec::new();
        for i in 0..100u64 {
            // 5,000 MiB used, then 20 MiB more every 5 s step: full in 250 steps (~21 min).
            let used = if i < 40 { 5_000.0 } else { 5_000.0 + 20.0 * (i - 40) as f64 };
            for e in judges.observe(&disk(used), i * 5000, 5000) {
                match e {
                    Event::Open(o) => forecasts.push((i, o.kind, o.lead_time_s.unwrap_or_default(), o.summary)),
                    Event::Close(..) => {}
                }
            }
        }
        assert_eq!(forecasts.len(), 1, "{forecasts:?}");
        let (at, kind, lead, summary) = &forecasts[0];
        assert_eq!(*kind, AlertKind::Forecast);
        // Once the last 30 points follow the climb closely enough (~20 points into it).
        assert!((55..80).contains(at), "{forecasts:?}");
        // At i = 61 the disk holds ~5,420 MiB: ~229 steps of 5 s left.
        assert!((900.0..1300.0).contains(lead), "{forecasts:?}");
        assert!(summary.contains("disk reaches its 10000 MiB of the disk of /data in 19 min"), "{summary}");
        let mut steady = Judges::default();
        for i in 0..200u64 {
            assert!(steady.observe(&disk(5_000.0 + (i % 3) as f64), i * 5000, 5000).is_empty());
        }
    }
}

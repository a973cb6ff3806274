//! Gauges alerting judges besides the components' metrics, from sources outside this crate: a
//! consumer group's lag and its dead letters (the app host reads them from the bus each step).
//! Each is judged by its own detector and alerts on the component the group delivers to.
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use super::book::AlertKind;
use super::detect::{Detector, DetectorConfig, Direction, Transition};
use super::rca::Cause;
use super::signals::{Event, Opened};

/// What a gauge measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GaugeSignal {
    /// Events of a topic its consumer group has not acknowledged.
    ConsumerLag,
    /// Events that went to the group's dead-letter topic since the last step.
    DeadLetters,
}

impl GaugeSignal {
    fn name(self) -> &'static str {
        match self {
            Self::ConsumerLag => "consumer_lag",
            Self::DeadLetters => "dead_letters",
        }
    }

    fn config(self) -> DetectorConfig {
        match self {
            Self::ConsumerLag => DetectorConfig::new(Direction::Up, 20.0),
            Self::DeadLetters => DetectorConfig::new(Direction::Up, 1.0),
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
}

/// A boxed reading.
pub type Readings<'a> = Pin<Box<dyn Future<Output = Vec<Gauge>> + Send + 'a>>;

/// Something read every step.
pub trait GaugeSource: Send + Sync + std::fmt::Debug {
    /// The current readings (a source that cannot read one leaves it out).
    fn sample(&self) -> Readings<'_>;
}

/// The detectors of the gauges, by app, component, signal and subject.
#[derive(Debug, Default)]
pub(crate) struct Judges(HashMap<(String, String, GaugeSignal, String), Detector>);

impl Judges {
    /// Judges `g` at `t` (Unix ms, with steps of `step_ms`).
    pub(crate) fn observe(&mut self, g: &Gauge, t: u64, step_ms: u64) -> Option<Event> {
        let key = (g.app.clone(), g.component.clone(), g.signal, g.what.clone());
        let d = self.0.entry(key).or_insert_with(|| Detector::new(g.signal.config()));
        match d.push(g.value)? {
            Transition::Opened { points_ago, at } => Some(Event::Open(Opened {
                kind: AlertKind::Anomaly,
                signal: g.signal.name(),
                cause: match g.signal {
                    GaugeSignal::ConsumerLag => Cause::Either,
                    GaugeSignal::DeadLetters => Cause::Errors,
                },
                began: t.saturating_sub((points_ago as u64 + 1) * step_ms),
                value: at.value,
                baseline: at.expected,
                score: at.score,
                lead_time_s: None,
                critical: at.score >= 20.0,
                summary: match g.signal {
                    GaugeSignal::ConsumerLag => format!(
                        "{} lags {:.0} events behind (baseline {:.0}); {} handles them",
                        g.what, at.value, at.expected, g.component
                    ),
                    GaugeSignal::DeadLetters => format!(
                        "{} dead-lettered {:.0} events in a step (baseline {:.0}); {} failed them",
                        g.what, at.value, at.expected, g.component
                    ),
                },
            })),
            Transition::Closed => Some(Event::Close(AlertKind::Anomaly, g.signal.name())),
        }
    }

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
        }
    }

    fn opened(signal: GaugeSignal, series: impl IntoIterator<Item = f64>) -> Vec<(usize, &'static str)> {
        let mut judges = Judges::default();
        let mut out = Vec::new();
        for (i, v) in series.into_iter().enumerate() {
            if let Some(Event::Open(o)) = judges.observe(&reading(signal, v), i as u64 * 1000, 1000) {
                out.push((i, o.signal));
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
}

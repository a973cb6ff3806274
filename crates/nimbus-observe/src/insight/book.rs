//! The alert book: every alert the node raised, deduplicated by fingerprint (one firing alert per
//! kind, app, component and signal; a detection while it fires updates it), bounded, newest
//! last.
use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::rca::{Change, Suspect};

/// Alerts kept at most; the oldest resolved ones make room.
const MAX_ALERTS: usize = 1_000;

/// What raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    /// A signal left its baseline.
    Anomaly,
    /// A trend will cross a limit (the alert carries its lead time).
    Forecast,
    /// A service-level objective of the manifest is broken.
    Slo,
}

/// Whether an alert still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// It holds.
    Firing,
    /// It ended.
    Resolved,
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Look soon.
    Warning,
    /// Look now.
    Critical,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    /// 16 hex digits.
    pub id: String,
    /// What raised it.
    pub kind: AlertKind,
    /// Whether it still holds.
    pub state: AlertState,
    /// The app.
    pub app: String,
    /// The component it was seen on.
    pub component: String,
    /// `latency_p95`, `error_rate`, `throughput`, `cold_start_rate`, `queue_depth`, `memory`,
    /// `slo_latency` or `slo_availability`.
    pub signal: String,
    /// How urgent.
    pub severity: Severity,
    /// What happened, in words.
    pub summary: String,
    /// When the signal first went wrong (Unix ms).
    pub started_at: u64,
    /// When the node decided it is an alert (Unix ms).
    pub detected_at: u64,
    /// When it ended (Unix ms).
    #[serde(default)]
    pub resolved_at: Option<u64>,
    /// How far off the baseline, in robust standard deviations (anomalies); the burn rate (SLO
    /// availability); the share of the limit reached (forecasts).
    pub score: f64,
    /// The signal's value when detected.
    pub value: f64,
    /// What it was judged against: the baseline, the objective or the limit.
    pub baseline: f64,
    /// For forecasts: seconds until the limit is reached at the current trend.
    #[serde(default)]
    pub lead_time_s: Option<f64>,
    /// Whether a silence matched it when it fired (no notification was sent).
    pub silenced: bool,
    /// Root-cause suspects, best first.
    pub suspects: Vec<Suspect>,
    /// The app's deploys in the 15 minutes before it began (the revision diff).
    #[serde(default)]
    pub changes: Vec<Change>,
    /// The signal's values up to its detection (the last 15 minutes), for the components'
    /// own signals.
    #[serde(default)]
    pub series: Vec<Observed>,
}

/// One value of an alert's signal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Observed {
    /// The end of its step (Unix ms).
    pub t: u64,
    /// The value.
    pub value: f64,
}

impl Alert {
    /// What identifies "the same alert" while it fires.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.kind, &self.app, &self.component, &self.signal)
    }
}

pub(crate) fn fingerprint(kind: AlertKind, app: &str, component: &str, signal: &str) -> String {
    format!("{kind:?}/{app}/{component}/{signal}")
}

/// The book (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct Book {
    alerts: VecDeque<Alert>,
    /// Fingerprint → id of its firing alert.
    firing: HashMap<String, String>,
    next: u64,
}

impl Book {
    /// Records `alert` as firing unless one of its fingerprint already fires (then that one
    /// takes its value if worse). Returns the new alert's id.
    pub(crate) fn fire(&mut self, mut alert: Alert) -> Option<String> {
        let print = alert.fingerprint();
        if let Some(id) = self.firing.get(&print) {
            if let Some(a) = self.alerts.iter_mut().find(|a| &a.id == id)
                && alert.score > a.score
            {
                a.score = alert.score;
                a.value = alert.value;
            }
            return None;
        }
        self.next += 1;
        alert.id = format!("{:016x}", hash(&(print.as_str(), alert.detected_at, self.next)));
        alert.state = AlertState::Firing;
        self.firing.insert(print, alert.id.clone());
        let id = alert.id.clone();
        self.alerts.push_back(alert);
        if self.alerts.len() > MAX_ALERTS {
            let drop = self.alerts.iter().position(|a| a.state == AlertState::Resolved).unwrap_or(0);
            if let Some(gone) = self.alerts.remove(drop) {
                self.firing.retain(|_, id| *id != gone.id);
            }
        }
        Some(id)
    }

    /// Ends the firing alert of `print`, if any; returns it.
    pub(crate) fn resolve(&mut self, print: &str, at: u64) -> Option<Alert> {
        let id = self.firing.remove(print)?;
        let a = self.alerts.iter_mut().find(|a| a.id == id)?;
        a.state = AlertState::Resolved;
        a.resolved_at = Some(at);
        Some(a.clone())
    }

    /// The fingerprints of the firing alerts.
    pub(crate) fn firing(&self) -> Vec<String> {
        self.firing.keys().cloned().collect()
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Alert> {
        self.alerts.iter().find(|a| a.id == id)
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut Alert> {
        self.alerts.iter_mut().find(|a| a.id == id)
    }

    /// Every alert, newest first.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.iter().rev()
    }
}

/// A stable hash (std's SipHash with its fixed keys).
pub(crate) fn hash(value: &impl std::hash::Hash) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn alert(component: &str, score: f64) -> Alert {
        Alert {
            id: String::new(),
            kind: AlertKind::Anomaly,
            state: AlertState::Firing,
            app: "shop".into(),
            component: component.into(),
            signal: "latency_p95".into(),
            severity: Severity::Warning,
            summary: String::new(),
            started_at: 1,
            detected_at: 2,
            resolved_at: None,
            score,
            value: score,
            baseline: 1.0,
            lead_time_s: None,
            silenced: false,
            suspects: Vec::new(),
            changes: Vec::new(),
            series: Vec::new(),
        }
    }

    #[test]
    fn a_firing_alert_is_not_raised_twice_and_keeps_its_worst_value() {
        let mut book = Book::default();
        let id = book.fire(alert("api", 7.0)).expect("new");
        assert_eq!(book.fire(alert("api", 9.0)), None, "deduplicated");
        assert_eq!(book.fire(alert("api", 8.0)), None);
        assert_eq!(book.get(&id).unwrap().value, 9.0);
        assert_eq!(book.all().count(), 1);
        let resolved = book.resolve(&alert("api", 0.0).fingerprint(), 5).expect("was firing");
        assert_eq!((resolved.state, resolved.resolved_at), (AlertState::Resolved, Some(5)));
        let again = book.fire(alert("api", 7.0)).expect("a new alert after the old one resolved");
        assert_ne!(again, id);
        assert!(book.fire(alert("front", 7.0)).is_some(), "another component is another alert");
    }

    #[test]
    fn the_book_is_bounded_and_drops_resolved_alerts_first() {
        let mut book = Book::default();
        let first = book.fire(alert("c0", 7.0)).unwrap();
        for i in 1..MAX_ALERTS + 50 {
            let a = alert(&format!("c{i}"), 7.0);
            let print = a.fingerprint();
            book.fire(a);
            if i > 1 {
                book.resolve(&print, 3);
            }
        }
        assert_eq!(book.all().count(), MAX_ALERTS);
        assert!(book.get(&first).is_some(), "the firing one stays");
    }
}

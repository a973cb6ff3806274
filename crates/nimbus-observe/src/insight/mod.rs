//! Operations intelligence: the node watches its own telemetry and says *something is wrong,
//! here, since then, probably because of that*.
//!
//! Every step of the metrics history ([`crate::Series`]) each component's points are judged
//! ([`detect`]): p95 latency, error rate, throughput drops, cold-start rate, admission queue
//! depth and memory — and the consumer lag and dead letters of the topics delivered to it
//! ([`GaugeSource`]) — each against a robust baseline (median and MAD of its last 120 normal
//! points; an optional season), an anomaly opening after 3 abnormal points in a row. Trends of
//! memory and queue depth towards their limits and of p99 latency towards the manifest's
//! objective are forecast ([`forecast`], Holt's linear smoothing) and alert with their lead
//! time; `[[slo]]` objectives also alert when broken (p99) or when the error budget burns 14.4×
//! too fast over both the last minute and the last 5 minutes (availability). A new anomaly is
//! explained by ranking the components of the traces through it ([`rca`]): whose own time or
//! failures grew, and which a deploy just changed. Alerts are deduplicated while they fire,
//! silenced by matchers, and notified as CloudEvents to sinks ([`AlertSink`]: a webhook, the
//! log, a topic) — firing and resolved, grouped per app per step.
//!
//! It owns the judging and the alert book; it does not know manifests or revisions (the app
//! host tells it what is deployed: [`Insight::deployed`]) nor serve HTTP (the control API does).
//! Detection costs one pass over the new points per step; the trace store is read once per
//! step in which an anomaly opens.
//!
//! ```no_run
//! # async fn demo() -> Result<(), nimbus_observe::ObserveError> {
//! use nimbus_observe::{ObserveConfig, Observer, insight::{AlertState, NewSilence}};
//!
//! let observer = Observer::start(ObserveConfig { dir: Some(".nimbus".into()), ..Default::default() })?;
//! let insight = observer.insight().expect("metrics are on");
//! for alert in insight.alerts(Some(AlertState::Firing), None) {
//!     println!("{}: {} (suspects: {:?})", alert.id, alert.summary, alert.suspects.first().map(|s| &s.component));
//! }
//! let silence = NewSilence { component: None, signal: None, duration_s: 3600, comment: "migration".into() };
//! insight.silence("shop", silence, "ops").expect("valid");
//! # Ok(()) }
//! ```

mod book;
pub(crate) use book::hash as fingerprint;
pub mod detect;
mod engine;
pub mod forecast;
mod gauges;
pub mod rca;
mod signals;
mod silences;
mod sinks;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

pub use book::{Alert, AlertKind, AlertState, Observed, Severity};
pub use gauges::{Gauge, GaugeSignal, GaugeSource, NODE, Readings};
pub use rca::{Change, Suspect};
pub use silences::{MAX_SILENCE_S, MAX_SILENCES, NewSilence, Silence, SilenceError};
pub use sinks::{AlertSink, Delivery, LogSink, Webhook, cloud_event};

/// A service-level objective of one route, served by one component.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// The route, as the manifest declares it.
    pub route: String,
    /// The component serving it (whose metrics are judged).
    pub component: String,
    /// The p99 latency objective, in milliseconds.
    pub p99_ms: Option<f64>,
    /// The availability objective, in percent (e.g. 99.9).
    pub availability: Option<f64>,
}

/// What an app serves now, as the app host tells it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deployed {
    /// The app.
    pub app: String,
    /// The revision serving it (the one with most traffic).
    pub revision: String,
    /// Each component's fingerprint (its code's digest and its configuration): the components
    /// whose fingerprint differs from the previous revision's are what a deploy changed.
    pub components: BTreeMap<String, String>,
    /// Its objectives.
    pub slos: Vec<Slo>,
    /// Each component's memory limit per instance, in MiB.
    pub memory_mb: BTreeMap<String, u64>,
    /// Each component's admission queue limit.
    pub queue_depth: BTreeMap<String, u64>,
}

/// How the node alerts.
#[derive(Debug, Clone, Default)]
pub struct InsightConfig {
    /// Where silences are kept (`silences.json` in it); none: in memory only.
    pub dir: Option<PathBuf>,
    /// Webhook URLs notifications are POSTed to.
    pub webhooks: Vec<String>,
    /// The node's name, in the notifications' `source`.
    pub node: String,
}

/// Deploys of an app remembered at most.
const MAX_CHANGES: usize = 20;

#[derive(Debug, Default)]
struct App {
    deployed: Deployed,
    changes: VecDeque<Change>,
}

struct State {
    book: book::Book,
    silences: silences::Silences,
    apps: HashMap<String, App>,
    components: HashMap<(String, String), signals::Component>,
    gauges: gauges::Judges,
}

pub(crate) struct Shared {
    node: String,
    state: Mutex<State>,
    sinks: RwLock<Vec<Arc<dyn AlertSink>>>,
    sources: RwLock<Vec<Arc<dyn GaugeSource>>>,
}

/// The node's alerting (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct Insight(Arc<Shared>);

impl std::fmt::Debug for Insight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Insight").field("node", &self.0.node).finish_non_exhaustive()
    }
}

impl Insight {
    /// Alerting with `config`'s sinks (and the log); silences read from its directory.
    pub(crate) fn new(config: &InsightConfig) -> Result<Self, String> {
        let mut sinks: Vec<Arc<dyn AlertSink>> = vec![Arc::new(LogSink)];
        for url in &config.webhooks {
            sinks.push(Arc::new(Webhook::new(url)?));
        }
        let state = State {
            book: book::Book::default(),
            silences: silences::Silences::open(config.dir.as_ref().map(|d| d.join("silences.json"))),
            apps: HashMap::new(),
            components: HashMap::new(),
            gauges: gauges::Judges::default(),
        };
        let node = if config.node.is_empty() { "local".to_string() } else { config.node.clone() };
        Ok(Self(Arc::new(Shared {
            node,
            state: Mutex::new(state),
            sinks: RwLock::new(sinks),
            sources: RwLock::default(),
        })))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Judges the series' points from now on, every step, until the last clone is dropped.
    pub(crate) fn watch(
        &self,
        series: crate::Series,
        traces: Option<crate::TraceStore>,
        logs: Option<crate::LogStore>,
    ) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(engine::run(Arc::downgrade(&self.0), series, traces, logs));
        } else {
            tracing::warn!("no async runtime: alerting is off");
        }
    }

    /// Also notify `sink`.
    pub fn add_sink(&self, sink: Arc<dyn AlertSink>) {
        self.0.sinks.write().unwrap_or_else(|p| p.into_inner()).push(sink);
    }

    /// Delivers `event` (a CloudEvent, structured JSON) to every sink now, in order.
    pub async fn deliver(&self, event: &serde_json::Value) {
        let sinks = self.0.sinks.read().unwrap_or_else(|p| p.into_inner()).clone();
        for sink in &sinks {
            if let Err(e) = sink.deliver(event).await {
                tracing::warn!(target: "nimbus::alerts", sink = ?sink, error = %e, "notification not delivered");
            }
        }
    }

    /// Also judge what `source` reads, every step.
    pub fn add_source(&self, source: Arc<dyn GaugeSource>) {
        self.0.sources.write().unwrap_or_else(|p| p.into_inner()).push(source);
    }

    /// Alerts, newest first: those in `state` (any if `None`) of `app` (any if `None`).
    pub fn alerts(&self, state: Option<AlertState>, app: Option<&str>) -> Vec<Alert> {
        let s = self.state();
        s.book
            .all()
            .filter(|a| state.is_none_or(|st| a.state == st) && app.is_none_or(|app| a.app == app))
            .cloned()
            .collect()
    }

    /// One alert.
    pub fn alert(&self, id: &str) -> Option<Alert> {
        self.state().book.get(id).cloned()
    }

    /// The silences that have not ended.
    pub fn silences(&self) -> Vec<Silence> {
        self.state().silences.active(engine::now_ms()).cloned().collect()
    }

    /// Creates a silence of `app`'s alerts, durably, by `created_by`.
    pub fn silence(&self, app: &str, new: NewSilence, created_by: &str) -> Result<Silence, SilenceError> {
        let now = engine::now_ms();
        let id = format!("{:016x}", book::hash(&(now, created_by, fastrand::u64(..))));
        let silence = new.validate(app, id, created_by.to_string(), now)?;
        self.state().silences.add(silence.clone(), now)?;
        Ok(silence)
    }

    /// Ends silence `id` of `app`; whether it existed.
    pub fn unsilence(&self, app: &str, id: &str) -> Result<bool, SilenceError> {
        self.state().silences.remove(app, id)
    }

    /// `deployed.app` now serves `deployed.revision`: its objectives and limits apply from now
    /// on, and if the revision changed, the change is remembered as evidence (which components
    /// differ from the previous revision).
    pub fn deployed(&self, deployed: Deployed) {
        let mut s = self.state();
        let app = s.apps.entry(deployed.app.clone()).or_default();
        if app.deployed.revision != deployed.revision {
            let first = app.deployed.revision.is_empty();
            let components: Vec<String> = deployed
                .components
                .iter()
                .filter(|(name, print)| app.deployed.components.get(*name) != Some(*print))
                .map(|(name, _)| name.clone())
                .collect();
            if !first {
                app.changes.push_back(Change {
                    at: engine::now_ms(),
                    from: Some(app.deployed.revision.clone()),
                    to: deployed.revision.clone(),
                    components,
                });
                if app.changes.len() > MAX_CHANGES {
                    app.changes.pop_front();
                }
            }
        }
        app.deployed = deployed;
    }

    /// `app` is gone: its objectives and deploys are forgotten (its alerts stay in the book).
    pub fn forget(&self, app: &str) {
        self.state().apps.remove(app);
    }
}

//! The loop that judges each step's points, keeps the alert book, ranks the suspects of new
//! anomalies and hands notifications to the sinks.
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::book::{Alert, AlertKind, AlertState, Observed, Severity, fingerprint};
use super::rca::{self, Cause, Change, Question};
use super::signals::{Component, Event, Limits, Opened, value_of};
use super::{Shared, Slo, State};
use crate::{LogQuery, LogStore, Series, TraceStore};

/// Traces before an anomaly its suspects are compared with.
const BEFORE: Duration = Duration::from_secs(300);
/// Traces read at most for one ranking, on each side of the anomaly's start.
const MAX_TRACES: usize = 2_000;
/// How much of a signal's history an alert keeps.
const SERIES: Duration = Duration::from_secs(15 * 60);
/// A component without points for this long is forgotten (its baselines with it).
const IDLE_MS: u64 = 15 * 60 * 1000;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An alert that just fired, to rank.
struct Fired {
    id: String,
    app: String,
    focus: String,
    cause: Cause,
    began: u64,
    changes: Vec<Change>,
}

pub(super) async fn run(shared: Weak<Shared>, series: Series, traces: Option<TraceStore>, logs: Option<LogStore>) {
    let step = series.step();
    let step_s = step.as_secs_f64();
    let mut last = now_ms();
    let (deliveries, queue) = tokio::sync::mpsc::channel(64);
    if let Some(s) = shared.upgrade() {
        tokio::spawn(deliver(Arc::downgrade(&s), queue));
    }
    let mut tick = tokio::time::interval(step);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else { return };
        let points = series.since(last);
        if let Some(t) = points.iter().map(|p| p.2.t).max() {
            last = t;
        }
        let gauges = read(&shared, step).await;
        let (fired, notices) = judge(&shared, &series, &points, &gauges, step_s);
        if !fired.is_empty() {
            rank(&shared, fired, traces.clone(), logs.clone()).await;
        }
        notify(&shared, notices, &deliveries);
    }
}

/// Every source's readings, each given half a step.
async fn read(shared: &Shared, step: Duration) -> Vec<super::Gauge> {
    let sources: Vec<Arc<dyn super::GaugeSource>> = shared.sources.read().unwrap_or_else(|p| p.into_inner()).clone();
    let mut out = Vec::new();
    for source in sources {
        match tokio::time::timeout(step / 2, source.sample()).await {
            Ok(readings) => out.extend(readings),
            Err(_) => {
                tracing::warn!(target: "nimbus::alerts", source = ?source, "a gauge source took more than half a step; skipped")
            }
        }
    }
    out
}

/// What to notify after a step: per app, the alerts that fired and those that resolved.
type Notices = BTreeMap<String, (Vec<String>, Vec<String>)>;

fn judge(
    shared: &Shared,
    series: &Series,
    points: &[(String, String, crate::SeriesPoint)],
    gauges: &[super::Gauge],
    step_s: f64,
) -> (Vec<Fired>, Notices) {
    let mut guard = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    let State { book, silences, apps, components, gauges: gauge_judges } = &mut *guard;
    let now = now_ms();
    let mut fired = Vec::new();
    let mut notices: Notices = BTreeMap::new();
    let mut events: Vec<(&str, &str, Event)> = Vec::new();
    for (app, name, point) in points {
        let deployed = apps.get(app).map(|a| &a.deployed);
        let slo: Option<&Slo> = deployed.and_then(|d| d.slos.iter().find(|s| &s.component == name));
        let limits = Limits {
            memory_mb: deployed.and_then(|d| d.memory_mb.get(name).copied()),
            queue_depth: deployed.and_then(|d| d.queue_depth.get(name).copied()),
            slo,
        };
        let component = components.entry((app.clone(), name.clone())).or_insert_with(Component::new);
        events.extend(
            component.observe(name, point, step_s, &limits).into_iter().map(|e| (app.as_str(), name.as_str(), e)),
        );
    }
    let step_ms = (step_s * 1000.0) as u64;
    for g in gauges {
        events.extend(
            gauge_judges.observe(g, now, step_ms).into_iter().map(|e| (g.app.as_str(), g.component.as_str(), e)),
        );
    }
    gauge_judges.retain(gauges);
    for (app, name, event) in events {
        match event {
            Event::Open(o) => {
                let changes: Vec<Change> = apps
                    .get(app)
                    .map(|a| a.changes.iter().filter(|c| c.at + 15 * 60 * 1000 >= o.began).cloned().collect())
                    .unwrap_or_default();
                let mut alert = alert(app, name, &o, now, changes.clone());
                alert.silenced = silences.silenced(&alert, now);
                alert.series = series
                    .query(Some(app), Some(name), SERIES)
                    .into_iter()
                    .flat_map(|c| c.points)
                    .filter_map(|p| Some(Observed { t: p.t, value: value_of(o.signal, &p, step_s)? }))
                    .collect();
                let silenced = alert.silenced;
                if let Some(id) = book.fire(alert) {
                    if o.kind == AlertKind::Anomaly || o.kind == AlertKind::Slo {
                        fired.push(Fired {
                            id: id.clone(),
                            app: app.to_string(),
                            focus: name.to_string(),
                            cause: o.cause,
                            began: o.began,
                            changes,
                        });
                    }
                    if !silenced {
                        notices.entry(app.to_string()).or_default().0.push(id);
                    }
                }
            }
            Event::Close(kind, signal) => {
                if let Some(a) = book.resolve(&fingerprint(kind, app, name, signal), now)
                    && !a.silenced
                {
                    notices.entry(app.to_string()).or_default().1.push(a.id);
                }
            }
        }
    }
    // Components that went quiet are forgotten; their firing alerts resolve.
    let idle: Vec<(String, String)> =
        components.iter().filter(|(_, c)| now.saturating_sub(c.seen) > IDLE_MS).map(|(k, _)| k.clone()).collect();
    for (app, name) in idle {
        components.remove(&(app.clone(), name.clone()));
        let prefix = |k: AlertKind| fingerprint(k, &app, &name, "");
        for print in book.firing() {
            if [AlertKind::Anomaly, AlertKind::Forecast, AlertKind::Slo].iter().any(|k| print.starts_with(&prefix(*k)))
                && let Some(a) = book.resolve(&print, now)
                && !a.silenced
            {
                notices.entry(app.clone()).or_default().1.push(a.id);
            }
        }
    }
    (fired, notices)
}

fn alert(app: &str, component: &str, o: &Opened, now: u64, changes: Vec<Change>) -> Alert {
    Alert {
        id: String::new(),
        kind: o.kind,
        state: AlertState::Firing,
        app: app.to_string(),
        component: component.to_string(),
        signal: o.signal.to_string(),
        severity: if o.critical { Severity::Critical } else { Severity::Warning },
        summary: o.summary.clone(),
        started_at: o.began,
        detected_at: now,
        resolved_at: None,
        score: o.score,
        value: o.value,
        baseline: o.baseline,
        lead_time_s: o.lead_time_s,
        silenced: false,
        suspects: Vec::new(),
        changes,
        series: Vec::new(),
    }
}

/// Ranks the suspects of the alerts that fired, reading the trace store once.
async fn rank(shared: &Arc<Shared>, fired: Vec<Fired>, traces: Option<TraceStore>, logs: Option<LogStore>) {
    let ranked = tokio::task::spawn_blocking(move || {
        let now_ns = now_ms() * 1_000_000;
        let earliest = fired.iter().map(|f| f.began).min().unwrap_or_default();
        let from_ns = (earliest * 1_000_000).saturating_sub(BEFORE.as_nanos() as u64);
        let all = traces.map(|t| t.between(from_ns, now_ns, 2 * MAX_TRACES)).unwrap_or_default();
        fired
            .into_iter()
            .map(|f| {
                let began_ns = f.began * 1_000_000;
                let starts = |t: &Vec<crate::SpanView>| t.first().map_or(0, |s| s.start_unix_nano);
                let during: Vec<_> = all.iter().filter(|t| starts(t) >= began_ns).take(MAX_TRACES).cloned().collect();
                let before: Vec<_> = all
                    .iter()
                    .filter(|t| starts(t) < began_ns && starts(t) + BEFORE.as_nanos() as u64 >= began_ns)
                    .take(MAX_TRACES)
                    .cloned()
                    .collect();
                let q = Question {
                    focus: &f.focus,
                    kind: f.cause,
                    began: f.began,
                    during: &during,
                    before: &before,
                    changes: &f.changes,
                };
                let mut suspects = rca::rank(&q);
                if let Some(logs) = &logs {
                    for s in suspects.iter_mut().take(3) {
                        for trace in s.traces.clone() {
                            let q = LogQuery {
                                app: Some(f.app.clone()),
                                component: Some(s.component.clone()),
                                trace_id: Some(trace.clone()),
                                limit: Some(2),
                                ..Default::default()
                            };
                            s.logs.extend(logs.query(&q).into_iter().map(|r| format!("[{trace}] {}", r.message)));
                        }
                        s.logs.truncate(5);
                    }
                }
                (f.id, suspects)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    for (id, suspects) in ranked {
        if let Some(a) = state.book.get_mut(&id) {
            a.suspects = suspects;
        }
    }
}

/// Queues one CloudEvent per app and state for the sinks (a full queue drops them, logged).
fn notify(shared: &Arc<Shared>, notices: Notices, deliveries: &tokio::sync::mpsc::Sender<Vec<serde_json::Value>>) {
    if notices.is_empty() {
        return;
    }
    let events: Vec<serde_json::Value> = {
        let state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        let pick = |ids: &[String]| ids.iter().filter_map(|id| state.book.get(id).cloned()).collect::<Vec<_>>();
        notices
            .iter()
            .flat_map(|(app, (fired, resolved))| {
                [(true, pick(fired)), (false, pick(resolved))]
                    .into_iter()
                    .filter(|(_, alerts)| !alerts.is_empty())
                    .map(|(firing, alerts)| super::cloud_event(&shared.node, app, firing, &alerts))
            })
            .collect()
    };
    if deliveries.try_send(events).is_err() {
        tracing::warn!(target: "nimbus::alerts", "alert notifications dropped: the sinks are too slow");
    }
}

/// Delivers queued notifications in order to every sink (the sinks added since start included).
async fn deliver(shared: Weak<Shared>, mut queue: tokio::sync::mpsc::Receiver<Vec<serde_json::Value>>) {
    while let Some(events) = queue.recv().await {
        let Some(sinks) = shared.upgrade().map(|s| s.sinks.read().unwrap_or_else(|p| p.into_inner()).clone()) else {
            return;
        };
        for event in &events {
            for sink in &sinks {
                if let Err(e) = sink.deliver(event).await {
                    tracing::warn!(target: "nimbus::alerts", sink = ?sink, error = %e, "alert notification not delivered");
                }
            }
        }
    }
}

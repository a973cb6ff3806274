//! What is judged of each component at each step: six anomaly detectors over its metrics, trend
//! forecasts of its memory and queue towards their limits, and its service-level objectives
//! (p99 latency over the objective, error-budget burn rate; and the forecast of the p99
//! reaching the objective).
use super::detect::{Detector, DetectorConfig, Direction, Transition};
use super::forecast::Holt;
use super::rca::Cause;
use super::{Slo, book::AlertKind};
use crate::SeriesPoint;

/// How one metric of a component is judged.
struct Spec {
    name: &'static str,
    /// What the value is, with `{}` for it.
    unit: fn(f64) -> String,
    direction: Direction,
    min_change: f64,
    cause: Cause,
    /// The value of a point, if the point says enough to judge.
    value: fn(&SeriesPoint, f64) -> Option<f64>,
    /// The smallest change relative to the baseline that matters.
    min_ratio: f64,
}

const MIB: f64 = 1024.0 * 1024.0;

fn ms(v: f64) -> String {
    format!("{v:.1} ms")
}
fn pct(v: f64) -> String {
    format!("{:.1} %", v * 100.0)
}
fn rate(v: f64) -> String {
    format!("{v:.1} req/s")
}
fn count(v: f64) -> String {
    format!("{v:.0}")
}
fn mib(v: f64) -> String {
    format!("{v:.0} MiB")
}

const SPECS: [Spec; 6] = [
    Spec {
        name: "latency_p95",
        unit: ms,
        direction: Direction::Up,
        min_change: 5.0,
        cause: Cause::Time,
        value: |p, _| p.p95_ms.filter(|_| p.requests >= 3),
        // Quantiles interpolated in doubling buckets swing by half when a few requests move
        // between two buckets: only a doubling is an anomaly.
        min_ratio: 1.0,
    },
    Spec {
        name: "error_rate",
        unit: pct,
        direction: Direction::Up,
        min_change: 0.05,
        cause: Cause::Errors,
        value: |p, _| (p.requests >= 5).then(|| p.errors as f64 / p.requests as f64),
        min_ratio: 0.5,
    },
    Spec {
        name: "throughput",
        unit: rate,
        direction: Direction::Down,
        min_change: 1.0,
        cause: Cause::Either,
        value: |p, step_s| Some(p.requests as f64 / step_s),
        min_ratio: 0.5,
    },
    Spec {
        name: "cold_start_rate",
        unit: pct,
        direction: Direction::Up,
        min_change: 0.2,
        cause: Cause::Time,
        value: |p, _| (p.cold + p.warm >= 5).then(|| p.cold as f64 / (p.cold + p.warm) as f64),
        min_ratio: 0.5,
    },
    Spec {
        name: "queue_depth",
        unit: count,
        direction: Direction::Up,
        min_change: 5.0,
        cause: Cause::Time,
        value: |p, _| Some(p.queue_depth as f64),
        min_ratio: 0.5,
    },
    Spec {
        name: "memory",
        unit: mib,
        direction: Direction::Up,
        min_change: 32.0,
        cause: Cause::Either,
        value: |p, _| Some(p.memory_bytes as f64 / MIB),
        min_ratio: 0.5,
    },
];

/// The value of `signal` (a component signal or an objective's) at point `p`, as it was judged.
pub(crate) fn value_of(signal: &str, p: &SeriesPoint, step_s: f64) -> Option<f64> {
    match signal {
        "slo_latency" => p.p99_ms,
        "slo_availability" => (p.requests > 0).then(|| 100.0 * (1.0 - p.errors as f64 / p.requests as f64)),
        _ => SPECS.iter().find(|s| s.name == signal).and_then(|s| (s.value)(p, step_s)),
    }
}

/// Points the forecasts fit over.
pub(crate) const TREND_WINDOW: usize = 30;
/// How far ahead a forecast alerts.
pub(crate) const HORIZON_S: f64 = 3600.0;
/// The burn rate of an error budget that pages: 2 % of a 30-day budget in one hour.
const FAST_BURN: f64 = 14.4;
/// The error budget's period, for the time it lasts at the current burn rate.
const BUDGET_S: f64 = 30.0 * 24.0 * 3600.0;

/// A condition that must hold (or not) for `persistence` points in a row to flip.
#[derive(Debug, Default, Clone)]
pub(crate) struct Latch {
    open: bool,
    run: usize,
}

impl Latch {
    /// `Some(true)` when it opens, `Some(false)` when it closes.
    pub(crate) fn update(&mut self, holds: bool, persistence: usize) -> Option<bool> {
        if holds == self.open {
            self.run = 0;
            return None;
        }
        self.run += 1;
        if self.run < persistence {
            return None;
        }
        self.open = holds;
        self.run = 0;
        Some(holds)
    }
}

/// Something about a component that began or ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// It began: an alert to raise.
    Open(Opened),
    /// The alert of this kind and signal ended.
    Close(AlertKind, &'static str),
}

/// What an alert is raised with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Opened {
    pub(crate) kind: AlertKind,
    pub(crate) signal: &'static str,
    pub(crate) cause: Cause,
    /// When it began (Unix ms).
    pub(crate) began: u64,
    pub(crate) value: f64,
    pub(crate) baseline: f64,
    pub(crate) score: f64,
    pub(crate) lead_time_s: Option<f64>,
    pub(crate) critical: bool,
    pub(crate) summary: String,
}

/// The judges of one component.
pub(crate) struct Component {
    detectors: Vec<Detector>,
    memory: Holt,
    queue: Holt,
    p99: Holt,
    memory_forecast: Latch,
    queue_forecast: Latch,
    p99_forecast: Latch,
    p99_breach: Latch,
    burn: Latch,
    /// (requests, errors) of the recent points, for the burn rate.
    recent: std::collections::VecDeque<(u64, u64)>,
    /// When it last had a point (Unix ms).
    pub(crate) seen: u64,
}

/// What a component's alerts are judged against (from its app's manifest).
#[derive(Debug, Default, Clone)]
pub(crate) struct Limits<'a> {
    pub(crate) memory_mb: Option<u64>,
    pub(crate) queue_depth: Option<u64>,
    pub(crate) slo: Option<&'a Slo>,
}

impl Component {
    pub(crate) fn new() -> Self {
        let holt = || Holt::new(0.5, 0.3, TREND_WINDOW);
        Self {
            detectors: SPECS
                .iter()
                .map(|s| {
                    Detector::new(DetectorConfig {
                        min_ratio: s.min_ratio,
                        ..DetectorConfig::new(s.direction, s.min_change)
                    })
                })
                .collect(),
            memory: holt(),
            queue: holt(),
            p99: holt(),
            memory_forecast: Latch::default(),
            queue_forecast: Latch::default(),
            p99_forecast: Latch::default(),
            p99_breach: Latch::default(),
            burn: Latch::default(),
            recent: Default::default(),
            seen: 0,
        }
    }

    /// Judges the next point of component `name`; what began or ended with it.
    pub(crate) fn observe(&mut self, name: &str, p: &SeriesPoint, step_s: f64, limits: &Limits<'_>) -> Vec<Event> {
        self.seen = p.t;
        let step_ms = (step_s * 1000.0) as u64;
        let persistence = 3;
        let mut out = Vec::new();
        for (spec, d) in SPECS.iter().zip(&mut self.detectors) {
            let Some(v) = (spec.value)(p, step_s) else { continue };
            match d.push(v) {
                Some(Transition::Opened { points_ago, at }) => {
                    let (now, was) = ((spec.unit)(at.value), (spec.unit)(at.expected));
                    out.push(Event::Open(Opened {
                        kind: AlertKind::Anomaly,
                        signal: spec.name,
                        cause: spec.cause,
                        began: p.t.saturating_sub((points_ago as u64 + 1) * step_ms),
                        value: at.value,
                        baseline: at.expected,
                        score: at.score,
                        lead_time_s: None,
                        critical: at.score >= 20.0,
                        summary: format!(
                            "{} of {name} is {now}, its baseline {was} ({:.1} robust deviations off)",
                            spec.name.replace('_', " "),
                            at.score
                        ),
                    }));
                }
                Some(Transition::Closed) => out.push(Event::Close(AlertKind::Anomaly, spec.name)),
                None => {}
            }
        }
        let per_instance_mib = p.memory_bytes as f64 / MIB / p.instances.max(1) as f64;
        if p.instances > 0 {
            self.memory.push(per_instance_mib);
        }
        self.queue.push(p.queue_depth as f64);
        let forecasts: [(&mut Holt, &mut Latch, &'static str, Option<f64>, &str); 2] = [
            (
                &mut self.memory,
                &mut self.memory_forecast,
                "memory",
                limits.memory_mb.map(|m| m as f64),
                "MiB memory limit per instance",
            ),
            (
                &mut self.queue,
                &mut self.queue_forecast,
                "queue_depth",
                limits.queue_depth.map(|q| q as f64),
                "admission queue limit",
            ),
        ];
        for (holt, latch, signal, limit, what) in forecasts {
            let Some(limit) = limit else { continue };
            let reach = holt.reaches(limit, 0.9).filter(|r| r.points * step_s <= HORIZON_S);
            if let Some(opened) = latch.update(reach.is_some(), persistence) {
                out.push(forecast(opened, signal, name, p.t, step_s, reach, limit, what));
            }
        }
        if let Some(slo) = limits.slo {
            self.objectives(name, slo, p, step_s, persistence, &mut out);
        }
        out
    }

    fn objectives(
        &mut self,
        name: &str,
        slo: &Slo,
        p: &SeriesPoint,
        step_s: f64,
        persistence: usize,
        out: &mut Vec<Event>,
    ) {
        let step_ms = (step_s * 1000.0) as u64;
        if let (Some(target), Some(p99)) = (slo.p99_ms, p.p99_ms.filter(|_| p.requests >= 3)) {
            self.p99.push(p99);
            match self.p99_breach.update(p99 > target, persistence) {
                Some(true) => {
                    // A breach ends the forecast of it: the forecast's lead time was its warning.
                    if self.p99_forecast.open {
                        self.p99_forecast = Latch::default();
                        out.push(Event::Close(AlertKind::Forecast, "slo_latency"));
                    }
                    out.push(Event::Open(Opened {
                        kind: AlertKind::Slo,
                        signal: "slo_latency",
                        cause: Cause::Time,
                        began: p.t.saturating_sub(persistence as u64 * step_ms),
                        value: p99,
                        baseline: target,
                        score: p99 / target,
                        lead_time_s: None,
                        critical: true,
                        summary: format!(
                            "p99 latency of {} ({name}) is {p99:.1} ms, over its objective of {target} ms",
                            slo.route
                        ),
                    }));
                }
                Some(false) => out.push(Event::Close(AlertKind::Slo, "slo_latency")),
                None => {}
            }
            if !self.p99_breach.open {
                let reach = self.p99.reaches(target, 0.8).filter(|r| r.points > 0.0 && r.points * step_s <= HORIZON_S);
                if let Some(opened) = self.p99_forecast.update(reach.is_some(), persistence) {
                    let what = format!("ms p99 objective of {}", slo.route);
                    out.push(forecast(opened, "slo_latency", name, p.t, step_s, reach, target, &what));
                }
            }
        }
        if let Some(availability) = slo.availability {
            self.recent.push_back((p.requests, p.errors));
            let long = ((300.0 / step_s).ceil() as usize).max(3);
            while self.recent.len() > long {
                self.recent.pop_front();
            }
            let short = ((60.0 / step_s).ceil() as usize).max(1);
            let budget = (1.0 - availability / 100.0).max(1e-9);
            let burn = |n: usize| {
                let (r, e) = self.recent.iter().rev().take(n).fold((0, 0), |(r, e), x| (r + x.0, e + x.1));
                (r > 0).then(|| e as f64 / r as f64 / budget)
            };
            let (fast, slow) = (burn(short), burn(long));
            let burning = fast.zip(slow).is_some_and(|(f, s)| f >= FAST_BURN && s >= FAST_BURN);
            match self.burn.update(burning, 1) {
                Some(true) => {
                    let rate = fast.unwrap_or_default();
                    let lasts_s = BUDGET_S / rate;
                    out.push(Event::Open(Opened {
                        kind: AlertKind::Slo,
                        signal: "slo_availability",
                        cause: Cause::Errors,
                        began: p.t.saturating_sub(short as u64 * step_ms),
                        value: 100.0 * (1.0 - rate * budget),
                        baseline: availability,
                        score: rate,
                        lead_time_s: Some(lasts_s),
                        critical: true,
                        summary: format!(
                            "{} ({name}) burns its {availability} % availability budget {rate:.0}× too fast: at this rate the 30-day budget is gone in {}",
                            slo.route,
                            human(lasts_s)
                        ),
                    }));
                }
                Some(false) => out.push(Event::Close(AlertKind::Slo, "slo_availability")),
                None => {}
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn forecast(
    opened: bool,
    signal: &'static str,
    name: &str,
    t: u64,
    step_s: f64,
    reach: Option<super::forecast::Reach>,
    limit: f64,
    what: &str,
) -> Event {
    let Some(r) = reach.filter(|_| opened) else { return Event::Close(AlertKind::Forecast, signal) };
    let lead = r.points * step_s;
    Event::Open(Opened {
        kind: AlertKind::Forecast,
        signal,
        cause: Cause::Either,
        began: t,
        value: r.level,
        baseline: limit,
        score: r.level / limit,
        lead_time_s: Some(lead),
        critical: lead <= 600.0,
        summary: format!(
            "at this rate {name} reaches its {limit:.0} {what} in {} (now {:.1}, +{:.2} per {step_s} s)",
            human(lead),
            r.level,
            r.trend
        ),
    })
}

/// `90 s`, `12 min`, `5.2 h`, `3.1 d`.
fn human(s: f64) -> String {
    match s {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} d", s / 86_400.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: u64, requests: u64, errors: u64, p99: f64, memory_mib: f64) -> SeriesPoint {
        SeriesPoint {
            t,
            requests,
            errors,
            p50_ms: Some(p99 / 3.0),
            p95_ms: Some(p99 / 1.5),
            p99_ms: Some(p99),
            cold: 0,
            warm: requests,
            queue_depth: 0,
            instances: 1,
            memory_bytes: (memory_mib * MIB) as u64,
        }
    }

    fn opened(events: &[Event]) -> Vec<(&'static str, AlertKind)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Open(o) => Some((o.signal, o.kind)),
                Event::Close(..) => None,
            })
            .collect()
    }

    #[test]
    fn a_memory_leak_is_forecast_before_the_limit_then_seen_as_an_anomaly() {
        let mut c = Component::new();
        let limits = Limits { memory_mb: Some(512), ..Default::default() };
        let mut seen = Vec::new();
        for i in 0..200u64 {
            let mem = if i < 60 { 100.0 } else { 100.0 + 2.0 * (i - 60) as f64 };
            for (signal, kind) in opened(&c.observe("api", &point(i * 5000, 50, 0, 10.0, mem), 5.0, &limits)) {
                seen.push((i, signal, kind));
            }
        }
        let first_forecast = seen.iter().find(|s| s.2 == AlertKind::Forecast).expect("a forecast");
        assert_eq!(first_forecast.1, "memory");
        // The limit is reached at i = 266: the forecast came with a lead time of minutes.
        assert!(first_forecast.0 < 120, "{seen:?}");
        assert!(seen.iter().any(|s| s.1 == "memory" && s.2 == AlertKind::Anomaly), "{seen:?}");
    }

    #[test]
    fn a_p99_climbing_towards_its_objective_is_forecast_before_the_breach() {
        let mut c = Component::new();
        let slo = Slo { route: "/api/...".into(), component: "api".into(), p99_ms: Some(200.0), availability: None };
        let limits = Limits { slo: Some(&slo), ..Default::default() };
        let (mut forecast_at, mut breach_at) = (None, None);
        for i in 0..150u64 {
            let p99 = if i < 50 { 50.0 } else { 50.0 + 3.0 * (i - 50) as f64 };
            for e in c.observe("api", &point(i * 5000, 50, 0, p99, 100.0), 5.0, &limits) {
                if let Event::Open(o) = e {
                    match o.kind {
                        AlertKind::Forecast => forecast_at = forecast_at.or(Some((i, o.lead_time_s))),
                        AlertKind::Slo => breach_at = breach_at.or(Some(i)),
                        AlertKind::Anomaly => {}
                    }
                }
            }
        }
        let (f, lead) = forecast_at.expect("forecast");
        let b = breach_at.expect("breach");
        assert!(f < b, "the forecast ({f}) comes before the breach ({b})");
        assert!(lead.unwrap() > 0.0);
    }

    #[test]
    fn a_steady_error_rate_within_budget_does_not_burn_but_a_burst_does() {
        let mut c = Component::new();
        let slo = Slo { route: "/api/...".into(), component: "api".into(), p99_ms: None, availability: Some(99.0) };
        let limits = Limits { slo: Some(&slo), ..Default::default() };
        let mut burns = Vec::new();
        for i in 0..200u64 {
            // 0.2 % errors (within a 1 % budget), then 50 % for a while.
            let errors = if (150..190).contains(&i) { 50 } else { u64::from(i % 5 == 0) };
            for (signal, _) in opened(&c.observe("api", &point(i * 5000, 100, errors, 10.0, 100.0), 5.0, &limits)) {
                if signal == "slo_availability" {
                    burns.push(i);
                }
            }
        }
        assert_eq!(burns.len(), 1, "{burns:?}");
        // The 5-minute window must burn too: about 90 s at 50 % errors.
        assert!((150..175).contains(&burns[0]), "{burns:?}");
    }
}

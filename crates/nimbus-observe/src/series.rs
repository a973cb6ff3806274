//! The recent history of each component's metrics, for live plots: every step a sampler thread
//! reads each component's cumulative figures, turns them into per-step deltas (requests, errors,
//! latency quantiles, cold and warm starts) plus the gauges at that moment, and keeps them in a
//! bounded ring per component. Request paths only add to atomics ([`Tally`]); prometheus-client
//! keeps its histogram buckets private, so the request-duration buckets are counted here too,
//! with the same bounds.
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;

/// The default time between two points.
pub const DEFAULT_STEP: Duration = Duration::from_secs(5);
/// How far back each component's ring reaches.
const WINDOW: Duration = Duration::from_secs(3600);
/// Components with a ring at most; the least recently active one makes room for a new one. A full
/// ring is ~80 KB (720 points of ~112 bytes), so the history holds at most ~80 MB whatever runs.
const MAX_COMPONENTS: usize = 1_000;
/// Finite upper bounds of the request-duration buckets.
const LATENCY_BOUNDS: usize = 21;

/// Upper bounds (seconds) of the request-duration buckets, 50 µs .. ~52 s; the histogram of
/// `nimbus_request_duration_seconds` uses the same.
pub(crate) static LATENCY: LazyLock<Vec<f64>> =
    LazyLock::new(|| exponential_buckets(0.000_05, 2.0, LATENCY_BOUNDS as u16).collect());

/// What request paths add to: requests per duration bucket (the last is `+Inf`) and failures.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    buckets: [AtomicU64; LATENCY_BOUNDS + 1],
    errors: AtomicU64,
}

impl Tally {
    /// One request, event delivery or actor call that took `secs`; `failed` counts it as an error.
    pub(crate) fn request(&self, secs: f64, failed: bool) {
        let bucket = LATENCY.partition_point(|&bound| bound < secs);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the sampler reads of one component.
#[derive(Debug)]
pub(crate) struct Probe {
    pub(crate) tally: Arc<Tally>,
    pub(crate) cold: Counter,
    pub(crate) warm: Counter,
    pub(crate) queue_depth: Gauge,
    pub(crate) instances: Gauge,
    pub(crate) memory: Gauge,
}

/// The cumulative counts of a component at one sample.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    buckets: [u64; LATENCY_BOUNDS + 1],
    errors: u64,
    cold: u64,
    warm: u64,
}

impl Probe {
    fn totals(&self) -> Totals {
        Totals {
            buckets: std::array::from_fn(|i| self.tally.buckets[i].load(Ordering::Relaxed)),
            errors: self.tally.errors.load(Ordering::Relaxed),
            cold: self.cold.get(),
            warm: self.warm.get(),
        }
    }
}

/// One step of one component: counts are of the step, gauges as of its end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesPoint {
    /// The end of the step, in Unix milliseconds.
    pub t: u64,
    /// Requests, event deliveries and actor calls that ended in the step.
    pub requests: u64,
    /// Those that failed: HTTP 5xx, and event deliveries and actor calls that did not end `ok`.
    pub errors: u64,
    /// Estimated median duration in milliseconds (`None` without requests).
    pub p50_ms: Option<f64>,
    /// Estimated 95th percentile duration in milliseconds.
    pub p95_ms: Option<f64>,
    /// Estimated 99th percentile duration in milliseconds.
    pub p99_ms: Option<f64>,
    /// Cold instantiations in the step.
    pub cold: u64,
    /// Warm instantiations in the step.
    pub warm: u64,
    /// Requests waiting for an admission slot.
    pub queue_depth: u64,
    /// Live instances.
    pub instances: u64,
    /// Memory of live instances, in bytes.
    pub memory_bytes: u64,
}

impl SeriesPoint {
    fn between(t: u64, before: &Totals, now: &Totals, probe: &Probe) -> Self {
        let counts: [u64; LATENCY_BOUNDS + 1] =
            std::array::from_fn(|i| now.buckets[i].saturating_sub(before.buckets[i]));
        let ms = |q| quantile(&LATENCY, &counts, q).map(|secs| secs * 1000.0);
        let gauge = |g: &Gauge| u64::try_from(g.get()).unwrap_or(0);
        Self {
            t,
            requests: counts.iter().sum(),
            errors: now.errors.saturating_sub(before.errors),
            p50_ms: ms(0.5),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            cold: now.cold.saturating_sub(before.cold),
            warm: now.warm.saturating_sub(before.warm),
            queue_depth: gauge(&probe.queue_depth),
            instances: gauge(&probe.instances),
            memory_bytes: gauge(&probe.memory),
        }
    }

    fn active(&self) -> bool {
        self.requests + self.errors + self.cold + self.warm + self.queue_depth + self.instances + self.memory_bytes > 0
    }
}

/// The `q` quantile (0..=1) of observations counted per bucket (`counts[i]` are those at most
/// `bounds[i]` and above `bounds[i - 1]`; the last count is above every bound), interpolating
/// linearly inside the bucket it falls in, as Prometheus's `histogram_quantile` does. `None`
/// without observations; the highest bound when it falls above it.
fn quantile(bounds: &[f64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0;
    for (i, &count) in counts.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            let Some(&upper) = bounds.get(i) else { return Some(lower) };
            return Some(lower + (upper - lower) * (rank - below as f64) / count as f64);
        }
        below += count;
    }
    bounds.last().copied()
}

/// One component's points, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentSeries {
    /// The app.
    pub app: String,
    /// The component.
    pub component: String,
    /// One point per step.
    pub points: Vec<SeriesPoint>,
}

type Key = (String, String);

struct Sampled {
    probe: Probe,
    /// The totals at the last sample.
    last: Totals,
}

struct Ring {
    points: VecDeque<SeriesPoint>,
    /// When the component last had a point with activity (Unix ms).
    active: u64,
}

#[derive(Default)]
struct State {
    components: HashMap<Key, Sampled>,
    rings: HashMap<Key, Ring>,
}

/// The per-step history of every component's metrics (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct Series {
    step: Duration,
    /// Points per ring.
    capacity: usize,
    max_components: usize,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Series {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Series").field("step", &self.step).finish_non_exhaustive()
    }
}

impl Series {
    /// A history with a point every `step` (at least 1 ms), an hour deep.
    pub(crate) fn new(step: Duration) -> Self {
        Self::bounded(step, MAX_COMPONENTS)
    }

    fn bounded(step: Duration, max_components: usize) -> Self {
        let step = step.max(Duration::from_millis(1));
        let capacity = usize::try_from(WINDOW.as_millis() / step.as_millis()).unwrap_or(usize::MAX).max(1);
        Self { step, capacity, max_components, state: Arc::default() }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The time between two points.
    pub fn step(&self) -> Duration {
        self.step
    }

    /// Samples `probe` as component `component` of `app` from now on; the tally of the component
    /// if it is sampled already (its handles are then the same).
    pub(crate) fn register(&self, app: &str, component: &str, probe: Probe) -> Arc<Tally> {
        let mut state = self.state();
        let sampled = state
            .components
            .entry((app.into(), component.into()))
            .or_insert(Sampled { probe, last: Totals::default() });
        sampled.probe.tally.clone()
    }

    /// Takes a point of every component, ending at `t` (Unix ms).
    fn sample(&self, t: u64) {
        let mut guard = self.state();
        let State { components, rings } = &mut *guard;
        for (key, sampled) in components.iter_mut() {
            let now = sampled.probe.totals();
            let point = SeriesPoint::between(t, &sampled.last, &now, &sampled.probe);
            sampled.last = now;
            if !rings.contains_key(key) {
                if !point.active() {
                    continue;
                }
                if rings.len() >= self.max_components
                    && let Some(idlest) = rings.iter().min_by_key(|(_, r)| r.active).map(|(k, _)| k.clone())
                {
                    rings.remove(&idlest);
                }
                rings.insert(key.clone(), Ring { points: VecDeque::new(), active: t });
            }
            let Some(ring) = rings.get_mut(key) else { continue };
            if point.active() {
                ring.active = t;
            }
            if ring.points.len() >= self.capacity {
                ring.points.pop_front();
            }
            ring.points.push_back(point);
        }
        // A ring idle for the whole window holds nothing worth plotting.
        let window = u64::try_from(WINDOW.as_millis()).unwrap_or(u64::MAX);
        rings.retain(|_, r| t.saturating_sub(r.active) < window);
    }

    /// How many components of `app` (all apps if `None`) named `component` (any if `None`) have
    /// a history.
    pub fn count(&self, app: Option<&str>, component: Option<&str>) -> usize {
        let state = self.state();
        state
            .rings
            .keys()
            .filter(|(a, c)| app.is_none_or(|app| app == a) && component.is_none_or(|want| want == c))
            .count()
    }

    /// The points taken after `t` (Unix ms) of every component, oldest first, with their app and
    /// component.
    pub fn since(&self, t: u64) -> Vec<(String, String, SeriesPoint)> {
        let state = self.state();
        let mut out: Vec<(String, String, SeriesPoint)> = Vec::new();
        for ((a, c), ring) in &state.rings {
            let newer = ring.points.iter().rev().take_while(|p| p.t > t).count();
            out.extend(ring.points.iter().skip(ring.points.len() - newer).map(|p| (a.clone(), c.clone(), *p)));
        }
        out.sort_by_key(|(_, _, p)| p.t);
        out
    }

    /// The points of the last `range` of the components of `app` (all apps if `None`) named
    /// `component` (any if `None`), by app and component.
    pub fn query(&self, app: Option<&str>, component: Option<&str>, range: Duration) -> Vec<ComponentSeries> {
        let since = now_ms().saturating_sub(u64::try_from(range.as_millis()).unwrap_or(u64::MAX));
        let state = self.state();
        let mut out: Vec<ComponentSeries> = state
            .rings
            .iter()
            .filter(|((a, c), _)| app.is_none_or(|app| app == a) && component.is_none_or(|want| want == c))
            .map(|((a, c), ring)| ComponentSeries {
                app: a.clone(),
                component: c.clone(),
                points: ring.points.iter().filter(|p| p.t > since).copied().collect(),
            })
            .collect();
        out.sort_by(|x, y| (&x.app, &x.component).cmp(&(&y.app, &y.component)));
        out
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The sampler thread: it takes a point every step until this is dropped.
pub(crate) struct Sampler {
    _stop: Sender<()>,
}

impl Sampler {
    pub(crate) fn start(series: Series) -> std::io::Result<Self> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new().name("nimbus-series".into()).spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(series.step) {
                series.sample(now_ms());
            }
        })?;
        Ok(Self { _stop: stop })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe() -> Probe {
        Probe {
            tally: Arc::default(),
            cold: Counter::default(),
            warm: Counter::default(),
            queue_depth: Gauge::default(),
            instances: Gauge::default(),
            memory: Gauge::default(),
        }
    }

    fn close(got: Option<f64>, want: f64) {
        let got = got.expect("a quantile");
        assert!((got - want).abs() < 1e-6, "got {got}, want {want}");
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_they_fall_in() {
        let bounds = [1.0, 2.0, 4.0];
        // Uniform over 0..4 with buckets as wide as their bound says: 25, 25, 50, 0.
        let counts = [25, 25, 50, 0];
        close(quantile(&bounds, &counts, 0.5), 2.0);
        close(quantile(&bounds, &counts, 0.1), 0.4);
        close(quantile(&bounds, &counts, 0.75), 3.0);
        close(quantile(&bounds, &counts, 0.99), 3.96);
        close(quantile(&bounds, &counts, 1.0), 4.0);
        // All in one bucket: spread over it.
        close(quantile(&bounds, &[0, 0, 10, 0], 0.5), 3.0);
        // Above every bound: the highest bound.
        close(quantile(&bounds, &[0, 0, 0, 7], 0.5), 4.0);
        close(quantile(&bounds, &[99, 0, 0, 1], 0.999), 4.0);
        // Empty buckets before the rank do not move it.
        close(quantile(&bounds, &[0, 10, 0, 0], 0.0), 1.0);
        assert_eq!(quantile(&bounds, &[0, 0, 0, 0], 0.5), None);
    }

    #[test]
    fn requests_land_in_the_bucket_whose_bound_is_at_least_their_duration() {
        let tally = Tally::default();
        tally.request(0.000_05, false); // on the first bound
        tally.request(0.000_06, true);
        tally.request(1e6, false); // beyond every bound
        let counts: Vec<u64> = tally.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        assert_eq!((counts[0], counts[1], counts[LATENCY_BOUNDS]), (1, 1, 1));
        assert_eq!(counts.iter().sum::<u64>(), 3);
        assert_eq!(tally.errors.load(Ordering::Relaxed), 1);
        assert_eq!(LATENCY.len(), LATENCY_BOUNDS);
    }

    #[test]
    fn each_step_holds_the_deltas_of_that_step_and_the_gauges_at_its_end() {
        let series = Series::new(Duration::from_secs(5));
        let tally = series.register("shop", "web", probe());
        let again = series.register("shop", "web", Probe { tally: Arc::default(), ..probe() });
        assert!(Arc::ptr_eq(&tally, &again), "a component registered twice shares its tally");
        let state = series.state();
        let p = &state.components[&("shop".to_string(), "web".to_string())].probe;
        let (cold, warm, depth) = (p.cold.clone(), p.warm.clone(), p.queue_depth.clone());
        drop(state);

        series.sample(1_000); // nothing yet: no ring
        assert!(series.query(None, None, WINDOW).is_empty());

        for ms in [1, 1, 1, 1, 1, 1, 1, 1, 1, 100] {
            tally.request(f64::from(ms) / 1000.0, ms == 100);
        }
        cold.inc();
        warm.inc_by(9);
        depth.set(3);
        series.sample(6_000);
        tally.request(0.002, false);
        depth.set(0);
        series.sample(11_000);
        series.sample(16_000);

        let Some(all) = series.state().rings.get(&("shop".into(), "web".into())).map(|r| r.points.clone()) else {
            panic!("no ring")
        };
        let points: Vec<_> = all.into_iter().collect();
        assert_eq!(points.iter().map(|p| p.t).collect::<Vec<_>>(), [6_000, 11_000, 16_000]);
        let first = points[0];
        assert_eq!((first.requests, first.errors, first.cold, first.warm, first.queue_depth), (10, 1, 1, 9, 3));
        // 9 of 10 in the bucket (0.8 ms, 1.6 ms]: the median, rank 5, is 5/9 of the way through it;
        // the 99th percentile, rank 9.9, is 0.9 of the way through (51.2 ms, 102.4 ms].
        close(first.p50_ms, 0.8 + 0.8 * 5.0 / 9.0);
        close(first.p95_ms, 51.2 + 51.2 * 0.5);
        close(first.p99_ms, 51.2 + 51.2 * 0.9);
        assert_eq!((points[1].requests, points[1].errors, points[1].cold, points[1].queue_depth), (1, 0, 0, 0));
        assert_eq!((points[2].requests, points[2].p50_ms), (0, None));
    }

    #[test]
    fn a_ring_keeps_its_last_hour_and_idle_components_age_out() {
        let series = Series::new(Duration::from_secs(5));
        let tally = series.register("a", "c", probe());
        let capacity = series.capacity as u64;
        assert_eq!(capacity, 720);
        let len = || series.state().rings.get(&("a".into(), "c".into())).map(|r| r.points.len());
        for step in 1..=capacity + 10 {
            tally.request(0.001, false);
            series.sample(step * 5_000);
        }
        assert_eq!(len(), Some(720), "the ring is bounded");
        // Idle after that: gone once its last activity is an hour old.
        for step in capacity + 11..2 * capacity + 10 {
            series.sample(step * 5_000);
        }
        assert_eq!(len(), Some(720), "idle for less than an hour");
        series.sample((2 * capacity + 10) * 5_000);
        assert_eq!(len(), None, "an hour idle drops the ring");
    }

    #[test]
    fn the_least_recently_active_component_makes_room() {
        let series = Series::bounded(Duration::from_secs(5), 2);
        let tallies: Vec<_> = ["x", "y", "z"].iter().map(|c| series.register("a", c, probe())).collect();
        tallies[0].request(0.001, false);
        series.sample(5_000);
        tallies[1].request(0.001, false);
        series.sample(10_000);
        tallies[0].request(0.001, false);
        series.sample(15_000);
        // x was active at 15 s, y at 10 s: z takes y's place.
        tallies[2].request(0.001, false);
        series.sample(20_000);
        let mut names: Vec<_> = series.state().rings.keys().map(|(_, c)| c.clone()).collect();
        names.sort();
        assert_eq!(names, ["x", "z"]);
    }

    #[test]
    fn the_sampler_takes_a_point_every_step_and_stops_when_dropped() {
        let series = Series::new(Duration::from_millis(20));
        let tally = series.register("a", "c", probe());
        tally.request(0.001, false);
        let sampler = Sampler::start(series.clone()).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        drop(sampler);
        std::thread::sleep(Duration::from_millis(50));
        let taken = series.query(Some("a"), Some("c"), WINDOW)[0].points.len();
        assert!(taken >= 2, "{taken} points");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(series.query(None, None, WINDOW)[0].points.len(), taken, "no points after the sampler stopped");
        assert_eq!(series.query(None, None, WINDOW)[0].points.iter().map(|p| p.requests).sum::<u64>(), 1);
        assert!(series.query(Some("b"), None, WINDOW).is_empty());
    }
}

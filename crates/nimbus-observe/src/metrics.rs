//! Metrics in Prometheus/OpenMetrics text (prometheus-client). Families are registered once;
//! each component resolves its label set up front ([`ComponentMetrics`]) so request paths only
//! touch atomics. Each component is also sampled into the per-step [`Series`].
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::series::{LATENCY, Probe, Series, Tally};

/// The `Content-Type` of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    app: String,
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    app: String,
    component: String,
    /// `http`, `event` or `actor`.
    kind: String,
    /// `2xx`...`5xx` for HTTP and actor calls, `ok`/`failed`/`rejected` for events.
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    app: String,
    component: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StartLabels {
    app: String,
    component: String,
    /// `cold` (the first instance after the component was loaded, or a service process start)
    /// or `warm` (from the pre-instantiated component with a pooled, resident slot).
    start: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    app: String,
    component: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabels {
    signal: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    Histogram::new(LATENCY.iter().copied())
}

fn bytes() -> Histogram {
    // 64 KiB .. 4 GiB
    Histogram::new(exponential_buckets(65_536.0, 2.0, 17))
}

/// Every metric family of the process.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    requests: Family<RequestLabels, Counter>,
    duration: Histograms<ComponentLabels>,
    errors: Family<ClassLabels, Counter>,
    instantiations: Family<StartLabels, Counter>,
    instantiate_duration: Histograms<ComponentLabels>,
    queue_depth: Family<ComponentLabels, Gauge>,
    queue_wait: Histograms<ComponentLabels>,
    instances: Family<ComponentLabels, Gauge>,
    memory: Family<ComponentLabels, Gauge>,
    memory_peak: Histograms<ComponentLabels>,
    evictions: Family<ClassLabels, Counter>,
    bytes: Family<DirectionLabels, Counter>,
    dropped: Family<SignalLabels, Counter>,
    skipped: Counter,
    series: Series,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family; the series has a point every [`crate::DEFAULT_SERIES_STEP`].
    pub fn new() -> Self {
        Self::with_step(crate::DEFAULT_SERIES_STEP)
    }

    /// Registers every family; the series has a point every `step`.
    pub(crate) fn with_step(step: Duration) -> Self {
        let m = Self {
            registry: Arc::default(),
            requests: Family::default(),
            duration: Family::new_with_constructor(latency),
            errors: Family::default(),
            instantiations: Family::default(),
            instantiate_duration: Family::new_with_constructor(latency),
            queue_depth: Family::default(),
            queue_wait: Family::new_with_constructor(latency),
            instances: Family::default(),
            memory: Family::default(),
            memory_peak: Family::new_with_constructor(bytes),
            evictions: Family::default(),
            bytes: Family::default(),
            dropped: Family::default(),
            skipped: Counter::default(),
            series: Series::new(step),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|p| p.into_inner());
            let r = r.sub_registry_with_prefix("nimbus");
            r.register(
                "requests",
                "Requests, event deliveries and actor calls handled, by outcome",
                m.requests.clone(),
            );
            r.register_with_unit(
                "request_duration",
                "Time from admission to the response head (or the end of an event or actor call)",
                Unit::Seconds,
                m.duration.clone(),
            );
            r.register(
                "errors",
                "Failed requests by class (timeout, trap, memory, shed, upstream, ...)",
                m.errors.clone(),
            );
            r.register("instantiations", "Instances created, cold or warm", m.instantiations.clone());
            r.register_with_unit(
                "instantiate_duration",
                "Time to create an instance",
                Unit::Seconds,
                m.instantiate_duration.clone(),
            );
            r.register("admission_queue_depth", "Requests waiting for an admission slot", m.queue_depth.clone());
            r.register_with_unit(
                "admission_wait",
                "Time admitted requests waited for their admission slot",
                Unit::Seconds,
                m.queue_wait.clone(),
            );
            r.register(
                "instances",
                "Live instances (wasm instances in use, service processes running)",
                m.instances.clone(),
            );
            r.register_with_unit(
                "memory",
                "Linear memory of live wasm instances; resident memory of service processes",
                Unit::Bytes,
                m.memory.clone(),
            );
            r.register_with_unit(
                "instance_memory_peak",
                "Largest linear memory of each wasm instance",
                Unit::Bytes,
                m.memory_peak.clone(),
            );
            r.register("evictions", "Instances ended by the platform, by reason", m.evictions.clone());
            r.register_with_unit("http", "Request and response body bytes, by direction", Unit::Bytes, m.bytes.clone());
            r.register(
                "telemetry_dropped",
                "Spans, log records and metric points dropped because a queue was full or their OTLP export failed",
                m.dropped.clone(),
            );
            r.register(
                "trace_store_skipped",
                "Successful, fast traces the trace store left out beyond its per-second budget",
                m.skipped.clone(),
            );
        }
        m
    }

    /// The handles of one component.
    pub fn component(&self, app: &str, component: &str) -> ComponentMetrics {
        let labels = ComponentLabels { app: app.into(), component: component.into() };
        let start = |s: &str| {
            self.instantiations.get_or_create_owned(&StartLabels {
                app: app.into(),
                component: component.into(),
                start: s.into(),
            })
        };
        let dir = |d: &str| {
            self.bytes.get_or_create_owned(&DirectionLabels {
                app: app.into(),
                component: component.into(),
                direction: d.into(),
            })
        };
        let http = |class: &str| {
            self.requests.get_or_create_owned(&RequestLabels {
                app: app.into(),
                component: component.into(),
                kind: "http".into(),
                outcome: class.into(),
            })
        };
        let (cold, warm) = (start("cold"), start("warm"));
        let queue_depth = self.queue_depth.get_or_create_owned(&labels);
        let instances = self.instances.get_or_create_owned(&labels);
        let memory = self.memory.get_or_create_owned(&labels);
        let probe = Probe {
            tally: Arc::default(),
            cold: cold.clone(),
            warm: warm.clone(),
            queue_depth: queue_depth.clone(),
            instances: instances.clone(),
            memory: memory.clone(),
        };
        ComponentMetrics {
            http: [http("1xx"), http("2xx"), http("3xx"), http("4xx"), http("5xx")],
            duration: self.duration.get_or_create_owned(&labels),
            tally: self.series.register(app, component, probe),
            cold,
            warm,
            instantiate_duration: self.instantiate_duration.get_or_create_owned(&labels),
            queue_depth,
            queue_wait: self.queue_wait.get_or_create_owned(&labels),
            instances,
            memory,
            memory_peak: self.memory_peak.get_or_create_owned(&labels),
            bytes_in: dir("in"),
            bytes_out: dir("out"),
            families: self.clone(),
            labels,
        }
    }

    /// Counts telemetry dropped by a full queue.
    pub(crate) fn dropped(&self, signal: &str) -> Counter {
        self.dropped.get_or_create_owned(&SignalLabels { signal: signal.into() })
    }

    /// Counts traces the store's policy left out.
    pub(crate) fn skipped(&self) -> Counter {
        self.skipped.clone()
    }

    /// Registers more families (metering's usage counters).
    pub(crate) fn with_registry(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.registry.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The recent per-step history of every component.
    pub fn series(&self) -> &Series {
        &self.series
    }

    /// Every metric in OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The metric handles of one component (labels `app` and `component`), resolved once.
#[derive(Clone)]
pub struct ComponentMetrics {
    http: [Counter; 5],
    duration: Histogram,
    tally: Arc<Tally>,
    cold: Counter,
    warm: Counter,
    instantiate_duration: Histogram,
    /// Requests waiting for an admission slot.
    pub queue_depth: Gauge,
    queue_wait: Histogram,
    /// Live instances.
    pub instances: Gauge,
    /// Linear memory of live instances.
    pub memory: Gauge,
    memory_peak: Histogram,
    bytes_in: Counter,
    bytes_out: Counter,
    families: Metrics,
    labels: ComponentLabels,
}

impl std::fmt::Debug for ComponentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentMetrics")
            .field("app", &self.labels.app)
            .field("component", &self.labels.component)
            .finish()
    }
}

impl ComponentMetrics {
    /// An HTTP request answered with `status` after `elapsed`.
    pub fn http_request(&self, status: u16, elapsed: Duration) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.http[class].inc();
        self.duration.observe(elapsed.as_secs_f64());
        self.tally.request(elapsed.as_secs_f64(), class == 4);
    }

    /// An event delivery or actor call (`kind`) that ended with `outcome` after `elapsed` (the
    /// series counts every outcome but `ok` as an error).
    pub fn invocation(&self, kind: &str, outcome: &str, elapsed: Duration) {
        self.families
            .requests
            .get_or_create(&RequestLabels {
                app: self.labels.app.clone(),
                component: self.labels.component.clone(),
                kind: kind.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.duration.observe(elapsed.as_secs_f64());
        self.tally.request(elapsed.as_secs_f64(), outcome != "ok");
    }

    /// A failure of class `class` (`timeout`, `trap`, `memory`, `shed`, `upstream`...).
    pub fn error(&self, class: &str) {
        self.families.errors.get_or_create(&self.class(class)).inc();
    }

    /// An instance ended by the platform for `reason` (`idle`, `timeout`, `memory`, `crash`...).
    pub fn eviction(&self, reason: &str) {
        self.families.evictions.get_or_create(&self.class(reason)).inc();
    }

    fn class(&self, class: &str) -> ClassLabels {
        ClassLabels { app: self.labels.app.clone(), component: self.labels.component.clone(), class: class.into() }
    }

    /// An instance was created in `elapsed`; `cold` for the first after a load or a process start.
    pub fn instantiated(&self, cold: bool, elapsed: Duration) {
        if cold { &self.cold } else { &self.warm }.inc();
        self.instantiate_duration.observe(elapsed.as_secs_f64());
    }

    /// A request waited `wait` for its admission slot.
    pub fn admitted(&self, wait: Duration) {
        self.queue_wait.observe(wait.as_secs_f64());
    }

    /// An instance ended having grown its linear memory to `peak` bytes.
    pub fn memory_peak(&self, peak: usize) {
        self.memory_peak.observe(peak as f64);
    }

    /// Body bytes received.
    pub fn bytes_in(&self, n: u64) {
        self.bytes_in.inc_by(n);
    }

    /// Body bytes sent.
    pub fn bytes_out(&self, n: u64) {
        self.bytes_out.inc_by(n);
    }
}

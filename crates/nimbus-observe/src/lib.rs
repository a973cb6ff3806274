//! Nimbus observability: W3C traces with spans for every hop, exported over OTLP and kept in an
//! embedded trace store; Prometheus/OpenMetrics metrics and their recent per-step history
//! ([`Series`]); per-invocation logs.
//!
//! This crate owns the data model and where the data goes. An [`Observer`] (one per process)
//! holds the [`Tracer`], the [`Metrics`] registry and the telemetry pipeline: a background
//! thread that takes finished traces and log records from a shared buffer every 50 ms and
//! writes them to bounded on-disk stores ([`TraceStore`] of OTLP protobuf spans, which keeps the
//! traces its [`StorePolicy`] selects; [`LogStore`] of JSON records). When the standard
//! `OTEL_EXPORTER_OTLP_*` environment asks for it ([`OtlpPlan`]), every span and every stored
//! log record is exported over OTLP (http/protobuf or gRPC) with `opentelemetry-otlp`, and every
//! metric family (counters, gauges, histograms, labels as attributes, cumulative) every
//! `OTEL_METRIC_EXPORT_INTERVAL`, each from a thread of its own. With metrics on, another thread
//! samples every component's metrics each step into the [`Series`]; the threads end when the
//! last clone of the observer is dropped. Request paths never wait on it: a
//! full buffer drops telemetry and counts it in `nimbus_telemetry_dropped_total`. It does not
//! decide what to instrument or serve the data over HTTP (the gateway, executors and control
//! API do).
//!
//! # Instrumenting a subsystem
//!
//! The whole API a subsystem needs is three types:
//!
//! * a [`Span`]: start one from the tracer (a request or delivery entering the process,
//!   honouring the caller's [`TraceContext`]) or as a child of the span you were handed; set
//!   semantic-convention attributes with [`Span::set`]; mark failures with [`Span::set_error`];
//!   it ends when dropped. Hand [`Span::context`] on to whatever you call (a `traceparent`
//!   header, a CloudEvent extension); hand a [`SpanRef`] ([`Span::handle`]) to code that starts
//!   children of your span without owning it. Unsampled and disabled spans cost almost nothing.
//! * a [`ComponentTelemetry`] (from [`Observer::component`]): the component's pre-resolved
//!   metric handles ([`ComponentMetrics`]) and its log sink ([`ComponentTelemetry::log`]).
//! * a [`Telemetry`]: the pair an invocation carries through the executor.
//!
//! New metric families go in [`Metrics::new`] next to the others, with `app` and `component`
//! labels, so every subsystem's figures line up.
//!
//! Errors reach people through [`report`]: a library error in Nimbus says what failed and keeps
//! its typed cause as `source()` (a [`Cause`]); whatever shows one to a user, a guest or a log
//! renders the whole chain with [`report`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), nimbus_observe::ObserveError> {
//! use nimbus_observe::{ObserveConfig, Observer, SpanKind, TraceContext};
//!
//! let observer = Observer::start(ObserveConfig { dir: Some(".nimbus".into()), ..Default::default() })?;
//! let hello = observer.component("shop", "hello");
//! let mut span = observer.tracer().start("GET /hello", SpanKind::Server, TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
//! span.set("http.route", "/hello");
//! let child = span.child("kv.get", SpanKind::Client);
//! hello.log(child.context(), Some("req-1"), "stdout", "info", "looked up the cart");
//! drop(child);
//! hello.metrics.http_request(200, std::time::Duration::from_micros(80));
//! drop(span);
//! observer.flush().await; // written to the trace store (and OTLP)
//! # Ok(()) }
//! ```

mod context;
mod http_request;
pub mod insight;
mod logs;
pub mod metering;
mod metrics;
mod otlp;
mod pipeline;
mod policy;
mod report;
mod segments;
mod series;
mod span;
mod traces;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use context::{TRACEPARENT, TraceContext};
pub use http_request::HttpRequest;
pub use logs::{LogQuery, LogRecord, LogStore};
pub use metering::{Busy, UsageMeter};
pub use metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, ComponentMetrics, Metrics};
pub use opentelemetry::trace::SpanKind;
pub use otlp::{OtlpPlan, Target as OtlpTarget};
pub use policy::StorePolicy;
/// A counter handle.
pub use prometheus_client::metrics::counter::Counter;
/// A gauge handle (the type of [`ComponentMetrics`]'s gauges).
pub use prometheus_client::metrics::gauge::Gauge;
pub use report::{Cause, cause, report};
pub use segments::Bounds;
pub use series::{ComponentSeries, DEFAULT_STEP as DEFAULT_SERIES_STEP, Series, SeriesPoint};
pub use span::{Span, SpanRef, Tracer};
pub use traces::{SpanView, TraceQuery, TraceStore, TraceSummary};

use crate::pipeline::{Pipeline, Sinks};
use crate::series::Sampler;

/// What went wrong starting the observer.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The trace or log store's directory could not be created or opened.
    #[error("could not open the telemetry store in {dir}")]
    Store {
        /// The directory of the store.
        dir: PathBuf,
        /// Why it could not be opened.
        source: std::io::Error,
    },
    /// The `OTEL_*` environment asks for OTLP export in a way it cannot be set up.
    #[error("OTLP export could not be set up from the environment; check the OTEL_* variables")]
    Otlp(#[source] Cause),
    /// An alert sink could not be set up (e.g. a webhook URL that does not parse).
    #[error("{0}")]
    Alerts(String),
    /// Metering could not start (its configuration or its store).
    #[error(transparent)]
    Metering(metering::MeteringError),
    /// The thread sampling metrics into the series could not be started.
    #[error("could not start the metrics sampler thread")]
    Sampler(#[source] std::io::Error),
}

/// How the observer is set up.
#[derive(Debug, Clone)]
pub struct ObserveConfig {
    /// Where the trace and log stores live (`traces/` and `logs/` inside it); `None` keeps no
    /// stores (spans still go to OTLP, logs to the process log).
    pub dir: Option<PathBuf>,
    /// Record spans.
    pub traces: bool,
    /// Keep metrics for `/metrics`, and their per-step history.
    pub metrics: bool,
    /// The time between two points of the metrics' history ([`Series`]).
    pub series_step: Duration,
    /// Share of new traces recorded (a sampled incoming `traceparent` is always followed).
    pub sample_ratio: f64,
    /// Bounds of the trace store.
    pub trace_store: Bounds,
    /// Which traces the trace store keeps.
    pub store_policy: StorePolicy,
    /// Bounds of the log store.
    pub log_store: Bounds,
    /// Where alerts go and silences are kept (alerting runs with metrics on).
    pub insight: insight::InsightConfig,
    /// Metering of every component's usage; `None` meters nothing.
    pub metering: Option<metering::MeteringConfig>,
    /// Export over OTLP what the `OTEL_*` environment asks for ([`OtlpPlan`]): spans if
    /// `traces`, metrics if `metrics`, log records always. `false` exports nothing: Nimbus's
    /// `--no-telemetry` sets it, so with telemetry off log records are kept for `nimbus logs`
    /// but no signal leaves the node.
    pub export: bool,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        let day = Duration::from_secs(24 * 3600);
        Self {
            dir: None,
            traces: true,
            metrics: true,
            series_step: DEFAULT_SERIES_STEP,
            sample_ratio: 1.0,
            trace_store: Bounds { max_bytes: 128 << 20, retention: day },
            store_policy: StorePolicy::default(),
            log_store: Bounds { max_bytes: 64 << 20, retention: 7 * day },
            insight: insight::InsightConfig::default(),
            metering: None,
            export: true,
        }
    }
}

/// The process's tracer, metrics, stores and metering. Cheap to clone.
#[derive(Clone)]
pub struct Observer(Arc<Inner>, Owner);

/// The revision (and the app's tenant) the components an observer hands out are metered under.
#[derive(Debug, Clone, Default)]
struct Owner {
    revision: Arc<str>,
    tenant: Arc<str>,
}

struct Inner {
    tracer: Tracer,
    metrics: Option<Metrics>,
    pipeline: Option<Arc<Pipeline>>,
    traces: Option<TraceStore>,
    logs: Option<LogStore>,
    insight: Option<insight::Insight>,
    metering: Option<metering::Metering>,
    /// What is exported over OTLP, and where.
    exports: OtlpPlan,
    /// Samples the metrics into their series until dropped.
    _sampler: Option<Sampler>,
    /// Exports the metrics over OTLP until dropped.
    _metric_export: Option<otlp::MetricExport>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("tracer", &self.0.tracer)
            .field("metrics", &self.0.metrics.is_some())
            .field("traces", &self.0.traces)
            .field("logs", &self.0.logs)
            .finish()
    }
}

impl Default for Observer {
    fn default() -> Self {
        Self::disabled()
    }
}

impl Observer {
    /// Opens the stores, builds the OTLP exporters the environment asks for (an `OTEL_*`
    /// variable it cannot honour is an error), and starts the pipeline.
    pub fn start(config: ObserveConfig) -> Result<Self, ObserveError> {
        let metrics = config.metrics.then(|| Metrics::with_step(config.series_step));
        let sampler =
            metrics.as_ref().map(|m| Sampler::start(m.series().clone())).transpose().map_err(ObserveError::Sampler)?;
        let counters = metrics.clone().unwrap_or_default();
        let exports = match config.export {
            true => OtlpPlan::from_env().map_err(ObserveError::Otlp)?.only(config.traces, config.metrics, true),
            false => OtlpPlan::default(),
        };
        let otlp = otlp::Otlp::start(&exports, counters.dropped("otlp_spans"), counters.dropped("otlp_logs"))
            .map_err(ObserveError::Otlp)?;
        let metric_export = match (&exports.metrics, &metrics) {
            (Some(target), Some(m)) => Some(
                otlp::MetricExport::start(target, exports.metric_interval, m.clone(), counters.dropped("otlp_metrics"))
                    .map_err(ObserveError::Otlp)?,
            ),
            _ => None,
        };
        let traces = config.dir.as_ref().filter(|_| config.traces).map(|d| TraceStore::new(&d.join("traces")));
        let logs = config.dir.as_ref().map(|d| LogStore::new(&d.join("logs")));
        let sinks = Sinks {
            traces: traces.clone().map(|s| (s, config.trace_store)),
            logs: logs.clone().map(|s| (s, config.log_store)),
            otlp,
            dropped: (counters.dropped("spans"), counters.dropped("logs"), counters.skipped()),
            policy: config.store_policy,
        };
        let dir = config.dir.clone().unwrap_or_default();
        let pipeline = Pipeline::start(sinks).map_err(|source| ObserveError::Store { dir, source })?;
        let tracer =
            if config.traces { Tracer::new(pipeline.clone(), config.sample_ratio) } else { Tracer::disabled() };
        let insight = match &metrics {
            Some(m) => {
                let insight = insight::Insight::new(&config.insight).map_err(ObserveError::Alerts)?;
                insight.watch(m.series().clone(), traces.clone(), logs.clone());
                Some(insight)
            }
            None => None,
        };
        let metering = match config.metering {
            Some(c) => {
                let m = metering::Metering::open(c, metrics.as_ref()).map_err(ObserveError::Metering)?;
                if let Some(insight) = &insight {
                    m.notify_through(insight.clone());
                }
                Some(m)
            }
            None => None,
        };
        Ok(Self(
            Arc::new(Inner {
                tracer,
                metrics,
                pipeline: Some(pipeline),
                traces,
                logs,
                insight,
                metering,
                exports,
                _sampler: sampler,
                _metric_export: metric_export,
            }),
            Owner::default(),
        ))
    }

    /// Records nothing, keeps nothing: guest output goes to the process log only.
    pub fn disabled() -> Self {
        Self(
            Arc::new(Inner {
                tracer: Tracer::disabled(),
                metrics: None,
                pipeline: None,
                traces: None,
                logs: None,
                insight: None,
                metering: None,
                exports: OtlpPlan::default(),
                _sampler: None,
                _metric_export: None,
            }),
            Owner::default(),
        )
    }

    /// The tracer requests and deliveries start their spans from.
    pub fn tracer(&self) -> &Tracer {
        &self.0.tracer
    }

    /// The metrics registry, unless metrics are off.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.0.metrics.as_ref()
    }

    /// The trace store, if traces are kept on disk.
    pub fn traces(&self) -> Option<&TraceStore> {
        self.0.traces.as_ref()
    }

    /// The log store, if logs are kept on disk.
    pub fn logs(&self) -> Option<&LogStore> {
        self.0.logs.as_ref()
    }

    /// Which signals are exported over OTLP, and where.
    pub fn exports(&self) -> &OtlpPlan {
        &self.0.exports
    }

    /// The node's alerting, unless metrics are off.
    pub fn insight(&self) -> Option<&insight::Insight> {
        self.0.insight.as_ref()
    }

    /// The node's metering, if it meters.
    pub fn metering(&self) -> Option<&metering::Metering> {
        self.0.metering.as_ref()
    }

    /// This observer, handing out components metered under `revision` of an app labelled
    /// `tenant` (empty: none).
    pub fn for_revision(&self, revision: &str, tenant: &str) -> Self {
        Self(self.0.clone(), Owner { revision: revision.into(), tenant: tenant.into() })
    }

    /// The telemetry of one component of one app (of the revision [`Observer::for_revision`]
    /// named).
    pub fn component(&self, app: &str, component: &str) -> Arc<ComponentTelemetry> {
        // With metrics off the handles are live but unregistered: nothing reads them.
        let metrics = self.0.metrics.clone().unwrap_or_default().component(app, component);
        let owner = &self.1;
        let usage = self.0.metering.as_ref().map_or_else(UsageMeter::default, |m| {
            m.meter(metering::Key {
                tenant: owner.tenant.clone(),
                app: app.into(),
                revision: owner.revision.clone(),
                component: component.into(),
            })
        });
        Arc::new(ComponentTelemetry {
            app: app.into(),
            component: component.into(),
            metrics,
            usage,
            pipeline: self.0.pipeline.clone(),
        })
    }

    /// Waits until every finished span and log record is written (and handed to OTLP).
    pub async fn flush(&self) {
        if let Some(p) = &self.0.pipeline {
            p.flush().await;
        }
    }
}

/// What one component reports to: its metric handles and its log sink.
pub struct ComponentTelemetry {
    /// The app the component belongs to.
    pub app: Arc<str>,
    /// The component's name.
    pub component: Arc<str>,
    /// Its metric handles.
    pub metrics: ComponentMetrics,
    /// Its usage meter.
    pub usage: UsageMeter,
    pipeline: Option<Arc<Pipeline>>,
}

impl std::fmt::Debug for ComponentTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentTelemetry").field("app", &self.app).field("component", &self.component).finish()
    }
}

impl ComponentTelemetry {
    /// A component outside any observer (tests, benchmarks, tools).
    pub fn detached(component: &str) -> Arc<Self> {
        Observer::disabled().component("", component)
    }

    /// Logs one line of the invocation whose trace context is `trace`: to the log store, and to
    /// the process log (target `nimbus::guest` for guest output, `nimbus::platform` for the rest).
    pub fn log(&self, trace: Option<TraceContext>, request_id: Option<&str>, stream: &str, level: &str, message: &str) {
        let trace_id = trace.map(|c| c.trace_id.to_string());
        let (component, rid, tid) = (&*self.component, request_id.unwrap_or(""), trace_id.as_deref().unwrap_or(""));
        match (stream, level) {
            ("stdout" | "stderr", _) => {
                tracing::info!(target: "nimbus::guest", component = %component, request_id = %rid, trace_id = %tid, stream = %stream, "{message}");
            }
            (_, "error") => {
                tracing::error!(target: "nimbus::platform", component = %component, request_id = %rid, trace_id = %tid, "{message}")
            }
            (_, "warn") => {
                tracing::warn!(target: "nimbus::platform", component = %component, request_id = %rid, trace_id = %tid, "{message}")
            }
            _ => {
                tracing::info!(target: "nimbus::platform", component = %component, request_id = %rid, trace_id = %tid, "{message}")
            }
        }
        self.keep(trace, request_id, stream, level, message);
    }

    /// Like [`ComponentTelemetry::log`], to the log store only (for output the caller already
    /// logged its own way).
    pub fn keep(
        &self,
        trace: Option<TraceContext>,
        request_id: Option<&str>,
        stream: &str,
        level: &str,
        message: &str,
    ) {
        if let Some(p) = &self.pipeline {
            p.log(LogRecord {
                time_unix_nano: LogRecord::now(),
                level: level.into(),
                app: (!self.app.is_empty()).then(|| self.app.to_string()),
                component: self.component.to_string(),
                stream: stream.into(),
                request_id: request_id.map(str::to_string),
                trace_id: trace.map(|c| c.trace_id.to_string()),
                span_id: trace.map(|c| c.span_id.to_string()),
                message: message.into(),
            });
        }
    }
}

/// What an invocation carries through the executor: its component's telemetry and the span it
/// runs under (its spans are children of it).
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// The component's metrics and log sink.
    pub component: Arc<ComponentTelemetry>,
    /// The span the invocation's own spans are children of.
    pub parent: SpanRef,
}

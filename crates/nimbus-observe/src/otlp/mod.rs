//! OTLP export of all three signals, configured by the standard environment and decided here
//! once, at start ([`OtlpPlan`]):
//!
//! * **spans**, every one the tracer records, and **logs**, every [`crate::LogRecord`] the
//!   pipeline stores (severity, body, trace and span id; `nimbus.app`, `nimbus.component`,
//!   `nimbus.stream` and `nimbus.request_id` as attributes), go through `opentelemetry-otlp`'s
//!   exporters on one thread of their own ([`export`]): a slow collector never holds up the
//!   stores; what its bounded queue cannot take, or the collector refuses, is dropped and counted
//!   in `nimbus_telemetry_dropped_total{signal="otlp_spans"|"otlp_logs"}`.
//! * **metrics**: every family of the [`crate::Metrics`] registry (counters as cumulative
//!   monotonic sums, gauges, histograms with their buckets; labels as attributes, names as the
//!   `# TYPE` lines of `/metrics` give them) every `OTEL_METRIC_EXPORT_INTERVAL` ms (default
//!   60,000) from a thread of their own ([`metrics`]). The SDK can only export its own
//!   instruments, so the registry's snapshot is converted to OTLP protobuf here ([`openmetrics`])
//!   and sent over http/protobuf or gRPC with the same endpoint, protocol, headers and timeout
//!   variables the SDK reads.
//!
//! A signal is exported when `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set, unless `OTEL_SDK_DISABLED=true` or `OTEL_<SIGNAL>S_EXPORTER=none`. The resource is
//! `service.name=nimbus` (with `OTEL_RESOURCE_ATTRIBUTES` added). It does not decide what is
//! recorded (the observer's configuration does).
mod export;
mod logs;
mod metrics;
mod openmetrics;

use std::time::{Duration, Instant};

use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;

pub(crate) use export::Otlp;
pub(crate) use metrics::MetricExport;

use crate::report::{Cause, cause};

/// The time between two metric exports when `OTEL_METRIC_EXPORT_INTERVAL` is not set.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Where one signal is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The endpoint as configured (`OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`, or the base
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub endpoint: String,
    /// Whether `endpoint` is the base one, to which http/protobuf adds `/v1/<signal>`.
    pub base: bool,
    /// `http/protobuf` or `grpc`.
    pub protocol: String,
}

/// Which signals are exported over OTLP, and where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtlpPlan {
    /// Where spans go, if they are exported.
    pub traces: Option<Target>,
    /// Where metrics go, if they are exported.
    pub metrics: Option<Target>,
    /// Where log records go, if they are exported.
    pub logs: Option<Target>,
    /// The time between two metric exports (`OTEL_METRIC_EXPORT_INTERVAL`).
    pub metric_interval: Duration,
}

impl OtlpPlan {
    /// Reads the `OTEL_*` environment; a variable it cannot honour is an error naming it.
    pub fn from_env() -> Result<Self, Cause> {
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(Self { metric_interval: DEFAULT_INTERVAL, ..Self::default() });
        }
        let metric_interval = match var("OTEL_METRIC_EXPORT_INTERVAL") {
            None => DEFAULT_INTERVAL,
            Some(ms) => match ms.parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(cause(format!(
                        "OTEL_METRIC_EXPORT_INTERVAL={ms}: give the milliseconds between two metric exports, e.g. 60000"
                    )));
                }
            },
        };
        Ok(Self { traces: target("TRACES")?, metrics: target("METRICS")?, logs: target("LOGS")?, metric_interval })
    }

    /// This plan without the signals whose flag is false.
    pub(crate) fn only(self, traces: bool, metrics: bool, logs: bool) -> Self {
        Self {
            traces: self.traces.filter(|_| traces),
            metrics: self.metrics.filter(|_| metrics),
            logs: self.logs.filter(|_| logs),
            ..self
        }
    }

    /// What goes where, for a banner (`None`: nothing is exported), e.g. "spans, metrics (every
    /// 60s) and logs exported over OTLP to http://collector:4318".
    pub fn describe(&self) -> Option<String> {
        let every = format!("metrics (every {})", humantime::format_duration(self.metric_interval));
        let signals = [("spans", &self.traces), (every.as_str(), &self.metrics), ("logs", &self.logs)];
        let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
        for (name, target) in signals {
            let Some(t) = target else { continue };
            match groups.iter_mut().find(|(e, _)| *e == t.endpoint) {
                Some((_, names)) => names.push(name),
                None => groups.push((&t.endpoint, vec![name])),
            }
        }
        let lines: Vec<String> = groups
            .into_iter()
            .map(|(endpoint, names)| {
                let names = match names.split_last() {
                    Some((last, [])) => last.to_string(),
                    Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
                    None => String::new(),
                };
                format!("{names} exported over OTLP to {endpoint}")
            })
            .collect();
        (!lines.is_empty()).then(|| lines.join("; "))
    }
}

/// Where `signal` (`TRACES`, `METRICS`, `LOGS`) goes, if anywhere.
fn target(signal: &str) -> Result<Option<Target>, Cause> {
    let exporter = format!("OTEL_{signal}_EXPORTER");
    if let Some(v) = var(&exporter) {
        let names: Vec<&str> = v.split(',').map(str::trim).collect();
        if names.contains(&"none") {
            return Ok(None);
        }
        if let Some(other) = names.iter().find(|n| **n != "otlp") {
            return Err(cause(format!("{exporter}={v}: Nimbus has no `{other}` exporter; set it to `otlp` or `none`")));
        }
    }
    let (endpoint, base) = match var(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")) {
        Some(e) => (e, false),
        None => match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(e) => (e, true),
            None => return Ok(None),
        },
    };
    let protocol_var = format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL");
    let (name, protocol) = match var(&protocol_var) {
        Some(p) => (protocol_var, p),
        None => ("OTEL_EXPORTER_OTLP_PROTOCOL".to_string(), var("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_default()),
    };
    let protocol = match protocol.as_str() {
        "" | "http/protobuf" => "http/protobuf",
        "grpc" => "grpc",
        other => return Err(cause(format!("{name}={other}: Nimbus exports over `http/protobuf` or `grpc`"))),
    };
    Ok(Some(Target { endpoint, base, protocol: protocol.into() }))
}

/// A variable of the environment, unless it is unset or blank.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// Starts thread `name` with a runtime of its own: `build` makes the thread's state on that
/// runtime (a gRPC channel needs one), then `run` goes on with it. Returns once `build` is done,
/// with its error.
fn spawn<T: 'static>(
    name: &str,
    build: impl FnOnce() -> Result<T, Cause> + Send + 'static,
    run: impl FnOnce(&tokio::runtime::Runtime, T) + Send + 'static,
) -> Result<(), Cause> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), Cause>>();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let built =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(cause).and_then(|rt| {
                    let state = rt.block_on(async { build() })?;
                    Ok((rt, state))
                });
            match built {
                Ok((rt, state)) => {
                    let _ = ready_tx.send(Ok(()));
                    run(&rt, state);
                }
                Err(e) => drop(ready_tx.send(Err(e))),
            }
        })
        .map_err(cause)?;
    ready_rx.recv().map_err(cause)?
}

/// Counts what failed exports dropped, and warns about it at most once a minute.
#[derive(Default)]
struct Failures {
    last_warning: Option<Instant>,
}

impl Failures {
    /// An export of `n` `what` failed with `error`; `dropped` counts them.
    fn record(&mut self, dropped: &Counter, n: u64, what: &str, error: &str) {
        dropped.inc_by(n);
        if self.last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            self.last_warning = Some(Instant::now());
            tracing::warn!(error = %error, "OTLP export of {n} {what} failed (further failures are counted in nimbus_telemetry_dropped_total)");
        }
    }
}

/// The resource every signal is exported under.
fn resource() -> Resource {
    Resource::builder().with_service_name("nimbus").build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(endpoint: &str) -> Option<Target> {
        Some(Target { endpoint: endpoint.into(), base: true, protocol: "grpc".into() })
    }

    #[test]
    fn the_banner_groups_signals_by_endpoint() {
        let interval = Duration::from_millis(1500);
        let all = OtlpPlan {
            traces: to("http://a"),
            metrics: to("http://a"),
            logs: to("http://a"),
            metric_interval: interval,
        };
        assert_eq!(all.describe().unwrap(), "spans, metrics (every 1s 500ms) and logs exported over OTLP to http://a");
        let split = OtlpPlan { logs: to("http://b"), ..all.clone() };
        assert_eq!(
            split.describe().unwrap(),
            "spans and metrics (every 1s 500ms) exported over OTLP to http://a; logs exported over OTLP to http://b"
        );
        assert_eq!(
            all.clone().only(false, true, false).describe().unwrap(),
            "metrics (every 1s 500ms) exported over OTLP to http://a"
        );
        assert_eq!(all.only(false, false, false).describe(), None);
    }
}

//! The thread that exports the metrics registry every interval: it renders the registry (as
//! `/metrics` does), converts it ([`super::openmetrics`]) and sends one
//! `ExportMetricsServiceRequest` over http/protobuf (`POST <endpoint>/v1/metrics`) or gRPC
//! (`MetricsService/Export`), with `OTEL_EXPORTER_OTLP_[METRICS_]HEADERS` and
//! `OTEL_EXPORTER_OTLP_[METRICS_]TIMEOUT`. Request paths never wait on it; an export that fails
//! counts its points in `nimbus_telemetry_dropped_total{signal="otlp_metrics"}`.
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics, metric};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use prometheus_client::metrics::counter::Counter;
use prost::Message as _;

use super::openmetrics::{Times, convert};
use super::{Failures, Target};
use crate::logs::LogRecord;
use crate::metrics::Metrics;
use crate::report::{Cause, cause};

/// Exports the registry until dropped.
pub(crate) struct MetricExport {
    _stop: Sender<()>,
}

/// Where and how one export is sent.
enum Transport {
    Http { client: reqwest::Client, url: String },
    Grpc(Box<Grpc>),
}

struct Grpc {
    client: MetricsServiceClient<tonic::transport::Channel>,
    headers: tonic::metadata::MetadataMap,
}

impl MetricExport {
    /// Starts exporting `metrics` to `target` every `interval`; the points of a failed export
    /// are counted in `dropped`.
    pub(crate) fn start(
        target: &Target,
        interval: Duration,
        metrics: Metrics,
        dropped: Counter,
    ) -> Result<Self, Cause> {
        let headers = headers()?;
        let timeout = timeout()?;
        let target = target.clone();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let build = move || Transport::new(&target, headers, timeout);
        super::spawn("nimbus-otlp-metrics", build, move |rt, transport: Transport| {
            let resource = Resource {
                attributes: ResourceAttributesWithSchema::from(&super::resource()).attributes.0,
                ..Default::default()
            };
            let start = LogRecord::now();
            let mut failures = Failures::default();
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                let (points, result) = match convert(&metrics.render(), Times { start, now: LogRecord::now() }) {
                    Ok(converted) => {
                        let points = converted.iter().map(points).sum();
                        (points, rt.block_on(transport.send(request(&resource, converted))))
                    }
                    Err(e) => (0, Err(e)),
                };
                if let Err(error) = result {
                    failures.record(&dropped, points, "metric points", &error);
                }
            }
        })?;
        Ok(Self { _stop: stop })
    }
}

impl Transport {
    /// Needs a runtime (the gRPC channel connects lazily on it).
    fn new(target: &Target, headers: HeaderMap, timeout: Duration) -> Result<Self, Cause> {
        if target.protocol == "grpc" {
            let channel = tonic::transport::Endpoint::from_shared(target.endpoint.clone())
                .map_err(|e| cause(format!("{} is not a gRPC endpoint: {e}", target.endpoint)))?
                .timeout(timeout)
                .connect_lazy();
            let headers = tonic::metadata::MetadataMap::from_headers(headers);
            return Ok(Self::Grpc(Box::new(Grpc { client: MetricsServiceClient::new(channel), headers })));
        }
        let url = if target.base {
            format!("{}/v1/metrics", target.endpoint.trim_end_matches('/'))
        } else {
            target.endpoint.clone()
        };
        reqwest::Url::parse(&url).map_err(|e| cause(format!("{url} is not an OTLP/HTTP endpoint: {e}")))?;
        let client = reqwest::Client::builder().default_headers(headers).timeout(timeout).build().map_err(cause)?;
        Ok(Self::Http { client, url })
    }

    async fn send(&self, request: ExportMetricsServiceRequest) -> Result<(), String> {
        match self {
            Self::Http { client, url } => {
                let response = client
                    .post(url)
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(request.encode_to_vec())
                    .send()
                    .await
                    .map_err(|e| crate::report(&e))?;
                match response.status() {
                    s if s.is_success() => Ok(()),
                    s => Err(format!("{url} answered {s}")),
                }
            }
            Self::Grpc(grpc) => {
                let mut request = tonic::Request::new(request);
                *request.metadata_mut() = grpc.headers.clone();
                grpc.client.clone().export(request).await.map(drop).map_err(|s| s.to_string())
            }
        }
    }
}

fn request(resource: &Resource, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    let scope =
        InstrumentationScope { name: "nimbus".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![ScopeMetrics { scope: Some(scope), metrics, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// The data points of `metric`.
fn points(metric: &Metric) -> u64 {
    let n = match &metric.data {
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        _ => 0,
    };
    n as u64
}

/// `OTEL_EXPORTER_OTLP_HEADERS`, then `OTEL_EXPORTER_OTLP_METRICS_HEADERS` (`key=value,...`,
/// values URL-encoded).
fn headers() -> Result<HeaderMap, Cause> {
    let mut map = HeaderMap::new();
    for name in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_METRICS_HEADERS"] {
        let Some(value) = super::var(name) else { continue };
        for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || cause(format!("{name}: `{pair}` is not a header; write key=value pairs separated by commas"));
            let (key, value) = pair.split_once('=').ok_or_else(bad)?;
            let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8().map_err(|_| bad())?;
            let key = HeaderName::try_from(key.trim()).map_err(|_| bad())?;
            map.insert(key, HeaderValue::try_from(value.as_ref()).map_err(|_| bad())?);
        }
    }
    Ok(map)
}

/// `OTEL_EXPORTER_OTLP_METRICS_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds; 10 s).
fn timeout() -> Result<Duration, Cause> {
    for name in ["OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"] {
        if let Some(ms) = super::var(name) {
            return ms
                .parse()
                .map(Duration::from_millis)
                .map_err(|_| cause(format!("{name}={ms}: give the milliseconds an export may take, e.g. 10000")));
        }
    }
    Ok(opentelemetry_otlp::OTEL_EXPORTER_OTLP_TIMEOUT_DEFAULT)
}

//! The thread that exports spans and log records with `opentelemetry-otlp`'s exporters (built
//! from the environment, http/protobuf or gRPC), with its own runtime so a slow collector never
//! holds up the stores; batches beyond its queue, or that fail, are dropped and counted.
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Duration;

use opentelemetry_sdk::logs::{LogBatch, LogExporter as _};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use prometheus_client::metrics::counter::Counter;

use super::logs::LogConverter;
use super::{Failures, OtlpPlan};
use crate::logs::LogRecord;
use crate::report::{Cause, cause};

/// How long one export may take before its batch is given up.
const TIMEOUT: Duration = Duration::from_secs(10);

enum Job {
    Spans(Vec<SpanData>),
    Logs(Vec<LogRecord>),
    Flush(SyncSender<()>),
}

/// Hands span and log batches to the exporter thread.
pub(crate) struct Otlp {
    tx: SyncSender<Job>,
    spans: Option<Counter>,
    logs: Option<Counter>,
}

/// The exporters the thread runs, each with the counter of what it dropped.
struct Exporters {
    spans: Option<(opentelemetry_otlp::SpanExporter, Counter)>,
    logs: Option<(opentelemetry_otlp::LogExporter, LogConverter, Counter)>,
}

impl Otlp {
    /// Builds the exporters of the signals `plan` exports (spans, logs) and starts their thread;
    /// `None` when it exports neither. What is dropped or fails is counted in `dropped_spans`
    /// and `dropped_logs`.
    pub(crate) fn start(plan: &OtlpPlan, dropped_spans: Counter, dropped_logs: Counter) -> Result<Option<Self>, Cause> {
        let (spans, logs) = (plan.traces.is_some(), plan.logs.is_some());
        if !spans && !logs {
            return Ok(None);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(64);
        let counters = (dropped_spans.clone(), dropped_logs.clone());
        super::spawn(
            "nimbus-otlp",
            move || Exporters::build(spans, logs, counters),
            move |rt, exporters: Exporters| exporters.run(rt, &rx),
        )?;
        Ok(Some(Self { tx, spans: spans.then_some(dropped_spans), logs: logs.then_some(dropped_logs) }))
    }

    /// Whether spans are exported.
    pub(crate) fn exports_spans(&self) -> bool {
        self.spans.is_some()
    }

    /// Whether log records are exported.
    pub(crate) fn exports_logs(&self) -> bool {
        self.logs.is_some()
    }

    pub(crate) fn export_spans(&self, batch: Vec<SpanData>) {
        Self::hand_over(&self.tx, &self.spans, batch.len(), Job::Spans(batch));
    }

    pub(crate) fn export_logs(&self, batch: Vec<LogRecord>) {
        Self::hand_over(&self.tx, &self.logs, batch.len(), Job::Logs(batch));
    }

    fn hand_over(tx: &SyncSender<Job>, dropped: &Option<Counter>, n: usize, job: Job) {
        if let Some(dropped) = dropped
            && tx.try_send(job).is_err()
        {
            dropped.inc_by(n as u64);
        }
    }

    /// Waits (at most 10 s) until every batch handed over so far was exported or failed.
    pub(crate) fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if self.tx.send(Job::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(TIMEOUT);
        }
    }
}

impl Exporters {
    fn build(spans: bool, logs: bool, (dropped_spans, dropped_logs): (Counter, Counter)) -> Result<Self, Cause> {
        let resource = super::resource();
        let spans = if spans {
            let mut exporter = opentelemetry_otlp::SpanExporter::builder().build().map_err(cause)?;
            exporter.set_resource(&resource);
            Some((exporter, dropped_spans))
        } else {
            None
        };
        let logs = if logs {
            let mut exporter = opentelemetry_otlp::LogExporter::builder().build().map_err(cause)?;
            exporter.set_resource(&resource);
            Some((exporter, LogConverter::new(), dropped_logs))
        } else {
            None
        };
        Ok(Self { spans, logs })
    }

    fn run(&self, rt: &tokio::runtime::Runtime, rx: &Receiver<Job>) {
        let mut failures = Failures::default();
        while let Ok(job) = rx.recv() {
            let (what, n, dropped, result) = match job {
                Job::Spans(batch) => {
                    let Some((exporter, dropped)) = &self.spans else { continue };
                    let n = batch.len();
                    ("spans", n, dropped, rt.block_on(within(exporter.export(batch))))
                }
                Job::Logs(batch) => {
                    let Some((exporter, converter, dropped)) = &self.logs else { continue };
                    let n = batch.len();
                    let records = converter.convert(batch);
                    let scoped = converter.scoped(&records);
                    ("log records", n, dropped, rt.block_on(within(exporter.export(LogBatch::new(&scoped)))))
                }
                Job::Flush(done) => {
                    let _ = done.send(());
                    continue;
                }
            };
            if let Err(error) = result {
                failures.record(dropped, n as u64, what, &error);
            }
        }
    }
}

/// `export`'s outcome, or an error once it took longer than [`TIMEOUT`].
async fn within<E: std::fmt::Display>(export: impl Future<Output = Result<(), E>>) -> Result<(), String> {
    match tokio::time::timeout(TIMEOUT, export).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("timed out after {} s", TIMEOUT.as_secs())),
    }
}

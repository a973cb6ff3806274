//! OTLP export of spans with `opentelemetry-otlp`, configured by the standard environment
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL` = `http/protobuf` (default) or
//! `grpc`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`, ...). Runs on its own thread with
//! its own runtime so a slow collector never holds up the stores; batches beyond its queue are
//! dropped and counted.
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::{Duration, Instant};

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use prometheus_client::metrics::counter::Counter;

use crate::report::{Cause, cause};

enum Job {
    Export(Vec<SpanData>),
    Flush(SyncSender<()>),
}

/// Hands span batches to the exporter thread.
pub(crate) struct Otlp {
    tx: SyncSender<Job>,
    dropped: Counter,
}

/// Whether the environment asks for OTLP export of traces.
pub fn configured() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

impl Otlp {
    /// Builds the exporter from the environment and starts its thread; spans it drops or fails
    /// to export are counted in `dropped`.
    pub(crate) fn start(dropped: Counter) -> Result<Self, Cause> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(64);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), Cause>>();
        let failed = dropped.clone();
        std::thread::Builder::new()
            .name("nimbus-otlp".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => return drop(ready_tx.send(Err(cause(e)))),
                };
                let built = rt.block_on(async { opentelemetry_otlp::SpanExporter::builder().build() });
                match built {
                    Ok(mut exporter) => {
                        exporter.set_resource(&Resource::builder().with_service_name("nimbus").build());
                        let _ = ready_tx.send(Ok(()));
                        run(&rt, &exporter, &rx, &failed);
                    }
                    Err(e) => drop(ready_tx.send(Err(cause(e)))),
                }
            })
            .map_err(cause)?;
        ready_rx.recv().map_err(cause)??;
        Ok(Self { tx, dropped })
    }

    pub(crate) fn export(&self, batch: Vec<SpanData>) {
        let n = batch.len() as u64;
        if self.tx.try_send(Job::Export(batch)).is_err() {
            self.dropped.inc_by(n);
        }
    }

    /// Waits (at most 10 s) until every batch handed over so far was exported or failed.
    pub(crate) fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if self.tx.send(Job::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }
}

fn run(
    rt: &tokio::runtime::Runtime,
    exporter: &opentelemetry_otlp::SpanExporter,
    rx: &Receiver<Job>,
    dropped: &Counter,
) {
    let mut last_warning: Option<Instant> = None;
    while let Ok(job) = rx.recv() {
        match job {
            Job::Export(batch) => {
                let n = batch.len() as u64;
                let result =
                    rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), exporter.export(batch)).await });
                let error = match result {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out after 10 s".to_string(),
                };
                dropped.inc_by(n);
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(error = %error, "OTLP export of {n} spans failed (further failures are counted in nimbus_telemetry_dropped_total)");
                }
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

//! The telemetry pipeline: request paths append finished traces and log records to a shared,
//! bounded buffer (no wake-up, no syscall); one background thread takes the buffer every
//! [`LINGER`] and writes it in one batch to the trace and log stores, and hands spans and log
//! records to the OTLP exporter (each when it exports them). Request paths never wait for it; when the buffer is full, telemetry is
//! dropped and counted.
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use prometheus_client::metrics::counter::Counter;

use crate::logs::{LogRecord, LogStore};
use crate::otlp::Otlp;
use crate::policy::{Keeper, StorePolicy};
use crate::segments::{Bounds, SegmentLog};
use crate::span::{Finished, Spans};
use crate::traces::TraceStore;

/// How long telemetry may sit in the buffer before it is written.
const LINGER: Duration = Duration::from_millis(50);
/// Spans (and, separately, log records) the buffer holds at most.
const MAX_PENDING: usize = 64 * 1024;

#[derive(Default)]
struct Pending {
    /// Spans for the trace store.
    stored: Vec<Finished>,
    /// Spans for OTLP.
    exported: Vec<Finished>,
    logs: Vec<LogRecord>,
}

pub(crate) struct Pipeline {
    pending: Arc<Mutex<Pending>>,
    /// Flush requests (and, when the pipeline is dropped, the writer's end).
    flush: Mutex<Sender<tokio::sync::oneshot::Sender<()>>>,
    dropped_spans: Counter,
    dropped_logs: Counter,
    /// Successful traces the store's rate budget left out.
    skipped: Counter,
    /// The trace store's policy (`None`: no trace store).
    keeper: Option<Keeper>,
    exporting: bool,
}

pub(crate) struct Sinks {
    pub(crate) traces: Option<(TraceStore, Bounds)>,
    pub(crate) logs: Option<(LogStore, Bounds)>,
    pub(crate) otlp: Option<Otlp>,
    /// Counters of spans and log records dropped by a full buffer, and of traces the store's
    /// policy left out.
    pub(crate) dropped: (Counter, Counter, Counter),
    /// What the trace store keeps.
    pub(crate) policy: StorePolicy,
}

impl Pipeline {
    pub(crate) fn start(sinks: Sinks) -> std::io::Result<Arc<Self>> {
        let open = |dir: &std::path::Path, bounds| SegmentLog::open(dir, bounds);
        let traces = sinks.traces.as_ref().map(|(s, b)| open(s.dir(), *b)).transpose()?;
        let logs = sinks.logs.as_ref().map(|(s, b)| open(s.dir(), *b)).transpose()?;
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (flush, requests) = std::sync::mpsc::channel();
        let exporting = sinks.otlp.as_ref().is_some_and(Otlp::exports_spans);
        let keeper = traces.is_some().then(|| Keeper::new(sinks.policy));
        let scope = InstrumentationScope::builder("nimbus").with_version(env!("CARGO_PKG_VERSION")).build();
        let log_store = sinks.logs.map(|(s, _)| s);
        let writer = Writer { pending: pending.clone(), traces, logs, log_store, otlp: sinks.otlp, scope };
        std::thread::Builder::new().name("nimbus-telemetry".into()).spawn(move || writer.run(&requests))?;
        let (dropped_spans, dropped_logs, skipped) = sinks.dropped;
        Ok(Arc::new(Self {
            pending,
            flush: Mutex::new(flush),
            dropped_spans,
            dropped_logs,
            skipped,
            keeper,
            exporting,
        }))
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The spans of one finished trace (in this process): to OTLP if it is configured, to the
    /// store if its policy keeps the trace.
    pub(crate) fn trace(&self, spans: &mut Spans) {
        let n = spans.len();
        if n == 0 {
            return;
        }
        let store = self.keeper.as_ref().is_some_and(|k| k.keep(spans));
        if !store {
            self.skipped.inc();
            if !self.exporting {
                return;
            }
        }
        let mut pending = self.pending();
        if pending.stored.len().max(pending.exported.len()) + n > MAX_PENDING {
            drop(pending);
            self.dropped_spans.inc_by(n as u64);
            return;
        }
        match (store, self.exporting) {
            (true, true) => {
                pending.stored.extend(spans.iter().cloned());
                pending.exported.extend(spans.drain(..));
            }
            (true, false) => pending.stored.extend(spans.drain(..)),
            (false, _) => pending.exported.extend(spans.drain(..)),
        }
    }

    pub(crate) fn log(&self, record: LogRecord) {
        let mut pending = self.pending();
        if pending.logs.len() >= MAX_PENDING {
            drop(pending);
            self.dropped_logs.inc();
            return;
        }
        pending.logs.push(record);
    }

    /// Waits until everything handed over before the call is written (and handed to OTLP).
    pub(crate) async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self.flush.lock().unwrap_or_else(|p| p.into_inner()).send(tx).is_ok();
        if sent {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }
}

struct Writer {
    pending: Arc<Mutex<Pending>>,
    traces: Option<SegmentLog>,
    logs: Option<SegmentLog>,
    log_store: Option<LogStore>,
    otlp: Option<Otlp>,
    scope: InstrumentationScope,
}

impl Writer {
    fn run(mut self, flushes: &Receiver<tokio::sync::oneshot::Sender<()>>) {
        loop {
            let request = flushes.recv_timeout(LINGER);
            let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
            self.write(taken);
            match request {
                Ok(done) => {
                    if let Some(otlp) = &self.otlp {
                        otlp.flush();
                    }
                    let _ = done.send(());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Writes one take. Log records go to OTLP before spans: an invocation's lines are logged
    /// before its trace ends, so a collector that has a trace has its lines too.
    fn write(&mut self, Pending { stored, exported, logs }: Pending) {
        if let Some(otlp) = self.otlp.as_ref().filter(|o| o.exports_logs())
            && !logs.is_empty()
        {
            otlp.export_logs(logs.clone());
        }
        if let Some(otlp) = &self.otlp
            && !exported.is_empty()
        {
            otlp.export_spans(exported.into_iter().map(|s| s.into_data(&self.scope)).collect());
        }
        if let Some(store) = &mut self.traces
            && !stored.is_empty()
        {
            let records: Vec<Vec<u8>> =
                stored.into_iter().map(|s| TraceStore::encode(s.into_data(&self.scope))).collect();
            if let Err(e) = store.append(records.iter().map(Vec::as_slice)) {
                tracing::warn!(error = %e, "could not write to the trace store");
            }
        }
        if !logs.is_empty() {
            let batch = logs;
            if let Some(store) = &mut self.logs {
                let records: Vec<Vec<u8>> = batch.iter().filter_map(|r| serde_json::to_vec(r).ok()).collect();
                if let Err(e) = store.append(records.iter().map(Vec::as_slice)) {
                    tracing::warn!(error = %e, "could not write to the log store");
                }
            }
            if let Some(live) = &self.log_store {
                batch.into_iter().for_each(|r| live.announce(r));
            }
        }
    }
}

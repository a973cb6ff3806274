//! The telemetry pipeline: one background thread takes finished traces and log records off a
//! bounded queue and writes them in batches to the trace and log stores, and hands spans to the
//! OTLP exporter. Request paths never wait for it; when the queue is full, telemetry is dropped
//! and counted.
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use opentelemetry_sdk::trace::SpanData;
use prometheus_client::metrics::counter::Counter;

use crate::logs::{LogRecord, LogStore};
use crate::otlp::Otlp;
use crate::segments::{Bounds, SegmentLog};
use crate::traces::TraceStore;

/// How long telemetry may sit in the writer before it is written.
const LINGER: Duration = Duration::from_millis(100);
const QUEUE: usize = 16 * 1024;

enum Message {
    Spans(Vec<SpanData>),
    Log(LogRecord),
    Flush(tokio::sync::oneshot::Sender<()>),
}

pub(crate) struct Pipeline {
    tx: SyncSender<Message>,
    dropped_spans: Counter,
    dropped_logs: Counter,
}

pub(crate) struct Sinks {
    pub(crate) traces: Option<(TraceStore, Bounds)>,
    pub(crate) logs: Option<(LogStore, Bounds)>,
    pub(crate) otlp: Option<Otlp>,
    /// Counters of spans and log records dropped by a full queue.
    pub(crate) dropped: (Counter, Counter),
}

impl Pipeline {
    pub(crate) fn start(sinks: Sinks) -> std::io::Result<Arc<Self>> {
        let open = |dir: &std::path::Path, bounds| SegmentLog::open(dir, bounds);
        let traces = sinks.traces.as_ref().map(|(s, b)| open(s.dir(), *b)).transpose()?;
        let logs = sinks.logs.as_ref().map(|(s, b)| open(s.dir(), *b)).transpose()?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let writer = Writer { traces, logs, log_store: sinks.logs.map(|(s, _)| s), otlp: sinks.otlp };
        std::thread::Builder::new().name("nimbus-telemetry".into()).spawn(move || writer.run(rx))?;
        let (dropped_spans, dropped_logs) = sinks.dropped;
        Ok(Arc::new(Self { tx, dropped_spans, dropped_logs }))
    }

    pub(crate) fn spans(&self, spans: Vec<SpanData>) {
        if spans.is_empty() {
            return;
        }
        let n = spans.len() as u64;
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(Message::Spans(spans)) {
            self.dropped_spans.inc_by(n);
        }
    }

    pub(crate) fn log(&self, record: LogRecord) {
        if self.tx.try_send(Message::Log(record)).is_err() {
            self.dropped_logs.inc();
        }
    }

    /// Waits until everything queued before the call is written (and handed to OTLP).
    pub(crate) async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Message::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }
}

struct Writer {
    traces: Option<SegmentLog>,
    logs: Option<SegmentLog>,
    log_store: Option<LogStore>,
    otlp: Option<Otlp>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Message>) {
        let mut spans = Vec::new();
        let mut logs = Vec::new();
        let mut oldest: Option<Instant> = None;
        loop {
            let wait = oldest.map_or(Duration::from_secs(3600), |t| LINGER.saturating_sub(t.elapsed()));
            match rx.recv_timeout(wait) {
                Ok(Message::Spans(v)) => spans.extend(v),
                Ok(Message::Log(r)) => logs.push(r),
                Ok(Message::Flush(done)) => {
                    self.write(&mut spans, &mut logs);
                    oldest = None;
                    if let Some(otlp) = &self.otlp {
                        otlp.flush();
                    }
                    let _ = done.send(());
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.write(&mut spans, &mut logs);
                    return;
                }
            }
            oldest.get_or_insert_with(Instant::now);
            if spans.len() >= 4096 || logs.len() >= 1024 || oldest.is_some_and(|t| t.elapsed() >= LINGER) {
                self.write(&mut spans, &mut logs);
                oldest = None;
            }
        }
    }

    fn write(&mut self, spans: &mut Vec<SpanData>, logs: &mut Vec<LogRecord>) {
        if !spans.is_empty() {
            let batch = std::mem::take(spans);
            if let Some(otlp) = &self.otlp {
                otlp.export(batch.clone());
            }
            if let Some(store) = &mut self.traces {
                let records: Vec<Vec<u8>> = batch.into_iter().map(TraceStore::encode).collect();
                if let Err(e) = store.append(records.iter().map(Vec::as_slice)) {
                    tracing::warn!(error = %e, "could not write to the trace store");
                }
            }
        }
        if !logs.is_empty() {
            let batch = std::mem::take(logs);
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

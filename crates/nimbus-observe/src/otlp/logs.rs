//! Nimbus [`LogRecord`]s as OpenTelemetry log records: time, severity (`info`/`warn`/`error` as
//! OTLP severity numbers 9/13/17), the line as body, the invocation's trace and span id, and
//! app, component, stream and request id as `nimbus.*` attributes.
use std::time::{Duration, UNIX_EPOCH};

use opentelemetry::InstrumentationScope;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use opentelemetry_sdk::logs::{SdkLogRecord, SdkLogger, SdkLoggerProvider};

use crate::logs::LogRecord;

/// Makes SDK log records (only an SDK logger can) under the `nimbus` scope.
pub(super) struct LogConverter {
    logger: SdkLogger,
    scope: InstrumentationScope,
    /// The provider the logger belongs to; it has no processor: records go to the exporter.
    _provider: SdkLoggerProvider,
}

impl LogConverter {
    pub(super) fn new() -> Self {
        let provider = SdkLoggerProvider::builder().build();
        let scope = InstrumentationScope::builder("nimbus").with_version(env!("CARGO_PKG_VERSION")).build();
        Self { logger: provider.logger_with_scope(scope.clone()), scope, _provider: provider }
    }

    pub(super) fn convert(&self, batch: Vec<LogRecord>) -> Vec<SdkLogRecord> {
        batch.into_iter().map(|r| self.record(r)).collect()
    }

    /// `records` under the `nimbus` scope, as a [`opentelemetry_sdk::logs::LogBatch`] takes them.
    pub(super) fn scoped<'a>(
        &'a self,
        records: &'a [SdkLogRecord],
    ) -> Vec<(&'a SdkLogRecord, &'a InstrumentationScope)> {
        records.iter().map(|r| (r, &self.scope)).collect()
    }

    fn record(&self, r: LogRecord) -> SdkLogRecord {
        let mut out = self.logger.create_log_record();
        let time = UNIX_EPOCH + Duration::from_nanos(r.time_unix_nano);
        out.set_timestamp(time);
        out.set_observed_timestamp(time);
        let (number, text) = severity(&r.level);
        out.set_severity_number(number);
        out.set_severity_text(text);
        out.set_body(AnyValue::from(r.message));
        if let Some(app) = r.app {
            out.add_attribute("nimbus.app", app);
        }
        out.add_attribute("nimbus.component", r.component);
        out.add_attribute("nimbus.stream", r.stream);
        if let Some(id) = r.request_id {
            out.add_attribute("nimbus.request_id", id);
        }
        if let Some(trace) = r.trace_id.as_deref().and_then(|t| TraceId::from_hex(t).ok()) {
            let span = r.span_id.as_deref().and_then(|s| SpanId::from_hex(s).ok()).unwrap_or(SpanId::INVALID);
            out.set_trace_context(trace, span, Some(TraceFlags::SAMPLED));
        }
        out
    }
}

/// The OTLP severity of a Nimbus level.
fn severity(level: &str) -> (Severity, &'static str) {
    match level {
        "error" => (Severity::Error, "ERROR"),
        "warn" => (Severity::Warn, "WARN"),
        "debug" => (Severity::Debug, "DEBUG"),
        _ => (Severity::Info, "INFO"),
    }
}

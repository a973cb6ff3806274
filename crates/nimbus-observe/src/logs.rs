//! Per-invocation logs: guest stdout/stderr lines and platform events, each with its component,
//! request id and trace id, stored as JSON records in a bounded segment log and fanned out live
//! to followers (`nimbus logs -f`).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::segments::SegmentLog;

/// One log line of one invocation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogRecord {
    /// When the line was written, in nanoseconds since the Unix epoch.
    pub time_unix_nano: u64,
    /// `info`, `warn` or `error`.
    pub level: String,
    /// The app of the component that wrote it, if it belongs to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The component (function or service) that wrote it.
    pub component: String,
    /// `stdout`, `stderr` or `platform`.
    pub stream: String,
    /// The request id of the invocation that wrote it, if it ran for a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The trace the invocation belongs to (32 hex digits), if it was traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The invocation's span in that trace (16 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    /// The text of the line.
    pub message: String,
}

impl LogRecord {
    /// Nanoseconds since the Unix epoch, now.
    pub fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// Which records to return.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LogQuery {
    /// Only records of this component.
    #[serde(default)]
    pub component: Option<String>,
    /// Only records of this app.
    #[serde(default)]
    pub app: Option<String>,
    /// Only records at or after this time (nanoseconds since the epoch).
    #[serde(default)]
    pub since_unix_nano: Option<u64>,
    /// Only records of this trace.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// The newest this many (default 200).
    #[serde(default)]
    pub limit: Option<usize>,
}

impl LogQuery {
    /// Whether `r` is one of the records asked for.
    pub fn matches(&self, r: &LogRecord) -> bool {
        self.component.as_ref().is_none_or(|c| *c == r.component)
            && self.app.as_ref().is_none_or(|a| r.app.as_ref() == Some(a))
            && self.since_unix_nano.is_none_or(|t| r.time_unix_nano >= t)
            && self.trace_id.as_ref().is_none_or(|t| r.trace_id.as_ref().is_some_and(|id| id.eq_ignore_ascii_case(t)))
    }
}

/// Reads the log store and follows new records.
#[derive(Debug, Clone)]
pub struct LogStore {
    dir: PathBuf,
    live: tokio::sync::broadcast::Sender<Arc<LogRecord>>,
}

impl LogStore {
    pub(crate) fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf(), live: tokio::sync::broadcast::channel(4096).0 }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Hands a stored record to the followers.
    pub(crate) fn announce(&self, record: LogRecord) {
        let _ = self.live.send(Arc::new(record));
    }

    /// Stored records matching `query`, oldest first.
    pub fn query(&self, query: &LogQuery) -> Vec<LogRecord> {
        let mut out: Vec<LogRecord> = SegmentLog::read_all(&self.dir)
            .iter()
            .filter_map(|r| serde_json::from_slice::<LogRecord>(r).ok())
            .filter(|r| query.matches(r))
            .collect();
        let limit = query.limit.unwrap_or(200);
        if out.len() > limit {
            out.drain(..out.len() - limit);
        }
        out
    }

    /// Records stored from now on (a follower that falls more than 4,096 behind misses some).
    pub fn follow(&self) -> tokio::sync::broadcast::Receiver<Arc<LogRecord>> {
        self.live.subscribe()
    }
}

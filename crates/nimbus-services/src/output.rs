//! A service's output: every line goes to the component's bounded log store (`nimbus logs`);
//! the server's own log (stderr) shows it only within a byte budget per stream — a burst of
//! [`BURST`] bytes, refilled at [`RATE`] bytes a second — so a service that writes without end
//! cannot grow the server's log without end. What the budget holds back is summarised there once
//! the budget allows again (how many lines and bytes, and where they are).
use std::sync::Arc;
use std::time::Instant;

use nimbus_observe::ComponentTelemetry;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest line of service output kept as one record; longer ones are split.
const MAX_LINE: usize = 16 << 10;
/// Bytes of one stream the server's log may show at once.
const BURST: f64 = 64.0 * 1024.0;
/// Bytes a second of one stream the server's log shows in the long run.
const RATE: f64 = 16.0 * 1024.0;

/// How much of a stream the server's log may still show.
struct Budget {
    bytes: f64,
    at: Instant,
    held_lines: u64,
    held_bytes: u64,
}

impl Budget {
    /// Whether a line of `len` bytes is shown; if it is, and lines were held back, how many.
    fn take(&mut self, len: usize) -> (bool, Option<(u64, u64)>) {
        let now = Instant::now();
        self.bytes = (self.bytes + now.duration_since(self.at).as_secs_f64() * RATE).min(BURST);
        self.at = now;
        if self.bytes < len as f64 {
            self.held_lines += 1;
            self.held_bytes += len as u64;
            return (false, None);
        }
        self.bytes -= len as f64;
        let held =
            (self.held_lines > 0).then(|| (std::mem::take(&mut self.held_lines), std::mem::take(&mut self.held_bytes)));
        (true, held)
    }
}

/// Keeps a stream line by line in the log store, and shows it on the server's log within the
/// budget; very long lines are split.
pub(crate) async fn log_lines(
    mut stream: Box<dyn AsyncRead + Send + Unpin>,
    telemetry: Arc<ComponentTelemetry>,
    instance: u64,
    name: &'static str,
) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let mut budget = Budget { bytes: BURST, at: Instant::now(), held_lines: 0, held_bytes: 0 };
    let component = telemetry.component.clone();
    let mut emit = |line: &[u8]| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        let (show, held) = budget.take(text.len());
        if let Some(held) = held {
            report_held(&component, instance, name, held);
        }
        if show {
            tracing::info!(target: "nimbus::service", %component, instance, stream = name, "{text}");
        }
        telemetry.keep(None, None, name, "info", text);
    };
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            emit(&buf[..pos]);
            buf.drain(..=pos);
        }
        if buf.len() >= MAX_LINE {
            emit(&buf);
            buf.clear();
        }
    }
    if !buf.is_empty() {
        emit(&buf);
    }
    if budget.held_lines > 0 {
        report_held(&component, instance, name, (budget.held_lines, budget.held_bytes));
    }
}

/// Says on the server's log how much output the budget held back.
fn report_held(component: &str, instance: u64, name: &'static str, (lines, bytes): (u64, u64)) {
    tracing::warn!(target: "nimbus::service", %component, instance, stream = name,
        "{lines} lines ({bytes} bytes) of output not shown here (too much too fast); all are in `nimbus logs`");
}

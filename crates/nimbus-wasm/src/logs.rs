//! Guest stdout and stderr, captured line by line and logged with the component, request id and
//! trace id (to the process log and the log store).
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::scope::Scope;

/// Bytes of output one stream of one invocation may log; the rest is dropped with a notice.
pub const LOG_BUDGET_BYTES: usize = 64 * 1024;

/// A stdout/stderr sink for one invocation.
#[derive(Clone)]
pub(crate) struct GuestLog(Arc<Sink>);

struct Sink {
    scope: Arc<Scope>,
    stream: &'static str,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    line: Vec<u8>,
    logged: usize,
    truncated: bool,
}

impl GuestLog {
    pub(crate) fn new(scope: Arc<Scope>, stream: &'static str) -> Self {
        Self(Arc::new(Sink { scope, stream, state: Mutex::new(State::default()) }))
    }
}

impl Sink {
    fn write(&self, mut buf: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            state.line.extend_from_slice(&buf[..nl]);
            self.emit(&mut state);
            buf = &buf[nl + 1..];
        }
        state.line.extend_from_slice(buf);
        if state.line.len() >= 8 * 1024 {
            self.emit(&mut state);
        }
    }

    fn emit(&self, state: &mut State) {
        let line = std::mem::take(&mut state.line);
        if state.truncated {
            return;
        }
        if state.logged + line.len() > LOG_BUDGET_BYTES {
            state.truncated = true;
            self.scope.log(
                "warn",
                &format!("guest {} beyond {LOG_BUDGET_BYTES} bytes dropped for this request", self.stream),
            );
            return;
        }
        state.logged += line.len();
        let text = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(&line));
        let s = &self.scope;
        s.telemetry.log(s.context(), Some(&s.request_id), self.stream, "info", &text);
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if !state.line.is_empty() {
            let mut state = std::mem::take(state);
            self.emit(&mut state);
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestLog {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.0.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

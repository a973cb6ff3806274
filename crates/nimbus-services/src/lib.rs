//! Nimbus services: long-lived processes in any language that serve HTTP on `$PORT` (the
//! Knative / Cloud Run container contract), next to WebAssembly functions under the same routes.
//!
//! This crate owns running them: starting each process in its own process group with a clean
//! environment (`PORT`, `PATH` and the manifest's `env`, nothing else), logging its output per
//! line, readiness and liveness probes (HTTP path or TCP), replacing a process that exits or fails
//! liveness with exponential backoff (a crash loop is reported, not hidden), graceful termination
//! (SIGTERM, grace period, SIGKILL), and forwarding requests to the least busy ready process
//! with streamed bodies and WebSocket upgrades. Requests that arrive while no process is ready
//! wait (the gateway bounds how many and how long). It does not route or admit requests (that is
//! `nimbus-gateway`) or read manifests (`nimbus-manifest`).
//!
//! ```no_run
//! # async fn demo(spec: nimbus_services::ServiceSpec, req: http::Request<nimbus_services::RequestBody>) {
//! use std::time::Duration;
//! let service = nimbus_services::Service::start(spec);
//! service.wait_ready(Duration::from_secs(30)).await.unwrap();
//! let resp = service.handle(req, None, Duration::from_secs(10)).await.unwrap();
//! service.shutdown().await;
//! # }
//! ```

mod instance;
mod probe;
mod proxy;
mod spec;
mod supervisor;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use instance::Instance;
use tokio::sync::{Notify, watch};

pub use proxy::{BoxError, RequestBody, ServiceBody};
pub use spec::{DEFAULT_GRACE, ServiceSpec};

/// Why a request could not be served by a service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No process became ready in time (starting, crash-looping or stopped).
    #[error("service `{name}` has no ready process ({why})")]
    Unavailable {
        /// Component.
        name: String,
        /// Its state.
        why: String,
    },
    /// The process failed the request (connection refused or reset, it crashed mid-request).
    #[error("service `{name}` failed the request: {cause}")]
    Upstream {
        /// Component.
        name: String,
        /// What the connection said.
        cause: String,
    },
    /// No response headers within the service's `limits.timeout_ms`.
    #[error("service `{name}` did not answer within {limit:?}")]
    Timeout {
        /// Component.
        name: String,
        /// The limit.
        limit: Duration,
    },
}

/// Health of a service as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Starting its first process.
    Starting,
    /// At least one process is ready.
    Ready,
    /// Processes keep failing; restarts continue with backoff.
    CrashLoop,
    /// Shut down.
    Stopped,
}

#[derive(Debug)]
struct State {
    ready: Vec<Arc<Instance>>,
    status: Status,
    restarts: u32,
    last_error: Option<String>,
}

/// A running service: its processes and the client that forwards to them.
#[derive(Debug)]
pub struct Service {
    spec: ServiceSpec,
    state: Mutex<State>,
    ready_changed: Notify,
    stop: watch::Sender<bool>,
    client: proxy::HttpClient,
}

/// Counts a request as in flight on one process until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Instance>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Service {
    /// Starts supervising the service: its process starts at once.
    pub fn start(spec: ServiceSpec) -> Arc<Self> {
        let service = Arc::new(Self {
            spec,
            state: Mutex::new(State { ready: Vec::new(), status: Status::Starting, restarts: 0, last_error: None }),
            ready_changed: Notify::new(),
            stop: watch::channel(false).0,
            client: proxy::client(),
        });
        tokio::spawn(supervisor::run_slot(service.clone()));
        service
    }

    /// The component name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Current health, restarts so far and the last failure.
    pub fn status(&self) -> (Status, u32, Option<String>) {
        let s = self.state.lock().expect("service state");
        (s.status, s.restarts, s.last_error.clone())
    }

    /// Waits until a process is ready, or says why none is.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), ServiceError> {
        self.ready_instance(within).await.map(drop)
    }

    /// Forwards a request to the least busy ready process, waiting up to `wait` for one.
    pub async fn handle(
        &self,
        mut req: http::Request<RequestBody>,
        client: Option<SocketAddr>,
        wait: Duration,
    ) -> Result<http::Response<ServiceBody>, ServiceError> {
        let instance = self.ready_instance(wait).await?;
        instance.in_flight.fetch_add(1, Ordering::AcqRel);
        let in_flight = InFlight(instance.clone());
        let client_upgrade = hyper::upgrade::on(&mut req);
        let upgrading = proxy::prepare(&mut req, instance.port, client);
        let send = self.client.request(req);
        let result = match self.spec.timeout {
            Some(limit) => tokio::time::timeout(limit, send)
                .await
                .map_err(|_| ServiceError::Timeout { name: self.spec.name.to_string(), limit })?,
            None => send.await,
        };
        let mut resp =
            result.map_err(|e| ServiceError::Upstream { name: self.spec.name.to_string(), cause: error_chain(&e) })?;
        if upgrading && resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            proxy::splice(client_upgrade, hyper::upgrade::on(&mut resp));
        } else {
            proxy::strip_hop_by_hop(resp.headers_mut());
        }
        Ok(resp.map(|body| ServiceBody::new(body, in_flight)))
    }

    /// Stops every process (SIGTERM, grace, SIGKILL) and the supervisor.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let instances: Vec<_> = std::mem::take(&mut self.state.lock().expect("service state").ready);
        for instance in &instances {
            instance.terminate(self.spec.grace).await;
        }
        self.state.lock().expect("service state").status = Status::Stopped;
        self.ready_changed.notify_waiters();
    }

    async fn ready_instance(&self, wait: Duration) -> Result<Arc<Instance>, ServiceError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.ready_changed.notified();
            {
                let state = self.state.lock().expect("service state");
                let best = state
                    .ready
                    .iter()
                    .filter(|i| i.ready.load(Ordering::Acquire))
                    .min_by_key(|i| i.in_flight.load(Ordering::Acquire));
                if let Some(instance) = best {
                    return Ok(instance.clone());
                }
                // Nobody waits for a stopped or crash-looping service: 503 at once.
                if matches!(state.status, Status::Stopped | Status::CrashLoop) {
                    return Err(self.unavailable(&state));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let state = self.state.lock().expect("service state");
                return Err(self.unavailable(&state));
            }
        }
    }

    fn unavailable(&self, state: &State) -> ServiceError {
        let why = match (state.status, &state.last_error) {
            (Status::Stopped, _) => "it is stopped".to_string(),
            (Status::CrashLoop, Some(e)) => {
                format!("crash-looping after {} restarts; last failure: {e}", state.restarts)
            }
            (_, Some(e)) => format!("starting; last failure: {e}"),
            (_, None) => "still starting".to_string(),
        };
        ServiceError::Unavailable { name: self.spec.name.to_string(), why }
    }

    pub(crate) fn add_ready(&self, instance: Arc<Instance>) {
        let mut state = self.state.lock().expect("service state");
        state.ready.push(instance);
        state.status = Status::Ready;
        drop(state);
        self.ready_changed.notify_waiters();
    }

    pub(crate) fn remove(&self, instance: &Arc<Instance>) {
        instance.ready.store(false, Ordering::Release);
        let mut state = self.state.lock().expect("service state");
        state.ready.retain(|i| !Arc::ptr_eq(i, instance));
        if state.ready.is_empty() && state.status == Status::Ready {
            state.status = Status::Starting;
        }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    pub(crate) async fn stopping(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

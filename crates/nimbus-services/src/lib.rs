//! Nimbus services: long-lived processes in any language that serve HTTP on `$PORT` (the
//! Knative / Cloud Run container contract), next to WebAssembly functions under the same routes.
//!
//! This crate owns running them: starting each process in its own process group with a clean
//! environment (`PORT`, `PATH`, the manifest's `env` and the granted secrets, nothing else), logging its output per
//! line, readiness and liveness probes (HTTP path or TCP), replacing a process that exits or fails
//! liveness with exponential backoff (a crash loop is reported, not hidden), graceful termination
//! (SIGTERM, grace period, SIGKILL), an autoscaler after Knative's KPA (stable and panic windows,
//! `min`/`max`, warm spares, scale to zero after an idle timeout), and forwarding requests to the
//! least busy ready process with streamed bodies and WebSocket upgrades. Each process runs in
//! its own cgroup ([`sandbox`]) and in a sandbox ([`jail`]): an unprivileged user, its own mount,
//! pid and network namespaces with only its tree, the system runtime and a scratch `tmpfs`
//! visible, and outbound network only through an egress proxy that enforces the component's
//! `grants.outbound` — and, for `http://NAME.internal/` calls to other components
//! (`grants.invoke`), hands them to the app's mesh ([`Service::bind_mesh`]) as this service; it
//! dies with Nimbus even under `kill -9`. A service with an [`Identity`] gets a short-lived
//! certificate of its SPIFFE ID as read-only files ([`IDENTITY_MOUNT`]), renewed while it runs. Its output goes to the log
//! store, and to the server's log only within a byte budget. Requests that arrive
//! while no process is ready wait and wake the autoscaler (the gateway bounds how many wait and
//! for how long). In a cluster a service may be placed on other nodes ([`Placed`]): it then keeps
//! no process and hands its requests to a [`Forward`] the control plane supplies; placed on
//! several, a node sends them to the others while they have room and it has not ([`Spill`]),
//! and reports its [`Gauge`] so that they can do the same. It does not
//! route or admit requests (that is
//! `nimbus-gateway`) or read manifests (`nimbus-manifest`).
//!
//! ```no_run
//! # async fn demo(spec: nimbus_services::ServiceSpec, req: http::Request<nimbus_services::RequestBody>) {
//! use std::time::Duration;
//! let service = nimbus_services::Service::start(spec);
//! service.until_ready().await.unwrap();
//! let resp = service.handle(req, None, Duration::from_secs(10)).await.unwrap();
//! service.shutdown().await;
//! # }
//! ```

mod autoscaler;
mod egress;
mod identity;
mod instance;
pub mod jail;
mod netns;
mod output;
mod placement;
mod probe;
mod proxy;
pub mod sandbox;
mod spec;
mod supervisor;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use instance::Instance;
use tokio::sync::{Notify, watch};

pub use identity::{IDENTITY_MOUNT, Identity};
use placement::Route;
pub use placement::{Forward, Placed, Placer, Spill, Unforwarded};
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
    #[error("service `{name}` failed the request")]
    Upstream {
        /// Component.
        name: String,
        /// What the connection said.
        #[source]
        source: nimbus_observe::Cause,
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

/// A service's processes and requests on one node, as it reports them to the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauge {
    /// Processes running or starting.
    pub processes: u32,
    /// Processes ready for traffic.
    pub ready: u32,
    /// Requests in flight or waiting for a process.
    pub busy: u32,
    /// Whether it takes another request without a process starting: a ready process below
    /// `scale.target_concurrency`, or room under the node's cap (`scale.max`) to start one.
    pub room: bool,
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
struct Slot {
    stop: watch::Sender<bool>,
    instance: Option<Arc<Instance>>,
}

#[derive(Debug)]
struct State {
    slots: std::collections::BTreeMap<u64, Slot>,
    next_slot: u64,
    status: Status,
    restarts: u32,
    last_error: Option<String>,
}

/// A running service: its processes, its autoscaler and the client that forwards to them.
#[derive(Debug)]
pub struct Service {
    spec: ServiceSpec,
    /// Its identity directory while it runs (or why it could not be made).
    identity: Option<Result<identity::Mounted, String>>,
    state: Mutex<State>,
    ready_changed: Notify,
    poked: Notify,
    waiting: AtomicUsize,
    active: AtomicUsize,
    stop: watch::Sender<bool>,
    /// How requests are routed ([`Route`]); the flag spares the common case, a service that
    /// runs here only, the lock.
    route: AtomicU8,
    /// Where requests go when not to this node's processes.
    elsewhere: Mutex<Option<Arc<dyn Forward>>>,
    /// The processes this node keeps however idle: `scale.min`, or this node's share of it.
    min: AtomicU32,
}

/// Counts a request as in flight on one process (and on the service) until dropped.
#[derive(Debug)]
pub struct InFlight {
    instance: Arc<Instance>,
    service: Arc<Service>,
}

impl InFlight {
    pub(crate) fn instance(&self) -> &Instance {
        &self.instance
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.instance.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.service.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Service {
    /// Sends its calls to other components (`grants.invoke`) to `mesh`, from processes running
    /// now and later; the first binding wins.
    pub fn bind_mesh(&self, mesh: Arc<dyn nimbus_security::mesh::Mesh>) {
        let _ = self.spec.mesh.set(mesh);
    }

    /// Starts the service: `scale.initial` processes (at least `scale.min`) and the autoscaler —
    /// none while it is placed elsewhere.
    pub fn start(spec: ServiceSpec) -> Arc<Self> {
        let min = spec.placed.min(spec.scale.min);
        let initial = if spec.placed.is_here() { spec.scale.initial.max(min).min(spec.scale.max) } else { 0 };
        let (route, elsewhere) = spec.placed.clone().route();
        let stop = watch::channel(false).0;
        let identity = spec.identity.as_ref().map(|i| identity::Mounted::start(i, &spec.name, stop.subscribe()));
        let service = Arc::new(Self {
            spec,
            identity,
            state: Mutex::new(State {
                slots: std::collections::BTreeMap::new(),
                next_slot: 0,
                status: Status::Starting,
                restarts: 0,
                last_error: None,
            }),
            ready_changed: Notify::new(),
            poked: Notify::new(),
            waiting: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            stop,
            route: AtomicU8::new(route as u8),
            elsewhere: Mutex::new(elsewhere),
            min: AtomicU32::new(min),
        });
        service.scale_to(initial);
        tokio::spawn(autoscaler::run(service.clone()));
        service
    }

    /// The component name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Whether the service starts without any process (`scale.initial = 0` and `min = 0`, or
    /// placed on other nodes).
    pub fn starts_at_zero(&self) -> bool {
        self.spec.scale.initial.max(self.spec.placed.min(self.spec.scale.min)) == 0 || !self.spec.placed.is_here()
    }

    /// Moves the service: placed here, the autoscaler brings it to `scale.min` or this node's
    /// share of it (and starts processes for its requests); placed elsewhere, new requests go there and its processes
    /// stop once their requests are done; shared, requests spill as [`Spill`] says.
    pub fn place(&self, placed: Placed) {
        let min = placed.min(self.spec.scale.min);
        if self.min.swap(min, Ordering::AcqRel) != min {
            tracing::info!(component = %self.spec.name, min, "service keeps {min} idle processes on this node");
            self.poked.notify_one();
        }
        let (route, to) = placed.route();
        *self.elsewhere.lock().expect("service placement") = to;
        let was = Route::from_u8(self.route.swap(route as u8, Ordering::AcqRel));
        if (was == Route::Elsewhere) != (route == Route::Elsewhere) {
            let now = if route == Route::Elsewhere { "on other nodes" } else { "on this node" };
            tracing::info!(component = %self.spec.name, "service placed {now}");
            self.poked.notify_one();
        } else if was != route {
            tracing::debug!(component = %self.spec.name, ?route, "service's requests routed anew");
        }
    }

    /// The processes this node keeps however idle (`scale.min`, or its share of it).
    pub fn min_here(&self) -> u32 {
        self.min.load(Ordering::Acquire)
    }

    /// Whether the service runs on other nodes (its requests are forwarded there).
    pub fn is_elsewhere(&self) -> bool {
        self.route() == Route::Elsewhere
    }

    fn route(&self) -> Route {
        Route::from_u8(self.route.load(Ordering::Acquire))
    }

    /// Its processes and requests on this node now, as its node reports them to the others.
    pub fn gauge(&self) -> Gauge {
        let (processes, ready) = {
            let state = self.state.lock().expect("service state");
            let ready = state.slots.values().filter(|s| s.instance.is_some()).count();
            (state.slots.len(), ready)
        };
        let busy = self.load().0;
        let cap = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let room = ready > 0
            && (busy < ready.saturating_mul(self.spec.scale.target_concurrency as usize)
                || cap(processes) < self.spec.scale.max);
        Gauge { processes: cap(processes), ready: cap(ready), busy: cap(busy), room }
    }

    /// Processes running or starting.
    pub fn process_count(&self) -> u32 {
        self.state.lock().expect("service state").slots.len() as u32
    }

    /// Processes ready for traffic.
    pub fn ready_count(&self) -> usize {
        self.state.lock().expect("service state").slots.values().filter(|s| s.instance.is_some()).count()
    }

    /// Requests in flight or waiting, and those waiting for a process.
    fn load(&self) -> (usize, usize) {
        let waiting = self.waiting.load(Ordering::Acquire);
        (self.active.load(Ordering::Acquire) + waiting, waiting)
    }

    /// Waits until the service can take traffic: a process ready within its readiness probe's
    /// `start_timeout_s` — or nothing to wait for when it starts at zero (its first request then
    /// checks it). Says why not otherwise.
    pub async fn until_ready(self: &Arc<Self>) -> Result<(), ServiceError> {
        if self.starts_at_zero() {
            return Ok(());
        }
        let within = Duration::from_secs(self.spec.readiness.start_timeout_s);
        match self.ready_instance(within, false).await {
            Ok(_) => Ok(()),
            // Scaled to zero before its first process was ready (no traffic, `scale.min = 0`):
            // like a service that starts at zero, its first request starts one.
            Err(_) if self.scaled_to_zero() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether the autoscaler took the service to zero processes (and it is not failing).
    fn scaled_to_zero(&self) -> bool {
        let state = self.state.lock().expect("service state");
        self.at_zero(&state) && state.status == Status::Starting
    }

    /// No process, and none needed until a request comes (`scale.min = 0`).
    fn at_zero(&self, state: &State) -> bool {
        self.min_here() == 0 && state.slots.is_empty()
    }

    /// Forwards a request to the least busy ready process, waiting up to `wait` for one (and
    /// starting one if the service is scaled to zero) — or, while the service is placed on
    /// other nodes, to one of them.
    pub async fn handle(
        self: &Arc<Self>,
        req: http::Request<RequestBody>,
        client: Option<SocketAddr>,
        wait: Duration,
    ) -> Result<http::Response<ServiceBody>, ServiceError> {
        let route = self.route();
        if route != Route::Here && (route != Route::Overflow || !self.gauge().room) {
            let to = self.elsewhere.lock().expect("service placement").clone();
            if let Some(to) = to {
                // The rare path in a single node: boxed, so the common one's future stays small.
                return Box::pin(self.forward(to, req, client, wait)).await;
            }
        }
        self.handle_here(req, client, wait).await
    }

    /// Serves a request on this node's processes whatever the placement says: a request another
    /// node forwarded here (the autoscaler starts a process for it if none runs).
    pub async fn handle_here(
        self: &Arc<Self>,
        mut req: http::Request<RequestBody>,
        client: Option<SocketAddr>,
        wait: Duration,
    ) -> Result<http::Response<ServiceBody>, ServiceError> {
        let instance = self.ready_instance(wait, true).await?;
        self.spec.telemetry.usage.service_request();
        instance.in_flight.fetch_add(1, Ordering::AcqRel);
        self.active.fetch_add(1, Ordering::AcqRel);
        let in_flight = InFlight { instance: instance.clone(), service: self.clone() };
        let client_upgrade = hyper::upgrade::on(&mut req);
        let upgrading = proxy::prepare(&mut req, instance.port, client);
        let send = instance.connections.send(&instance.dial, req);
        let result = match self.spec.timeout {
            Some(limit) => tokio::time::timeout(limit, send)
                .await
                .map_err(|_| ServiceError::Timeout { name: self.spec.name.to_string(), limit })?,
            None => send.await,
        };
        let (mut resp, connection) = result.map_err(|e| ServiceError::Upstream {
            name: self.spec.name.to_string(),
            source: nimbus_observe::cause(e),
        })?;
        let connection = if upgrading && resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            proxy::splice(client_upgrade, hyper::upgrade::on(&mut resp));
            None
        } else {
            proxy::strip_hop_by_hop(resp.headers_mut());
            Some(connection)
        };
        Ok(resp.map(|body| ServiceBody::new(body, connection, Some(in_flight))))
    }

    /// Hands a request to a node running the service, with the client's address added to
    /// `X-Forwarded-For`; a WebSocket upgrade is spliced through as on this node.
    async fn forward(
        self: &Arc<Self>,
        to: Arc<dyn Forward>,
        mut req: http::Request<RequestBody>,
        client: Option<SocketAddr>,
        wait: Duration,
    ) -> Result<http::Response<ServiceBody>, ServiceError> {
        let client_upgrade = hyper::upgrade::on(&mut req);
        let upgrading = proxy::prepare_forward(&mut req, client);
        let send = to.forward(req, wait);
        let sent = match self.spec.timeout {
            Some(limit) => tokio::time::timeout(wait + limit, send)
                .await
                .map_err(|_| ServiceError::Timeout { name: self.spec.name.to_string(), limit })?,
            None => send.await,
        };
        let mut resp = match sent {
            Ok(resp) => resp,
            Err(Unforwarded::Failed(e)) => return Err(e),
            Err(Unforwarded::Unsent(mut req)) => {
                tracing::warn!(component = %self.spec.name, "no node running the service answers; serving the request here");
                // The client's side of an upgrade goes back with the request, for the process here.
                req.extensions_mut().insert(client_upgrade);
                return self.handle_here(req, None, wait).await;
            }
        };
        if upgrading && resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            proxy::splice(client_upgrade, hyper::upgrade::on(&mut resp));
        } else {
            proxy::strip_hop_by_hop(resp.headers_mut());
        }
        Ok(resp.map(|body| ServiceBody::new(body, None, None)))
    }

    /// Stops the autoscaler and every process (drain, SIGTERM, grace, SIGKILL).
    pub async fn shutdown(&self) {
        // Take the processes before anyone is told to stop, so none slips out of this wait.
        let slots: Vec<Slot> =
            std::mem::take(&mut self.state.lock().expect("service state").slots).into_values().collect();
        self.stop.send_replace(true);
        for slot in &slots {
            slot.stop.send_replace(true);
        }
        // No new request reaches these processes; the ones they are serving finish first.
        let drain = self.spec.timeout.unwrap_or(supervisor::MAX_DRAIN);
        futures::future::join_all(slots.iter().filter_map(|s| s.instance.as_ref()).map(|i| i.drain(drain))).await;
        for instance in slots.iter().filter_map(|s| s.instance.as_ref()) {
            let status = instance.terminate(self.spec.grace).await;
            tracing::info!(component = %self.spec.name, instance = instance.id, %status, "service instance stopped");
        }
        self.state.lock().expect("service state").status = Status::Stopped;
        self.ready_changed.notify_waiters();
    }

    /// Starts or stops processes until `n` run. Processes that are still starting go first, then
    /// the least busy; a stopped process finishes its requests first.
    pub(crate) fn scale_to(self: &Arc<Self>, n: u32) {
        let mut state = self.state.lock().expect("service state");
        let current = state.slots.len() as u32;
        if n > current {
            for _ in current..n {
                let id = state.next_slot;
                state.next_slot += 1;
                let (stop, stop_rx) = watch::channel(false);
                state.slots.insert(id, Slot { stop, instance: None });
                tokio::spawn(supervisor::run_slot(self.clone(), id, stop_rx));
            }
        } else if n < current {
            let mut victims: Vec<(usize, u64)> = state
                .slots
                .iter()
                .map(|(id, s)| (s.instance.as_ref().map_or(0, |i| i.in_flight.load(Ordering::Acquire) + 1), *id))
                .collect();
            victims.sort();
            for (_, id) in victims.into_iter().take((current - n) as usize) {
                if let Some(slot) = state.slots.remove(&id) {
                    if let Some(i) = &slot.instance {
                        i.ready.store(false, Ordering::Release);
                    }
                    slot.stop.send_replace(true);
                }
            }
            drop(state);
            // Whoever waits for a process looks again (e.g. `until_ready` of a service now at zero).
            self.ready_changed.notify_waiters();
        }
    }

    /// The least busy ready process, waiting up to `wait`; a `request` that waits counts as load
    /// and wakes the autoscaler.
    async fn ready_instance(self: &Arc<Self>, wait: Duration, request: bool) -> Result<Arc<Instance>, ServiceError> {
        if let Some(instance) = self.least_busy(&self.state.lock().expect("service state")) {
            return Ok(instance);
        }
        // Waiting for a process is the rare path: boxed, so the common one's future stays small.
        Box::pin(self.wait_ready(wait, request)).await
    }

    /// The ready process with the fewest requests in flight.
    fn least_busy(&self, state: &State) -> Option<Arc<Instance>> {
        state
            .slots
            .values()
            .filter_map(|s| s.instance.as_ref())
            .filter(|i| i.ready.load(Ordering::Acquire))
            .min_by_key(|i| i.in_flight.load(Ordering::Acquire))
            .cloned()
    }

    async fn wait_ready(self: &Arc<Self>, wait: Duration, request: bool) -> Result<Arc<Instance>, ServiceError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut counted = false;
        let result = loop {
            let notified = self.ready_changed.notified();
            {
                let state = self.state.lock().expect("service state");
                if let Some(instance) = self.least_busy(&state) {
                    break Ok(instance);
                }
                // Nobody waits for a stopped or crash-looping service: 503 at once; nor, unless it
                // is a request (which starts a process), for one scaled to zero.
                if matches!(state.status, Status::Stopped | Status::CrashLoop) || (!request && self.at_zero(&state)) {
                    break Err(self.unavailable(&state));
                }
            }
            if request && !counted {
                counted = true;
                self.waiting.fetch_add(1, Ordering::AcqRel);
                self.poked.notify_one();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let state = self.state.lock().expect("service state");
                break Err(self.unavailable(&state));
            }
        };
        if counted {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        result
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

    /// A slot's process is ready; `false` if the slot was stopped meanwhile.
    pub(crate) fn add_ready(&self, slot: u64, instance: Arc<Instance>) -> bool {
        let mut state = self.state.lock().expect("service state");
        let Some(s) = state.slots.get_mut(&slot) else { return false };
        instance.ready.store(true, Ordering::Release);
        s.instance = Some(instance);
        state.status = Status::Ready;
        drop(state);
        self.ready_changed.notify_waiters();
        true
    }

    /// A slot's process is gone (or going); no new request reaches it.
    pub(crate) fn remove(&self, slot: u64, instance: &Arc<Instance>) {
        instance.ready.store(false, Ordering::Release);
        let mut state = self.state.lock().expect("service state");
        if let Some(s) = state.slots.get_mut(&slot) {
            s.instance = None;
        }
        if state.status == Status::Ready && state.slots.values().all(|s| s.instance.is_none()) {
            state.status = Status::Starting;
        }
    }

    pub(crate) fn record_failure(&self, reason: &str, crash_loop: bool) {
        let mut state = self.state.lock().expect("service state");
        state.restarts += 1;
        state.last_error = Some(reason.to_string());
        if crash_loop {
            state.status = Status::CrashLoop;
        }
        drop(state);
        self.ready_changed.notify_waiters();
    }

    pub(crate) fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    pub(crate) async fn stopping(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

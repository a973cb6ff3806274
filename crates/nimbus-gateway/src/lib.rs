//! The Nimbus gateway: HTTP ingress in front of the functions of an app.
//!
//! This crate owns the listening socket (hyper 1, HTTP/1.1 and HTTP/2; each connection served
//! from accept to close by one of the connection threads, a single-threaded runtime per core; an
//! idle timeout, a cap on open connections and backoff on accept errors per listener — the
//! control API is served by the same accept loop through [`Handler`]), routing of
//! `[[trigger.http]]` routes to functions or services (exact paths, `/prefix/...` wildcards, method filters), request ids
//! (`x-request-id`, kept from the caller or minted), request body limits (413), per-component
//! admission control (bounded concurrency, a bounded FIFO queue, 503 + `Retry-After` when full),
//! `/healthz`, and graceful shutdown that drains in-flight requests. For a server hosting many
//! apps, [`Ingress`] routes by host and path to an app, splits its traffic across revisions by
//! percent or tag, and is swapped atomically when the control plane changes it. It does not run
//! wasm (that is `nimbus-wasm`) or service processes (`nimbus-services`), read manifests (that is `nimbus-manifest`) or decide what is
//! deployed (that is `nimbus-control`).
//!
//! ```no_run
//! # async fn demo(manifest: nimbus_manifest::Manifest, hello: nimbus_wasm::Function) -> std::io::Result<()> {
//! use nimbus_gateway::{Backend, Gateway};
//!
//! let backends = [("hello".to_string(), Backend::Function(hello))].into();
//! let observer = nimbus_observe::Observer::disabled();
//! let gateway = std::sync::Arc::new(Gateway::from_manifest(&manifest, &backends, &observer));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! nimbus_gateway::serve(listener, gateway, tokio::signal::ctrl_c(), Default::default()).await
//! # }
//! ```

mod actors;
mod admission;
mod apps;
mod body;
mod callers;
mod events;
mod handler;
mod hygiene;
mod idle;
mod kv_changes;
mod request_body;
mod request_id;
mod respond;
mod router;
mod server;
mod triggers;
mod workers;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use nimbus_manifest::{Manifest, RoutePattern};
use nimbus_observe::{ComponentTelemetry, Observer, Tracer};
use nimbus_services::Service;
use nimbus_wasm::Function;

pub use actors::{ACTORS_BUCKET, ACTORS_PATH, Activations, ActorError, ActorHost, decode_state, encode_state};
pub use admission::{Admission, Rejected};
pub use apps::{AppTable, Ingress, LiveApp, LiveRevision, REVISION_HEADER, TAG_HEADER};
pub use body::GatewayBody;
pub use callers::Callers;
pub use events::{ComponentDestination, EVENTS_PREFIX, EventIngress, MAX_EVENT_BYTES};
pub use idle::ClientBody;
pub use kv_changes::{KvChanges, kv_topic};
pub use request_id::REQUEST_ID_HEADER;
pub use router::{Route, RouteMatch, Router};
pub use server::{Handler, ServeConfig, serve, watch_body};
pub use triggers::{AppTriggers, TriggerInfo, app_topics, cron_topic, handler_problems, topic_ref};

/// The path the gateway answers itself with `{"status":"ok"}`.
pub const HEALTH_PATH: &str = "/healthz";

/// What serves a component's requests.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A WebAssembly function: a fresh instance per request.
    Function(Function),
    /// A long-lived service process (or several).
    Service(Arc<Service>),
}

impl Backend {
    /// The component name.
    pub fn name(&self) -> &str {
        match self {
            Self::Function(f) => f.name(),
            Self::Service(s) => s.name(),
        }
    }
}

/// A component as the gateway sees it: its backend plus its admission state and body limit.
#[derive(Debug)]
pub struct Target {
    /// What serves it.
    pub backend: Backend,
    /// Concurrency and queue of this component.
    pub admission: Admission,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Its metrics and log sink.
    pub telemetry: Arc<ComponentTelemetry>,
}

impl Target {
    /// Waits for one of the component's admission slots (or says why not), counting the wait
    /// in its `nimbus_admission_wait_seconds`: every request, delivery and actor call admitted
    /// goes through here.
    pub(crate) async fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, admission::Rejected> {
        let (permit, waited) = self.admission.admit().await?;
        self.telemetry.metrics.admitted(waited);
        Ok(permit)
    }
}

/// Routes and targets of one app, and its event ingress.
#[derive(Debug)]
pub struct Gateway {
    tracer: Tracer,
    router: Router,
    targets: HashMap<String, Arc<Target>>,
    events: Option<EventIngress>,
    actors: Option<Arc<ActorHost>>,
    openness: callers::Openness,
}

impl Gateway {
    /// Builds the routing table of a validated manifest. `backends` holds the loaded function
    /// or started service of every component that a trigger names; requests are traced and
    /// counted by `observer`.
    ///
    /// # Panics
    /// If a trigger names a component missing from `backends`: the caller loads them all first.
    pub fn from_manifest(manifest: &Manifest, backends: &HashMap<String, Backend>, observer: &Observer) -> Self {
        let targets: HashMap<String, Arc<Target>> = manifest
            .component
            .iter()
            .filter_map(|(name, c)| {
                let backend = backends.get(name)?.clone();
                if let Backend::Function(f) = &backend {
                    f.bind_app(&manifest.app.name);
                }
                let l = &c.limits;
                let telemetry = observer.component(&manifest.app.name, name);
                let target = Target {
                    backend,
                    admission: Admission::new(
                        l.max_concurrency as usize,
                        l.queue_depth as usize,
                        Duration::from_millis(l.queue_timeout_ms),
                        telemetry.metrics.queue_depth.clone(),
                    ),
                    max_body_bytes: usize::try_from(l.max_body_kb.saturating_mul(1024)).unwrap_or(usize::MAX),
                    telemetry,
                };
                Some((name.clone(), Arc::new(target)))
            })
            .collect();
        let routes = manifest.trigger.http.iter().map(|t| Route {
            route: t.route.as_str().into(),
            pattern: RoutePattern::parse(&t.route).expect("routes are validated with the manifest"),
            methods: t.methods.iter().filter_map(|m| http::Method::from_bytes(m.as_bytes()).ok()).collect(),
            target: targets
                .get(t.component.as_str())
                .unwrap_or_else(|| panic!("component `{}` was not loaded", t.component))
                .clone(),
        });
        let router = Router::new(routes);
        Self {
            tracer: observer.tracer().clone(),
            router,
            targets,
            events: None,
            actors: None,
            openness: callers::Openness::of(manifest),
        }
    }

    /// Accepts CloudEvents on `POST /events/{topic}`.
    pub fn with_events(mut self, ingress: EventIngress) -> Self {
        self.events = Some(ingress);
        self
    }

    /// Serves `POST /actors/TYPE/KEY/METHOD`.
    pub fn with_actors(mut self, actors: Arc<ActorHost>) -> Self {
        self.actors = Some(actors);
        self
    }

    /// Lets `callers` decide who may publish to the app's topics and call its actor types that
    /// are not `public`; without it those calls are refused.
    pub fn with_callers(mut self, callers: Arc<dyn Callers>) -> Self {
        self.openness.set_callers(callers);
        self
    }

    /// The component's target (its backend and admission), if it was loaded.
    pub fn target(&self, component: &str) -> Option<Arc<Target>> {
        self.targets.get(component).cloned()
    }

    /// Where events for `component` go (through its admission control); `path` is where a
    /// service gets them, `trigger` names the trigger in logs. `None` if it was not loaded.
    pub fn destination(&self, component: &str, path: Option<&str>, trigger: String) -> Option<ComponentDestination> {
        Some(ComponentDestination::new(self.tracer.clone(), self.target(component)?, path, trigger))
    }

    /// The routing table.
    pub fn router(&self) -> &Router {
        &self.router
    }
}

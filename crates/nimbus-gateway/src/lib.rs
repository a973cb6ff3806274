//! The Nimbus gateway: HTTP ingress in front of the functions of an app.
//!
//! This crate owns the listening socket (hyper 1, HTTP/1.1 and HTTP/2; each connection served
//! from accept to close by one of the connection threads, a single-threaded runtime per core; an
//! idle timeout, a cap on open connections and backoff on accept errors per listener — the
//! control API is served by the same accept loop through [`Handler`]; TLS when configured —
//! handshakes in the connection's task, certificates by SNI from `nimbus-security`, a clear `400`
//! for plaintext sent to a TLS port, HSTS, and [`RedirectToHttps`] for a plain port), routing of
//! `[[trigger.http]]` routes to functions or services (exact paths, `/prefix/...` wildcards, method filters), request ids
//! (`x-request-id`, kept from the caller or minted), request body limits (413), admission of each
//! request through its component's [`Target`] (`nimbus-target`: bounded concurrency, a bounded
//! FIFO queue, 503 + `Retry-After` when full), the CloudEvents ingress (`POST /events/{topic}`),
//! the HTTP side of actor calls (`POST /actors/TYPE/KEY/METHOD`, run through [`ActorCalls`], a
//! trait defined here and implemented by `nimbus-actors`, which sits above this crate), of
//! workflow runs (`/workflows/NAME/...`, through [`WorkflowCalls`], implemented by
//! `nimbus-workflows`), who may call non-public topics, actors and workflows ([`Callers`], supplied by the control plane), calls from one
//! component to another (`grants.invoke`: the mesh a revision binds into its functions and
//! services with [`Gateway::with_mesh`], serving each call on the callee's target, across apps
//! through the [`Ingress`] when the callee's app exports it), `/healthz`,
//! and graceful shutdown that drains in-flight requests. For a server hosting many
//! apps, [`Ingress`] routes by host and path to an app, splits its traffic across revisions by
//! percent or tag, and is swapped atomically when the control plane changes it ([`Swap`] does the
//! same for the one app of `nimbus up` and `nimbus dev`); in a cluster,
//! [`PeerIngress`] serves the requests other nodes forward to this node's services. It does not run
//! wasm (that is `nimbus-wasm`), service processes (`nimbus-services`), actors (`nimbus-actors`)
//! or triggers and event delivery (`nimbus-triggers`), read manifests (that is `nimbus-manifest`),
//! assemble an app (`nimbus-host`) or decide what is deployed (that is `nimbus-control`).
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

mod actor_ingress;
mod apps;
mod body;
mod callers;
mod events;
mod forwarded;
mod handler;
mod hygiene;
mod idle;
mod mesh;
pub mod openapi;
mod peer;
mod request_body;
mod request_id;
mod respond;
mod router;
mod server;
mod swap;
mod tls;
mod workers;
mod workflow_ingress;

use std::collections::HashMap;
use std::sync::Arc;

use nimbus_manifest::Manifest;
use nimbus_observe::{Observer, Tracer};

pub use actor_ingress::{ACTORS_PATH, ActorCall, ActorCalls, CallFailure};
pub use apps::{AppTable, Ingress, LiveApp, LiveRevision, REVISION_HEADER, TAG_HEADER};
pub use body::GatewayBody;
pub use callers::Callers;
pub use events::{EVENTS_PREFIX, EventIngress, MAX_EVENT_BYTES};
pub use idle::ClientBody;
pub use mesh::MeshConfig;
pub use nimbus_target::{Admission, Backend, Rejected, Target};
pub use peer::{
    DEADLINE_HEADER, FORWARD_ACTOR_HEADER, FORWARD_HEADER, NODE_HEADER, PeerIngress, WAKE_RUN_HEADER,
    strip_peer_headers,
};
pub use request_id::REQUEST_ID_HEADER;
pub use router::{Route, RouteMatch, Router};
pub use server::{Handler, ServeConfig, serve, watch_body};
pub use swap::Swap;
pub use tls::RedirectToHttps;
pub use workflow_ingress::{IDEMPOTENCY_KEY_HEADER, WORKFLOWS_PATH, WorkflowCalls, WorkflowOp};

/// The path the gateway answers itself with `{"status":"ok"}`.
pub const HEALTH_PATH: &str = "/healthz";

/// Routes and targets of one app, and its event ingress.
#[derive(Debug)]
pub struct Gateway {
    tracer: Tracer,
    router: Router,
    /// Its components, as routes and component-to-component calls reach them.
    callees: Arc<mesh::Callees>,
    events: Option<EventIngress>,
    actors: Option<Arc<dyn ActorCalls>>,
    workflows: Option<Arc<dyn WorkflowCalls>>,
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
                Some((name.clone(), Arc::new(Target::new(&manifest.app.name, name, c, backend, observer))))
            })
            .collect();
        let routes = manifest.trigger.http.iter().map(|t| Route {
            route: t.route.to_string().into(),
            pattern: t.route.clone(),
            methods: t.methods.iter().map(|m| m.0.clone()).collect(),
            target: targets
                .get(t.component.as_str())
                .unwrap_or_else(|| panic!("component `{}` was not loaded", t.component))
                .clone(),
        });
        let router = Router::new(routes);
        let callees = mesh::Callees {
            app: manifest.app.name.as_str().into(),
            targets,
            exports: manifest.export.clone(),
            tracer: observer.tracer().clone(),
            domain: std::sync::OnceLock::new(),
        };
        Self {
            tracer: observer.tracer().clone(),
            router,
            callees: Arc::new(callees),
            events: None,
            actors: None,
            workflows: None,
            openness: callers::Openness::of(manifest),
        }
    }

    /// Accepts CloudEvents on `POST /events/{topic}`.
    pub fn with_events(mut self, ingress: EventIngress) -> Self {
        self.events = Some(ingress);
        self
    }

    /// Serves `POST /actors/TYPE/KEY/METHOD` through `actors` (the app's actor host, which
    /// `nimbus-actors` implements).
    pub fn with_actors(mut self, actors: Arc<dyn ActorCalls>) -> Self {
        self.actors = Some(actors);
        self
    }

    /// Serves `/workflows/NAME/...` through `workflows` (the app's workflow engine, which
    /// `nimbus-workflows` implements).
    pub fn with_workflows(mut self, workflows: Arc<dyn WorkflowCalls>) -> Self {
        self.workflows = Some(workflows);
        self
    }

    /// The workflows it serves, if any.
    pub fn workflows(&self) -> Option<Arc<dyn WorkflowCalls>> {
        self.workflows.clone()
    }

    /// Lets `callers` decide who may publish to the app's topics and call its actor types that
    /// are not `public`; without it those calls are refused.
    pub fn with_callers(mut self, callers: Arc<dyn Callers>) -> Self {
        self.openness.set_callers(callers);
        self
    }

    /// Lets its components call each other and, through `config.peers`, other apps' exported
    /// components (`grants.invoke`, `http://NAME.internal/...`), with identities under
    /// `config.trust_domain`. Without it every such call is refused.
    pub fn with_mesh(self, config: MeshConfig) -> Self {
        let _ = self.callees.domain.set(config.trust_domain);
        let mesh: Arc<dyn nimbus_security::mesh::Mesh> =
            Arc::new(mesh::RevisionMesh { callees: Arc::downgrade(&self.callees), peers: config.peers });
        for target in self.callees.targets.values() {
            match &target.backend {
                Backend::Function(f) => f.bind_mesh(mesh.clone()),
                Backend::Service(s) => s.bind_mesh(mesh.clone()),
            }
        }
        self
    }

    /// The workload identity of one of its components.
    pub fn workload(&self, component: &str) -> nimbus_security::identity::WorkloadId {
        self.callees.domain().component(&self.callees.app, component)
    }

    /// The component's target (its backend and admission), if it was loaded.
    pub fn target(&self, component: &str) -> Option<Arc<Target>> {
        self.callees.targets.get(component).cloned()
    }

    /// Its services, by component name.
    pub fn services(&self) -> impl Iterator<Item = (&str, &Arc<nimbus_services::Service>)> {
        self.callees.targets.iter().filter_map(|(name, t)| match &t.backend {
            Backend::Service(s) => Some((name.as_str(), s)),
            Backend::Function(_) => None,
        })
    }

    /// The routing table.
    pub fn router(&self) -> &Router {
        &self.router
    }
}

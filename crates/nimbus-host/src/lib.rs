//! The Nimbus app host: the one place that turns a validated app into a live revision and tears
//! it down.
//!
//! [`AppHost::assemble`] reads every granted secret (failing while one is not set), loads (or
//! takes from the compile cache) every function, checks that each
//! trigger's component can handle it, starts every service and waits until each is ready, then
//! builds the app's [`Gateway`]: its routes, its CloudEvents ingress (`/events/`), its actors
//! (`/actors/`, sharing one activation per key across the app's revisions), its workflows
//! (`/workflows/`, one engine per app driving each run on the revision that started it) and the
//! gate on callers of topics, actor types and workflows that are not public, with its components bound to the mesh
//! of component-to-component calls (`grants.invoke`; a grant naming a component that does not
//! serve HTTP is refused here) and its services given certificates of their workload identity
//! when the host issues them. [`AppHost::start_triggers`] starts the
//! topic, cron and KV triggers delivering to a revision (and has alerting read the lag and dead
//! letters of their consumer groups); [`Revision::stop`] stops its services.
//! `nimbus up` (one app, its files next to the manifest) and `nimbus server` (every deployed
//! revision, from its bundle) both call these; nothing else assembles an app.
//!
//! It does not open backends (the caller hands it the runtime, bus, KV store and who may call
//! the app), decide what is deployed or where traffic goes (that is `nimbus-control`), or
//! listen on sockets (that is `nimbus-gateway`).
//!
//! ```no_run
//! # async fn demo(loaded: nimbus_manifest::LoadedManifest, runtime: std::sync::Arc<nimbus_wasm::Runtime>,
//! #     callers: std::sync::Arc<dyn nimbus_gateway::Callers>) -> Result<(), Box<dyn std::error::Error>> {
//! use nimbus_host::{AppHost, Components, HostEnv};
//!
//! let host = AppHost::new(HostEnv { runtime, bus: None, kv: None, kv_changes: None, callers,
//!     observer: nimbus_observe::Observer::disabled(), secrets: None, mesh: Default::default(),
//!     workload_certs: None, cluster: None });
//! let revision = host.assemble(&loaded, Components::Files).await?;
//! let triggers = host.start_triggers(&revision.manifest, &revision.gateway).await?;
//! // ... serve `revision.gateway` ...
//! triggers.stop().await;
//! revision.stop().await;
//! # Ok(()) }
//! ```

mod alert_topic;
mod load;
mod observed;
mod secrets;
mod source;
mod stop;
mod stored;
mod topic_gauges;
mod workflows;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use nimbus_actors::{Activations, ActorHost};
use nimbus_bus::{BusError, EventBus};
use nimbus_gateway::{Callers, EventIngress, Gateway, MeshConfig};
use nimbus_manifest::{LoadedManifest, Manifest};
use nimbus_observe::Observer;
use nimbus_security::identity::WorkloadCerts;
use nimbus_security::secrets::SecretSource;
use nimbus_services::Service;
use nimbus_state::KvStore;
use nimbus_state::journal::{Journal, JournalError};
use nimbus_triggers::{AppTriggers, KvChanges};
use nimbus_wasm::Runtime;
use nimbus_workflows::{Engine, WorkflowHost};

pub use alert_topic::AlertTopic;
pub use observed::deployed;

pub use source::Components;
pub use stop::{StopOnDrop, stop_in_background, stop_services};

/// What every app of a host runs on.
#[derive(Debug)]
pub struct HostEnv {
    /// Compiles and runs the functions (bound to the bus and KV store already, if any).
    pub runtime: Arc<Runtime>,
    /// The event bus of the apps' topics; without it apps get no event ingress or triggers.
    pub bus: Option<Arc<dyn EventBus>>,
    /// The KV store actors keep their state in and workflows their journal; without it apps get
    /// no actors or workflows.
    pub kv: Option<Arc<dyn KvStore>>,
    /// The KV store publishing changes, which `[[trigger.kv]]` watch; without it KV triggers
    /// do not run.
    pub kv_changes: Option<Arc<KvChanges>>,
    /// Who may publish to topics and call actor types that are not `public`.
    pub callers: Arc<dyn Callers>,
    /// Where traces, metrics and logs go.
    pub observer: Observer,
    /// Where components' granted secrets come from (the runtime reads functions' from the same
    /// source); without one, an app granting secrets does not assemble.
    pub secrets: Option<Arc<dyn SecretSource>>,
    /// How components call each other (`grants.invoke`): the trust domain of their identities and
    /// the server's ingress, through which they reach other apps' exported components.
    pub mesh: MeshConfig,
    /// Issues services short-lived certificates of their workload identity (under the trust
    /// domain of `mesh`), written under the directory; without it services get none.
    pub workload_certs: Option<(Arc<WorkloadCerts>, PathBuf)>,
    /// On a node of a cluster: where each service runs, which node owns each actor key and
    /// drives each workflow run; without it this node runs everything.
    pub cluster: Option<ClusterSeams>,
}

/// What a node of a cluster plugs into the app host (the control plane's scheduler implements
/// all three).
#[derive(Debug, Clone)]
pub struct ClusterSeams {
    /// Where each service starts out (then the scheduler moves it).
    pub services: Arc<dyn nimbus_services::Placer>,
    /// Which node owns each actor key (its calls are forwarded there).
    pub actors: Arc<dyn nimbus_actors::ActorOwners>,
    /// Which node drives each workflow run.
    pub workflows: Arc<dyn nimbus_workflows::RunOwners>,
}

impl HostEnv {
    /// The identity service `component` of `app` runs as, if services get certificates.
    fn service_identity(&self, app: &str, component: &str) -> Option<nimbus_services::Identity> {
        let (certs, base) = self.workload_certs.as_ref()?;
        let id = self.mesh.trust_domain.component(app, component);
        Some(nimbus_services::Identity { id, certs: certs.clone(), base: base.clone() })
    }
}

/// Assembles apps on one set of backends.
#[derive(Debug)]
pub struct AppHost {
    env: HostEnv,
    /// Per app, the actor activations all its revisions share (one activation per key).
    activations: Mutex<HashMap<String, Arc<Activations>>>,
    /// Per app, the workflow engine all its revisions share (each run on its own revision).
    workflows: Mutex<HashMap<String, Arc<Engine>>>,
    /// The consumer groups alerting reads (with a bus and alerting on).
    topic_gauges: Option<Arc<topic_gauges::TopicGauges>>,
    /// Meters the KV storage of the apps (with a KV store and metering on, outside a cluster).
    stored: Option<Arc<stored::StoredBytes>>,
}

/// One revision of an app, live: its gateway routes requests to its loaded functions and ready
/// services.
#[derive(Debug)]
pub struct Revision {
    /// The manifest it was assembled from.
    pub manifest: Arc<Manifest>,
    /// Its routes, event ingress and actors.
    pub gateway: Gateway,
    /// Its running services.
    pub services: Vec<Arc<Service>>,
    /// Per component, how it was loaded (`wasi:http component, compiled in 120 ms`).
    pub described: HashMap<String, String>,
}

/// Why an app could not be assembled; every problem is a diagnostic pointing into the manifest.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// A granted secret is not set or cannot be read.
    #[error("{}", .0.join("\n"))]
    Secrets(Vec<String>),
    /// A function does not load.
    #[error("{}", .0.join("\n"))]
    Functions(Vec<String>),
    /// A trigger's component cannot handle it.
    #[error("{}", .0.join("\n"))]
    Handlers(Vec<String>),
    /// A service does not start or become ready (every service was stopped).
    #[error("{}", .0.join("\n"))]
    Services(Vec<String>),
}

impl AssembleError {
    /// The diagnostics, one per problem.
    pub fn into_problems(self) -> Vec<String> {
        match self {
            Self::Secrets(p) | Self::Functions(p) | Self::Handlers(p) | Self::Services(p) => p,
        }
    }
}

impl AppHost {
    /// A host running apps on `env`.
    pub fn new(env: HostEnv) -> Self {
        let topic_gauges = env.bus.clone().zip(env.observer.insight()).map(|(bus, insight)| {
            let gauges = Arc::new(topic_gauges::TopicGauges::new(bus));
            insight.add_source(gauges.clone());
            gauges
        });
        let stored = match (&env.kv, env.observer.metering(), &env.cluster) {
            (Some(kv), Some(metering), None) => {
                Some(stored::StoredBytes::start(kv.clone(), metering.clone(), metering.flush_interval()))
            }
            _ => None,
        };
        Self { env, activations: Mutex::default(), workflows: Mutex::default(), topic_gauges, stored }
    }

    /// The backends apps run on.
    pub fn env(&self) -> &HostEnv {
        &self.env
    }

    /// Turns a validated app into a live revision: functions loaded, triggers checked, services
    /// ready, and the gateway built. On error nothing keeps running.
    pub async fn assemble(&self, loaded: &LoadedManifest, from: Components<'_>) -> Result<Revision, AssembleError> {
        let m = &loaded.manifest;
        let mut described = HashMap::new();
        let mut secret_env = secrets::read(loaded, self.env.secrets.as_ref())?;
        let mut backends = load::functions(&self.env.runtime, loaded, &from, &mut described).await?;
        load::check_handlers(loaded, &backends)?;
        // Everything the revision runs is metered under it (and the app's tenant).
        if let Some(stored) = &self.stored {
            stored.serve(&m.app.name, m.app.tenant());
        }
        let observer = self.env.observer.for_revision(from.revision(), m.app.tenant());
        let services =
            load::services(loaded, &from, &self.env, &observer, &mut secret_env, &mut backends, &mut described).await?;
        let mut gateway = Gateway::from_manifest(m, &backends, &observer)
            .with_callers(self.env.callers.clone())
            .with_mesh(self.env.mesh.clone());
        let topics = nimbus_triggers::app_topics(m);
        if let Some(bus) = &self.env.bus
            && !topics.is_empty()
        {
            gateway = gateway.with_events(EventIngress::new(&m.app.name, bus.clone(), topics));
        }
        if let Some(kv) = &self.env.kv {
            let shared = self.activations.lock().expect("activations").entry(m.app.name.clone()).or_default().clone();
            if let Some(actors) = ActorHost::new(
                m,
                &gateway,
                from.revision(),
                kv.clone(),
                shared,
                self.env.cluster.as_ref().map(|c| c.actors.clone()),
            ) {
                gateway = gateway.with_actors(actors);
            }
            if !m.trigger.workflow.is_empty() {
                let engine = self.workflows(&m.app.name, kv)?;
                if let Some(workflows) = WorkflowHost::new(m, &gateway, from.revision(), engine) {
                    gateway = gateway.with_workflows(workflows);
                }
            }
        }
        Ok(Revision { manifest: Arc::new(m.clone()), gateway, services, described })
    }

    /// The workflow engine of `app` (created on first use), journaling in `kv`.
    fn workflows(&self, app: &str, kv: &Arc<dyn KvStore>) -> Result<Arc<Engine>, AssembleError> {
        let mut engines = self.workflows.lock().expect("workflow engines");
        if let Some(engine) = engines.get(app) {
            return Ok(engine.clone());
        }
        let owners = self.env.cluster.as_ref().map(|c| c.workflows.clone());
        let engine = Engine::new(app, kv.clone(), self.env.observer.tracer().clone(), owners)
            .map_err(|e| AssembleError::Handlers(vec![format!("the workflow journal of `{app}`: {e}")]))?;
        engines.insert(app.to_string(), engine.clone());
        Ok(engine)
    }

    /// The unfinished workflow runs of `app` per revision they are pinned to (none without a KV
    /// store): those revisions must stay loaded and may not be deleted.
    pub async fn pinned_revisions(&self, app: &str) -> Result<BTreeMap<String, Vec<String>>, JournalError> {
        let Some(kv) = &self.env.kv else { return Ok(BTreeMap::new()) };
        let mut pinned: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for run in Journal::new(kv.clone(), app)?.unfinished_runs().await? {
            pinned.entry(run.revision).or_default().push(run.id);
        }
        Ok(pinned)
    }

    /// Starts the topic, cron and KV triggers of `manifest`, delivering through `gateway` (a
    /// revision [`AppHost::assemble`] built), and the topics and schedules of its workflows; none
    /// without a bus.
    pub async fn start_triggers(&self, manifest: &Manifest, gateway: &Gateway) -> Result<AppTriggers, BusError> {
        match &self.env.bus {
            Some(bus) => {
                let tracer = self.env.observer.tracer();
                let workflows = gateway
                    .workflows()
                    .map(|w| Arc::new(workflows::Starter(w)) as Arc<dyn nimbus_triggers::WorkflowStarter>);
                let kv_changes = self.env.kv_changes.as_ref();
                let triggers =
                    AppTriggers::start(manifest, &|c| gateway.target(c), tracer, bus, kv_changes, workflows.as_ref())
                        .await?;
                if let Some(gauges) = &self.topic_gauges {
                    gauges.set(&manifest.app.name, triggers.consumers.clone());
                }
                Ok(triggers)
            }
            None => Ok(AppTriggers::default()),
        }
    }
}

impl Revision {
    /// Stops the revision's services (each drains, then SIGTERM, grace, SIGKILL).
    pub async fn stop(&self) {
        stop_services(&self.services).await;
    }
}

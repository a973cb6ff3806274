//! The deployed state of a server: apps and their revisions, loaded and routable, mirrored
//! from the store. Every change is checked, written to the store (durably), applied in memory
//! and published to the ingress before it is acknowledged; changes are serialized.
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use nimbus_bus::EventBus;
use nimbus_gateway::{Ingress, LiveRevision};
use nimbus_host::{AppHost, HostEnv};
use nimbus_manifest::{Manifest, RoutePattern};
use nimbus_observe::Observer;
use nimbus_services::Service;
use nimbus_triggers::AppTriggers;
use nimbus_wasm::Runtime;

use crate::auth::Principal;
use crate::error::ControlError;
use crate::model::{AppInfo, RevisionDetail, RevisionInfo};
use crate::ownership::Claim;
use crate::store::{AppRecord, RevisionRecord, Store};

mod checks;
mod converge;
mod deploy;
mod load;
mod retention;
mod sharing;
mod traffic;

pub use deploy::DeployOptions;
use deploy::unused_blobs;
use load::http_routes;
pub(crate) use load::parse_manifest;

/// Per revision id, the unfinished workflow runs pinned to it.
type Pinned = BTreeMap<String, Vec<String>>;

/// A stored revision: its manifest and routes, and while it has traffic or a tag, its loaded
/// components (`live`) and running services.
#[derive(Debug)]
struct Loaded {
    record: RevisionRecord,
    manifest: Arc<Manifest>,
    version: Option<String>,
    routes: BTreeSet<RoutePattern>,
    live: Option<Arc<LiveRevision>>,
    services: Vec<Arc<Service>>,
}

#[derive(Debug)]
struct AppState {
    record: AppRecord,
    revisions: BTreeMap<String, Loaded>,
}

impl Loaded {
    /// The requests this revision claims: its routes and its CloudEvents ingress.
    fn claimed(&self) -> impl Iterator<Item = RoutePattern> + '_ {
        claimed_routes(&self.routes, &self.manifest)
    }
}

/// A revision's routes, its CloudEvents ingress `/events/{topic}` per topic, its actors
/// `/actors/{type}/...` per actor type and its workflows `/workflows/{name}/...`.
fn claimed_routes<'a>(
    routes: &'a BTreeSet<RoutePattern>,
    manifest: &Manifest,
) -> impl Iterator<Item = RoutePattern> + 'a {
    let events = nimbus_triggers::app_topics(manifest)
        .into_iter()
        .map(|t| RoutePattern::Exact(format!("{}{t}", nimbus_gateway::EVENTS_PREFIX)));
    let actors: Vec<RoutePattern> = manifest
        .trigger
        .actor
        .iter()
        .map(|t| RoutePattern::Prefix(format!("{}{}", nimbus_gateway::ACTORS_PATH, t.actor_type)))
        .collect();
    let workflows: Vec<RoutePattern> = manifest
        .trigger
        .workflow
        .iter()
        .map(|t| RoutePattern::Prefix(format!("{}{}", nimbus_gateway::WORKFLOWS_PATH, t.name)))
        .collect();
    routes.iter().cloned().chain(events).chain(actors).chain(workflows)
}

impl AppState {
    /// The app's hosts and what all its revisions claim.
    fn claim(&self) -> Claim {
        let routes: BTreeSet<RoutePattern> = self.revisions.values().flat_map(Loaded::claimed).collect();
        Claim { name: self.record.name.clone(), hosts: self.record.hosts.clone(), routes: routes.into_iter().collect() }
    }

    fn info(&self) -> AppInfo {
        let r = &self.record;
        AppInfo {
            name: r.name.clone(),
            hosts: r.hosts.clone(),
            traffic: r.traffic.clone(),
            revisions: self.revisions.len(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }

    fn revision_info(&self, rev: &Loaded) -> RevisionInfo {
        RevisionInfo {
            loaded: rev.live.is_some(),
            id: rev.record.id.clone(),
            app: rev.record.app.clone(),
            created_at: rev.record.created_at,
            version: rev.version.clone(),
            routes: rev.routes.iter().map(ToString::to_string).collect(),
            artifacts: rev.record.artifacts.clone(),
            percent: self.record.traffic.percent_of(&rev.record.id),
            tags: self.record.traffic.tags_of(&rev.record.id),
            source: rev.record.source.clone(),
        }
    }

    /// The placements of the revisions that receive requests: the app's data must meet all.
    fn placements(&self) -> Vec<&nimbus_manifest::Placement> {
        let served = self.record.traffic.served();
        served.into_iter().filter_map(|id| self.revisions.get(id)).map(|r| &r.manifest.placement).collect()
    }

    /// The revision with the most traffic, whose placement decides where the app is.
    fn main(&self) -> Option<&Loaded> {
        let main = self.record.traffic.targets.iter().max_by_key(|t| t.percent)?;
        self.revisions.get(&main.revision)
    }

    fn revision(&self, id: &str) -> Result<&Loaded, ControlError> {
        self.revisions
            .get(id)
            .ok_or_else(|| ControlError::NotFound(format!("app `{}` has no revision `{id}`", self.record.name)))
    }
}

/// Apps, revisions and traffic of one server.
#[derive(Debug)]
pub struct Platform {
    services_dir: PathBuf,
    store: Arc<Store>,
    ingress: Arc<Ingress>,
    bus: Arc<dyn EventBus>,
    /// Assembles every revision that is served.
    host: AppHost,
    apps: tokio::sync::Mutex<BTreeMap<String, AppState>>,
    /// Per app, the revision its topic and cron triggers deliver to (the one with the largest
    /// share of traffic) and the running triggers.
    triggers: tokio::sync::Mutex<BTreeMap<String, (String, AppTriggers)>>,
    /// How many revisions without traffic or a tag each app keeps (see `retention`).
    keep_inactive: std::sync::atomic::AtomicUsize,
    /// This node's labels, which apps' `[placement]` must match, and the pinned apps (kept
    /// current for the stores on NATS).
    residency: Arc<nimbus_manifest::Residency>,
    authorizer: Arc<crate::Authorizer>,
    /// The supply-chain check of deploys (none: revisions carry no report).
    supply: std::sync::OnceLock<crate::SupplyChain>,
}

/// What the apps' data goes through.
#[derive(Debug, Clone)]
pub struct AppData {
    /// The event bus of every app's topics.
    pub bus: Arc<dyn EventBus>,
    /// The KV store (which publishes its changes to the bus for `[[trigger.kv]]`).
    pub kv_changes: Arc<nimbus_triggers::KvChanges>,
    /// Who may publish to topics and call actor types that are not `public` through the gateway.
    pub callers: Arc<dyn nimbus_gateway::Callers>,
    /// The apps' secrets (the [`crate::Vault`]), which services get at start; functions read
    /// them through the runtime, which must be given the same source.
    pub secrets: Option<Arc<dyn nimbus_security::secrets::SecretSource>>,
    /// The trust domain of the apps' workload identities.
    pub trust_domain: nimbus_security::identity::TrustDomain,
    /// Issues services certificates of their workload identity, written under the directory.
    pub workload_certs: Option<(Arc<nimbus_security::identity::WorkloadCerts>, PathBuf)>,
    /// This node's labels — an app whose `[placement]` they do not meet is not loaded, served
    /// or deployed here — and the pinned apps, which the platform keeps current for the stores
    /// of the apps' data (the same [`nimbus_manifest::Residency`] they were opened with).
    pub residency: Arc<nimbus_manifest::Residency>,
    /// In a cluster, where each service runs and which node owns each actor key and workflow
    /// run ([`crate::Scheduler::seams`]); else this node runs everything.
    pub cluster: Option<nimbus_host::ClusterSeams>,
    /// The policies: a revision whose components a policy denies what their grants give them
    /// is not loaded (the same [`crate::Authorizer`] the API's tokens are checked with).
    pub authorizer: Arc<crate::Authorizer>,
}

impl Platform {
    /// Loads every stored revision that has traffic or a tag and publishes the routing table to
    /// `ingress`; the other revisions are loaded when traffic or a tag moves to them. A revision
    /// that no longer loads (e.g. the engine changed incompatibly) is reported and left out.
    /// Service revisions are unpacked under `services_dir`. Every revision is kept until
    /// [`Platform::set_retention`] says otherwise.
    pub async fn open(
        store: Arc<Store>,
        runtime: Arc<Runtime>,
        ingress: Arc<Ingress>,
        data: AppData,
        services_dir: PathBuf,
        observer: Observer,
    ) -> Result<Self, ControlError> {
        let AppData { bus, kv_changes, callers, secrets, trust_domain, workload_certs, residency, cluster, authorizer } =
            data;
        let mesh = nimbus_gateway::MeshConfig { trust_domain, peers: Some(Arc::downgrade(&ingress)) };
        let env = HostEnv {
            runtime,
            bus: Some(bus.clone()),
            kv: Some(kv_changes.store().clone()),
            kv_changes: Some(kv_changes),
            callers,
            observer,
            secrets,
            mesh,
            workload_certs,
            cluster,
        };
        let platform = Self {
            services_dir,
            store,
            ingress,
            bus,
            host: AppHost::new(env),
            apps: tokio::sync::Mutex::default(),
            triggers: tokio::sync::Mutex::default(),
            keep_inactive: std::sync::atomic::AtomicUsize::new(usize::MAX),
            residency,
            authorizer,
            supply: std::sync::OnceLock::new(),
        };
        let mut apps: BTreeMap<String, AppState> = BTreeMap::new();
        for record in platform.store.apps()? {
            apps.insert(record.name.clone(), AppState { record, revisions: BTreeMap::new() });
        }
        let mut records: BTreeMap<String, Vec<RevisionRecord>> = BTreeMap::new();
        for record in platform.store.revisions()? {
            records.entry(record.app.clone()).or_default().push(record);
        }
        // The apps' data is placed as their served revisions say before any of it is read.
        let manifests: Vec<(String, nimbus_manifest::Placement)> = records
            .iter()
            .flat_map(|(app, revisions)| {
                let served = apps.get(app).map(|a| a.record.traffic.served()).unwrap_or_default();
                revisions
                    .iter()
                    .filter(move |r| served.contains(r.id.as_str()))
                    .filter_map(|r| parse_manifest(&r.manifest).ok())
                    .map(|l| (l.manifest.app.name.clone(), l.manifest.placement.clone()))
            })
            .collect();
        let mut by_app: BTreeMap<&str, Vec<&nimbus_manifest::Placement>> = BTreeMap::new();
        for (app, placement) in &manifests {
            by_app.entry(app).or_default().push(placement);
        }
        platform.residency.pin_all(by_app);
        let mut pinned = Pinned::new();
        for (app, revisions) in &records {
            let has_workflows =
                |r: &RevisionRecord| parse_manifest(&r.manifest).is_ok_and(|l| !l.manifest.trigger.workflow.is_empty());
            if revisions.iter().any(has_workflows) && platform.holds_journal(app) {
                match platform.host.pinned_revisions(app).await {
                    Ok(p) => pinned.extend(p),
                    Err(e) => tracing::error!(app = %app, error = %nimbus_observe::report(&e),
                        "cannot read the unfinished workflow runs; they resume once their revision is loaded"),
                }
            }
        }
        for record in records.into_values().flatten() {
            let Some(app) = apps.get_mut(&record.app) else {
                tracing::warn!(app = %record.app, revision = %record.id, "revision of an unknown app; ignored");
                continue;
            };
            let (id, name) = (record.id.clone(), record.app.clone());
            // Only revisions with traffic, a tag or unfinished workflow runs are loaded; the
            // others wait until they get some.
            let loaded = if app.record.traffic.serves(&id) || pinned.contains_key(&id) {
                platform.load_stored(record).await
            } else {
                Loaded::unloaded(record)
            };
            match loaded {
                Ok(l) => {
                    app.revisions.insert(id, l);
                }
                Err(e) => {
                    tracing::error!(app = %name, revision = %id, error = %e, "stored revision does not load; it is not served")
                }
            }
        }
        *platform.apps.lock().await = apps;
        platform.publish(&*platform.apps.lock().await).await;
        Ok(platform)
    }

    /// The routing table this platform publishes to.
    pub fn ingress(&self) -> Arc<Ingress> {
        self.ingress.clone()
    }

    /// Where this server's traces, metrics and logs go.
    pub fn observer(&self) -> &Observer {
        &self.host.env().observer
    }

    /// The event bus of this server.
    pub fn bus(&self) -> Arc<dyn EventBus> {
        self.bus.clone()
    }

    /// Whether this node may read `app`'s workflow journal (a node outside a pinned app's
    /// region holds none of its runs).
    fn holds_journal(&self, app: &str) -> bool {
        self.residency.bucket(app, nimbus_state::journal::WORKFLOWS_BUCKET).is_ok()
    }

    /// Whether this node may hold a revision with `manifest` (its `[placement]`).
    fn admits(&self, manifest: &Manifest) -> bool {
        self.residency.admits(&manifest.placement)
    }
}

impl Platform {
    /// Apps the caller may see.
    pub async fn apps(&self, principal: &Principal) -> Vec<AppInfo> {
        self.apps.lock().await.values().filter(|a| principal.sees(&a.record.name)).map(AppState::info).collect()
    }

    /// One app.
    pub async fn app(&self, name: &str) -> Result<AppInfo, ControlError> {
        Ok(get(&*self.apps.lock().await, name)?.info())
    }

    /// The revisions of an app, newest first.
    pub async fn revisions(&self, app: &str) -> Result<Vec<RevisionInfo>, ControlError> {
        let apps = self.apps.lock().await;
        let state = get(&apps, app)?;
        let mut revisions: Vec<_> = state.revisions.values().collect();
        revisions.sort_by_key(|r| std::cmp::Reverse(r.record.seq));
        Ok(revisions.into_iter().map(|r| state.revision_info(r)).collect())
    }

    /// One revision with its manifest.
    pub async fn revision(&self, app: &str, id: &str) -> Result<RevisionDetail, ControlError> {
        let apps = self.apps.lock().await;
        let state = get(&apps, app)?;
        let rev = state.revision(id)?;
        Ok(RevisionDetail {
            info: state.revision_info(rev),
            manifest: rev.record.manifest.clone(),
            supply: rev.record.supply.clone(),
        })
    }

    /// The manifests of the loaded revisions (those with traffic or a tag, and those kept for
    /// their unfinished workflow runs).
    pub async fn loaded_manifests(&self) -> Vec<Arc<Manifest>> {
        let apps = self.apps.lock().await;
        apps.values()
            .flat_map(|a| a.revisions.values())
            .filter(|r| r.live.is_some())
            .map(|r| r.manifest.clone())
            .collect()
    }

    /// This node's load, the revisions it serves (`APP/REVISION`) and the services placed on it
    /// with their processes here, for its heartbeat.
    pub async fn node_load(&self) -> (crate::nodes::NodeLoad, Vec<String>, Vec<crate::nodes::NodeService>) {
        let apps = self.apps.lock().await;
        let loaded: Vec<&Loaded> =
            apps.values().flat_map(|a| a.revisions.values()).filter(|r| r.live.is_some()).collect();
        let load = crate::nodes::NodeLoad {
            apps: apps.len(),
            revisions: loaded.len(),
            services: loaded.iter().flat_map(|r| &r.services).map(|s| s.process_count() as usize).sum(),
            rss_bytes: crate::nodes::rss_bytes().unwrap_or_default(),
        };
        let runs = loaded.iter().map(|r| format!("{}/{}", r.record.app, r.record.id)).collect();
        let placed = loaded
            .iter()
            .flat_map(|r| r.services.iter().filter(|s| !s.is_elsewhere()).map(move |s| (r, s)))
            .map(|(r, s)| {
                let nimbus_services::Gauge { processes, ready, busy, room } = s.gauge();
                let name = format!("{}/{}/{}", r.record.app, r.record.id, s.name());
                crate::nodes::NodeService { name, processes, ready, busy, room }
            })
            .collect();
        (load, runs, placed)
    }

    /// Stops the event triggers, then every service process (drain, SIGTERM, grace, SIGKILL).
    pub async fn shutdown(&self) {
        let triggers = std::mem::take(&mut *self.triggers.lock().await);
        futures::future::join_all(triggers.into_values().map(|(_, t)| t.stop())).await;
        let apps = self.apps.lock().await;
        let all = apps.values().flat_map(|a| a.revisions.values()).flat_map(|r| r.services.iter());
        futures::future::join_all(all.map(|s| s.shutdown())).await;
    }
}

impl crate::AppWorkflows for Platform {
    /// Through the loaded revision of the app with the largest share of traffic that serves
    /// workflows (every revision reaches every run: the engine is the app's).
    fn of<'a>(
        &'a self,
        app: &'a str,
    ) -> futures::future::BoxFuture<'a, Option<Arc<dyn nimbus_gateway::WorkflowCalls>>> {
        Box::pin(async move {
            let apps = self.apps.lock().await;
            let state = apps.get(app)?;
            let traffic = &state.record.traffic;
            state
                .revisions
                .values()
                .filter_map(|r| Some((traffic.percent_of(&r.record.id), r.live.as_ref()?.gateway.workflows()?)))
                .max_by_key(|(percent, _)| *percent)
                .map(|(_, w)| w)
        })
    }
}

fn get<'a>(apps: &'a BTreeMap<String, AppState>, name: &str) -> Result<&'a AppState, ControlError> {
    apps.get(name).ok_or_else(|| ControlError::NotFound(format!("no app `{name}` on this server")))
}

/// How often a change is tried again when another node changed one of its records first.
pub(crate) const CONFLICT_RETRIES: u32 = 8;

/// Runs a change of the platform again, on the records as this node now has them, when
/// another node of the cluster wrote one of them first (the store's compare-and-set failed):
/// waiting 10 ms, then twice as long each time (with jitter), while this node's replica
/// catches up. The last conflict is the caller's 409. Only cluster mode has such conflicts.
async fn retry_conflicts<T, F>(mut change: impl FnMut() -> F) -> Result<T, ControlError>
where
    F: std::future::Future<Output = Result<T, ControlError>>,
{
    let mut wait = std::time::Duration::from_millis(10);
    for _ in 0..CONFLICT_RETRIES {
        match change().await {
            Err(ControlError::Store(crate::store::StoreError::Conflict { key })) => {
                let wait_now = wait + wait.mul_f64(fastrand::f64());
                tracing::debug!(%key, ?wait_now, "another node changed the record first; trying again");
                tokio::time::sleep(wait_now).await;
                wait *= 2;
            }
            other => return other,
        }
    }
    change().await
}

/// Runs a store operation (which fsyncs) off the async workers.
fn blocking<T>(f: impl FnOnce() -> Result<T, crate::store::StoreError>) -> Result<T, ControlError> {
    tokio::task::block_in_place(f).map_err(ControlError::Store)
}

/// Unix seconds.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

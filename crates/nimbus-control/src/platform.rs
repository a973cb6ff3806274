//! The deployed state of a server: apps and their revisions, loaded and routable, mirrored
//! from the store. Every change is checked, written to the store (durably), applied in memory
//! and published to the ingress before it is acknowledged; changes are serialized.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nimbus_bus::EventBus;
use nimbus_gateway::{AppTable, AppTriggers, Backend, EventIngress, Gateway, Ingress, LiveApp, LiveRevision};
use nimbus_manifest::{FieldPath, LoadedManifest, Manifest, RoutePattern};
use nimbus_observe::Observer;
use nimbus_services::{Service, ServiceSpec};
use nimbus_wasm::Runtime;

use crate::auth::{Action, Principal};
use crate::bundle::{Bundle, digest};
use crate::error::ControlError;
use crate::model::{AppInfo, ArtifactInfo, DeployResult, RevisionDetail, RevisionInfo, Traffic};
use crate::ownership::Claim;
use crate::store::{AppRecord, DeployWrite, RevisionRecord, Store};

mod retention;
mod sharing;

/// Options of one deploy.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// Bind the app to these hosts (replacing earlier ones); `None` keeps the current binding.
    pub hosts: Option<Vec<String>>,
    /// Point this tag at the new revision.
    pub tag: Option<String>,
    /// Send all traffic to the new revision. The first revision of an app always gets it all.
    pub promote: bool,
    /// Take the hosts and requests this deploy claims from the apps that have them (admins
    /// only; see [`crate::ownership`]).
    pub take_over: bool,
}

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

/// A revision's routes and its CloudEvents ingress `/events/{topic}` per topic.
fn claimed_routes<'a>(
    routes: &'a BTreeSet<RoutePattern>,
    manifest: &Manifest,
) -> impl Iterator<Item = RoutePattern> + 'a {
    let events = nimbus_gateway::app_topics(manifest)
        .into_iter()
        .filter_map(|t| RoutePattern::parse(&format!("{}{t}", nimbus_gateway::EVENTS_PREFIX)).ok());
    routes.iter().cloned().chain(events)
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
        }
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
    runtime: Arc<Runtime>,
    ingress: Arc<Ingress>,
    bus: Arc<dyn EventBus>,
    kv_changes: Arc<nimbus_gateway::KvChanges>,
    /// Who may publish to topics and call actor types that are not public.
    callers: Arc<dyn nimbus_gateway::Callers>,
    /// Per app, the actor activations all its revisions share (one activation per key).
    activations: std::sync::Mutex<HashMap<String, Arc<nimbus_gateway::Activations>>>,
    apps: tokio::sync::Mutex<BTreeMap<String, AppState>>,
    /// Per app, the revision its topic and cron triggers deliver to (the one with the largest
    /// share of traffic) and the running triggers.
    triggers: tokio::sync::Mutex<BTreeMap<String, (String, AppTriggers)>>,
    observer: Observer,
    /// How many revisions without traffic or a tag each app keeps (see `retention`).
    keep_inactive: std::sync::atomic::AtomicUsize,
}

/// What the apps' data goes through.
#[derive(Debug, Clone)]
pub struct AppData {
    /// The event bus of every app's topics.
    pub bus: Arc<dyn EventBus>,
    /// The KV store (which publishes its changes to the bus for `[[trigger.kv]]`).
    pub kv_changes: Arc<nimbus_gateway::KvChanges>,
    /// Who may publish to topics and call actor types that are not `public` through the gateway.
    pub callers: Arc<dyn nimbus_gateway::Callers>,
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
        let AppData { bus, kv_changes, callers } = data;
        let platform = Self {
            services_dir,
            store,
            runtime,
            ingress,
            bus,
            kv_changes,
            callers,
            activations: std::sync::Mutex::default(),
            apps: tokio::sync::Mutex::default(),
            triggers: tokio::sync::Mutex::default(),
            observer,
            keep_inactive: std::sync::atomic::AtomicUsize::new(usize::MAX),
        };
        let mut apps: BTreeMap<String, AppState> = BTreeMap::new();
        for record in platform.store.apps()? {
            apps.insert(record.name.clone(), AppState { record, revisions: BTreeMap::new() });
        }
        for record in platform.store.revisions()? {
            let Some(app) = apps.get_mut(&record.app) else {
                tracing::warn!(app = %record.app, revision = %record.id, "revision of an unknown app; ignored");
                continue;
            };
            let (id, name) = (record.id.clone(), record.app.clone());
            // Only revisions with traffic or a tag are loaded; the others wait until they get some.
            let loaded = if app.record.traffic.serves(&id) {
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

    /// Where this server's traces, metrics and logs go.
    pub fn observer(&self) -> &Observer {
        &self.observer
    }

    /// The event bus of this server.
    pub fn bus(&self) -> Arc<dyn EventBus> {
        self.bus.clone()
    }

    /// Publishes the routing table, then points each app's event triggers at its primary
    /// revision.
    async fn publish(&self, apps: &BTreeMap<String, AppState>) {
        self.publish_routes(apps);
        self.retarget_triggers(apps).await;
    }

    async fn retarget_triggers(&self, apps: &BTreeMap<String, AppState>) {
        let mut running = self.triggers.lock().await;
        let primaries: BTreeMap<&str, &Loaded> = apps
            .iter()
            .filter_map(|(name, app)| {
                let best = app.record.traffic.targets.iter().filter(|t| t.percent > 0).max_by_key(|t| t.percent)?;
                Some((name.as_str(), app.revisions.get(&best.revision)?))
            })
            .collect();
        let stale: Vec<String> = running
            .iter()
            .filter(|(app, (rev, _))| primaries.get(app.as_str()).is_none_or(|p| p.record.id != *rev))
            .map(|(app, _)| app.clone())
            .collect();
        for app in stale {
            if let Some((_, triggers)) = running.remove(&app) {
                triggers.stop().await;
            }
        }
        for (app, rev) in primaries {
            if running.contains_key(app) {
                continue;
            }
            let Some(live) = &rev.live else { continue };
            match AppTriggers::start(&rev.manifest, &live.gateway, &self.bus, Some(&self.kv_changes)).await {
                Ok(t) => {
                    if !t.info.is_empty() {
                        tracing::info!(app, revision = %rev.record.id, triggers = t.info.len(), "event triggers deliver to this revision");
                    }
                    running.insert(app.to_string(), (rev.record.id.clone(), t));
                }
                Err(e) => {
                    tracing::error!(app, revision = %rev.record.id, error = %e, "cannot start the event triggers")
                }
            }
        }
    }

    fn publish_routes(&self, apps: &BTreeMap<String, AppState>) {
        let live = apps.values().map(|app| {
            let traffic = &app.record.traffic;
            let live_of = |id: &str| app.revisions.get(id).and_then(|r| r.live.clone());
            let Claim { name, hosts, routes } = app.claim();
            LiveApp {
                name,
                hosts,
                routes,
                split: traffic
                    .targets
                    .iter()
                    .filter(|t| t.percent > 0)
                    .filter_map(|t| Some((live_of(&t.revision)?, t.percent)))
                    .collect(),
                tags: traffic.tags.iter().filter_map(|(tag, id)| Some((tag.clone(), live_of(id)?))).collect(),
            }
        });
        self.ingress.publish(AppTable::new(live));
    }

    /// Creates a revision from a bundle (or finds the identical one) and applies the options.
    pub async fn deploy(
        &self,
        bundle: Bundle,
        options: DeployOptions,
        principal: &Principal,
    ) -> Result<DeployResult, ControlError> {
        let loaded = parse_manifest(&bundle.manifest)?;
        let app_name = loaded.manifest.app.name.clone();
        principal.check(Action::Write, Some(&app_name))?;
        check_artifacts(&loaded, &bundle)?;
        sharing::check(&*self.apps.lock().await, &loaded.manifest)?;
        if let Some(hosts) = &options.hosts {
            hosts.iter().try_for_each(|h| check_host(h))?;
        }
        if let Some(tag) = &options.tag {
            check_tag(tag)?;
        }
        if options.take_over {
            crate::ownership::may_take_over(principal)?;
        }
        let id = bundle.revision_id();
        let known = self.apps.lock().await.get(&app_name).is_some_and(|a| a.revisions.contains_key(&id));
        // Compiling can take seconds: do it before taking the lock that serializes changes.
        let fresh = if known { None } else { Some(self.loader().load(&bundle, &id).await?) };

        let mut apps = self.apps.lock().await;
        let now = now();
        let existing = apps.get(&app_name);
        let created = existing.is_none_or(|a| !a.revisions.contains_key(&id));
        let mut record = existing.map(|a| a.record.clone()).unwrap_or_else(|| AppRecord {
            name: app_name.clone(),
            hosts: Vec::new(),
            traffic: Traffic::default(),
            history: Vec::new(),
            created_at: now,
            updated_at: now,
        });
        if let Some(hosts) = &options.hosts {
            record.hosts = hosts.iter().map(|h| h.to_ascii_lowercase()).collect::<BTreeSet<_>>().into_iter().collect();
        }
        let mut claimed: BTreeSet<RoutePattern> =
            existing.map(|a| a.revisions.values().flat_map(Loaded::claimed).collect()).unwrap_or_default();
        let new_loaded = match fresh {
            Some(l) if created => {
                let Load { manifest, version, routes: rev_routes, live, services } = l;
                claimed.extend(claimed_routes(&rev_routes, &manifest));
                let record = RevisionRecord {
                    id: id.clone(),
                    app: app_name.clone(),
                    created_at: now,
                    seq: existing.and_then(|a| a.revisions.values().map(|r| r.record.seq).max()).map_or(0, |s| s + 1),
                    manifest: bundle.manifest.clone(),
                    artifacts: bundle
                        .artifacts
                        .iter()
                        .chain(&bundle.trees)
                        .map(|(c, bytes)| ArtifactInfo {
                            component: c.clone(),
                            digest: digest(bytes),
                            size: bytes.len() as u64,
                        })
                        .collect(),
                };
                Some(Loaded { record, manifest, version, routes: rev_routes, live: Some(Arc::new(live)), services })
            }
            Some(l) => {
                stop_services(l.services);
                None
            }
            None => None,
        };
        // Until the deploy is stored, its freshly started services go again on any error.
        let guard = StopOnDrop(new_loaded.as_ref().map(|l| l.services.clone()).unwrap_or_default());
        let current: Vec<Claim> = apps.values().map(AppState::claim).collect();
        let proposed =
            Claim { name: app_name.clone(), hosts: record.hosts.clone(), routes: claimed.into_iter().collect() };
        let moved = crate::ownership::admit(&current, &proposed, options.take_over)?;
        let others: Vec<AppRecord> = moved
            .into_iter()
            .map(|(name, hosts)| {
                let mut other = apps[&name].record.clone();
                tracing::warn!(app = %name, to = %app_name, from = ?other.hosts, keeps = ?hosts, "hosts taken over");
                other.hosts = hosts;
                other.updated_at = now;
                other
            })
            .collect();

        let mut traffic = record.traffic.clone();
        if let Some(tag) = &options.tag {
            traffic.tags.insert(tag.clone(), id.clone());
        }
        if options.promote || traffic.targets.is_empty() {
            traffic = Traffic::all_to(&id, traffic.tags);
        }
        record.change_traffic(traffic, now);
        record.updated_at = now;
        if let Some(state) = apps.get_mut(&app_name) {
            // A redeploy of known content may send traffic or a tag to an unloaded revision.
            self.activate(state, &record.traffic).await?;
        }

        let blobs: Vec<(String, &[u8])> = if new_loaded.is_some() {
            bundle.artifacts.values().chain(bundle.trees.values()).map(|b| (digest(b), b.as_slice())).collect()
        } else {
            Vec::new()
        };
        let write = DeployWrite {
            app: &record,
            revision: new_loaded.as_ref().map(|l| &l.record),
            blobs: blobs.iter().map(|(d, b)| (d.as_str(), *b)).collect(),
            others: &others,
        };
        blocking(|| self.store.deploy(&write))?;
        guard.disarm();
        for other in others {
            if let Some(state) = apps.get_mut(&other.name) {
                state.record = other;
            }
        }

        let state = apps
            .entry(app_name.clone())
            .or_insert_with(|| AppState { record: record.clone(), revisions: BTreeMap::new() });
        state.record = record;
        if let Some(l) = new_loaded {
            state.revisions.insert(id.clone(), l);
        }
        retention::deactivate(state);
        let traffic = state.record.traffic.clone();
        if let Err(e) = self.prune(&mut apps, &app_name, Some(&id)) {
            tracing::error!(app = %app_name, error = %e, "cannot delete old revisions; they are kept");
        }
        self.publish(&apps).await;
        tracing::info!(app = %app_name, revision = %id, created, "deployed");
        Ok(DeployResult { app: app_name, revision: id, created, traffic })
    }

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
        let mut list: Vec<_> = state.revisions.values().map(|r| state.revision_info(r)).collect();
        list.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id)));
        Ok(list)
    }

    /// One revision with its manifest.
    pub async fn revision(&self, app: &str, id: &str) -> Result<RevisionDetail, ControlError> {
        let apps = self.apps.lock().await;
        let state = get(&apps, app)?;
        let rev = state.revision(id)?;
        Ok(RevisionDetail { info: state.revision_info(rev), manifest: rev.record.manifest.clone() })
    }

    /// Replaces an app's traffic split and tags.
    pub async fn set_traffic(&self, app: &str, traffic: Traffic) -> Result<Traffic, ControlError> {
        let mut apps = self.apps.lock().await;
        let state = get(&apps, app)?;
        let traffic = check_traffic(state, traffic)?;
        let mut record = state.record.clone();
        record.change_traffic(traffic, now());
        self.commit_app(&mut apps, record).await
    }

    /// Restores the traffic in effect before the last change, or sends it all to `to`.
    pub async fn rollback(&self, app: &str, to: Option<&str>) -> Result<Traffic, ControlError> {
        let mut apps = self.apps.lock().await;
        let state = get(&apps, app)?;
        let mut record = state.record.clone();
        match to {
            Some(id) => {
                state.revision(id)?;
                record.change_traffic(Traffic::all_to(id, record.traffic.tags.clone()), now());
            }
            None => {
                // Undo: pop earlier settings until one whose revisions all still exist.
                let previous = std::iter::from_fn(|| record.history.pop())
                    .find(|t| t.targets.iter().all(|x| state.revisions.contains_key(&x.revision)))
                    .ok_or_else(|| {
                        ControlError::conflict(
                            format!("app `{app}` has no earlier traffic setting to roll back to"),
                            format!("name a revision: `nimbus rollback {app} --to REVISION`"),
                        )
                    })?;
                let tags = previous.tags.into_iter().filter(|(_, id)| state.revisions.contains_key(id)).collect();
                record.traffic = Traffic { targets: previous.targets, tags };
                record.updated_at = now();
            }
        }
        self.commit_app(&mut apps, record).await
    }

    /// Stores an app's new traffic, loading the revisions it sends requests to first and
    /// unloading the ones it no longer does after.
    async fn commit_app(
        &self,
        apps: &mut BTreeMap<String, AppState>,
        record: AppRecord,
    ) -> Result<Traffic, ControlError> {
        let state = apps.get_mut(&record.name).expect("checked by the caller");
        self.activate(state, &record.traffic).await?;
        blocking(|| self.store.put_app(&record))?;
        state.record = record;
        retention::deactivate(state);
        let traffic = state.record.traffic.clone();
        tracing::info!(app = %state.record.name, ?traffic, "traffic changed");
        self.publish(apps).await;
        Ok(traffic)
    }

    /// Deletes a revision that receives no traffic and has no tag.
    pub async fn delete_revision(&self, app: &str, id: &str) -> Result<(), ControlError> {
        let mut apps = self.apps.lock().await;
        let state = get(&apps, app)?;
        state.revision(id)?;
        let traffic = &state.record.traffic;
        if traffic.percent_of(id) > 0 || !traffic.tags_of(id).is_empty() {
            return Err(ControlError::conflict(
                format!(
                    "revision `{id}` of app `{app}` receives traffic ({}%, tags [{}]); it cannot be deleted",
                    traffic.percent_of(id),
                    traffic.tags_of(id).join(", ")
                ),
                format!("move its traffic and tags to another revision first: `nimbus traffic {app} OTHER=100`"),
            ));
        }
        let unused = unused_blobs(&apps, &[(app, id)]);
        blocking(|| self.store.delete_revisions(app, &[id.to_string()], Some(&state.record), &unused))?;
        if let Some(gone) = apps.get_mut(app).expect("checked above").revisions.remove(id) {
            stop_services(gone.services);
        }
        self.remove_trees(&unused);
        self.publish(&apps).await;
        tracing::info!(app, revision = id, "revision deleted");
        Ok(())
    }

    /// Deletes an app with all its revisions; its routes stop being served at once.
    pub async fn delete_app(&self, app: &str) -> Result<(), ControlError> {
        let mut apps = self.apps.lock().await;
        let state = get(&apps, app)?;
        let ids: Vec<String> = state.revisions.keys().cloned().collect();
        let pairs: Vec<(&str, &str)> = ids.iter().map(|id| (app, id.as_str())).collect();
        let unused = unused_blobs(&apps, &pairs);
        blocking(|| self.store.delete_revisions(app, &ids, None, &unused))?;
        if let Some(gone) = apps.remove(app) {
            stop_services(gone.revisions.into_values().flat_map(|r| r.services).collect());
        }
        self.remove_trees(&unused);
        self.publish(&apps).await;
        tracing::info!(app, "app deleted");
        Ok(())
    }
}

impl Platform {
    /// Removes the unpacked service trees of deleted artifacts (their processes are stopping).
    fn remove_trees(&self, digests: &[String]) {
        for d in digests {
            let dir = self.services_dir.join(d.trim_start_matches("sha256:"));
            if dir.is_dir() {
                let dir = dir.clone();
                tokio::spawn(async move {
                    // Give stopping processes their grace period before their files go.
                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                    let _ = std::fs::remove_dir_all(dir);
                });
            }
        }
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

fn get<'a>(apps: &'a BTreeMap<String, AppState>, name: &str) -> Result<&'a AppState, ControlError> {
    apps.get(name).ok_or_else(|| ControlError::NotFound(format!("no app `{name}` on this server")))
}

/// Digests used only by the revisions being deleted.
fn unused_blobs(apps: &BTreeMap<String, AppState>, deleted: &[(&str, &str)]) -> Vec<String> {
    let mut kept = BTreeSet::new();
    let mut candidates = BTreeSet::new();
    for (name, app) in apps {
        for (id, rev) in &app.revisions {
            let target = if deleted.contains(&(name.as_str(), id.as_str())) { &mut candidates } else { &mut kept };
            target.extend(rev.record.artifacts.iter().map(|a| a.digest.clone()));
        }
    }
    candidates.difference(&kept).cloned().collect()
}

/// A revision, loaded: its functions compiled, its services started and ready.
struct Load {
    manifest: Arc<Manifest>,
    version: Option<String>,
    routes: BTreeSet<RoutePattern>,
    live: LiveRevision,
    services: Vec<Arc<Service>>,
}

impl Platform {
    fn loader(&self) -> Loader<'_> {
        Loader {
            runtime: &self.runtime,
            bus: &self.bus,
            kv: self.kv_changes.clone(),
            callers: &self.callers,
            activations: &self.activations,
            services_dir: &self.services_dir,
            observer: &self.observer,
        }
    }
}

/// What loading a revision needs from the platform.
struct Loader<'a> {
    runtime: &'a Runtime,
    bus: &'a Arc<dyn EventBus>,
    kv: Arc<dyn nimbus_state::KvStore>,
    callers: &'a Arc<dyn nimbus_gateway::Callers>,
    activations: &'a std::sync::Mutex<HashMap<String, Arc<nimbus_gateway::Activations>>>,
    services_dir: &'a Path,
    observer: &'a Observer,
}

impl Loader<'_> {
    /// Loads every component of a bundle and builds the revision's routes. Services are unpacked
    /// (once per content digest) under `services_dir`, started, and must become ready.
    async fn load(&self, bundle: &Bundle, id: &str) -> Result<Load, ControlError> {
        let Loader { runtime, bus, kv, callers, activations, services_dir, observer } = self;
        let loaded = parse_manifest(&bundle.manifest)?;
        let m = &loaded.manifest;
        let mut backends = HashMap::new();
        let mut problems = Vec::new();
        let mut services = StopOnDrop(Vec::new());
        for (name, component) in &m.component {
            if let Some(bytes) = bundle.artifacts.get(name) {
                let label = PathBuf::from(format!("{}/{id}/{name}.wasm", m.app.name));
                match runtime.load_bytes(name, &label, bytes.clone(), component).await {
                    Ok((function, _)) => {
                        backends.insert(name.clone(), Backend::Function(function));
                    }
                    Err(e) => {
                        let at = FieldPath::root().key("component").key(name.clone()).key("source");
                        problems.push(loaded.diagnostic(&at, e.to_string(), e.hint()).to_string());
                    }
                }
            } else if let Some(tree) = bundle.trees.get(name) {
                let at = FieldPath::root().key("component").key(name.clone()).key("command");
                let started = match unpack_tree(services_dir, tree) {
                    Ok(dir) => {
                        let mut spec = ServiceSpec::from_component(name, component, &dir);
                        spec.workdir = dir.clone();
                        spec.telemetry = observer.component(&m.app.name, name);
                        let service = Service::start(spec);
                        services.0.push(service.clone());
                        service.until_ready().await.map(|()| service).map_err(|e| relative_to(&e.to_string(), &dir))
                    }
                    Err(e) => Err(e),
                };
                match started {
                    Ok(service) => {
                        backends.insert(name.clone(), Backend::Service(service));
                    }
                    Err(e) => {
                        let hint = "the service must listen on 127.0.0.1:$PORT and pass its readiness probe; see the server log for its output";
                        problems.push(loaded.diagnostic(&at, e, hint).to_string());
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(ControlError::Invalid {
                message: "a component does not load; nothing was deployed".into(),
                details: problems,
            });
        }
        let problems: Vec<String> = nimbus_gateway::handler_problems(m, &backends)
            .into_iter()
            .map(|(at, message, hint)| loaded.diagnostic(&at, message, hint).to_string())
            .collect();
        if !problems.is_empty() {
            return Err(ControlError::Invalid {
                message: "a trigger has no handler; nothing was deployed".into(),
                details: problems,
            });
        }
        let routes = http_routes(m);
        let topics = nimbus_gateway::app_topics(m);
        let mut gateway = Gateway::from_manifest(m, &backends, observer).with_callers((*callers).clone());
        if !topics.is_empty() {
            gateway = gateway.with_events(EventIngress::new(&m.app.name, (*bus).clone(), topics));
        }
        let shared = activations.lock().expect("activations").entry(m.app.name.clone()).or_default().clone();
        if let Some(host) = nimbus_gateway::ActorHost::new(m, &gateway, kv.clone(), shared) {
            gateway = gateway.with_actors(host);
        }
        Ok(Load {
            manifest: Arc::new(m.clone()),
            version: m.app.version.clone(),
            routes,
            live: LiveRevision::new(id, gateway),
            services: services.disarm(),
        })
    }
}

/// A message about a service's files with their place on the server left out: paths inside
/// `dir` become relative to the service's tree (the deployer's view), `dir` itself a name.
fn relative_to(message: &str, dir: &Path) -> String {
    let dir = dir.display().to_string();
    message.replace(&format!("{dir}/"), "").replace(&dir, "the service's directory")
}

/// The routes of a manifest's HTTP triggers.
fn http_routes(m: &Manifest) -> BTreeSet<RoutePattern> {
    m.trigger.http.iter().filter_map(|t| RoutePattern::parse(&t.route).ok()).collect()
}

/// Unpacks a service's tree into `services_dir/DIGEST` unless it is there already; the directory
/// appears whole or not at all (unpacked beside it, then renamed).
fn unpack_tree(services_dir: &Path, tree: &[u8]) -> Result<PathBuf, String> {
    let dir = services_dir.join(digest(tree).trim_start_matches("sha256:"));
    if dir.is_dir() {
        return Ok(dir);
    }
    let tmp = services_dir.join(format!(".unpack-{}-{}", std::process::id(), fastrand_suffix()));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create the service's directory on the server: {e}"))?;
    let result = tar::Archive::new(tree).unpack(&tmp).map_err(|e| format!("the service's files do not unpack: {e}"));
    if let Err(e) = result.and_then(|()| std::fs::rename(&tmp, &dir).map_err(|e| e.to_string())) {
        let _ = std::fs::remove_dir_all(&tmp);
        if !dir.is_dir() {
            return Err(e);
        }
    }
    Ok(dir)
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Services started for a revision that is not (yet) kept: stopped when dropped, unless disarmed.
struct StopOnDrop(Vec<Arc<Service>>);

impl StopOnDrop {
    fn disarm(mut self) -> Vec<Arc<Service>> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        stop_services(std::mem::take(&mut self.0));
    }
}

/// Stops services in the background (each drains, then SIGTERM, grace, SIGKILL).
fn stop_services(services: Vec<Arc<Service>>) {
    for service in services {
        tokio::spawn(async move { service.shutdown().await });
    }
}

fn parse_manifest(text: &str) -> Result<LoadedManifest, ControlError> {
    LoadedManifest::parse(text.to_string(), Path::new(nimbus_manifest::MANIFEST_FILE).to_path_buf()).map_err(|e| {
        ControlError::Invalid {
            message: "the manifest is invalid; nothing was deployed".into(),
            details: e.diagnostics().iter().map(ToString::to_string).collect(),
        }
    })
}

fn check_artifacts(loaded: &LoadedManifest, bundle: &Bundle) -> Result<(), ControlError> {
    let m = &loaded.manifest;
    let mut problems: Vec<String> = m
        .component
        .iter()
        .filter_map(|(c, component)| match component.source() {
            None if !bundle.trees.contains_key(c) => {
                Some(format!("service `{c}` has no files (services/{c}.tar) in the bundle"))
            }
            None => None,
            Some(_) if !bundle.artifacts.contains_key(c) => {
                Some(format!("component `{c}` has no artifact (components/{c}.wasm) in the bundle"))
            }
            Some(_) => None,
        })
        .collect();
    let is = |c: &str, service: bool| m.component.get(c).is_some_and(|x| x.command.is_some() == service);
    problems.extend(
        bundle
            .artifacts
            .keys()
            .filter(|c| !is(c, false))
            .map(|c| format!("components/{c}.wasm belongs to no function of the manifest")),
    );
    problems.extend(
        bundle
            .trees
            .keys()
            .filter(|c| !is(c, true))
            .map(|c| format!("services/{c}.tar belongs to no service of the manifest")),
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ControlError::Invalid {
            message: "the bundle does not match its manifest; nothing was deployed".into(),
            details: problems,
        })
    }
}

fn check_traffic(state: &AppState, traffic: Traffic) -> Result<Traffic, ControlError> {
    let app = &state.record.name;
    let bad = |m: String| {
        ControlError::bad_request(
            m,
            format!("e.g. `nimbus traffic {app} REV_A=90 REV_B=10`; see `nimbus revisions list {app}`"),
        )
    };
    if traffic.targets.is_empty() {
        return Err(bad("traffic needs at least one revision".into()));
    }
    let mut seen = BTreeSet::new();
    let mut sum = 0u32;
    for t in &traffic.targets {
        state.revision(&t.revision)?;
        if !seen.insert(&t.revision) {
            return Err(bad(format!("revision `{}` is listed twice", t.revision)));
        }
        if t.percent > 100 {
            return Err(bad(format!("revision `{}` gets {}%, more than 100", t.revision, t.percent)));
        }
        sum += u32::from(t.percent);
    }
    if sum != 100 {
        return Err(bad(format!("percentages add up to {sum}, not 100")));
    }
    for (tag, id) in &traffic.tags {
        check_tag(tag)?;
        state.revision(id)?;
    }
    let targets = traffic.targets.into_iter().filter(|t| t.percent > 0).collect();
    Ok(Traffic { targets, tags: traffic.tags })
}

fn check_tag(tag: &str) -> Result<(), ControlError> {
    if is_dns_label(tag) {
        Ok(())
    } else {
        Err(ControlError::bad_request(
            format!("invalid tag `{tag}`"),
            "a tag is 1-63 lower-case letters, digits and `-` (it is also used as a host label), e.g. `canary`",
        ))
    }
}

fn check_host(host: &str) -> Result<(), ControlError> {
    let host = host.to_ascii_lowercase();
    if host.len() <= 253 && host.split('.').all(is_dns_label) {
        Ok(())
    } else {
        Err(ControlError::bad_request(
            format!("invalid host `{host}`"),
            "give a DNS name without scheme or port, e.g. `shop.example.com`",
        ))
    }
}

fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Runs a store operation (which fsyncs) off the async workers.
fn blocking<T>(f: impl FnOnce() -> Result<T, crate::store::StoreError>) -> Result<T, ControlError> {
    tokio::task::block_in_place(f).map_err(ControlError::Store)
}

/// Unix seconds.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

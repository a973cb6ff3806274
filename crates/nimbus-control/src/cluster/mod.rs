//! Services, actors and workflows in a cluster: the scheduler's placement of each service
//! ([`schedule`]), kept up to date on every node from the membership and the stored apps, and
//! applied to the services this node has loaded — those placed here run processes, the others
//! forward their requests over the inter-node transport ([`transport`]) to a node that runs
//! them — the nodes with a ready process and room first, from what each node says of its
//! processes in its heartbeat, so the cluster runs as few processes as its traffic needs (a node
//! of the service, too, sends its requests to the nodes ranking before it while they have room).
//! Each actor key and each workflow run has an owner node (rendezvous hashing over the
//! nodes the app may be on): the calls of a key are forwarded to it, and only it drives the run. Functions are not placed: every node runs them for the
//! requests it receives.
//!
//! A node that stops heartbeating drops out of the membership after its timeout; the next
//! placement moves its services to the remaining nodes (which start processes for them), and
//! until then a request that cannot reach it is served by the node that received it.
mod forward;
mod remote;
mod schedule;
mod transport;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use nimbus_actors::{ActorOwners, RemoteCall, Unowned};
use nimbus_gateway::Ingress;
use nimbus_manifest::Manifest;
use nimbus_services::{Placed, Placer, Spill};
use nimbus_workflows::RunOwners;

use crate::Store;
use crate::nodes::{NodeInfo, NodeService, Nodes};
use schedule::{Candidate, Demand, Plan, ServiceKey};
pub use transport::Transport;

/// This node's view of the cluster: where every service runs and which node owns each actor key
/// and workflow run, and the transport to the other nodes.
#[derive(Debug)]
pub struct Scheduler {
    me: Candidate,
    store: Arc<Store>,
    transport: Arc<Transport>,
    view: ArcSwap<View>,
    /// Parsed manifests of the revisions that receive traffic, by revision id.
    manifests: Mutex<HashMap<String, Arc<Manifest>>>,
    /// Bumped whenever the membership changes (workflow runs may have new owners).
    changes: tokio::sync::watch::Sender<u64>,
}

/// The membership and the placement computed from it.
#[derive(Debug, Default)]
struct View {
    candidates: Vec<Candidate>,
    /// Peer listener address of each node.
    peers: HashMap<String, String>,
    /// The revisions (`APP/REVISION`) each other node said it has loaded.
    loaded: HashMap<String, HashSet<String>>,
    /// The services placed on each other node, by `APP/REVISION/COMPONENT`, with their
    /// processes there as it last said.
    gauges: HashMap<String, HashMap<String, NodeService>>,
    plan: Plan,
}

impl Scheduler {
    /// The scheduler of node `me` (its name, labels, capacity for services in MiB and peer
    /// address), reading the apps from `store` and forwarding through `transport`.
    pub fn new(
        me: (&str, &std::collections::BTreeMap<String, String>, u64, String),
        store: Arc<Store>,
        transport: Arc<Transport>,
    ) -> Self {
        let (name, labels, capacity_mb, peer) = me;
        let me = Candidate { name: name.into(), labels: labels.clone(), capacity_mb };
        let view = View {
            candidates: vec![me.clone()],
            peers: [(name.to_string(), peer)].into(),
            loaded: HashMap::new(),
            gauges: HashMap::new(),
            plan: Plan::default(),
        };
        Self {
            me,
            store,
            transport,
            view: ArcSwap::from_pointee(view),
            manifests: Mutex::default(),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The seams of the app host this scheduler fills: services, actor keys, workflow runs.
    pub fn seams(self: &Arc<Self>) -> nimbus_host::ClusterSeams {
        nimbus_host::ClusterSeams { services: self.clone(), actors: self.clone(), workflows: self.clone() }
    }

    /// Places every service again from the nodes heartbeating now and the stored apps; says
    /// whether the membership could be read (else the placement stays as it was).
    pub async fn refresh_from(&self, nodes: &Nodes) -> bool {
        match nodes.members().await {
            Ok(members) => {
                self.refresh(&members);
                true
            }
            Err(e) => {
                tracing::warn!(error = %nimbus_observe::report(&*e), "cannot read the membership; placement unchanged");
                false
            }
        }
    }

    /// Places every service again from `members` and the stored apps; this node is always a
    /// member.
    fn refresh(&self, members: &[NodeInfo]) {
        let mut candidates = vec![self.me.clone()];
        let mut peers: HashMap<String, String> =
            self.view.load().peers.get(&self.me.name).map(|p| (self.me.name.clone(), p.clone())).into_iter().collect();
        let (mut loaded, mut gauges) = (HashMap::new(), HashMap::new());
        for node in members.iter().filter(|n| n.name != self.me.name) {
            let Some(peer) = &node.peer else { continue };
            candidates.push(Candidate {
                name: node.name.clone(),
                labels: node.labels.clone(),
                capacity_mb: node.capacity_mb,
            });
            peers.insert(node.name.clone(), peer.clone());
            loaded.insert(node.name.clone(), node.runs.iter().cloned().collect());
            gauges.insert(node.name.clone(), node.services.iter().map(|s| (s.name.clone(), s.clone())).collect());
        }
        let demands = self.demands();
        let plan = schedule::schedule(&candidates, &demands);
        let moved = self.view.load().candidates != candidates;
        self.view.store(Arc::new(View { candidates, peers, loaded, gauges, plan }));
        if moved {
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// Every service of every revision receiving traffic (or tagged), from the store; a
    /// revision's manifest is read and parsed once.
    fn demands(&self) -> Vec<Demand> {
        let apps = match self.store.apps() {
            Ok(apps) => apps,
            Err(e) => {
                tracing::warn!(error = %nimbus_observe::report(&e), "cannot read the apps to place their services");
                return Vec::new();
            }
        };
        let mut demands = Vec::new();
        let mut manifests = self.manifests.lock().expect("manifests");
        let mut live = HashSet::new();
        for app in apps {
            for id in app.traffic.served() {
                live.insert(id.to_string());
                let manifest = match manifests.get(id) {
                    Some(m) => m.clone(),
                    None => {
                        let Some(m) = self.read_manifest(&app.name, id) else { continue };
                        manifests.insert(id.to_string(), m.clone());
                        m
                    }
                };
                demands.extend(services_of(&manifest, id));
            }
        }
        manifests.retain(|id, _| live.contains(id));
        demands
    }

    /// The manifest of revision `id` of `app`, from the store.
    fn read_manifest(&self, app: &str, id: &str) -> Option<Arc<Manifest>> {
        let record = match self.store.revision(app, id) {
            Ok(record) => record?,
            Err(e) => {
                tracing::warn!(app, revision = id, error = %nimbus_observe::report(&e), "cannot read a revision to place its services");
                return None;
            }
        };
        crate::platform::parse_manifest(&record.manifest).ok().map(|loaded| Arc::new(loaded.manifest))
    }

    /// Moves each service this node has loaded to where the placement says.
    pub(crate) fn apply(&self, ingress: &Ingress) {
        for (app, revision) in ingress.revisions() {
            for (component, service) in revision.gateway.services() {
                let key =
                    ServiceKey { app: app.clone(), revision: revision.id.to_string(), component: component.into() };
                if let Some(placed) = self.placed(&key, None) {
                    service.place(placed);
                }
            }
        }
    }

    /// Where service `key` runs: by the current placement, or — for a revision it does not
    /// cover yet (being deployed) — placed now from `manifest` on the current membership; and
    /// where its requests go, from what the other nodes said of their processes.
    fn placed(&self, key: &ServiceKey, manifest: Option<&Manifest>) -> Option<Placed> {
        let view = self.view.load();
        let (nodes, min) = match view.plan.assignments.get(key) {
            Some(nodes) => (nodes.clone(), view.plan.mins.get(key).copied().unwrap_or(0)),
            None => {
                let demand = services_of(manifest?, &key.revision).into_iter().find(|d| d.key == *key)?;
                (schedule::place(&view.candidates, &view.plan.reserved, &demand), demand.min)
            }
        };
        // The other nodes of the service, in the scheduler's order, that said they have the
        // revision loaded (a deploy reaches each node within a heartbeat), with their gauge.
        let revision = format!("{}/{}", key.app, key.revision);
        let service = format!("{revision}/{}", key.component);
        let peers: Vec<(usize, Option<&NodeService>, String)> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| **n != self.me.name)
            .filter(|(_, n)| view.loaded.get(*n).is_some_and(|runs| runs.contains(&revision)))
            .filter_map(|(rank, n)| {
                let gauge = view.gauges.get(n).and_then(|g| g.get(&service));
                Some((rank, gauge, view.peers.get(n)?.clone()))
            })
            .collect();
        let forward = |to: Vec<String>| -> Arc<dyn nimbus_services::Forward> {
            Arc::new(forward::ForwardTo::new(self.transport.clone(), key.clone(), to, nodes.is_empty()))
        };
        if let Some(rank) = nodes.iter().position(|n| *n == self.me.name) {
            if nodes.len() == 1 {
                return Some(Placed::Here);
            }
            // `scale.min` is the cluster's: each of the service's nodes keeps its share.
            let share = schedule::min_share(min, nodes.len(), rank);
            let roomy = |before: bool| -> Vec<String> {
                let has_room = |g: &Option<&NodeService>| g.is_some_and(|g| g.room);
                peers.iter().filter(|(r, g, _)| (*r < rank) == before && has_room(g)).map(|p| p.2.clone()).collect()
            };
            let (before, after) = (roomy(true), roomy(false));
            // The nodes ranking before this one take its requests while they have room, unless
            // it keeps idle processes of its own; the others only those it has no room for.
            let spill = if share == 0 && !before.is_empty() {
                Some(Spill { to: forward(before), first: true })
            } else {
                let all: Vec<String> = before.into_iter().chain(after).collect();
                (!all.is_empty()).then(|| Spill { to: forward(all), first: false })
            };
            return Some(Placed::Shared { min: share, spill });
        }
        // Nodes with room first, then those starting a process, then those without one (the
        // first of them starts it), and those whose processes are all busy last; each in the
        // scheduler's order. With none, the requests are served here meanwhile.
        let mut order: Vec<(u8, String)> = peers
            .into_iter()
            .map(|(_, gauge, addr)| {
                let class = match gauge {
                    Some(g) if g.room => 0,
                    Some(g) if g.processes > g.ready => 1,
                    Some(g) if g.processes > 0 => 3,
                    _ => 2,
                };
                (class, addr)
            })
            .collect();
        order.sort_by_key(|(class, _)| *class);
        Some(Placed::Elsewhere(forward(order.into_iter().map(|(_, addr)| addr).collect())))
    }

    /// Keeps the placement current: every `every`, reads the membership, places the services
    /// again and moves this node's; reads the cluster CA's directory again (a rotation step
    /// renews the certificate at once) and renews the node's transport certificate at half its
    /// life.
    pub async fn run(self: Arc<Self>, nodes: Arc<Nodes>, ingress: Arc<Ingress>, every: Duration) {
        let tls = self.transport.tls().clone();
        let mut renewed = tokio::time::Instant::now();
        loop {
            if self.refresh_from(&nodes).await {
                self.apply(&ingress);
            }
            tokio::time::sleep(every).await;
            match tls.reload() {
                Ok(false) => {}
                Ok(true) => {
                    renewed = tokio::time::Instant::now();
                    tracing::info!(node = %tls.id(), "cluster CA reloaded; the node's transport certificate is renewed from it");
                }
                Err(e) => {
                    tracing::warn!(error = %nimbus_observe::report(&e), "cannot read the cluster CA again; the node keeps the one it has")
                }
            }
            if renewed.elapsed() >= tls.ttl() / 2 {
                match tls.renew() {
                    Ok(()) => renewed = tokio::time::Instant::now(),
                    Err(e) => {
                        tracing::error!(error = %nimbus_observe::report(&e), "cannot renew the node's transport certificate")
                    }
                }
            }
        }
    }
}

impl ActorOwners for Scheduler {
    fn forward(
        &self,
        app: &str,
        placement: &nimbus_manifest::Placement,
        call: RemoteCall,
    ) -> Option<BoxFuture<'static, Result<Vec<u8>, Unowned>>> {
        let view = self.view.load();
        let owner = schedule::owner(&view.candidates, placement, &[app, "@actor", &call.actor_type, &call.key])?;
        if owner == self.me.name {
            return None;
        }
        let addr = view.peers.get(owner)?.clone();
        let (transport, app) = (self.transport.clone(), app.to_string());
        Some(Box::pin(async move { transport.call_actor(&addr, &app, call).await }))
    }
}

impl RunOwners for Scheduler {
    fn owns(&self, app: &str, placement: &nimbus_manifest::Placement, run: &str) -> bool {
        let view = self.view.load();
        schedule::owner(&view.candidates, placement, &[app, "@workflow", run]).is_none_or(|o| o == self.me.name)
    }

    fn wake(
        &self,
        app: &str,
        placement: &nimbus_manifest::Placement,
        run: &str,
        cancel: bool,
    ) -> BoxFuture<'static, bool> {
        let view = self.view.load();
        let owner = schedule::owner(&view.candidates, placement, &[app, "@workflow", run]);
        let Some(addr) = owner.and_then(|o| view.peers.get(o)).cloned() else { return Box::pin(async { false }) };
        let (transport, app, run) = (self.transport.clone(), app.to_string(), run.to_string());
        Box::pin(async move { transport.wake_run(&addr, &app, &run, cancel).await })
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

impl Placer for Scheduler {
    fn place(&self, manifest: &Manifest, revision: &str, component: &str) -> Placed {
        let key = ServiceKey { app: manifest.app.name.clone(), revision: revision.into(), component: component.into() };
        self.placed(&key, Some(manifest)).unwrap_or_default()
    }
}

/// The services of a revision as the scheduler places them.
fn services_of(manifest: &Manifest, revision: &str) -> Vec<Demand> {
    manifest
        .component
        .iter()
        .filter(|(_, c)| c.command.is_some())
        .map(|(name, c)| Demand {
            key: ServiceKey { app: manifest.app.name.clone(), revision: revision.into(), component: name.clone() },
            placement: manifest.placement.clone(),
            max: c.scale.as_ref().map_or_else(|| nimbus_manifest::Scale::default().max, |s| s.max),
            min: c.scale.as_ref().map_or_else(|| nimbus_manifest::Scale::default().min, |s| s.min),
            memory_mb: c.memory_mb(),
        })
        .collect()
}

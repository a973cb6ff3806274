//! Nodes of a platform and their membership. Every node heartbeats its description (name,
//! labels, addresses, version, load, the revisions it runs) into the cluster's KV bucket
//! `nimbus_nodes`; a node whose last heartbeat is older than its timeout is reported `gone`
//! (its record ages out of the bucket after an hour). A node name is held by one running node
//! at a time: a second one with the same name and another data dir is refused at start. On a
//! single node the list is that node.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream::StorageType};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Platform;
use crate::auth::Principal;
use crate::error::ControlError;
use crate::store::{StoreError, failed, open_bucket};

mod labels;
pub use labels::{Labels, parse_labels};

/// The KV bucket of the nodes' heartbeats.
pub const NODES_BUCKET: &str = "nimbus_nodes";

/// How long a gone node's record stays listed.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// What a node says about itself in each heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeInfo {
    /// The node's name (`--node-name`), unique in the cluster.
    pub name: String,
    /// Its labels (`--labels region=eu-west,zone=a`).
    pub labels: BTreeMap<String, String>,
    /// `ready` while it heartbeats, `gone` once its last heartbeat is older than its timeout.
    pub status: NodeStatus,
    /// The Nimbus version it runs.
    pub version: String,
    /// Where its gateway and control API listen.
    pub gateway: String,
    /// Its control API.
    pub api: String,
    /// Unix seconds.
    pub started_at: u64,
    /// Unix milliseconds of its last heartbeat.
    pub heartbeat_at_ms: u64,
    /// After how many milliseconds without a heartbeat it is gone.
    pub timeout_ms: u64,
    /// Its load when it last heartbeat.
    pub load: NodeLoad,
    /// The revisions it serves, as `APP/REVISION` (only the apps the caller may see).
    pub runs: Vec<String>,
    /// The services placed on it (only the apps the caller may see), and their processes
    /// there: the other nodes forward their requests here, to the nodes with room first.
    #[serde(default)]
    pub services: Vec<NodeService>,
    /// A random id of the data dir behind the name: a restart keeps it, another node with the
    /// same name has another one.
    pub instance: String,
    /// Where its peer listener (the inter-node transport) is reached, `HOST:PORT`.
    #[serde(default)]
    pub peer: Option<String>,
    /// Memory its services may reserve, MiB (the scheduler places no more on it).
    #[serde(default)]
    pub capacity_mb: u64,
}

/// A service placed on a node, and its processes there when the node last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeService {
    /// `APP/REVISION/COMPONENT`.
    pub name: String,
    /// Processes running or starting.
    pub processes: u32,
    /// Processes ready for traffic.
    pub ready: u32,
    /// Requests in flight or waiting for a process.
    pub busy: u32,
    /// Whether it takes another request without starting a process on another node: a ready
    /// process below `scale.target_concurrency`, or room under the node's cap to start one.
    pub room: bool,
}

impl NodeService {
    /// The app it belongs to.
    pub fn app(&self) -> &str {
        self.name.split('/').next().unwrap_or_default()
    }
}

/// Whether a node heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// It heartbeats.
    Ready,
    /// Its last heartbeat is older than its timeout.
    Gone,
}

/// A node's load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeLoad {
    /// Apps it knows.
    pub apps: usize,
    /// Revisions loaded (compiled, services running).
    pub revisions: usize,
    /// Service processes it runs.
    pub services: usize,
    /// Resident memory of the node's process, bytes.
    pub rss_bytes: u64,
}

/// The nodes of a platform: this one, and in a cluster the others through the heartbeats.
#[derive(Debug)]
pub struct Nodes {
    me: std::sync::Mutex<NodeInfo>,
    cluster: Option<kv::Store>,
    timeout: Duration,
}

/// This node, as configured.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// Its gateway's and API's URLs.
    pub gateway: String,
    /// Its control API's URL.
    pub api: String,
    /// Identifies its data dir.
    pub instance: String,
    /// Its peer listener's address, in a cluster.
    pub peer: Option<String>,
    /// Memory its services may reserve, MiB.
    pub capacity_mb: u64,
}

impl Nodes {
    /// A single node.
    pub fn single(node: NodeConfig) -> Self {
        Self { me: std::sync::Mutex::new(describe(node, Duration::ZERO)), cluster: None, timeout: Duration::ZERO }
    }

    /// Joins the cluster whose NATS servers `client` reaches: refuses a name held by another
    /// running node, then writes the first heartbeat.
    pub async fn join(
        client: async_nats::Client,
        replicas: usize,
        node: NodeConfig,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let config = kv::Config {
            bucket: NODES_BUCKET.into(),
            description: "Nimbus nodes' heartbeats".into(),
            history: 1,
            max_age: FORGET_AFTER,
            storage: StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        let kv = open_bucket(&jetstream::new(client), config, "creating the nodes bucket").await?;
        let me = describe(node, timeout);
        let held = kv.get(&me.name).await.map_err(|e| failed("reading the nodes bucket")(e.into()))?;
        if let Some(other) = held.and_then(|v| serde_json::from_slice::<NodeInfo>(&v).ok())
            && other.instance != me.instance
            && alive(&other, now_ms())
        {
            return Err(StoreError::NameTaken { name: me.name.clone() });
        }
        let nodes = Self { me: std::sync::Mutex::new(me), cluster: Some(kv), timeout };
        nodes.beat().await.map_err(|e| failed("writing the first heartbeat")(e))?;
        Ok(nodes)
    }

    /// Heartbeats every third of the timeout with the platform's load, until the platform is
    /// dropped ([`Nodes::leave`] says the node left).
    pub async fn heartbeat(self: Arc<Self>, platform: std::sync::Weak<Platform>) {
        let every = self.interval();
        loop {
            tokio::time::sleep(every).await;
            let Some(platform) = platform.upgrade() else { break };
            self.measure(&platform).await;
            drop(platform);
            if let Err(e) = self.beat().await {
                tracing::warn!(error = %nimbus_observe::report(&*e), "cannot write the node's heartbeat; retrying");
            }
        }
    }

    /// Says the node left (a clean stop): its record is removed.
    pub async fn leave(&self) {
        if let Some(kv) = &self.cluster {
            let name = self.me.lock().expect("node lock").name.clone();
            let _ = kv.delete(name).await;
        }
    }

    async fn beat(&self) -> Result<(), async_nats::Error> {
        let Some(kv) = &self.cluster else { return Ok(()) };
        let (name, value) = {
            let mut me = self.me.lock().expect("node lock");
            me.heartbeat_at_ms = now_ms();
            (me.name.clone(), serde_json::to_vec(&*me).expect("node info serializes"))
        };
        kv.put(name, value.into()).await?;
        Ok(())
    }

    /// Takes this node's load and what it runs from `platform`.
    async fn measure(&self, platform: &Platform) {
        let (load, runs, services) = platform.node_load().await;
        let mut me = self.me.lock().expect("node lock");
        me.load = load;
        me.runs = runs;
        me.services = services;
    }

    /// The nodes heartbeating now (this one among them once its first heartbeat is read).
    pub(crate) async fn members(&self) -> Result<Vec<NodeInfo>, async_nats::Error> {
        let Some(kv) = &self.cluster else { return Ok(vec![self.me.lock().expect("node lock").clone()]) };
        let now = now_ms();
        Ok(read_heartbeats(kv).await?.into_iter().filter(|n| alive(n, now)).collect())
    }

    /// How often this node heartbeats.
    pub fn interval(&self) -> Duration {
        (self.timeout / 3).max(Duration::from_millis(200))
    }

    /// Every node (gone ones too, until they age out), by name; what each runs is limited to
    /// the apps `principal` may see.
    pub async fn list(&self, platform: &Platform, principal: &Principal) -> Result<Vec<NodeInfo>, ControlError> {
        let mut nodes = match &self.cluster {
            None => {
                self.measure(platform).await;
                let mut me = self.me.lock().expect("node lock").clone();
                me.heartbeat_at_ms = now_ms();
                vec![me]
            }
            Some(kv) => {
                // A read can time out while JetStream elects a new leader for the bucket after
                // a server is lost; that takes a few seconds, so a list tries a few times first.
                let mut tries = 0;
                loop {
                    match read_heartbeats(kv).await {
                        Ok(nodes) => break nodes,
                        Err(e) if tries < READ_TRIES => {
                            tries += 1;
                            tracing::debug!(error = %e, "the nodes' heartbeats cannot be read yet; retrying");
                            tokio::time::sleep(READ_BACKOFF * tries).await;
                        }
                        Err(e) => {
                            return Err(ControlError::Unavailable {
                                message: "the nodes' heartbeats cannot be read".into(),
                                source: Some(nimbus_observe::cause(e)),
                            });
                        }
                    }
                }
            }
        };
        let now = now_ms();
        for node in &mut nodes {
            node.status = if self.cluster.is_none() || alive(node, now) { NodeStatus::Ready } else { NodeStatus::Gone };
            node.runs.retain(|r| principal.sees(r.split('/').next().unwrap_or_default()));
            node.services.retain(|s| principal.sees(s.app()));
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nodes)
    }
}

/// How often a list retries reading the heartbeats, and how much longer it waits each time.
const READ_TRIES: u32 = 4;
const READ_BACKOFF: Duration = Duration::from_millis(250);

/// Every heartbeat in the bucket that this version reads.
async fn read_heartbeats(kv: &kv::Store) -> Result<Vec<NodeInfo>, async_nats::Error> {
    let keys: Vec<String> = kv.keys().await?.try_collect().await?;
    let mut nodes = Vec::new();
    for key in keys {
        let Some(value) = kv.get(&key).await? else { continue };
        match serde_json::from_slice::<NodeInfo>(&value) {
            Ok(node) => nodes.push(node),
            Err(e) => tracing::warn!(node = %key, error = %e, "a heartbeat this version does not read"),
        }
    }
    Ok(nodes)
}

fn describe(node: NodeConfig, timeout: Duration) -> NodeInfo {
    NodeInfo {
        name: node.name,
        labels: node.labels.0,
        status: NodeStatus::Ready,
        version: env!("CARGO_PKG_VERSION").into(),
        gateway: node.gateway,
        api: node.api,
        started_at: crate::platform::now(),
        heartbeat_at_ms: now_ms(),
        timeout_ms: timeout.as_millis() as u64,
        load: NodeLoad::default(),
        runs: Vec::new(),
        services: Vec::new(),
        instance: node.instance,
        peer: node.peer,
        capacity_mb: node.capacity_mb,
    }
}

fn alive(node: &NodeInfo, now_ms: u64) -> bool {
    now_ms.saturating_sub(node.heartbeat_at_ms) <= node.timeout_ms.max(1)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Resident memory of this process (`VmRSS` of `/proc/self/status`), bytes.
pub(crate) fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim();
    kib.parse::<u64>().ok().map(|k| k * 1024)
}

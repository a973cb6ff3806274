//! Cluster mode of `nimbus server`: with `--node-name` (and `--nats`), the node keeps the
//! platform's control records (apps, revisions, traffic, tokens, secrets) in the cluster's
//! NATS JetStream KV bucket and artifacts in its object store, follows what the other nodes
//! change, and heartbeats its description for `nimbus nodes list`. And `nimbus nodes`.
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use nimbus_control::{ClusterStore, Key, Labels, NodeConfig, NodeInfo, NodeStatus, Nodes, Store, StoreError};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::remote::{Client, OutputArgs, RemoteArgs};
use crate::serving::BackendArgs;

#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    /// Join a cluster as this node (needs --nats): apps, revisions, traffic, tokens and
    /// secrets are kept in NATS JetStream and shared by every node started with the same NATS.
    #[arg(long, env = "NIMBUS_NODE_NAME")]
    node_name: Option<String>,
    /// The node's labels, e.g. `region=eu-west,zone=a` (placement and data residency use them).
    #[arg(long, env = "NIMBUS_LABELS", value_parser = nimbus_control::parse_labels, default_value = "")]
    labels: Labels,
    /// A node whose heartbeat is older than this is gone.
    #[arg(long, env = "NIMBUS_NODE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    node_timeout: Duration,
    /// How long an artifact no revision uses any more stays in the cluster's artifact stores
    /// before a node deletes it (each node sweeps every quarter of this).
    #[arg(long, env = "NIMBUS_ARTIFACT_GRACE", default_value = "1h", value_parser = humantime::parse_duration)]
    artifact_grace: Duration,
}

/// The control store of a node: its own, or its replica of the cluster's.
pub(crate) struct Control {
    pub(crate) store: Arc<Store>,
    /// In a cluster: the records that change, for the platform to converge on.
    pub(crate) changes: Option<UnboundedReceiver<Key>>,
    /// The cluster's NATS client and replicas.
    cluster: Option<(async_nats::Client, usize)>,
}

impl ClusterArgs {
    /// Checks the flags before anything starts.
    pub(crate) fn check(&self, nats: Option<&str>) -> anyhow::Result<()> {
        if self.node_name.is_some() && nats.is_none() {
            bail!("--node-name joins a cluster, whose state lives in NATS JetStream: add --nats nats://HOST:4222");
        }
        if let Some(name) = &self.node_name
            && nimbus_control::parse_labels(&format!("node={name}")).is_err()
        {
            bail!(
                "--node-name `{name}`: use 1 to 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit"
            );
        }
        if self.node_timeout < Duration::from_secs(1) {
            bail!("--node-timeout must be at least 1s");
        }
        if self.artifact_grace < Duration::from_secs(1) {
            bail!("--artifact-grace must be at least 1s");
        }
        Ok(())
    }

    /// How long unused artifacts stay in the cluster's stores.
    pub(crate) fn artifact_grace(&self) -> Duration {
        self.artifact_grace
    }

    /// Opens the control store: in a cluster, this node's replica of the cluster's records
    /// (`control-replica.redb`, brought up to date first); else `control.redb`.
    pub(crate) async fn open(&self, storage: &BackendArgs, data_dir: &Path) -> anyhow::Result<Control> {
        let (Some(_), Some(url)) = (&self.node_name, storage.nats.as_deref()) else {
            let db = data_dir.join("control.redb");
            let store = Arc::new(Store::open(&db).with_context(|| {
                format!("cannot open the control store; is another `nimbus server` using {}?", data_dir.display())
            })?);
            return Ok(Control { store, changes: None, cluster: None });
        };
        let client = async_nats::connect(url)
            .await
            .with_context(|| format!("cannot connect to NATS at {url}; is nats-server running with JetStream?"))?;
        let replicas = storage.nats_replicas.into();
        let shared = patiently(|| ClusterStore::open(client.clone(), replicas))
            .await
            .context("cannot open the cluster's control records in NATS JetStream")?;
        let replica = data_dir.join("control-replica.redb");
        let (store, changes) = patiently(|| Box::pin(Store::replica(&replica, shared.clone())))
            .await
            .context("cannot copy the cluster's control records to this node")?;
        Ok(Control { store, changes: Some(changes), cluster: Some((client, replicas)) })
    }

    /// This node's audit log (`DATA_DIR/audit`); in a cluster, every record also copied to the
    /// cluster's NATS JetStream before it counts as written.
    pub(crate) async fn audit(&self, control: &Control, data_dir: &Path) -> anyhow::Result<nimbus_control::AuditLog> {
        let audit = nimbus_control::AuditLog::open(&data_dir.join("audit"), self.node_name())
            .context("cannot open the audit log")?;
        let Some((client, replicas)) = &control.cluster else { return Ok(audit) };
        let replica = nimbus_control::AuditReplica::new(client.clone(), *replicas);
        // The copy's stream needs a leader, which servers still forming their cluster may not have
        // elected yet ("no suitable peers"): wait for it as for the control records, up to 30 s.
        let started = std::time::Instant::now();
        while let Err(e) = replica.last(self.node_name()).await {
            if started.elapsed() >= Duration::from_secs(30) {
                return Err(e).context("cannot copy the audit trail to the cluster");
            }
            tracing::warn!(error = %nimbus_observe::report(&e), "the cluster's copy of the audit trail cannot be opened yet; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        audit.replicated(replica).await.context("cannot copy the audit trail to the cluster")
    }

    /// This node's membership: in a cluster it joins (refused if another running node holds
    /// the name); else the single node.
    pub(crate) async fn nodes(
        &self,
        control: &Control,
        data_dir: &Path,
        (gateway, api): (String, String),
        peers: Option<&crate::peers::Peers>,
    ) -> anyhow::Result<Nodes> {
        let config = NodeConfig {
            name: self.node_name().to_string(),
            labels: self.labels.clone(),
            gateway,
            api,
            instance: instance_id(data_dir)?,
            peer: peers.map(|p| p.advertise.clone()),
            capacity_mb: peers.map_or(0, |p| p.capacity_mb),
        };
        match &control.cluster {
            None => Ok(Nodes::single(config)),
            Some((client, replicas)) => {
                patiently(|| Nodes::join(client.clone(), *replicas, config.clone(), self.node_timeout))
                    .await
                    .context("cannot join the cluster")
            }
        }
    }

    /// Whether this server is a node of a cluster (`--node-name`).
    pub(crate) fn in_cluster(&self) -> bool {
        self.node_name.is_some()
    }

    /// This node's name (`local` outside a cluster).
    pub(crate) fn node_name(&self) -> &str {
        self.node_name.as_deref().unwrap_or("local")
    }

    /// This node's labels.
    pub(crate) fn labels(&self) -> &Labels {
        &self.labels
    }

    /// `NAME (labels), cluster on NATS` for the banner.
    pub(crate) fn describe(&self, nats: Option<&str>) -> String {
        let labels: Vec<String> = self.labels.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let labels = if labels.is_empty() { String::new() } else { format!(" ({})", labels.join(", ")) };
        match (&self.node_name, nats) {
            (Some(name), Some(url)) => format!("{name}{labels}; cluster state in NATS JetStream at {url}"),
            _ => format!("single node{labels}"),
        }
    }
}

/// Calls NATS again while it fails for want of NATS (a server restarting, JetStream electing
/// leaders), for up to 30 s; other errors (a name taken) at once.
async fn patiently<T, F>(mut call: impl FnMut() -> F) -> Result<T, StoreError>
where
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    let started = std::time::Instant::now();
    loop {
        match call().await {
            Err(e @ StoreError::Cluster { .. }) if started.elapsed() < Duration::from_secs(30) => {
                tracing::warn!(error = %nimbus_observe::report(&e), "NATS JetStream is not ready; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

/// A random id of the data dir (`node-id`, created once): a node restarted on it keeps its name.
fn instance_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        return Ok(id.trim().to_string());
    }
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("drawing random bytes: {e}"))?;
    let id = hex::encode(bytes);
    std::fs::write(&path, &id).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodesCommand {
    /// List the nodes: status, labels, version, load and what each serves.
    List(OutputArgs),
    /// Create the cluster CA in a new directory: every node gets a copy (`--cluster-ca`), and
    /// the nodes' transport certificates chain to it.
    InitCa {
        /// Where to create it (`ca.pem`, and `ca.key` readable by its owner only).
        dir: std::path::PathBuf,
    },
    /// Replace the cluster CA without dropping a request between nodes, in three steps: `stage`
    /// (a next CA every node trusts), `activate` (it signs; the old one stays trusted), `finish`
    /// (the old one is trusted no more). Give every node the directory after each step; nodes
    /// read it again while they run.
    RotateCa {
        /// The cluster CA's directory.
        dir: std::path::PathBuf,
        /// The step to take.
        step: RotationStep,
    },
}

/// A step of `nimbus nodes rotate-ca`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum RotationStep {
    /// Create the next CA beside the current one (`next.pem`, `next.key`).
    Stage,
    /// Make the next CA the one that signs (the current one becomes `previous.pem`).
    Activate,
    /// Remove `previous.pem`.
    Finish,
}

impl From<RotationStep> for nimbus_security::tls::rotation::Rotation {
    fn from(step: RotationStep) -> Self {
        match step {
            RotationStep::Stage => Self::Stage,
            RotationStep::Activate => Self::Activate,
            RotationStep::Finish => Self::Finish,
        }
    }
}

pub(crate) fn nodes(remote: &RemoteArgs, command: &NodesCommand) -> anyhow::Result<()> {
    match command {
        NodesCommand::InitCa { dir } => crate::peers::init_ca(dir),
        NodesCommand::RotateCa { dir, step } => crate::peers::rotate_ca(dir, (*step).into()),
        NodesCommand::List(output) => {
            let client = Client::new(remote)?;
            let nodes: Vec<NodeInfo> = client.get("/v1/nodes")?;
            output.print(&nodes, |nodes| {
                println!(
                    "{:<16} {:<6} {:<28} {:<8} {:>4} {:>9} {:>8} {:>8}  GATEWAY",
                    "NODE", "STATUS", "LABELS", "VERSION", "APPS", "REVISIONS", "SERVICES", "RSS"
                );
                for n in nodes {
                    let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let status = match n.status {
                        NodeStatus::Ready => "ready",
                        NodeStatus::Gone => "gone",
                    };
                    println!(
                        "{:<16} {status:<6} {:<28} {:<8} {:>4} {:>9} {:>8} {:>7}M  {}",
                        n.name,
                        if labels.is_empty() { "-".into() } else { labels.join(",") },
                        n.version,
                        n.load.apps,
                        n.load.revisions,
                        n.load.services,
                        n.load.rss_bytes >> 20,
                        n.gateway
                    );
                    for s in &n.services {
                        let room = if s.room { "room" } else { "no room" };
                        println!("  {}  {}/{} ready, {} busy, {room}", s.name, s.ready, s.processes, s.busy);
                    }
                }
            })
        }
    }
}

//! The inter-node transport of a cluster node (`nimbus server --node-name`): its peer listener
//! (mutual TLS with the cluster CA only; plaintext and other certificates are refused), the
//! address other nodes reach it at, the memory its services may reserve, and the scheduler that
//! decides which nodes run each service. And `nimbus nodes init-ca`, which creates the cluster
//! CA every node is given, and `nimbus nodes rotate-ca`, which replaces it in three steps.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use nimbus_security::identity::TrustDomain;
use nimbus_security::tls::ca::{CA_CERT, CA_KEY, LocalCa};
use nimbus_security::tls::peer::PeerTls;
use nimbus_security::tls::rotation::{NEXT_CERT, PREVIOUS_CERT, Rotation, rotate};

#[derive(Debug, Args)]
pub(crate) struct PeerArgs {
    /// The cluster CA: a directory holding `ca.pem` and `ca.key` (create it once with `nimbus
    /// nodes init-ca DIR` and give every node a copy, e.g. as a Kubernetes Secret). Nodes
    /// forward requests to each other over mutual TLS with certificates it signs.
    #[arg(long, env = "NIMBUS_CLUSTER_CA", value_name = "DIR")]
    cluster_ca: Option<PathBuf>,
    /// Address of the peer listener, which other nodes forward service requests to (default:
    /// the --listen host, a free port).
    #[arg(long, env = "NIMBUS_PEER_LISTEN", value_name = "ADDR")]
    peer_listen: Option<SocketAddr>,
    /// `HOST:PORT` other nodes reach the peer listener at (default: its address, which must
    /// then not be 0.0.0.0 or ::).
    #[arg(long, env = "NIMBUS_PEER_ADVERTISE", value_name = "HOST:PORT")]
    peer_advertise: Option<String>,
    /// Memory the services placed on this node may reserve, in MiB (`limits.memory_mb` ×
    /// processes per node); default: the machine's memory.
    #[arg(long, env = "NIMBUS_CAPACITY_MB")]
    capacity_mb: Option<u64>,
    /// How long the node's transport certificate is valid; it is renewed at half that.
    #[arg(long, env = "NIMBUS_PEER_CERT_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    peer_cert_ttl: Duration,
}

/// A node's side of the transport, ready to serve.
pub(crate) struct Peers {
    pub(crate) listener: tokio::net::TcpListener,
    pub(crate) advertise: String,
    pub(crate) capacity_mb: u64,
    pub(crate) tls: Arc<PeerTls>,
}

impl PeerArgs {
    /// Checks the flags before anything starts: a cluster node needs the cluster CA.
    pub(crate) fn check(&self, node: bool) -> anyhow::Result<()> {
        match (&self.cluster_ca, node) {
            (None, true) => bail!(
                "a cluster node needs the cluster CA its peers share: add --cluster-ca DIR (create it once with `nimbus nodes init-ca DIR` and copy it to every node)"
            ),
            (Some(_), false) => bail!("--cluster-ca is for cluster nodes: add --node-name and --nats"),
            _ => {}
        }
        if self.peer_cert_ttl < Duration::from_secs(60) {
            bail!("--peer-cert-ttl must be at least 1m");
        }
        Ok(())
    }

    /// Node `node`'s certificate from the cluster CA and its bound peer listener.
    pub(crate) async fn open(&self, node: &str, listen: SocketAddr, domain: &TrustDomain) -> anyhow::Result<Peers> {
        let dir = self.cluster_ca.as_deref().context("a cluster node needs --cluster-ca")?;
        if !dir.join(CA_CERT).exists() || !dir.join(CA_KEY).exists() {
            bail!(
                "{} holds no cluster CA ({CA_CERT} and {CA_KEY}): create it once with `nimbus nodes init-ca {}` and copy it to every node",
                dir.display(),
                dir.display()
            );
        }
        let tls = PeerTls::open(dir, domain, node, self.peer_cert_ttl)
            .context("cannot issue the node's transport certificate")?;
        let addr = self.peer_listen.unwrap_or_else(|| SocketAddr::new(listen.ip(), 0));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}; pick another address with --peer-listen"))?;
        let bound = listener.local_addr()?;
        let advertise = match &self.peer_advertise {
            Some(a) => a.clone(),
            None if bound.ip().is_unspecified() => {
                bail!("the peer listener is on {bound}: say where other nodes reach it with --peer-advertise HOST:PORT")
            }
            None => bound.to_string(),
        };
        let capacity_mb = self.capacity_mb.unwrap_or_else(machine_memory_mb);
        Ok(Peers { listener, advertise, capacity_mb, tls: Arc::new(tls) })
    }
}

/// The machine's memory (`MemTotal` of `/proc/meminfo`), MiB.
fn machine_memory_mb() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")).map(|v| v.trim().trim_end_matches("kB").trim());
    kib.and_then(|k| k.parse::<u64>().ok()).map_or(1024, |k| k / 1024)
}

/// `nimbus nodes rotate-ca DIR STEP`: one step of replacing the cluster CA, and what to do next.
pub(crate) fn rotate_ca(dir: &Path, step: Rotation) -> anyhow::Result<()> {
    rotate(dir, step).with_context(|| format!("nothing in {} was changed", dir.display()))?;
    let copy = "Give every node the directory (or update the Secret), then wait until each logs `cluster CA reloaded`";
    match step {
        Rotation::Stage => {
            println!(
                "Staged the next cluster CA in {} ({NEXT_CERT}): nodes trust it, none signs with it.",
                dir.display()
            );
            println!("{copy}; then run `nimbus nodes rotate-ca {} activate`.", dir.display());
        }
        Rotation::Activate => {
            println!("The next CA signs now; the previous one is still trusted ({PREVIOUS_CERT}).");
            println!("{copy}; then run `nimbus nodes rotate-ca {} finish`.", dir.display());
        }
        Rotation::Finish => {
            println!("The previous cluster CA is no longer trusted.");
            println!("{copy}: the rotation is complete.");
        }
    }
    Ok(())
}

/// `nimbus nodes init-ca DIR`: creates the cluster CA (refusing to replace one).
pub(crate) fn init_ca(dir: &Path) -> anyhow::Result<()> {
    if dir.join(CA_CERT).exists() {
        bail!("{} already holds a cluster CA; nodes trust it, so it is kept", dir.display());
    }
    let ca =
        LocalCa::open_or_create(dir).with_context(|| format!("cannot create the cluster CA in {}", dir.display()))?;
    println!("Created the cluster CA in {}.", dir.display());
    println!("Give every node a copy (its key signs the nodes' certificates) and start each with");
    println!("  nimbus server --nats URL --node-name NAME --cluster-ca {}", dir.display());
    println!("Root certificate: {}", ca.cert_path().display());
    Ok(())
}

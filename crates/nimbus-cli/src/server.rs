//! `nimbus server`: the long-running platform. The gateway serves every deployed app on
//! `--listen`; the control API (deploy, traffic, rollback, tokens) listens on `--api-listen`.
//! State lives in `--data-dir` and survives restarts and `kill -9`. With `--tls` (or
//! `--tls-cert`) both listeners serve HTTPS; without it the control API stays on loopback.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use nimbus_control::{ApiHandler, ApiState, MasterKeySource, Platform, Store, Tokens, Vault};
use nimbus_gateway::Ingress;
use nimbus_security::secrets::{MASTER_KEY_ENV, SecretSource};

use crate::serving::{BackendArgs, EngineArgs, ObserveArgs, shutdown_signal};
use crate::tls::TlsArgs;

#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// Address of the gateway serving the apps (port 0 picks a free port).
    #[arg(long, short, env = "NIMBUS_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Address of the control API.
    #[arg(long, env = "NIMBUS_API_LISTEN", default_value = "127.0.0.1:3001")]
    api_listen: SocketAddr,
    /// Where apps, revisions and tokens are stored (default: ~/.local/share/nimbus; as root
    /// /var/lib/nimbus).
    #[arg(long, env = "NIMBUS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Accept control API calls without a token. Only on loopback addresses; for local use.
    #[arg(long, env = "NIMBUS_DEV")]
    dev: bool,
    /// Largest deploy bundle accepted, in MiB.
    #[arg(long, env = "NIMBUS_MAX_UPLOAD_MB", default_value_t = 256)]
    max_upload_mb: u64,
    /// Deploy uploads received at once (each streams to a file in the data dir); more are
    /// answered 503 with Retry-After.
    #[arg(long, env = "NIMBUS_MAX_CONCURRENT_UPLOADS", default_value_t = 2)]
    max_concurrent_uploads: usize,
    /// Instances running at once across all apps (the size of the instance pool).
    #[arg(long, env = "NIMBUS_MAX_INSTANCES", default_value_t = 1000)]
    max_instances: u32,
    /// Revisions without traffic or a tag each app keeps (the newest); older ones are deleted
    /// after each deploy. Revisions with traffic or a tag are always kept.
    #[arg(long, env = "NIMBUS_KEEP_REVISIONS", default_value_t = 10)]
    keep_revisions: usize,
    /// Refuse deploys whose dependencies have a known advisory at or above this severity (`low`,
    /// `medium`, `high`, `critical`), from the database `nimbus advisories import` fills in the
    /// data dir. Without it, advisories are reported with each revision and do not block (an
    /// app's `block_advisories` may still block its own deploys).
    #[arg(long, env = "NIMBUS_BLOCK_ADVISORIES", value_name = "SEVERITY")]
    block_advisories: Option<nimbus_security::supply::Severity>,
    /// The keys whose artifact signatures deploys are checked against: lines `NAME
    /// HEX-PUBLIC-KEY` (`nimbus signing keygen` prints one). A signature that does not verify,
    /// or signs another artifact, is always refused.
    #[arg(long, env = "NIMBUS_TRUSTED_SIGNERS", value_name = "FILE")]
    trusted_signers: Option<PathBuf>,
    /// Refuse deploys of components that no trusted key signed.
    #[arg(long, env = "NIMBUS_REQUIRE_SIGNATURES", requires = "trusted_signers")]
    require_signatures: bool,
    /// Largest `limits.memory_mb` a component may ask for.
    #[arg(long, env = "NIMBUS_MAX_MEMORY_MB", default_value_t = 256)]
    max_memory_mb: u32,
    /// Run services without their sandbox: as this process's user, seeing the host's files and
    /// network. Only for a trusted single-user machine (or to debug a service locally).
    #[arg(long, env = "NIMBUS_UNSANDBOXED_SERVICES")]
    unsandboxed_services: bool,
    /// The master key that wraps the keys sealing the apps' secrets: a file of 64 hex characters,
    /// mode 0600, kept off the data dir's disk if you can (create one with `openssl rand -hex
    /// 32`). Or NIMBUS_MASTER_KEY with the key itself. Without one, secrets cannot be set.
    #[arg(long, env = "NIMBUS_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    #[command(flatten)]
    identity: crate::identity::IdentityArgs,
    #[command(flatten)]
    tls: TlsArgs,
    /// With TLS: add `Strict-Transport-Security: max-age=SECS` to the apps' responses.
    #[arg(long, env = "NIMBUS_HSTS_MAX_AGE", value_name = "SECS")]
    hsts_max_age: Option<u64>,
    /// With TLS: also listen for plain HTTP on this address and answer every request with a
    /// 308 redirect to the same URL over HTTPS on the gateway.
    #[arg(long, env = "NIMBUS_REDIRECT_HTTP", value_name = "ADDR")]
    redirect_http: Option<SocketAddr>,
    #[command(flatten)]
    storage: BackendArgs,
    #[command(flatten)]
    cluster: crate::cluster::ClusterArgs,
    #[command(flatten)]
    peers: crate::peers::PeerArgs,
    #[command(flatten)]
    observe: ObserveArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Refuses settings that would expose tokens in clear text or that need TLS, before anything
/// starts or binds.
fn check_tls(args: &ServerArgs) -> anyhow::Result<()> {
    let tls = args.tls.enabled()?;
    if !tls && !args.api_listen.ip().is_loopback() {
        bail!(
            "the control API carries API tokens, so on a non-loopback address ({}) it needs TLS: add `--tls auto` (a local CA) or `--tls-cert CERT.pem --tls-key KEY.pem`, or listen on 127.0.0.1 with --api-listen",
            args.api_listen
        );
    }
    if !tls && args.hsts_max_age.is_some() {
        bail!("--hsts-max-age is sent over HTTPS only: add `--tls auto` or `--tls-cert`/`--tls-key`");
    }
    if !tls && args.redirect_http.is_some() {
        bail!("--redirect-http sends clients to the HTTPS gateway: add `--tls auto` or `--tls-cert`/`--tls-key`");
    }
    Ok(())
}

pub(crate) fn run(args: ServerArgs) -> anyhow::Result<()> {
    if args.dev && !(args.api_listen.ip().is_loopback() && args.listen.ip().is_loopback()) {
        bail!(
            "--dev turns off authentication, so it only runs on loopback addresses; use 127.0.0.1 for --listen and --api-listen, or drop --dev and use API tokens"
        );
    }
    check_tls(&args)?;
    args.cluster.check(args.storage.nats.as_deref())?;
    args.peers.check(args.cluster.in_cluster())?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?
        .block_on(serve(args))
}

/// `~/.local/share/nimbus`; for root `/var/lib/nimbus` (the sandbox's user must reach the
/// deployed services' trees inside it, and `/root` is closed to others), unless a server
/// already keeps its data in the first.
pub(crate) fn default_data_dir() -> PathBuf {
    let home = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("nimbus");
    if nimbus_services::jail::drops_to_nobody() && !home.join("control.redb").exists() {
        return PathBuf::from("/var/lib/nimbus");
    }
    home
}

/// The apps' secrets, opened with the master key from `--master-key-file` or
/// `NIMBUS_MASTER_KEY`; a wrong key (or none while secrets are stored) stops the start here,
/// before anything is served.
fn open_vault(store: &Arc<Store>, file: Option<PathBuf>) -> anyhow::Result<Vault> {
    let source = match file {
        Some(path) => Some(MasterKeySource::File(path)),
        None => std::env::var_os(MASTER_KEY_ENV).map(|_| MasterKeySource::Env),
    };
    Vault::open(store.clone(), source).context("cannot open the secrets; nothing was started")
}

async fn serve(args: ServerArgs) -> anyhow::Result<()> {
    let mut listeners = args.engine.serve_configs()?;
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    crate::serving::harden_data_dir(&data_dir)?;
    let mut control = args.cluster.open(&args.storage, &data_dir).await?;
    let store = control.store.clone();
    let residency = Arc::new(nimbus_manifest::Residency::new(args.cluster.labels().0.clone()));
    let bus = args.storage.open_bus(&data_dir, &residency).await.context("cannot open the event bus")?;
    let kv = args.storage.open_kv(&data_dir, &residency).await.context("cannot open the state store")?;
    nimbus_control::migrate_state(&store, &*kv)
        .await
        .context("cannot move the state written by an older Nimbus to its apps; nothing was deleted, start again")?;
    let kv_changes = Arc::new(nimbus_triggers::KvChanges::new(kv.clone(), bus.clone()));
    let vault = Arc::new(open_vault(&store, args.master_key_file.clone())?);
    let secrets: Arc<dyn SecretSource> = vault.clone();
    let runtime = Arc::new(
        args.engine
            .runtime(args.max_instances.max(1), args.max_memory_mb, false)?
            .with_bus(bus.clone())
            .with_kv(kv.clone())
            .with_secrets(secrets.clone()),
    );
    let ingress = Arc::new(Ingress::new());
    let observer = args.observe.start(&data_dir).context("cannot start tracing and metrics")?;
    args.observe.alert_topic(&observer, Some(&bus), None)?;
    crate::doctor::services_sandbox(args.unsandboxed_services);
    crate::doctor::services_trees(&data_dir.join("services"));
    let tls = args.tls.load(&data_dir, &[args.listen, args.api_listen])?;
    let plain_gateway = listeners.gateway.clone();
    if let Some(tls) = &tls {
        listeners.gateway.tls = Some(tls.server.clone());
        listeners.gateway.hsts_max_age = args.hsts_max_age;
        listeners.api.tls = Some(tls.server.clone());
    }
    let scheme = crate::tls::scheme(tls.as_ref());

    let bind = |addr: SocketAddr, flag: &'static str| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}; pick another address with {flag}, e.g. 127.0.0.1:0"))
    };
    let gateway_listener = bind(args.listen, "--listen").await?;
    let api_listener = bind(args.api_listen, "--api-listen").await?;
    let redirect_listener = match args.redirect_http {
        Some(addr) => Some(bind(addr, "--redirect-http").await?),
        None => None,
    };
    let (gateway_addr, api_addr) = (gateway_listener.local_addr()?, api_listener.local_addr()?);
    // A cluster node joins before it loads the apps, so that the scheduler places their
    // services knowing the other nodes.
    let peers = match args.cluster.in_cluster() {
        true => Some(args.peers.open(args.cluster.node_name(), args.listen, &args.identity.trust_domain).await?),
        false => None,
    };
    let urls = (format!("{scheme}://{gateway_addr}"), format!("{scheme}://{api_addr}"));
    let nodes = Arc::new(args.cluster.nodes(&control, &data_dir, urls, peers.as_ref()).await?);
    let scheduler = match &peers {
        Some(p) => {
            let me = (args.cluster.node_name(), &args.cluster.labels().0, p.capacity_mb, p.advertise.clone());
            let transport = Arc::new(nimbus_control::Transport::new(p.tls.clone()));
            let scheduler = Arc::new(nimbus_control::Scheduler::new(me, store.clone(), transport));
            scheduler.refresh_from(&nodes).await;
            Some(scheduler)
        }
        None => None,
    };
    let audit = Arc::new(args.cluster.audit(&control, &data_dir).await?);
    audit.spawn_digests();
    let authorizer = Arc::new(nimbus_control::Authorizer::new(store.clone()).with_audit(audit));
    let tokens = Tokens::new(store.clone(), authorizer.clone());
    let callers = Arc::new(nimbus_control::DataAuth::Tokens { tokens: tokens.clone(), dev: args.dev });
    let platform = Arc::new(
        Platform::open(
            store,
            runtime.clone(),
            ingress.clone(),
            nimbus_control::AppData {
                bus: bus.clone(),
                kv_changes,
                callers,
                secrets: Some(secrets),
                trust_domain: args.identity.trust_domain.clone(),
                workload_certs: Some(args.identity.workload_certs(&data_dir)?),
                residency,
                cluster: scheduler.as_ref().map(nimbus_control::Scheduler::seams),
                authorizer,
            },
            data_dir.join("services"),
            observer.clone(),
        )
        .await
        .context("cannot load the deployed apps")?,
    );
    platform.set_retention(args.keep_revisions).await.context("cannot delete old revisions")?;
    let signers = match &args.trusted_signers {
        Some(path) => nimbus_security::supply::TrustedSigners::read(path)
            .with_context(|| format!("cannot read the trusted signers file {}", path.display()))?,
        None => nimbus_security::supply::TrustedSigners::default(),
    };
    platform.set_supply_chain(
        nimbus_control::SupplyChain::new(crate::advisories::db_dir(&data_dir), args.block_advisories)
            .with_signatures(signers, args.require_signatures),
    );
    let uploads_dir = data_dir.join("uploads");
    let uploads =
        nimbus_control::Uploads::new(uploads_dir.clone(), args.max_concurrent_uploads, args.max_upload_mb << 20)
            .with_context(|| format!("cannot prepare the uploads directory {}", uploads_dir.display()))?;
    // Again, for the stores and directories created since.
    crate::serving::harden_data_dir(&data_dir)?;
    if let Some(changes) = control.changes.take() {
        tokio::spawn(platform.clone().converge(vault.clone(), changes));
    }
    tokio::spawn(nodes.clone().heartbeat(Arc::downgrade(&platform)));
    if let Some(scheduler) = scheduler {
        tokio::spawn(scheduler.run(nodes.clone(), ingress.clone(), nodes.interval()));
        tokio::spawn(nimbus_control::sweep_artifacts(control.store.clone(), args.cluster.artifact_grace()));
    }
    let shutdown = shutdown_signal()?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    println!("Nimbus server");
    println!("  Apps:        {scheme}://{gateway_addr}");
    println!("  Control API: {scheme}://{api_addr}/v1   (OpenAPI: {scheme}://{api_addr}/v1/openapi.json)");
    println!("  Console:     {scheme}://{api_addr}/console/   (log in with an API token)");
    if let Some(redirect) = &redirect_listener {
        println!("  Redirect:    http://{} -> {scheme}://{gateway_addr} (308)", redirect.local_addr()?);
    }
    crate::tls::print_ca(tls.as_ref());
    println!("  Data:        {}", data_dir.display());
    println!("  Node:        {}", args.cluster.describe(args.storage.nats.as_deref()));
    if let Some(p) = &peers {
        println!("  Peers:       https://{} (mutual TLS, cluster CA; as {})", p.advertise, p.tls.id());
    }
    println!("  Telemetry:   {}", crate::serving::describe_telemetry(&observer, &format!("{scheme}://{api_addr}")));
    println!("  Events:      {} bus; POST {scheme}://{gateway_addr}/events/TOPIC", bus.backend());
    println!("  Identity:    {}", args.identity.describe(&data_dir));
    if let Some(created) = tokens.bootstrap().context("cannot create the first admin token")? {
        println!();
        println!("Created the first admin token. It is shown only this once and only its hash is stored:");
        println!("  {}", created.token);
        let cacert = tls.as_ref().and_then(|t| t.ca.as_ref()).map(|ca| format!(" NIMBUS_CACERT={}", ca.display()));
        println!(
            "Use it with: export NIMBUS_SERVER={scheme}://{api_addr} NIMBUS_TOKEN={}{}",
            created.token,
            cacert.unwrap_or_default()
        );
    }
    if args.dev {
        println!();
        println!("WARNING: --dev: the control API accepts calls WITHOUT a token from anyone who can reach");
        println!("WARNING: {api_addr}. Never use --dev on a shared machine or for anything but local work.");
        tracing::warn!(%api_addr, "dev mode: unauthenticated control API");
    }
    println!("Ready (Ctrl-C to stop).");
    tracing::info!(%gateway_addr, %api_addr, allocator = ?runtime.allocator(), "ready");

    let api = nimbus_control::router(Arc::new(ApiState {
        platform: platform.clone(),
        tokens,
        dev: args.dev,
        uploads,
        kv: Some(kv),
        vault,
        nodes: nodes.clone(),
    }));
    if let Some(p) = peers {
        // Forwarded requests are the gateway's clients' (their connections share its cap); the
        // pooled connections between nodes stay open between bursts.
        let config = nimbus_gateway::ServeConfig {
            tls: Some(p.tls.server()),
            hsts_max_age: None,
            idle_timeout: std::time::Duration::from_secs(600),
            ..listeners.gateway.clone()
        };
        let peer_ingress = Arc::new(nimbus_gateway::PeerIngress::new(ingress.clone(), args.cluster.node_name()));
        tokio::spawn(nimbus_gateway::serve(p.listener, peer_ingress, stopped(), config));
    }
    let api_server = nimbus_gateway::serve(api_listener, Arc::new(ApiHandler::new(api)), stopped(), listeners.api);
    let gateway_server = nimbus_gateway::serve(gateway_listener, ingress, stopped(), listeners.gateway);
    if let Some(listener) = redirect_listener {
        let redirect = Arc::new(nimbus_gateway::RedirectToHttps::new(gateway_addr.port()));
        tokio::spawn(nimbus_gateway::serve(listener, redirect, stopped(), plain_gateway));
    }
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let (api_result, gateway_result) = tokio::join!(api_server, gateway_server);
    nodes.leave().await;
    platform.shutdown().await;
    api_result.context("the control API failed")?;
    gateway_result.context("the gateway failed")?;
    println!("Stopped.");
    Ok(())
}

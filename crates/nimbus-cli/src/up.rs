//! `nimbus up`: open the embedded backends, assemble the app with the app host (the same
//! [`AppHost::assemble`] a server's deploy calls), and serve it until SIGINT/SIGTERM, then drain.
//! `nimbus dev` starts the same way ([`start`]) and then swaps in new revisions.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use nimbus_gateway::{LiveRevision, Swap};
use nimbus_host::{AppHost, AssembleError, Components, HostEnv, Revision};
use nimbus_manifest::LoadedManifest;

use crate::serving::{BackendArgs, EngineArgs, ObserveArgs, shutdown_signal};
use crate::tls::TlsArgs;

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// App directory or manifest file.
    #[arg(default_value = ".", env = "NIMBUS_APP")]
    dir: PathBuf,
    /// Run `nimbus build` first.
    #[arg(long, env = "NIMBUS_BUILD")]
    build: bool,
    #[command(flatten)]
    local: LocalArgs,
}

/// How `nimbus up` and `nimbus dev` serve one app on this machine.
#[derive(Debug, Args)]
pub(crate) struct LocalArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, short, env = "NIMBUS_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Address of the local API that `nimbus events`, `kv`, `traces` and `logs` use, with
    /// `/metrics` (loopback only; port 0 picks a free port; its URL and token go to
    /// DATA_DIR/api.json).
    #[arg(long, env = "NIMBUS_API_LISTEN", default_value = "127.0.0.1:0")]
    api_listen: SocketAddr,
    /// Where durable state (topics) lives (default: `.nimbus/` next to nimbus.toml).
    #[arg(long, env = "NIMBUS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Run services without their sandbox: as this process's user, seeing the host's files and
    /// network. Only for a trusted single-user machine (or to debug a service locally).
    #[arg(long, env = "NIMBUS_UNSANDBOXED_SERVICES")]
    unsandboxed_services: bool,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    identity: crate::identity::IdentityArgs,
    #[command(flatten)]
    storage: BackendArgs,
    #[command(flatten)]
    observe: ObserveArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

impl LocalArgs {
    /// Where the app's durable state lives.
    pub(crate) fn data_dir(&self, loaded: &LoadedManifest) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| loaded.dir().join(".nimbus"))
    }
}

pub(crate) fn run(args: UpArgs) -> anyhow::Result<()> {
    let loaded = LoadedManifest::load(&args.dir)?;
    if args.build {
        crate::build::build_all(&loaded, &[])?;
    }
    async_runtime()?.block_on(async {
        // The host lives as long as the app serves (it meters the app's KV storage).
        let Started { host: _host, live, listening, swap, .. } = start(&args.local, &loaded, Mode::Up, "local").await?;
        let served = listening.serve(swap).await;
        live.stop().await;
        served?;
        println!("Stopped.");
        Ok(())
    })
}

/// The runtime `nimbus up` and `nimbus dev` serve on.
pub(crate) fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("could not start the async runtime")
}

/// Which command serves the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `nimbus up`: the backends the manifest uses.
    Up,
    /// `nimbus dev`: the bus and the KV store whatever the manifest says, so that an edit adding
    /// a topic or a bucket applies without a restart; with `incremental`, compiled functions kept
    /// in memory, so that a recompiled component compiles only the functions that changed.
    Dev {
        /// Keep compiled functions for recompiles.
        incremental: bool,
    },
}

/// A started local app: its host, the revision serving, and the listeners.
pub(crate) struct Started {
    pub(crate) host: AppHost,
    pub(crate) swap: Arc<Swap>,
    pub(crate) live: Live,
    pub(crate) listening: Listening,
    /// `SCHEME://ADDR` of the gateway.
    pub(crate) base: String,
}

/// What runs beside a revision's gateway: its triggers and services.
pub(crate) struct Live {
    pub(crate) triggers: nimbus_triggers::AppTriggers,
    pub(crate) services: Vec<Arc<nimbus_services::Service>>,
}

impl Live {
    /// Stops the triggers, then the services (each drains its requests first).
    pub(crate) async fn stop(self) {
        self.triggers.stop().await;
        nimbus_host::stop_services(&self.services).await;
    }
}

/// The gateway's listener and the local API, until the shutdown signal.
pub(crate) struct Listening {
    listener: tokio::net::TcpListener,
    config: nimbus_gateway::ServeConfig,
    shutdown: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    stop_api: tokio::sync::oneshot::Sender<()>,
    local_api: crate::local_api::Served,
}

impl Listening {
    /// Serves `swap`'s revision until SIGINT/SIGTERM, then drains in-flight requests and stops
    /// the local API.
    pub(crate) async fn serve(self, swap: Arc<Swap>) -> anyhow::Result<()> {
        let served = nimbus_gateway::serve(self.listener, swap, self.shutdown, self.config).await;
        let _ = self.stop_api.send(());
        drop(self.local_api);
        Ok(served?)
    }
}

/// Opens the backends, assembles `loaded` as revision `id`, starts its triggers, binds the
/// gateway and the local API, and prints the banner.
pub(crate) async fn start(args: &LocalArgs, loaded: &LoadedManifest, mode: Mode, id: &str) -> anyhow::Result<Started> {
    let mut listeners = args.engine.serve_configs()?;
    let m = &loaded.manifest;
    let functions: Vec<_> = m.component.iter().filter(|(_, c)| c.source().is_some()).collect();
    let max_instances = functions.iter().map(|(_, c)| c.limits.max_concurrency).sum::<u32>().clamp(1, 10_000);
    let max_memory_mb =
        functions.iter().map(|(_, c)| c.memory_mb()).max().unwrap_or(nimbus_manifest::DEFAULT_FUNCTION_MEMORY_MB);
    let runtime = args.engine.runtime(max_instances, max_memory_mb, mode == Mode::Dev { incremental: true })?;
    let data_dir = args.data_dir(loaded);
    // The data dir is closed to other users when it is ours: the default `.nimbus`, or one this
    // start creates (not, say, a `--data-dir /tmp`).
    let ours = args.data_dir.is_none() || !data_dir.exists();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let harden = || if ours { crate::serving::harden_data_dir(&data_dir) } else { Ok(()) };
    harden()?;
    let observer = args.observe.start(&data_dir).context("cannot start tracing and metrics")?;
    let tls = args.tls.load(&data_dir, &[args.listen])?;
    let cacert = match tls.as_ref().and_then(|t| t.ca.as_deref()) {
        Some(ca) => Some(crate::remote::read_ca(ca)?),
        None => None,
    };
    if let Some(tls) = &tls {
        listeners.gateway.tls = Some(tls.server.clone());
        listeners.api.tls = Some(tls.server.clone());
    }
    let scheme = crate::tls::scheme(tls.as_ref());
    crate::doctor::services_sandbox(args.unsandboxed_services);
    let Opened { runtime, bus, kv, kv_changes } = open_data(&args.storage, &data_dir, m, runtime, mode).await?;
    args.observe.alert_topic(&observer, bus.as_ref(), Some(&m.app.name))?;
    // One token for the local API and the topics and actor types that are not `public`.
    let token = crate::local_api::new_token()?;
    let callers = crate::local_api::callers(&m.app.name, &token);
    let secrets: Arc<dyn nimbus_security::secrets::SecretSource> = Arc::new(crate::local_secrets::EnvSecrets);
    let env = HostEnv {
        runtime: Arc::new(runtime.with_secrets(secrets.clone())),
        bus: bus.clone(),
        kv: kv.clone(),
        kv_changes,
        callers: Arc::new(callers),
        observer: observer.clone(),
        secrets: Some(secrets),
        mesh: nimbus_gateway::MeshConfig { trust_domain: args.identity.trust_domain.clone(), peers: None },
        workload_certs: Some(args.identity.workload_certs(&data_dir)?),
        cluster: None,
    };
    let host = AppHost::new(env);
    let (revision, triggers) = assemble(&host, loaded).await.map_err(|e| {
        let until = match e.downcast_ref::<AssembleError>() {
            Some(AssembleError::Secrets(_)) => "every granted secret is set",
            Some(AssembleError::Functions(_)) => "every component loads",
            Some(AssembleError::Handlers(_)) => "every trigger has a handler",
            Some(AssembleError::Services(_)) => "every service is ready",
            None => "the event triggers start",
        };
        anyhow::anyhow!("{e:#}\nnothing is served until {until}")
    })?;
    let Revision { gateway, services, described, .. } = revision;
    let live = Live { triggers, services };
    let listener = match bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            live.stop().await;
            return Err(e);
        }
    };
    let addr = listener.local_addr()?;
    let shutdown = shutdown_signal()?;
    let swap = Arc::new(Swap::new(LiveRevision::new(id, gateway)));
    tell_alerting(&host, loaded, id);
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async move {
        let _ = api_stopped.await;
    };
    let serving = crate::local_api::Serving { app: &m.app.name, gateway: addr, token: &token, scheme, cacert };
    let served = crate::local_api::serve(
        args.api_listen,
        &data_dir,
        serving,
        crate::local_api::Backends { bus: bus.clone(), kv: kv.clone(), observer: observer.clone(), app: swap.clone() },
        listeners.api,
        stopped,
    );
    let local_api = match served.await {
        Ok(served) => served,
        Err(e) => {
            live.stop().await;
            return Err(e);
        }
    };
    // Again, for the stores and directories opened since: the app's events, state and telemetry
    // are its owner's alone.
    harden()?;
    let base = format!("{scheme}://{addr}");
    println!("Serving app `{}` on {base}", m.app.name);
    print_routes(&swap.current().gateway, m, &live.triggers, &described, &base);
    if let Some(bus) = bus.as_ref().filter(|_| !nimbus_triggers::app_topics(m).is_empty()) {
        println!("Events: POST {base}/events/TOPIC (CloudEvents; {} bus)", bus.backend());
    }
    if let Some(ca) = tls.as_ref().and_then(|t| t.ca.as_deref()) {
        println!("TLS: local CA {}: trust it with `curl --cacert {}`", ca.display(), ca.display());
    }
    let file = data_dir.join(crate::local_api::API_FILE);
    println!(
        "Local API: {scheme}://{} (for `nimbus events`, `kv`, `workflows`, `traces` and `logs` here; token in {})",
        local_api.addr,
        file.display()
    );
    println!("Console: {scheme}://{}/console/ (log in with the token in {})", local_api.addr, file.display());
    println!("Telemetry: {}", crate::serving::describe_telemetry(&observer, &format!("{scheme}://{}", local_api.addr)));
    println!("Health check: {base}/healthz   (Ctrl-C to stop)");
    tracing::info!(%addr, allocator = ?host.env().runtime.allocator(), "ready");
    let listening =
        Listening { listener, config: listeners.gateway, shutdown: Box::pin(shutdown), stop_api, local_api };
    Ok(Started { host, swap, live, listening, base })
}

/// Tells the node's alerting that `loaded` serves as revision `id` now: its objectives, and
/// which components differ from the revision before (a function's code by its file's contents).
pub(crate) fn tell_alerting(host: &AppHost, loaded: &LoadedManifest, id: &str) {
    use std::hash::{Hash, Hasher};
    let Some(insight) = host.env().observer.insight() else { return };
    let dir = loaded.path.parent().unwrap_or(std::path::Path::new("."));
    let digests = loaded
        .manifest
        .component
        .iter()
        .filter_map(|(name, c)| {
            let bytes = std::fs::read(dir.join(c.source()?)).ok()?;
            let mut h = std::hash::DefaultHasher::new();
            bytes.hash(&mut h);
            Some((name.clone(), format!("{:016x}", h.finish())))
        })
        .collect();
    insight.deployed(nimbus_host::deployed(&loaded.manifest, id, &digests));
}

/// Assembles `loaded` with the app host and starts its triggers; on error nothing keeps running.
pub(crate) async fn assemble(
    host: &AppHost,
    loaded: &LoadedManifest,
) -> anyhow::Result<(Revision, nimbus_triggers::AppTriggers)> {
    let m = &loaded.manifest;
    if let Some((_, owner, name)) = m.imports().into_iter().next() {
        anyhow::bail!(
            "`{owner}/{name}` names a bucket, topic or component of app `{owner}`, and `nimbus up` serves one app; deploy both apps to a `nimbus server` (where `{owner}` exports it), or use a name of this app"
        );
    }
    let revision = host.assemble(loaded, Components::Files).await?;
    match host.start_triggers(&revision.manifest, &revision.gateway).await {
        Ok(triggers) => Ok((revision, triggers)),
        Err(e) => {
            revision.stop().await;
            Err(e).context("cannot start the event triggers")
        }
    }
}

/// The gateway's listener.
async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen}; pick another address with --listen (or NIMBUS_LISTEN), e.g. 127.0.0.1:0")
    })
}

/// The runtime and the backends of the app.
struct Opened {
    runtime: nimbus_wasm::Runtime,
    bus: Option<Arc<dyn nimbus_bus::EventBus>>,
    kv: Option<Arc<dyn nimbus_state::KvStore>>,
    kv_changes: Option<Arc<nimbus_triggers::KvChanges>>,
}

/// The bus and KV store the app needs (none it does not, unless in `nimbus dev`), opened in `data_dir`, with `runtime`
/// bound to them; KV changes are published when the app has a bus.
async fn open_data(
    storage: &BackendArgs,
    data_dir: &std::path::Path,
    m: &nimbus_manifest::Manifest,
    mut runtime: nimbus_wasm::Runtime,
    mode: Mode,
) -> anyhow::Result<Opened> {
    let topics = nimbus_triggers::app_topics(m);
    let workflow_starts = m.trigger.workflow.iter().any(|t| t.schedule.is_some());
    let needs_bus = mode != Mode::Up
        || !topics.is_empty()
        || !m.trigger.cron.is_empty()
        || !m.trigger.kv.is_empty()
        || workflow_starts;
    let bus = if !needs_bus {
        None
    } else {
        let bus = storage.open_bus(data_dir, &Arc::default()).await.context("cannot open the event bus")?;
        runtime = runtime.with_bus(bus.clone());
        Some(bus)
    };
    let needs_kv = mode != Mode::Up
        || m.component.values().any(|c| !c.grants.kv.is_empty())
        || !m.trigger.kv.is_empty()
        || !m.trigger.actor.is_empty()
        || !m.trigger.workflow.is_empty();
    let (kv, kv_changes) = if needs_kv {
        let kv = storage.open_kv(data_dir, &Arc::default()).await.context("cannot open the state store")?;
        // State written before buckets were scoped per app is this app's.
        let app = m.app.name.clone();
        nimbus_state::migrate(&*kv, &move |_: &str, _: &str| vec![app.clone()]).await.context(
            "cannot move the state written by an older Nimbus to this app; nothing was deleted, start again",
        )?;
        let changes = bus.as_ref().map(|bus| Arc::new(nimbus_triggers::KvChanges::new(kv.clone(), bus.clone())));
        runtime = runtime.with_kv(kv.clone());
        (Some(kv), changes)
    } else {
        (None, None)
    };
    Ok(Opened { runtime, bus, kv, kv_changes })
}

/// The banner lines of what the app serves: its routes, actors, workflows and triggers.
pub(crate) fn print_routes(
    gateway: &nimbus_gateway::Gateway,
    m: &nimbus_manifest::Manifest,
    triggers: &nimbus_triggers::AppTriggers,
    described: &std::collections::HashMap<String, String>,
    base: &str,
) {
    let mut routes: Vec<_> = gateway.router().routes().collect();
    routes.sort_by(|a, b| a.route.cmp(&b.route));
    for route in routes {
        let name = route.target.backend.name();
        let methods = if route.methods.is_empty() {
            "*".to_string()
        } else {
            route.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",")
        };
        println!("  {methods:<8} {base}{:<24} -> {name} ({})", route.route, described[name]);
    }
    for t in &m.trigger.actor {
        println!("  POST     {base}/actors/{}/KEY/METHOD -> {} (actor)", t.actor_type, t.component);
    }
    for t in &m.trigger.workflow {
        println!("  POST     {base}/workflows/{:<14} -> {} (workflow)", t.name, t.component);
    }
    for t in &triggers.info {
        println!("  {:<33} -> {} ({})", t.what, t.component, described[&t.component]);
    }
}

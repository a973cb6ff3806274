//! `nimbus up`: open the embedded backends, assemble the app with the app host (the same
//! [`AppHost::assemble`] a server's deploy calls), and serve it until SIGINT/SIGTERM, then drain.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use nimbus_host::{AppHost, AssembleError, Components, HostEnv, Revision};
use nimbus_manifest::LoadedManifest;

use crate::serving::{BackendArgs, EngineArgs, ObserveArgs, shutdown_signal};
use crate::tls::TlsArgs;

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// App directory or manifest file.
    #[arg(default_value = ".", env = "NIMBUS_APP")]
    dir: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, short, env = "NIMBUS_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Run `nimbus build` first.
    #[arg(long, env = "NIMBUS_BUILD")]
    build: bool,
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

pub(crate) fn run(args: UpArgs) -> anyhow::Result<()> {
    let loaded = LoadedManifest::load(&args.dir)?;
    if args.build {
        crate::build::build_all(&loaded, &[])?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(serve(args, loaded))
}

async fn serve(args: UpArgs, loaded: LoadedManifest) -> anyhow::Result<()> {
    let mut listeners = args.engine.serve_configs()?;
    let m = &loaded.manifest;
    if let Some((_, owner, name)) = m.imports().into_iter().next() {
        anyhow::bail!(
            "`{owner}/{name}` names a bucket, topic or component of app `{owner}`, and `nimbus up` serves one app; deploy both apps to a `nimbus server` (where `{owner}` exports it), or use a name of this app"
        );
    }
    let functions: Vec<_> = m.component.iter().filter(|(_, c)| c.source().is_some()).collect();
    let max_instances = functions.iter().map(|(_, c)| c.limits.max_concurrency).sum::<u32>().clamp(1, 10_000);
    let max_memory_mb =
        functions.iter().map(|(_, c)| c.memory_mb()).max().unwrap_or(nimbus_manifest::DEFAULT_FUNCTION_MEMORY_MB);
    let runtime = args.engine.runtime(max_instances, max_memory_mb)?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| loaded.dir().join(".nimbus"));
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
    let Opened { runtime, bus, kv, kv_changes } = open_data(&args.storage, &data_dir, m, runtime).await?;
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
    let revision = host.assemble(&loaded, Components::Files).await.map_err(|e| {
        let until = match &e {
            AssembleError::Secrets(_) => "every granted secret is set",
            AssembleError::Functions(_) => "every component loads",
            AssembleError::Handlers(_) => "every trigger has a handler",
            AssembleError::Services(_) => "every service is ready",
        };
        anyhow::anyhow!("{e}\nnothing is served until {until}")
    })?;
    let triggers = match host.start_triggers(&revision.manifest, &revision.gateway).await {
        Ok(t) => t,
        Err(e) => {
            revision.stop().await;
            return Err(e).context("cannot start the event triggers");
        }
    };
    let Revision { gateway, services, described, .. } = revision;
    let gateway = Arc::new(gateway);
    let listener = match bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            nimbus_host::stop_services(&services).await;
            return Err(e);
        }
    };
    let addr = listener.local_addr()?;
    let shutdown = shutdown_signal()?;
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async move {
        let _ = api_stopped.await;
    };
    let serving = crate::local_api::Serving { app: &m.app.name, gateway: addr, token: &token, scheme, cacert };
    let served = crate::local_api::serve(
        args.api_listen,
        &data_dir,
        serving,
        crate::local_api::Backends {
            bus: bus.clone(),
            kv: kv.clone(),
            observer: observer.clone(),
            workflows: gateway.workflows(),
        },
        listeners.api,
        stopped,
    );
    let local_api = match served.await {
        Ok(served) => served,
        Err(e) => {
            triggers.stop().await;
            nimbus_host::stop_services(&services).await;
            return Err(e);
        }
    };
    println!("Serving app `{}` on {scheme}://{addr}", m.app.name);
    print_routes(&gateway, m, &triggers, &described, &format!("{scheme}://{addr}"));
    if let Some(bus) = &bus {
        println!("Events: POST {scheme}://{addr}/events/TOPIC (CloudEvents; {} bus)", bus.backend());
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
    println!("Health check: {scheme}://{addr}/healthz   (Ctrl-C to stop)");
    tracing::info!(%addr, allocator = ?host.env().runtime.allocator(), "ready");

    let served = nimbus_gateway::serve(listener, gateway, shutdown, listeners.gateway).await;
    let _ = stop_api.send(());
    drop(local_api);
    triggers.stop().await;
    nimbus_host::stop_services(&services).await;
    served?;
    println!("Stopped.");
    Ok(())
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

/// The bus and KV store the app needs (none it does not), opened in `data_dir`, with `runtime`
/// bound to them; KV changes are published when the app has a bus.
async fn open_data(
    storage: &BackendArgs,
    data_dir: &std::path::Path,
    m: &nimbus_manifest::Manifest,
    mut runtime: nimbus_wasm::Runtime,
) -> anyhow::Result<Opened> {
    let topics = nimbus_triggers::app_topics(m);
    let workflow_starts = m.trigger.workflow.iter().any(|t| t.schedule.is_some());
    let bus = if topics.is_empty() && m.trigger.cron.is_empty() && m.trigger.kv.is_empty() && !workflow_starts {
        None
    } else {
        let bus = storage.open_bus(data_dir, &Arc::default()).await.context("cannot open the event bus")?;
        runtime = runtime.with_bus(bus.clone());
        Some(bus)
    };
    let needs_kv = m.component.values().any(|c| !c.grants.kv.is_empty())
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
        let kv: Arc<dyn nimbus_state::KvStore> = match &changes {
            Some(c) => c.clone(),
            None => kv,
        };
        runtime = runtime.with_kv(kv.clone());
        (Some(kv), changes)
    } else {
        (None, None)
    };
    Ok(Opened { runtime, bus, kv, kv_changes })
}

/// The banner lines of what the app serves: its routes, actors, workflows and triggers.
fn print_routes(
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

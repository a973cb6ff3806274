//! `nimbus up`: load the app, compile (or load from cache) every component, and serve it until
//! SIGINT/SIGTERM, then drain.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use nimbus_gateway::{AppTriggers, Backend, EventIngress, Gateway};
use nimbus_manifest::{FieldPath, LoadedManifest};
use nimbus_services::{Service, ServiceSpec};
use nimbus_wasm::{CacheOutcome, WasmKind};

use crate::serving::{BackendArgs, EngineArgs, ObserveArgs, shutdown_signal};

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
    let listeners = args.engine.serve_configs()?;
    let m = &loaded.manifest;
    if let Some((_, owner, name)) = m.imports().into_iter().next() {
        anyhow::bail!(
            "`{owner}/{name}` names a bucket or topic of app `{owner}`, and `nimbus up` serves one app; deploy both apps to a `nimbus server` (where `{owner}` exports it), or use a name of this app"
        );
    }
    let functions: Vec<_> = m.component.iter().filter(|(_, c)| c.source().is_some()).collect();
    let max_instances = functions.iter().map(|(_, c)| c.limits.max_concurrency).sum::<u32>().clamp(1, 10_000);
    let max_memory_mb =
        functions.iter().map(|(_, c)| c.memory_mb()).max().unwrap_or(nimbus_manifest::DEFAULT_FUNCTION_MEMORY_MB);
    let mut runtime = args.engine.runtime(max_instances, max_memory_mb)?;
    let topics = nimbus_gateway::app_topics(m);
    let data_dir = args.data_dir.clone().unwrap_or_else(|| loaded.dir().join(".nimbus"));
    let observer = args.observe.start(&data_dir).context("cannot start tracing and metrics")?;
    crate::doctor::services_sandbox(args.unsandboxed_services);
    let bus = if topics.is_empty() && m.trigger.cron.is_empty() && m.trigger.kv.is_empty() {
        None
    } else {
        let bus = args.storage.open_bus(&data_dir).await.context("cannot open the event bus")?;
        runtime = runtime.with_bus(bus.clone());
        Some(bus)
    };
    let needs_kv = m.component.values().any(|c| !c.grants.kv.is_empty())
        || !m.trigger.kv.is_empty()
        || !m.trigger.actor.is_empty();
    let (kv, kv_changes) = if needs_kv {
        let kv = args.storage.open_kv(&data_dir).await.context("cannot open the state store")?;
        // State written before buckets were scoped per app is this app's.
        let app = m.app.name.clone();
        nimbus_state::migrate(&*kv, &move |_: &str, _: &str| vec![app.clone()]).await.context(
            "cannot move the state written by an older Nimbus to this app; nothing was deleted, start again",
        )?;
        let changes = bus.as_ref().map(|bus| Arc::new(nimbus_gateway::KvChanges::new(kv.clone(), bus.clone())));
        let kv: Arc<dyn nimbus_state::KvStore> = match &changes {
            Some(c) => c.clone(),
            None => kv,
        };
        runtime = runtime.with_kv(kv.clone());
        (Some(kv), changes)
    } else {
        (None, None)
    };

    let loads = functions.iter().map(|&(name, c)| {
        let path = loaded.resolve(c.source().unwrap_or_default());
        let runtime = &runtime;
        async move { (name, runtime.load_with_outcome(name, &path, c).await) }
    });
    let mut backends = HashMap::new();
    let mut problems = Vec::new();
    let mut described = HashMap::new();
    for (name, result) in futures::future::join_all(loads).await {
        match result {
            Ok((function, outcome)) => {
                let kind = match (function.kind(), function.handles_http(), function.handles_events()) {
                    (WasmKind::Module, ..) => "WAGI module",
                    (_, true, true) => "wasi:http + nimbus:events component",
                    (_, false, true) => "nimbus:events component",
                    _ => "wasi:http component",
                };
                let how = match outcome {
                    CacheOutcome::Hit(d) => format!("loaded from cache in {} ms", d.as_millis()),
                    CacheOutcome::Compiled(d) => format!("compiled in {} ms", d.as_millis()),
                };
                described.insert(name.clone(), format!("{kind}, {how}"));
                backends.insert(name.clone(), Backend::Function(function));
            }
            Err(e) => {
                let at = FieldPath::root().key("component").key(name.clone()).key("source");
                problems.push(loaded.diagnostic(&at, e.to_string(), e.hint()).to_string());
            }
        }
    }
    if !problems.is_empty() {
        bail!("{}\nnothing is served until every component loads", problems.join("\n"));
    }
    check_handlers(&loaded, &backends)?;
    let services = start_services(&loaded, &mut backends, &mut described, &observer).await?;

    // One token for the local API and the topics and actor types that are not `public`.
    let token = crate::local_api::new_token()?;
    let callers = nimbus_control::DataAuth::Local { token: token.clone(), app: m.app.name.clone() };
    let mut gateway = Gateway::from_manifest(m, &backends, &observer).with_callers(Arc::new(callers));
    if let Some(kv) = &kv
        && let Some(host) = nimbus_gateway::ActorHost::new(m, &gateway, kv.clone(), Default::default())
    {
        gateway = gateway.with_actors(host);
    }
    let triggers = match &bus {
        Some(bus) => {
            gateway = gateway.with_events(EventIngress::new(&m.app.name, bus.clone(), topics));
            match AppTriggers::start(m, &gateway, bus, kv_changes.as_ref()).await {
                Ok(t) => t,
                Err(e) => {
                    stop_services(&services).await;
                    return Err(e).context("cannot start the event triggers");
                }
            }
        }
        None => AppTriggers::default(),
    };
    let gateway = Arc::new(gateway);
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            stop_services(&services).await;
            return Err(e).with_context(|| {
                format!(
                    "cannot listen on {}; pick another address with --listen (or NIMBUS_LISTEN), e.g. 127.0.0.1:0",
                    args.listen
                )
            });
        }
    };
    let addr = listener.local_addr()?;
    let shutdown = shutdown_signal()?;
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async move {
        let _ = api_stopped.await;
    };
    let serving = crate::local_api::Serving { app: &m.app.name, gateway: addr, token: &token };
    let served = crate::local_api::serve(
        args.api_listen,
        &data_dir,
        serving,
        crate::local_api::Backends { bus: bus.clone(), kv: kv.clone(), observer: observer.clone() },
        listeners.api,
        stopped,
    );
    let local_api = match served.await {
        Ok(served) => served,
        Err(e) => {
            triggers.stop().await;
            stop_services(&services).await;
            return Err(e);
        }
    };
    println!("Serving app `{}` on http://{addr}", m.app.name);
    let mut routes: Vec<_> = gateway.router().routes().collect();
    routes.sort_by(|a, b| a.route.cmp(&b.route));
    for route in routes {
        let name = route.target.backend.name();
        let methods = if route.methods.is_empty() {
            "*".to_string()
        } else {
            route.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",")
        };
        println!("  {methods:<8} http://{addr}{:<24} -> {name} ({})", route.route, described[name]);
    }
    for t in &m.trigger.actor {
        println!("  POST     http://{addr}/actors/{}/KEY/METHOD -> {} (actor)", t.actor_type, t.component);
    }
    for t in &triggers.info {
        println!("  {:<33} -> {} ({})", t.what, t.component, described[&t.component]);
    }
    if let Some(bus) = &bus {
        println!("Events: POST http://{addr}/events/TOPIC (CloudEvents; {} bus)", bus.backend());
    }
    let file = data_dir.join(crate::local_api::API_FILE);
    println!(
        "Local API: http://{} (for `nimbus events`, `kv`, `traces` and `logs` here; token in {})",
        local_api.addr,
        file.display()
    );
    println!("Telemetry: {}", crate::serving::describe_telemetry(&observer, &format!("http://{}", local_api.addr)));
    println!("Health check: http://{addr}/healthz   (Ctrl-C to stop)");
    tracing::info!(%addr, allocator = ?runtime.allocator(), "ready");

    let served = nimbus_gateway::serve(listener, gateway, shutdown, listeners.gateway).await;
    let _ = stop_api.send(());
    drop(local_api);
    triggers.stop().await;
    stop_services(&services).await;
    served?;
    println!("Stopped.");
    Ok(())
}

/// Every trigger's function can handle it, or nothing is served.
fn check_handlers(loaded: &LoadedManifest, backends: &HashMap<String, Backend>) -> anyhow::Result<()> {
    let problems: Vec<String> = nimbus_gateway::handler_problems(&loaded.manifest, backends)
        .into_iter()
        .map(|(at, message, hint)| loaded.diagnostic(&at, message, hint).to_string())
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}\nnothing is served until every trigger has a handler", problems.join("\n"))
    }
}

/// Starts every service and waits until each has a ready process; on failure stops them all.
async fn start_services(
    loaded: &LoadedManifest,
    backends: &mut HashMap<String, Backend>,
    described: &mut HashMap<String, String>,
    observer: &nimbus_observe::Observer,
) -> anyhow::Result<Vec<Arc<Service>>> {
    let started: Vec<(String, Arc<Service>)> = loaded
        .manifest
        .component
        .iter()
        .filter(|(_, c)| c.command.is_some())
        .map(|(name, c)| {
            let mut spec = ServiceSpec::from_component(name, c, loaded.dir());
            spec.telemetry = observer.component(&loaded.manifest.app.name, name);
            (name.clone(), Service::start(spec))
        })
        .collect();
    let begin = std::time::Instant::now();
    let results = futures::future::join_all(started.iter().map(|(_, s)| s.until_ready())).await;
    let services: Vec<Arc<Service>> = started.iter().map(|(_, s)| s.clone()).collect();
    let mut problems = Vec::new();
    for ((name, service), result) in started.iter().zip(results) {
        match result {
            Ok(()) => {
                let how = if service.starts_at_zero() {
                    "service, scaled to zero until its first request".to_string()
                } else {
                    format!("service, ready in {} ms", begin.elapsed().as_millis())
                };
                described.insert(name.clone(), how);
                backends.insert(name.clone(), Backend::Service(service.clone()));
            }
            Err(e) => {
                let at = FieldPath::root().key("component").key(name.clone()).key("command");
                let hint = "check the command and its output above; a service must listen on 127.0.0.1:$PORT and pass its readiness probe";
                problems.push(loaded.diagnostic(&at, e.to_string(), hint).to_string());
            }
        }
    }
    if !problems.is_empty() {
        stop_services(&services).await;
        bail!("{}\nnothing is served until every service is ready", problems.join("\n"));
    }
    Ok(services)
}

async fn stop_services(services: &[Arc<Service>]) {
    futures::future::join_all(services.iter().map(|s| s.shutdown())).await;
}

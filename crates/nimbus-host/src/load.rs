//! Loading an app's components: every function compiled (or taken from the cache) at once,
//! every trigger checked against what its component exports, every service started and
//! waited for at once. Each problem is a diagnostic at the manifest field to fix.
use std::collections::HashMap;
use std::sync::Arc;

use nimbus_gateway::Backend;
use nimbus_manifest::{FieldPath, LoadedManifest};
use nimbus_services::{Service, ServiceSpec};
use nimbus_wasm::{CacheOutcome, Runtime, WasmKind};

use crate::source::{Components, Wasm};
use crate::{AssembleError, StopOnDrop};

/// Loads every function of the app; `described` gets how each was loaded.
pub(crate) async fn functions(
    runtime: &Runtime,
    loaded: &LoadedManifest,
    from: &Components<'_>,
    described: &mut HashMap<String, String>,
) -> Result<HashMap<String, Backend>, AssembleError> {
    let loads = loaded.manifest.component.iter().filter(|(_, c)| c.source().is_some()).filter_map(|(name, c)| {
        let wasm = from.wasm(loaded, name, c)?;
        Some(async move {
            let result = match wasm {
                Wasm::File(path) => runtime.load_with_outcome(name, &path, c).await,
                Wasm::Bytes { label, bytes } => runtime.load_bytes(name, &label, bytes, c).await,
            };
            (name, result)
        })
    });
    let mut backends = HashMap::new();
    let mut problems = Vec::new();
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
                problems.push(loaded.diagnostic(&at, nimbus_observe::report(&e), from.load_hint(&e)).to_string());
            }
        }
    }
    if problems.is_empty() { Ok(backends) } else { Err(AssembleError::Functions(problems)) }
}

/// Every trigger's function can handle it.
pub(crate) fn check_handlers(
    loaded: &LoadedManifest,
    backends: &HashMap<String, Backend>,
) -> Result<(), AssembleError> {
    let mut problems: Vec<String> = nimbus_triggers::handler_problems(&loaded.manifest, backends)
        .into_iter()
        .map(|(at, message, hint)| loaded.diagnostic(&at, message, hint).to_string())
        .collect();
    // A component called over `http://NAME.internal/` must serve HTTP (services always do).
    for (name, c) in &loaded.manifest.component {
        for (i, callee) in c.grants.invoke.iter().enumerate() {
            if let Some(Backend::Function(f)) = backends.get(callee.as_str())
                && !f.handles_http()
            {
                let at = FieldPath::root().key("component").key(name.clone()).key("grants").key("invoke").index(i);
                let message = format!("`{callee}` does not serve HTTP (it exports no `wasi:http/incoming-handler`)");
                let hint = "call a component that handles HTTP requests, or remove the grant";
                problems.push(loaded.diagnostic(&at, message, hint).to_string());
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(AssembleError::Handlers(problems)) }
}

/// Starts every service of the app (with its granted `secrets` in its environment) and waits until each has a ready process; on failure stops
/// them all.
pub(crate) async fn services(
    loaded: &LoadedManifest,
    from: &Components<'_>,
    env: &crate::HostEnv,
    observer: &nimbus_observe::Observer,
    secrets: &mut crate::secrets::SecretEnv,
    backends: &mut HashMap<String, Backend>,
    described: &mut HashMap<String, String>,
) -> Result<Vec<Arc<Service>>, AssembleError> {
    let m = &loaded.manifest;
    let at = |name: &str| FieldPath::root().key("component").key(name.to_string()).key("command");
    let mut problems = Vec::new();
    let mut started = Vec::new();
    for (name, c) in m.component.iter().filter(|(_, c)| c.command.is_some()) {
        match from.service_dir(loaded, name) {
            Ok(dir) => {
                let mut spec = ServiceSpec::from_component(name, c, dir);
                if let Components::Bundle { .. } = from {
                    // A deployed service runs at the root of its tree.
                    spec.workdir = dir.to_path_buf();
                }
                spec.telemetry = observer.component(&m.app.name, name);
                spec.identity = env.service_identity(&m.app.name, name);
                spec.secrets = secrets.remove(name).unwrap_or_default();
                // `max_per_node` caps the processes on this node.
                let (per_node, _) = m.placement.split(spec.scale.max);
                spec.scale.max = per_node;
                spec.scale.min = spec.scale.min.min(per_node);
                spec.scale.initial = spec.scale.initial.min(per_node);
                spec.scale.warm = spec.scale.warm.min(per_node);
                if let Some(cluster) = &env.cluster {
                    spec.placed = cluster.services.place(m, from.revision(), name);
                }
                started.push((name, dir, Service::start(spec)));
            }
            Err(e) => problems.push(loaded.diagnostic(&at(name), e, from.service_hint()).to_string()),
        }
    }
    // Stopped again if anything fails, or if the caller gives up waiting.
    let guard = StopOnDrop(started.iter().map(|(_, _, s)| s.clone()).collect());
    let begin = std::time::Instant::now();
    let results = futures::future::join_all(started.iter().map(|(_, _, s)| s.until_ready())).await;
    for ((name, dir, service), result) in started.iter().zip(results) {
        match result {
            Ok(()) => {
                let how = if service.starts_at_zero() {
                    "service, scaled to zero until its first request".to_string()
                } else {
                    format!("service, ready in {} ms", begin.elapsed().as_millis())
                };
                described.insert(name.to_string(), how);
                backends.insert(name.to_string(), Backend::Service(service.clone()));
            }
            Err(e) => {
                let message = from.service_error(e.to_string(), dir);
                problems.push(loaded.diagnostic(&at(name), message, from.service_hint()).to_string());
            }
        }
    }
    if problems.is_empty() {
        Ok(guard.disarm())
    } else {
        crate::stop_services(&guard.disarm()).await;
        Err(AssembleError::Services(problems))
    }
}

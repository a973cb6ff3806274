//! The local API of `nimbus up`: the control API's topic, KV, metrics, trace and log endpoints on a
//! loopback port, guarded by a random token and refusing what a web page could send
//! ([`nimbus_control::guard_local`]). Both are written to `.nimbus/api.json` (readable by its owner only) while
//! `nimbus up` runs, which is how `nimbus events`, `kv`, `traces` and `logs` in the app
//! directory find them.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use nimbus_control::{DataAuth, DataState};
use serde::{Deserialize, Serialize};

/// The file `nimbus up` writes into its data dir.
pub(crate) const API_FILE: &str = "api.json";

/// The contents of `.nimbus/api.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LocalApi {
    /// Base URL of the API.
    pub(crate) url: String,
    /// Its bearer token.
    pub(crate) token: String,
    /// The process serving it.
    pub(crate) pid: u32,
    /// The app's gateway (for `nimbus actors call`).
    pub(crate) gateway: String,
    /// The app served (whose topics, buckets and actors the commands use).
    pub(crate) app: String,
    /// With `--tls auto`: the local CA's root (PEM), the only one the commands trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cacert: Option<String>,
}

impl LocalApi {
    /// The API of the `nimbus up` running in the current directory or the nearest parent that
    /// has one (its default data dir, `.nimbus`), so the commands work anywhere in the app.
    pub(crate) fn here() -> Option<Self> {
        let cwd = std::env::current_dir().ok()?;
        cwd.ancestors().find_map(|dir| {
            let text = std::fs::read_to_string(dir.join(".nimbus").join(API_FILE)).ok()?;
            let api: Self = serde_json::from_str(&text).ok()?;
            // A file left behind by a killed `nimbus up` names a process that is gone.
            Path::new(&format!("/proc/{}", api.pid)).exists().then_some(api)
        })
    }
}

/// A running local API; dropping it removes `api.json`.
pub(crate) struct Served {
    file: PathBuf,
    pub(crate) addr: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// What `nimbus up` serves: its one app, the app's gateway, the token of both, and the scheme
/// and CA (PEM) of their TLS.
pub(crate) struct Serving<'a> {
    pub(crate) app: &'a str,
    pub(crate) gateway: SocketAddr,
    pub(crate) token: &'a str,
    pub(crate) scheme: &'a str,
    pub(crate) cacert: Option<String>,
}

/// Who may use the data of `app` under `nimbus up`: callers with `token`. The local API and the
/// gateway's topics and actor types that are not `public` take the same callers.
pub(crate) fn callers(app: &str, token: &str) -> DataAuth {
    DataAuth::Local { token: token.to_string(), app: app.to_string() }
}

/// A fresh random token for the local API (and the gateway's topics and actor types that are
/// not `public`).
pub(crate) fn new_token() -> anyhow::Result<String> {
    let mut secret = [0u8; 24];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness for the API token: {e}"))?;
    Ok(format!("nbl_{}", hex::encode(secret)))
}

/// What the local API reads and writes.
pub(crate) struct Backends {
    pub(crate) bus: Option<Arc<dyn nimbus_bus::EventBus>>,
    pub(crate) kv: Option<Arc<dyn nimbus_state::KvStore>>,
    pub(crate) observer: nimbus_observe::Observer,
    /// The app served (whose revision `nimbus dev` replaces).
    pub(crate) app: Arc<nimbus_gateway::Swap>,
}

/// The workflows of the one app `nimbus up` serves: its current revision's (the data API checks
/// the app first).
#[derive(Debug)]
struct ServedWorkflows(Arc<nimbus_gateway::Swap>);

impl nimbus_control::AppWorkflows for ServedWorkflows {
    fn of<'a>(&'a self, _: &'a str) -> futures::future::BoxFuture<'a, Option<Arc<dyn nimbus_gateway::WorkflowCalls>>> {
        Box::pin(async move { self.0.current().gateway.workflows() })
    }
}

/// Serves the topic, KV, workflow, metrics, trace and log endpoints of this node on `listen` (loopback
/// only) with `config` until `stop` resolves.
pub(crate) async fn serve(
    listen: SocketAddr,
    data_dir: &Path,
    serving: Serving<'_>,
    backends: Backends,
    config: nimbus_gateway::ServeConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Served> {
    anyhow::ensure!(
        listen.ip().is_loopback(),
        "--api-listen must be a loopback address: `nimbus up` is for local work"
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}; pick another address with --api-listen"))?;
    let addr = listener.local_addr()?;
    let api = LocalApi {
        url: format!("{}://{addr}", serving.scheme),
        token: serving.token.to_string(),
        pid: std::process::id(),
        gateway: format!("{}://{}", serving.scheme, serving.gateway),
        app: serving.app.to_string(),
        cacert: serving.cacert,
    };
    let file = data_dir.join(API_FILE);
    crate::remote::write_private(&file, &serde_json::to_vec_pretty(&api)?)?;
    let Backends { bus, kv, observer, app } = backends;
    let auth = callers(serving.app, serving.token);
    let workflows = Some(Arc::new(ServedWorkflows(app)) as Arc<dyn nimbus_control::AppWorkflows>);
    let router = nimbus_control::data_router(Arc::new(DataState { bus, kv, auth, observer, workflows, ingress: None }))
        .merge(nimbus_console::routes());
    let handler = Arc::new(nimbus_control::ApiHandler::new(nimbus_control::guard_local(router)));
    tokio::spawn(async move {
        if let Err(e) = nimbus_gateway::serve(listener, handler, stop, config).await {
            tracing::error!(error = %e, "the local events API failed");
        }
    });
    Ok(Served { file, addr })
}

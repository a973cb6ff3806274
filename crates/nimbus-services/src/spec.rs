//! What a service is, resolved from its `[component.NAME]` table.
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nimbus_manifest::{Component, ComponentKind, Grants, Probe, Scale};
use nimbus_observe::ComponentTelemetry;
use nimbus_security::mesh::Mesh;
use nimbus_security::secrets::SecretValue;

/// Default seconds between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// How to run and check one service.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Component name.
    pub name: Arc<str>,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Where it runs.
    pub workdir: PathBuf,
    /// The app's tree (the sandbox shows it read-only; `workdir` is in it).
    pub root: PathBuf,
    /// What it may reach through the sandbox's egress proxy: origins (`grants.outbound`) and
    /// other components (`grants.invoke`, at `http://NAME.internal/`).
    pub grants: Arc<Grants>,
    /// Where its calls to other components go, bound once its app's gateway exists
    /// ([`crate::Service::bind_mesh`]); until then they are answered 503.
    pub mesh: Arc<OnceLock<Arc<dyn Mesh>>>,
    /// Its workload identity, given to its processes as certificate files; none by default.
    pub identity: Option<crate::Identity>,
    /// Its environment (`PORT` is added per instance; `PATH` comes from the host).
    pub env: Vec<(String, String)>,
    /// Its granted secrets, as environment variables (`STRIPE_KEY`); set by the app host, which
    /// reads them (none from [`ServiceSpec::from_component`]). `Debug` shows `[redacted]`.
    pub secrets: Vec<(String, SecretValue)>,
    /// When a new process is ready.
    pub readiness: Probe,
    /// When a running process is broken.
    pub liveness: Option<Probe>,
    /// SIGTERM → SIGKILL delay.
    pub grace: Duration,
    /// Time limit of one request until its response headers, if any.
    pub timeout: Option<Duration>,
    /// The autoscaler's settings.
    pub scale: Scale,
    /// Resource limits of each process.
    pub limits: crate::sandbox::Limits,
    /// Where its instance metrics and process output go (detached unless the caller sets it).
    pub telemetry: Arc<ComponentTelemetry>,
    /// Where it starts out: on this node, unless a cluster's scheduler placed it elsewhere.
    pub placed: crate::Placed,
}

impl ServiceSpec {
    /// The spec of a validated service component of the app in `app_dir`.
    ///
    /// # Panics
    /// If the component is a function.
    pub fn from_component(name: &str, c: &Component, app_dir: &Path) -> Self {
        let ComponentKind::Service { command } = c.kind() else { panic!("`{name}` is not a service") };
        Self {
            name: name.into(),
            command: command.to_vec(),
            workdir: c.workdir.as_deref().map_or_else(|| app_dir.to_path_buf(), |w| app_dir.join(w)),
            root: app_dir.to_path_buf(),
            grants: Arc::new(c.grants.clone()),
            mesh: Arc::default(),
            identity: None,
            env: c.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            secrets: Vec::new(),
            readiness: c.readiness.clone().unwrap_or_default(),
            liveness: c.liveness.clone(),
            grace: c.shutdown_grace_s.map_or(DEFAULT_GRACE, Duration::from_secs),
            timeout: c.timeout(),
            scale: c.scale.clone().unwrap_or_default(),
            limits: crate::sandbox::Limits {
                memory_mb: c.memory_mb(),
                pids: c.limits.pids.unwrap_or(nimbus_manifest::DEFAULT_SERVICE_PIDS),
                cpu_millis: c.limits.cpu_millis,
            },
            telemetry: ComponentTelemetry::detached(name),
            placed: crate::Placed::Here,
        }
    }
}

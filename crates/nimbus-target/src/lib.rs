//! Component targets: a component of a live app as everything that sends it work sees it — its
//! backend (a loaded function or a running service), its admission control (bounded
//! concurrency, a bounded FIFO queue), its largest request body and its telemetry. HTTP
//! requests (`nimbus-gateway`), event deliveries (`nimbus-triggers`) and actor calls
//! (`nimbus-actors`) all admit their work through the same [`Target`], so a component's limits
//! hold whatever starts it.
//!
//! It does not load components (`nimbus-wasm`, `nimbus-services`), route, or deliver anything.
//!
//! ```no_run
//! # async fn demo(manifest: nimbus_manifest::Manifest, hello: nimbus_wasm::Function) {
//! use nimbus_target::{Backend, Target};
//!
//! let observer = nimbus_observe::Observer::disabled();
//! let c = &manifest.component["hello"];
//! let target = Target::new(&manifest.app.name, "hello", c, Backend::Function(hello), &observer);
//! let _permit = target.admit().await; // one of the component's instances is ours
//! # }
//! ```

mod admission;

use std::sync::Arc;
use std::time::Duration;

use nimbus_manifest::Component;
use nimbus_observe::{ComponentTelemetry, Observer};
use nimbus_services::Service;
use nimbus_wasm::Function;

pub use admission::{Admission, Rejected};

/// What serves a component's requests.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A WebAssembly function: a fresh instance per request.
    Function(Function),
    /// A long-lived service process (or several).
    Service(Arc<Service>),
}

impl Backend {
    /// The component name.
    pub fn name(&self) -> &str {
        match self {
            Self::Function(f) => f.name(),
            Self::Service(s) => s.name(),
        }
    }
}

/// A component as the gateway, triggers and actors see it: its backend plus its admission
/// state and body limit.
#[derive(Debug)]
pub struct Target {
    /// What serves it.
    pub backend: Backend,
    /// Concurrency and queue of this component.
    pub admission: Admission,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Its metrics and log sink.
    pub telemetry: Arc<ComponentTelemetry>,
}

impl Target {
    /// The target of component `name` of `app`, with the limits its manifest entry `c` sets,
    /// counted by `observer`.
    pub fn new(app: &str, name: &str, c: &Component, backend: Backend, observer: &Observer) -> Self {
        let l = &c.limits;
        let telemetry = observer.component(app, name);
        Self {
            backend,
            admission: Admission::new(
                l.max_concurrency as usize,
                l.queue_depth as usize,
                Duration::from_millis(l.queue_timeout_ms),
                telemetry.metrics.queue_depth.clone(),
            ),
            max_body_bytes: usize::try_from(l.max_body_kb.saturating_mul(1024)).unwrap_or(usize::MAX),
            telemetry,
        }
    }

    /// Waits for one of the component's admission slots (or says why not), counting the wait
    /// in its `nimbus_admission_wait_seconds`: every request, delivery and actor call admitted
    /// goes through here. Nothing is admitted while the app's budget has closed its gate.
    pub async fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Rejected> {
        if let Some(why) = self.telemetry.usage.throttled() {
            return Err(Rejected::Throttled(why));
        }
        let (permit, waited) = self.admission.admit().await?;
        self.telemetry.metrics.admitted(waited);
        Ok(permit)
    }

    /// Resolves once the app's budget has not closed its gate (checking every second).
    pub async fn until_open(&self) {
        while self.telemetry.usage.throttled().is_some() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Waits while the app's budget has closed its gate (checking every second), then admits
    /// like [`Target::admit`]: for work that can wait (event deliveries, workflow runs and
    /// steps) instead of failing an attempt.
    pub async fn admit_when_open(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Rejected> {
        self.until_open().await;
        let (permit, waited) = self.admission.admit().await?;
        self.telemetry.metrics.admitted(waited);
        Ok(permit)
    }
}

//! Store data of one component invocation (an HTTP request, an event or an actor call): WASI with
//! nothing from the host, the state of each capability the component was granted
//! ([`crate::capability`]), the actor state of an actor invocation, and the memory limiter.
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::FunctionSettings;
use crate::capability::{Instances, PrepareContext, Registered};
use crate::logs::GuestLog;
use crate::outbound::OutboundHttp;
use crate::scope::Scope;
use crate::store::{InvocationState, MeteredLimits};

pub(crate) struct GuestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: MeteredLimits,
    caps: Instances,
    pub(crate) actor: crate::actor::ActorCtx,
    pub(crate) workflow: crate::workflow::WorkflowCtx,
    _lease: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl GuestState {
    /// The state of one invocation, reporting to `scope`.
    pub(crate) fn new(
        settings: &FunctionSettings,
        scope: &Arc<Scope>,
        lease: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Self {
        let mut wasi = settings.wasi(scope);
        wasi.stdout(GuestLog::new(scope.clone(), "stdout"));
        Self {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: settings.limits.store_limits(scope.telemetry.clone()),
            caps: settings.caps.prepare(&PrepareContext { scope, app: settings.app.get() }),
            actor: crate::actor::ActorCtx::default(),
            workflow: crate::workflow::WorkflowCtx::default(),
            _lease: lease,
        }
    }

    /// The state of capability `C` in this instance, and the resource table.
    pub(crate) fn capability<C: Registered>(&mut self) -> (&mut C::Instance, &mut ResourceTable) {
        (granted::<C>(&mut self.caps), &mut self.table)
    }
}

/// The state of `C` in `caps`.
///
/// # Panics
///
/// If `C` was not granted. A capability's host functions are linked only when it was granted,
/// and then it is prepared for every instance, so they never get here without it.
fn granted<C: Registered>(caps: &mut Instances) -> &mut C::Instance {
    C::instance(caps).expect("a capability's host functions are linked only when it is granted")
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl InvocationState for GuestState {
    fn store_limits(&mut self) -> &mut MeteredLimits {
        &mut self.limits
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        // Every component is configured for outbound HTTP (its grants gate each request).
        let hooks = granted::<OutboundHttp>(&mut self.caps);
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks }
    }
}

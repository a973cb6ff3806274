//! Store data of one component invocation (an HTTP request or an event): WASI with nothing from
//! the host, `wasi:http` behind the outbound grants, `nimbus:events/publisher` behind the publish
//! grants, `wasi:keyvalue` behind the kv grants, and the memory limiter.
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::FunctionSettings;
use crate::logs::GuestLog;
use crate::outbound::OutboundPolicy;
use crate::publish::PublishCtx;
use crate::scope::Scope;
use crate::store::{InvocationState, MeteredLimits};

pub(crate) struct GuestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: MeteredLimits,
    hooks: OutboundPolicy,
    pub(crate) publish: PublishCtx,
    kv: crate::kv::KvCtx,
    pub(crate) actor: crate::actor::ActorCtx,
    pub(crate) actor_client: crate::actor::ClientCtx,
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
            hooks: OutboundPolicy { grants: settings.grants.clone(), scope: scope.clone() },
            publish: PublishCtx::new(settings, scope.clone()),
            kv: crate::kv::KvCtx::new(settings, scope.clone()),
            actor_client: crate::actor::ClientCtx::new(settings, scope.clone()),
            actor: crate::actor::ActorCtx::default(),
            _lease: lease,
        }
    }
}

impl GuestState {
    /// The key-value capability and the resource table its buckets live in.
    pub(crate) fn kv_parts(&mut self) -> (&crate::kv::KvCtx, &mut ResourceTable) {
        (&self.kv, &mut self.table)
    }
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
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

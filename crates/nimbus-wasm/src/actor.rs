//! Actors, both sides:
//!
//! * the `nimbus:actor` executor: one invocation of an actor in a fresh instance, with the
//!   actor's state handed in and, when the handler returns `ok` after writing, handed back to be
//!   committed. `nimbus:actor/state` is linked only into components that export
//!   `nimbus:actor/handler`;
//! * the actor-client capability ([`ActorClient`]): `nimbus:actor/client`, linked only into
//!   components with `grants.actors`, calling only the actor types listed there. The actor host
//!   that runs those calls needs the loaded functions first, so it cannot be a backend given at
//!   load: it is bound afterwards with [`crate::Function::bind_actors`] into the capability's
//!   per-component state (a `OnceLock` the instances read when prepared). That late binding is
//!   what keeps this crate below the host: the host implements [`ActorInvoker`], defined here.
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use nimbus_manifest::Component;
use nimbus_observe::SpanKind;
use wasmtime::component::{HasData, Linker};

use crate::capability::{Capability, PrepareContext, Registered};
use crate::error::LinkError;
use crate::scope::{Run, Scope};

use crate::guest::GuestState;
use crate::{FunctionSettings, Invocation, InvokeError};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/nimbus-actor",
        world: "actor",
        imports: { default: async },
        exports: { default: async },
    });
}

pub(crate) use bindings::ActorPre;
use bindings::nimbus::actor::state;

mod client_bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/nimbus-actor",
        world: "actor-client",
        imports: { default: async },
    });
}

use client_bindings::nimbus::actor::client;

/// Runs actor invocations for functions that call actors (`nimbus:actor/client`): the actor host
/// of `nimbus-actors`, bound to a function after both exist.
pub trait ActorInvoker: Send + Sync {
    /// Invokes `method` on `actor_type`/`key`; the answer comes once the actor's state is durable.
    fn call(
        &self,
        actor_type: &str,
        key: &str,
        method: &str,
        input: Vec<u8>,
        request_id: &str,
        parent: nimbus_observe::SpanRef,
    ) -> futures::future::BoxFuture<'static, Result<Vec<u8>, String>>;
}

/// The actor-client capability ([`Capability`]).
pub(crate) struct ActorClient;

/// The actor types one component may call, and the actor host once bound.
pub(crate) struct ClientGrants {
    grants: Box<[String]>,
    /// Set once the app's actor host exists (it needs the loaded functions first).
    invoker: OnceLock<Arc<dyn ActorInvoker>>,
}

impl Capability for ActorClient {
    const GRANT: &'static str = "actors";
    const EXAMPLE: &'static str = r#"["ACTOR_TYPE"]"#;
    const INTERFACES: &'static [&'static str] = &["nimbus:actor/client"];
    type Backend = ();
    type App = Arc<ClientGrants>;
    type Instance = ClientCtx;

    fn configure((): &(), component: &Component) -> Result<Option<Self::App>, LinkError> {
        let grants = &component.grants.actors;
        Ok((!grants.is_empty())
            .then(|| Arc::new(ClientGrants { grants: grants.iter().cloned().collect(), invoker: OnceLock::new() })))
    }

    fn link(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
        client::add_to_linker::<_, HasClient>(linker, |s| s.capability::<ActorClient>().0)
    }

    fn prepare(app: &Self::App, ctx: &PrepareContext<'_>) -> ClientCtx {
        ClientCtx { client: app.clone(), scope: ctx.scope.clone() }
    }
}

impl ClientGrants {
    /// Calls `actor_type` if granted and bound (a guest's `call`, or a workflow's).
    pub(crate) fn call(
        &self,
        actor_type: &str,
        key: &str,
        method: &str,
        input: Vec<u8>,
        request_id: &str,
        parent: nimbus_observe::SpanRef,
    ) -> futures::future::BoxFuture<'static, Result<Vec<u8>, String>> {
        let refused = |why: String| -> futures::future::BoxFuture<'static, _> { Box::pin(async move { Err(why) }) };
        if !self.grants.iter().any(|g| g == actor_type) {
            return refused(format!("actor type `{actor_type}` is not in grants.actors"));
        }
        match self.invoker.get() {
            Some(invoker) => invoker.call(actor_type, key, method, input, request_id, parent),
            None => refused("this app serves no actors".into()),
        }
    }
}

impl crate::Function {
    /// Lets this function call actors (`grants.actors`) through `invoker`; the first binding
    /// wins. Without `grants.actors` it calls none, and this does nothing.
    pub fn bind_actors(&self, invoker: Arc<dyn ActorInvoker>) {
        if let Some(client) = ActorClient::app(&self.settings.caps) {
            let _ = client.invoker.set(invoker);
        }
    }
}

/// The actor-calling capability of one invocation.
pub(crate) struct ClientCtx {
    client: Arc<ClientGrants>,
    scope: Arc<Scope>,
}

impl client::Host for ClientCtx {
    async fn call(
        &mut self,
        actor_type: String,
        key: String,
        method: String,
        input: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let mut span = self.scope.span("invoke", SpanKind::Client);
        span.rename(format!("{actor_type}/{method}"));
        span.set("rpc.system", "nimbus_actor");
        span.set_with("rpc.service", || actor_type.clone());
        span.set_with("rpc.method", || method.clone());
        span.set_with("nimbus.actor.key", || key.clone());
        let result = self.client.call(&actor_type, &key, &method, input, &self.scope.request_id, span.handle()).await;
        if let Err(e) = &result {
            span.set_error("actor_call", e);
        }
        result
    }
}

struct HasClient;

impl HasData for HasClient {
    type Data<'a> = &'a mut ClientCtx;
}

/// The state of one actor: named values.
pub type ActorState = BTreeMap<String, Vec<u8>>;

/// What an actor invocation produced.
#[derive(Debug)]
pub struct ActorOutcome {
    /// The handler's answer, or the error it returned.
    pub result: Result<Vec<u8>, String>,
    /// The new state to commit, if the handler returned `ok` and wrote something.
    pub state: Option<ActorState>,
}

/// The state of the invocation running in a store.
#[derive(Default)]
pub(crate) struct ActorCtx {
    state: ActorState,
    dirty: bool,
}

impl state::Host for ActorCtx {
    async fn get(&mut self, name: String) -> Option<Vec<u8>> {
        self.state.get(&name).cloned()
    }

    async fn set(&mut self, name: String, value: Vec<u8>) {
        self.state.insert(name, value);
        self.dirty = true;
    }

    async fn delete(&mut self, name: String) {
        self.dirty |= self.state.remove(&name).is_some();
    }
}

struct HasActor;

impl HasData for HasActor {
    type Data<'a> = &'a mut ActorCtx;
}

/// Links `nimbus:actor/state`.
pub(crate) fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    state::add_to_linker::<_, HasActor>(linker, |s| &mut s.actor)
}

/// Whether a compiled component exports `nimbus:actor/handler`.
pub(crate) fn is_actor(component: &wasmtime::component::Component, engine: &wasmtime::Engine) -> bool {
    component.component_type().exports(engine).any(|(name, _)| name.starts_with("nimbus:actor/handler@"))
}

pub(crate) async fn invoke(
    pre: &ActorPre<GuestState>,
    settings: &FunctionSettings,
    key: &str,
    method: &str,
    input: &[u8],
    state: ActorState,
    mut inv: Invocation,
) -> Result<ActorOutcome, InvokeError> {
    let limits = settings.limits;
    let mut run = Run::start(settings, &mut inv, || None);
    let mut guest = GuestState::new(settings, &run.scope, inv.lease);
    guest.actor = ActorCtx { state, dirty: false };
    let (mut store, deadline) = limits.new_store(pre.engine(), guest);
    let scope = run.scope.clone();
    let call = async {
        let instance = run.instantiate(settings, pre.instantiate_async(&mut store)).await?;
        instance
            .nimbus_actor_handler()
            .call_invoke(&mut store, key, method, input)
            .await
            .map_err(|e| InvokeError::from_wasmtime(&e, limits.timeout))
    };
    let result =
        match nimbus_observe::Busy::new(tokio::time::timeout_at(deadline.into(), call), &scope.telemetry.usage).await {
            Err(_) => Err(InvokeError::Timeout(limits.timeout)),
            Ok(r) => r,
        };
    run.finish(result.as_ref().err().map(|e| e as _));
    let result = result?;
    let ctx = std::mem::take(&mut store.data_mut().actor);
    let state = (result.is_ok() && ctx.dirty).then_some(ctx.state);
    Ok(ActorOutcome { result, state })
}

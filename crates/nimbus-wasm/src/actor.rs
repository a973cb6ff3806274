//! The `nimbus:actor` executor: one invocation of an actor in a fresh instance, with the actor's
//! state handed in and, when the handler returns `ok` after writing, handed back to be committed.
//! `nimbus:actor/state` is linked only into components that export `nimbus:actor/handler`.
use std::collections::BTreeMap;

use wasmtime::component::HasData;

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
pub(crate) fn add_to_linker(linker: &mut wasmtime::component::Linker<GuestState>) -> wasmtime::Result<()> {
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
    inv: Invocation,
) -> Result<ActorOutcome, InvokeError> {
    let limits = settings.limits;
    let mut guest = GuestState::new(settings, inv.request_id, inv.lease, None);
    guest.actor = ActorCtx { state, dirty: false };
    let (mut store, deadline) = limits.new_store(pre.engine(), guest);
    let call = async {
        let instance =
            pre.instantiate_async(&mut store).await.map_err(|e| InvokeError::Instantiate(format!("{e:#}")))?;
        instance
            .nimbus_actor_handler()
            .call_invoke(&mut store, key, method, input)
            .await
            .map_err(|e| InvokeError::from_wasmtime(&e, limits.timeout))
    };
    let result = match tokio::time::timeout_at(deadline.into(), call).await {
        Err(_) => return Err(InvokeError::Timeout(limits.timeout)),
        Ok(r) => r?,
    };
    let ctx = std::mem::take(&mut store.data_mut().actor);
    let state = (result.is_ok() && ctx.dirty).then_some(ctx.state);
    Ok(ActorOutcome { result, state })
}

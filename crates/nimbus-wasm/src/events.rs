//! The `nimbus:events/handler` executor: one event per fresh instance, with the function's
//! memory limit and timeout.
use crate::guest::GuestState;
use crate::scope::{ErrorClass, Run};
use crate::{FunctionSettings, Invocation, InvokeError};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/nimbus-events",
        world: "event-handler",
        imports: { default: async },
        exports: { default: async },
    });
}

pub(crate) use bindings::EventHandlerPre;
use bindings::nimbus::events::types;

/// Why a function did not handle an event.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The function said retrying cannot help.
    #[error("rejected by the function: {0}")]
    Rejected(String),
    /// The function said it failed and may succeed later.
    #[error("failed in the function: {0}")]
    Failed(String),
    /// The instance trapped, timed out or could not start.
    #[error(transparent)]
    Invoke(#[from] InvokeError),
}

pub(crate) async fn handle(
    pre: &EventHandlerPre<GuestState>,
    settings: &FunctionSettings,
    event: &nimbus_bus::Event,
    mut inv: Invocation,
) -> Result<(), EventError> {
    let limits = settings.limits;
    let remote = || nimbus_bus::event::trace_context(event);
    let mut run = Run::start(settings, &mut inv, remote);
    let state = GuestState::new(settings, &run.scope, inv.lease);
    let (mut store, deadline) = limits.new_store(pre.engine(), state);
    let record = crate::publish::to_guest(event);
    let scope = run.scope.clone();
    let call = async {
        let instance = run.instantiate(settings, pre.instantiate_async(&mut store)).await?;
        instance
            .nimbus_events_handler()
            .call_handle(&mut store, &record)
            .await
            .map_err(|e| InvokeError::from_wasmtime(&e, limits.timeout))
    };
    let result =
        match nimbus_observe::Busy::new(tokio::time::timeout_at(deadline.into(), call), &scope.telemetry.usage).await {
            Err(_) => Err(InvokeError::Timeout(limits.timeout).into()),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(types::Error::Rejected(m)))) => Err(EventError::Rejected(m)),
            Ok(Ok(Err(types::Error::Failed(m)))) => Err(EventError::Failed(m)),
        };
    drop(store);
    run.finish(result.as_ref().err().map(|e| e as _));
    result
}

impl ErrorClass for EventError {
    fn class(&self) -> &'static str {
        match self {
            Self::Rejected(_) => "rejected",
            Self::Failed(_) => "failed",
            Self::Invoke(e) => e.class(),
        }
    }
}

//! `[[trigger.workflow]]` with a `topic` or a `schedule`: each event (or cron tick) starts a run
//! of the workflow, its data the run's input and its id the idempotency key, so an event the bus
//! delivers twice (a crash between starting the run and acknowledging it) starts one run.
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use nimbus_bus::dispatch::{DeliveryError, Destination};
use nimbus_bus::{AttributesReader, Event};

/// Starts runs of an app's workflows: its workflow engine, which the app host binds (this crate
/// sits below it).
pub trait WorkflowStarter: Send + Sync + std::fmt::Debug {
    /// Starts a run of `workflow` with `input`, unless `idempotency_key` started one already
    /// (which is fine too); the error says whether another delivery may succeed.
    fn start(
        &self,
        workflow: &str,
        input: Vec<u8>,
        idempotency_key: String,
    ) -> BoxFuture<'_, Result<(), DeliveryError>>;
}

/// Delivers events by starting runs of one workflow.
#[derive(Debug)]
pub(crate) struct WorkflowDestination {
    pub(crate) starter: Arc<dyn WorkflowStarter>,
    pub(crate) workflow: String,
    /// A cron tick: its input is its time (the event's id).
    pub(crate) tick: bool,
}

#[async_trait]
impl Destination for WorkflowDestination {
    fn name(&self) -> String {
        format!("workflow:{}", self.workflow)
    }

    async fn deliver(&self, event: &Event) -> Result<(), DeliveryError> {
        let input = if self.tick { event.id().as_bytes().to_vec() } else { nimbus_bus::event::data_bytes(event) };
        self.starter.start(&self.workflow, input, format!("event:{}", event.id())).await
    }
}

//! The workflows' topics and schedules start runs through the revision's workflow engine: the
//! triggers' [`WorkflowStarter`] on the gateway's [`WorkflowCalls`].
use std::sync::Arc;

use futures::future::BoxFuture;
use nimbus_bus::dispatch::DeliveryError;
use nimbus_gateway::{WorkflowCalls, WorkflowOp};
use nimbus_triggers::WorkflowStarter;

/// Starts runs on one revision's workflows.
#[derive(Debug)]
pub(crate) struct Starter(pub(crate) Arc<dyn WorkflowCalls>);

impl WorkflowStarter for Starter {
    fn start(&self, workflow: &str, input: Vec<u8>, key: String) -> BoxFuture<'_, Result<(), DeliveryError>> {
        let workflow = workflow.to_string();
        Box::pin(async move {
            let op = WorkflowOp::Start { input, idempotency_key: Some(key) };
            let (status, answer) = self.0.call(&workflow, op, &Default::default()).await;
            let why = || answer["error"].as_str().unwrap_or_default().to_string();
            match status.as_u16() {
                200..=299 => Ok(()),
                code @ 400..=499 => Err(DeliveryError::permanent(format!("http-{code}"), why())),
                code => Err(DeliveryError::retryable(format!("http-{code}"), why())),
            }
        })
    }
}

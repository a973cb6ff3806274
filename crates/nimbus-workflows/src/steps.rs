//! Running one step (or compensation) of a run: fresh instances of the workflow's component,
//! admitted like requests, retried by the step's policy, each attempt a span.
use std::sync::Arc;

use nimbus_gateway::Target;
use nimbus_observe::{SpanKind, SpanRef, Telemetry};
use nimbus_wasm::{Function, Invocation, StepFailure, StepInfo, StepOptions};

/// How long a step waits for an instance when the node has none free.
const CAPACITY_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// A workflow of a loaded revision: its component.
#[derive(Clone, Debug)]
pub(crate) struct Def {
    pub(crate) function: Function,
    pub(crate) target: Arc<Target>,
    /// How long its finished runs are kept.
    pub(crate) retention: std::time::Duration,
}

/// Runs step `name` until it succeeds, fails for good or runs out of attempts; the outcome and
/// how many attempts it took.
pub(crate) async fn run_step(
    def: &Def,
    run_id: &str,
    name: &str,
    input: &[u8],
    options: &StepOptions,
    idempotency_key: &str,
    parent: &SpanRef,
) -> (Result<Vec<u8>, StepFailure>, u32) {
    let mut attempt = 1;
    loop {
        let mut span = parent.child(format!("step {name}"), SpanKind::Internal);
        span.set_with("nimbus.workflow.run", || run_id.to_string());
        span.set_with("nimbus.workflow.step", || name.to_string());
        span.set("nimbus.workflow.attempt", i64::from(attempt));
        // Over its budget's hard limit, the app's steps wait rather than fail.
        let failure = match def.target.admit_when_open().await {
            Err(_) => StepFailure::retryable("the workflow's component is at capacity"),
            Ok(permit) => {
                let mut inv = Invocation::new(idempotency_key, "workflow");
                inv.lease = Some(permit);
                inv.telemetry = Some(Telemetry { component: def.target.telemetry.clone(), parent: span.handle() });
                let info = StepInfo { run_id: run_id.into(), idempotency_key: idempotency_key.into(), attempt };
                match def.function.run_step(name, input, &info, options.timeout, inv).await {
                    Ok(Ok(output)) => return (Ok(output), attempt),
                    Ok(Err(failure)) => failure,
                    // No instance free on the node: not the step's failure, so not an attempt.
                    Err(e) if e.is_capacity() => {
                        span.set_error("capacity", nimbus_observe::report(&e));
                        tokio::time::sleep(CAPACITY_WAIT).await;
                        continue;
                    }
                    Err(e) => StepFailure::retryable(nimbus_observe::report(&e)),
                }
            }
        };
        span.set_error("step", &failure.message);
        if !failure.retryable || attempt >= options.retry.max_attempts {
            return (Err(failure), attempt);
        }
        tokio::time::sleep(options.retry.backoff(attempt)).await;
        attempt += 1;
    }
}

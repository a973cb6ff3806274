//! `{{name}}`: a durable workflow — an order saga. `run` reserves stock, charges the customer and
//! ships, each a journaled step; if a step fails for good, the steps already done are undone
//! newest first (refund, then release). A crash, a restart or a redeploy resumes the run where
//! its journal ends; no step that completed runs again.
//!
//! `run` must be deterministic: it only orchestrates, and every effect, clock or random value
//! comes through `context`. The steps do the work (here they only describe it; give them grants
//! and call your services, passing `info.idempotency_key` so a retried step applies once).
wit_bindgen::generate!({
    path: "wit",
    world: "nimbus:workflow/workflow",
    generate_all,
});

use exports::nimbus::workflow::handler::Guest;
use nimbus::workflow::context;
use nimbus::workflow::types::{RetryPolicy, StepError, StepInfo, StepOptions};

struct Order;

/// Retried 3 times with backoff; `undo` runs with this step's output if the order fails later.
fn options(undo: Option<&str>) -> StepOptions {
    StepOptions {
        retry: Some(RetryPolicy { max_attempts: 3, initial_backoff_ms: 200, max_backoff_ms: 5_000, backoff_multiplier: 2.0 }),
        timeout_ms: Some(10_000),
        compensate: undo.map(str::to_string),
    }
}

impl Guest for Order {
    fn run(input: Vec<u8>) -> Result<Vec<u8>, String> {
        let order = String::from_utf8(input).map_err(|_| "the order id is not UTF-8".to_string())?;
        let mut receipts = Vec::new();
        for (step, undo) in [("reserve", Some("release")), ("charge", Some("refund")), ("ship", None)] {
            match context::step(step, order.as_bytes(), &options(undo)) {
                Ok(receipt) => receipts.push(String::from_utf8_lossy(&receipt).into_owned()),
                // Returning an error fails the run: the host runs the registered undo steps.
                Err(e) => return Err(format!("order {order}: {step} failed: {}", e.message)),
            }
        }
        Ok(format!("order {order} done: {}", receipts.join(", ")).into_bytes())
    }

    fn step(name: String, input: Vec<u8>, info: StepInfo) -> Result<Vec<u8>, StepError> {
        let order = String::from_utf8_lossy(&input);
        // An order id containing `fail-STEP` makes that step fail, to watch the saga undo itself.
        if order.contains(&format!("fail-{name}")) {
            return Err(StepError { message: format!("{name} declined"), retryable: false });
        }
        let receipt = match name.as_str() {
            "reserve" => format!("reserved stock for {order}"),
            "charge" => format!("charged {order}"),
            "ship" => format!("shipped {order}"),
            "release" => format!("released stock of {order}"),
            "refund" => format!("refunded {order}"),
            other => return Err(StepError { message: format!("no step `{other}`"), retryable: false }),
        };
        eprintln!("{receipt} (attempt {}, key {})", info.attempt, info.idempotency_key);
        Ok(receipt.into_bytes())
    }
}

export!(Order);

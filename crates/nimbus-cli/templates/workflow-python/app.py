"""`{{name}}`: a durable workflow — an order saga. `run` reserves stock, charges the customer and
ships, each a journaled step; if a step fails for good, the steps already done are undone newest
first (refund, then release). A crash, a restart or a redeploy resumes the run where its journal
ends; no step that completed runs again.

`run` must be deterministic: it only orchestrates, and every effect, clock or random value comes
through `context`. The steps do the work (here they only describe it; give the component grants
and call your services, passing `info.idempotency_key` so a retried step applies once).
"""
import sys

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import context
from wit_world.imports.types import RetryPolicy, StepError, StepInfo, StepOptions

RECEIPTS = {
    "reserve": "reserved stock for {}",
    "charge": "charged {}",
    "ship": "shipped {}",
    "release": "released stock of {}",
    "refund": "refunded {}",
}


def options(undo):
    """Retried 3 times with backoff; `undo` runs with this step's output if the order fails later."""
    retry = RetryPolicy(max_attempts=3, initial_backoff_ms=200, max_backoff_ms=5000, backoff_multiplier=2.0)
    return StepOptions(retry=retry, timeout_ms=10000, compensate=undo)


class Handler(exports.Handler):
    def run(self, input: bytes) -> bytes:
        order = input.decode()
        receipts = []
        for step, undo in [("reserve", "release"), ("charge", "refund"), ("ship", None)]:
            try:
                receipts.append(context.step(step, input, options(undo)).decode())
            except Err as e:
                # Raising fails the run: the host runs the registered undo steps.
                raise Err(f"order {order}: {step} failed: {e.value.message}")
        return f"order {order} done: {', '.join(receipts)}".encode()

    def step(self, name: str, input: bytes, info: StepInfo) -> bytes:
        order = input.decode()
        # An order id containing `fail-STEP` makes that step fail, to watch the saga undo itself.
        if f"fail-{name}" in order:
            raise Err(StepError(message=f"{name} declined", retryable=False))
        if name not in RECEIPTS:
            raise Err(StepError(message=f"no step `{name}`", retryable=False))
        receipt = RECEIPTS[name].format(order)
        print(f"{receipt} (attempt {info.attempt}, key {info.idempotency_key})", file=sys.stderr)
        return receipt.encode()

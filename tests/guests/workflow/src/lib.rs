//! An order saga (`nimbus:workflow`): `run` reserves, charges and ships — three steps, each
//! registering its undo (`release`, `refund`) — with behaviour switched by flags in the input
//! `ID;FLAG;FLAG...`:
//!
//! * `sleep=MS`: a durable sleep before `charge`; `signal` (with `signal-timeout=MS`): waits for
//!   signal `approve` before `ship` and fails the run without it; `now`: output carries
//!   `now()`/`random()`; `kvswitch`: the first step is `reserve-v2` when KV `effects/variant` is
//!   `2` (reading KV in `run` is the non-determinism a replay must catch); `call=TARGET`: output
//!   carries what `context::call(TARGET, "ping")` answered;
//! * `pure`: the steps write no effects (to measure the engine alone);
//! * `fail-STEP` (not retryable), `flaky-STEP` (fails attempts 1 and 2), `trap-STEP`,
//!   `loop-STEP`, `big-STEP` (a 600 KiB output) change a step.
//!
//! Every step's effect is keyed by its idempotency key in bucket `effects`: `effect/KEY` = the
//! step (set, so applied once per key), `runs/KEY` counts executions; undo steps write `undo/KEY`
//! and count `undo-runs/KEY`.
wit_bindgen::generate!({
    path: ["../../../wit/nimbus-workflow", "../../../wit/deps/keyvalue", "wit"],
    world: "test:workflow/order",
    generate_all,
});

use exports::nimbus::workflow::handler::Guest;
use nimbus::workflow::context;
use nimbus::workflow::types::{RetryPolicy, StepError, StepInfo, StepOptions};
use wasi::keyvalue::{atomics, store};

struct Order;

fn flag<'a>(flags: &'a [&'a str], name: &str) -> Option<&'a str> {
    flags.iter().find_map(|f| if *f == name { Some("") } else { f.strip_prefix(name)?.strip_prefix('=') })
}

fn effects() -> store::Bucket {
    store::open("effects").expect("bucket effects is granted")
}

impl Guest for Order {
    fn run(input: Vec<u8>) -> Result<Vec<u8>, String> {
        let input = String::from_utf8(input).map_err(|_| "input is not UTF-8".to_string())?;
        let flags: Vec<&str> = input.split(';').collect();
        let id = flags[0];
        let mut out = format!("done {id}");
        if flag(&flags, "now").is_some() {
            out += &format!(" now={} random={}", context::now(), context::random());
        }
        if let Some(target) = flag(&flags, "call") {
            match context::call(target, b"ping") {
                Ok(answer) => out += &format!(" called={}", String::from_utf8_lossy(&answer).trim()),
                Err(e) => out += &format!(" call-error={e}"),
            }
        }
        let first = match flag(&flags, "kvswitch") {
            Some(_) if effects().get("variant").ok().flatten().as_deref() == Some(b"2") => "reserve-v2",
            _ => "reserve",
        };
        for (step, undo) in [(first, Some("release")), ("charge", Some("refund")), ("ship", None)] {
            if step == "charge" && let Some(ms) = flag(&flags, "sleep") {
                context::sleep(ms.parse().unwrap_or(0));
            }
            if step == "ship" && flag(&flags, "signal").is_some() {
                let timeout = flag(&flags, "signal-timeout").and_then(|t| t.parse().ok());
                match context::await_signal("approve", timeout) {
                    Some(p) => out += &format!(" approved={}", String::from_utf8_lossy(&p)),
                    None => return Err("not approved in time".into()),
                }
            }
            let options = StepOptions {
                retry: Some(RetryPolicy {
                    max_attempts: 3,
                    initial_backoff_ms: 10,
                    max_backoff_ms: 100,
                    backoff_multiplier: 2.0,
                }),
                timeout_ms: None,
                compensate: undo.map(str::to_string),
            };
            if let Err(e) = context::step(step, input.as_bytes(), &options) {
                return Err(format!("{step} failed: {}", e.message));
            }
        }
        Ok(out.into_bytes())
    }

    fn step(name: String, input: Vec<u8>, info: StepInfo) -> Result<Vec<u8>, StepError> {
        let input = String::from_utf8_lossy(&input).into_owned();
        let flags: Vec<&str> = input.split(';').collect();
        let kv = effects();
        let key = info.idempotency_key;
        if matches!(name.as_str(), "release" | "refund") {
            kv.set(&format!("undo/{key}"), name.as_bytes()).map_err(|e| retry(format!("{e:?}")))?;
            atomics::increment(&kv, &format!("undo-runs/{key}"), 1).map_err(|e| retry(format!("{e:?}")))?;
            return Ok(format!("{name}:{}", flags[0]).into_bytes());
        }
        if flag(&flags, "pure").is_some() {
            return Ok(format!("{name}:{}", flags[0]).into_bytes());
        }
        atomics::increment(&kv, &format!("runs/{key}"), 1).map_err(|e| retry(format!("{e:?}")))?;
        let has = |what: &str| flag(&flags, &format!("{what}-{name}")).is_some();
        if has("fail") {
            return Err(StepError { message: format!("{name} refused"), retryable: false });
        }
        if has("flaky") && info.attempt < 3 {
            return Err(retry(format!("{name} flaked on attempt {}", info.attempt)));
        }
        if has("trap") {
            panic!("{name} trapped");
        }
        if has("loop") {
            #[allow(clippy::empty_loop)]
            loop {}
        }
        kv.set(&format!("effect/{key}"), name.as_bytes()).map_err(|e| retry(format!("{e:?}")))?;
        if has("big") {
            return Ok(vec![b'x'; 600 * 1024]);
        }
        Ok(format!("{name}:{}", flags[0]).into_bytes())
    }
}

fn retry(message: String) -> StepError {
    StepError { message, retryable: true }
}

export!(Order);

//! Durable workflows: the engine that runs `nimbus:workflow` components (`[[trigger.workflow]]`)
//! so that a run survives crashes, restarts and redeploys, sleeps for days without holding an
//! instance, waits for signals, retries steps and undoes them (sagas).
//!
//! **Replay.** A run's every effect goes through `nimbus:workflow/context` and is journaled
//! ([`nimbus_state::journal`], on the node's KV store: embedded redb or NATS JetStream KV) before
//! `run` goes on. To resume a run — after `kill -9`, a restart, a timer firing or a signal
//! arriving — the engine calls `run` again in a fresh instance; each context call at a position
//! already journaled answers from the journal (a step is not run again), and the first call past
//! the journal's end does the work and journals it. A call that does not match the journaled
//! one at its position (another kind or name: the code changed) fails the run with
//! "non-deterministic replay at step N: expected X, got Y" instead of corrupting it.
//!
//! **Steps** run in fresh instances of their own (the component's `handler.step` export) with
//! the component's grants, admitted like requests, retried per their policy; each gets an
//! idempotency key that is the same on every attempt of its journal position. **Timers** longer
//! than a second suspend the run (status `waiting`, its wake-up time stored); the engine keeps
//! only a wake-up time in memory and re-reads it from the journal at start. **Compensations**
//! registered by successful steps run newest first when a run fails or is cancelled, each
//! journaled once. **Owners**: in a cluster each run is driven by one node ([`RunOwners`]), and a
//! lost node's runs resume on the others. **Pinning**: a run replays only on the revision that started it; an engine is
//! shared by an app's revisions and drives each run on its own revision's code.
//!
//! It does not parse HTTP (the gateway does, through [`nimbus_gateway::WorkflowCalls`], which
//! [`WorkflowHost`] implements), compile wasm (`nimbus-wasm`) or store bytes itself
//! (`nimbus-state`).
//!
//! ```no_run
//! # async fn demo(manifest: nimbus_manifest::Manifest, gateway: nimbus_gateway::Gateway,
//! #     kv: std::sync::Arc<dyn nimbus_state::KvStore>) {
//! use nimbus_workflows::{Engine, WorkflowHost};
//!
//! let engine = Engine::new(&manifest.app.name, kv, nimbus_observe::Tracer::disabled(), None).unwrap();
//! // Resumes this revision's unfinished runs; serves POST /workflows/NAME once given to the gateway.
//! if let Some(host) = WorkflowHost::new(&manifest, &gateway, "rev-1", engine.clone()) {
//!     let gateway = gateway.with_workflows(host);
//! }
//! # }
//! ```

mod activation;
mod api;
mod driver;
mod engine;
mod owners;
mod steps;

pub use engine::{Engine, Signalled, StartError, WorkflowHost};
pub use owners::RunOwners;

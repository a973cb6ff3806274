//! Actors (virtual objects): `POST /actors/TYPE/KEY/METHOD` (served by the gateway through
//! [`nimbus_gateway::ActorCalls`], which this crate implements) and calls from functions with
//! `grants.actors` run one invocation of the type's `nimbus:actor/handler` with the actor's state.
//!
//! One activation per key: the invocations of a key run one at a time (different keys in
//! parallel); the state the handler wrote is committed durably in the KV store (the app's
//! `actors` bucket, key `TYPE/KEY`, one value, so the commit is atomic on every backend)
//! **before** the answer is released; an error or a trap drops the writes. The next invocation
//! of a key may run while the previous one's commit is in flight (on its state); their answers
//! wait at the output gate, and one write commits every state queued meanwhile (the newest
//! contains the others). Each commit is a compare-and-swap on the stored revision the state
//! descends from, so when the store is shared (NATS, a cluster) and another node's activation of
//! the key committed first, this one's callers get [`ActorError::Fenced`] and nothing of their
//! calls is kept; with a shared store each call also checks the stored revision before it runs,
//! so it never works on a state another node has moved past. In a cluster each key has an owner
//! node ([`ActorOwners`]) its calls are forwarded to, so one activation serves a key. Idle actors are passivated (their state leaves memory) after the type's
//! `idle_timeout_s`; state survives restarts in the store. It does not parse HTTP (the gateway
//! does) or store anything itself (`nimbus-state`).
//!
//! ```no_run
//! # async fn demo(manifest: nimbus_manifest::Manifest, gateway: nimbus_gateway::Gateway,
//! #     kv: std::sync::Arc<dyn nimbus_state::KvStore>) {
//! use nimbus_actors::ActorHost;
//!
//! if let Some(actors) = ActorHost::new(&manifest, &gateway, "rev-1", kv, Default::default(), None) {
//!     let answer = actors.invoke("counter", "k", "incr", b"", "req-1", &Default::default()).await;
//!     let gateway = gateway.with_actors(actors); // now serves POST /actors/counter/KEY/METHOD
//! }
//! # }
//! ```

mod host;
mod owners;

pub use host::{ACTORS_BUCKET, Activations, ActorError, ActorHost, decode_state, encode_state};
pub use owners::{ActorOwners, RemoteCall, Unowned};

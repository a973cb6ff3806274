//! The actor host of one app revision: its actor types, the app's activations (one per key),
//! the output gate and commits, passivation, and calls from functions (`grants.actors`) and
//! from the gateway ([`nimbus_gateway::ActorCalls`]).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nimbus_gateway::{ActorCall, ActorCalls, Backend, CallFailure, Gateway, Target};
use nimbus_manifest::Manifest;
use nimbus_observe::{SpanKind, SpanRef, Telemetry};
use nimbus_state::{Bucket, KvError, KvStore, Swap};
use nimbus_wasm::{ActorState, Function, Invocation, InvokeError};

use crate::{ActorOwners, RemoteCall, Unowned};

/// The KV bucket (of each app) holding its actors' state; reserved: no grant may name it.
pub const ACTORS_BUCKET: &str = "actors";

struct ActorType {
    function: Function,
    target: Arc<Target>,
    idle: Duration,
}

struct Activation {
    /// The cached state (`None` until loaded); holding the lock is being the activation. It may
    /// be ahead of the store by commits in flight.
    state: tokio::sync::Mutex<Option<ActorState>>,
    last_used: Mutex<Instant>,
    /// States waiting to be committed, and the callers waiting for that.
    pending: Mutex<Pending>,
    /// A commit failed: the cached state may be ahead of the store; reload it.
    stale: std::sync::atomic::AtomicBool,
}

/// The output gate of one actor: the newest uncommitted state (earlier ones are contained in
/// it, so one write commits them all) and everyone whose answer depends on it.
///
/// Commits are fenced: each is a compare-and-swap on the store revision the activation's state
/// descends from, so when another activation of the key (on another node of a cluster)
/// committed in between, this one's commit is refused and its callers get
/// [`ActorError::Fenced`] — never a lost update. A reload of the state refuses what was still
/// waiting and starts a new `epoch`, so a commit in flight across it does not move the new
/// base's revision.
#[derive(Default)]
struct Pending {
    latest: Option<ActorState>,
    waiters: Vec<tokio::sync::oneshot::Sender<Result<(), Withheld>>>,
    committing: bool,
    /// The revision of the stored state the newest committed or loaded state is (`None`: absent).
    revision: Option<u64>,
    /// Increases with every load of the state from the store.
    epoch: u64,
}

impl Pending {
    /// Starts a new epoch on the state the store has at `revision`, refusing what the earlier
    /// epochs still wait for.
    fn reload(&mut self, revision: Option<u64>) {
        self.epoch += 1;
        self.revision = revision;
        self.latest = None;
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Err(Withheld::Fenced));
        }
    }
}

/// Why the output gate withheld an answer.
#[derive(Debug, Clone)]
enum Withheld {
    Store(KvError),
    Fenced,
}

impl From<Withheld> for ActorError {
    fn from(why: Withheld) -> Self {
        match why {
            Withheld::Store(e) => Self::Store(e),
            Withheld::Fenced => Self::Fenced,
        }
    }
}

/// Why an actor invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// No `[[trigger.actor]]` of that type.
    #[error("no actor type `{0}` in this app")]
    UnknownType(String),
    /// The key is empty or too long.
    #[error("invalid actor key: {0}")]
    InvalidKey(String),
    /// The handler returned an error; its writes were dropped.
    #[error("the actor returned an error: {0}")]
    App(String),
    /// The instance trapped, timed out or could not start; its writes were dropped.
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    /// The component is at capacity.
    #[error("the actor's component is at capacity; retry later")]
    Capacity,
    /// The app's budget reached its hard limit.
    #[error("budget_exhausted: {0}")]
    Throttled(std::sync::Arc<str>),
    /// The state could not be read or committed; the answer was withheld.
    #[error("the actor's state could not be read or committed")]
    Store(#[from] KvError),
    /// The node owning the key answered with an error (its HTTP status and message).
    #[error("the node owning the actor's key: {message} ({status})")]
    Remote {
        /// The status: 404, 422, 503, 504 or 500 as for a call on this node; 502 when the call
        /// was sent and no answer came back.
        status: u16,
        /// What it said.
        message: String,
    },
    /// Another activation of the key (another node's) committed first: this call's state was
    /// not committed and its answer was withheld; calling again runs it on the newest state.
    #[error("the actor's state changed elsewhere before this call's commit; nothing of the call was kept, retry it")]
    Fenced,
}

/// The live activations of one app's actors, shared by every revision of the app so that a key
/// has one activation even while traffic is split across revisions.
#[derive(Default)]
pub struct Activations(Mutex<HashMap<(String, String), Arc<Activation>>>);

impl std::fmt::Debug for Activations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Activations")
    }
}

/// The actor types of one app (revision) and the app's activations.
pub struct ActorHost {
    /// A weak handle to this host (for calls from functions, which must not keep it alive).
    this: std::sync::Weak<ActorHost>,
    kv: Arc<dyn KvStore>,
    bucket: Bucket,
    types: HashMap<String, ActorType>,
    activations: Arc<Activations>,
    app: String,
    revision: String,
    placement: nimbus_manifest::Placement,
    /// In a cluster, where each key's activation lives.
    owners: Option<Arc<dyn ActorOwners>>,
}

impl std::fmt::Debug for ActorHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorHost").field("types", &self.types.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl ActorCalls for ActorHost {
    fn target(&self, actor_type: &str) -> Option<Arc<Target>> {
        self.types.get(actor_type).map(|t| t.target.clone())
    }

    fn call<'a>(
        &'a self,
        call: ActorCall<'a>,
        parent: &'a SpanRef,
    ) -> futures::future::BoxFuture<'a, Result<Vec<u8>, CallFailure>> {
        Box::pin(async move { self.run(call, parent).await.map_err(failure) })
    }
}

/// How the gateway answers an actor error.
fn failure(e: ActorError) -> CallFailure {
    let message = nimbus_observe::report(&e);
    match e {
        ActorError::UnknownType(_) | ActorError::InvalidKey(_) => CallFailure::NotFound(message),
        ActorError::App(_) => CallFailure::Refused(message),
        ActorError::Invoke(e) if e.is_timeout() => CallFailure::TimedOut(message),
        ActorError::Invoke(e) if e.is_capacity() => CallFailure::Unavailable(message),
        ActorError::Capacity | ActorError::Store(_) | ActorError::Fenced => CallFailure::Unavailable(message),
        ActorError::Throttled(_) => CallFailure::Throttled(message),
        ActorError::Invoke(_) => CallFailure::Failed(message),
        ActorError::Remote { status, message } => match status {
            404 => CallFailure::NotFound(message),
            422 => CallFailure::Refused(message),
            429 => CallFailure::Throttled(message),
            503 => CallFailure::Unavailable(message),
            504 => CallFailure::TimedOut(message),
            _ => CallFailure::Failed(message),
        },
    }
}

impl nimbus_wasm::ActorInvoker for ActorHost {
    fn call(
        &self,
        actor_type: &str,
        key: &str,
        method: &str,
        input: Vec<u8>,
        request_id: &str,
        parent: SpanRef,
    ) -> futures::future::BoxFuture<'static, Result<Vec<u8>, String>> {
        // The host outlives every function bound to it only through this clone of its parts.
        let host = self.handle();
        let (ty, key, method, id) =
            (actor_type.to_string(), key.to_string(), method.to_string(), request_id.to_string());
        Box::pin(async move {
            let host = host.upgrade().ok_or("the app's actors are gone")?;
            host.invoke(&ty, &key, &method, &input, &id, &parent).await.map_err(|e| nimbus_observe::report(&e))
        })
    }
}

/// The first bytes of a versioned actor state; an unversioned one starts with a name length,
/// whose first byte is 0xFF only for a name over 4 GB.
const STATE_MAGIC: [u8; 2] = [0xFF, b'a'];
/// The newest actor state layout this build reads, and the one it writes.
const STATE_VERSION: u8 = 1;

/// Encodes a state as `0xFF 'a' | version u8 (1) | (u32 BE length, name, u32 BE length, value)*`.
pub fn encode_state(state: &ActorState) -> Vec<u8> {
    let mut out = STATE_MAGIC.to_vec();
    out.push(STATE_VERSION);
    for (name, value) in state {
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// Decodes what [`encode_state`] wrote, or a state written before the layout had a version (the
/// same without the first three bytes); refuses a newer version than [`encode_state`] writes.
pub fn decode_state(bytes: &[u8]) -> Result<ActorState, KvError> {
    let corrupt = || KvError::Corrupt("a stored actor state is corrupt".into());
    let mut bytes = match bytes.strip_prefix(&STATE_MAGIC) {
        None => bytes,
        Some([STATE_VERSION, rest @ ..]) => rest,
        Some([newer, ..]) => {
            return Err(KvError::Corrupt(format!(
                "a stored actor state has format version {newer}, newer than this Nimbus reads \
                 ({STATE_VERSION}); upgrade Nimbus to read it"
            )));
        }
        Some([]) => return Err(corrupt()),
    };
    let take = |bytes: &mut &[u8]| -> Result<Vec<u8>, KvError> {
        let len = u32::from_be_bytes(bytes.get(..4).ok_or_else(corrupt)?.try_into().expect("4 bytes")) as usize;
        let value = bytes.get(4..4 + len).ok_or_else(corrupt)?.to_vec();
        *bytes = &bytes[4 + len..];
        Ok(value)
    };
    let mut state = ActorState::new();
    while !bytes.is_empty() {
        let name = String::from_utf8(take(&mut bytes)?).map_err(|_| corrupt())?;
        let value = take(&mut bytes)?;
        state.insert(name, value);
    }
    Ok(state)
}

impl ActorHost {
    /// The actor types of revision `revision` of a validated manifest, served by `gateway`'s
    /// components, with every function that has `grants.actors` bound to it and idle actors
    /// passivated every second (needs a tokio runtime); in a cluster, each key's calls go to its
    /// owner (`owners`). `None` if the app has no actors. Every actor's component must be a
    /// loaded function.
    pub fn new(
        manifest: &Manifest,
        gateway: &Gateway,
        revision: &str,
        kv: Arc<dyn KvStore>,
        activations: Arc<Activations>,
        owners: Option<Arc<dyn ActorOwners>>,
    ) -> Option<Arc<Self>> {
        let types: HashMap<String, ActorType> = manifest
            .trigger
            .actor
            .iter()
            .filter_map(|t| {
                let target = gateway.target(&t.component)?;
                let Backend::Function(function) = &target.backend else { return None };
                Some((
                    t.actor_type.clone(),
                    ActorType { function: function.clone(), target, idle: Duration::from_secs(t.idle_timeout_s) },
                ))
            })
            .collect();
        if types.is_empty() {
            return None;
        }
        let host = Arc::new_cyclic(|this| Self {
            this: this.clone(),
            kv,
            bucket: Bucket::new(&manifest.app.name, ACTORS_BUCKET).expect("a validated app name"),
            types,
            activations,
            app: manifest.app.name.clone(),
            revision: revision.to_string(),
            placement: manifest.placement.clone(),
            owners,
        });
        for (name, c) in &manifest.component {
            if let (false, Some(target)) = (c.grants.actors.is_empty(), gateway.target(name))
                && let Backend::Function(f) = &target.backend
            {
                f.bind_actors(host.clone());
            }
        }
        host.start_passivation();
        Some(host)
    }

    fn handle(&self) -> std::sync::Weak<Self> {
        self.this.clone()
    }

    fn activation(&self, ty: &str, key: &str) -> Arc<Activation> {
        let mut all = self.activations.0.lock().expect("activations");
        all.entry((ty.to_string(), key.to_string()))
            .or_insert_with(|| {
                Arc::new(Activation {
                    state: tokio::sync::Mutex::new(None),
                    last_used: Mutex::new(Instant::now()),
                    pending: Mutex::default(),
                    stale: std::sync::atomic::AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// Runs `method` on the actor `ty`/`key` and answers once its state changes are durable, in
    /// a span (`actor cart/add`) under `parent`.
    /// In a cluster the call runs on the node owning the key (see [`ActorOwners`]).
    pub async fn invoke(
        &self,
        ty: &str,
        key: &str,
        method: &str,
        input: &[u8],
        request_id: &str,
        parent: &SpanRef,
    ) -> Result<Vec<u8>, ActorError> {
        self.run(ActorCall { actor_type: ty, key, method, input, request_id, here: false }, parent).await
    }

    async fn run(&self, call: ActorCall<'_>, parent: &SpanRef) -> Result<Vec<u8>, ActorError> {
        let ActorCall { actor_type: ty, key, method, input, request_id, here } = call;
        let actor = self.types.get(ty).ok_or_else(|| ActorError::UnknownType(ty.to_string()))?;
        let mut span = parent.child("actor", SpanKind::Internal);
        if span.is_recording() {
            span.rename(format!("actor {ty}/{method}"));
            span.set("nimbus.actor.type", ty.to_string());
            span.set("nimbus.actor.key", key.to_string());
            span.set("nimbus.actor.method", method.to_string());
            span.set("nimbus.component", actor.target.telemetry.component.to_string());
        }
        let started = Instant::now();
        let result: Result<Vec<u8>, ActorError> = async {
            if key.is_empty() || key.len() > 400 {
                return Err(ActorError::InvalidKey("keys are 1 to 400 bytes".into()));
            }
            if let Some(owners) = self.owners.as_ref().filter(|_| !here) {
                let call = RemoteCall {
                    revision: self.revision.clone(),
                    actor_type: ty.into(),
                    key: key.into(),
                    method: method.into(),
                    input: input.to_vec(),
                    request_id: request_id.into(),
                    traceparent: span.context().and_then(|c| c.header_value().to_str().ok().map(str::to_string)),
                };
                if let Some(sent) = owners.forward(&self.app, &self.placement, call) {
                    match sent.await {
                        Ok(output) => return Ok(output),
                        Err(Unowned::Failed(e)) => return Err(e),
                        Err(Unowned::Unreachable) => {
                            tracing::debug!(actor = %ty, key = %key, "the key's owner is unreachable; running the call here");
                        }
                    }
                }
            }
            let store_key = format!("{ty}/{key}");
            let activation = self.activation(ty, key);
            let (gate, result) = {
                let mut state = activation.state.lock().await; // one invocation per key at a time
                *activation.last_used.lock().expect("last used") = Instant::now();
                let stale = state.is_none() || activation.stale.swap(false, std::sync::atomic::Ordering::AcqRel);
                // On a store other nodes write too (NATS), another node may have committed
                // since: with nothing of ours in flight, check the stored revision first.
                let settled = || {
                    let pending = activation.pending.lock().expect("pending");
                    !pending.committing && pending.latest.is_none()
                };
                if stale || (self.kv.backend() != "embedded" && settled()) {
                    let stored = self.kv.get(&self.bucket, &store_key).await?;
                    let revision = stored.as_ref().map(|e| e.revision);
                    if stale || activation.pending.lock().expect("pending").revision != revision {
                        *state = Some(match stored {
                            Some(entry) => decode_state(&entry.value)?,
                            None => ActorState::new(),
                        });
                        activation.pending.lock().expect("pending").reload(revision);
                    }
                }
                let permit = actor.target.admit().await.map_err(|why| match why {
                    nimbus_gateway::Rejected::Throttled(why) => ActorError::Throttled(why),
                    _ => ActorError::Capacity,
                })?;
                let mut inv = Invocation::new(request_id, &format!("actor:{ty}"));
                inv.lease = Some(permit);
                inv.telemetry = Some(Telemetry { component: actor.target.telemetry.clone(), parent: span.handle() });
                let current = state.clone().unwrap_or_default();
                let outcome = actor.function.invoke_actor(key, method, input, current, inv).await?;
                if let Some(new) = &outcome.state {
                    *state = Some(new.clone());
                }
                // Queue behind the commits in flight while still the activation, so commits keep
                // the order of invocations; the next invocation may run meanwhile.
                (self.enqueue(&activation, &store_key, outcome.state), outcome.result)
            };
            if let Some(gate) = gate {
                // The output gate: the answer waits for the commit; a failed commit withholds it.
                gate.await.map_err(|_| KvError::Closed)??;
            }
            result.map_err(ActorError::App)
        }
        .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(ActorError::App(_)) => "error",
            Err(_) => "failed",
        };
        if let Err(e) = &result {
            span.set_error(outcome, e);
        }
        actor.target.telemetry.metrics.invocation("actor", outcome, started.elapsed());
        result
    }

    /// Registers an invocation with the actor's output gate: its new state, if any, becomes the
    /// one to commit next. Returns what to wait for, or `None` when nothing it saw is uncommitted.
    fn enqueue(
        &self,
        activation: &Arc<Activation>,
        store_key: &str,
        state: Option<ActorState>,
    ) -> Option<tokio::sync::oneshot::Receiver<Result<(), Withheld>>> {
        let mut pending = activation.pending.lock().expect("pending");
        if state.is_none() && !pending.committing && pending.latest.is_none() {
            return None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        pending.waiters.push(tx);
        if state.is_some() {
            pending.latest = state;
        }
        if !pending.committing {
            pending.committing = true;
            let (kv, bucket, key, activation) =
                (self.kv.clone(), self.bucket.clone(), store_key.to_string(), activation.clone());
            tokio::spawn(async move { commit_loop(&*kv, &bucket, &key, &activation).await });
        }
        Some(rx)
    }

    /// The committed state of an actor.
    pub async fn state(&self, ty: &str, key: &str) -> Result<Option<ActorState>, ActorError> {
        if !self.types.contains_key(ty) {
            return Err(ActorError::UnknownType(ty.to_string()));
        }
        match self.kv.get(&self.bucket, &format!("{ty}/{key}")).await? {
            Some(entry) => Ok(Some(decode_state(&entry.value)?)),
            None => Ok(None),
        }
    }

    /// Passivates actors idle longer than their type's timeout and not running; returns how many.
    /// (Types this revision does not serve are left to the revision that does.)
    pub fn passivate_idle(&self) -> usize {
        let mut all = self.activations.0.lock().expect("activations");
        let before = all.len();
        all.retain(|(ty, _), a| {
            let Some(idle) = self.types.get(ty).map(|t| t.idle) else { return true };
            let in_use = Arc::strong_count(a) > 1
                || a.state.try_lock().is_err()
                || a.pending.lock().expect("pending").committing;
            let keep = in_use || a.last_used.lock().expect("last used").elapsed() < idle;
            if !keep && let Some(t) = self.types.get(ty) {
                t.target.telemetry.metrics.eviction("idle");
            }
            keep
        });
        before - all.len()
    }

    /// Passivates idle actors every second until the host is dropped.
    fn start_passivation(self: &Arc<Self>) {
        let host = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(host) = host.upgrade() else { return };
                let n = host.passivate_idle();
                if n > 0 {
                    tracing::debug!(passivated = n, "idle actors passivated");
                }
            }
        });
    }
}

/// Commits the newest pending state of one actor, answers everyone waiting for it, and repeats
/// until nothing is pending. Waiters that only read join the commit in flight.
async fn commit_loop(kv: &dyn KvStore, bucket: &Bucket, key: &str, activation: &Activation) {
    let mut last: Result<(), Withheld> = Ok(());
    loop {
        let (state, waiters, revision, epoch) = {
            let mut pending = activation.pending.lock().expect("pending");
            if pending.latest.is_none() && pending.waiters.is_empty() {
                pending.committing = false;
                return;
            }
            (pending.latest.take(), std::mem::take(&mut pending.waiters), pending.revision, pending.epoch)
        };
        if let Some(state) = state {
            last = match kv.compare_and_swap(bucket, key, revision, Bytes::from(encode_state(&state))).await {
                Ok(Swap::Done(new)) => {
                    let mut pending = activation.pending.lock().expect("pending");
                    if pending.epoch == epoch {
                        pending.revision = Some(new);
                    }
                    Ok(())
                }
                Ok(Swap::Conflict(_)) => Err(Withheld::Fenced),
                Err(e) => Err(Withheld::Store(e)),
            };
            if last.is_err() {
                activation.stale.store(true, std::sync::atomic::Ordering::Release);
            }
        }
        for waiter in waiters {
            let _ = waiter.send(last.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip() {
        let state: ActorState = [("count".to_string(), b"7".to_vec()), ("e".to_string(), Vec::new())].into();
        assert_eq!(decode_state(&encode_state(&state)).unwrap(), state);
        assert!(decode_state(&[0, 0, 0, 9, b'x']).is_err());
    }
}

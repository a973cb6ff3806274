//! Which node runs the activation of an actor key when several nodes serve the app. Outside a
//! cluster this node runs every key. In a cluster the control plane supplies [`ActorOwners`]:
//! a call for a key another node owns is sent there (over the inter-node transport) and runs on
//! that node's activation, so a hot key is not fought over by every node. Ownership only
//! routes: the commits stay fenced (a compare-and-swap on the stored revision), so two nodes
//! that disagree for a moment about the owner — while the membership changes — cost a retry,
//! never an update. A call the owner cannot be reached for runs here.
use std::fmt;

use futures::future::BoxFuture;
use nimbus_manifest::Placement;

use crate::ActorError;

/// An actor call on its way to the node that owns its key.
#[derive(Debug, Clone)]
pub struct RemoteCall {
    /// The caller's revision (the owner runs the call on it if it has it loaded).
    pub revision: String,
    /// The actor type.
    pub actor_type: String,
    /// The key.
    pub key: String,
    /// The method.
    pub method: String,
    /// The call's input.
    pub input: Vec<u8>,
    /// The request id the call belongs to.
    pub request_id: String,
    /// The W3C `traceparent` of the call's span, so the owner's spans join the trace.
    pub traceparent: Option<String>,
}

/// Why a call did not run on the owner of its key.
#[derive(Debug)]
pub enum Unowned {
    /// The owner could not be reached and the call was not sent: it runs here.
    Unreachable,
    /// The owner answered with an error, or failed the call after it was sent.
    Failed(ActorError),
}

/// Where each actor key's activation lives.
pub trait ActorOwners: Send + Sync + fmt::Debug {
    /// `None` when this node owns `call`'s key of `app` (whose `[placement]` is `placement`);
    /// else the call sent to the node that does, with its answer.
    fn forward(
        &self,
        app: &str,
        placement: &Placement,
        call: RemoteCall,
    ) -> Option<BoxFuture<'static, Result<Vec<u8>, Unowned>>>;
}

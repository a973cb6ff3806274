//! Which node drives each run when several nodes serve the app. Outside a cluster this node
//! drives every run. In a cluster the control plane supplies [`RunOwners`]: a run is driven by
//! its owner node only (so its steps run there), a node that starts, signals or cancels a run
//! it does not own tells the owner to drive it, and when the membership changes every node
//! resumes the unfinished runs it now owns — a lost node's runs go on elsewhere, timers
//! included. The journal stays the guard: each position is written once (compare-and-set), so
//! two nodes that disagree about an owner for a moment cost a replay, never a record.
use std::fmt;

use futures::future::BoxFuture;
use nimbus_manifest::Placement;

/// Where each workflow run is driven.
pub trait RunOwners: Send + Sync + fmt::Debug {
    /// Whether this node drives run `run` of `app` (whose `[placement]` is `placement`).
    fn owns(&self, app: &str, placement: &Placement, run: &str) -> bool;

    /// Tells the node owning `run` to drive it now (`cancel`: it was asked to cancel); whether
    /// it took the wake-up (if not, this node drives the run).
    fn wake(&self, app: &str, placement: &Placement, run: &str, cancel: bool) -> BoxFuture<'static, bool>;

    /// Changes whenever the owners of runs may have moved (the membership changed).
    fn changes(&self) -> tokio::sync::watch::Receiver<u64>;
}

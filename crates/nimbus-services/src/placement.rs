//! Where a service's processes run when several nodes serve one platform. A node the cluster's
//! scheduler did not place a service on keeps the service loaded but runs no process of it: its
//! requests go through a [`Forward`] (the inter-node transport, which the control plane
//! implements) to a node that runs it. The node receiving a forwarded request serves it with
//! [`crate::Service::handle_here`], whatever its own placement says, so two nodes whose views of
//! the cluster differ for a moment never send a request back and forth.
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use hyper::body::Incoming;

use crate::{RequestBody, ServiceError};

/// Hands a service's requests to a node that runs it.
pub trait Forward: Send + Sync + fmt::Debug {
    /// Sends `req` to a node running the service; `wait` is how long the caller gives it to
    /// answer with headers (the node is told, and stops waiting for a process when it is up).
    fn forward(
        &self,
        req: http::Request<RequestBody>,
        wait: Duration,
    ) -> BoxFuture<'_, Result<http::Response<Incoming>, Unforwarded>>;
}

/// Why a request did not reach a node running the service.
#[derive(Debug)]
pub enum Unforwarded {
    /// No node running it could be reached, and the request was not sent: this node serves it
    /// (starting a process), so losing a node does not fail requests while the scheduler moves
    /// its services.
    Unsent(http::Request<RequestBody>),
    /// It failed on its way or at the node.
    Failed(ServiceError),
}

/// Where a service runs, as its node sees it.
#[derive(Debug, Clone, Default)]
pub enum Placed {
    /// Its processes run on this node only (the only case outside a cluster).
    #[default]
    Here,
    /// Its processes run on this node and others, and this node keeps `min` of the service's
    /// `scale.min` (the nodes' shares add up to it): `scale.min` is the cluster's, not each
    /// node's. `spill` names the other nodes with ready processes and room, when there are.
    Shared {
        /// Processes this node keeps however idle.
        min: u32,
        /// Where requests go instead of this node's processes.
        spill: Option<Spill>,
    },
    /// It runs on other nodes; requests go there through this.
    Elsewhere(Arc<dyn Forward>),
}

/// Other nodes running a shared service that have ready processes with room: the cluster fills
/// its nodes in the scheduler's order, so a node sends its requests to nodes ranking before it
/// while they have room (its own processes then idle and stop: one process serves a quiet
/// service, wherever its requests arrive), and to nodes ranking after it only when it has no
/// room itself (no ready process, or all of them busy at the node's cap).
#[derive(Debug, Clone)]
pub struct Spill {
    /// The nodes, through the inter-node transport.
    pub to: Arc<dyn Forward>,
    /// They rank before this node: every request goes there first.
    pub first: bool,
}

impl Placed {
    /// Whether processes run on this node.
    pub fn is_here(&self) -> bool {
        !matches!(self, Self::Elsewhere(_))
    }

    /// The processes this node keeps however idle, for a service of `scale.min`.
    pub fn min(&self, min: u32) -> u32 {
        match self {
            Self::Here => min,
            Self::Shared { min: share, .. } => (*share).min(min),
            Self::Elsewhere(_) => 0,
        }
    }

    /// How requests are routed, and where to when not to this node's processes.
    pub(crate) fn route(self) -> (Route, Option<Arc<dyn Forward>>) {
        match self {
            Self::Here | Self::Shared { spill: None, .. } => (Route::Here, None),
            Self::Shared { spill: Some(Spill { to, first: true }), .. } => (Route::First, Some(to)),
            Self::Shared { spill: Some(Spill { to, first: false }), .. } => (Route::Overflow, Some(to)),
            Self::Elsewhere(to) => (Route::Elsewhere, Some(to)),
        }
    }
}

/// How a service's requests are routed on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Route {
    /// To its processes here.
    Here = 0,
    /// To other nodes first (they rank before this one and have room), here if none answers.
    First = 1,
    /// Here, and to other nodes when this one has no room.
    Overflow = 2,
    /// To the nodes it runs on.
    Elsewhere = 3,
}

impl Route {
    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::First,
            2 => Self::Overflow,
            3 => Self::Elsewhere,
            _ => Self::Here,
        }
    }
}

/// Decides, when a revision is assembled, where each of its services starts out; the cluster's
/// scheduler then moves them with [`crate::Service::place`].
pub trait Placer: Send + Sync + fmt::Debug {
    /// Where service `component` of revision `revision` of the app `manifest` describes runs.
    fn place(&self, manifest: &nimbus_manifest::Manifest, revision: &str, component: &str) -> Placed;
}

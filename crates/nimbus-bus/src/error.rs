//! What can go wrong in the bus.
use std::path::PathBuf;

use nimbus_observe::Cause;

/// An error of the event bus. Every variant says what to do about it; what caused a store or
/// NATS failure is its `source()` (render the chain with [`nimbus_observe::report`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    /// A topic or group name breaks the naming rules.
    #[error("invalid name `{name}`: {why}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// The rule it breaks.
        why: &'static str,
    },
    /// The event cannot be stored or delivered as a CloudEvent.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// The embedded store's file cannot be opened.
    #[error("cannot open the event store {}; check the data dir's permissions and free space", path.display())]
    Open {
        /// The store's file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Cause,
    },
    /// Another process has the embedded store's file open.
    #[error("{} is in use by another nimbus process; stop it or use another data dir", path.display())]
    InUse {
        /// The store's file.
        path: PathBuf,
    },
    /// The embedded store failed (disk full, I/O error); the operation did not happen.
    #[error("the event store failed; nothing was written")]
    Store(#[source] Cause),
    /// A stored record cannot be read by this build.
    #[error("{0}")]
    Corrupt(String),
    /// No NATS server answers at the URL.
    #[error("cannot connect to NATS at {url}; is nats-server running with -js?")]
    Connect {
        /// The URL as given.
        url: String,
        /// Why.
        #[source]
        source: Cause,
    },
    /// NATS JetStream refused or failed an operation.
    #[error("NATS JetStream failed the operation")]
    Nats(#[source] Cause),
    /// The bus is shutting down.
    #[error("the event bus is shut down")]
    Closed,
    /// The topic of a pinned app was created before the app was pinned, without the placement
    /// tags: its events may be on NATS servers outside the region, so it is not used.
    #[error(
        "the NATS stream {stream} was created before its app was pinned and is not placed on servers tagged {tags:?}; nothing was published or delivered: move it with `nats stream edit {stream} --tag TAG` for each tag"
    )]
    Unplaced {
        /// The topic's stream.
        stream: String,
        /// The tags it needs.
        tags: Vec<String>,
    },
    /// The topic's app is pinned to nodes with other labels than this one's: its events are
    /// neither published nor delivered here.
    #[error(transparent)]
    Misplaced(#[from] nimbus_manifest::Misplaced),
}

impl BusError {
    pub(crate) fn store(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Store(nimbus_observe::cause(e))
    }

    pub(crate) fn nats(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Nats(nimbus_observe::cause(e))
    }
}

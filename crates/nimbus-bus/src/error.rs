//! What can go wrong in the bus.

/// An error of the event bus. Every variant says what to do about it.
#[derive(Debug, thiserror::Error)]
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
    /// The embedded store failed (disk full, I/O error, corrupt file).
    #[error("event store: {0}")]
    Store(String),
    /// NATS JetStream refused or failed an operation.
    #[error("NATS JetStream: {0}")]
    Nats(String),
    /// The bus is shutting down.
    #[error("the event bus is shut down")]
    Closed,
}

impl BusError {
    pub(crate) fn store(e: impl std::fmt::Display) -> Self {
        Self::Store(e.to_string())
    }

    pub(crate) fn nats(e: impl std::fmt::Display) -> Self {
        Self::Nats(e.to_string())
    }
}

//! What can go wrong with state.

/// An error of a KV store. Every variant says what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KvError {
    /// A bucket name or key breaks the rules.
    #[error("invalid {what} {name:?}: {why}")]
    Invalid {
        /// What was named: `app`, `bucket` or `key`.
        what: &'static str,
        /// The name as given.
        name: String,
        /// The rule it breaks.
        why: &'static str,
    },
    /// `increment` on a value that is not a decimal integer.
    #[error("the value of {0:?} is not an integer, so it cannot be incremented")]
    NotANumber(String),
    /// The embedded store failed (disk full, I/O error, corrupt file).
    #[error("state store: {0}")]
    Store(String),
    /// NATS JetStream KV refused or failed an operation.
    #[error("NATS KV: {0}")]
    Nats(String),
    /// The store is shutting down.
    #[error("the state store is shut down")]
    Closed,
}

impl KvError {
    pub(crate) fn store(e: impl std::fmt::Display) -> Self {
        Self::Store(e.to_string())
    }

    pub(crate) fn nats(e: impl std::fmt::Display) -> Self {
        Self::Nats(e.to_string())
    }
}

//! What can go wrong with blobs.
use nimbus_observe::Cause;

use crate::KvError;

/// An error of a blob store. Every variant says what to do about it; what caused a store or
/// NATS failure is its `source()`. [`BlobError::code`] names the variant for API answers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BlobError {
    /// A bucket name or key breaks the rules (the KV rules, [`crate::check_key`]), or the store
    /// cannot be opened or reached: the same errors as the KV store's.
    #[error(transparent)]
    State(#[from] KvError),
    /// The upload passed the largest object allowed; nothing was stored.
    #[error(
        "the object is larger than the limit of {limit} bytes; nothing was stored: upload a smaller object or raise the limit"
    )]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The upload would make its bucket hold more than its quota; nothing was stored.
    #[error(
        "bucket {bucket} would hold more than its quota of {quota} bytes; nothing was stored: delete objects or raise the quota"
    )]
    QuotaExceeded {
        /// `APP/BUCKET`.
        bucket: String,
        /// The quota, in bytes.
        quota: u64,
    },
    /// A range that starts past the object's last byte.
    #[error("the range starting at byte {start} is past the end of the {size}-byte object; ask for bytes below {size}")]
    RangeNotSatisfiable {
        /// The range's first byte.
        start: u64,
        /// The object's size.
        size: u64,
    },
    /// A range whose end is before its start.
    #[error("the range {start}-{end} ends before it starts; give the first byte, then the last")]
    BadRange {
        /// The range's first byte.
        start: u64,
        /// The range's last byte.
        end: u64,
    },
    /// The upload's body failed before it ended (the client went away, a read failed).
    #[error("the upload's body failed before it ended; nothing was stored: send it again")]
    Body(#[source] Cause),
    /// The embedded store failed (disk full, I/O error); the operation did not happen.
    #[error("the blob store failed; nothing was changed")]
    Store(#[source] Cause),
    /// NATS JetStream refused or failed an operation.
    #[error("the NATS object store failed the operation")]
    Nats(#[source] Cause),
}

impl BlobError {
    /// A stable code for the error, for API answers: `invalid`, `too_large`, `quota_exceeded`,
    /// `range_not_satisfiable`, `bad_range`, `body_failed` or `unavailable`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::State(KvError::Invalid { .. }) => "invalid",
            Self::TooLarge { .. } => "too_large",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            Self::BadRange { .. } => "bad_range",
            Self::Body(_) => "body_failed",
            Self::State(_) | Self::Store(_) | Self::Nats(_) => "unavailable",
        }
    }

    pub(crate) fn store(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Store(nimbus_observe::cause(e))
    }

    pub(crate) fn nats(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Nats(nimbus_observe::cause(e))
    }

    pub(crate) fn body(e: std::io::Error) -> Self {
        Self::Body(nimbus_observe::cause(e))
    }
}

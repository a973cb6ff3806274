//! Errors of control operations, each with the HTTP status the API answers with.
use http::StatusCode;
use nimbus_security::secrets::SecretsError;

use crate::model::ErrorBody;
use crate::store::StoreError;

/// A control operation failed; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request is malformed (400).
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
        /// What to do.
        hint: Option<String>,
    },
    /// The manifest or its artifacts are invalid (422); one entry per problem.
    #[error("{message}")]
    Invalid {
        /// Summary.
        message: String,
        /// Each problem.
        details: Vec<String>,
    },
    /// No such app, revision or token (404).
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the current state (409).
    #[error("{message}")]
    Conflict {
        /// What conflicts.
        message: String,
        /// What to do.
        hint: Option<String>,
    },
    /// A conditional request's precondition does not hold (412): a KV write's or delete's `If-Match`
    /// revision is not the key's current one, or `If-None-Match: *` found a value.
    #[error("{0}")]
    PreconditionFailed(String),
    /// The app, or a bucket or topic of it, may not be on this node (its `[placement]` requires
    /// labels this node does not have): nothing of it is stored or run here (421).
    #[error("{what} may only be on nodes labelled {requires}; this node is not")]
    Misdirected {
        /// What: `app `gdpr``, `bucket `orders` of app `shop``.
        what: String,
        /// Its requirement, e.g. `region=eu-*`.
        requires: String,
    },
    /// The upload is larger than the server accepts (413).
    #[error("{0}")]
    TooLarge(String),
    /// No or an unknown token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The token may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The store failed (500); the operation was not applied.
    #[error("storage error; the change was not made")]
    Store(#[from] crate::store::StoreError),
    /// Something this node needs failed (500): writing an upload, drawing random bytes.
    #[error("{doing} failed; nothing was changed")]
    Internal {
        /// What the server was doing.
        doing: &'static str,
        /// Why it failed.
        #[source]
        source: nimbus_observe::Cause,
    },
    /// A store or the event bus cannot take the request now (503); nothing was done.
    #[error("{message}")]
    Unavailable {
        /// What is unavailable.
        message: String,
        /// Why, when a lower layer failed.
        #[source]
        source: Option<nimbus_observe::Cause>,
    },
    /// The request body's content type is refused (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Too many requests of this kind run at once (503 with `Retry-After`); nothing was done.
    #[error("{0}")]
    Busy(String),
    /// This client failed to authenticate too often lately (429 with `Retry-After`); the token
    /// it sent was not checked.
    #[error("too many failed authentications from this address; retry in {retry_after_s} s")]
    TooManyFailures {
        /// Seconds until it may try again.
        retry_after_s: u64,
    },
    /// Secrets cannot be sealed or opened (503 without a master key, else 500); nothing was
    /// changed. Never carries a value.
    #[error("secrets are unavailable")]
    Secrets(#[from] nimbus_security::secrets::SecretsError),
}

impl From<nimbus_manifest::Misplaced> for ControlError {
    fn from(m: nimbus_manifest::Misplaced) -> Self {
        Self::Misdirected { what: m.data, requires: m.requires }
    }
}

impl From<nimbus_state::KvError> for ControlError {
    fn from(e: nimbus_state::KvError) -> Self {
        use nimbus_state::KvError;
        match e {
            KvError::Invalid { .. } | KvError::NotANumber(_) => Self::BadRequest { message: e.to_string(), hint: None },
            KvError::Misplaced(m) => m.into(),
            _ => Self::unavailable("the state store cannot serve the request", e),
        }
    }
}

impl From<nimbus_bus::BusError> for ControlError {
    fn from(e: nimbus_bus::BusError) -> Self {
        use nimbus_bus::BusError;
        match e {
            BusError::InvalidName { .. } | BusError::InvalidEvent(_) => {
                Self::BadRequest { message: e.to_string(), hint: None }
            }
            BusError::Misplaced(m) => m.into(),
            _ => Self::unavailable("the event bus cannot serve the request", e),
        }
    }
}

impl ControlError {
    pub(crate) fn bad_request(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::BadRequest { message: message.into(), hint: Some(hint.into()) }
    }

    pub(crate) fn unavailable(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Unavailable { message: message.into(), source: Some(nimbus_observe::cause(source)) }
    }

    pub(crate) fn internal(doing: &'static str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal { doing, source: nimbus_observe::cause(source) }
    }

    pub(crate) fn conflict(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Conflict { message: message.into(), hint: Some(hint.into()) }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::Conflict { .. } | Self::Store(StoreError::Conflict { .. }) => StatusCode::CONFLICT,
            Self::Store(StoreError::Cluster { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Store(_) | Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable { .. } | Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Secrets(SecretsError::NoMasterKey) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Secrets(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code of this kind of error (`ErrorBody::code`): scripts match on it, not on
    /// the message, which may be reworded.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "bad_request",
            Self::Invalid { .. } => "invalid_bundle",
            Self::NotFound(_) => "not_found",
            Self::Misdirected { .. } => "misdirected",
            Self::PreconditionFailed(_) => "precondition_failed",
            Self::Conflict { .. } | Self::Store(StoreError::Conflict { .. }) => "conflict",
            Self::Store(StoreError::Cluster { .. }) => "unavailable",
            Self::TooLarge(_) => "too_large",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::Store(_) => "store_failed",
            Self::Internal { .. } => "internal",
            Self::Unavailable { .. } => "unavailable",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Busy(_) => "busy",
            Self::TooManyFailures { .. } => "too_many_failures",
            Self::Secrets(SecretsError::NoMasterKey) => "secrets_unconfigured",
            Self::Secrets(_) => "secrets_failed",
        }
    }

    /// What to do about this error.
    pub fn hint(&self) -> String {
        let fixed = match self {
            Self::BadRequest { hint: Some(hint), .. } | Self::Conflict { hint: Some(hint), .. } => return hint.clone(),
            Self::BadRequest { hint: None, .. } => "correct the request; /v1/openapi.json describes every request",
            Self::Conflict { hint: None, .. } => "read the current state again and retry",
            Self::Invalid { .. } => "fix the problems listed in `details` and deploy again",
            Self::NotFound(_) => {
                "check the name; `nimbus apps list`, `nimbus revisions list APP` and `nimbus tokens list` show what exists"
            }
            Self::Misdirected { requires, .. } => {
                return format!("send it to a node labelled {requires}; `nimbus nodes list` shows each node's labels");
            }
            Self::PreconditionFailed(_) => {
                "someone else changed it first: read it again (its `ETag` is the current revision), apply your change and retry with that `If-Match`"
            }
            Self::TooLarge(_) => "send less; the limit is in the message",
            Self::Unauthorized(_) => {
                "send `Authorization: Bearer TOKEN`; the CLI reads --token, NIMBUS_TOKEN or the config file written by `nimbus login`"
            }
            Self::Forbidden(_) => {
                "use a token whose role and apps allow this; an admin creates one with `nimbus tokens create --role ROLE --app APP`"
            }
            Self::Store(StoreError::Conflict { .. }) => {
                "another node of the cluster changed the same thing at that moment and nothing of this request was applied; send it again"
            }
            Self::Store(StoreError::Cluster { .. }) => {
                "the cluster's NATS servers did not answer; retry shortly, and check `nimbus nodes list` and the NATS servers"
            }
            Self::Store(_) => "check the data dir's free space and permissions, then retry",
            Self::Internal { .. } => "retry; if it keeps failing, the server's log says why",
            Self::Unavailable { .. } => "retry shortly; if it persists, check the server's log and its NATS connection",
            Self::UnsupportedMediaType(_) => {
                "send JSON as `Content-Type: application/json` and a bundle as `application/x-tar`, as `nimbus` does"
            }
            Self::Busy(_) => "retry after the number of seconds in `Retry-After`",
            Self::TooManyFailures { .. } => {
                "wait the seconds in `Retry-After`, then send a valid token; failed attempts from one address are limited"
            }
            Self::Secrets(SecretsError::NoMasterKey) => {
                "start the server with --master-key-file FILE (or NIMBUS_MASTER_KEY); create one with `openssl rand -hex 32`"
            }
            Self::Secrets(_) => "the message says what failed; check the server's master key and its log",
        };
        fixed.to_string()
    }

    /// The JSON body of this error: the message with its causes, the code and what to do.
    pub fn body(&self) -> ErrorBody {
        let details = match self {
            Self::Invalid { details, .. } => details.clone(),
            _ => Vec::new(),
        };
        ErrorBody {
            error: nimbus_observe::report(self),
            code: self.code().to_string(),
            status: self.status().as_u16(),
            hint: Some(self.hint()),
            details,
        }
    }
}

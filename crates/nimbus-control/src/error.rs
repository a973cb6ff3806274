//! Errors of control operations, each with the HTTP status the API answers with.
use http::StatusCode;

use crate::model::ErrorBody;

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
    #[error("storage error: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The event bus cannot take the request now (503); nothing was done.
    #[error("{0}")]
    Unavailable(String),
    /// The request body's content type is refused (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Too many requests of this kind run at once (503 with `Retry-After`); nothing was done.
    #[error("{0}")]
    Busy(String),
}

impl From<nimbus_state::KvError> for ControlError {
    fn from(e: nimbus_state::KvError) -> Self {
        use nimbus_state::KvError;
        match e {
            KvError::Invalid { .. } | KvError::NotANumber(_) => Self::BadRequest { message: e.to_string(), hint: None },
            KvError::Store(_) | KvError::Nats(_) | KvError::Closed => Self::Unavailable(e.to_string()),
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
            BusError::Store(_) | BusError::Nats(_) | BusError::Closed => Self::Unavailable(e.to_string()),
        }
    }
}

impl ControlError {
    pub(crate) fn bad_request(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::BadRequest { message: message.into(), hint: Some(hint.into()) }
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
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable(_) | Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        let (hint, details) = match self {
            Self::BadRequest { hint, .. } | Self::Conflict { hint, .. } => (hint.clone(), Vec::new()),
            Self::Invalid { details, .. } => (Some("fix the problems listed in `details` and deploy again".into()), details.clone()),
            Self::Unauthorized(_) => (
                Some("send `Authorization: Bearer TOKEN`; the CLI reads --token, NIMBUS_TOKEN or the config file written by `nimbus login`".into()),
                Vec::new(),
            ),
            Self::UnsupportedMediaType(_) => (
                Some("send JSON as `Content-Type: application/json` and a bundle as `application/x-tar`, as `nimbus` does".into()),
                Vec::new(),
            ),
            Self::Busy(_) => (Some("retry after the number of seconds in `Retry-After`".into()), Vec::new()),
            _ => (None, Vec::new()),
        };
        ErrorBody { error: self.to_string(), status: self.status().as_u16(), hint, details }
    }
}

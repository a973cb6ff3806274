//! Reading a request body whole (a function's request, an event, an actor call's input): bounded
//! in size and in time, so that neither a large nor a stalled upload can hold the gateway.
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::body::GatewayBody;
use crate::request_id::RequestId;
use crate::respond::error;

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Larger than the limit.
    TooLarge,
    /// Not complete within the time allowed.
    TimedOut(Duration),
    /// The connection broke or the body was malformed.
    Broken(crate::body::BoxError),
}

impl BodyError {
    /// The answer to the client: 413, 408 or 400. `what` names the body (`request body`,
    /// `event`, ...).
    pub(crate) fn response(&self, id: &RequestId, what: &str, max_bytes: usize) -> http::Response<GatewayBody> {
        match self {
            Self::TooLarge => {
                error(StatusCode::PAYLOAD_TOO_LARGE, id, &format!("{what} is larger than {max_bytes} bytes"))
            }
            Self::TimedOut(limit) => {
                error(StatusCode::REQUEST_TIMEOUT, id, &format!("{what} did not arrive within {limit:?}"))
            }
            Self::Broken(e) => error(StatusCode::BAD_REQUEST, id, &format!("could not read the {what}: {e}")),
        }
    }
}

/// Reads `body` whole: at most `max_bytes`, within `time`. A body whose declared length
/// (`Content-Length`) is over the limit is refused before a byte of it is read, so the client
/// gets its answer while it is still sending. A request without a body is complete at once (no
/// clock read, no timer).
pub(crate) async fn read_whole<B>(body: B, max_bytes: usize, time: Duration) -> Result<Bytes, BodyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<crate::body::BoxError>,
{
    if http_body::Body::size_hint(&body).lower() > max_bytes as u64 {
        return Err(BodyError::TooLarge);
    }
    let complete = http_body::Body::is_end_stream(&body);
    let read = Limited::new(body, max_bytes).collect();
    let read = if complete { Ok(read.await) } else { tokio::time::timeout(time, read).await };
    match read {
        Err(_) => Err(BodyError::TimedOut(time)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Ok(Err(e)) => Err(BodyError::Broken(e)),
    }
}

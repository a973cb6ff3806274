//! Actor calls from outside: `POST /actors/TYPE/KEY/METHOD` with the input as body. The gateway
//! owns the HTTP side (the path, the method, reading the input within the actor's time limit,
//! status codes); running the call — one activation per key, state committed before the answer
//! — is the app's actor host behind [`ActorCalls`], which this crate defines and `nimbus-actors`
//! implements (the gateway does not depend on it).
use std::sync::Arc;

use futures::future::BoxFuture;
use http::{HeaderValue, StatusCode, header};
use hyper::body::Incoming;
use nimbus_observe::{Span, SpanRef};

use crate::body::GatewayBody;
use crate::request_id::RequestId;
use crate::respond::{error, set_request_id};
use crate::{Backend, Target};

/// The path prefix of actor invocations: `POST /actors/TYPE/KEY/METHOD`.
pub const ACTORS_PATH: &str = "/actors/";
/// Largest input of an actor call.
const MAX_INPUT_BYTES: usize = 1 << 20;

/// The actor types of one app revision, as the gateway calls them.
pub trait ActorCalls: Send + Sync + std::fmt::Debug {
    /// The component serving `actor_type`, if the app has that type.
    fn target(&self, actor_type: &str) -> Option<Arc<Target>>;

    /// Runs `call` and answers once the actor's state changes are durable, in a span under
    /// `parent`.
    fn call<'a>(&'a self, call: ActorCall<'a>, parent: &'a SpanRef) -> BoxFuture<'a, Result<Vec<u8>, CallFailure>>;
}

/// One call of an actor's method.
#[derive(Debug, Clone, Copy)]
pub struct ActorCall<'a> {
    /// The actor type.
    pub actor_type: &'a str,
    /// The key.
    pub key: &'a str,
    /// The method.
    pub method: &'a str,
    /// Its input.
    pub input: &'a [u8],
    /// The request it belongs to.
    pub request_id: &'a str,
    /// Run on this node's activation of the key whichever node owns it in a cluster: a call
    /// another node forwarded here, never forwarded again.
    pub here: bool,
}

/// Why an actor call failed, as the HTTP answer says it.
#[derive(Debug)]
pub enum CallFailure {
    /// No such actor type, or an invalid key (404).
    NotFound(String),
    /// The handler returned an error; its writes were dropped (422).
    Refused(String),
    /// The instance ran out of time (504).
    TimedOut(String),
    /// At capacity, or the state could not be read or committed (503).
    Unavailable(String),
    /// The app's budget reached its hard limit (429).
    Throttled(String),
    /// The instance trapped or could not start (500).
    Failed(String),
}

/// `POST /actors/TYPE/KEY/METHOD`: 200 with the handler's answer once its state is durable; 422
/// when the handler returned an error; 404 for an unknown type. Says which component served it.
/// With `here`, the call runs on this node's activation (a call another node forwarded).
pub(crate) async fn serve(
    actors: &dyn ActorCalls,
    req: http::Request<Incoming>,
    id: &RequestId,
    span: &Span,
    here: bool,
) -> (http::Response<GatewayBody>, Option<Arc<Target>>) {
    let path = req.uri().path().strip_prefix(ACTORS_PATH).unwrap_or_default().to_string();
    let mut parts = path.splitn(3, '/');
    let (Some(ty), Some(key), Some(method)) = (parts.next(), parts.next(), parts.next()) else {
        return (error(StatusCode::NOT_FOUND, id, "call an actor with POST /actors/TYPE/KEY/METHOD"), None);
    };
    let call = ActorCall { actor_type: ty, key, method, input: &[], request_id: id.as_str(), here };
    (answer(actors, req, id, span, call).await, actors.target(ty))
}

/// Answers `call` (whose input is the request's body).
async fn answer(
    actors: &dyn ActorCalls,
    req: http::Request<Incoming>,
    id: &RequestId,
    span: &Span,
    call: ActorCall<'_>,
) -> http::Response<GatewayBody> {
    let ActorCall { actor_type: ty, key, .. } = call;
    if req.method() != http::Method::POST {
        let mut resp = error(StatusCode::METHOD_NOT_ALLOWED, id, "call actors with POST");
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let key = percent_decode(key);
    // An unknown type is answered before its input is read; a known one's input is read
    // within the actor's time limit, like a function's request body.
    let target = actors.target(ty);
    let Some(Backend::Function(function)) = target.as_ref().map(|t| &t.backend) else {
        return error(StatusCode::NOT_FOUND, id, &format!("no actor type `{ty}` in this app"));
    };
    let input = match crate::request_body::read_whole(req.into_body(), MAX_INPUT_BYTES, function.timeout()).await {
        Ok(input) => input,
        Err(e) => return e.response(id, "actor call's input", MAX_INPUT_BYTES),
    };
    match actors.call(ActorCall { key: &key, input: &input, ..call }, &span.handle()).await {
        Ok(output) => {
            let mut resp = http::Response::new(GatewayBody::full(output));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            set_request_id(&mut resp, id);
            resp
        }
        Err(failure) => {
            let (status, message) = match failure {
                CallFailure::NotFound(m) => (StatusCode::NOT_FOUND, m),
                CallFailure::Refused(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
                CallFailure::TimedOut(m) => (StatusCode::GATEWAY_TIMEOUT, m),
                CallFailure::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
                CallFailure::Throttled(m) => (StatusCode::TOO_MANY_REQUESTS, m),
                CallFailure::Failed(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
            };
            if status != StatusCode::UNPROCESSABLE_ENTITY {
                tracing::warn!(request_id = %id, actor = %ty, key = %key, error = %message, "actor invocation failed");
            }
            error(status, id, &message)
        }
    }
}

/// `%XX` escapes of a path segment decoded (so keys may hold `/`, spaces and any byte of UTF-8).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).and_then(|&b| hex(b)), bytes.get(i + 2).and_then(|&b| hex(b))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

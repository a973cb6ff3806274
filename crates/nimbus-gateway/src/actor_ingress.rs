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

    /// Runs `method` on the actor `actor_type`/`key` and answers once its state changes are
    /// durable, in a span under `parent`.
    fn call<'a>(
        &'a self,
        actor_type: &'a str,
        key: &'a str,
        method: &'a str,
        input: &'a [u8],
        request_id: &'a str,
        parent: &'a SpanRef,
    ) -> BoxFuture<'a, Result<Vec<u8>, CallFailure>>;

    /// Like [`ActorCalls::call`], on this node's activation of the key whichever node owns it
    /// in a cluster: a call another node forwarded here, never forwarded again.
    fn call_here<'a>(
        &'a self,
        actor_type: &'a str,
        key: &'a str,
        method: &'a str,
        input: &'a [u8],
        request_id: &'a str,
        parent: &'a SpanRef,
    ) -> BoxFuture<'a, Result<Vec<u8>, CallFailure>>;
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
    let call = Call { ty, key, method, here };
    (answer(actors, req, id, span, call).await, actors.target(ty))
}

/// Which actor call a request is.
struct Call<'a> {
    ty: &'a str,
    key: &'a str,
    method: &'a str,
    here: bool,
}

async fn answer(
    actors: &dyn ActorCalls,
    req: http::Request<Incoming>,
    id: &RequestId,
    span: &Span,
    call: Call<'_>,
) -> http::Response<GatewayBody> {
    let Call { ty, key, method, here } = call;
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
    let parent = span.handle();
    let result = match here {
        true => actors.call_here(ty, &key, method, &input, id.as_str(), &parent).await,
        false => actors.call(ty, &key, method, &input, id.as_str(), &parent).await,
    };
    match result {
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

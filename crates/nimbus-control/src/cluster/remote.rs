//! What else goes over the transport: an actor call sent to the node owning its key (run there,
//! its answer read back), and a wake-up sent to the node owning a workflow run.
use http::HeaderValue;
use http_body_util::BodyExt as _;
use nimbus_actors::{ActorError, RemoteCall, Unowned};
use nimbus_gateway::{FORWARD_ACTOR_HEADER, REQUEST_ID_HEADER, WAKE_RUN_HEADER};

use super::forward::empty;
use super::transport::{Transport, Unsent};
use crate::path::path_segment;

/// Largest answer of a forwarded actor call read.
const MAX_ACTOR_ANSWER: usize = 16 << 20;

impl Transport {
    /// Runs actor call `call` of `app` on the node at `addr`, which owns its key (on the
    /// caller's revision if that node has it loaded). A node that cannot be reached, or does not serve the app's actors yet (`421`),
    /// leaves the call to this node.
    pub(crate) async fn call_actor(&self, addr: &str, app: &str, call: RemoteCall) -> Result<Vec<u8>, Unowned> {
        let path = format!(
            "/actors/{}/{}/{}",
            path_segment(&call.actor_type),
            path_segment(&call.key),
            path_segment(&call.method)
        );
        let mut req = http::Request::new(
            http_body_util::Full::new(bytes::Bytes::from(call.input)).map_err(|never| match never {}).boxed(),
        );
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = format!("https://actors.nimbus.internal{path}").parse().map_err(|_| Unowned::Unreachable)?;
        let to = format!("{app}/{}", call.revision);
        let named = [
            (http::HeaderName::from_static(FORWARD_ACTOR_HEADER), to.as_str()),
            (REQUEST_ID_HEADER, call.request_id.as_str()),
        ];
        let traced = call.traceparent.as_deref().map(|t| (http::HeaderName::from_static("traceparent"), t));
        for (name, value) in named.into_iter().chain(traced) {
            if let Ok(value) = HeaderValue::from_str(value) {
                req.headers_mut().insert(name, value);
            }
        }
        let resp = match self.send(addr, req).await {
            Ok(resp) => resp,
            Err(Unsent::Back(_)) => return Err(Unowned::Unreachable),
            Err(Unsent::Failed(e)) => {
                let message = format!("the call was sent and not answered: {}", nimbus_observe::report(&e));
                return Err(Unowned::Failed(ActorError::Remote { status: 502, message }));
            }
        };
        let status = resp.status();
        if status == http::StatusCode::MISDIRECTED_REQUEST {
            return Err(Unowned::Unreachable);
        }
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ACTOR_ANSWER).collect().await.map_err(|e| {
            let message = format!("its answer broke off: {e}");
            Unowned::Failed(ActorError::Remote { status: 502, message })
        })?;
        let body = body.to_bytes().to_vec();
        if status.is_success() {
            return Ok(body);
        }
        // The gateway's error body: `{"error": MESSAGE, ...}`.
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        Err(Unowned::Failed(ActorError::Remote { status: status.as_u16(), message }))
    }

    /// Tells the node at `addr`, which owns workflow run `run` of `app`, to drive it; whether
    /// it took the wake-up.
    pub(crate) async fn wake_run(&self, addr: &str, app: &str, run: &str, cancel: bool) -> bool {
        let query = if cancel { "?cancel=true" } else { "" };
        let uri = format!("https://workflows.nimbus.internal/wake/{}{query}", path_segment(run));
        let (Ok(uri), Ok(app)) = (uri.parse(), HeaderValue::from_str(app)) else { return false };
        let mut req = http::Request::new(empty());
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = uri;
        req.headers_mut().insert(WAKE_RUN_HEADER, app);
        matches!(self.send(addr, req).await, Ok(resp) if resp.status().is_success())
    }
}

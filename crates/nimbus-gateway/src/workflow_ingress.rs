//! Workflow runs from outside, under `/workflows/NAME`: `POST` starts a run (the body is its
//! input; an `Idempotency-Key` header makes a repeated start answer the first run), `GET` lists
//! runs (`?revision=R`, `?status=S`), `GET .../RUN` shows one with its timeline, `POST
//! .../RUN/signals/SIGNAL` signals it (the body is the payload), `POST .../RUN/cancel` cancels
//! it. The gateway owns the HTTP side (paths, methods, reading bodies within limits); the app's
//! workflow engine behind [`WorkflowCalls`] (defined here, implemented by `nimbus-workflows`)
//! answers.
use std::time::Duration;

use futures::future::BoxFuture;
use http::{HeaderValue, Method, StatusCode, header};
use hyper::body::Incoming;
use nimbus_observe::{Span, SpanRef};

use crate::body::GatewayBody;
use crate::request_id::RequestId;
use crate::respond::{error, set_request_id};

/// The path prefix of workflows: `/workflows/NAME/...`.
pub const WORKFLOWS_PATH: &str = "/workflows/";
/// The header naming a start's idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Largest input or signal payload read from a request.
const MAX_INPUT_BYTES: usize = 512 * 1024;
/// How long a client may take to send it.
const BODY_TIME: Duration = Duration::from_secs(30);

/// What a request asks of a workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkflowOp {
    /// Start a run of the workflow with `input`.
    Start {
        /// The input.
        input: Vec<u8>,
        /// Answers the run this key started before, if any.
        idempotency_key: Option<String>,
    },
    /// List the workflow's runs.
    List {
        /// Only runs pinned to this revision.
        revision: Option<String>,
        /// Only runs in this status (`unfinished`: running, waiting or compensating).
        status: Option<String>,
    },
    /// A run, its journal as a timeline.
    Show {
        /// The run.
        run: String,
    },
    /// Send a signal to a run.
    Signal {
        /// The run.
        run: String,
        /// The signal's name.
        signal: String,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// Cancel a run.
    Cancel {
        /// The run.
        run: String,
    },
}

/// The workflows of one app revision, as the gateway calls them.
pub trait WorkflowCalls: Send + Sync + std::fmt::Debug {
    /// Whether the app has workflow `name`.
    fn has(&self, name: &str) -> bool;

    /// Does `op` on workflow `name`: the status and the JSON answer.
    fn call<'a>(
        &'a self,
        name: &'a str,
        op: WorkflowOp,
        parent: &'a SpanRef,
    ) -> BoxFuture<'a, (StatusCode, serde_json::Value)>;

    /// A wake-up another node sent for run `run`, which this node owns in a cluster: drive it
    /// now (`cancel`: it was asked to cancel there).
    fn wake(&self, run: &str, cancel: bool);
}

/// Serves a request under [`WORKFLOWS_PATH`].
pub(crate) async fn serve(
    workflows: &dyn WorkflowCalls,
    req: http::Request<Incoming>,
    id: &RequestId,
    span: &Span,
) -> http::Response<GatewayBody> {
    let path = req.uri().path().strip_prefix(WORKFLOWS_PATH).unwrap_or_default().to_string();
    // Each segment `%XX`-decoded, like the control API's paths (a signal named `é` is `%C3%A9`).
    let decoded: Vec<String> = path.split('/').map(crate::actor_ingress::percent_decode).collect();
    let parts: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let Some(name) = parts.first().copied().filter(|n| !n.is_empty()) else {
        return error(StatusCode::NOT_FOUND, id, "name the workflow: /workflows/NAME");
    };
    if !workflows.has(name) {
        return error(StatusCode::NOT_FOUND, id, &format!("no workflow `{name}` in this app"));
    }
    let method = req.method().clone();
    let query = |key: &str| {
        req.uri().query().unwrap_or_default().split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key && !v.is_empty()).then(|| v.to_string())
        })
    };
    let allow = |allowed: &'static str| {
        let mut resp = error(StatusCode::METHOD_NOT_ALLOWED, id, &format!("use {allowed} here"));
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allowed));
        resp
    };
    let op = match (parts.as_slice(), &method) {
        ([_], &Method::POST) => {
            let key = req.headers().get(IDEMPOTENCY_KEY_HEADER).map(|v| v.to_str().map(str::to_string));
            let idempotency_key = match key {
                Some(Ok(k)) => Some(k),
                Some(Err(_)) => {
                    return error(StatusCode::BAD_REQUEST, id, "the Idempotency-Key header is not printable ASCII");
                }
                None => None,
            };
            let input = match body(req).await {
                Ok(input) => input,
                Err(e) => return e.response(id, "workflow input", MAX_INPUT_BYTES),
            };
            WorkflowOp::Start { input, idempotency_key }
        }
        ([_], &Method::GET) => WorkflowOp::List { revision: query("revision"), status: query("status") },
        ([_], _) => return allow("GET, POST"),
        ([_, run], &Method::GET) => WorkflowOp::Show { run: run.to_string() },
        ([_, _], _) => return allow("GET"),
        ([_, run, "signals", signal], &Method::POST) => {
            let (run, signal) = (run.to_string(), signal.to_string());
            match body(req).await {
                Ok(payload) => WorkflowOp::Signal { run, signal, payload },
                Err(e) => return e.response(id, "signal payload", MAX_INPUT_BYTES),
            }
        }
        ([_, run, "cancel"], &Method::POST) => WorkflowOp::Cancel { run: run.to_string() },
        ([_, _, "signals", _] | [_, _, "cancel"], _) => return allow("POST"),
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                id,
                "workflow paths: /workflows/NAME, /workflows/NAME/RUN, /workflows/NAME/RUN/signals/SIGNAL, /workflows/NAME/RUN/cancel",
            );
        }
    };
    let (status, answer) = workflows.call(name, op, &span.handle()).await;
    if status.is_client_error() || status.is_server_error() {
        let message = answer.get("error").and_then(|e| e.as_str()).unwrap_or("the workflow engine refused");
        return error(status, id, message);
    }
    let mut resp = http::Response::new(GatewayBody::full(format!("{answer}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    set_request_id(&mut resp, id);
    resp
}

async fn body(req: http::Request<Incoming>) -> Result<Vec<u8>, crate::request_body::BodyError> {
    crate::request_body::read_whole(req.into_body(), MAX_INPUT_BYTES, BODY_TIME).await.map(|b| b.to_vec())
}

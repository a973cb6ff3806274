//! The `wasi:http/incoming-handler` executor: a fresh instance per request from a `ProxyPre`.
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::guest::GuestState;
use crate::scope::Run;
use crate::{FunctionSettings, Invocation, InvokeError, ResponseBody};

pub(crate) async fn handle(
    pre: &ProxyPre<GuestState>,
    settings: &Arc<FunctionSettings>,
    req: http::Request<Bytes>,
    mut inv: Invocation,
) -> Result<http::Response<ResponseBody>, InvokeError> {
    let limits = settings.limits;
    let remote = || nimbus_observe::TraceContext::from_headers(req.headers());
    let mut lifecycle = Run::start(settings, &mut inv, remote);
    let state = GuestState::new(settings, &lifecycle.scope, inv.lease);
    let (mut store, deadline) = limits.new_store(pre.engine(), state);

    let req = req.map(|b| Full::new(b).map_err(|never: Infallible| -> wasmtime_wasi_http::Error { match never {} }));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let responded = Arc::new(AtomicBool::new(false));
    let flag = responded.clone();
    let incoming = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
        .map_err(|e| InvokeError::Instantiate(nimbus_observe::cause(e)))?;
    let out = store
        .data_mut()
        .http()
        .new_response_outparam_from_callback(move |resp| {
            flag.store(true, Ordering::Release);
            let _ = tx.send(resp);
        })
        .map_err(|e| InvokeError::Instantiate(nimbus_observe::cause(e)))?;

    let pre = pre.clone();
    let settings = settings.clone();
    let scope = lifecycle.scope.clone();
    let mut run = Box::pin(async move {
        let invocation = async move {
            let call = async {
                let proxy = lifecycle.instantiate(&settings, pre.instantiate_async(&mut store)).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, out)
                    .await
                    .map_err(|e| InvokeError::from_wasmtime(&e, limits.timeout))
            };
            let result = match tokio::time::timeout_at(deadline.into(), call).await {
                Ok(r) => r,
                Err(_) => Err(InvokeError::Timeout(limits.timeout)),
            };
            drop(store);
            if let Err(e) = &result
                && responded.load(Ordering::Acquire)
            {
                lifecycle
                    .scope
                    .log("warn", &format!("guest failed after sending the response head; the body was cut short: {e}"));
            }
            lifecycle.finish(result.as_ref().err().map(|e| e as _));
            result
        };
        // Its time on a worker thread, both here and in the task streaming the body, is its CPU
        // time.
        nimbus_observe::Busy::new(invocation, &scope.telemetry.usage).await
    });

    // The guest runs on this task (no hand-off to another thread) until it either returns or sets
    // its response while still producing the body; only then does the rest of it move to a task
    // of its own, streaming the body.
    let mut rx = rx;
    tokio::select! {
        biased;
        result = &mut run => match rx.try_recv() {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(code)) => Err(InvokeError::Guest(format!("{code:?}"))),
            Err(_) => result.and(Err(InvokeError::NoResponse)),
        },
        resp = &mut rx => {
            tokio::spawn(run);
            match resp {
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(code)) => Err(InvokeError::Guest(format!("{code:?}"))),
                Err(_) => Err(InvokeError::NoResponse),
            }
        }
    }
}

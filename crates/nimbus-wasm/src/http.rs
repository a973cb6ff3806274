//! The `wasi:http/incoming-handler` executor: a fresh instance per request from a `ProxyPre`.
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::logs::GuestLog;
use crate::outbound::OutboundPolicy;
use crate::store::InvocationState;
use crate::{FunctionSettings, Invocation, InvokeError, ResponseBody};

/// Store data of one `wasi:http` invocation.
pub(crate) struct HttpState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: wasmtime::StoreLimits,
    hooks: OutboundPolicy,
    _lease: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl WasiView for HttpState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl InvocationState for HttpState {
    fn store_limits(&mut self) -> &mut wasmtime::StoreLimits {
        &mut self.limits
    }
}

impl WasiHttpView for HttpState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

pub(crate) async fn handle(
    pre: &ProxyPre<HttpState>,
    settings: &FunctionSettings,
    req: http::Request<Bytes>,
    inv: Invocation,
) -> Result<http::Response<ResponseBody>, InvokeError> {
    let limits = settings.limits;
    let mut wasi = settings.wasi(&inv);
    wasi.stdout(GuestLog::new(settings.name.clone(), inv.request_id.clone(), "stdout"));
    let state = HttpState {
        wasi: wasi.build(),
        http: WasiHttpCtx::new(),
        table: ResourceTable::new(),
        limits: limits.store_limits(),
        hooks: OutboundPolicy {
            grants: settings.grants.clone(),
            component: settings.name.clone(),
            request_id: inv.request_id.clone(),
        },
        _lease: inv.lease,
    };
    let (mut store, deadline) = limits.new_store(pre.engine(), state);

    let req = req.map(|b| Full::new(b).map_err(|never: Infallible| -> wasmtime_wasi_http::Error { match never {} }));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let responded = Arc::new(AtomicBool::new(false));
    let flag = responded.clone();
    let incoming = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
        .map_err(|e| InvokeError::Instantiate(format!("{e:#}")))?;
    let out = store
        .data_mut()
        .http()
        .new_response_outparam_from_callback(move |resp| {
            flag.store(true, Ordering::Release);
            let _ = tx.send(resp);
        })
        .map_err(|e| InvokeError::Instantiate(format!("{e:#}")))?;

    let pre = pre.clone();
    let name = settings.name.clone();
    let request_id = inv.request_id.clone();
    let mut run = Box::pin(async move {
        let call = async {
            let proxy =
                pre.instantiate_async(&mut store).await.map_err(|e| InvokeError::Instantiate(format!("{e:#}")))?;
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
        if let Err(e) = &result
            && responded.load(Ordering::Acquire)
        {
            tracing::warn!(component = %name, request_id = %request_id, error = %e, "guest failed after sending the response head; the body was cut short");
        }
        result
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

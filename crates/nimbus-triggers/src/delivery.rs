//! Delivery of events to one component — a function's `nimbus:events/handler`, or a service as
//! an HTTP POST in binary mode — through the component's admission control, like its HTTP
//! requests, in a consumer span continuing the trace the event carries.
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use nimbus_bus::dispatch::{DeliveryError, Destination};
use nimbus_bus::{AttributesReader, Event};
use nimbus_observe::{Span, SpanKind, Telemetry, Tracer};
use nimbus_target::{Backend, Target};
use nimbus_wasm::{EventError, Invocation};

/// Delivers events to one component.
#[derive(Debug)]
pub struct ComponentDestination {
    tracer: Tracer,
    target: Arc<Target>,
    /// Service: the path events are POSTed to.
    path: String,
    /// The trigger, for invocation logs (`topic:orders`).
    trigger: String,
}

impl ComponentDestination {
    /// Delivers to `target`; `path` is where a service gets the events (default `/`), `trigger`
    /// names the trigger in logs and spans (`topic:orders`).
    pub fn new(tracer: Tracer, target: Arc<Target>, path: Option<&str>, trigger: String) -> Self {
        Self { tracer, target, path: path.unwrap_or("/").to_string(), trigger }
    }

    async fn to_function(
        &self,
        f: &nimbus_wasm::Function,
        event: &Event,
        permit: tokio::sync::OwnedSemaphorePermit,
        span: &Span,
    ) -> Result<(), DeliveryError> {
        let mut inv = Invocation::new(&format!("evt-{}", event.id()), &self.trigger);
        inv.lease = Some(permit);
        inv.telemetry = Some(Telemetry { component: self.target.telemetry.clone(), parent: span.handle() });
        f.handle_event(event, inv).await.map_err(|e| match e {
            EventError::Rejected(m) => DeliveryError::permanent("rejected", m),
            EventError::Failed(m) => DeliveryError::retryable("failed", m),
            EventError::Invoke(e) if e.is_timeout() => DeliveryError::retryable("timeout", e.to_string()),
            EventError::Invoke(e) if e.is_capacity() => {
                DeliveryError::retryable("capacity", nimbus_observe::report(&e))
            }
            EventError::Invoke(nimbus_wasm::InvokeError::Unsupported(m)) => DeliveryError::permanent("unsupported", m),
            EventError::Invoke(e) => DeliveryError::retryable("trap", e.to_string()),
        })
    }

    async fn to_service(
        &self,
        s: &Arc<nimbus_services::Service>,
        event: &Event,
        span: &Span,
    ) -> Result<(), DeliveryError> {
        let (headers, body) = nimbus_bus::http::write_binary(event)
            .map_err(|e| DeliveryError::permanent("invalid-event", e.to_string()))?;
        let mut req = http::Request::post(&self.path)
            .body(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed())
            .map_err(|e| DeliveryError::permanent("invalid-path", e.to_string()))?;
        req.headers_mut().extend(headers);
        // The service continues the trace from the delivery's span.
        if let Some(ctx) = span.context().or_else(|| nimbus_bus::event::trace_context(event)) {
            ctx.inject(req.headers_mut());
        }
        let resp = s
            .handle(req, None, self.target.admission.queue_timeout())
            .await
            .map_err(|e| DeliveryError::retryable("unreachable", e.to_string()))?;
        let status = resp.status();
        let detail = answer_detail(resp.into_body()).await;
        match status.as_u16() {
            200..=299 => Ok(()),
            408 | 429 => Err(DeliveryError::retryable(format!("http-{}", status.as_u16()), detail)),
            400..=499 => Err(DeliveryError::permanent(format!("http-{}", status.as_u16()), detail)),
            _ => Err(DeliveryError::retryable(format!("http-{}", status.as_u16()), detail)),
        }
    }
}

/// The start of a service's answer to a delivery, as the error detail (its first 500
/// characters). The status already decided the outcome, so at most [`DETAIL_BYTES`] are read,
/// within [`DETAIL_TIME`]: a service cannot make a delivery buffer a huge body or wait for one
/// that stalls. A body that ends within both is read whole, so its connection is reused.
async fn answer_detail(body: nimbus_services::ServiceBody) -> String {
    let mut head = Vec::new();
    let read = async {
        let mut body = std::pin::pin!(body);
        while head.len() < DETAIL_BYTES
            && let Some(Ok(frame)) = body.frame().await
        {
            if let Some(data) = frame.data_ref() {
                head.extend_from_slice(&data[..data.len().min(DETAIL_BYTES - head.len())]);
            }
        }
    };
    let _ = tokio::time::timeout(DETAIL_TIME, read).await;
    String::from_utf8_lossy(&head).chars().take(500).collect()
}

/// The most of a service's answer to a delivery that is read (the detail is 500 characters).
const DETAIL_BYTES: usize = 4096;
/// How long the rest of a service's answer to a delivery is waited for, once its status is in.
const DETAIL_TIME: Duration = Duration::from_secs(5);

#[async_trait]
impl Destination for ComponentDestination {
    fn name(&self) -> String {
        match &self.target.backend {
            Backend::Function(f) => format!("function:{}", f.name()),
            Backend::Service(s) => format!("service:{}", s.name()),
        }
    }

    /// One delivery attempt, in a consumer span (`process topic:orders`) continuing the trace
    /// the event carries.
    async fn deliver(&self, event: &Event) -> Result<(), DeliveryError> {
        let telemetry = &self.target.telemetry;
        let mut span = self.tracer.start("process", SpanKind::Consumer, nimbus_bus::event::trace_context(event));
        if span.is_recording() {
            span.rename(format!("process {}", self.trigger));
            span.set("messaging.system", "nimbus");
            span.set("messaging.operation.type", "process");
            span.set("messaging.message.id", event.id().to_string());
            span.set("nimbus.trigger", self.trigger.clone());
            span.set("nimbus.component", telemetry.component.to_string());
        }
        let started = Instant::now();
        let result = self.attempt(event, &span).await;
        let outcome = match &result {
            Ok(()) => "ok",
            Err(e) if !e.retry => "rejected",
            Err(_) => "failed",
        };
        if let Err(e) = &result {
            span.set_error(outcome, format!("{}: {}", e.code, e.message));
        }
        telemetry.metrics.invocation("event", outcome, started.elapsed());
        result
    }
}

impl ComponentDestination {
    async fn attempt(&self, event: &Event, span: &Span) -> Result<(), DeliveryError> {
        let permit = {
            let _waiting = span.child("admission", SpanKind::Internal);
            // An app over its budget's hard limit holds its deliveries (they stay in the topic)
            // without using up their attempts.
            self.target.admit_when_open().await
        }
        .map_err(|why| DeliveryError::retryable("capacity", format!("component at capacity ({why:?})")))?;
        match &self.target.backend {
            Backend::Function(f) => self.to_function(f, event, permit, span).await,
            Backend::Service(s) => self.to_service(s, event, span).await,
        }
    }
}

//! The `nimbus:workflow` executor: a workflow's `run` in a fresh instance whose
//! `nimbus:workflow/context` calls go to a [`WorkflowDriver`] (the engine of `nimbus-workflows`,
//! which journals them and answers replays), and each step in a fresh instance of its own.
//!
//! `run` is orchestration: its timeout (`limits.timeout_ms`) counts only the time the guest
//! itself runs, not the time the driver spends on steps, timers and signals, so a run that waits
//! days is fine while a `run` that loops is stopped. When the driver cannot go on (the run must
//! wait for a timer or a signal, was cancelled, or replayed differently) it answers
//! [`Interrupted`]; the instance is then torn down and [`Function::run_workflow`] returns
//! [`RunOutcome::Interrupted`] — the driver knows why. `nimbus:workflow/context` is linked only
//! into components that export `nimbus:workflow/handler`; in a step's instance it traps.
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use nimbus_observe::{SpanKind, SpanRef};
use wasmtime::component::{HasData, Linker};

use crate::guest::GuestState;
use crate::scope::Run;
use crate::{Function, Invocation, InvokeError};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/nimbus-workflow",
        world: "workflow",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub(crate) use bindings::WorkflowPre;
use bindings::nimbus::workflow::{context, types};

/// How a failed step is retried (`retry-policy`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all; 1 is never retried.
    pub max_attempts: u32,
    /// The wait after the first failure.
    pub initial_backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
    /// What each wait is multiplied by after the next failure.
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.max(1.0).powi(attempt.saturating_sub(1).min(64) as i32);
        self.initial_backoff.mul_f64(factor.min(1e9)).min(self.max_backoff)
    }
}

/// Options of one step (`step-options`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOptions {
    /// How it is retried.
    pub retry: RetryPolicy,
    /// Its timeout, if shorter than the component's.
    pub timeout: Option<Duration>,
    /// The step undoing it.
    pub compensate: Option<String>,
}

/// Why a step failed (`step-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    /// What went wrong.
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
}

impl StepFailure {
    /// A failure that retrying may cure.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true }
    }
}

/// What a step is told (`step-info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepInfo {
    /// The run.
    pub run_id: String,
    /// The same on every attempt of this journal position.
    pub idempotency_key: String,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// The driver stopped the run (why is the driver's to know).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the workflow run was interrupted by its engine")]
pub struct Interrupted;

/// What a driver answers.
pub type Driven<'a, T> = BoxFuture<'a, Result<T, Interrupted>>;

/// Journals and answers a workflow's `nimbus:workflow/context` calls: implemented by the
/// workflow engine, one per activation of a run.
pub trait WorkflowDriver: Send + 'static {
    /// `step`: the journaled outcome, or runs the step and journals it.
    fn step(&mut self, name: String, input: Vec<u8>, options: StepOptions) -> Driven<'_, Result<Vec<u8>, StepFailure>>;
    /// `sleep`: returns once the timer has fired (or interrupts the run until it does).
    fn sleep(&mut self, duration: Duration) -> Driven<'_, ()>;
    /// `await-signal`.
    fn await_signal(&mut self, name: String, timeout: Option<Duration>) -> Driven<'_, Option<Vec<u8>>>;
    /// `call`.
    fn call(&mut self, target: String, payload: Vec<u8>) -> Driven<'_, Result<Vec<u8>, String>>;
    /// `now`, in Unix milliseconds.
    fn now(&mut self) -> Driven<'_, u64>;
    /// `random`.
    fn random(&mut self) -> Driven<'_, u64>;
    /// The run's id.
    fn run_id(&self) -> String;
}

/// How `run` ended.
#[derive(Debug)]
pub enum RunOutcome {
    /// `run` returned: the run's output or its error.
    Returned(Result<Vec<u8>, String>),
    /// The driver interrupted it.
    Interrupted,
}

/// The workflow context of one instance: the driver while `run` runs, nothing in a step.
#[derive(Default)]
pub(crate) struct WorkflowCtx {
    driver: Option<Box<dyn WorkflowDriver>>,
    /// Time spent in the driver, which `run`'s timeout does not count.
    in_host: Duration,
}

impl WorkflowCtx {
    async fn drive<T>(
        &mut self,
        f: impl for<'a> FnOnce(&'a mut dyn WorkflowDriver) -> Driven<'a, T>,
    ) -> wasmtime::Result<T> {
        let Some(driver) = self.driver.as_deref_mut() else {
            return Err(wasmtime::Error::msg("nimbus:workflow/context is only available to `run`, not to a step"));
        };
        let started = Instant::now();
        let result = f(driver).await;
        self.in_host += started.elapsed();
        result.map_err(wasmtime::Error::new)
    }
}

impl types::Host for WorkflowCtx {}

impl context::Host for WorkflowCtx {
    async fn step(
        &mut self,
        name: String,
        input: Vec<u8>,
        options: types::StepOptions,
    ) -> wasmtime::Result<Result<Vec<u8>, types::StepError>> {
        let options = StepOptions {
            retry: options
                .retry
                .map(|r| RetryPolicy {
                    max_attempts: r.max_attempts.max(1),
                    initial_backoff: Duration::from_millis(r.initial_backoff_ms),
                    max_backoff: Duration::from_millis(r.max_backoff_ms),
                    multiplier: if r.backoff_multiplier.is_finite() { r.backoff_multiplier } else { 1.0 },
                })
                .unwrap_or_default(),
            timeout: options.timeout_ms.map(Duration::from_millis),
            compensate: options.compensate,
        };
        let outcome = self.drive(|d| d.step(name, input, options)).await?;
        Ok(outcome.map_err(|f| types::StepError { message: f.message, retryable: f.retryable }))
    }

    async fn sleep(&mut self, duration_ms: u64) -> wasmtime::Result<()> {
        self.drive(|d| d.sleep(Duration::from_millis(duration_ms))).await
    }

    async fn await_signal(&mut self, name: String, timeout_ms: Option<u64>) -> wasmtime::Result<Option<Vec<u8>>> {
        self.drive(|d| d.await_signal(name, timeout_ms.map(Duration::from_millis))).await
    }

    async fn call(&mut self, target: String, payload: Vec<u8>) -> wasmtime::Result<Result<Vec<u8>, String>> {
        self.drive(|d| d.call(target, payload)).await
    }

    async fn now(&mut self) -> wasmtime::Result<u64> {
        self.drive(|d| d.now()).await
    }

    async fn random(&mut self) -> wasmtime::Result<u64> {
        self.drive(|d| d.random()).await
    }

    async fn run_id(&mut self) -> wasmtime::Result<String> {
        self.drive(|d| {
            let id = d.run_id();
            Box::pin(async move { Ok(id) })
        })
        .await
    }
}

struct HasWorkflow;

impl HasData for HasWorkflow {
    type Data<'a> = &'a mut WorkflowCtx;
}

/// Links `nimbus:workflow/context`.
pub(crate) fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    bindings::Workflow::add_to_linker::<_, HasWorkflow>(linker, |s| &mut s.workflow)
}

/// Whether a compiled component exports `nimbus:workflow/handler`.
pub(crate) fn is_workflow(component: &wasmtime::component::Component, engine: &wasmtime::Engine) -> bool {
    component.component_type().exports(engine).any(|(name, _)| name.starts_with("nimbus:workflow/handler@"))
}

impl Function {
    /// Whether it is a workflow (`nimbus:workflow/handler`).
    pub fn handles_workflow(&self) -> bool {
        self.workflow().is_some()
    }

    fn workflow(&self) -> Option<&WorkflowPre<GuestState>> {
        match &*self.executor {
            crate::Executor::Component { workflow, .. } => workflow.as_ref(),
            crate::Executor::Wagi(_) => None,
        }
    }

    /// Calls the workflow's `run(input)` in a fresh instance whose context calls go to
    /// `driver`. Its timeout counts the guest's own time only.
    pub async fn run_workflow(
        &self,
        input: &[u8],
        driver: Box<dyn WorkflowDriver>,
        mut inv: Invocation,
    ) -> Result<RunOutcome, InvokeError> {
        let pre = self.workflow().ok_or(InvokeError::Unsupported("it does not export `nimbus:workflow/handler`"))?;
        let settings = &self.settings;
        let limits = settings.limits;
        let mut run = Run::start(settings, &mut inv, || None);
        let mut guest = GuestState::new(settings, &run.scope, inv.lease);
        guest.workflow = WorkflowCtx { driver: Some(driver), in_host: Duration::ZERO };
        let mut store = limits.new_guest_time_store(pre.engine(), guest, |g| g.workflow.in_host);
        let scope = run.scope.clone();
        let result = nimbus_observe::Busy::new(
            async {
                let instance = run.instantiate(settings, pre.instantiate_async(&mut store)).await?;
                match instance.nimbus_workflow_handler().call_run(&mut store, input).await {
                    Ok(returned) => Ok(RunOutcome::Returned(returned)),
                    Err(e) if e.downcast_ref::<Interrupted>().is_some() => Ok(RunOutcome::Interrupted),
                    Err(e) => Err(InvokeError::from_wasmtime(&e, limits.timeout)),
                }
            },
            &scope.telemetry.usage,
        )
        .await;
        drop(store);
        run.finish(result.as_ref().err().map(|e| e as _));
        result
    }

    /// Runs the workflow's step `name` in a fresh instance, stopped after `timeout` (at most the
    /// component's own).
    pub async fn run_step(
        &self,
        name: &str,
        input: &[u8],
        info: &StepInfo,
        timeout: Option<Duration>,
        mut inv: Invocation,
    ) -> Result<Result<Vec<u8>, StepFailure>, InvokeError> {
        let pre = self.workflow().ok_or(InvokeError::Unsupported("it does not export `nimbus:workflow/handler`"))?;
        let settings = &self.settings;
        let mut limits = settings.limits;
        limits.timeout = timeout.map_or(limits.timeout, |t| t.min(limits.timeout));
        let mut run = Run::start(settings, &mut inv, || None);
        let guest = GuestState::new(settings, &run.scope, inv.lease);
        let (mut store, deadline) = limits.new_store(pre.engine(), guest);
        let info = types::StepInfo {
            run_id: info.run_id.clone(),
            idempotency_key: info.idempotency_key.clone(),
            attempt: info.attempt,
        };
        let scope = run.scope.clone();
        let call = async {
            let instance = run.instantiate(settings, pre.instantiate_async(&mut store)).await?;
            instance
                .nimbus_workflow_handler()
                .call_step(&mut store, name, input, &info)
                .await
                .map_err(|e| InvokeError::from_wasmtime(&e, limits.timeout))
        };
        let result =
            match nimbus_observe::Busy::new(tokio::time::timeout_at(deadline.into(), call), &scope.telemetry.usage)
                .await
            {
                Err(_) => Err(InvokeError::Timeout(limits.timeout)),
                Ok(r) => r,
            };
        drop(store);
        run.finish(result.as_ref().err().map(|e| e as _));
        Ok(result?.map_err(|e| StepFailure { message: e.message, retryable: e.retryable }))
    }

    /// Calls `target` for a workflow of this function: a component it may invoke (`NAME` or
    /// `APP/NAME`; `POST http://NAME.internal/` with `payload` and the `idempotency-key` header,
    /// a 2xx answer is the result) or an actor it may call (`actor:TYPE/KEY/METHOD`). A client
    /// span under `parent`.
    pub fn call_for_workflow(
        &self,
        target: &str,
        payload: Vec<u8>,
        idempotency_key: &str,
        request_id: &str,
        parent: &SpanRef,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let mut span = parent.child(format!("call {target}"), SpanKind::Client);
        if let Some(actor) = target.strip_prefix("actor:") {
            let Some((ty, rest)) = actor.split_once('/') else {
                return refuse(span, format!("`{target}` is not `actor:TYPE/KEY/METHOD`"));
            };
            let Some((key, method)) = rest.rsplit_once('/') else {
                return refuse(span, format!("`{target}` is not `actor:TYPE/KEY/METHOD`"));
            };
            let Some(client) = <crate::actor::ActorClient as crate::capability::Registered>::app(&self.settings.caps)
            else {
                return refuse(span, format!("actor type `{ty}` is not in grants.actors"));
            };
            let answer = client.call(ty, key, method, payload, request_id, span.handle());
            return Box::pin(async move {
                let result = answer.await;
                if let Err(e) = &result {
                    span.set_error("call", e);
                }
                result
            });
        }
        let (app, component) = match target.split_once('/') {
            Some((app, component)) => (Some(app.to_string()), component.to_string()),
            None => (None, target.to_string()),
        };
        let Some(outbound) = <crate::outbound::OutboundHttp as crate::capability::Registered>::app(&self.settings.caps)
        else {
            return refuse(span, "this function makes no calls".into());
        };
        let Some(own_app) = self.settings.app.get().cloned() else {
            return refuse(span, "the function is not part of an app".into());
        };
        let app = app.unwrap_or_else(|| own_app.to_string());
        if !outbound.grants.may_invoke(&own_app, &app, &component) {
            return refuse(span, format!("`{target}` is not in grants.invoke"));
        }
        let Some(mesh) = outbound.mesh.get().cloned() else {
            return refuse(span, "component-to-component calls are not served here".into());
        };
        let mut request = http::Request::post(format!("http://{component}.internal/"))
            .header(http::header::HOST, format!("{component}.internal"))
            .header("idempotency-key", idempotency_key)
            .body(crate::invoke::full_body(payload))
            .expect("a valid request");
        if let Some(ctx) = span.context() {
            ctx.inject(request.headers_mut());
        }
        let call = nimbus_security::mesh::Call {
            caller_app: own_app.to_string(),
            caller: self.settings.name.to_string(),
            app,
            component,
            depth: 1,
            request,
        };
        let answer = mesh.call(call);
        Box::pin(async move {
            use http_body_util::BodyExt;
            let resp = answer.await;
            let status = resp.status();
            span.set_http_status(status.as_u16());
            let body = resp.into_body().collect().await.map(|b| b.to_bytes().to_vec());
            let result = match body {
                Ok(body) if status.is_success() => Ok(body),
                Ok(body) => Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body))),
                Err(e) => Err(format!("the answer broke off: {e}")),
            };
            if let Err(e) = &result {
                span.set_error("call", e);
            }
            result
        })
    }
}

fn refuse(mut span: nimbus_observe::Span, why: String) -> BoxFuture<'static, Result<Vec<u8>, String>> {
    span.set_error("denied", &why);
    Box::pin(async move { Err(why) })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::RetryPolicy;

    #[test]
    fn backoff_grows_by_the_multiplier_up_to_its_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(700),
            multiplier: 2.0,
        };
        let waits: Vec<u64> = (1..=5).map(|a| p.backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 700, 700]);
        // A multiplier below 1 never shrinks the wait; a huge attempt number does not overflow.
        let flat = RetryPolicy { multiplier: 0.5, ..p };
        assert_eq!(flat.backoff(3), Duration::from_millis(100));
        assert_eq!(p.backoff(u32::MAX), Duration::from_millis(700));
    }
}

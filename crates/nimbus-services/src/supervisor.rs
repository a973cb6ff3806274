//! Keeps a service's processes running: start, wait for readiness, watch for exit and liveness
//! failures, replace with exponential backoff, and report a crash loop instead of hiding it.
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::instance::Instance;
use crate::probe;
use tokio::sync::watch;

use crate::Service;

/// First restart delay; doubles per consecutive failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A process that stayed ready this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Consecutive failures that make a crash loop.
const CRASH_LOOP_AFTER: u32 = 3;

/// How long a process being scaled down may take to finish its requests when the service has
/// no request time limit.
pub(crate) const MAX_DRAIN: Duration = Duration::from_secs(300);

/// Runs one process slot until the slot or the whole service is stopped.
pub(crate) async fn run_slot(service: Arc<Service>, slot: u64, mut stop: watch::Receiver<bool>) {
    let spec = &service.spec;
    let mut failures: u32 = 0;
    let stopped = |stop: &watch::Receiver<bool>| *stop.borrow() || service.is_stopping();
    while !stopped(&stop) {
        let started = Instant::now();
        // A service whose identity could not be set up fails each start with why.
        let spawned = match service.identity.as_ref().map(Result::as_ref).transpose() {
            Ok(identity) => Instance::spawn(spec, identity).await,
            Err(e) => Err(e.clone()),
        };
        let outcome = match spawned {
            Ok(instance) => run_instance(&service, slot, &mut stop, instance).await,
            Err(e) => Err(e),
        };
        if stopped(&stop) {
            break;
        }
        let reason = match outcome {
            Ok(()) => break,
            Err(reason) => reason,
        };
        failures = if started.elapsed() >= STABLE_AFTER { 1 } else { failures + 1 };
        let backoff = FIRST_BACKOFF.saturating_mul(1 << (failures - 1).min(16)).min(MAX_BACKOFF);
        service.record_failure(&reason, failures >= CRASH_LOOP_AFTER);
        if failures >= CRASH_LOOP_AFTER {
            tracing::error!(component = %spec.name, failures, ?backoff, %reason, "service is crash-looping; retrying with backoff");
        } else {
            tracing::warn!(component = %spec.name, ?backoff, %reason, "service process failed; restarting");
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => break,
            () = service.stopping() => break,
        }
    }
}

/// Readiness, then service until the process exits, fails liveness, or its slot or the service
/// stops. `Ok` only when stopped on purpose.
async fn run_instance(
    service: &Arc<Service>,
    slot: u64,
    stop: &mut watch::Receiver<bool>,
    instance: Arc<Instance>,
) -> Result<(), String> {
    let spec = &service.spec;
    let metrics = &spec.telemetry.metrics;
    let starting = Instant::now();
    let ready = tokio::select! {
        r = wait_ready(service, &instance) => r,
        _ = stop.wait_for(|s| *s) => Err("stopped while starting".into()),
    };
    if let Err(e) = ready {
        instance.terminate(spec.grace).await;
        return if *stop.borrow() { Ok(()) } else { Err(e) };
    }
    // Cold: nothing was ready to serve (first start, or scaling from zero); warm: a scale-up
    // or prewarm next to running instances.
    let cold = service.ready_count() == 0;
    if !service.add_ready(slot, instance.clone()) {
        instance.terminate(spec.grace).await;
        return Ok(());
    }
    metrics.instantiated(cold, starting.elapsed());
    metrics.instances.inc();
    tracing::info!(component = %spec.name, instance = instance.id, port = instance.port, "service instance ready");
    let ended = tokio::select! {
        status = instance.exited() => Err(instance.describe_exit(status)),
        reason = liveness(service, &instance) => Err(reason),
        never = meter_memory(&instance, &spec.telemetry) => match never {},
        _ = stop.wait_for(|s| *s) => Ok(()),
        () = service.stopping() => Ok(()),
    };
    service.remove(slot, &instance);
    metrics.instances.dec();
    match &ended {
        Err(_) => metrics.eviction("crash"),
        Ok(()) if !service.is_stopping() => metrics.eviction("idle"),
        Ok(()) => {}
    }
    if ended.is_ok() {
        // Scaled down, or the service stops: let its requests finish before it is told to stop.
        instance.drain(spec.timeout.unwrap_or(MAX_DRAIN)).await;
    }
    let status = instance.terminate(spec.grace).await;
    if ended.is_ok() {
        tracing::info!(component = %spec.name, instance = instance.id, %status, "service instance stopped");
    }
    ended
}

async fn wait_ready(service: &Service, instance: &Instance) -> Result<(), String> {
    let probe = &service.spec.readiness;
    let deadline = Instant::now() + Duration::from_secs(probe.start_timeout_s);
    loop {
        if let Some(status) = instance.exit_status() {
            return Err(format!("{} before it was ready", instance.describe_exit(status)));
        }
        let Err(last) = probe::check(&instance.dial, probe).await else { return Ok(()) };
        if Instant::now() >= deadline {
            return Err(format!("not ready within {}s: {last}", probe.start_timeout_s));
        }
        if service.is_stopping() {
            return Err("stopping".into());
        }
        // Poll fast at first: most processes are ready within milliseconds.
        tokio::time::sleep(Duration::from_millis(20).min(Duration::from_millis(probe.period_ms))).await;
    }
}

/// Keeps the instance's resident memory in its component's `nimbus_memory_bytes` (sampled every
/// second) until dropped, when its share is taken out again; meters its lifetime, memory-time
/// and CPU time at each sample.
async fn meter_memory(instance: &Instance, telemetry: &nimbus_observe::ComponentTelemetry) -> std::convert::Infallible {
    struct Share<'a>(&'a nimbus_observe::Gauge, i64);
    impl Drop for Share<'_> {
        fn drop(&mut self) {
            self.0.dec_by(self.1);
        }
    }
    let mut share = Share(&telemetry.metrics.memory, 0);
    let (mut sampled, mut cpu) = (Instant::now(), Duration::ZERO);
    loop {
        let now = instance.resident_bytes().map_or(0, |b| i64::try_from(b).unwrap_or(i64::MAX));
        share.0.inc_by(now - share.1);
        share.1 = now;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let used = instance.cpu_time();
        telemetry.usage.service_sample(sampled.elapsed(), now.unsigned_abs(), used.saturating_sub(cpu));
        (sampled, cpu) = (Instant::now(), used);
    }
}

/// Resolves when the liveness probe failed `failure_threshold` times in a row (never without one).
async fn liveness(service: &Service, instance: &Instance) -> String {
    let Some(probe) = &service.spec.liveness else { return std::future::pending().await };
    let mut failed = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(probe.period_ms)).await;
        match probe::check(&instance.dial, probe).await {
            Ok(()) => failed = 0,
            Err(e) => {
                failed += 1;
                tracing::warn!(component = %service.spec.name, instance = instance.id, failed, error = %e, "liveness probe failed");
                if failed >= probe.failure_threshold {
                    return format!("liveness probe failed {failed} times: {e}");
                }
            }
        }
    }
}

//! The autoscaler, after Knative's KPA: observed concurrency (requests in flight plus requests
//! waiting for a process) is sampled every tick and averaged over a stable window and a panic
//! window; processes = ceil(average / target_concurrency). A burst that needs
//! `panic_threshold_pct` % of the running processes switches to the panic window and forbids
//! scaling down until a stable window has passed. `min`/`max` bound it, `warm` spares are added,
//! and the last process stops only after `idle_timeout_s` without a request. A request that finds
//! no process pokes the autoscaler, so scaling from zero does not wait for a tick. A service
//! placed on other nodes keeps no process (neither `min` nor spares) beyond what requests
//! forwarded to this node need while they last; one placed on several nodes keeps this node's
//! share of `min` ([`crate::Placed::Shared`]).
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Service;

/// How often concurrency is sampled and the decision taken.
const TICK: Duration = Duration::from_millis(100);

/// What the autoscaler computed from its windows.
#[derive(Debug, Default)]
struct Windows {
    samples: VecDeque<(Instant, usize)>,
    panic_until: Option<Instant>,
    last_active: Option<Instant>,
}

impl Windows {
    fn average(&self, now: Instant, window: Duration) -> f64 {
        let recent: Vec<usize> = self.samples.iter().filter(|(t, _)| now - *t <= window).map(|(_, v)| *v).collect();
        if recent.is_empty() { 0.0 } else { recent.iter().sum::<usize>() as f64 / recent.len() as f64 }
    }
}

pub(crate) async fn run(service: Arc<Service>) {
    let scale = service.spec.scale.clone();
    let stable_window = Duration::from_secs(scale.stable_window_s);
    let panic_window = Duration::from_secs(scale.panic_window_s);
    let idle = Duration::from_secs(scale.idle_timeout_s);
    let target = f64::from(scale.target_concurrency);
    let mut w = Windows { last_active: Some(Instant::now()), ..Windows::default() };
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = service.poked.notified() => {}
            () = service.stopping() => return,
        }
        let now = Instant::now();
        let (observed, waiting) = service.load();
        if observed > 0 {
            w.last_active = Some(now);
        }
        w.samples.push_back((now, observed));
        while w.samples.front().is_some_and(|(t, _)| now - *t > stable_window) {
            w.samples.pop_front();
        }
        let current = service.process_count();
        let want_stable = (w.average(now, stable_window) / target).ceil() as u32;
        let want_panic = (w.average(now, panic_window) / target).ceil() as u32;
        let running = service.ready_count().max(1) as f64;
        if observed > 0 && f64::from(want_panic) * 100.0 / running >= f64::from(scale.panic_threshold_pct) {
            if w.panic_until.is_none_or(|t| t <= now) {
                tracing::info!(component = %service.spec.name, want_panic, "autoscaler: burst, entering panic mode");
            }
            w.panic_until = Some(now + stable_window);
        }
        let panicking = w.panic_until.is_some_and(|t| t > now);
        let mut want = if panicking { want_panic.max(current.saturating_sub(scale.warm)) } else { want_stable };
        if waiting > 0 {
            // Requests wait and nothing serves them: at least one process, now.
            want = want.max(1);
        }
        if want == 0 && w.last_active.is_some_and(|t| now - t < idle) {
            // Not idle long enough to stop the last process.
            want = current.saturating_sub(scale.warm).min(1);
        }
        let total = if !service.is_elsewhere() {
            (want.clamp(service.min_here().min(scale.max), scale.max) + scale.warm).min(scale.max.max(scale.warm))
        } else if observed == 0 {
            // Placed on other nodes: no process unless a forwarded request is being served here.
            0
        } else {
            want.min(scale.max)
        };
        if total != current {
            let why = if panicking {
                "panic"
            } else if waiting > 0 {
                "requests waiting"
            } else {
                "stable"
            };
            tracing::info!(component = %service.spec.name, from = current, to = total, reason = why, "autoscaler: scaling");
            service.scale_to(total);
        }
    }
}

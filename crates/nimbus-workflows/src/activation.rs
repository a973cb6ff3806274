//! One activation of a run: `run` replayed in a fresh instance against the journal until it
//! returns or is interrupted, then the run's new status stored; and the compensation of a run
//! that failed or was cancelled.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use nimbus_observe::{SpanKind, SpanRef, Telemetry};
use nimbus_state::journal::{Entry, EntryKind, JournalError, Outcome, Run, RunStatus};
use nimbus_wasm::{Invocation, RetryPolicy, RunOutcome, StepOptions};

use crate::driver::{Activation, Interrupt, ReplayDriver};
use crate::engine::{Engine, now_ms};
use crate::steps::{Def, run_step};

/// How long a run whose replay found no free instance waits before trying again.
const CAPACITY_RETRY_MS: u64 = 100;
/// Attempts of an undo step.
const COMPENSATION_ATTEMPTS: u32 = 5;

/// Drives `id` one activation further; an error leaves the run as it was stored (to try again).
pub(crate) async fn activate(engine: &Arc<Engine>, id: &str) -> Result<(), JournalError> {
    let journal = &engine.journal;
    let Some((mut run, mut rev)) = journal.run(id).await? else { return Ok(()) };
    if run.status.is_finished() {
        return Ok(());
    }
    let Some(def) = engine.def(&run.revision, &run.workflow) else {
        tracing::debug!(run = %id, revision = %run.revision, "the run's revision is not loaded here; it waits for it");
        return Ok(());
    };
    let mut span = engine.tracer.start(format!("workflow {}", run.workflow), SpanKind::Internal, None);
    span.set_with("nimbus.workflow.run", || id.to_string());
    span.set_with("nimbus.workflow.revision", || run.revision.clone());
    span.set_with("nimbus.component", || def.target.telemetry.component.to_string());
    let entries = journal.entries(id).await?;
    if run.status == RunStatus::Compensating || run.cancel_requested {
        return compensate(engine, &def, run, rev, entries, &span.handle()).await;
    }
    if run.status != RunStatus::Running {
        run.status = RunStatus::Running;
        run.wake_ms = None;
        run.updated_ms = now_ms();
        rev = journal.update(&run, rev).await?;
    }
    let state = Arc::new(Mutex::new(Activation { entries, interrupt: None, replayed: 0 }));
    let driver = ReplayDriver::new(engine.clone(), def.clone(), &run, state.clone(), span.handle());
    // Over its budget's hard limit, the app's runs wait rather than run.
    def.target.until_open().await;
    let mut inv = Invocation::new(id, "workflow");
    inv.telemetry = Some(Telemetry { component: def.target.telemetry.clone(), parent: span.handle() });
    let outcome = def.function.run_workflow(&run.input, Box::new(driver), inv).await;
    let Activation { entries, interrupt, replayed } = std::mem::take(&mut *state.lock().expect("activation"));
    run.updated_ms = now_ms();
    match (outcome, interrupt) {
        (Ok(RunOutcome::Returned(Ok(output))), _) if replayed < entries.len() => {
            let message = format!(
                "non-deterministic replay: `run` returned after {replayed} journal positions, but the journal has {}; \
                 the code of revision `{}` no longer does what this run did",
                entries.len(),
                run.revision
            );
            drop(output);
            fail(engine, run, rev, message, &mut span).await
        }
        (Ok(RunOutcome::Returned(Ok(output))), _) => {
            run.status = RunStatus::Completed;
            run.output = Some(output);
            match journal.update(&run, rev).await {
                Err(JournalError::TooLarge { .. }) => {
                    let message = "the run's output is over the journal's limit; return a key to the data instead";
                    run.output = None;
                    run.error = Some(message.into());
                    run.status = RunStatus::Compensating;
                    compensate(engine, &def, run, rev, entries, &span.handle()).await
                }
                other => {
                    other?;
                    engine.announce(id);
                    Ok(())
                }
            }
        }
        (Ok(RunOutcome::Returned(Err(message))), _) => {
            let message = bounded(message);
            span.set_error("workflow", &message);
            run.error = Some(message);
            compensate(engine, &def, run, rev, entries, &span.handle()).await
        }
        (Ok(RunOutcome::Interrupted), Some(Interrupt::Suspend(wake))) => {
            run.status = RunStatus::Waiting;
            run.wake_ms = wake;
            journal.update(&run, rev).await?;
            if let Some(at) = wake {
                engine.wake_at(at, id);
            }
            Ok(())
        }
        (Ok(RunOutcome::Interrupted), Some(Interrupt::Diverged(message))) => {
            fail(engine, run, rev, message, &mut span).await
        }
        (Ok(RunOutcome::Interrupted), Some(Interrupt::Fatal(message))) => {
            span.set_error("workflow", &message);
            run.error = Some(message);
            compensate(engine, &def, run, rev, entries, &span.handle()).await
        }
        (Ok(RunOutcome::Interrupted), Some(Interrupt::Cancelled)) => {
            // The cancellation changed the stored run after this activation read it.
            let Some((run, rev)) = journal.run(id).await? else { return Ok(()) };
            compensate(engine, &def, run, rev, entries, &span.handle()).await
        }
        (Ok(RunOutcome::Interrupted), Some(Interrupt::Store(e))) => Err(e),
        (Ok(RunOutcome::Interrupted), None) => Err(JournalError::Conflict),
        (Err(e), _) if e.is_capacity() => {
            // No instance free on the node: the run is fine, it goes on shortly.
            tracing::debug!(run = %id, error = %nimbus_observe::report(&e), "no instance for the run's replay");
            engine.wake_at(now_ms() + CAPACITY_RETRY_MS, id);
            Ok(())
        }
        (Err(e), _) => {
            let message = format!("`run` failed: {}", nimbus_observe::report(&e));
            span.set_error("workflow", &message);
            run.error = Some(message);
            compensate(engine, &def, run, rev, entries, &span.handle()).await
        }
    }
}

/// The longest error message kept in a run or journal entry.
const MAX_ERROR_BYTES: usize = 16 * 1024;

/// `message`, cut to [`MAX_ERROR_BYTES`] (at a character boundary) with a mark where it was cut.
pub(crate) fn bounded(mut message: String) -> String {
    if message.len() > MAX_ERROR_BYTES {
        let mut at = MAX_ERROR_BYTES;
        while !message.is_char_boundary(at) {
            at -= 1;
        }
        message.truncate(at);
        message.push_str("… (cut)");
    }
    message
}

/// Fails a run without compensating (its replay diverged: the undo steps may be gone too).
async fn fail(
    engine: &Engine,
    mut run: Run,
    rev: u64,
    message: String,
    span: &mut nimbus_observe::Span,
) -> Result<(), JournalError> {
    tracing::warn!(app = %engine.app, run = %run.id, error = %message, "workflow run failed");
    span.set_error("non_deterministic", &message);
    run.status = RunStatus::Failed;
    run.error = Some(message);
    engine.journal.update(&run, rev).await?;
    engine.announce(&run.id);
    Ok(())
}

/// Runs the undo steps the run's successful steps registered, newest first, each journaled
/// once, then ends the run `failed` (or `cancelled`).
async fn compensate(
    engine: &Engine,
    def: &Def,
    mut run: Run,
    mut rev: u64,
    entries: Vec<(Entry, u64)>,
    parent: &SpanRef,
) -> Result<(), JournalError> {
    let journal = &engine.journal;
    while run.status != RunStatus::Compensating {
        run.status = RunStatus::Compensating;
        run.updated_ms = now_ms();
        match journal.update(&run, rev).await {
            Ok(new) => rev = new,
            // A cancellation was stored meanwhile: keep it, and why the run failed.
            Err(JournalError::Conflict) => {
                let Some((stored, stored_rev)) = journal.run(&run.id).await? else { return Ok(()) };
                if stored.status.is_finished() {
                    return Ok(());
                }
                let error = run.error.take();
                (run, rev) = (stored, stored_rev);
                run.error = run.error.take().or(error);
            }
            Err(e) => return Err(e),
        }
    }
    let done: HashSet<u32> =
        entries.iter().filter(|(e, _)| e.kind == EntryKind::Compensation).filter_map(|(e, _)| e.undoes).collect();
    let mut failures = Vec::new();
    let mut pos = entries.len() as u32;
    let options = StepOptions {
        retry: RetryPolicy { max_attempts: COMPENSATION_ATTEMPTS, ..RetryPolicy::default() },
        ..StepOptions::default()
    };
    for (i, (entry, _)) in entries.iter().enumerate().rev() {
        let (EntryKind::Step, Outcome::Ok, Some(undo)) = (entry.kind, &entry.outcome, &entry.compensate) else {
            continue;
        };
        if done.contains(&(i as u32)) {
            continue;
        }
        let started = now_ms();
        let key = format!("{}/undo/{i}", run.id);
        let (result, attempts) = run_step(def, &run.id, undo, &entry.payload, &options, &key, parent).await;
        let mut record = Entry::new(EntryKind::Compensation, undo.clone(), started);
        record.undoes = Some(i as u32);
        record.attempts = attempts;
        // An undo step's output is not needed afterwards: only that it ran is journaled (so
        // no output can be too large to journal, which would leave the run compensating).
        let record = match result {
            Ok(_) => record.finish(Outcome::Ok, Vec::new(), now_ms()),
            Err(f) => {
                let message = bounded(f.message);
                failures.push(format!("undo step `{undo}` (of step `{}`) failed: {message}", entry.name));
                record.finish(Outcome::Err, message.into_bytes(), now_ms())
            }
        };
        journal.append(&run.id, pos, &record).await?;
        pos += 1;
    }
    run.status = if run.cancel_requested && run.error.is_none() { RunStatus::Cancelled } else { RunStatus::Failed };
    if !failures.is_empty() {
        let before = run.error.take().map(|e| format!("{e}; ")).unwrap_or_default();
        run.error = Some(format!("{before}{}", failures.join("; ")));
    }
    run.error = run.error.take().map(bounded);
    run.updated_ms = now_ms();
    journal.update(&run, rev).await?;
    engine.announce(&run.id);
    Ok(())
}

//! The [`WorkflowDriver`] of one activation: answers `run`'s context calls from the journal
//! while replaying, and past its end does the work and journals it before answering.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nimbus_observe::{SpanKind, SpanRef};
use nimbus_state::journal::{Entry, EntryKind, JournalError, Outcome, Run, Signal};
use nimbus_wasm::{Driven, Interrupted, StepFailure, StepOptions, WorkflowDriver};

use crate::engine::{Engine, now_ms};
use crate::steps::{Def, run_step};

/// Timers at most this long are waited for in the activation; longer ones suspend the run.
const IN_PROCESS_SLEEP_MS: u64 = 1_000;

/// Why the driver stopped `run`.
#[derive(Debug)]
pub(crate) enum Interrupt {
    /// Wait for the timer (Unix ms) or for a signal (`None`: no deadline).
    Suspend(Option<u64>),
    /// The replay asked for something else than the journal holds.
    Diverged(String),
    /// A journal entry could not be kept (too large, journal full): the run fails.
    Fatal(String),
    /// The run is to be cancelled.
    Cancelled,
    /// The store failed, or another engine wrote the run's journal: try again later.
    Store(JournalError),
}

/// What one activation shares with its driver.
#[derive(Debug, Default)]
pub(crate) struct Activation {
    /// The journal, as read at the start plus what this activation appended.
    pub(crate) entries: Vec<(Entry, u64)>,
    pub(crate) interrupt: Option<Interrupt>,
    /// Positions `run` went through.
    pub(crate) replayed: usize,
}

pub(crate) struct ReplayDriver {
    engine: Arc<Engine>,
    def: Def,
    run_id: String,
    state: Arc<Mutex<Activation>>,
    span: SpanRef,
    /// The run's signals, read when first needed.
    signals: Option<Vec<Signal>>,
}

impl ReplayDriver {
    pub(crate) fn new(engine: Arc<Engine>, def: Def, run: &Run, state: Arc<Mutex<Activation>>, span: SpanRef) -> Self {
        Self { engine, def, run_id: run.id.clone(), state, span, signals: None }
    }

    fn stop(&self, why: Interrupt) -> Interrupted {
        self.state.lock().expect("activation").interrupt = Some(why);
        Interrupted
    }

    /// The next position, and its journaled entry if replaying; a different kind or name there
    /// stops the run.
    fn next(&self, kind: EntryKind, name: &str) -> Result<(u32, Option<(Entry, u64)>), Interrupted> {
        if self.engine.cancel_requested(&self.run_id) {
            return Err(self.stop(Interrupt::Cancelled));
        }
        let mut state = self.state.lock().expect("activation");
        let pos = state.replayed;
        state.replayed += 1;
        let Some((entry, rev)) = state.entries.get(pos).cloned() else { return Ok((pos as u32, None)) };
        drop(state);
        if entry.kind != kind || entry.name != name {
            let asked = Entry::new(kind, name, 0);
            let message = format!(
                "non-deterministic replay at step {}: expected {}, got {}",
                pos + 1,
                entry.describe(),
                asked.describe()
            );
            return Err(self.stop(Interrupt::Diverged(message)));
        }
        Ok((pos as u32, Some((entry, rev))))
    }

    /// Journals a new entry at `pos`.
    async fn append(&self, pos: u32, entry: Entry) -> Result<(), Interrupted> {
        match self.engine.journal.append(&self.run_id, pos, &entry).await {
            Ok(rev) => {
                self.state.lock().expect("activation").entries.push((entry, rev));
                Ok(())
            }
            Err(e) => Err(self.stop_for(e)),
        }
    }

    /// Rewrites the pending entry at `pos` (journaled at `rev`).
    async fn replace(&self, pos: u32, entry: Entry, rev: u64) -> Result<(), Interrupted> {
        match self.engine.journal.replace(&self.run_id, pos, &entry, rev).await {
            Ok(rev) => {
                self.state.lock().expect("activation").entries[pos as usize] = (entry, rev);
                Ok(())
            }
            Err(e) => Err(self.stop_for(e)),
        }
    }

    fn stop_for(&self, e: JournalError) -> Interrupted {
        match e {
            JournalError::TooLarge { .. } | JournalError::Full => self.stop(Interrupt::Fatal(e.to_string())),
            e => self.stop(Interrupt::Store(e)),
        }
    }

    fn idempotency_key(&self, pos: u32) -> String {
        format!("{}/{pos}", self.run_id)
    }

    async fn value(&mut self, kind: EntryKind, make: impl FnOnce() -> u64) -> Result<u64, Interrupted> {
        let (pos, replayed) = self.next(kind, "")?;
        if let Some((entry, _)) = replayed {
            return Ok(String::from_utf8_lossy(&entry.payload).parse().unwrap_or_default());
        }
        let value = make();
        let now = now_ms();
        self.append(pos, Entry::new(kind, "", now).finish(Outcome::Ok, value.to_string().into_bytes(), now)).await?;
        Ok(value)
    }

    /// The first signal `name` no journal entry consumed yet.
    async fn unconsumed(&mut self, name: &str) -> Result<Option<Signal>, Interrupted> {
        if self.signals.is_none() {
            match self.engine.journal.signals(&self.run_id).await {
                Ok(s) => self.signals = Some(s),
                Err(e) => return Err(self.stop_for(e)),
            }
        }
        let consumed: HashSet<u64> =
            self.state.lock().expect("activation").entries.iter().filter_map(|(e, _)| e.signal).collect();
        Ok(self.signals.iter().flatten().find(|s| s.name == name && !consumed.contains(&s.seq)).cloned())
    }
}

impl WorkflowDriver for ReplayDriver {
    fn step(&mut self, name: String, input: Vec<u8>, options: StepOptions) -> Driven<'_, Result<Vec<u8>, StepFailure>> {
        Box::pin(async move {
            let (pos, replayed) = self.next(EntryKind::Step, &name)?;
            if let Some((entry, _)) = replayed {
                return Ok(match entry.outcome {
                    Outcome::Ok => Ok(entry.payload),
                    _ => Err(StepFailure {
                        message: String::from_utf8_lossy(&entry.payload).into_owned(),
                        retryable: false,
                    }),
                });
            }
            let started = now_ms();
            let key = self.idempotency_key(pos);
            let (result, attempts) = run_step(&self.def, &self.run_id, &name, &input, &options, &key, &self.span).await;
            let mut entry = Entry::new(EntryKind::Step, name, started);
            entry.attempts = attempts;
            let entry = match &result {
                Ok(output) => {
                    entry.compensate = options.compensate;
                    entry.finish(Outcome::Ok, output.clone(), now_ms())
                }
                Err(f) => {
                    entry.finish(Outcome::Err, crate::activation::bounded(f.message.clone()).into_bytes(), now_ms())
                }
            };
            self.append(pos, entry).await?;
            Ok(result)
        })
    }

    fn sleep(&mut self, duration: Duration) -> Driven<'_, ()> {
        Box::pin(async move {
            let (pos, replayed) = self.next(EntryKind::Timer, "")?;
            let due = match replayed {
                Some((entry, _)) => entry.due_ms.unwrap_or_default(),
                None => {
                    let now = now_ms();
                    let mut entry = Entry::new(EntryKind::Timer, "", now);
                    let due = now.saturating_add(duration.as_millis() as u64);
                    entry.due_ms = Some(due);
                    entry.outcome = Outcome::Ok;
                    self.append(pos, entry).await?;
                    due
                }
            };
            let now = now_ms();
            if due > now + IN_PROCESS_SLEEP_MS {
                return Err(self.stop(Interrupt::Suspend(Some(due))));
            }
            if due > now {
                tokio::time::sleep(Duration::from_millis(due - now)).await;
            }
            let mut span = self.span.child("timer", SpanKind::Internal);
            span.set("nimbus.workflow.timer.due_ms", due as i64);
            span.set("nimbus.workflow.timer.late_ms", now_ms().saturating_sub(due) as i64);
            Ok(())
        })
    }

    fn await_signal(&mut self, name: String, timeout: Option<Duration>) -> Driven<'_, Option<Vec<u8>>> {
        Box::pin(async move {
            let (pos, replayed) = self.next(EntryKind::Signal, &name)?;
            let pending = match replayed {
                Some((entry, _)) if entry.outcome == Outcome::Ok => return Ok(Some(entry.payload)),
                Some((entry, _)) if entry.outcome == Outcome::TimedOut => return Ok(None),
                Some((entry, rev)) => Some((entry, rev)),
                None => None,
            };
            let now = now_ms();
            let entry = match &pending {
                Some((entry, _)) => entry.clone(),
                None => {
                    let mut entry = Entry::new(EntryKind::Signal, name.clone(), now);
                    entry.due_ms = timeout.map(|t| now.saturating_add(t.as_millis() as u64));
                    entry
                }
            };
            let (outcome, payload, signal) = match self.unconsumed(&name).await? {
                Some(s) => (Outcome::Ok, s.payload, Some(s.seq)),
                None if entry.due_ms.is_some_and(|due| due <= now) => (Outcome::TimedOut, Vec::new(), None),
                None => {
                    if pending.is_none() {
                        self.append(pos, entry.clone()).await?;
                    }
                    return Err(self.stop(Interrupt::Suspend(entry.due_ms)));
                }
            };
            let mut done = entry.finish(outcome, payload.clone(), now);
            done.signal = signal;
            match pending {
                Some((_, rev)) => self.replace(pos, done, rev).await?,
                None => self.append(pos, done).await?,
            }
            Ok(signal.map(|_| payload))
        })
    }

    fn call(&mut self, target: String, payload: Vec<u8>) -> Driven<'_, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let (pos, replayed) = self.next(EntryKind::Call, &target)?;
            if let Some((entry, _)) = replayed {
                return Ok(match entry.outcome {
                    Outcome::Ok => Ok(entry.payload),
                    _ => Err(String::from_utf8_lossy(&entry.payload).into_owned()),
                });
            }
            let started = now_ms();
            let key = self.idempotency_key(pos);
            let result = self.def.function.call_for_workflow(&target, payload, &key, &key, &self.span).await;
            let entry = Entry::new(EntryKind::Call, target, started);
            let entry = match &result {
                Ok(output) => entry.finish(Outcome::Ok, output.clone(), now_ms()),
                Err(e) => entry.finish(Outcome::Err, crate::activation::bounded(e.clone()).into_bytes(), now_ms()),
            };
            self.append(pos, entry).await?;
            Ok(result)
        })
    }

    fn now(&mut self) -> Driven<'_, u64> {
        Box::pin(self.value(EntryKind::Now, now_ms))
    }

    fn random(&mut self) -> Driven<'_, u64> {
        Box::pin(self.value(EntryKind::Random, || fastrand::u64(..)))
    }

    fn run_id(&self) -> String {
        self.run_id.clone()
    }
}

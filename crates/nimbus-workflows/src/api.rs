//! The HTTP answers of a revision's workflows ([`WorkflowCalls`]): start, list, show (with the
//! run's timeline), signal, cancel, as JSON.
use futures::future::BoxFuture;
use http::StatusCode;
use nimbus_gateway::{WorkflowCalls, WorkflowOp};
use nimbus_observe::SpanRef;
use nimbus_state::journal::{Entry, JournalError, Run};
use serde_json::{Value, json};

use crate::engine::{Signalled, StartError, WorkflowHost};

/// The most runs one list answers (the newest).
const MAX_LISTED: usize = 1_000;
/// The status filter that lists every unfinished run (from the index of unfinished runs).
const UNFINISHED: &str = "unfinished";

impl WorkflowCalls for WorkflowHost {
    /// This revision's workflows, and those of the app's other loaded revisions (whose runs
    /// can still be read, signalled and cancelled here after a deploy renamed or removed them).
    fn has(&self, name: &str) -> bool {
        self.names.contains(name) || self.engine.serves(name)
    }

    fn wake(&self, run: &str, cancel: bool) {
        self.engine.wake_forwarded(run, cancel);
    }

    fn call<'a>(&'a self, name: &'a str, op: WorkflowOp, _parent: &'a SpanRef) -> BoxFuture<'a, (StatusCode, Value)> {
        Box::pin(async move {
            match self.answer(name, op).await {
                Ok(answer) => answer,
                Err(e) => {
                    let status = match e {
                        JournalError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                        JournalError::InvalidKey | JournalError::InvalidName => StatusCode::BAD_REQUEST,
                        JournalError::TooManySignals => StatusCode::TOO_MANY_REQUESTS,
                        _ => StatusCode::SERVICE_UNAVAILABLE,
                    };
                    (status, json!({ "error": nimbus_observe::report(&e) }))
                }
            }
        })
    }
}

fn refused(status: StatusCode, message: String) -> (StatusCode, Value) {
    (status, json!({ "error": message }))
}

impl WorkflowHost {
    async fn answer(&self, name: &str, op: WorkflowOp) -> Result<(StatusCode, Value), JournalError> {
        let engine = &self.engine;
        // Run `id` of this workflow, or the 404 to answer.
        let run_of = async |id: &str| match engine.journal.run(id).await? {
            Some((run, _)) if run.workflow == name => Ok(Ok(run)),
            _ => Ok::<_, JournalError>(Err(refused(
                StatusCode::NOT_FOUND,
                format!("workflow `{name}` has no run `{id}`"),
            ))),
        };
        Ok(match op {
            WorkflowOp::Start { input, idempotency_key } => {
                if let Some(why) = engine.def(&self.revision, name).and_then(|d| d.target.telemetry.usage.throttled()) {
                    return Ok(refused(StatusCode::TOO_MANY_REQUESTS, format!("budget_exhausted: {why}")));
                }
                match engine.start(&self.revision, name, input, idempotency_key).await {
                    Ok((run, true)) => (StatusCode::ACCEPTED, run_json(&run)),
                    Ok((run, false)) => (StatusCode::OK, run_json(&run)),
                    Err(StartError::Unknown(w)) => refused(StatusCode::NOT_FOUND, format!("no workflow `{w}` here")),
                    Err(StartError::Journal(e)) => return Err(e),
                }
            }
            WorkflowOp::List { revision, status } => {
                let keep = |r: &Run| {
                    r.workflow == name
                        && revision.as_ref().is_none_or(|rev| &r.revision == rev)
                        && status.as_ref().is_none_or(|s| s == UNFINISHED || r.status.as_str() == s)
                };
                // Unfinished runs come from their index; the others newest first, read a chunk
                // at a time until enough match.
                let mut runs = Vec::new();
                if status.as_deref() == Some(UNFINISHED) {
                    runs = engine.journal.unfinished_runs().await?;
                    runs.retain(|r| keep(r));
                    runs.sort_by(|a, b| b.id.cmp(&a.id));
                } else {
                    let ids = engine.journal.run_ids().await?;
                    for chunk in ids.rchunks(256) {
                        let mut page = engine.journal.runs_of(chunk).await?;
                        page.reverse();
                        runs.extend(page.into_iter().filter(|r| keep(r)));
                        if runs.len() >= MAX_LISTED {
                            break;
                        }
                    }
                }
                runs.truncate(MAX_LISTED);
                (StatusCode::OK, json!({ "runs": runs.iter().map(run_json).collect::<Vec<_>>() }))
            }
            WorkflowOp::Show { run } => {
                let found = match run_of(&run).await? {
                    Ok(found) => found,
                    Err(refusal) => return Ok(refusal),
                };
                let entries = engine.journal.entries(&run).await?;
                let signals = engine.journal.signals(&run).await?;
                let mut answer = run_json(&found);
                answer["timeline"] = entries.iter().enumerate().map(|(i, (e, _))| entry_json(i, e)).collect();
                answer["signals"] = signals
                    .iter()
                    .map(|s| json!({ "seq": s.seq, "name": s.name, "sent_ms": s.sent_ms, "bytes": s.payload.len() }))
                    .collect();
                (StatusCode::OK, answer)
            }
            WorkflowOp::Signal { run, signal, payload } => {
                let found = match run_of(&run).await? {
                    Ok(found) => found,
                    Err(refusal) => return Ok(refusal),
                };
                match engine.signal(&found.id, &signal, payload).await? {
                    Signalled::Sent(seq) => (StatusCode::ACCEPTED, json!({ "run": run, "signal": signal, "seq": seq })),
                    Signalled::NoSuchRun => {
                        refused(StatusCode::NOT_FOUND, format!("workflow `{name}` has no run `{run}`"))
                    }
                    Signalled::Finished(r) => refused(
                        StatusCode::CONFLICT,
                        format!("run `{run}` is {}; signals go to unfinished runs", r.status.as_str()),
                    ),
                }
            }
            WorkflowOp::Cancel { run } => {
                if let Err(refusal) = run_of(&run).await? {
                    return Ok(refusal);
                }
                match engine.cancel(&run).await? {
                    None => refused(StatusCode::NOT_FOUND, format!("workflow `{name}` has no run `{run}`")),
                    Some(r) if r.status.is_finished() => refused(
                        StatusCode::CONFLICT,
                        format!("run `{run}` is {} already; only unfinished runs can be cancelled", r.status.as_str()),
                    ),
                    Some(r) => (StatusCode::ACCEPTED, run_json(&r)),
                }
            }
        })
    }
}

/// A payload as text if it is UTF-8, else as hex.
fn text(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "hex": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>() }),
    }
}

fn run_json(run: &Run) -> Value {
    let mut v = json!({
        "run": run.id,
        "workflow": run.workflow,
        "revision": run.revision,
        "status": run.status.as_str(),
        "created_ms": run.created_ms,
        "updated_ms": run.updated_ms,
    });
    if let Some(error) = &run.error {
        v["error"] = error.clone().into();
    }
    if let Some(output) = &run.output {
        v["output"] = text(output);
    }
    if let Some(wake) = run.wake_ms {
        v["wake_ms"] = wake.into();
    }
    if let Some(key) = &run.idempotency_key {
        v["idempotency_key"] = key.clone().into();
    }
    if run.cancel_requested {
        v["cancel_requested"] = true.into();
    }
    v
}

fn entry_json(pos: usize, e: &Entry) -> Value {
    let mut v = json!({
        "pos": pos + 1,
        "kind": e.kind.as_str(),
        "outcome": serde_json::to_value(&e.outcome).unwrap_or_default(),
        "started_ms": e.started_ms,
    });
    if !e.name.is_empty() {
        v["name"] = e.name.clone().into();
    }
    if let Some(f) = e.finished_ms {
        v["finished_ms"] = f.into();
        v["duration_ms"] = f.saturating_sub(e.started_ms).into();
    }
    if e.attempts > 1 {
        v["retries"] = (e.attempts - 1).into();
    }
    for (key, value) in [("compensate", &e.compensate)] {
        if let Some(value) = value {
            v[key] = value.clone().into();
        }
    }
    if let Some(due) = e.due_ms {
        v["due_ms"] = due.into();
    }
    if let Some(undoes) = e.undoes {
        v["undoes"] = (undoes + 1).into();
    }
    if !e.payload.is_empty() {
        v["payload"] = text(&e.payload);
    }
    v
}

//! What the journal stores: runs, journal entries and signals (their metadata as JSON in the
//! frame, their payloads raw after it).
use serde::{Deserialize, Serialize};

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started or resumed; an engine runs it.
    Running,
    /// Suspended until its timer fires or a signal arrives (`wake_ms`).
    Waiting,
    /// Failed or cancelled; its compensations are running.
    Compensating,
    /// `run` returned its output.
    Completed,
    /// `run` returned an error, trapped, or its replay diverged.
    Failed,
    /// Cancelled (its compensations have run).
    Cancelled,
}

impl RunStatus {
    /// Whether the run is over.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The status as the API and CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One workflow run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Its id (unique in the app).
    pub id: String,
    /// The workflow (`[[trigger.workflow]] name`).
    pub workflow: String,
    /// The revision it is pinned to: it replays on that revision's code only.
    pub revision: String,
    /// Where it is.
    pub status: RunStatus,
    /// Its input.
    #[serde(skip)]
    pub input: Vec<u8>,
    /// Its output, once completed.
    #[serde(skip)]
    pub output: Option<Vec<u8>>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The idempotency key it was started with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// When it was started (Unix ms).
    pub created_ms: u64,
    /// When its status last changed (Unix ms).
    pub updated_ms: u64,
    /// When a waiting run is due to resume (its timer or signal timeout), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_ms: Option<u64>,
    /// Cancellation was asked for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
}

/// What a journal entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// `step(name)`.
    Step,
    /// `sleep`.
    Timer,
    /// `await-signal(name)`.
    Signal,
    /// `call(target)`.
    Call,
    /// `now()`.
    Now,
    /// `random()`.
    Random,
    /// An undo step run while compensating (`name`, for the entry at `undoes`).
    Compensation,
}

impl EntryKind {
    /// How the kind is named in messages and timelines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Step => "step",
            Self::Timer => "sleep",
            Self::Signal => "await-signal",
            Self::Call => "call",
            Self::Now => "now",
            Self::Random => "random",
            Self::Compensation => "compensation",
        }
    }
}

/// How an entry ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Not yet (a timer not fired, a signal not arrived).
    Pending,
    /// Succeeded with the payload.
    Ok,
    /// Failed; the payload is the message.
    Err,
    /// A signal's wait timed out.
    TimedOut,
}

/// One position of a run's journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// What it records.
    pub kind: EntryKind,
    /// The step, signal or call target; empty for `now`, `random` and timers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The payload: a step's or call's output, an error message, a signal's payload, the
    /// decimal value of `now`/`random`.
    #[serde(skip)]
    pub payload: Vec<u8>,
    /// When it started (Unix ms).
    pub started_ms: u64,
    /// When it ended (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// Attempts made (steps); more than 1 means it was retried.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// A step's undo step, registered when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate: Option<String>,
    /// A timer's or signal wait's deadline (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_ms: Option<u64>,
    /// The signal consumed (its sequence number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<u64>,
    /// A compensation: the position of the step it undoes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes: Option<u32>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Entry {
    /// An entry of `kind` for `name`, started at `started_ms`, not yet ended.
    pub fn new(kind: EntryKind, name: impl Into<String>, started_ms: u64) -> Self {
        Self {
            kind,
            name: name.into(),
            outcome: Outcome::Pending,
            payload: Vec::new(),
            started_ms,
            finished_ms: None,
            attempts: 0,
            compensate: None,
            due_ms: None,
            signal: None,
            undoes: None,
        }
    }

    /// Ends it with `outcome` and `payload` at `finished_ms`.
    pub fn finish(mut self, outcome: Outcome, payload: Vec<u8>, finished_ms: u64) -> Self {
        self.outcome = outcome;
        self.payload = payload;
        self.finished_ms = Some(finished_ms);
        self
    }

    /// `kind name` as messages say it (`step \`charge\``, `sleep`).
    pub fn describe(&self) -> String {
        if self.name.is_empty() { self.kind.as_str().into() } else { format!("{} `{}`", self.kind.as_str(), self.name) }
    }
}

/// A signal sent to a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    /// Its sequence number in the run (from 1, in the order sent).
    pub seq: u64,
    /// Its name.
    pub name: String,
    /// When it was sent (Unix ms).
    pub sent_ms: u64,
    /// Its payload.
    #[serde(skip)]
    pub payload: Vec<u8>,
}

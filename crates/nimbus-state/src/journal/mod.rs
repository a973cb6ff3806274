//! The workflow journal of one app, on any [`KvStore`] (so the embedded and the NATS backend
//! keep it alike): runs, their journals, the signals sent to them, the idempotency keys they
//! were started with, and the index of unfinished runs an engine resumes at start.
//!
//! Layout in the app's reserved `workflows` bucket: `r/RUN` the run, `j/RUN/POS` its journal
//! (one key per position, written with compare-and-swap so a position is written once), `s/RUN/SEQ`
//! its signals, `n/RUN` the signal counter, `i/WORKFLOW/KEY` the run an idempotency key started,
//! `a/RUN` present while the run is unfinished, `f/WHEN/RUN` once it finished (for retention). Values are versioned frames (`frame`).
use std::sync::Arc;

use bytes::Bytes;

use crate::{Bucket, KvError, KvStore, Swap};

mod frame;
mod record;

pub use record::{Entry, EntryKind, Outcome, Run, RunStatus, Signal};

/// The KV bucket (of each app) holding its workflow runs; reserved: no grant may name it.
pub const WORKFLOWS_BUCKET: &str = "workflows";
/// The largest payload a journal entry, input, output or signal may carry.
pub const MAX_PAYLOAD_BYTES: usize = 512 * 1024;
/// The most positions one run's journal may have.
pub const MAX_ENTRIES: u32 = 100_000;
/// The most signals one run may be sent.
pub const MAX_SIGNALS: u64 = 1_000;
/// The largest signal payload (every activation of a waiting run reads its signals).
pub const MAX_SIGNAL_BYTES: usize = 64 * 1024;
/// The longest signal name.
pub const MAX_SIGNAL_NAME: usize = 128;
/// How often, and how long each time, a start that lost the race for its idempotency key
/// waits for the winner's run to be stored.
const CLAIM_WAITS: u32 = 50;
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_millis(20);
/// The longest run id.
const MAX_RUN_ID: usize = 64;
/// The longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// Why the journal refused or failed an operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// The store failed; nothing was written.
    #[error(transparent)]
    Store(#[from] KvError),
    /// The value is over its limit ([`MAX_PAYLOAD_BYTES`], [`MAX_SIGNAL_BYTES`]).
    #[error(
        "{what} is {size} bytes, over the journal's limit of {limit} bytes; keep large data in a KV bucket or blob and journal its key"
    )]
    TooLarge {
        /// What was too large.
        what: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The run's journal has [`MAX_ENTRIES`] positions.
    #[error("the run's journal is full ({MAX_ENTRIES} positions); split the work into several runs")]
    Full,
    /// Another writer changed it first (another engine is running the run).
    #[error("the run was changed by someone else meanwhile")]
    Conflict,
    /// The run was sent [`MAX_SIGNALS`] signals already.
    #[error("the run was sent {MAX_SIGNALS} signals already; it takes no more")]
    TooManySignals,
    /// A signal name is empty, too long, or holds `/` or control characters.
    #[error("invalid signal name: 1 to {MAX_SIGNAL_NAME} bytes, no `/` or control characters")]
    InvalidName,
    /// The idempotency key is empty, too long or not printable.
    #[error("invalid idempotency key: 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters")]
    InvalidKey,
}

/// What [`Journal::create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Stored the new run.
    New,
    /// The idempotency key had started this run already; nothing was stored.
    Existing(Box<Run>),
}

/// The workflow journal of one app.
#[derive(Debug, Clone)]
pub struct Journal {
    kv: Arc<dyn KvStore>,
    bucket: Bucket,
}

/// The key of a finished run in the index retention reads: `f/WHEN/ID`.
fn finished_key(run: &Run) -> String {
    format!("f/{:013}/{}", run.updated_ms, run.id)
}

/// A stored run, or `None` (logged) for one this build cannot read: one bad record must not stop
/// every other run from being listed or resumed.
fn readable(key: &str, run: Result<Run, KvError>) -> Option<Run> {
    match run {
        Ok(run) => Some(run),
        Err(e) => {
            tracing::error!(key, error = %e, "a workflow run record cannot be read; it is skipped");
            None
        }
    }
}

fn check_size(what: impl FnOnce() -> String, bytes: &[u8]) -> Result<(), JournalError> {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        Err(JournalError::TooLarge { what: what(), size: bytes.len(), limit: MAX_PAYLOAD_BYTES })
    } else {
        Ok(())
    }
}

impl Journal {
    /// The journal of `app` in `kv`.
    pub fn new(kv: Arc<dyn KvStore>, app: &str) -> Result<Self, KvError> {
        Ok(Self { kv, bucket: Bucket::new(app, WORKFLOWS_BUCKET)? })
    }

    /// The store it is in.
    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.kv
    }

    fn encode_run(run: &Run) -> Bytes {
        frame::encode(run, &[&run.input, run.output.as_deref().unwrap_or_default()]).into()
    }

    fn decode_run(bytes: &[u8]) -> Result<Run, KvError> {
        let (mut run, blobs): (Run, _) = frame::decode(bytes)?;
        let mut blobs = blobs.into_iter();
        run.input = blobs.next().unwrap_or_default();
        run.output = if run.status == RunStatus::Completed { blobs.next() } else { None };
        Ok(run)
    }

    /// Stores a new run (unfinished) unless its idempotency key started one already, which is
    /// returned instead.
    pub async fn create(&self, run: &Run) -> Result<Created, JournalError> {
        check_size(|| "the run's input".into(), &run.input)?;
        if let Some(key) = &run.idempotency_key {
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(JournalError::InvalidKey);
            }
            let index = format!("i/{}/{key}", run.workflow);
            if let Swap::Conflict(_) =
                self.kv.compare_and_swap(&self.bucket, &index, None, run.id.clone().into()).await?
            {
                let existing = self.kv.get(&self.bucket, &index).await?.map(|e| e.value);
                let id = existing.as_deref().map(String::from_utf8_lossy).unwrap_or_default().to_string();
                // The start that claimed the key stores its run next; give it a moment.
                for _ in 0..CLAIM_WAITS {
                    if let Some(found) = self.run(&id).await? {
                        return Ok(Created::Existing(Box::new(found.0)));
                    }
                    tokio::time::sleep(CLAIM_WAIT).await;
                }
                // It crashed between claiming the key and storing its run: this start stores
                // one under that id — unless the claimer got there after all (first one wins).
                let mut run = run.clone();
                run.id = id;
                return match self.store_new(&run).await? {
                    None => Ok(Created::Existing(Box::new(run))),
                    Some(stored) => Ok(Created::Existing(Box::new(stored))),
                };
            }
        }
        match self.store_new(run).await? {
            None => Ok(Created::New),
            Some(stored) => Ok(Created::Existing(Box::new(stored))),
        }
    }

    /// Stores a new run unless one with its id exists (returned instead): its record is written
    /// only if absent, so a run is never reset.
    async fn store_new(&self, run: &Run) -> Result<Option<Run>, JournalError> {
        self.kv.set(&self.bucket, &format!("a/{}", run.id), Bytes::new(), None).await?;
        match self.kv.compare_and_swap(&self.bucket, &format!("r/{}", run.id), None, Self::encode_run(run)).await? {
            Swap::Done(_) => Ok(None),
            Swap::Conflict(_) => Ok(self.run(&run.id).await?.map(|(r, _)| r)),
        }
    }

    /// A run and the revision to update it at.
    pub async fn run(&self, id: &str) -> Result<Option<(Run, u64)>, JournalError> {
        if id.is_empty() || id.len() > MAX_RUN_ID || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        match self.kv.get(&self.bucket, &format!("r/{id}")).await? {
            Some(e) => Ok(Some((Self::decode_run(&e.value)?, e.revision))),
            None => Ok(None),
        }
    }

    /// Writes `run` if it is still at `revision`; a finished run leaves the unfinished index.
    /// Returns the new revision.
    pub async fn update(&self, run: &Run, revision: u64) -> Result<u64, JournalError> {
        if let Some(output) = &run.output {
            check_size(|| "the run's output".into(), output)?;
        }
        match self
            .kv
            .compare_and_swap(&self.bucket, &format!("r/{}", run.id), Some(revision), Self::encode_run(run))
            .await?
        {
            Swap::Done(rev) => {
                if run.status.is_finished() {
                    // Finished: into the index retention reads, out of the unfinished one.
                    self.kv.set(&self.bucket, &finished_key(run), Bytes::new(), None).await?;
                    self.kv.delete(&self.bucket, &format!("a/{}", run.id)).await?;
                }
                Ok(rev)
            }
            Swap::Conflict(_) => Err(JournalError::Conflict),
        }
    }

    /// The journal of a run, in order, each entry with the revision to replace it at. Read by
    /// position, a batch at a time, up to the first empty one (listing keys would scan the whole
    /// bucket on NATS).
    pub async fn entries(&self, id: &str) -> Result<Vec<(Entry, u64)>, JournalError> {
        const BATCH: u32 = 32;
        let mut out = Vec::new();
        loop {
            let from = out.len() as u32;
            let keys: Vec<String> = (from..from + BATCH).map(|pos| Self::entry_key(id, pos)).collect();
            for value in self.kv.get_many(&self.bucket, &keys).await? {
                let Some(value) = value else { return Ok(out) };
                let (mut entry, blobs): (Entry, _) = frame::decode(&value.value)?;
                entry.payload = blobs.into_iter().next().unwrap_or_default();
                out.push((entry, value.revision));
            }
        }
    }

    fn signal_key(id: &str, seq: u64) -> String {
        format!("s/{id}/{seq:09}")
    }

    fn entry_key(id: &str, pos: u32) -> String {
        format!("j/{id}/{pos:06}")
    }

    fn encode_entry(entry: &Entry) -> Result<Bytes, JournalError> {
        check_size(|| format!("the journal entry of {}", entry.describe()), &entry.payload)?;
        Ok(frame::encode(entry, &[&entry.payload]).into())
    }

    /// The bytes `entry` takes in the store (its frame; the store's own keys and overhead aside).
    pub fn stored_size(entry: &Entry) -> usize {
        frame::encode(entry, &[&entry.payload]).len()
    }

    /// Writes position `pos` of a run's journal, which must be empty ([`JournalError::Conflict`]
    /// if someone wrote it first). Returns its revision.
    pub async fn append(&self, id: &str, pos: u32, entry: &Entry) -> Result<u64, JournalError> {
        if pos >= MAX_ENTRIES {
            return Err(JournalError::Full);
        }
        let value = Self::encode_entry(entry)?;
        match self.kv.compare_and_swap(&self.bucket, &Self::entry_key(id, pos), None, value).await? {
            Swap::Done(rev) => Ok(rev),
            Swap::Conflict(_) => Err(JournalError::Conflict),
        }
    }

    /// Rewrites position `pos` (a pending entry ending) if it is still at `revision`.
    pub async fn replace(&self, id: &str, pos: u32, entry: &Entry, revision: u64) -> Result<u64, JournalError> {
        let value = Self::encode_entry(entry)?;
        match self.kv.compare_and_swap(&self.bucket, &Self::entry_key(id, pos), Some(revision), value).await? {
            Swap::Done(rev) => Ok(rev),
            Swap::Conflict(_) => Err(JournalError::Conflict),
        }
    }

    /// Stores a signal for a run; returns its sequence number.
    pub async fn signal(&self, id: &str, name: &str, payload: Vec<u8>, sent_ms: u64) -> Result<u64, JournalError> {
        if name.is_empty() || name.len() > MAX_SIGNAL_NAME || name.chars().any(|c| c.is_control() || c == '/') {
            return Err(JournalError::InvalidName);
        }
        if payload.len() > MAX_SIGNAL_BYTES {
            let what = format!("the payload of signal `{name}`");
            return Err(JournalError::TooLarge { what, size: payload.len(), limit: MAX_SIGNAL_BYTES });
        }
        let seq = self.kv.increment(&self.bucket, &format!("n/{id}"), 1).await? as u64;
        if seq > MAX_SIGNALS {
            return Err(JournalError::TooManySignals);
        }
        let signal = Signal { seq, name: name.into(), sent_ms, payload };
        let value = frame::encode(&signal, &[&signal.payload]);
        self.kv.set(&self.bucket, &Self::signal_key(id, seq), value.into(), None).await?;
        Ok(seq)
    }

    /// How many signal numbers a run took (the highest stored; some may be gaps).
    async fn signals_sent(&self, id: &str) -> Result<u64, JournalError> {
        let key = format!("n/{id}");
        Ok(match self.kv.get(&self.bucket, &key).await? {
            Some(n) => u64::try_from(crate::kv::parse_int(&key, &n.value)?).unwrap_or(0).min(MAX_SIGNALS),
            None => 0,
        })
    }

    /// The signals sent to a run, in the order sent.
    pub async fn signals(&self, id: &str) -> Result<Vec<Signal>, JournalError> {
        let sent = self.signals_sent(id).await?;
        let keys: Vec<String> = (1..=sent).map(|seq| Self::signal_key(id, seq)).collect();
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(256) {
            // A number taken by a send that failed before storing its signal is a gap.
            for value in self.kv.get_many(&self.bucket, chunk).await?.into_iter().flatten() {
                let (mut signal, blobs): (Signal, _) = frame::decode(&value.value)?;
                signal.payload = blobs.into_iter().next().unwrap_or_default();
                out.push(signal);
            }
        }
        Ok(out)
    }

    /// The ids of every unfinished run.
    pub async fn unfinished(&self) -> Result<Vec<String>, JournalError> {
        Ok(self.all_keys("a/").await?.into_iter().map(|k| k["a/".len()..].to_string()).collect())
    }

    /// Every unfinished run.
    pub async fn unfinished_runs(&self) -> Result<Vec<Run>, JournalError> {
        let ids = self.unfinished().await?;
        let mut runs = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(256) {
            runs.extend(self.runs_of(chunk).await?);
        }
        Ok(runs)
    }

    /// The finished runs, as (when they finished, Unix ms; id), oldest first.
    pub async fn finished(&self) -> Result<Vec<(u64, String)>, JournalError> {
        Ok(self
            .all_keys("f/")
            .await?
            .iter()
            .filter_map(|k| {
                let (at, id) = k.strip_prefix("f/")?.split_once('/')?;
                Some((at.parse().ok()?, id.to_string()))
            })
            .collect())
    }

    /// Deletes a finished run with its journal, signals and idempotency key; the run record
    /// goes last, so a delete cut short is done again by the next one. Unfinished runs stay.
    pub async fn delete_finished(&self, id: &str) -> Result<(), JournalError> {
        let Some((run, _)) = self.run(id).await? else { return Ok(()) };
        if !run.status.is_finished() {
            return Ok(());
        }
        let entries = self.entries(id).await?.len() as u32;
        for pos in 0..entries {
            self.kv.delete(&self.bucket, &Self::entry_key(id, pos)).await?;
        }
        let sent = self.signals_sent(id).await?;
        for seq in 1..=sent {
            self.kv.delete(&self.bucket, &Self::signal_key(id, seq)).await?;
        }
        self.kv.delete(&self.bucket, &format!("n/{id}")).await?;
        if let Some(key) = &run.idempotency_key {
            let index = format!("i/{}/{key}", run.workflow);
            if self.kv.get(&self.bucket, &index).await?.is_some_and(|e| e.value == id.as_bytes()) {
                self.kv.delete(&self.bucket, &index).await?;
            }
        }
        self.kv.delete(&self.bucket, &format!("r/{id}")).await?;
        self.kv.delete(&self.bucket, &finished_key(&run)).await?;
        Ok(())
    }

    /// The ids of every run, oldest first (ids start with their start time).
    pub async fn run_ids(&self) -> Result<Vec<String>, JournalError> {
        Ok(self.all_keys("r/").await?.into_iter().map(|k| k["r/".len()..].to_string()).collect())
    }

    /// The runs of `ids` that exist and can be read, in that order.
    pub async fn runs_of(&self, ids: &[String]) -> Result<Vec<Run>, JournalError> {
        let keys: Vec<String> = ids.iter().map(|id| format!("r/{id}")).collect();
        let mut runs = Vec::with_capacity(keys.len());
        for (key, value) in keys.iter().zip(self.kv.get_many(&self.bucket, &keys).await?) {
            if let Some(run) = value.and_then(|v| readable(key, Self::decode_run(&v.value))) {
                runs.push(run);
            }
        }
        Ok(runs)
    }

    async fn all_keys(&self, prefix: &str) -> Result<Vec<String>, JournalError> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.kv.list(&self.bucket, prefix, cursor.as_deref(), 1000).await?;
            keys.extend(page.keys);
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(keys),
            }
        }
    }
}

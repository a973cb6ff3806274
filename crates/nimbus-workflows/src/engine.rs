//! The workflow engine of one app (shared by its revisions) and the workflows of one revision
//! ([`WorkflowHost`]): which revision's code each run replays on, which runs this process is
//! driving, and the durable timers' wake-ups.
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use nimbus_gateway::{Backend, Gateway};
use nimbus_manifest::{Manifest, Placement};
use nimbus_observe::Tracer;
use nimbus_state::KvStore;
use nimbus_state::journal::{Created, Journal, JournalError, Run, RunStatus};

use crate::RunOwners;
use crate::steps::Def;

/// How many runs one engine drives at once: each holds an instance while `run` replays and its
/// steps need more, so this stays well below a node's instance pool (1,000 by default).
const MAX_ACTIVE: usize = 64;
/// How long after a store failure a run is tried again.
const RETRY_AFTER_MS: u64 = 1_000;

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No such workflow in the revision.
    #[error("no workflow `{0}` in this revision")]
    Unknown(String),
    /// The journal refused or failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// What [`Engine::signal`] did.
#[derive(Debug)]
pub enum Signalled {
    /// Stored with this sequence number.
    Sent(u64),
    /// There is no such run.
    NoSuchRun,
    /// The run is finished; nothing was stored.
    Finished(Run),
}

/// The workflow engine of one app: its journal, the workflows of each loaded revision, the runs
/// it is driving and the timers it waits for.
pub struct Engine {
    this: Weak<Engine>,
    pub(crate) app: String,
    pub(crate) journal: Journal,
    pub(crate) tracer: Tracer,
    /// Revision → workflow name → its component.
    revisions: Mutex<HashMap<String, HashMap<String, Def>>>,
    /// Runs being driven here, and whether to go again when done (something changed meanwhile).
    driving: Mutex<HashMap<String, bool>>,
    /// Runs asked to cancel (checked by their drivers between context calls).
    cancels: Mutex<HashSet<String>>,
    /// Wake-ups: (Unix ms, run).
    timers: Mutex<BTreeSet<(u64, String)>>,
    timers_changed: Arc<tokio::sync::Notify>,
    /// Runs that finished here, for [`Engine::finished`].
    finished: tokio::sync::broadcast::Sender<String>,
    slots: Arc<tokio::sync::Semaphore>,
    /// In a cluster, which node drives each run.
    owners: Option<Arc<dyn RunOwners>>,
    /// The app's `[placement]`, as its newest registered revision says.
    placement: Mutex<Placement>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("app", &self.app).finish_non_exhaustive()
    }
}

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Engine {
    /// The engine of `app`, journaling in `kv`, tracing with `tracer`, driving in a cluster only
    /// the runs `owners` gives this node; its timers run until it is dropped (needs a tokio
    /// runtime).
    pub fn new(
        app: &str,
        kv: Arc<dyn KvStore>,
        tracer: Tracer,
        owners: Option<Arc<dyn RunOwners>>,
    ) -> Result<Arc<Self>, nimbus_state::KvError> {
        let journal = Journal::new(kv, app)?;
        let engine = Arc::new_cyclic(|this| Self {
            this: this.clone(),
            app: app.to_string(),
            journal,
            tracer,
            revisions: Mutex::default(),
            driving: Mutex::default(),
            cancels: Mutex::default(),
            timers: Mutex::default(),
            timers_changed: Arc::default(),
            finished: tokio::sync::broadcast::channel(1024).0,
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_ACTIVE)),
            owners,
            placement: Mutex::default(),
        });
        if let Some(owners) = &engine.owners {
            tokio::spawn(ownership_loop(Arc::downgrade(&engine), owners.changes()));
        }
        tokio::spawn(timer_loop(Arc::downgrade(&engine)));
        tokio::spawn(retention_loop(Arc::downgrade(&engine)));
        Ok(engine)
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The component of `workflow` in `revision`, if that revision is loaded here.
    pub(crate) fn def(&self, revision: &str, workflow: &str) -> Option<Def> {
        self.revisions.lock().expect("revisions").get(revision)?.get(workflow).cloned()
    }

    /// Whether a loaded revision has workflow `name`.
    pub(crate) fn serves(&self, name: &str) -> bool {
        self.revisions.lock().expect("revisions").values().any(|defs| defs.contains_key(name))
    }

    fn register(&self, revision: &str, defs: HashMap<String, Def>, placement: &Placement) {
        *self.placement.lock().expect("placement") = placement.clone();
        self.revisions.lock().expect("revisions").insert(revision.to_string(), defs);
        let engine = self.this.upgrade().expect("registering on a live engine");
        let revision = revision.to_string();
        tokio::spawn(async move {
            while let Err(e) = engine.resume_revision(&revision).await {
                tracing::error!(app = %engine.app, revision = %revision, error = %nimbus_observe::report(&e),
                    "cannot read the unfinished workflow runs; trying again in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
                if !engine.revisions.lock().expect("revisions").contains_key(&revision) {
                    return;
                }
            }
        });
    }

    /// Resumes the unfinished runs pinned to `revision`: running ones now, waiting ones when
    /// their timer is due.
    async fn resume_revision(self: &Arc<Self>, revision: &str) -> Result<(), JournalError> {
        let runs = self.journal.unfinished_runs().await?;
        for run in runs.into_iter().filter(|r| r.revision == revision && self.owns(&r.id)) {
            match (run.status, run.wake_ms) {
                (RunStatus::Waiting, Some(at)) if !run.cancel_requested => self.wake_at(at, &run.id),
                (RunStatus::Waiting, None) if !run.cancel_requested => {}
                _ => self.wake(&run.id),
            }
        }
        Ok(())
    }

    /// Resolves once `run` finishes on this engine (call it before the run can finish).
    pub fn finished(&self, run: &str) -> impl Future<Output = ()> + Send + 'static {
        let mut finished = self.finished.subscribe();
        let run = run.to_string();
        async move {
            loop {
                match finished.recv().await {
                    Ok(id) if id == run => return,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    _ => {}
                }
            }
        }
    }

    /// Tells [`Engine::finished`] waiters that `run` is over.
    pub(crate) fn announce(&self, run: &str) {
        let _ = self.finished.send(run.to_string());
    }

    /// Whether cancelling `run` was asked for.
    pub(crate) fn cancel_requested(&self, run: &str) -> bool {
        self.cancels.lock().expect("cancels").contains(run)
    }

    /// Drives `run` at `at` (Unix ms).
    pub(crate) fn wake_at(&self, at: u64, run: &str) {
        self.timers.lock().expect("timers").insert((at, run.to_string()));
        self.timers_changed.notify_one();
    }

    /// Whether this node drives `run` (always, outside a cluster).
    fn owns(&self, run: &str) -> bool {
        let placement = self.placement.lock().expect("placement");
        self.owners.as_ref().is_none_or(|owners| owners.owns(&self.app, &placement, run))
    }

    /// Drives `run` now (again, if it is being driven: once the current activation ends) — or,
    /// in a cluster, has its owner do it.
    pub(crate) fn wake(&self, run: &str) {
        self.wake_as(run, false);
    }

    /// [`Engine::wake`]; `cancel`: the run was asked to cancel (its driver stops it between
    /// two context calls).
    fn wake_as(&self, run: &str, cancel: bool) {
        if let Some(owners) = &self.owners
            && !self.owns(run)
        {
            let placement = self.placement.lock().expect("placement").clone();
            let told = owners.wake(&self.app, &placement, run, cancel);
            let (engine, run) = (self.this.clone(), run.to_string());
            tokio::spawn(async move {
                if !told.await
                    && let Some(engine) = engine.upgrade()
                {
                    tracing::debug!(app = %engine.app, run = %run, "the run's owner cannot be told; driving it here");
                    engine.wake_forwarded(&run, cancel);
                }
            });
            return;
        }
        self.wake_forwarded(run, cancel);
    }

    /// Drives `run` on this node — a wake-up another node sent for a run this node owns
    /// (`cancel`: it was asked to cancel there).
    pub fn wake_forwarded(&self, run: &str, cancel: bool) {
        if cancel {
            self.cancels.lock().expect("cancels").insert(run.to_string());
        }
        self.drive_here(run);
    }

    /// Drives `run` on this node now (again, if it is being driven: once the current
    /// activation ends).
    fn drive_here(&self, run: &str) {
        {
            let mut driving = self.driving.lock().expect("driving");
            if let Some(again) = driving.get_mut(run) {
                *again = true;
                return;
            }
            driving.insert(run.to_string(), false);
        }
        let Some(engine) = self.this.upgrade() else { return };
        let run = run.to_string();
        tokio::spawn(async move { engine.drive(run).await });
    }

    async fn drive(self: Arc<Self>, run: String) {
        let Ok(_slot) = self.slots.clone().acquire_owned().await else { return };
        loop {
            match crate::activation::activate(&self, &run).await {
                Ok(()) => {}
                Err(e) if transient(&e) => {
                    tracing::warn!(app = %self.app, run = %run, error = %nimbus_observe::report(&e),
                        "workflow run could not go on; trying again shortly");
                    self.wake_at(now_ms() + RETRY_AFTER_MS, &run);
                }
                Err(e) => tracing::error!(app = %self.app, run = %run, error = %nimbus_observe::report(&e),
                    "workflow run cannot go on: its journal cannot be read or written; it is left as it is"),
            }
            let mut driving = self.driving.lock().expect("driving");
            if driving.get(&run) == Some(&true) {
                driving.insert(run.clone(), false);
                continue;
            }
            driving.remove(&run);
            self.cancels.lock().expect("cancels").remove(&run);
            return;
        }
    }

    /// Starts a run of `workflow` on `revision` with `input`; with an idempotency key that
    /// started a run before, that run instead (`false`: not new).
    pub async fn start(
        &self,
        revision: &str,
        workflow: &str,
        input: Vec<u8>,
        idempotency_key: Option<String>,
    ) -> Result<(Run, bool), StartError> {
        if self.def(revision, workflow).is_none() {
            return Err(StartError::Unknown(workflow.to_string()));
        }
        let now = now_ms();
        let run = Run {
            id: format!("{now:012x}{:08x}", fastrand::u32(..)),
            workflow: workflow.to_string(),
            revision: revision.to_string(),
            status: RunStatus::Running,
            input,
            output: None,
            error: None,
            idempotency_key,
            created_ms: now,
            updated_ms: now,
            wake_ms: None,
            cancel_requested: false,
        };
        match self.journal.create(&run).await? {
            Created::New => {
                self.wake(&run.id);
                Ok((run, true))
            }
            Created::Existing(existing) => {
                if !existing.status.is_finished() {
                    self.wake(&existing.id);
                }
                Ok((*existing, false))
            }
        }
    }

    /// Sends signal `name` to `run` (stored durably, then the run is woken).
    pub async fn signal(&self, run: &str, name: &str, payload: Vec<u8>) -> Result<Signalled, JournalError> {
        let Some((found, _)) = self.journal.run(run).await? else { return Ok(Signalled::NoSuchRun) };
        if found.status.is_finished() {
            return Ok(Signalled::Finished(found));
        }
        let seq = self.journal.signal(run, name, payload, now_ms()).await?;
        self.wake(run);
        Ok(Signalled::Sent(seq))
    }

    /// Asks `run` to cancel: its registered compensations run, then it ends `cancelled`. Returns
    /// the run as it was, or `None` if there is none.
    pub async fn cancel(&self, run: &str) -> Result<Option<Run>, JournalError> {
        loop {
            let Some((mut found, rev)) = self.journal.run(run).await? else { return Ok(None) };
            if found.status.is_finished() || found.cancel_requested {
                return Ok(Some(found));
            }
            found.cancel_requested = true;
            found.updated_ms = now_ms();
            match self.journal.update(&found, rev).await {
                Ok(_) => {
                    self.wake_as(run, true);
                    return Ok(Some(found));
                }
                Err(JournalError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether trying again later may cure `e` (a store that did not answer, another writer); a
/// record this build cannot read or a value over a limit stays so.
fn transient(e: &JournalError) -> bool {
    use nimbus_state::KvError;
    match e {
        JournalError::Conflict => true,
        JournalError::Store(e) => {
            !matches!(e, KvError::Corrupt(_) | KvError::Invalid { .. } | KvError::NotANumber(_) | KvError::Misplaced(_))
        }
        _ => false,
    }
}

/// How long finished runs of a workflow no loaded revision names are kept.
const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest pause between two passes deleting finished runs past their retention.
const RETENTION_EVERY: Duration = Duration::from_secs(600);

impl Engine {
    /// How long finished runs of `workflow` are kept: the longest any loaded revision says.
    fn retention(&self, workflow: &str) -> Duration {
        let revisions = self.revisions.lock().expect("revisions");
        revisions.values().filter_map(|defs| defs.get(workflow)).map(|d| d.retention).max().unwrap_or(DEFAULT_RETENTION)
    }

    /// The shortest retention of any loaded workflow.
    fn shortest_retention(&self) -> Duration {
        let revisions = self.revisions.lock().expect("revisions");
        revisions.values().flat_map(|defs| defs.values()).map(|d| d.retention).min().unwrap_or(DEFAULT_RETENTION)
    }

    /// Deletes the finished runs past their workflow's retention; returns how many.
    async fn delete_expired(&self) -> Result<usize, JournalError> {
        let now = now_ms();
        let shortest = self.shortest_retention().as_millis() as u64;
        let mut deleted = 0;
        for (at, id) in self.journal.finished().await? {
            if now.saturating_sub(at) < shortest {
                break; // oldest first: none after this one is old enough either
            }
            let Some((run, _)) = self.journal.run(&id).await? else { continue };
            if now.saturating_sub(at) >= self.retention(&run.workflow).as_millis() as u64 {
                self.journal.delete_finished(&id).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

/// Deletes finished runs past their retention, every half the shortest retention (1 s to 10
/// min, re-read every second as revisions come and go), until the engine is dropped.
async fn retention_loop(engine: Weak<Engine>) {
    let mut last = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(e) = engine.upgrade() else { return };
        if last.elapsed() < (e.shortest_retention() / 2).clamp(Duration::from_secs(1), RETENTION_EVERY) {
            continue;
        }
        last = std::time::Instant::now();
        match e.delete_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(app = %e.app, deleted = n, "finished workflow runs past their retention deleted"),
            Err(err) => tracing::warn!(app = %e.app, error = %nimbus_observe::report(&err),
                "cannot delete finished workflow runs past their retention; trying again later"),
        }
    }
}

/// Resumes the unfinished runs this node now owns whenever the owners may have moved (a node
/// joined or was lost), until the engine is dropped.
async fn ownership_loop(engine: Weak<Engine>, mut changes: tokio::sync::watch::Receiver<u64>) {
    loop {
        // Looks at the engine at least every minute, so a dropped one's loop ends.
        match tokio::time::timeout(Duration::from_secs(60), changes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) if engine.strong_count() == 0 => return,
            Err(_) => continue,
        }
        let Some(engine) = engine.upgrade() else { return };
        let revisions: Vec<String> = engine.revisions.lock().expect("revisions").keys().cloned().collect();
        for revision in revisions {
            if let Err(e) = engine.resume_revision(&revision).await {
                tracing::warn!(app = %engine.app, revision = %revision, error = %nimbus_observe::report(&e),
                    "cannot read the unfinished workflow runs after the membership changed");
            }
        }
    }
}

/// Wakes runs whose timers are due, until the engine is dropped.
async fn timer_loop(engine: Weak<Engine>) {
    loop {
        let Some(e) = engine.upgrade() else { return };
        let now = now_ms();
        let (due, next) = {
            let mut timers = e.timers.lock().expect("timers");
            let later = timers.split_off(&(now + 1, String::new()));
            (std::mem::replace(&mut *timers, later), timers.first().map(|(at, _)| *at))
        };
        for (_, run) in due {
            e.wake(&run);
        }
        let changed = e.timers_changed.clone();
        // Hold no strong reference while waiting, so dropping the engine ends the loop.
        drop(e);
        let wait = next.map_or(Duration::from_secs(1), |at| {
            Duration::from_millis(at.saturating_sub(now)).min(Duration::from_secs(1))
        });
        let _ = tokio::time::timeout(wait, changed.notified()).await;
    }
}

/// The workflows of one loaded revision, served at `/workflows/NAME/...`; runs it starts are
/// pinned to it. Dropping it stops driving its runs here (they resume where it is loaded again).
#[derive(Debug)]
pub struct WorkflowHost {
    pub(crate) engine: Arc<Engine>,
    pub(crate) revision: String,
    pub(crate) names: HashSet<String>,
}

impl WorkflowHost {
    /// The workflows of a validated manifest, served by `gateway`'s components, registered with
    /// the app's `engine` as revision `revision` (whose unfinished runs resume); `None` if the
    /// app has no workflows. Every workflow's component must be a loaded function.
    pub fn new(manifest: &Manifest, gateway: &Gateway, revision: &str, engine: Arc<Engine>) -> Option<Arc<Self>> {
        let defs: HashMap<String, Def> = manifest
            .trigger
            .workflow
            .iter()
            .filter_map(|t| {
                let target = gateway.target(&t.component)?;
                let Backend::Function(function) = &target.backend else { return None };
                let retention = Duration::from_secs(t.retention_s);
                Some((t.name.clone(), Def { function: function.clone(), target, retention }))
            })
            .collect();
        if defs.is_empty() {
            return None;
        }
        let names = defs.keys().cloned().collect();
        engine.register(revision, defs, &manifest.placement);
        Some(Arc::new(Self { engine, revision: revision.to_string(), names }))
    }

    /// The app's engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

impl Drop for WorkflowHost {
    fn drop(&mut self) {
        self.engine.revisions.lock().expect("revisions").remove(&self.revision);
    }
}

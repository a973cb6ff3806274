//! What `nimbus dev` watches: the manifest and each component's `build.watch` globs (relative to
//! its build directory). A component without globs is watched by what it runs from: a function
//! without a build command by its `.wasm` file, a service without one by the files of its
//! working directory (outside `.nimbus`, `target`, `node_modules`, `.git`, `__pycache__` and the
//! data directory, which change while it runs). Changes are batched until the files have been
//! quiet for the debounce time, so one save (or a formatter rewriting ten files) is one rebuild.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use nimbus_manifest::LoadedManifest;
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// Directories whose changes never call for a rebuild (builds and running services write there).
const NOISY: [&str; 5] = [".nimbus", "target", "node_modules", ".git", "__pycache__"];

/// The longest a batch waits for the files to be quiet: a tool that keeps writing does not hold
/// the rebuild back for ever.
const MAX_BATCH: Duration = Duration::from_secs(3);

/// Which files belong to which component.
#[derive(Debug)]
pub(crate) struct Plan {
    manifest: PathBuf,
    components: Vec<Watched>,
    /// Never a change (the data directory).
    ignored: PathBuf,
}

/// The files of one component.
#[derive(Debug)]
struct Watched {
    name: String,
    /// What the globs are relative to.
    base: PathBuf,
    globs: GlobSet,
    /// Watched by its one artifact (this file), which may be anywhere (even under `target/`).
    artifact: Option<PathBuf>,
    /// The file its build writes (a function's `source`): never a change of its own.
    output: Option<PathBuf>,
}

/// What changed in one batch.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// The manifest was written.
    pub(crate) manifest: bool,
    /// Components whose watched files changed.
    pub(crate) components: BTreeSet<String>,
    /// The changed files, relative to the app directory where they are in it.
    pub(crate) files: BTreeSet<PathBuf>,
    /// When the first change was seen (the save).
    pub(crate) first: Option<std::time::Instant>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        !self.manifest && self.components.is_empty()
    }
}

impl Plan {
    /// The files of `loaded` to watch; `data_dir` is never watched.
    pub(crate) fn new(loaded: &LoadedManifest, data_dir: &Path) -> anyhow::Result<Self> {
        let mut components = Vec::new();
        let root = absolute(loaded.dir());
        for (name, c) in &loaded.manifest.component {
            let build_dir = |workdir: Option<&str>| workdir.map_or_else(|| root.clone(), |w| absolute(&root.join(w)));
            let (base, globs, artifact): (PathBuf, Vec<String>, bool) = match (&c.build, c.source()) {
                (Some(b), _) if !b.watch.is_empty() => (build_dir(b.workdir.as_deref()), b.watch.clone(), false),
                (None, Some(source)) => (root.clone(), vec![source.to_string()], true),
                (None, None) => (build_dir(c.workdir.as_deref()), vec!["**/*".to_string()], false),
                // A build command without globs: what it reads is unknown; `nimbus dev` says so.
                (Some(_), _) => continue,
            };
            let mut set = GlobSetBuilder::new();
            for glob in &globs {
                // `*` stays within a directory: `*.js` is not `node_modules/x/y.js`.
                let glob = GlobBuilder::new(glob)
                    .literal_separator(true)
                    .build()
                    .with_context(|| format!("component `{name}`: `{glob}` in build.watch is not a glob"))?;
                set.add(glob);
            }
            let globs = set.build().with_context(|| format!("component `{name}`: the build.watch globs"))?;
            let source = c.source().map(|source| absolute(&root.join(source)));
            let (artifact, output) = if artifact { (source, None) } else { (None, source) };
            components.push(Watched { name: name.clone(), base, globs, artifact, output });
        }
        Ok(Self { manifest: absolute(&loaded.path), components, ignored: absolute(data_dir) })
    }

    /// The directories to watch with everything below them (but for [`NOISY`] ones and the data
    /// directory), and the directories of artifacts watched by themselves.
    fn dirs(&self) -> (BTreeSet<&Path>, BTreeSet<&Path>) {
        let root = self.manifest.parent().unwrap_or(Path::new("/"));
        let bases = self.components.iter().filter(|w| w.artifact.is_none()).map(|w| w.base.as_path());
        let artifacts = self.components.iter().filter_map(|w| w.artifact.as_deref()?.parent());
        (std::iter::once(root).chain(bases).collect(), artifacts.collect())
    }

    /// Whether a directory of a watched tree is left out.
    fn skips(&self, dir: &Path) -> bool {
        dir.starts_with(&self.ignored) || dir.file_name().is_some_and(|n| NOISY.iter().any(|noisy| n == *noisy))
    }

    /// Components with a build command and no `build.watch` (their changes are not seen).
    pub(crate) fn unwatched(loaded: &LoadedManifest) -> Vec<&str> {
        let m = &loaded.manifest;
        m.component
            .iter()
            .filter(|(_, c)| c.build.as_ref().is_some_and(|b| b.watch.is_empty()))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// Adds what a change of `path` means to `changes`; whether it matters.
    fn classify(&self, path: &Path, changes: &mut Changes) -> bool {
        if path.starts_with(&self.ignored) {
            return false;
        }
        let mut matched = path == self.manifest;
        changes.manifest |= matched;
        for w in &self.components {
            let Ok(rel) = path.strip_prefix(&w.base) else { continue };
            let noisy = rel.components().any(|c| NOISY.iter().any(|n| c.as_os_str() == *n));
            if w.globs.is_match(rel) && (w.artifact.is_some() || !noisy) && w.output.as_deref() != Some(path) {
                changes.components.insert(w.name.clone());
                matched = true;
            }
        }
        if matched {
            changes.first.get_or_insert_with(std::time::Instant::now);
            let dir = self.manifest.parent().unwrap_or(Path::new("/"));
            changes.files.insert(path.strip_prefix(dir).unwrap_or(path).to_path_buf());
        }
        matched
    }
}

/// `path` without `.`, `..` or symbolic links, as the watcher reports paths (as given when it
/// does not exist yet).
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).or_else(|_| std::path::absolute(path)).unwrap_or_else(|_| path.to_path_buf())
}

/// Files changing in the directories a [`Plan`] names. Each directory is watched by itself (not
/// recursively): [`NOISY`] directories, the data directory and symbolic links are never entered,
/// so `node_modules` or a link to `/usr` costs no inotify watches; a directory created later is
/// added when it appears.
pub(crate) struct Watcher {
    watcher: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<PathBuf>,
}

impl Watcher {
    /// Watches what `plan` names.
    pub(crate) fn new(plan: &Plan) -> anyhow::Result<Self> {
        let (tx, events) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if !matches!(event.kind, EventKind::Access(_)) => {
                for path in event.paths {
                    let _ = tx.send(path);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "watching the app's files"),
        })
        .context("cannot watch files (inotify)")?;
        let mut this = Self { watcher, events };
        this.follow(plan)?;
        Ok(this)
    }

    /// Also watches what `plan` names (after a manifest edit).
    pub(crate) fn follow(&mut self, plan: &Plan) -> anyhow::Result<()> {
        let (trees, artifacts) = plan.dirs();
        for dir in trees {
            self.tree(plan, dir)?;
        }
        // An artifact's directory may not exist before its first build.
        for dir in artifacts.into_iter().filter(|d| d.is_dir()) {
            self.one(dir)?;
        }
        Ok(())
    }

    /// Watches `dir` and the directories below it that `plan` does not skip; returns the files
    /// found in them.
    fn tree(&mut self, plan: &Plan, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(dir) = pending.pop() {
            if plan.skips(&dir) {
                continue;
            }
            match self.one(&dir) {
                Ok(()) => {}
                // Gone since it was listed, or not made yet (a workdir): nothing to watch.
                Err(_) if !dir.is_dir() => continue,
                Err(e) => return Err(e),
            }
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                // `file_type` of an entry does not follow symbolic links.
                match entry.file_type() {
                    Ok(t) if t.is_dir() => pending.push(entry.path()),
                    Ok(_) => files.push(entry.path()),
                    Err(_) => {}
                }
            }
        }
        Ok(files)
    }

    fn one(&mut self, dir: &Path) -> anyhow::Result<()> {
        self.watcher.watch(dir, RecursiveMode::NonRecursive).with_context(|| {
            format!(
                "cannot watch {}; if the limit of inotify watches is reached, raise fs.inotify.max_user_watches",
                dir.display()
            )
        })
    }

    /// The next changed paths: one, or a directory that appeared (watched from now on) with the
    /// files already in it, written before its watch was in place.
    async fn changed(&mut self, plan: &Plan) -> Option<Vec<PathBuf>> {
        let path = self.events.recv().await?;
        let mut changed = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => self.tree(plan, &path).unwrap_or_else(|e| {
                tracing::warn!(error = %format!("{e:#}"), "a new directory is not watched");
                Vec::new()
            }),
            _ => Vec::new(),
        };
        changed.push(path);
        Some(changed)
    }

    /// The next batch of changes `plan` cares about: waits for the first, then until the files
    /// have been quiet for `debounce` (at most [`MAX_BATCH`]).
    pub(crate) async fn next(&mut self, plan: &Plan, debounce: Duration) -> Changes {
        let mut changes = Changes::default();
        while changes.is_empty() {
            let Some(paths) = self.changed(plan).await else { return std::future::pending().await };
            paths.iter().for_each(|p| {
                plan.classify(p, &mut changes);
            });
        }
        // Only a change that matters restarts the quiet time: the app's own writes (its logs, its
        // state, the build's output) go on while it is being rebuilt.
        let deadline = tokio::time::Instant::now() + MAX_BATCH;
        let mut quiet = tokio::time::Instant::now() + debounce;
        loop {
            match tokio::time::timeout_at(quiet.min(deadline), self.changed(plan)).await {
                Ok(Some(paths)) => {
                    // Every path is classified (no short circuit): each may add a component.
                    let matters = paths.iter().filter(|p| plan.classify(p, &mut changes)).count() > 0;
                    if matters {
                        quiet = tokio::time::Instant::now() + debounce;
                    }
                }
                Ok(None) | Err(_) => return changes,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(manifest: &str) -> (tempfile::TempDir, Plan) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nimbus.toml"), manifest).unwrap();
        let loaded = LoadedManifest::load(dir.path()).unwrap();
        let plan = Plan::new(&loaded, &dir.path().join(".nimbus")).unwrap();
        (dir, plan)
    }

    fn changed(plan: &Plan, dir: &Path, files: &[&str]) -> Changes {
        let mut changes = Changes::default();
        files.iter().for_each(|f| {
            plan.classify(&dir.join(f), &mut changes);
        });
        changes
    }

    const APP: &str = r#"
[app]
name = "w"

[component.api]
source = "target/wasm32-wasip2/release/api.wasm"
build = { command = "cargo build", watch = ["src/**/*.rs", "Cargo.toml"] }

[component.prebuilt]
source = "lib/pre.wasm"

[component.svc]
command = ["python3", "server.py"]
workdir = "svc"

[[trigger.http]]
route = "/..."
component = "api"

[[trigger.http]]
route = "/pre"
component = "prebuilt"

[[trigger.http]]
route = "/svc/..."
component = "svc"
"#;

    #[test]
    fn each_file_rebuilds_only_its_component() {
        let (dir, plan) = plan(APP);
        let d = dir.path();
        assert_eq!(changed(&plan, d, &["src/lib.rs"]).components, ["api".to_string()].into());
        assert_eq!(changed(&plan, d, &["src/deep/mod.rs"]).components, ["api".to_string()].into());
        assert_eq!(changed(&plan, d, &["lib/pre.wasm"]).components, ["prebuilt".to_string()].into());
        assert_eq!(changed(&plan, d, &["svc/server.py"]).components, ["svc".to_string()].into());
        let manifest = changed(&plan, d, &["nimbus.toml"]);
        assert!(manifest.manifest && manifest.components.is_empty());
    }

    #[test]
    fn build_outputs_and_state_are_not_changes() {
        let (dir, plan) = plan(APP);
        let d = dir.path();
        // The build's own output, the data directory, a service's caches and unrelated files.
        for f in [
            "target/wasm32-wasip2/release/api.wasm",
            ".nimbus/events/log",
            "svc/__pycache__/server.cpython-311.pyc",
            "svc/node_modules/x/index.js",
            "README.md",
            "src/notes.txt",
        ] {
            let c = changed(&plan, d, &[f]);
            assert!(c.is_empty(), "{f} counted as a change: {c:?}");
        }
    }

    #[tokio::test]
    async fn a_directory_created_later_is_watched_and_links_are_not_followed() {
        let (dir, plan) = plan(APP);
        let d = dir.path();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.join("src/link")).unwrap();
        let mut watcher = Watcher::new(&plan).unwrap();
        // A file reached only through a link: not watched (were it, it would come first).
        std::fs::write(outside.path().join("x.rs"), "// outside").unwrap();
        // A source directory made after the start: its files are seen.
        std::fs::create_dir_all(d.join("src/deep")).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::fs::write(d.join("src/deep/mod.rs"), "// new").unwrap();
        let changes = tokio::time::timeout(Duration::from_secs(10), watcher.next(&plan, Duration::from_millis(50)))
            .await
            .unwrap();
        assert_eq!(changes.components, ["api".to_string()].into());
        assert_eq!(changes.files, [PathBuf::from("src/deep/mod.rs")].into());
    }
}

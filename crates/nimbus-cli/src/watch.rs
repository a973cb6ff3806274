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
    /// Watched by its one artifact, which may be anywhere (even under `target/`).
    artifact: bool,
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
            components.push(Watched { name: name.clone(), base, globs, artifact });
        }
        Ok(Self { manifest: absolute(&loaded.path), components, ignored: absolute(data_dir) })
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

    /// Adds what a change of `path` means to `changes`.
    fn classify(&self, path: &Path, changes: &mut Changes) {
        if path.starts_with(&self.ignored) {
            return;
        }
        let mut matched = path == self.manifest;
        changes.manifest |= matched;
        for w in &self.components {
            let Ok(rel) = path.strip_prefix(&w.base) else { continue };
            let noisy = rel.components().any(|c| NOISY.iter().any(|n| c.as_os_str() == *n));
            if w.globs.is_match(rel) && (w.artifact || !noisy) {
                changes.components.insert(w.name.clone());
                matched = true;
            }
        }
        if matched {
            changes.first.get_or_insert_with(std::time::Instant::now);
            let dir = self.manifest.parent().unwrap_or(Path::new("/"));
            changes.files.insert(path.strip_prefix(dir).unwrap_or(path).to_path_buf());
        }
    }
}

/// `path` without `.`, `..` or symbolic links, as the watcher reports paths (as given when it
/// does not exist yet).
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).or_else(|_| std::path::absolute(path)).unwrap_or_else(|_| path.to_path_buf())
}

/// Files changing under an app directory.
pub(crate) struct Watcher {
    _watcher: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<PathBuf>,
}

impl Watcher {
    /// Watches `dir` and everything under it.
    pub(crate) fn new(dir: &Path) -> anyhow::Result<Self> {
        let (tx, events) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if !matches!(event.kind, EventKind::Access(_)) => {
                for path in event.paths {
                    let _ = tx.send(path);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "watching the app's files"),
        })
        .context("cannot watch files (inotify)")?;
        watcher.watch(&absolute(dir), RecursiveMode::Recursive).with_context(|| {
            format!(
                "cannot watch {}; if the limit of inotify watches is reached, raise fs.inotify.max_user_watches",
                dir.display()
            )
        })?;
        Ok(Self { _watcher: watcher, events })
    }

    /// The next batch of changes `plan` cares about: waits for the first, then until the files
    /// have been quiet for `debounce` (at most [`MAX_BATCH`]).
    pub(crate) async fn next(&mut self, plan: &Plan, debounce: Duration) -> Changes {
        let mut changes = Changes::default();
        while changes.is_empty() {
            let Some(path) = self.events.recv().await else { return std::future::pending().await };
            plan.classify(&path, &mut changes);
        }
        let deadline = tokio::time::Instant::now() + MAX_BATCH;
        loop {
            let quiet = tokio::time::Instant::now() + debounce;
            match tokio::time::timeout_at(quiet.min(deadline), self.events.recv()).await {
                Ok(Some(path)) => plan.classify(&path, &mut changes),
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
        files.iter().for_each(|f| plan.classify(&dir.join(f), &mut changes));
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
}

//! `nimbus dev`: `nimbus up` that follows the app's files. It builds and serves the app, watches
//! the manifest and each component's `build.watch` globs ([`crate::watch`]), and on a change
//! rebuilds only the components whose files changed, assembles a new revision with the app host
//! (unchanged functions come from the compile cache) and swaps it in: requests in flight finish on
//! the old revision, new ones get the new one, none fails. Then the old revision's triggers stop
//! and its services drain and stop. A build that fails, a manifest that does not validate or a
//! revision that does not assemble prints its error and the last good revision keeps serving.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use nimbus_gateway::LiveRevision;
use nimbus_manifest::LoadedManifest;

use crate::up::{LocalArgs, Mode, Started};
use crate::watch::{Changes, Plan, Watcher};

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// App directory or manifest file.
    #[arg(default_value = ".", env = "NIMBUS_APP")]
    dir: PathBuf,
    /// How long the files must be quiet after a change before the rebuild starts, in ms.
    #[arg(long, env = "NIMBUS_DEBOUNCE_MS", default_value_t = 100)]
    debounce_ms: u64,
    /// Compile a changed component from scratch instead of reusing its compiled functions that
    /// did not change (the cache of compiled functions holds up to 1 GiB).
    #[arg(long, env = "NIMBUS_NO_INCREMENTAL_COMPILE")]
    no_incremental_compile: bool,
    #[command(flatten)]
    local: LocalArgs,
}

pub(crate) fn run(args: DevArgs) -> anyhow::Result<()> {
    let loaded = LoadedManifest::load(&args.dir)?;
    crate::up::async_runtime()?.block_on(serve(args, loaded))
}

async fn serve(args: DevArgs, mut loaded: LoadedManifest) -> anyhow::Result<()> {
    let data_dir = args.local.data_dir(&loaded);
    let mut watcher = Watcher::new(&Plan::new(&loaded, &data_dir)?)?;
    let debounce = Duration::from_millis(args.debounce_ms);
    // Until the first build succeeds there is nothing to serve: wait for a fix.
    while let Err(e) = build(&loaded, Vec::new()).await {
        println!("✗ {e:#}\n  nothing is served yet; save a fix to try again");
        let changes = watcher.next(&Plan::new(&loaded, &data_dir)?, debounce).await;
        if changes.manifest {
            match LoadedManifest::load(&loaded.path) {
                Ok(edited) => {
                    loaded = edited;
                    watcher.follow(&Plan::new(&loaded, &data_dir)?)?;
                }
                Err(e) => println!("✗ {e}"),
            }
        }
    }
    let Started { host, swap, live, listening, base } = crate::up::start(
        &args.local,
        &loaded,
        Mode::Dev { incremental: !args.no_incremental_compile },
        &revision_id(1),
    )
    .await?;
    for name in Plan::unwatched(&loaded) {
        println!("  note: `{name}` has a build command but no build.watch globs: its changes are not seen");
    }
    println!("Watching {} for changes (revision {} serving)", loaded.dir().display(), revision_id(1));
    let mut dev = Dev { host, swap: swap.clone(), live, loaded, data_dir, base, number: 1 };
    let served = tokio::select! {
        served = listening.serve(swap) => served,
        stopped = dev.follow(&mut watcher, debounce) => stopped,
    };
    dev.live.stop().await;
    served?;
    println!("Stopped.");
    Ok(())
}

/// The longest the old revision waits for the requests routed to it before it stops.
const DRAIN: Duration = Duration::from_secs(30);

/// Runs the build commands of `components` (all when empty) off the async threads.
async fn build(loaded: &LoadedManifest, components: Vec<String>) -> anyhow::Result<()> {
    let loaded = loaded.clone();
    tokio::task::spawn_blocking(move || crate::build::build_all(&loaded, &components))
        .await
        .context("the build was cancelled")?
}

/// `dev-N`: the Nth revision `nimbus dev` served.
fn revision_id(number: u32) -> String {
    format!("dev-{number}")
}

/// The app as `nimbus dev` serves it.
struct Dev {
    host: nimbus_host::AppHost,
    swap: Arc<nimbus_gateway::Swap>,
    /// The triggers and services of the revision serving.
    live: crate::up::Live,
    /// The manifest of the revision serving.
    loaded: LoadedManifest,
    data_dir: PathBuf,
    base: String,
    number: u32,
}

impl Dev {
    /// Rebuilds and swaps on every batch of changes; returns only on an error of the watcher.
    async fn follow(&mut self, watcher: &mut Watcher, debounce: Duration) -> anyhow::Result<()> {
        let mut plan = Plan::new(&self.loaded, &self.data_dir)?;
        loop {
            let changes = watcher.next(&plan, debounce).await;
            let saved = changes.first.unwrap_or_else(Instant::now);
            let files: Vec<_> = changes.files.iter().map(|f| f.display().to_string()).collect();
            println!("\n~ changed: {}", files.join(", "));
            // What is watched follows from the manifest alone: planned (and the tree walked) again
            // only when an edit of it was applied.
            let manifest_edited = changes.manifest;
            match self.reload(changes, saved).await {
                Ok(()) if !manifest_edited => {}
                Ok(()) => match Plan::new(&self.loaded, &self.data_dir).and_then(|p| watcher.follow(&p).map(|()| p)) {
                    Ok(p) => plan = p,
                    Err(e) => println!("✗ {e:#}\n  still watching the files of the previous manifest"),
                },
                Err(e) => {
                    println!("✗ {e:#}");
                    println!("  still serving {} at {}; save a fix to try again", revision_id(self.number), self.base);
                }
            }
        }
    }

    /// Builds what changed, assembles the new revision and swaps it in.
    async fn reload(&mut self, changes: Changes, saved: Instant) -> anyhow::Result<()> {
        let loaded = if changes.manifest { LoadedManifest::load(&self.loaded.path)? } else { self.loaded.clone() };
        let mut to_build: Vec<String> = changes.components.into_iter().collect();
        // A component the edit added, or whose build changed, is built too.
        for (name, c) in &loaded.manifest.component {
            let before = self.loaded.manifest.component.get(name);
            if c.build.is_some() && before.is_none_or(|b| b.build != c.build) && !to_build.contains(name) {
                to_build.push(name.clone());
            }
        }
        to_build.retain(|name| loaded.manifest.component.get(name).is_some_and(|c| c.build.is_some()));
        let built = Instant::now();
        if !to_build.is_empty() {
            build(&loaded, to_build).await?;
        }
        let build_time = built.elapsed();
        let loading = Instant::now();
        let (revision, triggers) = crate::up::assemble(&self.host, &loaded).await?;
        let load_time = loading.elapsed();
        let number = self.number + 1;
        let nimbus_host::Revision { gateway, services, described, .. } = revision;
        let routes_changed = loaded.manifest.trigger != self.loaded.manifest.trigger;
        let old = self.swap.publish(LiveRevision::new(&revision_id(number), gateway));
        crate::up::tell_alerting(&self.host, &loaded, &revision_id(number));
        let previous = std::mem::replace(&mut self.live, crate::up::Live { triggers, services });
        self.number = number;
        self.loaded = loaded;
        println!(
            "✓ {} serving, {} ms after the save (build {} ms, load and swap {} ms)",
            revision_id(number),
            saved.elapsed().as_millis(),
            build_time.as_millis(),
            load_time.as_millis()
        );
        tracing::info!(
            revision = %revision_id(number),
            save_to_serve_ms = saved.elapsed().as_millis() as u64,
            build_ms = build_time.as_millis() as u64,
            load_ms = load_time.as_millis() as u64,
            "swapped in a new revision"
        );
        if routes_changed {
            let current = self.swap.current();
            crate::up::print_routes(
                &current.gateway,
                &self.loaded.manifest,
                &self.live.triggers,
                &described,
                &self.base,
            );
        }
        // Requests routed to the old revision hold it until their response starts; then its
        // services drain what they are still sending, and stop.
        tokio::spawn(async move {
            let deadline = Instant::now() + DRAIN;
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            drop(old);
            previous.stop().await;
        });
        Ok(())
    }
}

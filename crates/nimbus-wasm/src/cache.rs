//! Compiles components and modules, caching the machine code on disk keyed by the content hash
//! of the wasm and the engine's configuration, so a restart does not recompile.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::LoadError;

/// A compiled artifact, ready to be linked.
pub(crate) enum Compiled {
    Component(Component),
    Module(Module),
}

/// What kind of wasm a file holds, read from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmKind {
    /// A component (WASI 0.2).
    Component,
    /// A core module (WASI preview1).
    Module,
}

impl WasmKind {
    /// Classifies bytes by their header, or `None` if they are not wasm at all.
    pub fn detect(bytes: &[u8]) -> Option<Self> {
        if wasmparser::Parser::is_component(bytes) {
            Some(Self::Component)
        } else if wasmparser::Parser::is_core_wasm(bytes) {
            Some(Self::Module)
        } else {
            None
        }
    }
}

/// How the artifact was obtained, for start-up reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the disk cache.
    Hit(Duration),
    /// Compiled (and stored, when a cache is configured).
    Compiled(Duration),
}

/// On-disk cache of compiled artifacts.
#[derive(Debug, Clone)]
pub(crate) struct CompileCache {
    dir: PathBuf,
    fingerprint: String,
}

impl CompileCache {
    pub(crate) fn new(dir: PathBuf, fingerprint: String) -> Self {
        Self { dir, fingerprint }
    }

    fn entry(&self, bytes: &[u8], kind: WasmKind) -> PathBuf {
        let digest = hex::encode(Sha256::digest(bytes));
        let ext = match kind {
            WasmKind::Component => "cwasm",
            WasmKind::Module => "mwasm",
        };
        self.dir.join(format!("{digest}-{}.{ext}", self.fingerprint))
    }

    fn load(&self, engine: &Engine, entry: &Path, kind: WasmKind) -> Option<Compiled> {
        if !entry.exists() {
            return None;
        }
        // SAFETY: entries are written only by `store` below, atomically (write to a temporary
        // file, then rename), into the user's own cache directory, and are keyed by the engine's
        // compatibility hash; wasmtime additionally checks the header and version on load.
        #[allow(unsafe_code)]
        let loaded = match kind {
            WasmKind::Component => unsafe { Component::deserialize_file(engine, entry) }.map(Compiled::Component),
            WasmKind::Module => unsafe { Module::deserialize_file(engine, entry) }.map(Compiled::Module),
        };
        match loaded {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(entry = %entry.display(), error = %format!("{e:#}"), "ignoring unusable compile cache entry");
                None
            }
        }
    }

    fn store(&self, entry: &Path, compiled: &Compiled) {
        let result = (|| -> Result<(), String> {
            let bytes = match compiled {
                Compiled::Component(c) => c.serialize(),
                Compiled::Module(m) => m.serialize(),
            }
            .map_err(|e| format!("{e:#}"))?;
            std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
            let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, entry).map_err(|e| e.to_string())
        })();
        if let Err(e) = result {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not write the compile cache; the next start will compile again");
        }
    }
}

/// Compiles `bytes` (already classified as `kind`), through the cache when there is one. The
/// compilation runs on a blocking thread and is abandoned after `timeout`.
pub(crate) async fn compile(
    engine: &Engine,
    cache: Option<&CompileCache>,
    path: &Path,
    bytes: Vec<u8>,
    kind: WasmKind,
    timeout: Duration,
) -> Result<(Compiled, CacheOutcome), LoadError> {
    let started = Instant::now();
    let entry = cache.map(|c| c.entry(&bytes, kind));
    if let (Some(cache), Some(entry)) = (cache, &entry)
        && let Some(compiled) = cache.load(engine, entry, kind)
    {
        return Ok((compiled, CacheOutcome::Hit(started.elapsed())));
    }
    let engine2 = engine.clone();
    let job = tokio::task::spawn_blocking(move || match kind {
        WasmKind::Component => Component::new(&engine2, &bytes).map(Compiled::Component),
        WasmKind::Module => Module::new(&engine2, &bytes).map(Compiled::Module),
    });
    let compiled = match tokio::time::timeout(timeout, job).await {
        Err(_) => return Err(LoadError::CompileTimeout { path: path.to_path_buf(), limit: timeout }),
        Ok(Err(join)) => {
            return Err(LoadError::Compile { path: path.to_path_buf(), source: nimbus_observe::cause(join) });
        }
        Ok(Ok(Err(e))) => {
            return Err(LoadError::Compile { path: path.to_path_buf(), source: nimbus_observe::cause(e) });
        }
        Ok(Ok(Ok(c))) => c,
    };
    if let (Some(cache), Some(entry)) = (cache, &entry) {
        cache.store(entry, &compiled);
    }
    Ok((compiled, CacheOutcome::Compiled(started.elapsed())))
}

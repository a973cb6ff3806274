//! The shared wasmtime engine: pooling allocator with copy-on-write memory images, epoch
//! interruption driven by a ticker thread, and the bounds that apply to every function.
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use std::borrow::Cow;
use std::collections::HashMap;

use wasmtime::{CacheStore, Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::LoadError;

/// How often the engine's epoch advances; also how often a busy guest yields to other requests.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Bytes of each pooled linear memory kept resident between instances (reset in place).
const KEEP_RESIDENT: usize = 2 << 20;

/// Settings of the runtime as a whole (per-function settings come from the manifest).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled artifacts are cached; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Largest `.wasm` file accepted, in bytes.
    pub max_module_bytes: u64,
    /// Longest compilation accepted.
    pub compile_timeout: Duration,
    /// Instances that may exist at once across all functions (sizes the pooling allocator).
    pub max_instances: u32,
    /// Largest linear memory of any instance, in MiB (sizes the pooling allocator's slots).
    pub max_memory_mb: u32,
    /// Use the pooling allocator (falls back to on-demand allocation if the host refuses it).
    pub pooling: bool,
    /// Keep each compiled function in memory (up to [`INCREMENTAL_CACHE_BYTES`]) so that a
    /// component compiled again with most of its functions unchanged compiles only the changed
    /// ones: what `nimbus dev` recompiles on every save. Off for a server, whose components are
    /// compiled once.
    pub incremental: bool,
}

/// The most bytes of compiled functions the incremental cache keeps.
pub const INCREMENTAL_CACHE_BYTES: usize = 1 << 30;

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_module_bytes: 256 << 20,
            compile_timeout: Duration::from_secs(120),
            max_instances: 1000,
            max_memory_mb: 128,
            pooling: true,
            incremental: false,
        }
    }
}

/// Which allocator the engine ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// Pre-reserved slots, copy-on-write memory images.
    Pooling,
    /// Memory mapped per instance (used when the host cannot reserve the pool).
    OnDemand,
}

pub(crate) fn build_engine(config: &RuntimeConfig) -> Result<(Engine, Allocator), LoadError> {
    if config.pooling {
        let mut pool = PoolingAllocationConfig::new();
        let instances = config.max_instances.max(1);
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(8))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(4))
            .total_stacks(instances)
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .max_memory_size((config.max_memory_mb as usize) << 20)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            .max_unused_warm_slots(instances.min(100))
            // Reset reused slots by rewriting only the pages a request dirtied (PAGEMAP_SCAN on
            // Linux >= 6.7, else memset of the low addresses) instead of madvise, so the next
            // request on the slot takes no page faults.
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 << 10);
        match Engine::new(&engine_config(config, Some(pool))) {
            Ok(engine) => return Ok((engine, Allocator::Pooling)),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "pooling allocator unavailable, using on-demand allocation")
            }
        }
    }
    Engine::new(&engine_config(config, None))
        .map(|e| (e, Allocator::OnDemand))
        .map_err(|e| LoadError::Engine(nimbus_observe::cause(e)))
}

fn engine_config(runtime: &RuntimeConfig, pool: Option<PoolingAllocationConfig>) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true).memory_init_cow(true).parallel_compilation(true);
    if let Some(pool) = pool {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    if runtime.incremental {
        // Only fails when the compiler is disabled, and it never is here.
        let _ = config.enable_incremental_compilation(Arc::new(FunctionCache::default()));
    }
    config
}

/// Cranelift's compiled functions by the hash of their input, in memory, up to
/// [`INCREMENTAL_CACHE_BYTES`] (then new ones are not kept).
#[derive(Debug, Default)]
struct FunctionCache {
    entries: std::sync::RwLock<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    by_key: HashMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
}

impl CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries.by_key.get(key).map(|v| Cow::Owned(v.clone()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let size = key.len() + value.len();
        if entries.bytes + size > INCREMENTAL_CACHE_BYTES {
            return false;
        }
        entries.bytes += size;
        entries.by_key.insert(key.to_vec(), value);
        true
    }
}

/// Key of the engine configuration for the compile cache: artifacts from another wasmtime
/// version or configuration are never loaded.
pub(crate) fn engine_fingerprint(engine: &Engine) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
#[derive(Debug)]
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub(crate) fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("nimbus-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("spawn the epoch ticker thread");
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

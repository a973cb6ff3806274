//! What `nimbus up` and `nimbus server` share: engine flags, the compile cache location, and
//! shutdown on SIGINT/SIGTERM.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use nimbus_gateway::ServeConfig;
use nimbus_wasm::{Runtime, RuntimeConfig};

/// Flags of the wasm engine and of draining.
#[derive(Debug, Args)]
pub(crate) struct EngineArgs {
    /// Where compiled components are cached (default: ~/.cache/nimbus/compiled).
    #[arg(long, env = "NIMBUS_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every component afresh and keep nothing on disk.
    #[arg(long, env = "NIMBUS_NO_CACHE")]
    no_cache: bool,
    /// Seconds to let in-flight requests finish on shutdown.
    #[arg(long, env = "NIMBUS_DRAIN_TIMEOUT", default_value_t = 30)]
    drain_timeout: u64,
    /// Largest .wasm file accepted, in MiB.
    #[arg(long, env = "NIMBUS_MAX_MODULE_MB", default_value_t = 256)]
    max_module_mb: u64,
    /// Longest compilation of one component accepted, in seconds.
    #[arg(long, env = "NIMBUS_COMPILE_TIMEOUT", default_value_t = 120)]
    compile_timeout: u64,
}

impl EngineArgs {
    /// The wasm runtime with room for `max_instances` concurrent instances of up to
    /// `max_memory_mb` each.
    pub(crate) fn runtime(&self, max_instances: u32, max_memory_mb: u32) -> anyhow::Result<Runtime> {
        let config = RuntimeConfig {
            cache_dir: if self.no_cache { None } else { self.cache_dir.clone().or_else(default_cache_dir) },
            max_module_bytes: self.max_module_mb << 20,
            compile_timeout: Duration::from_secs(self.compile_timeout),
            max_instances,
            max_memory_mb,
            pooling: true,
        };
        Runtime::new(config).context("could not set up the wasm engine")
    }

    /// How the accept loop drains.
    pub(crate) fn serve_config(&self) -> ServeConfig {
        ServeConfig { drain_timeout: Duration::from_secs(self.drain_timeout) }
    }
}

/// Where topics and KV buckets live: embedded in the data dir, or on NATS JetStream.
#[derive(Debug, Args)]
pub(crate) struct BackendArgs {
    /// Use NATS JetStream at this URL for topics and KV buckets (e.g. nats://127.0.0.1:4222); run
    /// nats-server with `jetstream { sync_interval: always }` so acknowledged writes survive a crash.
    #[arg(long, env = "NIMBUS_NATS")]
    pub(crate) nats: Option<String>,
    /// How long events are kept, consumed or not (e.g. 7d, 12h).
    #[arg(long, env = "NIMBUS_EVENT_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub(crate) event_retention: Duration,
}

impl BackendArgs {
    /// JetStream if `--nats` is given, else the embedded bus in `data_dir/bus.redb`.
    pub(crate) async fn open_bus(
        &self,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<std::sync::Arc<dyn nimbus_bus::EventBus>> {
        let config = nimbus_bus::BusConfig { retention: self.event_retention, ..Default::default() };
        Ok(match &self.nats {
            Some(url) => std::sync::Arc::new(nimbus_bus::JetStream::connect(url, config).await?),
            None => {
                std::fs::create_dir_all(data_dir)
                    .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
                std::sync::Arc::new(nimbus_bus::Embedded::open(&data_dir.join("bus.redb"), config)?)
            }
        })
    }

    /// NATS JetStream KV if `--nats` is given, else the embedded store in `data_dir/state.redb`.
    pub(crate) async fn open_kv(
        &self,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<std::sync::Arc<dyn nimbus_state::KvStore>> {
        Ok(match &self.nats {
            Some(url) => std::sync::Arc::new(nimbus_state::NatsKv::connect(url).await?),
            None => {
                std::fs::create_dir_all(data_dir)
                    .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
                std::sync::Arc::new(nimbus_state::Embedded::open(&data_dir.join("state.redb"))?)
            }
        })
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("nimbus").join("compiled"))
}

/// Listens for SIGINT and SIGTERM from the moment it is called — before the banner says the
/// server is ready, so a signal sent right after it is never missed — and resolves on the first.
pub(crate) fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("received SIGINT"),
            _ = term.recv() => tracing::info!("received SIGTERM"),
        }
    })
}

//! What `nimbus up` and `nimbus server` share: engine flags, the compile cache location, and
//! shutdown on SIGINT/SIGTERM.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use nimbus_gateway::ServeConfig;
use nimbus_wasm::{Runtime, RuntimeConfig};

/// Flags of the wasm engine, of client connections and of draining.
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
    /// Close a client connection with no request in progress for this long (e.g. 30s): one
    /// that sends nothing, or its headers too slowly, or stops sending a body that streams to a
    /// service, or is kept alive unused (0: never).
    #[arg(long, env = "NIMBUS_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Most client connections the gateway holds at once; more wait until one closes (default
    /// 10000, less if the open-file limit is lower).
    #[arg(long, env = "NIMBUS_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Most connections the API holds at once, apart from the gateway's (default 256, less if
    /// the open-file limit is lower).
    #[arg(long, env = "NIMBUS_API_MAX_CONNECTIONS")]
    api_max_connections: Option<usize>,
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
    /// The wasm runtime; `incremental` keeps compiled functions in memory for recompiles (`nimbus dev`).
    pub(crate) fn runtime(&self, max_instances: u32, max_memory_mb: u32, incremental: bool) -> anyhow::Result<Runtime> {
        let config = RuntimeConfig {
            cache_dir: if self.no_cache { None } else { self.cache_dir.clone().or_else(default_cache_dir) },
            max_module_bytes: self.max_module_mb << 20,
            compile_timeout: Duration::from_secs(self.compile_timeout),
            max_instances,
            max_memory_mb,
            pooling: true,
            incremental,
        };
        Runtime::new(config).context("could not set up the wasm engine")
    }

    /// How the accept loops of the gateway and of the API time out idle connections, cap them
    /// (under the open-file limit, raised here) and drain.
    pub(crate) fn serve_configs(&self) -> anyhow::Result<Listeners> {
        let caps = crate::connections::caps(self.max_connections, self.api_max_connections)?;
        let gateway = ServeConfig {
            drain_timeout: Duration::from_secs(self.drain_timeout),
            idle_timeout: self.idle_timeout,
            max_connections: caps.gateway,
            ..ServeConfig::default()
        };
        Ok(Listeners { api: ServeConfig { max_connections: caps.api, ..gateway.clone() }, gateway })
    }
}

/// The settings of each listener's accept loop.
#[derive(Debug, Clone)]
pub(crate) struct Listeners {
    pub(crate) gateway: ServeConfig,
    pub(crate) api: ServeConfig,
}

/// Tracing, metrics and the trace and log stores (in the data dir).
#[derive(Debug, Args)]
pub(crate) struct ObserveArgs {
    /// Record no spans, keep no metrics and export nothing over OTLP (per-invocation logs are
    /// still kept for `nimbus logs`, but not exported: with telemetry off nothing leaves the node).
    #[arg(long, env = "NIMBUS_NO_TELEMETRY")]
    no_telemetry: bool,
    /// Share of new traces recorded, 0 to 1 (an incoming sampled `traceparent` is always
    /// followed).
    #[arg(long, env = "NIMBUS_TRACE_SAMPLE", default_value_t = 1.0, value_parser = ratio)]
    trace_sample: f64,
    /// Disk space the trace store may use, in MiB.
    #[arg(long, env = "NIMBUS_TRACE_STORE_MB", default_value_t = 128)]
    trace_store_mb: u64,
    /// How long traces are kept (e.g. 24h).
    #[arg(long, env = "NIMBUS_TRACE_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    trace_retention: Duration,
    /// Successful traces per second the trace store keeps besides every failed and slow one
    /// (0: keep every trace).
    #[arg(long, env = "NIMBUS_TRACE_KEEP", default_value_t = 100)]
    trace_keep: u32,
    /// Traces at least this long are always kept (e.g. 100ms).
    #[arg(long, env = "NIMBUS_TRACE_SLOW", default_value = "100ms", value_parser = humantime::parse_duration)]
    trace_slow: Duration,
    /// Disk space the log store may use, in MiB.
    #[arg(long, env = "NIMBUS_LOG_STORE_MB", default_value_t = 64)]
    log_store_mb: u64,
    /// How long logs are kept (e.g. 7d).
    #[arg(long, env = "NIMBUS_LOG_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    log_retention: Duration,
    /// Time between two points of the metrics' history, which alerting judges (1s to 60s).
    #[arg(long, env = "NIMBUS_METRICS_STEP", default_value = "5s", value_parser = metrics_step)]
    metrics_step: Duration,
    /// POST alert notifications (CloudEvents, JSON) to this URL; repeatable (the environment
    /// variable takes a comma-separated list).
    #[arg(long = "alert-webhook", env = "NIMBUS_ALERT_WEBHOOK", value_delimiter = ',', value_name = "URL")]
    alert_webhooks: Vec<String>,
    /// Also publish alert notifications to this topic of the bus: `APP/TOPIC` (under `nimbus up`,
    /// `TOPIC` is one of the app's).
    #[arg(long = "alert-topic", env = "NIMBUS_ALERT_TOPIC", value_name = "APP/TOPIC")]
    alert_topic: Option<String>,
    /// Prices and budgets (TOML; see `examples/cost.toml`). Without it usage is costed at that
    /// example's public list prices and no budget applies.
    #[arg(long, env = "NIMBUS_COST_CONFIG", value_name = "FILE")]
    cost_config: Option<std::path::PathBuf>,
    /// Time between two writes of the metered usage to disk: at most what a crash loses
    /// (1s to 10m).
    #[arg(long, env = "NIMBUS_METER_FLUSH", default_value = "10s", value_parser = meter_flush)]
    meter_flush: Duration,
    /// Meter nothing: no usage, cost or budgets.
    #[arg(long, env = "NIMBUS_NO_METERING")]
    no_metering: bool,
}

/// The text of the file at `path`, refused if it holds more than `max` bytes.
fn read_small(path: &std::path::Path, max: u64) -> anyhow::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?.take(max + 1).read_to_string(&mut text)?;
    anyhow::ensure!(text.len() as u64 <= max, "it is larger than {max} bytes");
    Ok(text)
}

fn meter_flush(s: &str) -> Result<Duration, String> {
    duration_within(s, 1, 600, "between 1s and 10m, e.g. 10s")
}

fn metrics_step(s: &str) -> Result<Duration, String> {
    duration_within(s, 1, 60, "between 1s and 60s, e.g. 5s")
}

/// A duration of `min` to `max` seconds; `hint` says so.
fn duration_within(s: &str, min: u64, max: u64, hint: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if (Duration::from_secs(min)..=Duration::from_secs(max)).contains(&d) { Ok(d) } else { Err(hint.into()) }
}

fn ratio(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&r) { Ok(r) } else { Err("a share between 0 and 1, e.g. 0.1".into()) }
}

impl ObserveArgs {
    /// Metering into `data_dir/metering`, with the cost configuration read, unless it is off.
    fn metering(&self, data_dir: &std::path::Path) -> anyhow::Result<Option<nimbus_observe::metering::MeteringConfig>> {
        use nimbus_observe::metering::{CostConfig, MeteringConfig};
        if self.no_metering {
            return Ok(None);
        }
        let cost = match &self.cost_config {
            Some(path) => {
                let text = read_small(path, 1 << 20)
                    .with_context(|| format!("could not read the cost configuration {}", path.display()))?;
                let cost = CostConfig::parse(&text, &path.display().to_string())?;
                for b in &cost.budgets {
                    for (what, name) in [("app", &b.app), ("tenant", &b.tenant)] {
                        if let Some(name) = name {
                            nimbus_manifest::check_app_name(name)
                                .map_err(|e| anyhow::anyhow!("{}: a budget's {what} {e}", path.display()))?;
                        }
                    }
                }
                cost
            }
            None => CostConfig::example(),
        };
        Ok(Some(MeteringConfig { dir: data_dir.join("metering"), flush: self.meter_flush, cost, node: "local".into() }))
    }

    /// Opens the stores under `data_dir/telemetry` and starts the telemetry pipeline (and OTLP
    /// export of what the `OTEL_*` environment asks for, unless telemetry is off).
    pub(crate) fn start(&self, data_dir: &std::path::Path) -> anyhow::Result<nimbus_observe::Observer> {
        use nimbus_observe::{Bounds, ObserveConfig, Observer, StorePolicy};
        let config = ObserveConfig {
            dir: Some(data_dir.join("telemetry")),
            traces: !self.no_telemetry,
            metrics: !self.no_telemetry,
            series_step: self.metrics_step,
            sample_ratio: self.trace_sample,
            trace_store: Bounds { max_bytes: self.trace_store_mb << 20, retention: self.trace_retention },
            store_policy: StorePolicy { slow: self.trace_slow, per_second: self.trace_keep },
            log_store: Bounds { max_bytes: self.log_store_mb << 20, retention: self.log_retention },
            insight: nimbus_observe::insight::InsightConfig {
                dir: Some(data_dir.join("telemetry")),
                webhooks: self.alert_webhooks.clone(),
                node: String::new(),
            },
            metering: self.metering(data_dir)?,
            export: !self.no_telemetry,
        };
        let observer = Observer::start(config)?;
        if let Some(insight) = observer.insight() {
            insight.add_source(std::sync::Arc::new(DiskGauge(data_dir.to_path_buf())));
        }
        Ok(observer)
    }
}

/// The disk holding the data dir (its event, state, trace and log stores), read for alerting
/// each step: its use is forecast towards its size.
#[derive(Debug)]
struct DiskGauge(std::path::PathBuf);

impl nimbus_observe::insight::GaugeSource for DiskGauge {
    fn sample(&self) -> nimbus_observe::insight::Readings<'_> {
        let reading = rustix::fs::statvfs(&self.0).ok().filter(|s| s.f_blocks > 0).map(|s| {
            let mib = |blocks: u64| (blocks as f64) * (s.f_frsize as f64) / (1024.0 * 1024.0);
            nimbus_observe::insight::Gauge {
                app: nimbus_observe::insight::NODE.into(),
                component: "disk".into(),
                signal: nimbus_observe::insight::GaugeSignal::DiskUsed,
                // What is not available to the stores is used, reserved blocks included.
                value: mib(s.f_blocks - s.f_bavail.min(s.f_blocks)),
                what: format!("the disk of {}", self.0.display()),
                limit: Some(mib(s.f_blocks)),
            }
        });
        Box::pin(async move { reading.into_iter().collect() })
    }
}

impl ObserveArgs {
    /// Adds the `--alert-topic` sink to `observer`'s alerting: a topic of `bus` (of app `served`
    /// when the flag names no app).
    pub(crate) fn alert_topic(
        &self,
        observer: &nimbus_observe::Observer,
        bus: Option<&std::sync::Arc<dyn nimbus_bus::EventBus>>,
        served: Option<&str>,
    ) -> anyhow::Result<()> {
        let (Some(spec), Some(insight)) = (&self.alert_topic, observer.insight()) else { return Ok(()) };
        let (app, topic) = match (spec.split_once('/'), served) {
            (Some((app, topic)), _) => (app, topic),
            (None, Some(app)) => (app, spec.as_str()),
            (None, None) => anyhow::bail!("--alert-topic {spec}: name the app too, as APP/TOPIC"),
        };
        let Some(bus) = bus else {
            anyhow::bail!(
                "--alert-topic {spec}: this app has no event bus; declare a topic it publishes to (grants.publish) or consumes"
            )
        };
        let sink =
            nimbus_host::AlertTopic::new(bus.clone(), app, topic).with_context(|| format!("--alert-topic {spec}"))?;
        insight.add_sink(std::sync::Arc::new(sink));
        Ok(())
    }
}

/// One line on where telemetry goes, for the start-up banner (`api` serves `/metrics`).
pub(crate) fn describe_telemetry(observer: &nimbus_observe::Observer, api: &str) -> String {
    if !observer.tracer().is_enabled() {
        return "off (--no-telemetry); logs in `nimbus logs`".into();
    }
    let mut line = format!("metrics at {api}/metrics; `nimbus traces`, `nimbus logs`, `nimbus alerts`");
    if let Some(exports) = observer.exports().describe() {
        line.push_str(&format!("; {exports}"));
    }
    line
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
    /// On how many NATS servers topics, KV buckets and (in a cluster) the control records and
    /// artifacts are kept: 1, or 3 with a three-server NATS cluster, so that one may fail
    /// without losing anything acknowledged.
    #[arg(long, env = "NIMBUS_NATS_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub(crate) nats_replicas: u8,
}

impl BackendArgs {
    /// JetStream if `--nats` is given (applying `residency` to the apps' topics), else the
    /// embedded bus in `data_dir/bus.redb`.
    pub(crate) async fn open_bus(
        &self,
        data_dir: &std::path::Path,
        residency: &std::sync::Arc<nimbus_manifest::Residency>,
    ) -> anyhow::Result<std::sync::Arc<dyn nimbus_bus::EventBus>> {
        let config = nimbus_bus::BusConfig {
            retention: self.event_retention,
            replicas: self.nats_replicas.into(),
            ..Default::default()
        };
        Ok(match &self.nats {
            Some(url) => {
                std::sync::Arc::new(nimbus_bus::JetStream::connect(url, config).await?.resident(residency.clone()))
            }
            None => {
                std::fs::create_dir_all(data_dir)
                    .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
                std::sync::Arc::new(nimbus_bus::Embedded::open(&data_dir.join("bus.redb"), config)?)
            }
        })
    }

    /// NATS JetStream KV if `--nats` is given (applying `residency` to the apps' buckets), else
    /// the embedded store in `data_dir/state.redb`.
    pub(crate) async fn open_kv(
        &self,
        data_dir: &std::path::Path,
        residency: &std::sync::Arc<nimbus_manifest::Residency>,
    ) -> anyhow::Result<std::sync::Arc<dyn nimbus_state::KvStore>> {
        Ok(match &self.nats {
            Some(url) => std::sync::Arc::new(
                nimbus_state::NatsKv::connect(url)
                    .await?
                    .replicated(self.nats_replicas.into())
                    .resident(residency.clone()),
            ),
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

/// Closes the data dir to other users except for the way to the deployed services' trees: the
/// dir itself may only be passed through (0711), its stores and other directories are the
/// owner's alone (0600, 0700), `services/` stays readable (0755) for the sandbox's user, and
/// `identity/` passable (0711) to its services' certificate files (the CA's key is in its
/// `ca/`, 0700).
pub(crate) fn harden_data_dir(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let set = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the permissions of {}", path.display()))
    };
    set(data_dir, 0o711)?;
    for entry in std::fs::read_dir(data_dir)?.flatten() {
        let Ok(kind) = entry.file_type() else { continue };
        let name = entry.file_name();
        match (kind.is_dir(), name.to_str()) {
            (true, Some("services")) => set(&entry.path(), 0o755)?,
            (true, Some("identity")) => set(&entry.path(), 0o711)?,
            (true, _) => set(&entry.path(), 0o700)?,
            (false, _) if kind.is_file() => set(&entry.path(), 0o600)?,
            _ => {}
        }
    }
    Ok(())
}

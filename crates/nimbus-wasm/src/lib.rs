//! The Nimbus wasm executor: turns a `.wasm` file and its manifest settings into a [`Function`]
//! that handles one HTTP request per fresh, isolated instance.
//!
//! This crate owns the wasmtime [`Engine`] (pooling allocator, copy-on-write
//! memory images, epoch interruption), the on-disk compile cache keyed by content hash and
//! engine configuration, the bounds on module size and compile time, and the two executors:
//!
//! * WASI 0.2 components exporting `wasi:http/incoming-handler` (what `wasmtime serve` and Spin
//!   run), `nimbus:events/handler`, `nimbus:actor/handler` or `nimbus:workflow/handler` (whose
//!   `run` is driven by a [`WorkflowDriver`], the workflow engine), linked with all of WASI 0.2 — with
//!   nothing preopened, no sockets, no inherited environment — plus the host capabilities they
//!   were granted;
//! * WASI preview1 command modules run as CGI programs (WAGI).
//!
//! Host capabilities are plug-ins (the `capability` module; Spin's factors are the model): each
//! one — keyvalue, publish, outbound HTTP (and calls to other components through it, bound
//! with [`Function::bind_mesh`]), actor client, secrets (`wasi:config`) — is a module that is configured at load
//! from the component's grants, links its interfaces only when granted, and prepares its state
//! per instance. A component importing an interface it was not granted is refused at load with
//! [`LinkError::NotGranted`], naming the grant to add; [`LoadError::hint`] says what to do about
//! any load error. What a capability needs from the node comes from its own builder
//! ([`Runtime::with_kv`], [`Runtime::with_bus`], [`Runtime::with_secrets`]); the actor host, which needs the loaded
//! functions first, is bound after load ([`Function::bind_actors`], an [`ActorInvoker`] defined
//! here and implemented above).
//!
//! Each invocation gets its own store with the component's memory limit and timeout; guest
//! stdout/stderr are logged with the request id. This crate does not route, queue or listen
//! (that is `nimbus-gateway`), and does not implement the stores behind its capabilities
//! (`nimbus-state`, `nimbus-bus`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use nimbus_wasm::{Invocation, Runtime, RuntimeConfig};
//!
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let component: nimbus_manifest::Component = toml::from_str(r#"source = "hello.wasm""#)?;
//! let function = runtime.load("hello", "hello.wasm".as_ref(), &component).await?;
//! let request = http::Request::get("http://localhost/").body(bytes::Bytes::new())?;
//! let response = function.handle(request, Invocation::new("req-1", "/...")).await?;
//! assert_eq!(response.status(), 200);
//! # Ok(()) }
//! ```

mod actor;
mod cache;
mod capability;
mod config;
mod engine;
mod error;
mod events;
mod guest;
mod http;
mod invoke;
mod kv;
mod logs;
mod outbound;
mod publish;
mod scope;
mod store;
mod wagi;
mod workflow;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bytes::Bytes;
use nimbus_manifest::Component;
use wasmtime::Engine;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

pub use actor::{ActorInvoker, ActorOutcome, ActorState};
pub use cache::{CacheOutcome, WasmKind};
pub use engine::{Allocator, EPOCH_TICK, INCREMENTAL_CACHE_BYTES, RuntimeConfig};
pub use error::{InvokeError, LinkError, LoadError};
pub use events::EventError;
pub use logs::LOG_BUDGET_BYTES;
pub use wagi::MAX_CGI_OUTPUT;
pub use workflow::{Driven, Interrupted, RetryPolicy, RunOutcome, StepFailure, StepInfo, StepOptions, WorkflowDriver};

/// Body of a response produced by a function; it may still be streaming from the guest.
pub type ResponseBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The shared engine, linkers and compile cache. Create one per process.
pub struct Runtime {
    engine: Engine,
    allocator: Allocator,
    config: RuntimeConfig,
    cache: Option<cache::CompileCache>,
    /// WASI and `wasi:http`; each component gets a copy plus the capabilities it was granted.
    component_linker: wasmtime::component::Linker<guest::GuestState>,
    /// What each capability needs from the node (the bus, the KV store), set by its `with_*`.
    backends: capability::Backends,
    module_linker: wasmtime::Linker<wagi::WagiState>,
    /// Started with the first function loaded: a node serving only services has no epoch to
    /// advance (and no thread waking a thousand times a second). Each function holds it too, so
    /// it runs while any function can, whoever drops the runtime.
    ticker: std::sync::OnceLock<Arc<engine::EpochTicker>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("allocator", &self.allocator).field("config", &self.config).finish()
    }
}

impl Runtime {
    /// Builds the engine and linkers.
    pub fn new(config: RuntimeConfig) -> Result<Self, LoadError> {
        let (engine, allocator) = engine::build_engine(&config)?;
        let cache =
            config.cache_dir.clone().map(|dir| cache::CompileCache::new(dir, engine::engine_fingerprint(&engine)));
        let link_err = |e: wasmtime::Error| LoadError::Engine(nimbus_observe::cause(e));
        let mut component_linker = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker).map_err(link_err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component_linker).map_err(link_err)?;
        let mut module_linker = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut module_linker, |s: &mut wagi::WagiState| &mut s.wasi)
            .map_err(link_err)?;
        Ok(Self {
            engine,
            allocator,
            config,
            cache,
            component_linker,
            backends: capability::Backends::default(),
            module_linker,
            ticker: std::sync::OnceLock::new(),
        })
    }

    /// WASI and `wasi:http` plus the capabilities `caps` holds (those granted), and nothing else;
    /// `nimbus:actor/state` too for an `actor`.
    fn linker_for(
        &self,
        caps: &capability::Configured,
        actor: bool,
        workflow: bool,
    ) -> Result<wasmtime::component::Linker<guest::GuestState>, LoadError> {
        let mut linker = self.component_linker.clone();
        let link_err = |e: wasmtime::Error| LoadError::Engine(nimbus_observe::cause(e));
        if actor {
            actor::add_to_linker(&mut linker).map_err(link_err)?;
        }
        if workflow {
            workflow::add_to_linker(&mut linker).map_err(link_err)?;
        }
        caps.link(&mut linker).map_err(link_err)?;
        Ok(linker)
    }

    /// Which instance allocator is in use.
    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    /// Reads, compiles (or loads from the cache) and links a function.
    pub async fn load(&self, name: &str, path: &Path, component: &Component) -> Result<Function, LoadError> {
        let (function, _) = self.load_with_outcome(name, path, component).await?;
        Ok(function)
    }

    /// Like [`Runtime::load`], also saying whether the compile cache was hit.
    pub async fn load_with_outcome(
        &self,
        name: &str,
        path: &Path,
        component: &Component,
    ) -> Result<(Function, CacheOutcome), LoadError> {
        let read_err = |source| LoadError::Read { path: path.to_path_buf(), source };
        let size = std::fs::metadata(path).map_err(read_err)?.len();
        if size > self.config.max_module_bytes {
            return Err(LoadError::TooLarge { path: path.to_path_buf(), size, limit: self.config.max_module_bytes });
        }
        let bytes = std::fs::read(path).map_err(read_err)?;
        self.load_bytes(name, path, bytes, component).await
    }

    /// Like [`Runtime::load_with_outcome`] for a function already in memory (an artifact of a
    /// deployed revision); `path` only names it in errors and logs.
    pub async fn load_bytes(
        &self,
        name: &str,
        path: &Path,
        bytes: Vec<u8>,
        component: &Component,
    ) -> Result<(Function, CacheOutcome), LoadError> {
        let size = bytes.len() as u64;
        if size > self.config.max_module_bytes {
            return Err(LoadError::TooLarge { path: path.to_path_buf(), size, limit: self.config.max_module_bytes });
        }
        let kind = WasmKind::detect(&bytes).ok_or_else(|| LoadError::NotWasm { path: path.to_path_buf() })?;
        let ticker = self.ticker.get_or_init(|| Arc::new(engine::EpochTicker::start(&self.engine))).clone();
        let (compiled, outcome) =
            cache::compile(&self.engine, self.cache.as_ref(), path, bytes, kind, self.config.compile_timeout).await?;
        let link = |reason: LinkError| LoadError::Link { path: path.to_path_buf(), reason };
        let caps = capability::Configured::new(&self.backends, component).map_err(link)?;
        let executor = match compiled {
            cache::Compiled::Component(c) => {
                let imports: Vec<String> =
                    c.component_type().imports(&self.engine).map(|(i, _)| i.to_string()).collect();
                caps.refuse_ungranted(name, &imports).map_err(link)?;
                let linker =
                    self.linker_for(&caps, actor::is_actor(&c, &self.engine), workflow::is_workflow(&c, &self.engine))?;
                let pre =
                    linker.instantiate_pre(&c).map_err(|e| link(LinkError::Unresolved(nimbus_observe::cause(e))))?;
                let http = ProxyPre::new(pre.clone()).ok();
                let events = events::EventHandlerPre::new(pre.clone()).ok();
                let actor = actor::ActorPre::new(pre.clone()).ok();
                let workflow = workflow::WorkflowPre::new(pre).ok();
                if http.is_none() && events.is_none() && actor.is_none() && workflow.is_none() {
                    return Err(link(LinkError::NoEntryPoint));
                }
                Executor::Component { http, events, actor, workflow }
            }
            cache::Compiled::Module(m) => {
                if m.get_export("_start").is_none() {
                    return Err(link(LinkError::NotCommand));
                }
                let pre = self
                    .module_linker
                    .instantiate_pre(&m)
                    .map_err(|e| link(LinkError::Unresolved(nimbus_observe::cause(e))))?;
                Executor::Wagi(pre)
            }
        };
        if component.memory_mb() > self.config.max_memory_mb && self.allocator == Allocator::Pooling {
            return Err(link(LinkError::MemoryLimit {
                requested: component.memory_mb(),
                limit: self.config.max_memory_mb,
            }));
        }
        let settings = FunctionSettings {
            name: name.into(),
            caps,
            app: std::sync::OnceLock::new(),
            instantiated: AtomicBool::new(false),
            detached: nimbus_observe::ComponentTelemetry::detached(name),
            env: component.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            limits: store::InvocationLimits {
                memory_bytes: (component.memory_mb() as usize) << 20,
                timeout: component
                    .timeout()
                    .unwrap_or(Duration::from_millis(nimbus_manifest::DEFAULT_FUNCTION_TIMEOUT_MS)),
            },
            _ticker: ticker,
        };
        Ok((Function { executor: Arc::new(executor), settings: Arc::new(settings) }, outcome))
    }
}

/// Settings of one function, fixed at load time.
pub(crate) struct FunctionSettings {
    pub(crate) name: Arc<str>,
    /// The capabilities it was granted, configured ([`capability`]).
    pub(crate) caps: capability::Configured,
    /// The app whose buckets and topics the grants name; set once by [`Function::bind_app`].
    /// Unbound, every bucket and topic is denied.
    pub(crate) app: std::sync::OnceLock<Arc<str>>,
    /// Whether an instance was created since the load: the first one is the cold start.
    pub(crate) instantiated: AtomicBool,
    /// Where invocations without telemetry of their own report (the process log only).
    pub(crate) detached: Arc<nimbus_observe::ComponentTelemetry>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) limits: store::InvocationLimits,
    /// Advances the epoch that ends an invocation at its time limit, while the function lives.
    _ticker: Arc<engine::EpochTicker>,
}

impl FunctionSettings {
    /// The WASI context every executor starts from: the manifest's env and nothing else from the
    /// host, no preopens, no network, stderr logged with the request and trace ids.
    pub(crate) fn wasi(&self, scope: &Arc<scope::Scope>) -> wasmtime_wasi::WasiCtxBuilder {
        let mut wasi = wasmtime_wasi::WasiCtxBuilder::new();
        wasi.envs(&self.env).stderr(logs::GuestLog::new(scope.clone(), "stderr"));
        wasi
    }
}

enum Executor {
    /// A component: an HTTP handler, an event handler, an actor, a workflow, or several of them.
    Component {
        http: Option<ProxyPre<guest::GuestState>>,
        events: Option<events::EventHandlerPre<guest::GuestState>>,
        actor: Option<actor::ActorPre<guest::GuestState>>,
        workflow: Option<workflow::WorkflowPre<guest::GuestState>>,
    },
    Wagi(wasmtime::InstancePre<wagi::WagiState>),
}

/// A loaded function: pre-instantiated, ready to handle requests concurrently. Cheap to clone.
#[derive(Clone)]
pub struct Function {
    /// Shared by the clones: the pre-instantiated component is the same for every request.
    executor: Arc<Executor>,
    settings: Arc<FunctionSettings>,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function").field("name", &self.settings.name).field("kind", &self.kind()).finish()
    }
}

/// Per-request facts the executor needs besides the request itself.
#[derive(Debug)]
pub struct Invocation {
    /// The request id, echoed in logs and errors.
    pub request_id: Arc<str>,
    /// The route that matched, as written in the manifest.
    pub route: String,
    /// The fixed part of the route (`/api` for `/api/...`): CGI's `SCRIPT_NAME`.
    pub route_base: String,
    /// The client's address, when known.
    pub client: Option<SocketAddr>,
    /// A concurrency slot held for as long as the instance exists: it is released when the
    /// instance is torn down (not when the response is handed over), so a slot never outlives
    /// or undercounts the instance it stands for.
    pub lease: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Where the invocation's spans, metrics and logs go; without it, nowhere but the process
    /// log.
    pub telemetry: Option<nimbus_observe::Telemetry>,
    /// How many component-to-component calls deep this invocation is: 0 for a request from
    /// outside, the [`nimbus_security::mesh::Call::depth`] of a call.
    pub depth: u32,
}

impl Invocation {
    /// An invocation for `route` (`/exact` or `/prefix/...`) with no client address.
    pub fn new(request_id: &str, route: &str) -> Self {
        let base = route.strip_suffix("/...").unwrap_or(route);
        Self {
            request_id: request_id.into(),
            route: route.into(),
            route_base: base.into(),
            client: None,
            lease: None,
            telemetry: None,
            depth: 0,
        }
    }
}

impl Function {
    /// The component name from the manifest.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// How long one invocation may run (`limits.timeout_ms`).
    pub fn timeout(&self) -> Duration {
        self.settings.limits.timeout
    }

    /// Component (`wasi:http`) or module (WAGI).
    pub fn kind(&self) -> WasmKind {
        match *self.executor {
            Executor::Component { .. } => WasmKind::Component,
            Executor::Wagi(_) => WasmKind::Module,
        }
    }

    /// Whether it serves HTTP (`wasi:http/incoming-handler`, or a WAGI module).
    pub fn handles_http(&self) -> bool {
        matches!(&*self.executor, Executor::Component { http: Some(_), .. } | Executor::Wagi(_))
    }

    /// Whether it handles events (`nimbus:events/handler`).
    pub fn handles_events(&self) -> bool {
        matches!(&*self.executor, Executor::Component { events: Some(_), .. })
    }

    /// Makes this function part of `app`: its `grants.kv` and `grants.publish` name that app's
    /// buckets and topics (apps never see each other's). The first binding wins; a function never
    /// bound opens no bucket and publishes to no topic.
    pub fn bind_app(&self, app: &str) {
        let _ = self.settings.app.set(app.into());
    }

    /// Sends its calls to other components (`grants.invoke`, `http://NAME.internal/...`) to
    /// `mesh`; the first binding wins. Until bound, every such call is denied.
    pub fn bind_mesh(&self, mesh: Arc<dyn nimbus_security::mesh::Mesh>) {
        if let Some(outbound) = <outbound::OutboundHttp as capability::Registered>::app(&self.settings.caps) {
            let _ = outbound.mesh.set(mesh);
        }
    }

    /// Whether it is an actor (`nimbus:actor/handler`).
    pub fn handles_actor(&self) -> bool {
        matches!(&*self.executor, Executor::Component { actor: Some(_), .. })
    }

    /// Runs one actor invocation in a fresh instance with `state`; the outcome carries the new
    /// state to commit (the caller commits it before answering, and drops it on error).
    pub async fn invoke_actor(
        &self,
        key: &str,
        method: &str,
        input: &[u8],
        state: ActorState,
        inv: Invocation,
    ) -> Result<ActorOutcome, InvokeError> {
        match &*self.executor {
            Executor::Component { actor: Some(pre), .. } => {
                actor::invoke(pre, &self.settings, key, method, input, state, inv).await
            }
            _ => Err(InvokeError::Unsupported("it does not export `nimbus:actor/handler`")),
        }
    }

    /// Handles one event in a fresh instance; `Ok` means the function acknowledged it.
    pub async fn handle_event(&self, event: &nimbus_bus::Event, inv: Invocation) -> Result<(), EventError> {
        match &*self.executor {
            Executor::Component { events: Some(pre), .. } => events::handle(pre, &self.settings, event, inv).await,
            _ => Err(InvokeError::Unsupported("it does not export `nimbus:events/handler`").into()),
        }
    }

    /// Handles one request in a fresh instance. The response body may keep streaming from the
    /// guest until its timeout.
    pub async fn handle(
        &self,
        req: ::http::Request<Bytes>,
        inv: Invocation,
    ) -> Result<::http::Response<ResponseBody>, InvokeError> {
        match &*self.executor {
            Executor::Component { http: Some(pre), .. } => http::handle(pre, &self.settings, req, inv).await,
            Executor::Component { http: None, .. } => {
                Err(InvokeError::Unsupported("it does not export `wasi:http/incoming-handler`"))
            }
            Executor::Wagi(pre) => wagi::handle(pre, &self.settings, req, inv).await,
        }
    }
}

//! What can go wrong loading a function or running one invocation.
use std::path::PathBuf;
use std::time::Duration;

use nimbus_observe::Cause;

/// A function could not be loaded; nothing is served from it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file does not exist or cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than the runtime accepts.
    #[error("{} is {size} bytes, more than the {limit} bytes a function may be", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The configured bound.
        limit: u64,
    },
    /// Neither a component nor a core module.
    #[error("{} is neither a WebAssembly component nor a core module (it does not start with the `\\0asm` header)", path.display())]
    NotWasm {
        /// The file.
        path: PathBuf,
    },
    /// Compilation failed: invalid wasm, or a feature the engine does not support.
    #[error("{} does not compile", path.display())]
    Compile {
        /// The file.
        path: PathBuf,
        /// Why: wasmtime's account, or the compiler thread's panic.
        #[source]
        source: Cause,
    },
    /// Compilation took longer than the runtime allows.
    #[error("{} took longer than {limit:?} to compile", path.display())]
    CompileTimeout {
        /// The file.
        path: PathBuf,
        /// The configured bound.
        limit: Duration,
    },
    /// It compiled, but cannot run here: missing exports, imports nobody provides or that were
    /// not granted, grants or limits the runtime cannot honour.
    #[error("{} cannot run as a Nimbus function", path.display())]
    Link {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        reason: LinkError,
    },
    /// The engine itself could not be set up.
    #[error("cannot set up the wasm engine")]
    Engine(#[source] Cause),
}

impl LoadError {
    /// What the user can do about it, one line.
    pub fn hint(&self) -> String {
        match self {
            Self::Read { .. } => {
                "check the path, or build the component first with `nimbus build` (or `nimbus up --build`)".into()
            }
            Self::NotWasm { .. } => {
                "point `source` at a .wasm file: a wasm32-wasip2 component or a wasm32-wasip1 command module".into()
            }
            Self::TooLarge { .. } => "shrink the module, or raise the bound with --max-module-mb".into(),
            Self::CompileTimeout { .. } => {
                "raise the bound with --compile-timeout if the module is legitimately large".into()
            }
            Self::Compile { .. } => {
                "rebuild the component; the file is damaged or uses features wasmtime does not enable".into()
            }
            Self::Link { reason, .. } => reason.hint(),
            Self::Engine(_) => "see the error above; this is a host problem, not the component's".into(),
        }
    }
}

/// Why a compiled function cannot be linked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// It imports an interface of a capability it was not granted.
    #[error("it imports `{interface}`; add `grants.{grant} = {example}` to component `{component}`")]
    NotGranted {
        /// The component's name in the manifest.
        component: String,
        /// The import, as the component declares it (`wasi:keyvalue/store@0.2.0-draft`).
        interface: String,
        /// The grant that links it (`kv`).
        grant: &'static str,
        /// What such a grant looks like (`["BUCKET"]`).
        example: &'static str,
    },
    /// A component with none of the exports Nimbus runs.
    #[error(
        "it exports none of `wasi:http/incoming-handler@0.2.x`, `nimbus:events/handler@0.1.0` and `nimbus:actor/handler@0.1.0`; build it for the `wasi:http/proxy`, `nimbus:events/event-handler` or `nimbus:actor/actor` world"
    )]
    NoEntryPoint,
    /// A core module that is not a command.
    #[error(
        "it is a core module without a `_start` export; WAGI runs WASI preview1 commands (build a binary, not a library)"
    )]
    NotCommand,
    /// It asks for more memory than an instance slot of the pooling allocator holds.
    #[error("limits.memory_mb = {requested} is more than the runtime's pool slots hold ({limit} MiB)")]
    MemoryLimit {
        /// `limits.memory_mb`.
        requested: u32,
        /// The slot size.
        limit: u32,
    },
    /// An import nothing provides, or a type mismatch (wasmtime's account of it is the source).
    #[error("it imports something the host does not provide, or with another type")]
    Unresolved(#[source] Cause),
}

impl LinkError {
    /// What the user can do about it, one line.
    pub fn hint(&self) -> String {
        match self {
            Self::NotGranted { component, grant, example, .. } => format!(
                "add `grants.{grant} = {example}` to [component.{component}] in nimbus.toml (a component is linked only with what it was granted)"
            ),
            Self::MemoryLimit { .. } => {
                "lower limits.memory_mb, or start the server with a larger --max-memory-mb".into()
            }
            Self::NoEntryPoint | Self::NotCommand | Self::Unresolved(_) => {
                "build an HTTP component (`wasi:http/proxy` world) or a WASI preview1 command, importing only WASI"
                    .into()
            }
        }
    }
}

/// One invocation failed. The gateway turns this into a 5xx carrying the request id.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The guest ran past `limits.timeout_ms`.
    #[error("the guest ran longer than its {0:?} timeout and was stopped")]
    Timeout(Duration),
    /// The guest trapped: panic, out-of-bounds access, stack overflow, memory limit.
    #[error("the guest trapped: {0}")]
    Trap(String),
    /// A `wasi:http` guest returned without setting a response.
    #[error("the guest returned without sending a response")]
    NoResponse,
    /// A `wasi:http` guest sent an error code instead of a response.
    #[error("the guest answered with error `{0}`")]
    Guest(String),
    /// A WAGI guest exited with a non-zero status or wrote an invalid CGI response.
    #[error("the CGI guest failed: {0}")]
    Cgi(String),
    /// The instance could not be created (for example the instance pool is exhausted).
    #[error("could not create an instance")]
    Instantiate(#[source] Cause),
    /// The function cannot handle this kind of invocation.
    #[error("the function cannot handle this: {0}")]
    Unsupported(&'static str),
}

impl InvokeError {
    /// Whether the failure is the server's capacity rather than the guest (maps to 503, not 500).
    pub fn is_capacity(&self) -> bool {
        matches!(self, Self::Instantiate(_))
    }

    /// Whether the guest ran out of time (maps to 504).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }

    pub(crate) fn from_wasmtime(err: &wasmtime::Error, timeout: Duration) -> Self {
        use wasmtime::Trap;
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Self::Timeout(timeout),
            Some(Trap::StackOverflow) => Self::Trap("stack overflow (recursion too deep)".into()),
            Some(Trap::UnreachableCodeReached) => {
                Self::Trap("wasm `unreachable` executed (the guest panicked or aborted; see its stderr)".into())
            }
            Some(Trap::MemoryOutOfBounds) => Self::Trap(
                "out of bounds memory access (the guest's stack in linear memory overflowed, or it read memory it does not own)".into(),
            ),
            Some(Trap::AllocationTooLarge) => Self::Trap("memory limit reached".into()),
            Some(trap) => Self::Trap(trap.to_string()),
            None => {
                // The top of the chain is the wasm backtrace; the root cause says what happened.
                let root = err.root_cause().to_string();
                tracing::debug!(error = %format!("{err:?}"), "guest failure with backtrace");
                if root.contains("growing memory") || root.contains("memory minimum size") {
                    Self::Trap(format!("memory limit reached ({root})"))
                } else {
                    Self::Trap(root)
                }
            }
        }
    }
}

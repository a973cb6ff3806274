//! The `nimbus.toml` data model. Every table rejects unknown fields so a typo is an error, not a
//! silently ignored setting.
use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A whole `nimbus.toml`: the app, its components and what triggers them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Name and version of the app.
    pub app: App,
    /// Components by name (`[component.NAME]`).
    #[serde(default)]
    pub component: BTreeMap<String, Component>,
    /// What starts work (`[[trigger.http]]`).
    #[serde(default)]
    pub trigger: Triggers,
}

/// `[app]`: identity of the app.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// Lower-case letters, digits and `-`, at most 63 characters.
    pub name: String,
    /// Free-form version, e.g. `1.0.0`.
    #[serde(default)]
    pub version: Option<String>,
    /// One line saying what the app does.
    #[serde(default)]
    pub description: Option<String>,
}

/// `[component.NAME]`: a function, i.e. a WebAssembly component (`wasi:http/incoming-handler`) or
/// a WASI preview1 command module run as a CGI (WAGI) program. The kind is read from the file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Path of the `.wasm` file, relative to the directory holding `nimbus.toml`.
    pub source: String,
    /// One line saying what the component does.
    #[serde(default)]
    pub description: Option<String>,
    /// How `nimbus build` produces `source`.
    #[serde(default)]
    pub build: Option<Build>,
    /// Environment variables the guest sees (nothing from the host is inherited).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Resource limits of one invocation and of the component as a whole.
    #[serde(default)]
    pub limits: Limits,
    /// What the component may reach beyond itself. Everything else is denied.
    #[serde(default)]
    pub grants: Grants,
}

/// `build`: the command `nimbus build` runs for a component.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// Shell command, run with `sh -c` in `workdir`.
    pub command: String,
    /// Directory to run the command in, relative to `nimbus.toml` (default: its directory).
    #[serde(default)]
    pub workdir: Option<String>,
    /// Globs (relative to `workdir`) whose changes call for a rebuild, used by `nimbus dev`.
    #[serde(default)]
    pub watch: Vec<String>,
    /// The command that installs the toolchain, shown when the build cannot run
    /// (e.g. `pip install componentize-py==0.25.1`).
    #[serde(default)]
    pub install: Option<String>,
}

/// `limits`: bounds that keep one component from hurting the others.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory one instance may use, in MiB (1..=4096).
    pub memory_mb: u32,
    /// Wall-clock time one invocation may take, in milliseconds, including streaming the response.
    pub timeout_ms: u64,
    /// Instances of this component running at once.
    pub max_concurrency: u32,
    /// Requests that may wait for a free instance; beyond this the gateway answers 503.
    pub queue_depth: u32,
    /// How long a request may wait in the queue before a 503, in milliseconds.
    pub queue_timeout_ms: u64,
    /// Largest request body accepted, in KiB; larger requests get 413.
    pub max_body_kb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mb: 128,
            timeout_ms: 30_000,
            max_concurrency: 100,
            queue_depth: 1_000,
            queue_timeout_ms: 10_000,
            max_body_kb: 10 * 1024,
        }
    }
}

/// `grants`: capabilities given to a component. Deny by default.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Origins the component may call with `wasi:http/outgoing-handler`, e.g.
    /// `https://api.example.com`, `http://127.0.0.1:8080` or `https://*.example.com`.
    #[serde(default)]
    pub outbound: Vec<String>,
}

/// `[trigger]`: every kind of trigger, each an array of tables.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Triggers {
    /// `[[trigger.http]]` routes.
    #[serde(default)]
    pub http: Vec<HttpTrigger>,
}

/// `[[trigger.http]]`: sends requests on a route to a component.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpTrigger {
    /// An exact path (`/hello`) or a prefix wildcard (`/api/...`, `/...` for everything).
    pub route: String,
    /// Name of the component that handles the route.
    pub component: String,
    /// HTTP methods accepted on the route (all when empty); others get 405.
    #[serde(default)]
    pub methods: Vec<String>,
}

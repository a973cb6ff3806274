//! The `nimbus.toml` data model. Every table rejects unknown fields so a typo is an error, not a
//! silently ignored setting.
use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::grant::OutboundGrant;
use crate::route::{HttpMethod, RoutePattern};
use crate::schedule::{CronExpr, Schedule, TimeZone};

/// A whole `nimbus.toml`: the app, its components and what triggers them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Name and version of the app.
    pub app: App,
    /// Components by name (`[component.NAME]`).
    #[serde(default)]
    pub component: BTreeMap<String, Component>,
    /// What starts work (`[[trigger.http]]`, `[[trigger.topic]]`, `[[trigger.cron]]`).
    #[serde(default)]
    pub trigger: Triggers,
    /// Buckets and topics this app shares with named other apps; nothing is shared without it.
    #[serde(default)]
    pub export: Exports,
    /// On which nodes of a cluster the app may be (data residency).
    #[serde(default)]
    pub placement: crate::placement::Placement,
    /// Service-level objectives of its routes (`[[slo]]`): alerts when one is broken or about
    /// to be.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slo: Vec<Slo>,
}

/// `[[slo]]`: the objective of one HTTP route, judged on the metrics of the component serving
/// it, e.g. `route = "/api/..."`, `p99_ms = 200`, `availability = 99.9`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// The route, exactly as a `[[trigger.http]]` declares it.
    pub route: String,
    /// The 99th percentile latency it should stay under, in milliseconds (1 to 600,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<u64>,
    /// The share of requests that should succeed (not 5xx), in percent: 50 ≤ x < 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<f64>,
}

impl Manifest {
    /// The component serving each objective's route (objectives of routes not declared are
    /// left out: validation refuses them).
    pub fn objectives(&self) -> impl Iterator<Item = (&Slo, &str)> {
        self.slo.iter().filter_map(|s| {
            let t = self.trigger.http.iter().find(|t| t.route.to_string() == s.route)?;
            Some((s, t.component.as_str()))
        })
    }
}

/// `[export]`: what this app shares, and with which apps. Another app names an exported bucket
/// or topic as `APP/NAME` (`grants.kv = ["shop/carts"]`, `grants.publish = ["shop/orders"]`,
/// `[[trigger.topic]] topic = "shop/orders"`); a deploy naming what is not exported to it is
/// refused.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Exports {
    /// Bucket → the apps that may read and write it, e.g. `{ carts = ["billing"] }`.
    #[serde(default)]
    pub kv: BTreeMap<String, Vec<String>>,
    /// Topic → the apps that may consume it (with their own consumer groups) and publish to it,
    /// e.g. `{ orders = ["billing"] }`.
    #[serde(default)]
    pub topics: BTreeMap<String, Vec<String>>,
    /// Component → the apps whose components may call it (`grants.invoke = ["APP/NAME"]`,
    /// `http://NAME.APP.internal/...`), e.g. `{ billing = ["shop"] }`.
    #[serde(default)]
    pub components: BTreeMap<String, Vec<String>>,
}

impl Exports {
    /// Whether component `name` may be called by the components of `app`.
    pub fn component_to(&self, name: &str, app: &str) -> bool {
        self.components.get(name).is_some_and(|apps| apps.iter().any(|a| a == app))
    }

    /// Whether bucket `name` is exported to `app`.
    pub fn kv_to(&self, name: &str, app: &str) -> bool {
        self.kv.get(name).is_some_and(|apps| apps.iter().any(|a| a == app))
    }

    /// Whether topic `name` is exported to `app`.
    pub fn topic_to(&self, name: &str, app: &str) -> bool {
        self.topics.get(name).is_some_and(|apps| apps.iter().any(|a| a == app))
    }

    /// Whether `name` of kind `kind` (`kv`, `topic` or `component`, as
    /// [`Manifest::imports`] names them) is exported to `app`.
    pub fn to(&self, kind: &str, name: &str, app: &str) -> bool {
        match kind {
            "kv" => self.kv_to(name, app),
            "topic" => self.topic_to(name, app),
            _ => self.component_to(name, app),
        }
    }
}

impl Manifest {
    /// What the app imports from other apps: `(kind, owner, name)` for every `APP/NAME` in
    /// `grants.kv` (kind `kv`), `grants.publish` and `[[trigger.topic]]` (kind `topic`) and
    /// `grants.invoke` (kind `component`), each once.
    pub fn imports(&self) -> std::collections::BTreeSet<(&'static str, String, String)> {
        let m = self;
        let split = |s: &String| s.split_once('/').map(|(a, n)| (a.to_string(), n.to_string()));
        let kv = m.component.values().flat_map(|c| c.grants.kv.iter()).filter_map(split).map(|(a, n)| ("kv", a, n));
        let published = m.component.values().flat_map(|c| c.grants.publish.iter());
        let consumed = m.trigger.topic.iter().map(|t| &t.topic);
        let topics = published.chain(consumed).filter_map(split).map(|(a, n)| ("topic", a, n));
        let invoked = m.component.values().flat_map(|c| c.grants.invoke.iter());
        let components = invoked.filter_map(split).map(|(a, n)| ("component", a, n));
        kv.chain(topics).chain(components).collect()
    }
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
    /// Refuse deploys whose components depend on a package with a known advisory at or above
    /// this severity (`low`, `medium`, `high`, `critical`), as the server's advisory database
    /// says. The server's `--block-advisories` applies too; the stricter wins. Without either,
    /// advisories are reported with the revision and do not block.
    #[serde(default)]
    pub block_advisories: Option<AdvisorySeverity>,
    /// Labels of the app (`labels = { tenant = "acme" }`): keys and values are names (1 to 63
    /// lower-case letters, digits, `-` or `_`). `tenant` attributes the app's usage and cost
    /// to a tenant and puts it under the tenant's budget.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl App {
    /// The `tenant` label, empty without one.
    pub fn tenant(&self) -> &str {
        self.labels.get("tenant").map_or("", String::as_str)
    }
}

/// How severe a known advisory is (CVSS bands: low < 4, medium < 7, high < 9, critical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AdvisorySeverity {
    /// CVSS below 4.
    Low,
    /// CVSS 4 to 6.9 (GitHub's "moderate").
    #[serde(alias = "moderate")]
    Medium,
    /// CVSS 7 to 8.9.
    High,
    /// CVSS 9 and above.
    Critical,
}

/// `[component.NAME]`: a **function** (`source`: a WebAssembly component serving
/// `wasi:http/incoming-handler`, or a WASI preview1 command module run as a CGI (WAGI) program; a
/// fresh instance per request) or a **service** (`command`: a long-lived process in any language
/// serving HTTP on `$PORT`, the Knative / Cloud Run container contract). Exactly one of the two.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Function: path of the `.wasm` file, relative to the directory holding `nimbus.toml`.
    #[serde(default)]
    pub source: Option<String>,
    /// Service: the program and its arguments, e.g. `["python3", "server.py"]`. It gets the port
    /// to listen on in `$PORT` (on 127.0.0.1).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Service: directory to run `command` in, relative to `nimbus.toml` (default: its directory).
    #[serde(default)]
    pub workdir: Option<String>,
    /// One line saying what the component does.
    #[serde(default)]
    pub description: Option<String>,
    /// How `nimbus build` produces `source` (or prepares a service).
    #[serde(default)]
    pub build: Option<Build>,
    /// Environment variables the component sees (nothing from the host is inherited, except
    /// `PATH` for services).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Resource limits of one invocation and of the component as a whole.
    #[serde(default)]
    pub limits: Limits,
    /// What the component may reach beyond itself. Everything else is denied.
    #[serde(default)]
    pub grants: Grants,
    /// Service: when a started process is ready for traffic (default: its port accepts TCP).
    #[serde(default)]
    pub readiness: Option<Probe>,
    /// Service: when a running process is broken and must be replaced (default: never checked;
    /// a process that exits is always replaced).
    #[serde(default)]
    pub liveness: Option<Probe>,
    /// Service: seconds between SIGTERM and SIGKILL when a process is stopped.
    #[serde(default)]
    pub shutdown_grace_s: Option<u64>,
    /// Service: how many processes run (autoscaled on observed concurrency, Knative KPA style).
    #[serde(default)]
    pub scale: Option<Scale>,
}

/// `scale`: the autoscaler of a service. Processes = ceil(observed concurrency /
/// `target_concurrency`) averaged over `stable_window_s`, or over `panic_window_s` when a burst
/// needs `panic_threshold_pct` % of what runs; within `min..=max`, plus `warm` ready spares; down to
/// zero after `idle_timeout_s` without requests when `min = 0`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Scale {
    /// Fewest processes (0: scale to zero when idle).
    pub min: u32,
    /// Most processes.
    pub max: u32,
    /// Processes started with the app, before any traffic (then the autoscaler decides).
    pub initial: u32,
    /// Requests one process should handle at once.
    pub target_concurrency: u32,
    /// Seconds without any request before the last process stops (with `min = 0`).
    pub idle_timeout_s: u64,
    /// Ready spare processes kept on top of what the load needs, so a burst never waits for a start.
    pub warm: u32,
    /// Seconds of history the steady-state decision averages over.
    pub stable_window_s: u64,
    /// Seconds of history the burst decision averages over.
    pub panic_window_s: u64,
    /// Burst mode starts when the panic window needs this percentage of the running processes.
    pub panic_threshold_pct: u32,
}

impl Default for Scale {
    fn default() -> Self {
        Self {
            min: 0,
            max: 10,
            initial: 1,
            target_concurrency: 100,
            idle_timeout_s: 60,
            warm: 0,
            stable_window_s: 60,
            panic_window_s: 6,
            panic_threshold_pct: 200,
        }
    }
}

/// What kind of component a `[component.NAME]` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentKind<'a> {
    /// A WebAssembly function from this `.wasm` file.
    Function {
        /// `source`.
        source: &'a str,
    },
    /// A long-lived process running this command.
    Service {
        /// `command`.
        command: &'a [String],
    },
}

impl Component {
    /// The kind of a validated component.
    ///
    /// # Panics
    /// On a component that is neither, which validation rejects.
    pub fn kind(&self) -> ComponentKind<'_> {
        match (&self.source, &self.command) {
            (Some(source), None) => ComponentKind::Function { source },
            (None, Some(command)) => ComponentKind::Service { command },
            _ => panic!("validated components have exactly one of `source` and `command`"),
        }
    }

    /// `limits.memory_mb`, or the default of the component's kind.
    pub fn memory_mb(&self) -> u32 {
        let default = if self.command.is_some() { DEFAULT_SERVICE_MEMORY_MB } else { DEFAULT_FUNCTION_MEMORY_MB };
        self.limits.memory_mb.unwrap_or(default)
    }

    /// `source` of a function; `None` for a service.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// The request time limit: `limits.timeout_ms`, or by default 30 s for a function and none
    /// for a service (long-lived connections, streams and WebSockets).
    pub fn timeout(&self) -> Option<std::time::Duration> {
        let default = if self.command.is_some() { None } else { Some(DEFAULT_FUNCTION_TIMEOUT_MS) };
        self.limits.timeout_ms.or(default).map(std::time::Duration::from_millis)
    }
}

/// Memory of a function instance unless `limits.memory_mb` says otherwise, in MiB.
pub const DEFAULT_FUNCTION_MEMORY_MB: u32 = 128;
/// Memory of a service process unless `limits.memory_mb` says otherwise, in MiB.
pub const DEFAULT_SERVICE_MEMORY_MB: u32 = 512;
/// Processes and threads of a service instance unless `limits.pids` says otherwise.
pub const DEFAULT_SERVICE_PIDS: u32 = 512;

/// The request time limit of a function unless `limits.timeout_ms` says otherwise.
pub const DEFAULT_FUNCTION_TIMEOUT_MS: u64 = 30_000;

/// A health probe of a service process: an HTTP GET of `path` (any 2xx or 3xx is healthy), or a
/// TCP connect to its port when `path` is absent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Probe {
    /// Path to GET, e.g. `/healthz`; absent: TCP connect.
    pub path: Option<String>,
    /// Milliseconds between probes.
    pub period_ms: u64,
    /// Milliseconds one probe may take.
    pub timeout_ms: u64,
    /// Readiness: how long a new process may take to become ready, in seconds.
    /// Liveness: unused.
    pub start_timeout_s: u64,
    /// Liveness: consecutive failures that get the process replaced.
    pub failure_threshold: u32,
}

impl Default for Probe {
    fn default() -> Self {
        Self { path: None, period_ms: 1_000, timeout_ms: 1_000, start_timeout_s: 60, failure_threshold: 3 }
    }
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
    /// Memory one instance may use, in MiB: a function's linear memory (1..=4096, default 128),
    /// a service process's memory, enforced by its cgroup (default 512).
    pub memory_mb: Option<u32>,
    /// Service: CPU one process may use, in thousandths of a core (default: unlimited).
    pub cpu_millis: Option<u32>,
    /// Service: processes and threads one instance may have (default 512): stops fork bombs.
    pub pids: Option<u32>,
    /// Wall-clock time one request may take, in milliseconds, including streaming the response
    /// (default: 30 s for functions, no limit for services).
    pub timeout_ms: Option<u64>,
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
            memory_mb: None,
            cpu_millis: None,
            pids: None,
            timeout_ms: None,
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
    #[schemars(with = "Vec<String>")]
    pub outbound: Vec<OutboundGrant>,
    /// Topics the component may publish to through `nimbus:events/publisher`, e.g.
    /// `["orders"]`. Without any, the interface is not even linked.
    #[serde(default)]
    pub publish: Vec<String>,
    /// KV buckets the component may open through `wasi:keyvalue`, e.g. `["carts"]`. Without any,
    /// the interfaces are not even linked.
    #[serde(default)]
    pub kv: Vec<String>,
    /// Actor types the component may call through `nimbus:actor/client`, e.g. `["cart"]`.
    #[serde(default)]
    pub actors: Vec<String>,
    /// Secrets of the app the component may read, e.g. `["stripe-key"]`: a function through
    /// `wasi:config/store` (`get("stripe-key")`), a service as the environment variable
    /// `STRIPE_KEY`. Set them with `nimbus secrets set --app APP NAME`; a deploy fails while one
    /// is not set. Without any, `wasi:config` is not even linked.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub secrets: Vec<crate::SecretName>,
    /// Components the component may call at `http://NAME.internal/...` (a function's call runs
    /// in-process; a service calls through its egress proxy), e.g. `["billing"]`, or `"APP/NAME"`
    /// for a component another app exports to this one (`http://NAME.APP.internal/...`). A call
    /// to any other is refused.
    #[serde(default)]
    pub invoke: Vec<String>,
}

impl Grants {
    /// Whether a component of `own_app` with these grants may call `component` of `app`.
    pub fn may_invoke(&self, own_app: &str, app: &str, component: &str) -> bool {
        self.invoke.iter().any(|g| crate::resolve(own_app, g) == (app, component))
    }
}

/// `[trigger]`: every kind of trigger, each an array of tables.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Triggers {
    /// `[[trigger.http]]` routes.
    #[serde(default)]
    pub http: Vec<HttpTrigger>,
    /// `[[trigger.topic]]` subscriptions.
    #[serde(default)]
    pub topic: Vec<TopicTrigger>,
    /// `[[trigger.cron]]` schedules.
    #[serde(default)]
    pub cron: Vec<CronTrigger>,
    /// `[[trigger.kv]]` change feeds of KV buckets.
    #[serde(default)]
    pub kv: Vec<KvTrigger>,
    /// `[[trigger.actor]]` actor types.
    #[serde(default)]
    pub actor: Vec<ActorTrigger>,
    /// `[[trigger.workflow]]` durable workflows.
    #[serde(default)]
    pub workflow: Vec<WorkflowTrigger>,
}

/// `[[trigger.workflow]]`: a durable workflow served by a component exporting
/// `nimbus:workflow/handler`, started with `POST /workflows/NAME` (an `Idempotency-Key` header
/// makes a repeated start return the first run) or from the control API. Every step, timer and
/// signal of a run is journaled; a run survives restarts and stays on the revision that started it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowTrigger {
    /// The workflow's name: lowercase letters, digits, `-` and `_`, e.g. `order`.
    pub name: String,
    /// The component implementing it.
    pub component: String,
    /// Whether anyone who reaches the gateway may start runs and read, signal or cancel them
    /// (`/workflows/NAME/...`). Default `false`: a caller sends a token that may write the app's
    /// data (the `.nimbus/api.json` token under `nimbus up`).
    #[serde(default)]
    pub public: bool,
    /// Starts a run for every event on this topic of the app: the event's data is the input and
    /// its id the idempotency key, so an event delivered twice starts one run.
    #[serde(default)]
    pub topic: Option<String>,
    /// Starts a run on this cron schedule (5 or 6 fields, or `@hourly` ...): one run per tick,
    /// its input the tick's time (RFC 3339).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub schedule: Option<CronExpr>,
    /// IANA time zone the schedule is read in (default `UTC`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timezone: Option<TimeZone>,
    /// Seconds a finished run (its journal, output and signals) is kept before it is deleted
    /// (default 7 days).
    #[serde(default = "default_retention_s")]
    pub retention_s: u64,
}

fn default_retention_s() -> u64 {
    7 * 24 * 3600
}

impl WorkflowTrigger {
    /// The schedule in its zone, if it has one.
    pub fn schedule(&self) -> Option<Schedule> {
        self.schedule.as_ref().map(|s| Schedule::new(s, self.timezone))
    }
}

/// `[[trigger.actor]]`: an actor type served by a component exporting `nimbus:actor/handler`,
/// addressed as `POST /actors/TYPE/KEY/METHOD`. Invocations of one key run one at a time; the
/// state a handler writes is committed durably before its answer is sent.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActorTrigger {
    /// The actor type: lowercase letters, digits, `-` and `_`, e.g. `cart`.
    #[serde(rename = "type")]
    pub actor_type: String,
    /// The component implementing it.
    pub component: String,
    /// Seconds an idle actor's state stays in memory before it is passivated (default 60).
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: u64,
    /// Whether anyone who reaches the gateway may call this type (`POST /actors/TYPE/...`).
    /// Default `false`: a caller sends a token that may write the app's data (a deployer or
    /// admin token for the app; the `.nimbus/api.json` token under `nimbus up`).
    #[serde(default)]
    pub public: bool,
}

fn default_idle_timeout_s() -> u64 {
    60
}

/// `[[trigger.kv]]`: delivers every change of a KV bucket (a CloudEvent `dev.nimbus.kv.set` with
/// the new value, or `dev.nimbus.kv.delete`; `subject` = the key) to a component, like a topic
/// trigger: at least once, changes of one key in order.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KvTrigger {
    /// The bucket.
    pub bucket: String,
    /// The component that handles the changes.
    pub component: String,
    /// Retries of a failing delivery.
    #[serde(default)]
    pub retry: Retry,
    /// Changes handled at once (one key's changes are always one at a time).
    #[serde(default = "default_trigger_concurrency")]
    pub concurrency: u32,
    /// Service: the path changes are POSTed to (default `/`).
    #[serde(default)]
    pub path: Option<String>,
}

/// `[[trigger.topic]]`: delivers every event of a topic to a component, at least once: a
/// function exporting `nimbus:events/handler`, or a service (an HTTP POST of the CloudEvent in
/// binary mode to `path`; a 2xx answer acknowledges it).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicTrigger {
    /// The topic: lowercase letters, digits, `-`, `_` and `.`, e.g. `orders`.
    pub topic: String,
    /// The component that handles the events.
    pub component: String,
    /// Consumer group (default: the component's name). Triggers sharing a group share the work.
    #[serde(default)]
    pub group: Option<String>,
    /// Retries of a failing event.
    #[serde(default)]
    pub retry: Retry,
    /// Where an event goes after its last failed attempt (default: `TOPIC.dlq`).
    #[serde(default)]
    pub dead_letter: Option<String>,
    /// Events handled at once (events with the same `partitionkey` are always one at a time).
    #[serde(default = "default_trigger_concurrency")]
    pub concurrency: u32,
    /// Service: the path events are POSTed to (default `/`).
    #[serde(default)]
    pub path: Option<String>,
    /// Whether anyone who reaches the gateway may publish to this topic (`POST /events/TOPIC`).
    /// Default `false`: a publisher sends a token that may write the app's data (a deployer or
    /// admin token for the app; the `.nimbus/api.json` token under `nimbus up`). Every trigger
    /// of a topic says the same; only the app that owns a topic can make it public.
    #[serde(default)]
    pub public: bool,
}

fn default_trigger_concurrency() -> u32 {
    16
}

/// `retry`: how a failing event is retried (exponential backoff with jitter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// Deliveries before the event is dead-lettered (1..=100, default 5).
    pub max_attempts: u32,
    /// Wait after the first failure in milliseconds (default 200), doubled after each.
    pub backoff_ms: u64,
    /// Longest wait between attempts in milliseconds (default 60000).
    pub max_backoff_ms: u64,
}

impl Default for Retry {
    fn default() -> Self {
        Self { max_attempts: 5, backoff_ms: 200, max_backoff_ms: 60_000 }
    }
}

/// `[[trigger.cron]]`: runs a component on a schedule, once per tick. The tick is delivered as
/// a CloudEvent (`type = "dev.nimbus.cron.tick"`, `time` = the scheduled time) the same way as
/// a topic event, with the same retries.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CronTrigger {
    /// A cron expression: 5 fields (minute precision) or 6 with seconds first, e.g.
    /// `0 */5 * * * *` (every five minutes); `@hourly`, `@daily` and friends work too.
    #[schemars(with = "String")]
    pub schedule: CronExpr,
    /// The component to run.
    pub component: String,
    /// IANA time zone the schedule is read in (default `UTC`), e.g. `Europe/Berlin`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timezone: Option<TimeZone>,
    /// What to do about ticks missed while the node was down: `skip` them (default) or `run-once`
    /// (one run for all of them, at start).
    #[serde(default)]
    pub missed: MissedTicks,
    /// Retries of a failing run.
    #[serde(default)]
    pub retry: Retry,
}

impl CronTrigger {
    /// The schedule in its zone (UTC by default).
    pub fn schedule(&self) -> Schedule {
        Schedule::new(&self.schedule, self.timezone)
    }
}

/// Policy for cron ticks missed while nothing was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MissedTicks {
    /// Forget them; the next run is the next tick.
    #[default]
    Skip,
    /// Run once at start if any tick was missed.
    RunOnce,
}

/// `[[trigger.http]]`: sends requests on a route to a component.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpTrigger {
    /// An exact path (`/hello`) or a prefix wildcard (`/api/...`, `/...` for everything).
    #[schemars(with = "String")]
    pub route: RoutePattern,
    /// Name of the component that handles the route.
    pub component: String,
    /// HTTP methods accepted on the route (all when empty); others get 405.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub methods: Vec<HttpMethod>,
}

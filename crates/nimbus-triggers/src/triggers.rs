//! An app's `[[trigger.topic]]`, `[[trigger.cron]]` and `[[trigger.kv]]`, running: a consumer
//! group per topic trigger delivering to its component (a KV trigger's topic carries its bucket's
//! changes), and per cron trigger a schedule publishing ticks to the
//! trigger's own topic (`nimbus-cron.N`) plus a consumer group delivering them. Topics, groups
//! and buckets are the app's own.
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use nimbus_bus::cron::{CronJob, CronRunner};
use nimbus_bus::dispatch::{DispatchSpec, Dispatcher, RetryPolicy};
use nimbus_bus::{BusError, EventBus, Group, Topic};

use nimbus_manifest::{FieldPath, Manifest, Retry, WorkflowTrigger};
use nimbus_state::Bucket;

use nimbus_observe::Tracer;
use nimbus_target::{Backend, Target};

use crate::workflow_start::WorkflowDestination;
use crate::{ComponentDestination, KvChanges, WorkflowStarter, kv_topic};

/// How many runs a workflow's topic starts at once.
const WORKFLOW_STARTS: usize = 16;
/// How often a long delivery tells the bus it is still being handled.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// The topics an app accepts events for on `POST /events/{topic}`: those of its own that its
/// triggers consume (workflows' included) and its functions publish to (not those it imports
/// from other apps).
pub fn app_topics(m: &Manifest) -> BTreeSet<String> {
    let consumed = m
        .trigger
        .topic
        .iter()
        .map(|t| t.topic.clone())
        .chain(m.trigger.workflow.iter().filter_map(|t| t.topic.clone()));
    let published = m.component.values().flat_map(|c| c.grants.publish.iter().cloned());
    consumed.chain(published).filter(|t| !t.contains('/')).collect()
}

/// The topic a grant or trigger of `app` names: its own (`orders`) or one another app exports
/// to it (`shop/orders`; the deploy checked the export).
pub fn topic_ref(app: &str, name: &str) -> Result<Topic, BusError> {
    let (owner, topic) = nimbus_manifest::resolve(app, name);
    Topic::new(owner, topic)
}

/// Triggers whose function cannot handle them: a topic or cron trigger needs
/// `nimbus:events/handler`, an HTTP trigger `wasi:http` (or WAGI). Each problem: the field, the
/// message and a hint.
pub fn handler_problems(m: &Manifest, backends: &HashMap<String, Backend>) -> Vec<(FieldPath, String, &'static str)> {
    let function = |c: &str| match backends.get(c) {
        Some(Backend::Function(f)) => Some(f.clone()),
        _ => None,
    };
    let mut problems = Vec::new();
    let event_triggers = m.trigger.topic.iter().enumerate().map(|(i, t)| ("topic", i, &t.component));
    for (kind, i, c) in event_triggers.chain(m.trigger.cron.iter().enumerate().map(|(i, t)| ("cron", i, &t.component)))
    {
        if function(c).is_some_and(|f| !f.handles_events()) {
            problems.push((
                FieldPath::root().key("trigger").key(kind).index(i).key("component"),
                format!("`{c}` does not export `nimbus:events/handler`, so it cannot handle events"),
                "build it for the `nimbus:events/event-handler` world (wit/nimbus-events), or point the trigger at a service",
            ));
        }
    }
    for (i, t) in m.trigger.actor.iter().enumerate() {
        if function(&t.component).is_some_and(|f| !f.handles_actor()) {
            problems.push((
                FieldPath::root().key("trigger").key("actor").index(i).key("component"),
                format!("`{}` does not export `nimbus:actor/handler`, so it cannot serve actors", t.component),
                "build it for the `nimbus:actor/actor` world (wit/nimbus-actor)",
            ));
        }
    }
    for (i, t) in m.trigger.workflow.iter().enumerate() {
        if function(&t.component).is_some_and(|f| !f.handles_workflow()) {
            problems.push((
                FieldPath::root().key("trigger").key("workflow").index(i).key("component"),
                format!("`{}` does not export `nimbus:workflow/handler`, so it cannot run a workflow", t.component),
                "build it for the `nimbus:workflow/workflow` world (wit/nimbus-workflow)",
            ));
        }
    }
    for (i, t) in m.trigger.http.iter().enumerate() {
        if function(&t.component).is_some_and(|f| !f.handles_http()) {
            problems.push((
                FieldPath::root().key("trigger").key("http").index(i).key("component"),
                format!("`{}` does not export `wasi:http/incoming-handler`, so it cannot serve a route", t.component),
                "route HTTP to a `wasi:http/proxy` component, or use a topic trigger for this one",
            ));
        }
    }
    problems
}

/// The topic (of the trigger's app) a cron trigger's ticks go to.
pub fn cron_topic(index: usize) -> String {
    format!("nimbus-cron.{index}")
}

/// One running trigger, described for start-up output.
#[derive(Debug, Clone)]
pub struct TriggerInfo {
    /// `topic orders (group billing)` or `cron 0 */5 * * * * (UTC)`.
    pub what: String,
    /// The component it delivers to.
    pub component: String,
}

/// An app's running event triggers; dropping it stops them (events being handled are offered
/// again).
#[derive(Debug, Default)]
pub struct AppTriggers {
    dispatchers: Vec<Dispatcher>,
    crons: Vec<CronRunner>,
    watches: Vec<(Arc<KvChanges>, Bucket)>,
    /// What runs.
    pub info: Vec<TriggerInfo>,
    /// The consumer groups delivering topics (and KV changes) to components, for their lag.
    pub consumers: Vec<Consumer>,
}

/// A consumer group delivering a topic to a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// The topic.
    pub topic: Topic,
    /// The group.
    pub group: Group,
    /// Where its failed events go.
    pub dead_letter: Topic,
    /// The component it delivers to.
    pub component: String,
}

fn retry(r: &Retry) -> RetryPolicy {
    RetryPolicy {
        max_attempts: r.max_attempts,
        backoff: Duration::from_millis(r.backoff_ms),
        max_backoff: Duration::from_millis(r.max_backoff_ms),
    }
}

impl AppTriggers {
    /// Starts every topic, cron and KV trigger of a validated manifest, delivering to the
    /// components `targets` finds (through their admission control; traced by `tracer`); KV
    /// triggers watch their buckets on `kv`; the topics and schedules of workflows start runs
    /// through `workflows`.
    pub async fn start(
        manifest: &Manifest,
        targets: &(dyn Fn(&str) -> Option<Arc<Target>> + Sync),
        tracer: &Tracer,
        bus: &Arc<dyn EventBus>,
        kv: Option<&Arc<KvChanges>>,
        workflows: Option<&Arc<dyn WorkflowStarter>>,
    ) -> Result<Self, BusError> {
        let deliver_to = |component: &str, path: Option<&str>, trigger: String| {
            Some(ComponentDestination::new(tracer.clone(), targets(component)?, path, trigger))
        };
        let mut running = Self::default();
        for t in &manifest.trigger.kv {
            let Some(kv) = kv else { continue };
            let app = &manifest.app.name;
            let bucket = Bucket::new(app, &t.bucket)
                .map_err(|_| BusError::InvalidName { name: t.bucket.clone(), why: "not a valid bucket name" })?;
            let topic = Topic::new(app, &kv_topic(&t.bucket))?;
            let Some(destination) = deliver_to(&t.component, t.path.as_deref(), format!("kv:{}", t.bucket)) else {
                continue;
            };
            running
                .info
                .push(TriggerInfo { what: format!("kv {} (changes)", t.bucket), component: t.component.clone() });
            let spec = DispatchSpec {
                dead_letter: topic.sibling(&format!("{}.dlq", topic.name()))?,
                topic,
                group: Group::new(app, &t.component)?,
                retry: retry(&t.retry),
                concurrency: t.concurrency as usize,
                heartbeat: HEARTBEAT,
            };
            running.consume(&spec, &t.component);
            running.dispatchers.push(Dispatcher::start(bus.clone(), spec, Arc::new(destination)));
            kv.watch(&bucket);
            running.watches.push((kv.clone(), bucket));
        }
        for t in &manifest.trigger.topic {
            let app = &manifest.app.name;
            let topic = topic_ref(app, &t.topic)?;
            let group = Group::new(app, t.group.as_deref().unwrap_or(&t.component))?;
            // The dead letters of an imported topic are the importer's own.
            let dead_letter =
                Topic::new(app, &t.dead_letter.clone().unwrap_or_else(|| format!("{}.dlq", topic.name())))?;
            let Some(destination) = deliver_to(&t.component, t.path.as_deref(), format!("topic:{}", t.topic)) else {
                continue;
            };
            running.info.push(TriggerInfo {
                what: format!("topic {} (group {})", t.topic, group.name()),
                component: t.component.clone(),
            });
            let spec = DispatchSpec {
                topic,
                group,
                retry: retry(&t.retry),
                dead_letter,
                concurrency: t.concurrency as usize,
                heartbeat: HEARTBEAT,
            };
            running.consume(&spec, &t.component);
            running.dispatchers.push(Dispatcher::start(bus.clone(), spec, Arc::new(destination)));
        }
        for t in manifest.trigger.workflow.iter().filter(|_| workflows.is_some()) {
            running.start_workflow(manifest, t, bus, workflows.expect("filtered")).await?;
        }
        for (i, t) in manifest.trigger.cron.iter().enumerate() {
            let schedule = t.schedule();
            let topic = Topic::new(&manifest.app.name, &cron_topic(i))?;
            let Some(destination) = deliver_to(&t.component, None, format!("cron:{i}")) else { continue };
            running.info.push(TriggerInfo {
                what: format!("cron {} ({})", t.schedule, t.timezone.map_or("UTC", |z| z.0.name())),
                component: t.component.clone(),
            });
            let spec = DispatchSpec {
                topic: topic.clone(),
                group: Group::new(&manifest.app.name, "cron")?,
                retry: retry(&t.retry),
                dead_letter: topic.sibling(&format!("{}.dlq", topic.name()))?,
                concurrency: 1,
                heartbeat: HEARTBEAT,
            };
            running.dispatchers.push(Dispatcher::start(bus.clone(), spec, Arc::new(destination)));
            let job =
                CronJob { topic, source: format!("/apps/{}/cron/{i}", manifest.app.name), schedule, missed: t.missed };
            running.crons.push(job.start(bus.clone()).await?);
        }
        Ok(running)
    }

    fn consume(&mut self, spec: &DispatchSpec, component: &str) {
        self.consumers.push(Consumer {
            topic: spec.topic.clone(),
            group: spec.group.clone(),
            dead_letter: spec.dead_letter.clone(),
            component: component.to_string(),
        });
    }

    /// The topic and schedule of one `[[trigger.workflow]]`: a consumer group (`workflow-NAME`)
    /// starting a run per event, and a schedule publishing ticks to `nimbus-cron.workflow.NAME`.
    async fn start_workflow(
        &mut self,
        manifest: &Manifest,
        t: &WorkflowTrigger,
        bus: &Arc<dyn EventBus>,
        starter: &Arc<dyn WorkflowStarter>,
    ) -> Result<(), BusError> {
        let app = &manifest.app.name;
        let group = Group::new(app, &format!("workflow-{}", t.name))?;
        let destination = |tick| {
            Arc::new(WorkflowDestination { starter: starter.clone(), workflow: t.name.clone(), tick })
                as Arc<dyn nimbus_bus::dispatch::Destination>
        };
        let mut consume = |topic: Topic, tick: bool| -> Result<(), BusError> {
            let spec = DispatchSpec {
                dead_letter: topic.sibling(&format!("{}.dlq", topic.name()))?,
                topic,
                group: group.clone(),
                retry: retry(&Retry::default()),
                concurrency: WORKFLOW_STARTS,
                heartbeat: HEARTBEAT,
            };
            self.dispatchers.push(Dispatcher::start(bus.clone(), spec, destination(tick)));
            Ok(())
        };
        if let Some(topic) = &t.topic {
            consume(Topic::new(app, topic)?, false)?;
            self.info
                .push(TriggerInfo { what: format!("topic {topic} (starts runs)"), component: t.component.clone() });
        }
        if let Some(schedule) = t.schedule() {
            let topic = Topic::new(app, &format!("nimbus-cron.workflow.{}", t.name))?;
            consume(topic.clone(), true)?;
            let source = format!("/apps/{app}/workflows/{}/cron", t.name);
            let job = CronJob { topic, source, schedule, missed: nimbus_manifest::MissedTicks::Skip };
            self.crons.push(job.start(bus.clone()).await?);
            let what =
                format!("cron {} (starts runs)", t.schedule.as_ref().map(ToString::to_string).unwrap_or_default());
            self.info.push(TriggerInfo { what, component: t.component.clone() });
        }
        Ok(())
    }

    /// Stops every trigger.
    pub async fn stop(self) {
        for (kv, bucket) in &self.watches {
            kv.unwatch(bucket);
        }
        drop(self.crons);
        futures::future::join_all(self.dispatchers.into_iter().map(Dispatcher::stop)).await;
    }
}

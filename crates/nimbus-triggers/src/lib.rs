//! Triggers: what starts an app's work other than an HTTP request, and the delivery of events
//! to components.
//!
//! This crate owns an app's running `[[trigger.topic]]`, `[[trigger.cron]]` and
//! `[[trigger.kv]]` ([`AppTriggers`]: a consumer group per topic trigger, a schedule publishing
//! ticks per cron trigger) and the topics and schedules of `[[trigger.workflow]]` (each event or
//! tick starts a run through a [`WorkflowStarter`] the host binds), the delivery of one event to a component — a function's
//! `nimbus:events/handler` or a service as an HTTP POST — through the component's admission
//! control ([`ComponentDestination`]), the KV change feed that publishes a watched bucket's
//! changes to its topic ([`KvChanges`]), and the checks that each trigger's component can handle
//! it ([`handler_problems`]). It does not accept events over HTTP (the gateway's ingress does),
//! store them (`nimbus-bus`) or load components (`nimbus-wasm`, `nimbus-services`).
//!
//! ```no_run
//! # async fn demo(manifest: nimbus_manifest::Manifest, gateway: nimbus_gateway::Gateway,
//! #     bus: std::sync::Arc<dyn nimbus_bus::EventBus>) -> Result<(), nimbus_bus::BusError> {
//! use nimbus_triggers::AppTriggers;
//!
//! let tracer = nimbus_observe::Observer::disabled().tracer().clone();
//! let triggers = AppTriggers::start(&manifest, &|c| gateway.target(c), &tracer, &bus, None, None).await?;
//! triggers.stop().await;
//! # Ok(()) }
//! ```

mod delivery;
mod kv_changes;
mod triggers;
mod workflow_start;

pub use delivery::ComponentDestination;
pub use kv_changes::{KvChanges, kv_topic};
pub use triggers::{AppTriggers, Consumer, TriggerInfo, app_topics, cron_topic, handler_problems, topic_ref};
pub use workflow_start::WorkflowStarter;

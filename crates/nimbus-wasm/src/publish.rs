//! The publish capability: `nimbus:events/publisher` on the node's event bus
//! ([`crate::Runtime::with_bus`]), only to the topics in the component's `grants.publish`, which
//! are topics of the function's own app ([`crate::Function::bind_app`]). Without any grant the
//! interface is not linked at all, so a component that imports it is refused at load with the
//! grant to add.
use std::sync::Arc;

use cloudevents::event::ExtensionValue;
use nimbus_bus::{AttributesReader, EventBuilder, EventBuilderV10, EventBus, PublishOptions, Topic};
use nimbus_manifest::Component;
use nimbus_observe::{Span, SpanKind};
use wasmtime::component::{HasData, Linker};

use crate::capability::{Capability, PrepareContext, Registered};
use crate::error::LinkError;
use crate::events::bindings::nimbus::events::{publisher, types};
use crate::guest::GuestState;
use crate::scope::Scope;

/// The publish capability ([`Capability`]).
pub(crate) struct Publish;

/// The topics one component may publish to, and the bus.
pub(crate) struct PublishGrants {
    bus: Option<Arc<dyn EventBus>>,
    grants: Arc<[String]>,
}

impl Capability for Publish {
    const GRANT: &'static str = "publish";
    const EXAMPLE: &'static str = r#"["TOPIC"]"#;
    const INTERFACES: &'static [&'static str] = &["nimbus:events/publisher"];
    type Backend = Option<Arc<dyn EventBus>>;
    type App = PublishGrants;
    type Instance = PublishCtx;

    /// Topic names were checked with the manifest; they resolve against the app at publish.
    fn configure(bus: &Self::Backend, component: &Component) -> Result<Option<PublishGrants>, LinkError> {
        let grants = &component.grants.publish;
        Ok((!grants.is_empty()).then(|| PublishGrants { bus: bus.clone(), grants: grants.iter().cloned().collect() }))
    }

    fn link(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
        struct Publishing;
        impl HasData for Publishing {
            type Data<'a> = &'a mut PublishCtx;
        }
        publisher::add_to_linker::<_, Publishing>(linker, |s| s.capability::<Publish>().0)
    }

    fn prepare(app: &PublishGrants, ctx: &PrepareContext<'_>) -> PublishCtx {
        PublishCtx { bus: app.bus.clone(), grants: app.grants.clone(), app: ctx.app.cloned(), scope: ctx.scope.clone() }
    }
}

impl crate::Runtime {
    /// The event bus functions publish to (`grants.publish`); without one, a publish fails with
    /// "no event bus".
    pub fn with_bus(mut self, bus: Arc<dyn EventBus>) -> Self {
        *Publish::backend(&mut self.backends) = Some(bus);
        self
    }
}

/// The publisher of one invocation.
pub(crate) struct PublishCtx {
    bus: Option<Arc<dyn EventBus>>,
    grants: Arc<[String]>,
    app: Option<Arc<str>>,
    scope: Arc<Scope>,
}

impl PublishCtx {
    /// Publishes in a producer span (`send orders`) whose context the event carries on.
    async fn publish(&self, topic: &str, event: types::Event) -> Result<(), String> {
        let mut span = self.scope.span("send", SpanKind::Producer);
        if span.is_recording() {
            span.rename(format!("send {topic}"));
            span.set("messaging.system", "nimbus");
            span.set("messaging.operation.type", "send");
            span.set("messaging.destination.name", topic.to_string());
        }
        let result = self.send(topic, event, &mut span).await;
        if let Err(e) = &result {
            span.set_error("publish", e);
        }
        result
    }

    async fn send(&self, topic: &str, event: types::Event, span: &mut Span) -> Result<(), String> {
        if !self.grants.iter().any(|g| g == topic) {
            self.scope.log("warn", &format!("publish to topic `{topic}` denied: not in grants.publish"));
            return Err(format!("topic `{topic}` is not in grants.publish"));
        }
        let bus = self.bus.as_ref().ok_or("this node has no event bus")?;
        let app = self.app.as_deref().ok_or("this function is not part of an app, so it has no topics")?;
        let (owner, name) = nimbus_manifest::resolve(app, topic);
        let topic = Topic::new(owner, name).map_err(|e| e.to_string())?;
        let mut built = from_guest(event, &self.scope.telemetry.component)?;
        span.set_with("messaging.message.id", || built.id().to_string());
        let traceparent = span.context().map(|c| c.traceparent());
        nimbus_bus::event::ensure_trace_context(&mut built, traceparent.as_deref());
        let published =
            bus.publish(&topic, &built, PublishOptions::default()).await.map_err(|e| nimbus_observe::report(&e))?;
        self.scope.telemetry.usage.event_published();
        tracing::debug!(component = %self.scope.telemetry.component, request_id = %self.scope.request_id, %topic, seq = published.seq, "published");
        Ok(())
    }
}

/// A guest's event as a CloudEvent: an empty id gets a random one, an empty source becomes
/// `/components/NAME`.
fn from_guest(e: types::Event, component: &str) -> Result<nimbus_bus::Event, String> {
    let id = if e.id.is_empty() { format!("{:032x}", fastrand::u128(..)) } else { e.id };
    let source = if e.source.is_empty() { format!("/components/{component}") } else { e.source };
    let mut b = EventBuilderV10::new().id(id).source(source).ty(e.type_);
    if let Some(subject) = e.subject {
        b = b.subject(subject);
    }
    if let Some(time) = e.time {
        let t = chrono::DateTime::parse_from_rfc3339(&time).map_err(|err| format!("time `{time}`: {err}"))?;
        b = b.time(t.with_timezone(&chrono::Utc));
    }
    if !e.data.is_empty() || e.datacontenttype.is_some() {
        b = b.data(e.datacontenttype.unwrap_or_else(|| "application/octet-stream".into()), e.data);
    }
    for (name, value) in e.extensions {
        b = b.extension(&name, ExtensionValue::String(value));
    }
    b.build().map_err(|err| err.to_string())
}

/// A CloudEvent as the guest sees it.
pub(crate) fn to_guest(e: &nimbus_bus::Event) -> types::Event {
    let data = nimbus_bus::event::data_bytes(e);
    types::Event {
        id: e.id().to_string(),
        source: e.source().to_string(),
        type_: e.ty().to_string(),
        subject: e.subject().map(str::to_string),
        time: e.time().map(|t| t.to_rfc3339()),
        datacontenttype: e.datacontenttype().map(str::to_string),
        data,
        extensions: e.iter_extensions().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

impl types::Host for PublishCtx {}

impl publisher::Host for PublishCtx {
    async fn publish(&mut self, topic: String, event: types::Event) -> Result<(), String> {
        PublishCtx::publish(self, &topic, event).await
    }
}

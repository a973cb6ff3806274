//! Alert notifications on the bus: each CloudEvent alerting sends (`dev.nimbus.alert.firing`,
//! `dev.nimbus.alert.resolved`) published to a topic of an app, where its topic triggers (a
//! function paging someone, a service opening a ticket) take them like any other event.
use std::sync::Arc;

use nimbus_bus::{BusError, EventBus, PublishOptions, Topic};
use nimbus_observe::insight::{AlertSink, Delivery};

/// Publishes alert notifications to one topic.
pub struct AlertTopic {
    bus: Arc<dyn EventBus>,
    topic: Topic,
}

impl std::fmt::Debug for AlertTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "topic {}/{}", self.topic.app(), self.topic.name())
    }
}

impl AlertTopic {
    /// Notifications to topic `name` of `app`.
    pub fn new(bus: Arc<dyn EventBus>, app: &str, name: &str) -> Result<Self, BusError> {
        Ok(Self { bus, topic: Topic::new(app, name)? })
    }
}

impl AlertSink for AlertTopic {
    fn deliver<'a>(&'a self, event: &'a serde_json::Value) -> Delivery<'a> {
        Box::pin(async move {
            let bytes = serde_json::to_vec(event).map_err(|e| e.to_string())?;
            let event = nimbus_bus::event::decode(&bytes).map_err(|e| e.to_string())?;
            self.bus
                .publish(&self.topic, &event, PublishOptions::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_observe::insight::cloud_event;

    #[tokio::test]
    async fn a_notification_is_published_to_the_topic_as_a_cloudevent() {
        let dir = tempfile::tempdir().unwrap();
        let bus: Arc<dyn EventBus> =
            Arc::new(nimbus_bus::Embedded::open(&dir.path().join("events.redb"), Default::default()).unwrap());
        let sink = AlertTopic::new(bus.clone(), "ops", "alerts").unwrap();
        let event = cloud_event("node-1", "shop", true, &[]);
        sink.deliver(&event).await.unwrap();
        let topic = Topic::new("ops", "alerts").unwrap();
        let stored = bus.read(&topic, 0, 10).await.unwrap();
        assert_eq!(stored.len(), 1);
        let e = &stored[0].event;
        use nimbus_bus::AttributesReader;
        assert_eq!(e.ty(), "dev.nimbus.alert.firing");
        assert_eq!(e.subject(), Some("shop"));
        assert_eq!(e.source().as_str(), "nimbus://node-1/alerts");
        assert!(AlertTopic::new(bus, "ops", "no spaces").is_err(), "a topic name is checked");
    }
}

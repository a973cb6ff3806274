//! The embedded bus opens an event store written before records had a format version
//! (`fixtures/bus-unversioned.redb`, written by the code of commit ec3baf1: topic `shop/orders`
//! with 4 partitions holding `order-1`..`order-3` at seq 1-3, and group `shop/billing` having
//! acknowledged one of them), reads it as it was, and appends to it.
use std::collections::BTreeSet;
use std::time::Duration;

use nimbus_bus::{
    AttributesReader, BusConfig, Embedded, EventBuilder, EventBuilderV10, EventBus, Group, PublishOptions, Topic,
};

#[tokio::test]
async fn an_event_store_written_before_records_were_versioned_reads_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.redb");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bus-unversioned.redb"), &path).unwrap();
    // The fixture's events are older than any default retention.
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    let bus = Embedded::open(&path, BusConfig { partitions: 4, retention: century, ..BusConfig::default() }).unwrap();
    let orders = Topic::new("shop", "orders").unwrap();

    let stored = bus.read(&orders, 1, 10).await.unwrap();
    let ids: Vec<(u64, String)> = stored.iter().map(|s| (s.seq, s.event.id().to_string())).collect();
    assert_eq!(ids, [(1, "order-1".into()), (2, "order-2".into()), (3, "order-3".into())]);
    assert_eq!(stored[1].event.source().as_str(), "/fixture");

    // The group's cursors survive: it is offered the two events it had not acknowledged.
    let mut sub = bus.subscribe(&orders, &Group::new("shop", "billing").unwrap()).await.unwrap();
    let mut offered = BTreeSet::new();
    for _ in 0..2 {
        let d = tokio::time::timeout(Duration::from_secs(20), sub.next()).await.unwrap().unwrap();
        offered.insert(d.event.id().to_string());
        d.ack().await.unwrap();
    }
    assert_eq!(offered.len(), 2);
    assert!(offered.iter().all(|id| ["order-1", "order-2", "order-3"].contains(&id.as_str())), "{offered:?}");

    // A new record goes after the old ones, and both layouts read back together.
    let event = EventBuilderV10::new().id("order-4").source("/fixture").ty("order.placed").build().unwrap();
    assert_eq!(bus.publish(&orders, &event, PublishOptions::default()).await.unwrap().seq, 4);
    let last = bus.last(&orders).await.unwrap().unwrap();
    assert_eq!((last.seq, last.event.id()), (4, "order-4"));
    assert_eq!(bus.read(&orders, 1, 10).await.unwrap().len(), 4);
}

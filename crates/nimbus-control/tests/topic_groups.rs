//! `GET /v1/apps/APP/topics/TOPIC/groups` over HTTP: each consumer group's acknowledged position
//! and lag, for the callers that may read the app's data.
use std::sync::Arc;
use std::time::Duration;

use nimbus_bus::{Embedded, EventBuilder, EventBuilderV10, EventBus, Group, PublishOptions, Topic};
use nimbus_control::{DataAuth, DataState, GroupList};

#[tokio::test]
async fn a_topics_groups_show_what_they_acknowledged_and_their_lag() {
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn EventBus> = Arc::new(Embedded::open(&dir.path().join("bus.redb"), Default::default()).unwrap());
    let topic = Topic::new("shop", "orders").unwrap();
    let mut last = 0;
    for i in 0..5 {
        let event = EventBuilderV10::new().id(i.to_string()).source("/test").ty("order.placed").build().unwrap();
        last = bus.publish(&topic, &event, PublishOptions::default()).await.unwrap().seq;
    }
    let mut sub = bus.subscribe(&topic, &Group::new("shop", "billing").unwrap()).await.unwrap();
    for _ in 0..5 {
        tokio::time::timeout(Duration::from_secs(10), sub.next()).await.unwrap().unwrap().ack().await.unwrap();
    }
    let _behind = bus.subscribe(&topic, &Group::new("shop", "shipping").unwrap()).await.unwrap();

    let state = DataState {
        bus: Some(bus),
        kv: None,
        auth: DataAuth::Local { token: "secret".into(), app: "shop".into() },
        observer: nimbus_observe::Observer::disabled(),
        workflows: None,
        ingress: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, nimbus_control::data_router(Arc::new(state))).await });
    let client = reqwest::Client::new();
    let get = |path: &str, token: &str| client.get(format!("{base}{path}")).bearer_auth(token).send();

    let resp = get("/v1/apps/shop/topics/orders/groups", "secret").await.unwrap();
    assert_eq!(resp.status(), 200);
    let list: GroupList = resp.json().await.unwrap();
    let seen: Vec<_> = list.groups.iter().map(|g| (g.group.as_str(), g.acked, g.lag)).collect();
    assert_eq!(seen, [("billing", last, 0), ("shipping", 0, 5)]);

    let resp = get("/v1/apps/shop/topics/unknown/groups", "secret").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.json::<GroupList>().await.unwrap().groups.is_empty());
    assert_eq!(get("/v1/apps/shop/topics/orders/groups", "wrong").await.unwrap().status(), 401);
    assert_eq!(get("/v1/apps/other/topics/orders/groups", "secret").await.unwrap().status(), 404);
    assert_eq!(get("/v1/apps/shop/topics/Bad..name/groups", "secret").await.unwrap().status(), 400);
}

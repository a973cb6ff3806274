//! Data residency in the NATS KV store: a bucket of an app pinned to labels this node lacks is
//! refused before NATS is asked, and a pinned app's bucket that was created before the app was
//! pinned (so without placement tags: its replicas may be anywhere) is refused too, saying how
//! to move it — never used as if it were placed.
use std::sync::Arc;

use nimbus_fixtures::nats::NatsServer;
use nimbus_manifest::{Placement, Residency};
use nimbus_state::{Bucket, KvError, KvStore, NatsKv};

fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_apps_buckets_are_refused_outside_its_region_and_unplaced_ones_everywhere() {
    let server = NatsServer::start();
    let pinned = Placement { require: labels(&[("region", "eu-*")]), ..Placement::default() };
    let carts = Bucket::new("gdpr", "carts").unwrap();

    // Written while the app was not pinned: an untagged stream.
    let eu = Arc::new(Residency::new(labels(&[("region", "eu-west")])));
    let kv = NatsKv::connect(&server.url()).await.unwrap().resident(eu.clone());
    kv.set(&carts, "u1", "before".into(), None).await.unwrap();

    // Once pinned, a fresh store refuses it on an eu node (it is not placed) …
    eu.pin_all([("gdpr", vec![&pinned])]);
    let kv = NatsKv::connect(&server.url()).await.unwrap().resident(eu.clone());
    let err = kv.get(&carts, "u1").await.unwrap_err();
    assert!(matches!(&err, KvError::Unplaced { tags, .. } if tags == &["region:eu-west"]), "{err}");
    assert!(err.to_string().contains("nats stream edit KV_nimbus_kv_"), "{err}");

    // … and on a us node before anything reaches NATS.
    let us = Arc::new(Residency::new(labels(&[("region", "us-east")])));
    us.pin_all([("gdpr", vec![&pinned])]);
    let kv = NatsKv::connect(&server.url()).await.unwrap().resident(us);
    let err = kv.set(&carts, "u2", "x".into(), None).await.unwrap_err();
    assert!(matches!(&err, KvError::Misplaced(m) if m.requires == "region=eu-*"), "{err}");

    // Other apps' buckets are untouched by the pin.
    let blog = Bucket::new("blog", "posts").unwrap();
    kv.set(&blog, "p1", "hello".into(), None).await.unwrap();
    assert_eq!(kv.get(&blog, "p1").await.unwrap().unwrap().value, "hello");
}

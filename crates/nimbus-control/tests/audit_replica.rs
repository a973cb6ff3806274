//! The audit trail's copy in NATS JetStream (a real `nats-server`): each record is in the copy
//! once it is acknowledged, records written before the log was replicated are copied first, a
//! record that cannot be copied refuses the call it records, and the copy catches up, in order,
//! once NATS is back.
use nimbus_control::{AuditLog, AuditReplica};
use nimbus_fixtures::nats::NatsServer;
use nimbus_security::audit::{Event, Outcome};

fn event(action: &str) -> Event {
    Event {
        principal: "t1".into(),
        action: action.into(),
        resource: "app:shop".into(),
        outcome: Outcome::Allowed,
        ..Event::default()
    }
}

/// The actions in `node`'s copy, in order.
async fn copied(replica: &AuditReplica, node: &str) -> Vec<String> {
    let lines = replica.lines(node, 0, usize::MAX).await.unwrap();
    lines
        .iter()
        .map(|l| {
            let json: serde_json::Value = serde_json::from_str(l.split_once(' ').unwrap().1).unwrap();
            json["action"].as_str().unwrap_or("digest").to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn records_are_copied_before_they_count_and_the_copy_catches_up_after_nats_was_down() {
    let mut nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let replica = AuditReplica::new(client.clone(), 1);
    let dir = tempfile::tempdir().unwrap();

    // Written by a node before it joined (or while NATS could not be reached at its last run).
    let log = AuditLog::open(dir.path(), "n1").unwrap();
    log.record(event("deploy")).unwrap();
    let log = log.replicated(AuditReplica::new(client.clone(), 1)).await.unwrap();
    assert_eq!(copied(&replica, "n1").await, ["deploy"]);

    tokio::task::block_in_place(|| log.record(event("traffic"))).unwrap();
    assert_eq!(copied(&replica, "n1").await, ["deploy", "traffic"], "acknowledged means copied");

    // NATS down: the record stays in the node's log, but the call it records is refused.
    nats.kill9();
    let refused = tokio::task::block_in_place(|| log.record(event("delete"))).unwrap_err();
    assert!(refused.to_string().contains("cluster's copy of the audit trail cannot be written"), "{refused}");

    // NATS back: the next record is copied after the one that was refused, in order.
    nats.restart();
    let mut attempts = 0;
    while let Err(e) = tokio::task::block_in_place(|| log.record(event("rollback"))) {
        attempts += 1;
        assert!(attempts < 50, "the copy never caught up: {e}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let actions = copied(&replica, "n1").await;
    assert_eq!(&actions[..3], ["deploy", "traffic", "delete"], "{actions:?}");
    assert_eq!(actions.last().map(String::as_str), Some("rollback"), "{actions:?}");
    assert!(log.verify().unwrap().ok());

    // The copy of a node whose own log was lost is ahead of its new one: refused, not mixed.
    let fresh = tempfile::tempdir().unwrap();
    let err = AuditLog::open(fresh.path(), "n1").unwrap().replicated(replica.clone()).await.unwrap_err();
    assert!(err.to_string().contains("the log was lost or replaced"), "{err}");
    // Another node's copy is its own.
    assert_eq!(replica.last("n2").await.unwrap(), 0);
}

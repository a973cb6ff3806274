//! What recording an audit event costs a control-API change: appended to the node's log
//! (written and fsynced, with its head) — a single server's path — and, in a cluster, also
//! published to its JetStream copy and acknowledged by three `nats-server`s (JetStream
//! `sync_interval: always`, so each acknowledgement waits for their fsyncs), on loopback.
//! `cargo bench -p nimbus-control --bench audit`
#![allow(missing_docs, reason = "criterion_group! defines an undocumented public function")]
use criterion::{Criterion, criterion_group, criterion_main};
use nimbus_control::{AuditLog, AuditReplica};
use nimbus_fixtures::nats::NatsServer;
use nimbus_security::audit::{Event, Outcome};

fn event() -> Event {
    Event {
        principal: "0123456789ab".into(),
        action: "traffic".into(),
        resource: "app:shop".into(),
        request: Some("PUT /v1/apps/shop/traffic".into()),
        outcome: Outcome::Allowed,
        ..Event::default()
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    let mut group = c.benchmark_group("audit");

    let dir = tempfile::tempdir().expect("tempdir");
    let local = AuditLog::open(dir.path(), "bench").expect("a log");
    group.bench_function("record_local", |b| b.iter(|| local.record(event()).expect("recorded")));

    let nats = NatsServer::cluster(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let replicated = runtime.block_on(async {
        let client = async_nats::connect(nats[0].url()).await.expect("NATS");
        AuditLog::open(dir.path(), "bench").expect("a log").replicated(AuditReplica::new(client, 3)).await
    });
    let replicated = replicated.expect("replicated");
    // `record` blocks on the runtime's handle: call it from a thread outside the runtime, as the
    // API does from `block_in_place`.
    group.bench_function("record_replicated_3", |b| b.iter(|| replicated.record(event()).expect("recorded")));
    group.finish();
    drop(nats);
}

criterion_group!(benches, bench);
criterion_main!(benches);

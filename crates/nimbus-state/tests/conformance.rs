//! One suite, both backends (the KV store and the workflow journal kept in it): every case runs against the embedded store and against NATS
//! JetStream KV on a real `nats-server -js` (free loopback port, `sync_interval: always`).
use std::sync::Arc;
use std::time::Duration;

use nimbus_fixtures::nats::NatsServer;
use nimbus_state::{Bucket, Change, ChangeFeed, Embedded, KvError, KvStore, NatsKv, Removal, Swap, journal};
use std::collections::BTreeMap;

enum Backend {
    Embedded(tempfile::TempDir),
    Nats(NatsServer),
}

impl Backend {
    async fn open(&self) -> Arc<dyn KvStore> {
        match self {
            Self::Embedded(dir) => Arc::new(Embedded::open(&dir.path().join("state.redb")).expect("open")),
            Self::Nats(server) => Arc::new(NatsKv::connect(&server.url()).await.expect("connect")),
        }
    }
}

fn bucket(name: &str) -> Bucket {
    Bucket::new("app", name).expect("bucket")
}

macro_rules! both {
    ($($case:ident),* $(,)?) => {
        mod embedded { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $case() { super::$case(super::Backend::Embedded(tempfile::tempdir().unwrap())).await } )* }
        mod nats { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $case() { super::$case(super::Backend::Nats(super::NatsServer::start())).await } )* }
    };
}

both!(
    get_set_delete_exists,
    compare_and_swap_on_revisions,
    compare_and_delete_on_revisions,
    concurrent_increments_lose_nothing,
    list_by_prefix_with_cursor,
    ttl_expires_keys,
    batches,
    odd_keys_are_exact_or_refused,
    writes_survive_reopen,
    apps_never_share_buckets,
    the_old_layout_moves_to_its_apps_once,
    the_workflow_journal_writes_each_position_once,
    the_workflow_journal_survives_reopen,
    stored_bytes_follow_what_a_bucket_holds,
    change_feeds_keep_every_change_until_acknowledged,
    an_unfollowed_bucket_records_nothing,
);

/// The next `n` changes the feed returns, as `(key, value)` (`None`: deleted), with strictly
/// increasing revisions. JetStream records deleting an absent key (`never-there`) as a change:
/// it is not counted.
async fn drain(feed: &mut Box<dyn ChangeFeed>, n: usize) -> Vec<(String, Option<String>)> {
    // A JetStream batch a follower took and never acknowledged comes back after its ack wait.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut out: Vec<Change> = Vec::new();
    while out.len() < n {
        assert!(std::time::Instant::now() < deadline, "the feed stopped after {} of {n} changes: {out:?}", out.len());
        let got = feed.next(3, Duration::from_secs(2)).await.unwrap();
        out.extend(got.into_iter().filter(|c| c.key != "never-there"));
    }
    assert!(out.windows(2).all(|w| w[0].revision < w[1].revision), "in revision order: {out:?}");
    out.into_iter().map(|c| (c.key, c.value.map(|v| String::from_utf8(v.to_vec()).unwrap()))).collect()
}

async fn change_feeds_keep_every_change_until_acknowledged(b: Backend) {
    let c = bucket("carts");
    let expected = |pairs: &[(&str, Option<&str>)]| -> Vec<(String, Option<String>)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect()
    };
    let kv = b.open().await;
    kv.set(&c, "before", "not recorded".into(), None).await.unwrap();
    let mut feed = kv.follow(&c).await.unwrap();
    assert!(feed.next(10, Duration::from_millis(200)).await.unwrap().is_empty(), "nothing since following");
    let waiting = tokio::spawn(async move { (feed.next(10, Duration::from_secs(10)).await.unwrap(), feed) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    kv.set(&c, "a", "1".into(), None).await.unwrap();
    let (woken, mut feed) = waiting.await.unwrap();
    assert_eq!(woken.len(), 1, "a waiting follower wakes on the write: {woken:?}");
    feed.ack().await.unwrap();
    kv.set(&bucket("other"), "x", "other bucket".into(), None).await.unwrap();
    let rev = kv.set(&c, "b", "2".into(), None).await.unwrap();
    kv.delete(&c, "a").await.unwrap();
    kv.delete(&c, "never-there").await.unwrap();
    assert!(matches!(kv.compare_and_swap(&c, "b", Some(rev), "3".into()).await.unwrap(), Swap::Done(_)));
    assert!(matches!(kv.compare_and_swap(&c, "b", Some(rev), "lost".into()).await.unwrap(), Swap::Conflict(_)));
    kv.increment(&c, "n", 5).await.unwrap();
    kv.set_many(&c, vec![("e".into(), "5".into()), ("f".into(), "6".into())]).await.unwrap();
    let all = expected(&[
        ("b", Some("2")),
        ("a", None),
        ("b", Some("3")),
        ("n", Some("5")),
        ("e", Some("5")),
        ("f", Some("6")),
    ]);
    assert_eq!(drain(&mut feed, 6).await, all, "every change once, in order, the failed swap not at all");
    // Not acknowledged: a restart (another node, for NATS) sees them all again.
    drop((feed, kv));
    let kv = b.open().await;
    let mut feed = kv.follow(&c).await.unwrap();
    assert_eq!(drain(&mut feed, 6).await, all, "unacknowledged changes survive a restart");
    feed.ack().await.unwrap();
    kv.set(&c, "g", "7".into(), None).await.unwrap();
    drop((feed, kv));
    let kv = b.open().await;
    let mut feed = kv.follow(&c).await.unwrap();
    assert_eq!(drain(&mut feed, 1).await, expected(&[("g", Some("7"))]), "acknowledged changes are gone");
}

async fn an_unfollowed_bucket_records_nothing(b: Backend) {
    let c = bucket("carts");
    let kv = b.open().await;
    let mut feed = kv.follow(&c).await.unwrap();
    kv.set(&c, "a", "1".into(), None).await.unwrap();
    drop(feed);
    kv.unfollow(&c).await.unwrap();
    kv.set(&c, "b", "2".into(), None).await.unwrap();
    feed = kv.follow(&c).await.unwrap();
    assert!(feed.next(10, Duration::from_millis(300)).await.unwrap().is_empty(), "forgotten, and not recorded since");
    kv.set(&c, "c", "3".into(), None).await.unwrap();
    assert_eq!(drain(&mut feed, 1).await, vec![("c".to_string(), Some("3".to_string()))]);
}

async fn stored_bytes_follow_what_a_bucket_holds(b: Backend) {
    let kv = b.open().await;
    let (c, other) = (bucket("carts"), bucket("other"));
    assert_eq!(kv.stored_bytes(&c).await.unwrap(), 0, "a bucket never written holds nothing");
    for i in 0..8 {
        kv.set(&c, &format!("k{i}"), vec![b'v'; 64 << 10].into(), None).await.unwrap();
    }
    let held = kv.stored_bytes(&c).await.unwrap();
    assert!(((512 << 10)..(640 << 10)).contains(&held), "8 × 64 KiB: {held}");
    assert_eq!(kv.stored_bytes(&other).await.unwrap(), 0, "buckets are counted apart");
    for i in 0..6 {
        kv.delete(&c, &format!("k{i}")).await.unwrap();
    }
    let after = kv.stored_bytes(&c).await.unwrap();
    assert!(after < held / 2, "deleting shrinks it: {held} -> {after}");
}

async fn get_set_delete_exists(b: Backend) {
    let kv = b.open().await;
    let c = bucket("carts");
    assert_eq!(kv.get(&c, "a").await.unwrap(), None);
    assert!(!kv.exists(&c, "a").await.unwrap());
    let r1 = kv.set(&c, "a", "one".into(), None).await.unwrap();
    let r2 = kv.set(&c, "a", "two".into(), None).await.unwrap();
    assert!(r2 > r1);
    let e = kv.get(&c, "a").await.unwrap().unwrap();
    assert_eq!((e.value.as_ref(), e.revision), (&b"two"[..], r2));
    assert!(kv.exists(&c, "a").await.unwrap());
    // Buckets are separate.
    assert_eq!(kv.get(&bucket("other"), "a").await.unwrap(), None);
    kv.delete(&c, "a").await.unwrap();
    assert_eq!(kv.get(&c, "a").await.unwrap(), None);
    kv.delete(&c, "never-there").await.unwrap();
    let empty = kv.set(&c, "empty", bytes::Bytes::new(), None).await.unwrap();
    assert_eq!(kv.get(&c, "empty").await.unwrap().unwrap().revision, empty, "an empty value is a value");
}

async fn compare_and_swap_on_revisions(b: Backend) {
    let kv = b.open().await;
    let c = bucket("cas");
    let Swap::Done(r1) = kv.compare_and_swap(&c, "k", None, "v1".into()).await.unwrap() else { panic!("create") };
    assert_eq!(
        kv.compare_and_swap(&c, "k", None, "x".into()).await.unwrap(),
        Swap::Conflict(Some(r1)),
        "exists already"
    );
    assert_eq!(kv.compare_and_swap(&c, "k", Some(r1 + 100), "x".into()).await.unwrap(), Swap::Conflict(Some(r1)));
    let Swap::Done(r2) = kv.compare_and_swap(&c, "k", Some(r1), "v2".into()).await.unwrap() else { panic!("swap") };
    assert_eq!(kv.get(&c, "k").await.unwrap().unwrap().value.as_ref(), b"v2");
    assert_eq!(kv.compare_and_swap(&c, "k", Some(r1), "stale".into()).await.unwrap(), Swap::Conflict(Some(r2)));
    kv.delete(&c, "k").await.unwrap();
    assert_eq!(kv.compare_and_swap(&c, "k", Some(r2), "x".into()).await.unwrap(), Swap::Conflict(None));
}

async fn compare_and_delete_on_revisions(b: Backend) {
    let kv = b.open().await;
    let c = bucket("carts");
    let first = kv.set(&c, "k", "1".into(), None).await.unwrap();
    let second = kv.set(&c, "k", "2".into(), None).await.unwrap();
    assert_eq!(kv.compare_and_delete(&c, "k", first).await.unwrap(), Removal::Conflict(Some(second)));
    assert_eq!(kv.get(&c, "k").await.unwrap().unwrap().value, "2", "a stale revision deletes nothing");
    assert_eq!(kv.compare_and_delete(&c, "k", second).await.unwrap(), Removal::Deleted);
    assert_eq!(kv.get(&c, "k").await.unwrap(), None);
    assert_eq!(kv.compare_and_delete(&c, "k", second).await.unwrap(), Removal::Conflict(None), "already gone");
    assert_eq!(kv.compare_and_delete(&c, "never", 1).await.unwrap(), Removal::Conflict(None));
}

async fn concurrent_increments_lose_nothing(b: Backend) {
    let kv = b.open().await;
    let c = bucket("counters");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (kv, c) = (kv.clone(), c.clone());
            tokio::spawn(async move { kv.increment(&c, "hits", 1).await.unwrap() })
        })
        .collect();
    let mut results: Vec<i64> = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    results.sort();
    assert_eq!(results, (1..=100).collect::<Vec<_>>(), "every increment saw a distinct value");
    assert_eq!(kv.get(&c, "hits").await.unwrap().unwrap().value.as_ref(), b"100");
    assert_eq!(kv.increment(&c, "hits", -101).await.unwrap(), -1);
    kv.set(&c, "text", "hello".into(), None).await.unwrap();
    assert!(matches!(kv.increment(&c, "text", 1).await, Err(KvError::NotANumber(_))));
}

async fn list_by_prefix_with_cursor(b: Backend) {
    let kv = b.open().await;
    let c = bucket("listing");
    for i in 0..25 {
        kv.set(&c, &format!("user:{i:02}"), "x".into(), None).await.unwrap();
    }
    kv.set(&c, "order:1", "x".into(), None).await.unwrap();
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = kv.list(&c, "user:", cursor.as_deref(), 10).await.unwrap();
        assert!(page.keys.len() <= 10);
        all.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(all, (0..25).map(|i| format!("user:{i:02}")).collect::<Vec<_>>());
    assert_eq!(kv.list(&c, "", None, 100).await.unwrap().keys.len(), 26);
    assert!(kv.list(&c, "nobody", None, 10).await.unwrap().keys.is_empty());
    kv.delete(&c, "user:05").await.unwrap();
    assert_eq!(kv.list(&c, "user:0", None, 100).await.unwrap().keys.len(), 9);
}

async fn ttl_expires_keys(b: Backend) {
    let kv = b.open().await;
    let c = bucket("sessions");
    kv.set(&c, "short", "x".into(), Some(Duration::from_secs(1))).await.unwrap();
    kv.set(&c, "long", "x".into(), None).await.unwrap();
    assert!(kv.exists(&c, "short").await.unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while kv.exists(&c, "short").await.unwrap() {
        assert!(std::time::Instant::now() < deadline, "the key did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(kv.exists(&c, "long").await.unwrap());
    assert_eq!(kv.list(&c, "", None, 10).await.unwrap().keys, ["long"]);
}

async fn batches(b: Backend) {
    let kv = b.open().await;
    let c = bucket("batch");
    kv.set_many(&c, vec![("a".into(), "1".into()), ("b".into(), "2".into())]).await.unwrap();
    let got = kv.get_many(&c, &["a".into(), "missing".into(), "b".into()]).await.unwrap();
    let values: Vec<Option<Vec<u8>>> = got.into_iter().map(|e| e.map(|e| e.value.to_vec())).collect();
    assert_eq!(values, [Some(b"1".to_vec()), None, Some(b"2".to_vec())]);
}

async fn odd_keys_are_exact_or_refused(b: Backend) {
    let kv = b.open().await;
    let c = bucket("odd");
    // NUL bytes, dots and wildcards, and two Unicode forms of "é" are distinct keys.
    let keys = ["a\0b", "a", "a.b.*", "caf\u{e9}", "cafe\u{301}", "sp ace/slash>"];
    for (i, k) in keys.iter().enumerate() {
        kv.set(&c, k, i.to_string().into(), None).await.unwrap();
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(kv.get(&c, k).await.unwrap().unwrap().value, i.to_string(), "{k:?}");
    }
    let long = "k".repeat(nimbus_state::MAX_KEY_LEN);
    kv.set(&c, &long, "x".into(), None).await.unwrap();
    assert!(kv.exists(&c, &long).await.unwrap());
    let too_long = "k".repeat(nimbus_state::MAX_KEY_LEN + 1);
    let err = kv.set(&c, &too_long, "x".into(), None).await.unwrap_err();
    assert!(err.to_string().contains("512 bytes"), "{err}");
    assert!(kv.set(&c, "", "x".into(), None).await.is_err());
    assert!(Bucket::new("app", "Bad Bucket").is_err());
    assert!(Bucket::new("Bad App", "b").is_err());
}

async fn writes_survive_reopen(b: Backend) {
    let c = bucket("durable");
    {
        let kv = b.open().await;
        for i in 0..50 {
            kv.set(&c, &format!("k{i}"), i.to_string().into(), None).await.unwrap();
        }
    }
    let mut b = b;
    if let Backend::Nats(server) = &mut b {
        server.restart(); // SIGKILL, then start on the same store
    }
    let kv = b.open().await;
    for i in 0..50 {
        assert_eq!(kv.get(&c, &format!("k{i}")).await.unwrap().unwrap().value, i.to_string());
    }
}

async fn apps_never_share_buckets(b: Backend) {
    let kv = b.open().await;
    let scoped = |app: &str, name: &str| Bucket::new(app, name).expect("bucket");
    // The same name in two apps, and names whose plain concatenation would be the same.
    let pairs = [("shop", "carts"), ("billing", "carts"), ("a_b", "c"), ("a", "b_c"), ("a-b", "c"), ("a", "b-c")];
    for (app, name) in pairs {
        kv.set(&scoped(app, name), "k", format!("{app}/{name}").into(), None).await.unwrap();
    }
    for (app, name) in pairs {
        let b = scoped(app, name);
        assert_eq!(kv.get(&b, "k").await.unwrap().unwrap().value, format!("{app}/{name}"), "{b}");
        assert_eq!(kv.list(&b, "", None, 10).await.unwrap().keys, ["k"]);
    }
    kv.delete(&scoped("billing", "carts"), "k").await.unwrap();
    assert!(kv.exists(&scoped("shop", "carts"), "k").await.unwrap(), "a delete in one app leaves the other's key");
    assert_eq!(kv.increment(&scoped("billing", "carts"), "n", 1).await.unwrap(), 1);
    assert_eq!(kv.get(&scoped("shop", "carts"), "n").await.unwrap(), None);
}

/// A store written before buckets were scoped per app (built here through the backend with
/// unscoped buckets, as the old version named them) moves to the apps that own each key on the
/// first start, and only then.
async fn the_old_layout_moves_to_its_apps_once(b: Backend) {
    let kv = b.open().await;
    let (carts, actors) = (Bucket::unscoped("carts"), Bucket::unscoped("actors"));
    kv.set(&carts, "u1", "cart of u1".into(), None).await.unwrap();
    kv.set(&carts, "u2", "cart of u2".into(), None).await.unwrap();
    kv.set(&actors, "counter/a", "3".into(), None).await.unwrap();
    kv.set(&actors, "orphan/x", "1".into(), None).await.unwrap();
    kv.set(&Bucket::new("shop", "new").unwrap(), "k", "written by this version".into(), None).await.unwrap();
    assert_eq!(nimbus_state::layout(&*kv).await.unwrap(), 1);
    // `carts` was used by two apps; actor type `counter` is served by `shop`.
    let owners = |bucket: &str, key: &str| -> Vec<String> {
        match (bucket, key.split('/').next()) {
            ("carts", _) => vec!["billing".into(), "shop".into()],
            ("actors", Some("counter")) => vec!["shop".into()],
            _ => Vec::new(),
        }
    };
    let mut moved = nimbus_state::migrate(&*kv, &owners).await.unwrap();
    moved.sort_by(|a, b| a.bucket.cmp(&b.bucket));
    let counts = |pairs: &[(&str, usize)]| pairs.iter().map(|(a, n)| (a.to_string(), *n)).collect::<BTreeMap<_, _>>();
    assert_eq!(moved.len(), 2, "{moved:?}");
    assert_eq!((moved[0].bucket.as_str(), &moved[0].keys, moved[0].left), ("actors", &counts(&[("shop", 1)]), 1));
    assert_eq!(
        (moved[1].bucket.as_str(), &moved[1].keys, moved[1].left),
        ("carts", &counts(&[("billing", 2), ("shop", 2)]), 0)
    );
    for app in ["shop", "billing"] {
        let b = Bucket::new(app, "carts").unwrap();
        assert_eq!(kv.get(&b, "u1").await.unwrap().unwrap().value, "cart of u1", "{app}");
        assert_eq!(kv.list(&b, "", None, 10).await.unwrap().keys, ["u1", "u2"]);
    }
    assert_eq!(kv.get(&Bucket::new("shop", "actors").unwrap(), "counter/a").await.unwrap().unwrap().value, "3");
    assert_eq!(kv.get(&Bucket::new("billing", "actors").unwrap(), "counter/a").await.unwrap(), None);
    assert_eq!(kv.list(&carts, "", None, 10).await.unwrap().keys, Vec::<String>::new(), "moved keys left");
    assert_eq!(kv.list(&actors, "", None, 10).await.unwrap().keys, ["orphan/x"], "no owner: left in place");
    assert_eq!(
        kv.get(&Bucket::new("shop", "new").unwrap(), "k").await.unwrap().unwrap().value,
        "written by this version"
    );
    assert_eq!(nimbus_state::layout(&*kv).await.unwrap(), nimbus_state::LAYOUT);
    // It runs once: old-layout data appearing later is not moved again.
    kv.set(&carts, "late", "x".into(), None).await.unwrap();
    assert!(nimbus_state::migrate(&*kv, &owners).await.unwrap().is_empty());
    assert_eq!(kv.get(&Bucket::new("shop", "carts").unwrap(), "late").await.unwrap(), None);
}

fn run(id: &str, key: Option<&str>) -> journal::Run {
    journal::Run {
        id: id.into(),
        workflow: "order".into(),
        revision: "r1".into(),
        status: journal::RunStatus::Running,
        input: vec![0, 159, 146, 150],
        output: None,
        error: None,
        idempotency_key: key.map(Into::into),
        created_ms: 1,
        updated_ms: 1,
        wake_ms: None,
        cancel_requested: false,
    }
}

async fn the_workflow_journal_writes_each_position_once(b: Backend) {
    use journal::{Created, Entry, EntryKind, JournalError, Outcome, RunStatus};
    let kv = b.open().await;
    let j = journal::Journal::new(kv.clone(), "shop").unwrap();
    assert_eq!(j.create(&run("r1", Some("k1"))).await.unwrap(), Created::New);
    // The same idempotency key answers the first run and stores nothing.
    match j.create(&run("r2", Some("k1"))).await.unwrap() {
        Created::Existing(found) => {
            assert_eq!((found.id.as_str(), found.input.as_slice()), ("r1", &[0, 159, 146, 150][..]))
        }
        other => panic!("{other:?}"),
    }
    assert!(j.run("r2").await.unwrap().is_none());
    assert!(matches!(j.create(&run("r3", Some(""))).await, Err(JournalError::InvalidKey)));
    // Each position is written once: a second writer of a position conflicts.
    let step = Entry::new(EntryKind::Step, "reserve", 5).finish(Outcome::Ok, b"done".to_vec(), 6);
    let rev = j.append("r1", 0, &step).await.unwrap();
    assert!(matches!(j.append("r1", 0, &step).await, Err(JournalError::Conflict)));
    let mut wait = Entry::new(EntryKind::Signal, "approve", 7);
    wait.due_ms = Some(99);
    let wait_rev = j.append("r1", 1, &wait).await.unwrap();
    let got = wait.clone().finish(Outcome::Ok, b"yes".to_vec(), 8);
    j.replace("r1", 1, &got, wait_rev).await.unwrap();
    assert!(matches!(j.replace("r1", 1, &got, wait_rev).await, Err(JournalError::Conflict)));
    let big = Entry::new(EntryKind::Step, "big", 9).finish(Outcome::Ok, vec![1; journal::MAX_PAYLOAD_BYTES + 1], 9);
    let err = j.append("r1", 2, &big).await.unwrap_err().to_string();
    assert!(err.contains("over the journal's limit"), "{err}");
    let entries = j.entries("r1").await.unwrap();
    assert_eq!(entries.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>(), [step, got]);
    assert!(entries[0].1 == rev);
    // Signals keep their order; the run's revision fences updates; finishing leaves the index.
    assert_eq!(j.signal("r1", "approve", b"a".to_vec(), 10).await.unwrap(), 1);
    assert_eq!(j.signal("r1", "other", Vec::new(), 11).await.unwrap(), 2);
    let names: Vec<_> = j.signals("r1").await.unwrap().into_iter().map(|s| (s.seq, s.name, s.payload)).collect();
    assert_eq!(names, [(1, "approve".into(), b"a".to_vec()), (2, "other".into(), Vec::new())]);
    assert_eq!(j.unfinished().await.unwrap(), ["r1"]);
    let (mut r, rev) = j.run("r1").await.unwrap().unwrap();
    r.status = RunStatus::Completed;
    r.output = Some(b"out".to_vec());
    j.update(&r, rev).await.unwrap();
    assert!(matches!(j.update(&r, rev).await, Err(JournalError::Conflict)));
    assert!(j.unfinished().await.unwrap().is_empty());
    assert_eq!(j.run("r1").await.unwrap().unwrap().0.output.as_deref(), Some(&b"out"[..]));
    // A finished run is in the finished index until it is deleted, with all it had.
    assert_eq!(j.finished().await.unwrap().iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>(), ["r1"]);
    j.delete_finished("r1").await.unwrap();
    assert!(j.run("r1").await.unwrap().is_none());
    assert!(j.entries("r1").await.unwrap().is_empty() && j.signals("r1").await.unwrap().is_empty());
    assert!(j.finished().await.unwrap().is_empty());
    assert_eq!(j.create(&run("r4", Some("k1"))).await.unwrap(), Created::New, "the key is free again");
    // Another app's journal is another bucket.
    let other = journal::Journal::new(kv, "other").unwrap();
    assert!(other.run("r1").await.unwrap().is_none());
}

async fn the_workflow_journal_survives_reopen(b: Backend) {
    {
        let j = journal::Journal::new(b.open().await, "shop").unwrap();
        j.create(&run("r9", None)).await.unwrap();
        let e = journal::Entry::new(journal::EntryKind::Now, "", 1).finish(journal::Outcome::Ok, b"42".to_vec(), 1);
        j.append("r9", 0, &e).await.unwrap();
    }
    let mut b = b;
    if let Backend::Nats(server) = &mut b {
        server.restart();
    }
    let j = journal::Journal::new(b.open().await, "shop").unwrap();
    assert_eq!(j.unfinished().await.unwrap(), ["r9"]);
    assert_eq!(j.entries("r9").await.unwrap()[0].0.payload, b"42");
    assert_eq!(j.run_ids().await.unwrap(), ["r9"]);
    let runs = j.runs_of(&["r9".to_string(), "rnone".to_string()]).await.unwrap();
    assert_eq!(runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["r9"]);
}

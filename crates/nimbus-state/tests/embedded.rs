//! What only the embedded store does: expired keys leave the file.
use std::time::Duration;

use nimbus_state::{Bucket, Embedded, KvError, KvStore};

#[tokio::test]
async fn expired_keys_are_deleted_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let kv = Embedded::open(&dir.path().join("state.redb")).unwrap();
    let b = Bucket::new("app", "sessions").unwrap();
    for k in ["a", "b", "c", "renewed"] {
        kv.set(&b, k, "x".into(), Some(Duration::from_millis(300))).await.unwrap();
    }
    kv.set(&b, "renewed", "kept".into(), None).await.unwrap(); // a later write without TTL wins
    kv.set(&b, "plain", "kept".into(), None).await.unwrap();
    assert_eq!(kv.delete_expired().await.unwrap(), 0, "nothing has expired yet");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(kv.delete_expired().await.unwrap(), 3);
    assert_eq!(kv.delete_expired().await.unwrap(), 0);
    assert_eq!(kv.list(&b, "", None, 10).await.unwrap().keys, ["plain", "renewed"]);
    assert_eq!(kv.get(&b, "renewed").await.unwrap().unwrap().value, "kept");
    // A deleted TTL key leaves no index entry behind.
    kv.set(&b, "gone", "x".into(), Some(Duration::from_millis(100))).await.unwrap();
    kv.delete(&b, "gone").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(kv.delete_expired().await.unwrap(), 0);
}

#[tokio::test]
async fn a_store_that_cannot_open_says_which_file_and_keeps_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let first = Embedded::open(&path).unwrap();
    let e = Embedded::open(&path).unwrap_err();
    assert!(matches!(e, KvError::InUse { .. }), "{e:?}");
    assert!(e.to_string().contains("in use by another nimbus process; stop it or use another data dir"), "{e}");
    drop(first);

    // A directory where the file should be: the message names the file, the OS error is the cause.
    let e = Embedded::open(dir.path()).unwrap_err();
    assert!(matches!(e, KvError::Open { .. }), "{e:?}");
    let cause = std::error::Error::source(&e).expect("the cause is kept");
    let report = nimbus_observe::report(&e);
    assert!(report.starts_with(&format!("cannot open the state store {}", dir.path().display())), "{report}");
    assert!(report.ends_with(&cause.to_string()), "{report}");
}

//! The embedded store opens a state file written before stored values had a format version
//! (`fixtures/kv-unversioned.redb`, written by the code of commit ec3baf1: `shop/carts` holding
//! `user:7` = "4 items" at revision 3, `user:8` with a TTL of a century at revision 2, and
//! `count` = 5 at revision 4), reads it as it was, and writes next to it.
use nimbus_state::{Bucket, Embedded, KvStore};

fn open_fixture() -> (tempfile::TempDir, Embedded) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kv-unversioned.redb"), &path).unwrap();
    let kv = Embedded::open(&path).unwrap();
    (dir, kv)
}

#[tokio::test]
async fn a_state_file_written_before_values_were_versioned_reads_as_it_was() {
    let (_dir, kv) = open_fixture();
    let carts = Bucket::new("shop", "carts").unwrap();
    let seven = kv.get(&carts, "user:7").await.unwrap().unwrap();
    assert_eq!((seven.value.as_ref(), seven.revision), (b"4 items".as_slice(), 3));
    let eight = kv.get(&carts, "user:8").await.unwrap().unwrap();
    assert_eq!((eight.value.as_ref(), eight.revision), (b"kept for a century".as_slice(), 2));
    assert_eq!(kv.get(&carts, "count").await.unwrap().unwrap().revision, 4);
    assert_eq!(kv.list(&carts, "user:", None, 10).await.unwrap().keys, ["user:7", "user:8"]);

    // Old and new values live side by side: an increment reads an old one and writes a new one.
    assert_eq!(kv.increment(&carts, "count", 1).await.unwrap(), 6);
    assert_eq!(kv.get(&carts, "count").await.unwrap().unwrap().revision, 5);
    kv.delete(&carts, "user:8").await.unwrap();
    assert!(kv.get(&carts, "user:8").await.unwrap().is_none());
    assert_eq!(kv.delete_expired().await.unwrap(), 0);
}

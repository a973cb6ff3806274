//! KV buckets end to end through `nimbus up`: a function using `wasi:keyvalue` over HTTP, the
//! `nimbus kv` CLI on the same buckets, and `kill -9` of the node.
mod common;

use std::time::Duration;

use common::{App, client, ok};

fn app() -> App {
    App::new(&format!(
        "[app]\nname = \"kvapp\"\n[component.store]\nsource = \"{}\"\ngrants = {{ kv = [\"carts\"] }}\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"store\"\n",
        nimbus_fixtures::KV
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_and_the_cli_share_buckets() {
    let home = tempfile::tempdir().unwrap();
    let app = app();
    let server = app.up(&[]);
    assert!(server.banner.contains("Local API: http://127.0.0.1:"), "{}", server.banner);
    let c = client();
    assert_eq!(c.put(server.url("/set/carts/u1")).body("3 items").send().await.unwrap().status(), 204);
    assert_eq!(ok(app.cli(home.path(), &["kv", "get", "carts", "u1"])), "3 items");
    assert!(
        ok(app.cli(home.path(), &["kv", "set", "carts", "u2", "from the cli"]))
            .starts_with("set u2 in carts (revision ")
    );
    assert_eq!(c.get(server.url("/get/carts/u2")).send().await.unwrap().text().await.unwrap(), "from the cli");
    // Keys with spaces, slashes and non-ASCII go through the URL exactly.
    ok(app.cli(home.path(), &["kv", "set", "carts", "a b/ç", "odd"]));
    assert_eq!(ok(app.cli(home.path(), &["kv", "get", "carts", "a b/ç"])), "odd");
    assert_eq!(ok(app.cli(home.path(), &["kv", "list", "carts"])), "a b/ç\nu1\nu2\n");
    assert_eq!(ok(app.cli(home.path(), &["kv", "list", "carts", "--prefix", "u"])), "u1\nu2\n");
    ok(app.cli(home.path(), &["kv", "delete", "carts", "u1"]));
    assert_eq!(c.get(server.url("/get/carts/u1")).send().await.unwrap().status(), 404);
    let missing = app.cli(home.path(), &["kv", "get", "carts", "u1"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no key \"u1\""),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    // A TTL'd key expires.
    ok(app.cli(home.path(), &["kv", "set", "carts", "temp", "x", "--ttl", "1s"]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.cli(home.path(), &["kv", "get", "carts", "temp"]).status.success() {
        assert!(std::time::Instant::now() < deadline, "the key did not expire");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The function may not open other buckets.
    let denied = c.get(server.url("/get/secrets/k")).send().await.unwrap();
    assert_eq!((denied.status().as_u16(), denied.text().await.unwrap()), (500, "access-denied".to_string()));
}

/// Increments acknowledged to clients survive `kill -9`; none is lost or applied twice.
#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_kill_9() {
    let app = app();
    let mut server = app.up(&[]);
    let c = client();
    let mut acked = 0u64;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (c, url) = (c.clone(), server.url("/incr/carts/counter?by=1"));
            tokio::spawn(async move {
                let mut n = 0u64;
                while let Ok(r) = c.post(&url).send().await {
                    if r.status() != 200 {
                        break;
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(10));
    for t in tasks {
        acked += t.await.unwrap();
    }
    assert!(acked > 50, "increments ran at speed before the kill ({acked})");
    let server = app.up(&[]);
    let stored: u64 =
        c.get(server.url("/get/carts/counter")).send().await.unwrap().text().await.unwrap().parse().unwrap();
    // Every acknowledged increment is there; at most the 8 in flight at the kill were applied
    // without their answer arriving.
    assert!(stored >= acked && stored <= acked + 8, "stored {stored}, acknowledged {acked}");
    eprintln!("kill -9 under 8 incrementing clients: {acked} acknowledged, {stored} stored, 0 lost");
}

/// `[[trigger.kv]]`: every change of a watched bucket reaches a component, one key's changes in
/// order.
#[tokio::test(flavor = "multi_thread")]
async fn kv_changes_reach_a_trigger() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.txt");
    let recorder = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/events/recorder.py");
    let app = App::new(&format!(
        "[app]\nname = \"kvapp\"\n[component.store]\nsource = \"{kv}\"\ngrants = {{ kv = [\"carts\", \"quiet\"] }}\n\
         [component.recorder]\ncommand = [\"python3\", \"{recorder}\"]\nenv = {{ RECORD_FILE = \"{record}\" }}\nreadiness = {{ path = \"/\" }}\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"store\"\n[[trigger.kv]]\nbucket = \"carts\"\ncomponent = \"recorder\"\n",
        kv = nimbus_fixtures::KV,
        record = record.display()
    ));
    // The recorder writes its record file on the host, which the service sandbox hides.
    let server = app.up(&["--unsandboxed-services"]);
    assert!(server.banner.contains("kv carts (changes)"), "{}", server.banner);
    let c = client();
    for value in ["1", "2", "3"] {
        assert_eq!(c.put(server.url("/set/carts/u1")).body(value).send().await.unwrap().status(), 204);
    }
    assert_eq!(c.put(server.url("/set/quiet/u1")).body("x").send().await.unwrap().status(), 204);
    assert_eq!(c.delete(server.url("/delete/carts/u1")).send().await.unwrap().status(), 204);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= 4 {
            break lines;
        }
        assert!(std::time::Instant::now() < deadline, "changes not delivered: {lines:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(300));
    let types: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        types,
        ["dev.nimbus.kv.set", "dev.nimbus.kv.set", "dev.nimbus.kv.set", "dev.nimbus.kv.delete"],
        "in order, the unwatched bucket silent: {lines:?}"
    );
    assert!(lines[0].split(' ').nth(1).unwrap().starts_with("carts/"), "{lines:?}");
}

/// `nimbus:keyvalue/cas` from a guest: create-if-absent, swap at a revision, conflicts naming the
/// current revision, and read-modify-write loops from 8 clients at once that lose no update.
#[tokio::test(flavor = "multi_thread")]
async fn guests_compare_and_swap_by_revision() {
    let app = app();
    let server = app.up(&[]);
    let c = client();
    let cas = async |key: &str, expect: &str, value: &str| -> String {
        let r = c.put(server.url(&format!("/cas/carts/{key}?expect={expect}"))).body(value.to_string()).send().await;
        let r = r.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };
    let written = cas("x", "none", "a").await;
    let first: u64 = written.strip_prefix("written ").unwrap().parse().unwrap();
    assert_eq!(cas("x", "none", "b").await, format!("conflict {first}"), "create-if-absent on a key with a value");
    let vget = c.get(server.url("/vget/carts/x")).send().await.unwrap().text().await.unwrap();
    assert_eq!(vget, format!("{first} a"));
    let second: u64 = cas("x", &first.to_string(), "b").await.strip_prefix("written ").unwrap().parse().unwrap();
    assert!(second > first);
    assert_eq!(cas("x", &first.to_string(), "c").await, format!("conflict {second}"), "a stale revision");
    assert_eq!(cas("absent", "7", "c").await, "conflict none");
    assert_eq!(c.get(server.url("/get/carts/x")).send().await.unwrap().text().await.unwrap(), "b");

    // Read, add one, swap; on a conflict read again. Without an atomic swap updates are lost.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (c, vget, base) = (c.clone(), server.url("/vget/carts/n"), server.url("/cas/carts/n"));
            tokio::spawn(async move {
                let mut conflicts = 0;
                for _ in 0..10 {
                    loop {
                        let r = c.get(&vget).send().await.unwrap();
                        let (expect, n) = if r.status() == 404 {
                            ("none".to_string(), 0)
                        } else {
                            let text = r.text().await.unwrap();
                            let (rev, n) = text.split_once(' ').unwrap();
                            (rev.to_string(), n.parse::<u64>().unwrap())
                        };
                        let url = format!("{base}?expect={expect}");
                        let out = c.put(url).body((n + 1).to_string()).send().await.unwrap().text().await.unwrap();
                        if out.starts_with("written ") {
                            break;
                        }
                        assert!(out.starts_with("conflict "), "{out}");
                        conflicts += 1;
                    }
                }
                conflicts
            })
        })
        .collect();
    let mut conflicts = 0;
    for t in clients {
        conflicts += t.await.unwrap();
    }
    let n = c.get(server.url("/get/carts/n")).send().await.unwrap().text().await.unwrap();
    assert_eq!(n, "80", "8 clients × 10 swaps, none lost ({conflicts} conflicts retried)");
}

/// The KV API's conditional requests: `ETag` = revision, `If-Match` / `If-None-Match: *` as
/// compare-and-swap with 412 and the current `ETag`, 304 on an unchanged read, and clear 400s.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_swaps_with_if_match_and_answers_412_with_the_current_etag() {
    let app = app();
    let _server = app.up(&[]);
    let (api, token) = app.local_api();
    let c = client();
    let key = format!("{api}/v1/apps/kvapp/kv/carts/keys/order%2F1");
    let put = |headers: &[(&str, &str)], body: &str| {
        let mut r =
            c.put(&key).bearer_auth(&token).header("content-type", "application/octet-stream").body(body.to_string());
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send()
    };
    let etag = |r: &reqwest::Response| r.headers().get("etag").map(|v| v.to_str().unwrap().to_string());

    let r = put(&[("if-match", "*")], "v0").await.unwrap();
    assert_eq!(r.status(), 412, "If-Match: * needs a value");
    assert_eq!(etag(&r), None);
    let r = put(&[("if-none-match", "*")], "v1").await.unwrap();
    assert_eq!(r.status(), 200);
    let v1 = etag(&r).unwrap();
    let r = put(&[("if-none-match", "*")], "v1 again").await.unwrap();
    assert_eq!(r.status(), 412, "If-None-Match: * on a key with a value");
    assert_eq!(etag(&r).as_deref(), Some(v1.as_str()), "412 names the current revision");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "precondition_failed");
    assert!(body["hint"].as_str().unwrap().contains("If-Match"), "{body}");

    let r = c.get(&key).bearer_auth(&token).send().await.unwrap();
    assert_eq!(etag(&r).as_deref(), Some(v1.as_str()), "a read's ETag is the revision written");
    let r = put(&[("if-match", &v1)], "v2").await.unwrap();
    assert_eq!(r.status(), 200);
    let v2 = etag(&r).unwrap();
    assert_ne!(v1, v2);
    let r = put(&[("if-match", &v1)], "lost update").await.unwrap();
    assert_eq!(r.status(), 412, "a stale revision");
    assert_eq!(etag(&r).as_deref(), Some(v2.as_str()));
    let r = put(&[("if-match", "*")], "v3").await.unwrap();
    assert_eq!(r.status(), 200);
    let v3 = etag(&r).unwrap();
    let r = c.get(&key).bearer_auth(&token).header("if-none-match", &v3).send().await.unwrap();
    assert_eq!(r.status(), 304, "unchanged since v3");
    let r = c.get(&key).bearer_auth(&token).header("if-none-match", &v2).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "v3", "only the lost update was refused");

    for (headers, why) in [
        (&[("if-match", "\"abc\"")][..], "not a revision"),
        (&[("if-match", "\"1\", \"2\"")][..], "one revision only"),
        (&[("if-match", "\"1\""), ("if-none-match", "*")][..], "both"),
        (&[("if-none-match", "\"1\"")][..], "If-None-Match on a write takes only *"),
    ] {
        let r = put(headers, "x").await.unwrap();
        assert_eq!(r.status(), 400, "{why}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "bad_request", "{why}: {body}");
    }
    let r = c
        .put(format!("{key}?ttl_s=5"))
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .header("if-match", &v3)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a conditional write cannot set a TTL");
    let r = c.delete(&key).bearer_auth(&token).header("if-match", &v2).send().await.unwrap();
    assert_eq!(r.status(), 412, "a stale revision deletes nothing");
    assert_eq!(etag(&r).as_deref(), Some(v3.as_str()));
    let r = c.get(&key).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "v3", "nothing the refused requests did");
    let r = c.delete(&key).bearer_auth(&token).header("if-match", &v3).send().await.unwrap();
    assert_eq!(r.status(), 204, "compare-and-delete at the current revision");
    let r = c.delete(&key).bearer_auth(&token).header("if-match", "*").send().await.unwrap();
    assert_eq!(r.status(), 412, "If-Match: * on a key without a value");
    assert_eq!(etag(&r), None);
    assert_eq!(c.get(&key).bearer_auth(&token).send().await.unwrap().status(), 404);
}

/// The change feed is part of the write: `kill -9` after the first of 2,000 changes written in
/// one batch was published, and every change still reaches the trigger after the restart.
#[tokio::test(flavor = "multi_thread")]
async fn kv_changes_survive_kill_9_between_write_and_publish() {
    const N: u64 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.txt");
    let recorder = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/events/recorder.py");
    let app = App::new(&format!(
        "[app]\nname = \"kvapp\"\n[component.store]\nsource = \"{kv}\"\ngrants = {{ kv = [\"carts\"] }}\n\
         [component.recorder]\ncommand = [\"python3\", \"{recorder}\"]\nenv = {{ RECORD_FILE = \"{record}\" }}\nreadiness = {{ path = \"/\" }}\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"store\"\n[[trigger.kv]]\nbucket = \"carts\"\ncomponent = \"recorder\"\nconcurrency = 16\n",
        kv = nimbus_fixtures::KV,
        record = record.display()
    ));
    let recorded = || -> std::collections::BTreeSet<String> {
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        text.lines().filter_map(|l| l.split(' ').nth(1)).map(str::to_string).collect()
    };
    let mut server = app.up(&["--unsandboxed-services"]);
    let fill = tokio::spawn(client().post(server.url(&format!("/fill/carts?n={N}"))).send());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while recorded().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no change was delivered");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(10));
    let _ = fill.await;
    let before = recorded().len() as u64;
    assert!(before < N, "the kill came after every change was published ({before}): nothing was tested");

    let _server = app.up(&["--unsandboxed-services"]);
    let all: std::collections::BTreeSet<String> = (1..=N).map(|r| format!("carts/{r}")).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let seen = recorded();
        if seen.is_superset(&all) {
            assert_eq!(
                seen.len() as u64,
                N,
                "only the batch's changes: {:?}",
                seen.difference(&all).collect::<Vec<_>>()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {N} changes delivered after the restart; missing e.g. {:?}",
            seen.len(),
            all.difference(&seen).take(5).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("kill -9 with {before} of {N} changes delivered: all {N} delivered after the restart");
}

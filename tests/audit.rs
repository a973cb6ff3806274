//! The audit trail of `nimbus server`, through the API and the CLI: every change and every
//! refusal is recorded before the answer (with who, what, the request and why a refusal), the
//! trail survives `kill -9`, only admins read it, `nimbus audit verify --dir` names an edited,
//! deleted, reordered or truncated record in a copy of it, and a trail that cannot be written
//! refuses changes (503) while reads go on.
mod common;

use std::path::Path;

use common::client;
use common::platform::{Platform, hello_bundle};
use serde_json::{Value, json};

/// The events of the trail, as `nimbus audit list -o json` prints them.
fn events(p: &Platform) -> Vec<Value> {
    let out = p.admin_cli(&["audit", "list", "-o", "json"]);
    let entries: Vec<Value> = serde_json::from_str(&out).unwrap();
    entries.into_iter().map(|e| e["record"].clone()).filter(|r| r["kind"] == "event").collect()
}

fn verify_copy(p: &Platform, copy: &Path) -> (bool, String) {
    let out = p.cli(None, &["audit", "verify", "--dir", copy.to_str().unwrap()]);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// A copy of the server's audit directory with its log's lines changed by `change`.
fn tampered(p: &Platform, into: &Path, name: &str, change: impl FnOnce(&mut Vec<String>)) -> std::path::PathBuf {
    let copy = into.join(name);
    std::fs::create_dir_all(&copy).unwrap();
    for file in ["log", "head", "node.key"] {
        std::fs::copy(p.data.join("audit").join(file), copy.join(file)).unwrap();
    }
    let text = std::fs::read_to_string(copy.join("log")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    change(&mut lines);
    std::fs::write(copy.join("log"), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    copy
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_and_refusals_are_chained_survive_kill_9_and_tampering_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Platform::start(dir.path(), &[]);
    let admin = p.admin.clone().unwrap();
    let (s, body) = p.deploy(&admin, hello_bundle("shop", "/shop/...", "1")).await;
    assert_eq!(s, 201, "{body}");
    let viewer = p.admin_cli(&["tokens", "create", "--name", "auditor", "--role", "viewer"]);
    let viewer = viewer.lines().find(|l| l.trim().starts_with("nbt_")).unwrap().trim().to_string();
    let (s, _) = p.deploy(&viewer, hello_bundle("shop", "/shop/...", "2")).await;
    assert_eq!(s, 403);
    // Reads are not recorded; a viewer may not read the trail (and that refusal is recorded).
    let resp = client().get(p.api_url("/v1/audit")).bearer_auth(&viewer).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    // Another node's trail: a single server has only its own, and a name is checked first.
    for (query, expected) in [("node=node-b", "not a cluster node"), ("node=..%2Fx", "not a node name")] {
        let resp = client().get(p.api_url(&format!("/v1/audit?{query}"))).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(resp.status(), 400);
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains(expected), "{body}");
    }

    let events = events(&p);
    let summary: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().into(),
                e["resource"].as_str().unwrap().into(),
                e["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        ("deploy", "app:shop", "allowed"),
        ("tokens", "server", "allowed"),
        ("deploy", "server", "denied"),
        ("audit", "server", "denied"),
    ];
    assert_eq!(summary, expected.map(|(a, r, o)| (a.to_string(), r.to_string(), o.to_string())), "{events:#?}");
    assert_eq!(events[0]["request"], "POST /v1/deployments");
    assert_eq!(events[0]["principal"], "000000000000");
    assert_eq!(events[0]["client"], "127.0.0.1");
    let viewer_id = viewer.split('_').nth(1).unwrap();
    assert_eq!(events[2]["principal"], viewer_id);
    assert!(events[2]["reason"].as_str().unwrap().contains("scope `deploy`"), "{:?}", events[2]);

    // The SIEM export: one JSON object per line, each with the hash the next record carries.
    let jsonl = client().get(p.api_url("/v1/audit?format=jsonl")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(jsonl.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = jsonl.text().await.unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[1]["record"]["prev"], lines[0]["hash"]);

    // kill -9: every acknowledged record is there, and the chain goes on after a restart.
    p.kill9();
    let mut p = Platform::start(dir.path(), &[]);
    p.admin = Some(admin.clone());
    let resp = client().delete(p.api_url("/v1/apps/shop")).bearer_auth(&admin).send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let after = self::events(&p);
    assert_eq!(after.len(), 5);
    assert_eq!((after[4]["action"].as_str(), after[4]["seq"].as_u64()), (Some("delete"), Some(5)));
    let verified = p.admin_cli(&["audit", "verify"]);
    assert!(verified.contains("is intact: 5 records"), "{verified}");

    // Tampering with a copy, each way, is named.
    let (ok, out) = verify_copy(&p, &p.data.join("audit"));
    assert!(ok, "{out}");
    let edited = tampered(&p, dir.path(), "edited", |l| l[1] = l[1].replace("\"tokens\"", "\"read\""));
    let (ok, out) = verify_copy(&p, &edited);
    assert!(!ok && out.contains("record 2 (line 2) was edited"), "{out}");
    let deleted = tampered(&p, dir.path(), "deleted", |l| drop(l.remove(2)));
    let (ok, out) = verify_copy(&p, &deleted);
    assert!(!ok && out.contains("record 3 was deleted"), "{out}");
    let reordered = tampered(&p, dir.path(), "reordered", |l| l.swap(0, 1));
    let (ok, out) = verify_copy(&p, &reordered);
    assert!(!ok && out.contains("record 1 is out of order"), "{out}");
    let truncated = tampered(&p, dir.path(), "truncated", |l| l.truncate(3));
    let (ok, out) = verify_copy(&p, &truncated);
    assert!(!ok && out.contains("it ends at record 3, records up to 5 were written"), "{out}");
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn a_trail_that_cannot_be_written_refuses_changes_and_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    std::fs::create_dir_all(&audit).unwrap();
    // Every write to it fails: a full disk.
    std::os::unix::fs::symlink("/dev/full", audit.join("log")).unwrap();
    let p = Platform::start(dir.path(), &[]);
    let admin = p.admin.clone().unwrap();
    let (s, body) = p.deploy(&admin, hello_bundle("shop", "/shop/...", "1")).await;
    assert_eq!(s, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("audit log"), "{body}");
    let resp = client()
        .post(p.api_url("/v1/tokens"))
        .bearer_auth(&admin)
        .json(&json!({ "name": "x", "role": "viewer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let resp = client().get(p.api_url("/v1/apps")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!([]));
}

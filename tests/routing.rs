//! Who gets a request on a shared `nimbus server`: host and route ownership between apps (a
//! deploy never takes another app's requests unless an admin says so), requests refused before
//! routing (bad `Host`, dot segments), and revision retention. Real server, real tokens, real
//! HTTP over loopback (raw TCP where a client library would not send the request).
mod common;

use std::time::Duration;

use common::platform::{Platform, hello_bundle};
use serde_json::Value;

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

async fn upload(p: &Platform, token: &str, bundle: Vec<u8>, query: &str) -> (u16, Value) {
    let resp = client()
        .post(p.api_url(&format!("/v1/deployments?{query}")))
        .bearer_auth(token)
        .body(bundle)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn get_api(p: &Platform, token: &str, path: &str) -> Value {
    let resp = client().get(p.api_url(path)).bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

/// The revision that served `path` with this `Host` (empty when none did) and the status.
async fn served_by(p: &Platform, host: &str, path: &str) -> (u16, String) {
    let resp = client().get(p.url(path)).header("host", host).send().await.unwrap();
    let rev = resp.headers().get("x-nimbus-revision").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (resp.status().as_u16(), rev)
}

fn rev(deployed: &Value) -> String {
    deployed["revision"].as_str().unwrap_or_else(|| panic!("not deployed: {deployed}")).to_string()
}

/// Asserts a 409 whose error contains `needle`.
fn refused((status, body): (u16, Value), needle: &str) {
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains(needle) && error.contains("nothing was deployed"), "{needle} not in {body}");
}

/// Each precedence and ownership rule of the README ("Run a server and deploy to it"), attacked
/// with a deployer token scoped to app `a`.
#[tokio::test(flavor = "multi_thread")]
async fn a_deployer_cannot_take_requests_another_app_serves() {
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &[]);
    let admin = p.admin.clone().unwrap();
    let out =
        p.admin_cli(&["tokens", "create", "--name", "a-ci", "--role", "deployer", "--app", "a", "--output", "json"]);
    let deployer = serde_json::from_str::<Value>(&out).unwrap()["token"].as_str().unwrap().to_string();
    let shop = rev(&upload(&p, &admin, hello_bundle("shop", "/...", "1"), "hosts=shop.test,www.shop.test").await.1);
    let b = rev(&upload(&p, &admin, hello_bundle("b", "/b/...", "1"), "").await.1);
    let a = |route: &str, marker: &str| hello_bundle("a", route, marker);

    // A route inside another app's wildcard, exact or wildcard, on every host: refused.
    refused(upload(&p, &deployer, a("/b/secret", "1"), "").await, "would take requests app `b` serves");
    refused(upload(&p, &deployer, a("/b/x/...", "1"), "").await, "app `b`");
    // The same route on every host: refused.
    refused(
        upload(&p, &deployer, a("/b/...", "1"), "").await,
        "route `/b/...` on every host is already served by app `b`",
    );
    // Hosts whose requests an app on every host serves: refused.
    refused(upload(&p, &deployer, a("/...", "1"), "hosts=127.0.0.1,localhost").await, "app `b`");
    // Another app's host, or a TAG.HOST name of it: refused.
    refused(upload(&p, &deployer, a("/x", "1"), "hosts=shop.test").await, "host `shop.test` belongs to app `shop`");
    refused(
        upload(&p, &deployer, a("/...", "1"), "hosts=canary.shop.test").await,
        "app `shop` serves (`canary.shop.test`",
    );
    // Only an admin over every app may take over.
    let (s, e) = upload(&p, &deployer, a("/b/secret", "1"), "take_over=true").await;
    assert_eq!(s, 403, "{e}");
    // None of that was stored or changed who serves what.
    assert_eq!(get_api(&p, &admin, "/v1/apps").await.as_array().unwrap().len(), 2);
    assert_eq!(served_by(&p, "127.0.0.1", "/b/secret").await, (200, b.clone()));
    assert_eq!(served_by(&p, "canary.shop.test", "/").await.0, 404, "shop has no tag canary");

    // Requests nobody serves are free: a path of its own, then the catch-all beside b's routes.
    let a1 = rev(&upload(&p, &deployer, a("/a/...", "1"), "").await.1);
    assert_eq!(served_by(&p, "x.test", "/a/1").await, (200, a1));
    let a2 = rev(&upload(&p, &deployer, a("/...", "2"), "").await.1);
    assert_eq!(served_by(&p, "x.test", "/anything").await, (200, a2.clone()));
    assert_eq!(served_by(&p, "x.test", "/b/secret").await, (200, b.clone()), "b keeps its requests");
    assert_eq!(served_by(&p, "shop.test", "/b/secret").await, (200, shop.clone()), "shop keeps its host");
    // Now a serves every other path: b's redeploy may not add one of them.
    refused(upload(&p, &admin, hello_bundle("b", "/c/...", "2"), "").await, "would take requests app `a` serves");
    let b2 = upload(&p, &admin, hello_bundle("b", "/b/more", "2"), "").await;
    assert_eq!(b2.0, 201, "its own requests are b's: {}", b2.1);
    let b2 = rev(&b2.1);

    // An admin takes over: requests move, and so do the hosts named (never all of an app's).
    let taken = upload(&p, &admin, a("/...", "3"), "hosts=shop.test&take_over=true").await;
    assert_eq!(taken.0, 201, "{}", taken.1);
    let a3 = rev(&taken.1);
    assert_eq!(served_by(&p, "shop.test", "/b/secret").await, (200, a3.clone()));
    assert_eq!(served_by(&p, "canary.shop.test", "/").await.0, 404, "a has no tag canary either");
    assert_eq!(served_by(&p, "www.shop.test", "/").await, (200, shop));
    assert_eq!(get_api(&p, &admin, "/v1/apps/shop").await["hosts"], serde_json::json!(["www.shop.test"]));
    refused(
        upload(&p, &admin, a("/...", "4"), "hosts=shop.test,www.shop.test&take_over=true").await,
        "would leave app `shop` with no host",
    );
    assert_eq!(served_by(&p, "x.test", "/b/more").await, (200, b2), "b keeps every other host");
    assert_eq!(served_by(&p, "shop.test", "/b/more").await, (200, a3));
}

/// Bytes of a raw HTTP/1.1 request with `head` lines, answered and closed; the status code.
async fn raw_status(p: &Platform, request_line: &str, head: &[&[u8]]) -> (u16, String) {
    let mut bytes = format!("{request_line}\r\n").into_bytes();
    for line in head {
        bytes.extend_from_slice(line);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"connection: close\r\n\r\n");
    let answer = common::send_raw(&p.gateway, &bytes).await;
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_hosts_and_dot_segments_are_refused_before_routing() {
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &[]);
    let admin = p.admin.clone().unwrap();
    let a = rev(&upload(&p, &admin, hello_bundle("a", "/a/...", "1"), "").await.1);
    upload(&p, &admin, hello_bundle("b", "/b/...", "1"), "").await;

    let (s, answer) = raw_status(&p, "GET /a/x HTTP/1.1", &[b"host: 127.0.0.1"]).await;
    assert_eq!(s, 200, "{answer}");
    assert!(answer.contains(&a));
    for (what, head) in [
        ("a non-UTF-8 Host", vec![&b"host: sh\xffop.test"[..]]),
        ("a Host with a space", vec![&b"host: a b"[..]]),
        ("two Host headers", vec![&b"host: 127.0.0.1"[..], b"host: other.test"]),
    ] {
        let (s, answer) = raw_status(&p, "GET /a/x HTTP/1.1", &head).await;
        assert_eq!(s, 400, "{what}: {answer}");
        assert!(!answer.to_ascii_lowercase().contains("retry-after"), "{what}: {answer}");
    }
    for path in ["/b/../a/x", "/b/%2e%2e/a/x", "/b/%2E./a/x", "/b/./x", "/a/x/.."] {
        let (s, answer) = raw_status(&p, &format!("GET {path} HTTP/1.1"), &[b"host: 127.0.0.1"]).await;
        assert_eq!(s, 400, "{path}: {answer}");
        assert!(answer.contains("`.` or `..` segment"), "{path}: {answer}");
    }
    // Dots inside a segment are just characters.
    let (s, answer) = raw_status(&p, "GET /a/x.txt/...y HTTP/1.1", &[b"host: 127.0.0.1"]).await;
    assert_eq!(s, 200, "{answer}");
}

/// A service that never starts: the deploy's error says why without the server's data path.
#[tokio::test(flavor = "multi_thread")]
async fn deploy_errors_do_not_show_the_servers_data_path() {
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &[]);
    let admin = p.admin.clone().unwrap();
    let manifest = "[app]\nname = \"svc\"\n\n[component.api]\ncommand = [\"./missing-binary\"]\nreadiness = { start_timeout_s = 5 }\n\n[[trigger.http]]\nroute = \"/svc/...\"\ncomponent = \"api\"\n";
    let mut tree = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    h.set_mode(0o644);
    tree.append_data(&mut h, "README", &b"hi\n"[..]).unwrap();
    let bundle = nimbus_control::Bundle {
        manifest: manifest.into(),
        trees: [("api".to_string(), tree.into_inner().unwrap())].into(),
        ..Default::default()
    }
    .pack();
    let (s, e) = upload(&p, &admin, bundle, "").await;
    assert_eq!(s, 422, "{e}");
    let text = e.to_string();
    assert!(text.contains("missing-binary"), "{text}");
    let dir = data.path().canonicalize().unwrap();
    for shown in [data.path().to_str().unwrap(), dir.to_str().unwrap(), "/services/"] {
        assert!(!text.contains(shown), "`{shown}` in {text}");
    }
}

/// `--keep-revisions 2`: revisions with traffic or a tag always stay, the newest two others
/// stay, older ones go; only revisions with traffic or a tag are loaded, and one is loaded again
/// when traffic moves to it.
#[tokio::test(flavor = "multi_thread")]
async fn old_revisions_are_pruned_and_inactive_ones_are_not_loaded() {
    let data = tempfile::tempdir().unwrap();
    let mut p = Platform::start(data.path(), &["--keep-revisions", "2"]);
    let admin = p.admin.clone().unwrap();
    let live = rev(&upload(&p, &admin, hello_bundle("many", "/many/...", "live"), "").await.1);
    let tagged =
        rev(&upload(&p, &admin, hello_bundle("many", "/many/...", "tagged"), "promote=false&tag=canary").await.1);
    let mut others = Vec::new();
    for i in 0..8 {
        let bundle = hello_bundle("many", "/many/...", &format!("m{i}"));
        others.push(rev(&upload(&p, &admin, bundle, "promote=false").await.1));
    }
    let listed = |revs: &Value| -> Vec<(String, bool)> {
        let mut l: Vec<(String, bool)> = revs
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["id"].as_str().unwrap().to_string(), r["loaded"].as_bool().unwrap()))
            .collect();
        l.sort();
        l
    };
    let expect = |loaded: &[&String], unloaded: &[&String]| {
        let mut e: Vec<(String, bool)> = loaded
            .iter()
            .map(|r| (r.to_string(), true))
            .chain(unloaded.iter().map(|r| (r.to_string(), false)))
            .collect();
        e.sort();
        e
    };
    let revs = get_api(&p, &admin, "/v1/apps/many/revisions").await;
    assert_eq!(listed(&revs), expect(&[&live, &tagged], &[&others[6], &others[7]]), "{revs}");
    assert_eq!(get_api(&p, &admin, "/v1/apps/many").await["revisions"], 4);
    assert_eq!(served_by(&p, "x.test", "/many/x").await, (200, live.clone()));
    let resp = client().get(p.url("/many/x")).header("x-nimbus-tag", "canary").send().await.unwrap();
    assert_eq!(resp.headers()["x-nimbus-revision"], tagged.as_str());

    // Traffic moves to an unloaded revision: it is loaded and serves; the old one is unloaded.
    p.admin_cli(&["traffic", "many", &format!("{}=100", others[6])]);
    assert_eq!(served_by(&p, "x.test", "/many/x").await, (200, others[6].clone()));
    let revs = get_api(&p, &admin, "/v1/apps/many/revisions").await;
    assert_eq!(listed(&revs), expect(&[&others[6], &tagged], &[&live, &others[7]]), "{revs}");

    // After a restart the same revisions are there, loaded the same way.
    p.kill9();
    let p = Platform::start(data.path(), &["--keep-revisions", "1"]);
    let revs = get_api(&p, &admin, "/v1/apps/many/revisions").await;
    assert_eq!(listed(&revs), expect(&[&others[6], &tagged], &[&others[7]]), "a lower limit prunes at start: {revs}");
    assert_eq!(served_by(&p, "x.test", "/many/x").await, (200, others[6].clone()));
}

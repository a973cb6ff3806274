//! `nimbus server` end to end: deploys, revisions, traffic, rollback, tokens and the bad inputs
//! of each, through the real binary, the CLI and the control API over loopback.
mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::platform::{Platform, hello_app, hello_bundle, hello_manifest};
use serde_json::Value;

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

async fn api(
    p: &Platform,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client().request(method, p.api_url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
}

async fn upload(p: &Platform, token: Option<&str>, bundle: Vec<u8>, query: &str) -> (u16, Value) {
    let mut req = client().post(p.api_url(&format!("/v1/deployments?{query}"))).body(bundle);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Which revision served `path` (with extra headers).
async fn served_by(p: &Platform, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = client().get(p.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let rev = resp.headers().get("x-nimbus-revision").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (resp.status().as_u16(), rev)
}

fn json_out(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_serves_the_first_revision_and_redeploy_is_idempotent() {
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &[]);
    let admin = p.admin.clone().expect("the first start prints an admin token");
    assert!(admin.starts_with("nbt_"));
    let app = hello_app("shop", "/shop/...", "v1");

    let out = p.admin_cli(&["deploy", app.path().to_str().unwrap(), "--output", "json"]);
    let first = json_out(&out);
    assert_eq!(first["created"], true);
    let rev = first["revision"].as_str().unwrap().to_string();
    assert_eq!(first["traffic"]["targets"][0], serde_json::json!({"revision": rev, "percent": 100}));

    let resp = client().get(p.url("/shop/cart")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-nimbus-revision"], rev.as_str());
    assert!(resp.headers().contains_key("x-request-id"));
    assert_eq!(resp.text().await.unwrap(), "Hello from Nimbus!\n");
    assert_eq!(served_by(&p, "/elsewhere", &[]).await.0, 404);

    // Same content again: same revision, nothing new.
    let again = json_out(&p.admin_cli(&["deploy", app.path().to_str().unwrap(), "--output", "json"]));
    assert_eq!(again["created"], false);
    assert_eq!(again["revision"], rev.as_str());
    let text = p.admin_cli(&["deploy", app.path().to_str().unwrap()]);
    assert!(text.contains(&format!("unchanged: identical content is revision {rev}")), "{text}");
    let revisions = json_out(&p.admin_cli(&["revisions", "list", "shop", "--output", "json"]));
    assert_eq!(revisions.as_array().unwrap().len(), 1);
    assert_eq!(revisions[0]["percent"], 100);
    assert_eq!(revisions[0]["version"], "v1");
    assert_eq!(revisions[0]["routes"][0], "/shop/...");

    let shown = p.admin_cli(&["revisions", "show", "shop", &rev]);
    assert!(shown.contains("MARKER = \"v1\"") && shown.contains("sha256:"), "{shown}");
    let apps = p.admin_cli(&["apps", "list"]);
    assert!(apps.lines().any(|l| l.starts_with("shop") && l.contains(&format!("{rev}=100%"))), "{apps}");

    // The OpenAPI document is public and is the one checked into the repository.
    let (status, doc) = api(&p, reqwest::Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let checked_in: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/nimbus-v1.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(doc, checked_in);
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_have_roles_and_app_scopes() {
    let data = tempfile::tempdir().unwrap();
    let mut p = Platform::start(data.path(), &[]);
    let admin = p.admin.clone().unwrap();
    let get = reqwest::Method::GET;

    // No token, a malformed header, an unknown token: 401 with JSON saying what is missing.
    let resp = client().get(p.api_url("/v1/apps")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("needs an API token"), "{body}");
    assert!(body["hint"].as_str().unwrap().contains("Authorization: Bearer"));
    let resp = client().get(p.api_url("/v1/apps")).header("authorization", "Basic abc").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let fake = format!("{}0", &admin[..admin.len() - 1]);
    let fake = if fake == admin { format!("{}1", &admin[..admin.len() - 1]) } else { fake };
    assert_eq!(api(&p, get.clone(), "/v1/apps", Some(&fake), None).await.0, 401);
    assert_eq!(upload(&p, None, hello_bundle("a", "/a/...", "1"), "").await.0, 401);

    let new = |name: &str, role: &str, apps: &[&str]| serde_json::json!({"name": name, "role": role, "apps": apps});
    let (s, viewer) =
        api(&p, reqwest::Method::POST, "/v1/tokens", Some(&admin), Some(new("look", "viewer", &["a"]))).await;
    assert_eq!(s, 201, "{viewer}");
    let viewer = viewer["token"].as_str().unwrap().to_string();
    let out =
        p.admin_cli(&["tokens", "create", "--name", "ci", "--role", "deployer", "--app", "a", "--output", "json"]);
    let deployer = json_out(&out)["token"].as_str().unwrap().to_string();
    let deployer_id = json_out(&out)["info"]["id"].as_str().unwrap().to_string();
    let (s, e) = api(&p, reqwest::Method::POST, "/v1/tokens", Some(&admin), Some(new("x", "root", &[]))).await;
    assert_eq!(s, 400, "{e}");

    // Deployer: its own app only; no tokens.
    assert_eq!(upload(&p, Some(&deployer), hello_bundle("a", "/a/...", "1"), "").await.0, 201);
    let (s, e) = upload(&p, Some(&deployer), hello_bundle("b", "/b/...", "1"), "").await;
    assert_eq!(s, 403);
    assert!(e["error"].as_str().unwrap().contains("limited to apps [a]"), "{e}");
    let (s, e) = api(&p, get.clone(), "/v1/tokens", Some(&deployer), None).await;
    assert_eq!(s, 403);
    assert!(e["error"].as_str().unwrap().contains("needs scope `admin`"), "{e}");
    assert_eq!(upload(&p, Some(&admin), hello_bundle("b", "/b/...", "1"), "").await.0, 201);

    // Viewer: reads its app, sees only it, changes nothing.
    let (s, apps) = api(&p, get.clone(), "/v1/apps", Some(&viewer), None).await;
    assert_eq!(s, 200);
    assert_eq!(apps.as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect::<Vec<_>>(), ["a"]);
    assert_eq!(api(&p, get.clone(), "/v1/apps/b", Some(&viewer), None).await.0, 403);
    let (s, e) = upload(&p, Some(&viewer), hello_bundle("a", "/a/...", "2"), "").await;
    assert_eq!(s, 403);
    assert!(e["error"].as_str().unwrap().contains("needs scope `deploy`"), "{e}");
    let (_, who) = api(&p, get.clone(), "/v1/whoami", Some(&viewer), None).await;
    assert_eq!(who["token"]["role"], "viewer");

    // Revocation is immediate.
    p.admin_cli(&["tokens", "revoke", &deployer_id]);
    assert_eq!(upload(&p, Some(&deployer), hello_bundle("a", "/a/...", "3"), "").await.0, 401);
    let listed = p.admin_cli(&["tokens", "list"]);
    assert!(listed.contains("look") && !listed.contains(&deployer_id), "{listed}");

    // Only hashes are stored; a restart does not print a new admin token.
    p.kill9();
    let db = std::fs::read(data.path().join("control.redb")).unwrap();
    let secret = admin.rsplit('_').next().unwrap();
    assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()), "a token secret is stored in clear");
    let p = Platform::start(data.path(), &[]);
    assert!(p.admin.is_none(), "{}", p.banner);
    assert_eq!(api(&p, get, "/v1/apps", Some(&admin), None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_mode_is_unauthenticated_on_loopback_only() {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::NIMBUS)
        .args(["server", "--dev", "--api-listen", "0.0.0.0:0", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only runs on loopback"), "{err}");
    assert!(!data.path().join("control.redb").exists(), "nothing was created");
    let p = Platform::start(data.path(), &["--dev"]);
    assert!(p.banner.contains("WARNING: --dev"), "{}", p.banner);
    let out = p.cli(None, &["deploy", hello_app("dev", "/dev/...", "1").path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(served_by(&p, "/dev/x", &[]).await.0, 200);
    // A wrong token is still refused in dev mode.
    assert_eq!(api(&p, reqwest::Method::GET, "/v1/apps", Some("nbt_0_0"), None).await.0, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn traffic_splits_by_percent_and_tag_and_rolls_back() {
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &[]);
    let admin = p.admin.clone().unwrap();
    let deploy = |marker: &str, extra: &[&str]| {
        let app = hello_app("shop", "/...", marker);
        let mut args = vec!["deploy", app.path().to_str().unwrap(), "--output", "json", "--host", "shop.test"];
        args.extend_from_slice(extra);
        json_out(&p.admin_cli(&args))["revision"].as_str().unwrap().to_string()
    };
    let a = deploy("a", &[]);
    let b = deploy("b", &["--no-promote"]);
    let host = [("host", "shop.test")];
    assert_eq!(served_by(&p, "/", &host).await, (200, a.clone()), "--no-promote keeps traffic");

    p.admin_cli(&["traffic", "shop", &format!("{a}=90"), &format!("{b}=10")]);
    let mut counts: HashMap<String, usize> = HashMap::new();
    let total = 10_000;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let url = p.url("/");
        tasks.spawn(async move {
            let c = client();
            let mut seen = Vec::new();
            for _ in 0..total / 16 {
                let resp = c.get(&url).header("host", "shop.test").send().await.unwrap();
                assert_eq!(resp.status(), 200);
                seen.push(resp.headers()["x-nimbus-revision"].to_str().unwrap().to_string());
            }
            seen
        });
    }
    while let Some(seen) = tasks.join_next().await {
        for rev in seen.unwrap() {
            *counts.entry(rev).or_default() += 1;
        }
    }
    let share_b = counts[&b] as f64 * 100.0 / total as f64;
    assert!((8.0..=12.0).contains(&share_b), "10% expected, got {share_b:.2}% ({counts:?})");
    assert_eq!(counts[&a] + counts[&b], total);

    // A tag reaches its revision whatever its percent: by header, or by host TAG.HOST.
    let c = deploy("c", &["--no-promote", "--tag", "canary"]);
    for _ in 0..20 {
        assert_eq!(served_by(&p, "/", &[("host", "shop.test"), ("x-nimbus-tag", "canary")]).await, (200, c.clone()));
        assert_eq!(served_by(&p, "/", &[("host", "canary.shop.test")]).await, (200, c.clone()));
    }
    assert_eq!(served_by(&p, "/", &[("host", "shop.test"), ("x-nimbus-tag", "nope")]).await.0, 404);
    assert_eq!(served_by(&p, "/", &[("host", "other.test")]).await.0, 404, "the app is bound to shop.test");

    // Rollback undoes the last change; --to sends everything to one revision.
    p.admin_cli(&["traffic", "shop", &format!("{c}=100")]);
    assert_eq!(served_by(&p, "/", &host).await.1, c);
    let out = p.admin_cli(&["rollback", "shop"]);
    assert!(out.contains(&format!("{a}=90%")) && out.contains(&format!("{b}=10%")), "{out}");
    p.admin_cli(&["rollback", "shop", "--to", &a]);
    for _ in 0..20 {
        assert_eq!(served_by(&p, "/", &host).await.1, a);
    }

    // A revision with traffic or a tag cannot be deleted; others can.
    let out = p.cli(Some(&admin), &["revisions", "delete", "shop", &a]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("receives traffic (100%") && err.contains("409"), "{err}");
    let out = p.cli(Some(&admin), &["revisions", "delete", "shop", &c]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("tags [canary]"));
    p.admin_cli(&["traffic", "shop", "--untag", "canary"]);
    p.admin_cli(&["revisions", "delete", "shop", &c]);
    p.admin_cli(&["revisions", "delete", "shop", &b]);
    let revs = json_out(&p.admin_cli(&["revisions", "list", "shop", "--output", "json"]));
    assert_eq!(revs.as_array().unwrap().len(), 1);
    assert_eq!(served_by(&p, "/", &[("host", "canary.shop.test")]).await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn switching_traffic_and_rolling_back_under_load_fails_no_request() {
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &[]);
    let admin = p.admin.clone().unwrap();
    let (_, a) = upload(&p, Some(&admin), hello_bundle("live", "/live/...", "a"), "").await;
    let (_, b) = upload(&p, Some(&admin), hello_bundle("live", "/live/...", "b"), "promote=false").await;
    let (a, b) = (a["revision"].as_str().unwrap().to_string(), b["revision"].as_str().unwrap().to_string());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (url, stop) = (p.url("/live/x"), stop.clone());
        load.spawn(async move {
            let c = client();
            let (mut ok, mut failed, mut revs) = (0usize, Vec::new(), std::collections::HashSet::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        revs.insert(r.headers()["x-nimbus-revision"].to_str().unwrap().to_string());
                        ok += 1;
                    }
                    Ok(r) => failed.push(format!("status {}", r.status())),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed, revs)
        });
    }
    let put = reqwest::Method::PUT;
    for i in 0..20 {
        let (to, from) = if i % 2 == 0 { (&b, &a) } else { (&a, &b) };
        let split =
            serde_json::json!({"targets": [{"revision": to, "percent": 70}, {"revision": from, "percent": 30}]});
        assert_eq!(api(&p, put.clone(), "/v1/apps/live/traffic", Some(&admin), Some(split)).await.0, 200);
        tokio::time::sleep(Duration::from_millis(40)).await;
        let (s, t) =
            api(&p, reqwest::Method::POST, "/v1/apps/live/rollback", Some(&admin), Some(serde_json::json!({}))).await;
        assert_eq!(s, 200, "{t}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut revs) = (0, std::collections::HashSet::new());
    while let Some(r) = load.join_next().await {
        let (n, failed, seen) = r.unwrap();
        assert!(failed.is_empty(), "failed requests during traffic changes: {failed:?}");
        ok += n;
        revs.extend(seen);
    }
    assert!(ok > 100, "the load ran ({ok} requests)");
    assert_eq!(revs, [a, b].into_iter().collect());
}

#[tokio::test(flavor = "multi_thread")]
async fn in_flight_requests_finish_on_the_revision_they_started_on() {
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &[]);
    let admin = p.admin.clone().unwrap();
    let kitchen = |marker: &str| {
        let manifest = format!(
            "[app]\nname = \"slow\"\n[component.kitchen]\nsource = \"{}\"\nenv = {{ MARKER = \"{marker}\" }}\n[[trigger.http]]\nroute = \"/kitchen/...\"\ncomponent = \"kitchen\"\n",
            nimbus_fixtures::KITCHEN
        );
        nimbus_control::Bundle {
            manifest,
            artifacts: [("kitchen".into(), std::fs::read(nimbus_fixtures::KITCHEN).unwrap())].into(),
            ..Default::default()
        }
        .pack()
    };
    let (_, a) = upload(&p, Some(&admin), kitchen("a"), "").await;
    let a = a["revision"].as_str().unwrap().to_string();
    let slow = tokio::spawn(served_by_owned(p.url("/kitchen/sleep?ms=1500")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Move all traffic away and delete the revision while its request still runs.
    let (_, b) = upload(&p, Some(&admin), kitchen("b"), "").await;
    let b = b["revision"].as_str().unwrap().to_string();
    p.admin_cli(&["revisions", "delete", "slow", &a]);
    assert_eq!(served_by(&p, "/kitchen/env?name=MARKER", &[]).await, (200, b));
    assert_eq!(slow.await.unwrap(), (200, a, "slept 1500ms\n".to_string()));
}

async fn served_by_owned(url: String) -> (u16, String, String) {
    let resp = client().get(url).send().await.unwrap();
    let rev = resp.headers()["x-nimbus-revision"].to_str().unwrap().to_string();
    (resp.status().as_u16(), rev, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_share_a_server_by_host_and_path_and_route_conflicts_are_refused() {
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &[]);
    let admin = p.admin.clone().unwrap();
    let (_, a) = upload(&p, Some(&admin), hello_bundle("alpha", "/alpha/...", "1"), "").await;
    let (_, b) = upload(&p, Some(&admin), hello_bundle("beta", "/beta/...", "1"), "").await;
    assert_eq!(served_by(&p, "/alpha/x", &[]).await, (200, a["revision"].as_str().unwrap().into()));
    assert_eq!(served_by(&p, "/beta", &[]).await, (200, b["revision"].as_str().unwrap().into()));

    // Same route on every host: refused, nothing stored.
    let (s, e) = upload(&p, Some(&admin), hello_bundle("gamma", "/alpha/...", "1"), "").await;
    assert_eq!(s, 409, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("route `/alpha/...` on every host is already served by app `alpha`"),
        "{e}"
    );
    assert!(e["hint"].as_str().unwrap().contains("--host"));
    assert_eq!(api(&p, reqwest::Method::GET, "/v1/apps/gamma", Some(&admin), None).await.0, 404);

    // Bound to its own host it would take alpha's requests to that host: refused, unless an
    // admin takes them over. Then that host goes to it, others still to alpha.
    let (s, e) = upload(&p, Some(&admin), hello_bundle("gamma", "/alpha/...", "1"), "hosts=gamma.test").await;
    assert_eq!(s, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("would take requests app `alpha` serves"), "{e}");
    let (s, g) =
        upload(&p, Some(&admin), hello_bundle("gamma", "/alpha/...", "1"), "hosts=gamma.test&take_over=true").await;
    assert_eq!(s, 201, "{g}");
    assert_eq!(served_by(&p, "/alpha/x", &[("host", "gamma.test:8080")]).await.1, g["revision"].as_str().unwrap());
    assert_eq!(served_by(&p, "/alpha/x", &[("host", "GAMMA.test")]).await.1, g["revision"].as_str().unwrap());
    assert_eq!(served_by(&p, "/alpha/x", &[]).await.1, a["revision"].as_str().unwrap());
    // ...and a second app on that host with that path is refused.
    let (s, e) = upload(&p, Some(&admin), hello_bundle("delta", "/alpha/...", "1"), "hosts=gamma.test").await;
    assert_eq!(s, 409);
    assert!(e["error"].as_str().unwrap().contains("host `gamma.test` belongs to app `gamma`"), "{e}");

    // Deleting an app frees its routes at once.
    p.admin_cli(&["apps", "delete", "alpha"]);
    assert_eq!(served_by(&p, "/alpha/x", &[]).await.0, 404);
    assert_eq!(upload(&p, Some(&admin), hello_bundle("delta", "/alpha/...", "1"), "").await.0, 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_uploads_and_requests_get_4xx_json_and_store_nothing() {
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &["--max-upload-mb", "1"]);
    let token = p.admin.clone().unwrap();
    let t = Some(token.as_str());
    let bundle = |manifest: &str, artifacts: Vec<(&str, Vec<u8>)>| {
        nimbus_control::Bundle {
            manifest: manifest.to_string(),
            artifacts: artifacts.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ..Default::default()
        }
        .pack()
    };
    let hello = std::fs::read(nimbus_fixtures::HELLO).unwrap();
    let good = common::platform::hello_manifest("bad", "/bad/...", "1");

    let (s, e) = upload(&p, t, b"this is not a tar archive at all".repeat(40), "").await;
    assert_eq!(s, 400, "{e}");
    assert!(e["error"].as_str().unwrap().starts_with("malformed bundle"), "{e}");
    let mut no_manifest = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(4);
    no_manifest.append_data(&mut h, "components/web.wasm", &b"\0asm"[..]).unwrap();
    let (s, e) = upload(&p, t, no_manifest.into_inner().unwrap(), "").await;
    assert_eq!((s, e["error"].as_str().unwrap()), (400, "malformed bundle: it has no nimbus.toml"));

    let (s, e) = upload(&p, t, vec![0u8; 2 << 20], "").await;
    assert_eq!(s, 413, "{e}");

    let (s, e) = upload(&p, t, bundle(&good.replace("route", "rout"), vec![("web", hello.clone())]), "").await;
    assert_eq!(s, 422, "{e}");
    let details = e["details"].as_array().unwrap();
    assert!(
        details.iter().any(|d| d.as_str().unwrap().starts_with("nimbus.toml:") && d.as_str().unwrap().contains("rout")),
        "{e}"
    );

    let (s, e) = upload(&p, t, bundle(&good, vec![]), "").await;
    assert_eq!(s, 422);
    assert!(e["details"][0].as_str().unwrap().contains("component `web` has no artifact"), "{e}");
    let (s, e) = upload(&p, t, bundle(&good, vec![("web", b"not wasm".to_vec())]), "").await;
    assert_eq!(s, 422);
    assert!(e["details"][0].as_str().unwrap().contains("neither a WebAssembly component"), "{e}");
    let (s, e) = upload(&p, t, bundle(&good, vec![("web", hello.clone()), ("extra", hello.clone())]), "").await;
    assert_eq!(s, 422);
    assert!(e["details"][0].as_str().unwrap().contains("components/extra.wasm belongs to no function"), "{e}");
    let (s, _) = upload(&p, t, bundle(&good, vec![("web", hello.clone())]), "tag=Not_A_Label").await;
    assert_eq!(s, 400);
    let (s, _) = upload(&p, t, bundle(&good, vec![("web", hello.clone())]), "hosts=http://x.test").await;
    assert_eq!(s, 400);
    let (s, e) = upload(&p, t, bundle(&good, vec![("web", hello.clone())]), "bogus=1").await;
    assert_eq!(s, 400, "{e}");

    // Nothing of the above was stored.
    let (_, apps) = api(&p, reqwest::Method::GET, "/v1/apps", t, None).await;
    assert_eq!(apps, serde_json::json!([]));

    let (s, ok) = upload(&p, t, bundle(&good, vec![("web", hello)]), "").await;
    assert_eq!(s, 201);
    let rev = ok["revision"].as_str().unwrap();
    let put = reqwest::Method::PUT;
    let cases = [
        (serde_json::json!({"targets": [{"revision": rev, "percent": 90}]}), 400, "add up to 90, not 100"),
        (serde_json::json!({"targets": []}), 400, "at least one revision"),
        (serde_json::json!({"targets": [{"revision": "nope", "percent": 100}]}), 404, "has no revision `nope`"),
        (
            serde_json::json!({"targets": [{"revision": rev, "percent": 50}, {"revision": rev, "percent": 50}]}),
            400,
            "listed twice",
        ),
        (serde_json::json!({"targets": [{"revision": rev, "percent": 300}]}), 400, "percent"),
        (serde_json::json!({"targets": [{"revision": rev, "percent": 100}], "tags": {"x": "nope"}}), 404, "nope"),
        (serde_json::json!({"targets": [{"revision": rev, "percent": 100}], "bogus": 1}), 400, "bogus"),
    ];
    for (body, status, needle) in cases {
        let (s, e) = api(&p, put.clone(), "/v1/apps/bad/traffic", t, Some(body.clone())).await;
        assert_eq!(s, status, "{body} -> {e}");
        assert!(e["error"].as_str().unwrap().contains(needle), "{body} -> {e}");
    }
    let resp = client()
        .put(p.api_url("/v1/apps/bad/traffic"))
        .bearer_auth(&token)
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
    for (method, path, status) in [
        (reqwest::Method::GET, "/v1/apps/nope", 404),
        (reqwest::Method::GET, "/v1/apps/nope/revisions", 404),
        (reqwest::Method::GET, "/v1/apps/bad/revisions/nope", 404),
        (reqwest::Method::DELETE, "/v1/apps/bad/revisions/nope", 404),
        (reqwest::Method::POST, "/v1/apps/nope/rollback", 404),
        (reqwest::Method::DELETE, "/v1/tokens/nope", 404),
        (reqwest::Method::GET, "/v1/nothing-here", 404),
    ] {
        let body = (method == reqwest::Method::POST).then(|| serde_json::json!({}));
        let (s, e) = api(&p, method.clone(), path, t, body).await;
        assert_eq!(s, status, "{method} {path} -> {e}");
        assert!(e["error"].is_string(), "{e}");
    }
    let (s, e) = api(&p, reqwest::Method::POST, "/v1/apps/bad/rollback", t, Some(serde_json::json!({}))).await;
    assert_eq!(s, 409, "{e}");
    // The traffic is what the one good deploy set.
    let (_, traffic) = api(&p, reqwest::Method::GET, "/v1/apps/bad/traffic", t, None).await;
    assert_eq!(traffic, serde_json::json!({"targets": [{"revision": rev, "percent": 100}], "tags": {}}));
}

/// Deploys and traffic changes as fast as the server acknowledges them, then `kill -9`: after a
/// restart every acknowledged revision is there and traffic is the last acknowledged setting (or
/// the one in flight at the kill).
#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_deploys_and_traffic_survive_kill_9() {
    let data = tempfile::tempdir().unwrap();
    // Every acknowledged revision is kept (no retention limit in reach).
    let keep = ["--keep-revisions", "1000000"];
    let mut p = Platform::start(data.path(), &keep);
    let admin = p.admin.clone().unwrap();
    let api_base = p.api.clone();
    let token = admin.clone();
    let writer = tokio::spawn(async move {
        let c = client();
        let (mut acked, mut last_traffic, mut in_flight) = (Vec::new(), None, None);
        for i in 0.. {
            let bundle = hello_bundle("durable", "/durable/...", &format!("m{i}"));
            let resp = c
                .post(format!("{api_base}/v1/deployments?promote=false"))
                .bearer_auth(&token)
                .body(bundle)
                .send()
                .await;
            let Ok(resp) = resp else { break };
            let Ok(body) = resp.json::<Value>().await else { break };
            let rev = body["revision"].as_str().unwrap().to_string();
            acked.push(rev.clone());
            let traffic = serde_json::json!({"targets": [{"revision": rev, "percent": 100}], "tags": {}});
            in_flight = Some(traffic.clone());
            let resp =
                c.put(format!("{api_base}/v1/apps/durable/traffic")).bearer_auth(&token).json(&traffic).send().await;
            let Ok(resp) = resp else { break };
            if resp.status() != 200 || resp.json::<Value>().await.is_err() {
                break;
            }
            last_traffic = Some(traffic);
        }
        (acked, last_traffic, in_flight)
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    p.kill9();
    let (acked, last_traffic, in_flight) = writer.await.unwrap();
    assert!(acked.len() >= 3, "the writer made progress: {acked:?}");

    let p = Platform::start(data.path(), &keep);
    let (_, revs) = api(&p, reqwest::Method::GET, "/v1/apps/durable/revisions", Some(&admin), None).await;
    let stored: std::collections::HashSet<&str> =
        revs.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    let lost: Vec<&String> = acked.iter().filter(|r| !stored.contains(r.as_str())).collect();
    assert!(lost.is_empty(), "acknowledged revisions lost: {lost:?}");
    assert!(stored.len() <= acked.len() + 1, "at most the deploy in flight was added");
    let (_, traffic) = api(&p, reqwest::Method::GET, "/v1/apps/durable/traffic", Some(&admin), None).await;
    assert!(
        Some(&traffic) == last_traffic.as_ref() || Some(&traffic) == in_flight.as_ref(),
        "traffic {traffic} is neither the last acknowledged {last_traffic:?} nor the one in flight"
    );
    let serving = traffic["targets"][0]["revision"].as_str().unwrap();
    assert_eq!(served_by(&p, "/durable/x", &[]).await, (200, serving.to_string()));
}

/// A bundle cut off mid-upload — by the client going away or by `kill -9` — leaves no trace.
#[tokio::test(flavor = "multi_thread")]
async fn a_half_uploaded_revision_is_never_visible() {
    use std::io::Write;
    let data = tempfile::tempdir().unwrap();
    let mut p = Platform::start(data.path(), &[]);
    let admin = p.admin.clone().unwrap();
    let bundle = hello_bundle("half", "/half/...", "1");
    let addr = p.api.trim_start_matches("http://").to_string();
    let send_half = || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "POST /v1/deployments HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {admin}\r\ncontent-type: application/x-tar\r\ncontent-length: {}\r\n\r\n",
            bundle.len()
        )
        .unwrap();
        s.write_all(&bundle[..bundle.len() / 2]).unwrap();
        s.flush().unwrap();
        s
    };
    drop(send_half());
    std::thread::sleep(Duration::from_millis(200));
    let (_, apps) = api(&p, reqwest::Method::GET, "/v1/apps", Some(&admin), None).await;
    assert_eq!(apps, serde_json::json!([]));

    let _open = send_half();
    std::thread::sleep(Duration::from_millis(200));
    p.kill9();
    let p = Platform::start(data.path(), &[]);
    let (_, apps) = api(&p, reqwest::Method::GET, "/v1/apps", Some(&admin), None).await;
    assert_eq!(apps, serde_json::json!([]));
    assert_eq!(served_by(&p, "/half/x", &[]).await.0, 404);
    // The whole bundle deploys fine afterwards.
    let (s, _) = upload(&p, Some(&admin), bundle, "").await;
    assert_eq!(s, 201);
    assert_eq!(served_by(&p, "/half/x", &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn login_saves_the_server_and_token_for_later_commands() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &[]);
    let admin = p.admin.clone().unwrap();
    let home = tempfile::tempdir().unwrap();
    let nimbus = |args: &[&str]| common::nimbus_at_home(home.path(), args);
    let out = nimbus(&["apps", "list"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no server given"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = nimbus(&["login", "--server", &p.api, "--token", "nbt_bad_token"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid"), "{}", String::from_utf8_lossy(&out.stderr));
    let config = home.path().join(".config/nimbus/config.toml");
    assert!(!config.exists(), "a rejected login saves nothing");

    let out = nimbus(&["login", "--server", &p.api, "--token", &admin]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);
    let app = hello_app("saved", "/saved/...", "1");
    let out = nimbus(&["deploy", app.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(served_by(&p, "/saved/x", &[]).await.0, 200);

    // A component that was never built: the CLI says so before uploading anything.
    let unbuilt = common::App::new(
        &common::platform::hello_manifest("unbuilt", "/u/...", "1").replace(nimbus_fixtures::HELLO, "missing.wasm"),
    );
    let out = nimbus(&["deploy", unbuilt.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("component.web.source") && err.contains("nimbus build"), "{err}");

    // The server gone: a clear error naming it.
    drop(p);
    let out = nimbus(&["apps", "list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the Nimbus control API"));
}

/// A service deploys like a function: its files travel in the bundle, each revision runs its own
/// processes, traffic splits across them, deleting a revision stops them, and they come back after
/// a restart.
#[tokio::test(flavor = "multi_thread")]
async fn services_deploy_as_revisions_with_traffic_and_survive_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut p = Platform::start(data.path(), &[]);
    let admin = p.admin.clone().unwrap();
    let app = |marker: &str| {
        let dir = common::App::new(&format!(
            "[app]\nname = \"svc\"\n\n[component.api]\ncommand = [\"python3\", \"server.py\"]\nenv = {{ PREFIX = \"/svc\", MARKER = \"{marker}\" }}\nreadiness = {{ path = \"/healthz\" }}\n\n[[trigger.http]]\nroute = \"/svc/...\"\ncomponent = \"api\"\n"
        ));
        std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/services/server.py"), dir.path().join("server.py"))
            .unwrap();
        dir
    };
    let (a_dir, b_dir) = (app("a"), app("b"));
    let a = json_out(&p.admin_cli(&["deploy", a_dir.path().to_str().unwrap(), "--output", "json"]))["revision"]
        .as_str()
        .unwrap()
        .to_string();
    let b = json_out(&p.admin_cli(&["deploy", b_dir.path().to_str().unwrap(), "--no-promote", "--output", "json"]))["revision"].as_str().unwrap().to_string();
    let resp = client().get(p.url("/svc/env?name=MARKER")).send().await.unwrap();
    assert_eq!(resp.headers()["x-nimbus-revision"], a.as_str());
    assert_eq!(resp.text().await.unwrap(), "a");

    // 50/50 across the two revisions' processes.
    p.admin_cli(&["traffic", "svc", &format!("{a}=50"), &format!("{b}=50")]);
    let mut seen = std::collections::HashMap::new();
    for _ in 0..60 {
        let resp = client().get(p.url("/svc/env?name=MARKER")).send().await.unwrap();
        let rev = resp.headers()["x-nimbus-revision"].to_str().unwrap().to_string();
        let body = resp.text().await.unwrap();
        assert_eq!(body, if rev == a { "a" } else { "b" }, "each revision runs its own process");
        *seen.entry(rev).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // kill -9 and restart: the services of both revisions are back (that no process of the
    // killed server lingers is counted in tests/sandbox.rs).
    p.kill9();
    let mut p = Platform::start(data.path(), &[]);
    p.admin = Some(admin);
    let resp = client().get(p.url("/svc/env?name=MARKER")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // Deleting a revision stops its processes.
    p.admin_cli(&["traffic", "svc", &format!("{a}=100")]);
    p.admin_cli(&["revisions", "delete", "svc", &b]);
    for _ in 0..10 {
        let resp = client().get(p.url("/svc/env?name=MARKER")).send().await.unwrap();
        assert_eq!(resp.text().await.unwrap(), "a");
    }
    let log_has_stop = || p.stderr().contains("service instance stopped");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !log_has_stop() {
        assert!(std::time::Instant::now() < deadline, "{}", p.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_mode_refuses_what_a_web_page_sends() {
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &["--dev"]);
    let port = p.api.rsplit(':').next().unwrap().to_string();
    let deploy = |headers: &[(&str, &str)]| {
        let mut req = client().post(p.api_url("/v1/deployments")).body(hello_bundle("evil", "/evil/...", "1"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    // A cross-site form or fetch() POST needs no CORS preflight: text/plain, a foreign Origin.
    let (s, e) = deploy(&[("content-type", "text/plain"), ("origin", "http://evil.example")]).await;
    assert_eq!(s, 403, "{e}");
    assert!(e["error"].as_str().unwrap().contains("Origin `http://evil.example`"), "{e}");
    // Without an Origin, a body a web page can send is refused for its content type.
    let (s, e) = deploy(&[("content-type", "text/plain;charset=UTF-8")]).await;
    assert_eq!(s, 415, "{e}");
    assert_eq!(deploy(&[]).await.0, 415);
    let traffic = client()
        .put(p.api_url("/v1/apps/evil/traffic"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"targets":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(traffic.status(), 415);
    // Another port of this machine (the gateway's apps) is another origin, and browsers say so.
    let (s, _) = deploy(&[("content-type", "application/x-tar"), ("origin", &p.gateway)]).await;
    assert_eq!(s, 403);
    let (s, _) = deploy(&[("content-type", "application/x-tar"), ("sec-fetch-site", "cross-site")]).await;
    assert_eq!(s, 403);
    // DNS rebinding: the page's own name resolves to 127.0.0.1, so its requests name it as Host.
    let rebound = format!("evil.example:{port}");
    let resp = client().get(p.api_url("/v1/apps")).header("host", &rebound).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("loopback"), "{body}");
    let (s, _) = deploy(&[("content-type", "application/x-tar"), ("host", &rebound)]).await;
    assert_eq!(s, 403);
    // Nothing was deployed.
    let (s, apps) = api(&p, reqwest::Method::GET, "/v1/apps", None, None).await;
    assert_eq!((s, apps), (200, serde_json::json!([])));
    // What the CLI and curl send is served: a bundle as application/x-tar, Host localhost.
    let (s, e) = deploy(&[("content-type", "application/x-tar"), ("host", &format!("localhost:{port}"))]).await;
    assert_eq!(s, 201, "{e}");
    let out = p.cli(None, &["deploy", hello_app("dev", "/dev/...", "1").path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = p.cli(None, &["traffic", "dev"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(served_by(&p, "/dev/x", &[]).await.0, 200);
}

/// Opens `n` connections to `base` that each send part of a request line and hold.
async fn hold_partial_requests(base: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut held = Vec::new();
    for _ in 0..n {
        let mut conn = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
        conn.write_all(b"GET /v1/apps HT").await.unwrap();
        held.push(conn);
    }
    held
}

#[tokio::test(flavor = "multi_thread")]
async fn api_connections_that_stall_are_closed_after_the_idle_timeout() {
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &["--idle-timeout", "1s"]);
    let admin = p.admin.clone().unwrap();
    // Many connections that each send part of a request line, and an upload that stops: each is
    // closed unanswered instead of holding a file descriptor forever.
    let stalled_upload = format!(
        "POST /v1/deployments HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/x-tar\r\nContent-Length: 100000\r\n\r\nonly ten.!"
    );
    let mut sent: Vec<Vec<u8>> = (0..50).map(|_| b"GET /v1/apps HTT".to_vec()).collect();
    sent.push(b"".to_vec());
    sent.push(stalled_upload.into_bytes());
    let answers = futures::future::join_all(sent.iter().map(|bytes| common::send_raw(&p.api, bytes))).await;
    assert!(answers.iter().all(String::is_empty), "{answers:?}");
    // The stalled upload's file goes (its request's task is aborted with the connection), and
    // the API serves.
    let uploads = p.data.join("uploads");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&uploads).unwrap().count() > 0 {
        assert!(std::time::Instant::now() < deadline, "the stalled upload's file is still there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(api(&p, reqwest::Method::GET, "/v1/apps", Some(&admin), None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_at_its_connection_cap_leaves_the_other_serving() {
    let data = tempfile::tempdir().unwrap();
    // 128 open files: the API gets 8 connections and the gateway 56, half the files being kept
    // for the rest; 120 clients on one listener would exhaust the process without the caps (and
    // fit in the kernel's accept backlog of 128 with them).
    let p = Platform::start_with_open_files(data.path(), &["--idle-timeout", "10m"], 128);
    let admin = p.admin.clone().unwrap();
    p.admin_cli(&["deploy", hello_app("shop", "/shop/...", "1").path().to_str().unwrap()]);
    let api_port = p.api.rsplit(':').next().unwrap().to_string();
    let gateway_port = p.gateway.rsplit(':').next().unwrap().to_string();

    let held = hold_partial_requests(&p.api, 120).await;
    p.wait_for_log(&["connection cap reached", &format!(":{api_port}")]);
    assert_eq!(served_by(&p, "/shop/x", &[]).await.0, 200, "the gateway serves while the API is full");
    drop(held);
    assert_eq!(api(&p, reqwest::Method::GET, "/v1/apps", Some(&admin), None).await.0, 200);

    let held = hold_partial_requests(&p.gateway, 120).await;
    p.wait_for_log(&["connection cap reached", &format!(":{gateway_port}")]);
    assert_eq!(api(&p, reqwest::Method::GET, "/v1/apps", Some(&admin), None).await.0, 200);
    let listed = p.admin_cli(&["apps", "list"]);
    assert!(listed.contains("shop"), "{listed}");
    drop(held);
    assert_eq!(served_by(&p, "/shop/x", &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_uploads_are_capped_bounded_and_leave_nothing_behind() {
    use tokio::io::AsyncWriteExt;
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &["--max-concurrent-uploads", "2", "--max-upload-mb", "1"]);
    let admin = p.admin.clone().unwrap();
    let uploads = p.data.join("uploads");
    let files = || std::fs::read_dir(&uploads).unwrap().count();
    let wait_for_files = |n: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while files() != n {
            assert!(std::time::Instant::now() < deadline, "{} upload files, expected {n}", files());
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // Two slow uploads take both slots; each streams to its own file.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut conn = tokio::net::TcpStream::connect(p.api.trim_start_matches("http://")).await.unwrap();
        let head = format!(
            "POST /v1/deployments HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/x-tar\r\nContent-Length: 100000\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(&[0u8; 1000]).await.unwrap();
        slow.push(conn);
    }
    wait_for_files(2);
    // A third is refused at once, saying when to retry.
    let resp = client()
        .post(p.api_url("/v1/deployments"))
        .bearer_auth(&admin)
        .body(hello_bundle("shop", "/shop/...", "1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let e: Value = resp.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("2 deploy uploads are in progress"), "{e}");
    // The slow clients give up: their files go and their slots free.
    drop(slow);
    wait_for_files(0);
    assert_eq!(upload(&p, Some(&admin), hello_bundle("shop", "/shop/...", "1"), "").await.0, 201);

    // Too large, declared or streamed (chunked): refused, nothing kept.
    let (s, e) = upload(&p, Some(&admin), vec![0u8; 2 << 20], "").await;
    assert_eq!(s, 413, "{e}");
    let chunks = (0..32).map(|_| Ok::<_, std::io::Error>(vec![0u8; 64 << 10]));
    let resp = client()
        .post(p.api_url("/v1/deployments"))
        .bearer_auth(&admin)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await;
    // The server answers 413 and closes the connection once the limit is passed; a client still
    // sending may see the close (a broken pipe) before it reads the answer.
    match resp {
        Ok(resp) => assert_eq!(resp.status(), 413),
        Err(e) => assert!(e.is_request() && format!("{e:?}").contains("BodyWrite"), "{e:?}"),
    }
    assert_eq!(files(), 0);
    let revisions = json_out(&p.admin_cli(&["revisions", "list", "shop", "--output", "json"]));
    assert_eq!(revisions.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn viewers_read_manifests_with_env_values_redacted() {
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &[]);
    let admin = p.admin.clone().unwrap();
    let manifest = hello_manifest("shop", "/shop/...", "v1").replace("MARKER = \"v1\"", "MARKER = \"s3cret-value\"");
    let app = common::App::new(&manifest);
    let out = p.admin_cli(&["deploy", app.path().to_str().unwrap(), "-o", "json"]);
    let rev = json_out(&out)["revision"].as_str().unwrap().to_string();
    let token = |role: &str| {
        let out = p.admin_cli(&["tokens", "create", "--name", role, "--role", role, "--output", "json"]);
        json_out(&out)["token"].as_str().unwrap().to_string()
    };
    let (viewer, deployer) = (token("viewer"), token("deployer"));
    let path = format!("/v1/apps/shop/revisions/{rev}");

    // The viewer sees the env keys, never their values, in the API and the CLI (text and JSON).
    let (s, detail) = api(&p, reqwest::Method::GET, &path, Some(&viewer), None).await;
    assert_eq!(s, 200);
    let manifest = detail["manifest"].as_str().unwrap();
    assert!(manifest.contains("MARKER = \"<redacted>\""), "{manifest}");
    let out = p.cli(Some(&viewer), &["revisions", "show", "shop", &rev]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("MARKER = \"<redacted>\""), "{text}");
    let out = p.cli(Some(&viewer), &["revisions", "show", "shop", &rev, "--output", "json"]);
    assert!(out.status.success());
    for body in [String::from_utf8_lossy(&out.stdout).into_owned(), detail.to_string()] {
        assert!(!body.contains("s3cret-value"), "{body}");
    }
    // Nothing else a viewer can read carries it either.
    for read in ["/v1/apps", "/v1/apps/shop", "/v1/apps/shop/revisions", "/v1/apps/shop/traffic"] {
        let (s, body) = api(&p, reqwest::Method::GET, read, Some(&viewer), None).await;
        assert_eq!(s, 200);
        assert!(!body.to_string().contains("s3cret-value"), "{read}: {body}");
    }
    // Deployers and admins read the manifest as deployed.
    for t in [&deployer, &admin] {
        let (_, detail) = api(&p, reqwest::Method::GET, &path, Some(t), None).await;
        assert!(detail["manifest"].as_str().unwrap().contains("MARKER = \"s3cret-value\""), "{detail}");
    }
}

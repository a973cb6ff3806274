//! Cluster mode end to end: three `nimbus server` nodes on a three-server NATS JetStream
//! cluster (records kept on all three NATS servers). A deploy, a traffic change or a token made
//! through any node is served and honoured by every node; concurrent changes through different
//! nodes lose nothing (compare-and-set, retried on the records as they now are); `nimbus nodes
//! list` shows the members, a killed node is declared gone and, restarted, catches up; the
//! platform keeps working when one NATS server is killed; a cron trigger that every node
//! schedules fires once per tick.
mod common;

use std::time::{Duration, Instant};

use common::platform::{Platform, hello_bundle};
use nimbus_fixtures::nats::NatsServer;
use serde_json::Value;

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

struct Cluster {
    nodes: Vec<Platform>,
    admin: String,
    // Dropped last: the nodes first, then their NATS servers and data.
    _dirs: Vec<tempfile::TempDir>,
    nats: Vec<NatsServer>,
    /// The cluster CA every node is given.
    ca: tempfile::TempDir,
}

const NAMES: [&str; 3] = ["node-a", "node-b", "node-c"];
const LABELS: [&str; 3] = ["region=eu-west,zone=a", "region=eu-west,zone=b", "region=us-east,zone=a"];

/// The arguments of node `i` (of [`NAMES`] and [`LABELS`]), topics, buckets and control records
/// kept on `replicas` NATS servers.
fn node_args<'a>(i: usize, url: &'a str, ca: &'a str, replicas: &'a str) -> Vec<&'a str> {
    vec![
        "--nats",
        url,
        "--node-name",
        NAMES[i],
        "--labels",
        LABELS[i],
        "--nats-replicas",
        replicas,
        "--node-timeout",
        "2s",
        "--cluster-ca",
        ca,
        "--peer-listen",
        "127.0.0.1:0",
    ]
}

fn ca_dir(dir: &tempfile::TempDir) -> String {
    dir.path().join("ca").to_string_lossy().into_owned()
}

/// A new cluster CA, made with `nimbus nodes init-ca`.
/// The master key every node of a cluster shares, in a private file beside the cluster CA.
fn master_key(dir: &tempfile::TempDir) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.path().join("master.key");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    std::fs::write(&path, format!("{nanos:032x}{:032x}", u128::from(std::process::id()))).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

fn cluster_ca() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let out = std::process::Command::new(common::NIMBUS).args(["nodes", "init-ca"]).arg(&ca).output().unwrap();
    assert!(out.status.success(), "init-ca: {}", String::from_utf8_lossy(&out.stderr));
    let again = std::process::Command::new(common::NIMBUS).args(["nodes", "init-ca"]).arg(&ca).output().unwrap();
    assert!(!again.status.success(), "an existing CA is never replaced");
    dir
}

impl Cluster {
    /// Three NATS servers, then node A (which creates the first admin token), then B and C.
    fn start() -> Self {
        Self::start_on(NatsServer::cluster(3), "3")
    }

    /// Nodes A, B and C on `nats` (node `i` connected to server `i`), keeping what they store on
    /// `replicas` servers.
    fn start_on(nats: Vec<NatsServer>, replicas: &str) -> Self {
        Self::start_with(nats, replicas, &[])
    }

    /// Like [`Cluster::start_on`], each node started with `extra` arguments too.
    fn start_with(nats: Vec<NatsServer>, replicas: &str, extra: &[&str]) -> Self {
        let ca = cluster_ca();
        let master_key = master_key(&ca);
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut nodes = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            let url = nats[i].url();
            let secrets = ["--master-key-file", master_key.as_str()];
            nodes.push(Platform::start(
                dir.path(),
                &[node_args(i, &url, &ca_dir(&ca), replicas), secrets.to_vec(), extra.to_vec()].concat(),
            ));
        }
        let admin = nodes[0].admin.clone().expect("the first node prints the admin token");
        assert!(nodes[1].admin.is_none() && nodes[2].admin.is_none(), "one admin token for the cluster");
        Self { nodes, admin, _dirs: dirs, nats, ca }
    }

    /// The cluster CA's directory.
    fn ca(&self) -> String {
        ca_dir(&self.ca)
    }

    async fn api(&self, node: usize, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        api_as(&self.nodes[node], &self.admin, method, path, body).await
    }

    async fn deploy(&self, node: usize, bundle: Vec<u8>, query: &str) -> (u16, Value) {
        let resp = client()
            .post(self.nodes[node].api_url(&format!("/v1/deployments?{query}")))
            .bearer_auth(&self.admin)
            .body(bundle)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }
}

async fn api_as(p: &Platform, token: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client().request(method, p.api_url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The revision that serves `path` on a node's gateway, with the status.
async fn served_by(p: &Platform, path: &str) -> (u16, String) {
    let resp = client().get(p.url(path)).send().await.unwrap();
    let rev = resp.headers().get("x-nimbus-revision").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (resp.status().as_u16(), rev)
}

/// The bundle of an app whose one component `name` is the wasm file at `path`.
fn bundle(manifest: String, name: &str, path: &str) -> Vec<u8> {
    let wasm = std::fs::read(path).unwrap();
    nimbus_control::Bundle { manifest, artifacts: [(name.to_string(), wasm)].into(), ..Default::default() }.pack()
}

/// Polls `check` until it holds (up to 30 s); how long that took.
async fn eventually<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(()) => return start.elapsed(),
            Err(last) if start.elapsed() > Duration::from_secs(30) => panic!("{what}: not after 30 s; last: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Whether `path` on a node is answered by `revision`, whatever the status.
async fn answered_by(p: &Platform, path: &str, revision: &str) -> Result<(), String> {
    let (status, rev) = served_by(p, path).await;
    if rev == revision { Ok(()) } else { Err(format!("{status} from {rev:?}")) }
}

async fn wait_served(p: &Platform, path: &str, revision: &str) -> Duration {
    eventually(&format!("{path} served by {revision} on {}", p.gateway), || async {
        let got = served_by(p, path).await;
        if got == (200, revision.to_string()) { Ok(()) } else { Err(format!("{got:?}")) }
    })
    .await
}

/// `nimbus nodes list` through `p`; its error while NATS elects new leaders is returned, so
/// that `eventually` can try again.
fn nodes_list(p: &Platform, admin: &str) -> Result<Vec<Value>, String> {
    let out = p.cli(Some(admin), &["nodes", "list", "--output", "json"]);
    if !out.status.success() {
        return Err(format!("nodes list: {}", String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_share_apps_traffic_and_tokens_and_lose_no_concurrent_change() {
    let c = Cluster::start();

    // A deploy through A is served by every node; converging is bounded (reported).
    let (s, first) = c.deploy(0, hello_bundle("shop", "/shop/...", "1"), "").await;
    assert_eq!(s, 201, "{first}");
    let first = first["revision"].as_str().unwrap().to_string();
    for p in &c.nodes {
        let took = wait_served(p, "/shop/x", &first).await;
        eprintln!("deploy through node-a served by {} after {took:?}", p.gateway);
    }

    // Six deploys at once, two through each node, each tagging its revision: every one lands,
    // and every node ends with all six revisions and all six tags (no update lost).
    let mut tasks = Vec::new();
    for i in 0..6 {
        let bundle = hello_bundle("shop", "/shop/...", &format!("c{i}"));
        let node = c.nodes[i % 3].api_url("");
        let admin = c.admin.clone();
        tasks.push(tokio::spawn(async move {
            let resp = client()
                .post(format!("{node}/v1/deployments?promote=false&tag=t{i}"))
                .bearer_auth(admin)
                .body(bundle)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }));
    }
    let mut tagged = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let (s, body) = t.await.unwrap();
        assert_eq!(s, 201, "concurrent deploy {i}: {body}");
        tagged.push(body["revision"].as_str().unwrap().to_string());
    }
    for node in 0..3 {
        eventually(&format!("all tags on node {node}"), || async {
            let (s, traffic) = c.api(node, reqwest::Method::GET, "/v1/apps/shop/traffic", None).await;
            let (_, revisions) = c.api(node, reqwest::Method::GET, "/v1/apps/shop/revisions", None).await;
            let tags_ok = (0..6).all(|i| traffic["tags"][format!("t{i}")] == tagged[i].as_str());
            let listed = revisions.as_array().map_or(0, Vec::len);
            if s == 200 && tags_ok && listed == 7 && traffic["targets"][0]["revision"] == first.as_str() {
                Ok(())
            } else {
                Err(format!("{traffic} / {listed} revisions"))
            }
        })
        .await;
    }

    // Six secrets set at once through the three nodes, the first ones of the cluster (each
    // node would create the first data key): every set lands, and a function reads all six on
    // every node (each sealed under a data key every node holds).
    let mut tasks = Vec::new();
    for i in 0..6 {
        let url = c.nodes[i % 3].api_url(&format!("/v1/apps/vault/secrets/key_{i}"));
        let admin = c.admin.clone();
        tasks.push(tokio::spawn(async move {
            let resp = client().put(url).bearer_auth(admin).body(format!("value {i}")).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (s, body) = t.await.unwrap();
        assert_eq!(s, 200, "concurrent secret {i}: {body}");
    }
    let grants = (0..6).map(|i| format!("\"key_{i}\"")).collect::<Vec<_>>().join(", ");
    let vault = format!(
        "[app]\nname = \"vault\"\n[component.fn]\nsource = \"{}\"\ngrants = {{ secrets = [{grants}] }}\n[[trigger.http]]\nroute = \"/vault/...\"\ncomponent = \"fn\"\n",
        nimbus_fixtures::SECRETS
    );
    let deployed = eventually("the secrets are known to node A", || async {
        let (s, body) = c.deploy(0, bundle(vault.clone(), "fn", nimbus_fixtures::SECRETS), "").await;
        if s == 201 { Ok(()) } else { Err(body.to_string()) }
    });
    deployed.await;
    for node in &c.nodes {
        for i in 0..6 {
            eventually(&format!("secret {i} read on {}", node.gateway), || async {
                let resp = client().get(node.url(&format!("/vault/secret/key_{i}"))).send().await.unwrap();
                let (status, text) = (resp.status().as_u16(), resp.text().await.unwrap());
                if (status, text.as_str()) == (200, format!("value {i}").as_str()) {
                    Ok(())
                } else {
                    Err(format!("{status} {text}"))
                }
            })
            .await;
        }
    }

    // Traffic changed through B moves every node; a tag routes on every node too.
    let split =
        serde_json::json!({"targets": [{"revision": tagged[3], "percent": 100}], "tags": {"canary": tagged[4]}});
    let (s, body) = c.api(1, reqwest::Method::PUT, "/v1/apps/shop/traffic", Some(split)).await;
    assert_eq!(s, 200, "{body}");
    for p in &c.nodes {
        wait_served(p, "/shop/x", &tagged[3]).await;
    }
    let canary = client().get(c.nodes[2].url("/shop/x")).header("x-nimbus-tag", "canary").send().await.unwrap();
    assert_eq!(canary.headers()["x-nimbus-revision"], tagged[4].as_str());

    // A token made through B works on C; revoked through C, it is refused by A.
    let (s, token) = c
        .api(1, reqwest::Method::POST, "/v1/tokens", Some(serde_json::json!({"name": "viewer", "role": "viewer"})))
        .await;
    assert_eq!(s, 201, "{token}");
    let (secret, id) =
        (token["token"].as_str().unwrap().to_string(), token["info"]["id"].as_str().unwrap().to_string());
    eventually("token known on C", || async {
        let (s, _) = api_as(&c.nodes[2], &secret, reqwest::Method::GET, "/v1/apps", None).await;
        if s == 200 { Ok(()) } else { Err(s.to_string()) }
    })
    .await;
    let all_to_first = serde_json::json!({"targets": [{"revision": first, "percent": 100}], "tags": {}});
    let (s, _) = api_as(&c.nodes[2], &secret, reqwest::Method::PUT, "/v1/apps/shop/traffic", Some(all_to_first)).await;
    assert_eq!(s, 403, "a viewer may not change traffic on any node");
    let (s, _) = c.api(2, reqwest::Method::DELETE, &format!("/v1/tokens/{id}"), None).await;
    assert_eq!(s, 204);
    eventually("revoked token refused on A", || async {
        let (s, _) = api_as(&c.nodes[0], &secret, reqwest::Method::GET, "/v1/apps", None).await;
        if s == 401 { Ok(()) } else { Err(s.to_string()) }
    })
    .await;

    // Policies set through A decide on every node: a forbid of deleting `shop` refuses the
    // admin on C, naming the policy; cleared through B, the delete goes through C.
    let forbid =
        r#"@id("keep-shop") forbid (principal, action == Nimbus::Action::"delete", resource == Nimbus::App::"shop");"#;
    let (s, body) =
        c.api(0, reqwest::Method::PUT, "/v1/policies", Some(serde_json::json!({ "policies": forbid }))).await;
    assert_eq!(s, 200, "{body}");
    eventually("the policy decides on C", || async {
        let (s, body) = c.api(2, reqwest::Method::GET, "/v1/policies", None).await;
        if s == 200 && body["policies"].as_str().unwrap().contains("keep-shop") {
            Ok(())
        } else {
            Err(format!("{s} {body}"))
        }
    })
    .await;
    let (s, body) = c.api(2, reqwest::Method::DELETE, "/v1/apps/shop", None).await;
    assert_eq!(s, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("keep-shop"), "{body}");
    let (s, body) = c.api(1, reqwest::Method::PUT, "/v1/policies", Some(serde_json::json!({ "policies": "" }))).await;
    assert_eq!(s, 200, "{body}");
    eventually("the policy is gone on C", || async {
        let (s, body) = c.api(2, reqwest::Method::GET, "/v1/policies", None).await;
        if s == 200 && body["policies"] == "" { Ok(()) } else { Err(format!("{s} {body}")) }
    })
    .await;

    // Deleting the app through C removes it everywhere.
    let (s, body) = c.api(2, reqwest::Method::DELETE, "/v1/apps/shop", None).await;
    assert_eq!(s, 204, "{body}");
    for p in &c.nodes {
        eventually("app gone", || async {
            let got = served_by(p, "/shop/x").await;
            if got.0 == 404 { Ok(()) } else { Err(format!("{got:?}")) }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_list_shows_members_a_killed_node_is_gone_and_one_nats_server_may_fail() {
    let mut c = Cluster::start();
    let (s, body) = c.deploy(0, hello_bundle("web", "/web/...", "1"), "").await;
    assert_eq!(s, 201, "{body}");
    let rev = body["revision"].as_str().unwrap().to_string();
    let (s, body) = c.deploy(0, hello_bundle("old", "/old/...", "1"), "").await;
    assert_eq!(s, 201, "{body}");
    let old = body["revision"].as_str().unwrap().to_string();
    for p in &c.nodes {
        wait_served(p, "/web/x", &rev).await;
        wait_served(p, "/old/x", &old).await;
    }

    // Every node lists all three, ready, with labels and what each runs.
    let list = nodes_list(&c.nodes[1], &c.admin).unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    for (i, name) in NAMES.iter().enumerate() {
        let node = list.iter().find(|n| n["name"] == *name).unwrap_or_else(|| panic!("{name} in {list:?}"));
        assert_eq!(node["status"], "ready", "{node}");
        let zone = LABELS[i].rsplit('=').next().unwrap();
        assert_eq!(node["labels"]["zone"], zone, "{node}");
        assert_eq!(node["version"], env!("CARGO_PKG_VERSION"), "{node}");
        assert!(node["gateway"].as_str().unwrap().starts_with("http://127.0.0.1:"), "{node}");
    }
    eventually("every node reports what it runs", || async {
        let list = nodes_list(&c.nodes[0], &c.admin)?;
        let all =
            list.iter().all(|n| n["runs"].as_array().is_some_and(|r| r.iter().any(|x| x == &format!("web/{rev}"))));
        if all { Ok(()) } else { Err(format!("{list:?}")) }
    })
    .await;
    let table = c.nodes[0].admin_cli(&["nodes", "list"]);
    assert!(table.contains("node-c") && table.contains("region=us-east,zone=a") && table.contains("ready"), "{table}");

    // A second node under a running node's name is refused.
    let dir = tempfile::tempdir().unwrap();
    let url = c.nats[0].url();
    let ca = c.ca();
    let err =
        Platform::try_start(dir.path(), &node_args(1, &url, &ca, "3")).err().expect("a duplicate name is refused");
    assert!(err.contains("node name `node-b` is held by another running node"), "{err}");

    // A change made through node C is in its audit trail, which the cluster keeps a copy of.
    let (s, body) = c.deploy(2, hello_bundle("cee", "/cee/...", "1"), "").await;
    assert_eq!(s, 201, "{body}");

    // kill -9 of node C: after the 2 s timeout the others list it as gone; A and B serve on.
    c.nodes[2].kill9();
    eventually("node-c gone", || async {
        let list = nodes_list(&c.nodes[0], &c.admin)?;
        let gone = list.iter().any(|n| n["name"] == "node-c" && n["status"] == "gone");
        if gone { Ok(()) } else { Err(format!("{list:?}")) }
    })
    .await;
    assert_eq!(served_by(&c.nodes[1], "/web/x").await, (200, rev.clone()));

    // Node C's trail, read through node A from the cluster's copy while C is dead: the deploy
    // acknowledged by C is there, and the copy verifies.
    let (s, page) = c.api(0, reqwest::Method::GET, "/v1/audit?node=node-c", None).await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["node"], "node-c");
    let deploys: Vec<&Value> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["record"])
        .filter(|r| r["action"] == "deploy" && r["resource"] == "app:cee")
        .collect();
    assert_eq!(deploys.len(), 1, "{page}");
    assert_eq!((deploys[0]["node"].as_str(), deploys[0]["outcome"].as_str()), (Some("node-c"), Some("allowed")));
    let verified = c.nodes[0].admin_cli(&["audit", "verify", "--node", "node-c"]);
    assert!(verified.contains("node `node-c`") && verified.contains("is intact"), "{verified}");
    let (s, body) = c.api(0, reqwest::Method::GET, "/v1/audit?node=node-z", None).await;
    assert_eq!(s, 404, "{body}");

    // kill -9 of one NATS server (B's): with the records on three servers, a deploy through B
    // lands once its client has moved to another server, and A serves it.
    c.nats[1].kill9();
    let started = Instant::now();
    let second = loop {
        let (s, body) = c.deploy(1, hello_bundle("web", "/web/...", "2"), "").await;
        if s == 201 {
            break body["revision"].as_str().unwrap().to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "deploy through B after its NATS server died: {s} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("deploy through node-b landed {:?} after its NATS server was killed", started.elapsed());
    wait_served(&c.nodes[0], "/web/x", &second).await;
    wait_served(&c.nodes[1], "/web/x", &second).await;

    // Both revisions were acknowledged, and both are still there.
    let (_, revisions) = c.api(0, reqwest::Method::GET, "/v1/apps/web/revisions", None).await;
    let ids: Vec<&str> = revisions.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&rev.as_str()) && ids.contains(&second.as_str()), "{ids:?}");

    // Node C restarted on its data dir catches up with what changed while it was down: the new
    // revision serves, and an app deleted meanwhile is gone from its replica too.
    // Through A, whose audit copy may be on the killed NATS server until its stream has a new
    // leader: changes are refused (503, fail closed) until then, as for B's deploy above.
    let started = Instant::now();
    loop {
        let (s, body) = c.api(0, reqwest::Method::DELETE, "/v1/apps/old", None).await;
        if s == 204 {
            break;
        }
        assert!(s == 503 && started.elapsed() < Duration::from_secs(30), "delete through A: {s} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = c.nats[2].url();
    let ca = c.ca();
    let restarted = Platform::start(&c.nodes[2].data, &node_args(2, &url, &ca, "3"));
    assert!(restarted.admin.is_none());
    wait_served(&restarted, "/web/x", &second).await;
    assert_eq!(served_by(&restarted, "/old/x").await.0, 404);
    let (s, _) = api_as(&restarted, &c.admin, reqwest::Method::GET, "/v1/apps/old", None).await;
    assert_eq!(s, 404, "an app deleted while the node was down");
    eventually("node-c ready again", || async {
        let list = nodes_list(&c.nodes[0], &c.admin)?;
        let ready = list.iter().any(|n| n["name"] == "node-c" && n["status"] == "ready");
        if ready { Ok(()) } else { Err(format!("{list:?}")) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cron_trigger_on_three_nodes_fires_once_per_tick() {
    let c = Cluster::start();
    let manifest = format!(
        "[app]\nname = \"clock\"\n\n[component.fn]\nsource = \"{}\"\ngrants = {{ publish = [\"out\"] }}\n\n[[trigger.cron]]\nschedule = \"* * * * * *\"\ncomponent = \"fn\"\n",
        nimbus_fixtures::EVENTS
    );
    let (s, body) = c.deploy(0, bundle(manifest, "fn", nimbus_fixtures::EVENTS), "").await;
    assert_eq!(s, 201, "{body}");
    let rev = body["revision"].as_str().unwrap().to_string();
    eventually("every node runs the cron trigger", || async {
        let list = nodes_list(&c.nodes[0], &c.admin)?;
        let all =
            list.iter().all(|n| n["runs"].as_array().is_some_and(|r| r.iter().any(|x| x == &format!("clock/{rev}"))));
        if all && list.len() == 3 { Ok(()) } else { Err(format!("{list:?}")) }
    })
    .await;

    // Every node schedules every tick; each tick is on the topic once.
    let started = Instant::now();
    let ticks: Vec<String> = loop {
        let (s, page) =
            c.api(1, reqwest::Method::GET, "/v1/apps/clock/topics/nimbus-cron.0/events?limit=1000", None).await;
        assert_eq!(s, 200, "{page}");
        let ticks: Vec<String> =
            page["events"].as_array().unwrap().iter().map(|e| e["event"]["id"].as_str().unwrap().to_string()).collect();
        if ticks.len() >= 6 {
            break ticks;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "ticks: {ticks:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let unique: std::collections::BTreeSet<&String> = ticks.iter().collect();
    assert_eq!(unique.len(), ticks.len(), "a tick fired more than once: {ticks:?}");
}

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { out.extend(files(&path)) } else { out.push(path) }
    }
    out
}

/// Whether a file under `dir` holds `bytes`.
fn holds(dir: &std::path::Path, bytes: &[u8]) -> bool {
    files(dir).into_iter().any(|f| std::fs::read(&f).unwrap_or_default().windows(bytes.len()).any(|w| w == bytes))
}

/// The JetStream streams a NATS server stores (the directories under each account's `streams`).
fn streams_on(server: &NatsServer) -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if dir.file_name().is_some_and(|n| n == "streams") {
                out.push(entry.file_name().to_string_lossy().into_owned());
            } else {
                walk(&path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&server.store_dir(), &mut out);
    out
}

/// `[placement] require` pins an app to nodes and its data to NATS servers: the NATS servers are
/// tagged like the nodes (two `region:eu-west`, one `region:us-east`), and every stream of the
/// pinned app — KV bucket, topic, artifacts — is placed on the eu ones. `[placement.buckets]`
/// pins one bucket of an app that runs everywhere the same way.
#[tokio::test(flavor = "multi_thread")]
async fn an_app_pinned_to_a_region_is_never_loaded_served_stored_or_deployed_outside_it() {
    let nats = NatsServer::tagged_cluster(&["region:eu-west", "region:eu-west", "region:us-east"]);
    let c = Cluster::start_on(nats, "2");
    let manifest = format!(
        "{}\n[export]\nkv = {{ carts = [\"billing\"] }}\n[placement]\nrequire = {{ region = \"eu-*\" }}\n",
        common::platform::hello_manifest("gdpr", "/gdpr/...", "1")
    );
    let wasm = std::fs::read(nimbus_fixtures::HELLO).unwrap();
    let pinned = bundle(manifest, "web", nimbus_fixtures::HELLO);

    // Through the us node the deploy is refused before anything is stored.
    let (s, body) = c.deploy(2, pinned.clone(), "").await;
    assert_eq!(s, 421, "{body}");
    assert_eq!(body["code"], "misdirected", "{body}");
    assert!(body["error"].as_str().unwrap().contains("region=eu-*"), "{body}");
    assert_eq!(c.api(0, reqwest::Method::GET, "/v1/apps/gdpr", None).await.0, 404);

    // Through an eu node it lands and both eu nodes serve it; the us node answers 421 for its
    // requests and its data, naming where it is served.
    let (s, body) = c.deploy(0, pinned, "").await;
    assert_eq!(s, 201, "{body}");
    let rev = body["revision"].as_str().unwrap().to_string();
    wait_served(&c.nodes[0], "/gdpr/x", &rev).await;
    wait_served(&c.nodes[1], "/gdpr/x", &rev).await;
    eventually("the us node refuses the app's requests", || async {
        let resp = client().get(c.nodes[2].url("/gdpr/x")).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        if status == 421 && text.contains("region=eu-*") { Ok(()) } else { Err(format!("{status} {text}")) }
    })
    .await;
    let (s, body) = c.api(2, reqwest::Method::GET, "/v1/apps/gdpr/kv/cache/keys", None).await;
    assert_eq!((s, body["code"].as_str()), (421, Some("misdirected")), "{body}");
    c.nodes[2].wait_for_log(&["revision not loaded: its placement excludes this node", "gdpr"]);

    // Its data written through an eu node: a KV entry and an event.
    let secret = format!("resident-{}", std::process::id());
    let put = serde_json::json!(secret);
    let (s, body) = c.api(0, reqwest::Method::PUT, "/v1/apps/gdpr/kv/carts/keys/u1", Some(put)).await;
    assert!(s < 300, "{s} {body}");
    let resp = client()
        .post(c.nodes[1].api_url("/v1/apps/gdpr/topics/audit/events"))
        .bearer_auth(&c.admin)
        .header("ce-specversion", "1.0")
        .header("ce-id", "e1")
        .header("ce-source", "/test")
        .header("ce-type", "audit")
        .body(format!("event-{secret}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());

    // An unpinned app that imports the pinned app's bucket runs on every node, but only the eu
    // nodes open that bucket for it: the us node's store refuses it before NATS is asked.
    let billing = format!(
        "[app]\nname = \"billing\"\n[component.store]\nsource = \"{}\"\ngrants = {{ kv = [\"gdpr/carts\"] }}\n\
         [[trigger.http]]\nroute = \"/get/...\"\ncomponent = \"store\"\n[[trigger.http]]\nroute = \"/set/...\"\ncomponent = \"store\"\n",
        nimbus_fixtures::KV
    );
    let (s, body) = c.deploy(2, bundle(billing, "store", nimbus_fixtures::KV), "hosts=billing.test").await;
    assert_eq!(s, 201, "{body}");
    let billing_rev = body["revision"].as_str().unwrap().to_string();
    for node in &c.nodes {
        eventually("billing is served", || async {
            let resp = client().get(node.url("/get/x/y")).header("host", "billing.test").send().await.unwrap();
            let served = resp.headers().get("x-nimbus-revision").and_then(|v| v.to_str().ok()) == Some(&billing_rev);
            if served { Ok(()) } else { Err(format!("{}", resp.status())) }
        })
        .await;
    }
    let nodes = &c.nodes;
    let get = |node: usize| async move {
        let resp =
            client().get(nodes[node].url("/get/gdpr%2Fcarts/u1")).header("host", "billing.test").send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    assert_eq!(get(1).await, (200, format!("{secret:?}")), "an eu node reads the pinned bucket for billing");
    let (status, text) = get(2).await;
    assert_eq!(status, 500, "{text}");
    assert!(text.contains("kept only on nodes labelled region=eu-*"), "{text}");
    let put = client()
        .put(c.nodes[2].url("/set/gdpr%2Fcarts/u2"))
        .header("host", "billing.test")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 500, "nor does it write it");

    // An app that runs everywhere keeps one bucket in the region: the us node serves the app
    // and its other buckets, not that one.
    let shop = format!(
        "[app]\nname = \"shop\"\n[component.store]\nsource = \"{}\"\ngrants = {{ kv = [\"orders\", \"carts\"] }}\n\
         [[trigger.http]]\nroute = \"/get/...\"\ncomponent = \"store\"\n[[trigger.http]]\nroute = \"/set/...\"\ncomponent = \"store\"\n\
         [placement.buckets]\norders = {{ region = \"eu-*\" }}\n",
        nimbus_fixtures::KV
    );
    let (s, body) = c.deploy(2, bundle(shop, "store", nimbus_fixtures::KV), "hosts=shop.test").await;
    assert_eq!(s, 201, "an app pinning a bucket deploys anywhere: {body}");
    let shop_rev = body["revision"].as_str().unwrap().to_string();
    let order = format!("order-{secret}");
    let call = |node: usize, method: reqwest::Method, path: &'static str, body: String| {
        let (url, shop_rev) = (c.nodes[node].url(path), shop_rev.clone());
        async move {
            eventually("shop is served", || async {
                let resp = client().get(&url).header("host", "shop.test").send().await.unwrap();
                let rev = resp.headers().get("x-nimbus-revision").and_then(|v| v.to_str().ok()).map(str::to_string);
                if rev.as_deref() == Some(shop_rev.as_str()) { Ok(()) } else { Err(format!("{:?}", rev)) }
            })
            .await;
            let resp = client().request(method, &url).header("host", "shop.test").body(body).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    assert_eq!(call(0, reqwest::Method::PUT, "/set/orders/o1", order.clone()).await.0, 204);
    assert_eq!(call(1, reqwest::Method::GET, "/get/orders/o1", String::new()).await, (200, order.clone()));
    let (status, text) = call(2, reqwest::Method::GET, "/get/orders/o1", String::new()).await;
    assert_eq!(status, 500, "{text}");
    assert!(text.contains("bucket `orders` of app `shop` is kept only on nodes labelled region=eu-*"), "{text}");
    assert_eq!(call(2, reqwest::Method::PUT, "/set/carts/c1", "cart".into()).await.0, 204, "its other buckets");
    let (s, body) = c.api(2, reqwest::Method::GET, "/v1/apps/shop/kv/orders/keys", None).await;
    assert_eq!((s, body["code"].as_str()), (421, Some("misdirected")), "the API too: {body}");

    // The us node holds none of the app's code (replica, compile cache): no file in its data
    // dir holds the artifact's bytes. Its NATS server stores none of the app's streams and none
    // of its bytes: the KV value, the event and the artifact are on the eu servers only.
    let window = &wasm[wasm.len() / 2..wasm.len() / 2 + 256];
    assert!(holds(&c.nodes[0].data, window), "the check finds the artifact on an eu node");
    assert!(!holds(&c.nodes[2].data, window), "the us node stores none of the pinned app's code");
    let pinned_streams = |server: &NatsServer| -> Vec<String> {
        let pinned = |s: &String| s.contains("gdpr") || s.contains("region-eu-west") || s.contains("orders");
        streams_on(server).into_iter().filter(pinned).collect()
    };
    for (i, server) in c.nats.iter().enumerate().take(2) {
        assert_eq!(pinned_streams(server).len(), 4, "eu NATS server {i}: {:?}", streams_on(server));
        assert!(holds(&server.store_dir(), secret.as_bytes()), "eu NATS server {i} holds the KV value");
        assert!(holds(&server.store_dir(), order.as_bytes()), "eu NATS server {i} holds the order");
        assert!(holds(&server.store_dir(), window), "eu NATS server {i} holds the artifact");
    }
    let us = &c.nats[2];
    assert!(!streams_on(us).is_empty(), "the us NATS server stores the cluster's other streams");
    assert_eq!(pinned_streams(us), Vec::<String>::new(), "no stream of the pinned app on the us NATS server");
    assert!(!holds(&us.store_dir(), secret.as_bytes()), "nor the KV value or the event");
    assert!(!holds(&us.store_dir(), order.as_bytes()), "nor the pinned bucket's value");
    assert!(!holds(&us.store_dir(), window), "nor the artifact");

    // Traffic moved through the us node is control metadata, changed from any node.
    let split = serde_json::json!({"targets": [{"revision": rev, "percent": 100}], "tags": {"x": rev}});
    let (s, _) = c.api(2, reqwest::Method::PUT, "/v1/apps/gdpr/traffic", Some(split)).await;
    assert_eq!(s, 200);
    wait_served(&c.nodes[1], "/gdpr/x", &rev).await;
    assert!(!holds(&c.nodes[2].data, window), "still nothing on the us node");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_counter_actor_called_through_three_nodes_at_once_runs_on_its_keys_owner_and_loses_nothing() {
    let c = Cluster::start();
    let manifest = format!(
        "[app]\nname = \"tally\"\n[component.counter]\nsource = \"{}\"\n[[trigger.actor]]\ntype = \"counter\"\ncomponent = \"counter\"\npublic = true\n",
        nimbus_fixtures::COUNTER
    );
    let (s, body) = c.deploy(0, bundle(manifest, "counter", nimbus_fixtures::COUNTER), "").await;
    assert_eq!(s, 201, "{body}");
    for p in &c.nodes {
        eventually("the actor is served", || async {
            let r = client().post(p.url("/actors/counter/warm/get")).send().await.unwrap();
            if r.status() == 200 { Ok(()) } else { Err(r.status().to_string()) }
        })
        .await;
    }
    // Every node's scheduler has read the full membership (it does every heartbeat interval).
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 60 increments of one key, 20 through each node at once. Each node sends the key's calls
    // to the node owning it, so one activation runs them all, one at a time: none is fenced. (A
    // call whose commit another node's beat would be refused with 503 and change nothing; the
    // caller would send it again, and every acknowledged increment is counted, and only those.)
    let mut tasks = Vec::new();
    for i in 0..60 {
        let url = c.nodes[i % 3].url("/actors/counter/hot/incr");
        tasks.push(tokio::spawn(async move {
            let mut refused = 0;
            loop {
                let r = client().post(&url).send().await.unwrap();
                match r.status().as_u16() {
                    200 => return refused,
                    503 => refused += 1,
                    other => panic!("{other}: {}", r.text().await.unwrap()),
                }
                assert!(refused < 1000, "an increment never landed");
            }
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap();
    }
    eprintln!("60 increments through 3 nodes: {refused} commits refused by the fence and sent again");
    assert_eq!(refused, 0, "the calls of one key meet on its owner's activation");
    for p in &c.nodes {
        // Each node reads the newest committed state, not the one it cached.
        let r = client().post(p.url("/actors/counter/hot/get")).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "60", "the count read through {}", p.gateway);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_starting_at_once_on_an_empty_cluster_mint_one_admin_token() {
    let nats = NatsServer::start();
    let url = nats.url();
    let ca = cluster_ca();
    let ca = ca_dir(&ca);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<Platform> = std::thread::scope(|s| {
        let started: Vec<_> = dirs
            .iter()
            .enumerate()
            .map(|(i, dir)| {
                let args =
                    ["--nats", url.as_str(), "--node-name", NAMES[i], "--node-timeout", "2s", "--cluster-ca", &ca];
                s.spawn(move || Platform::start(dir.path(), &args))
            })
            .collect();
        started.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let admins: Vec<&String> = nodes.iter().filter_map(|n| n.admin.as_ref()).collect();
    assert_eq!(admins.len(), 1, "exactly one node prints the first admin token");
    for p in &nodes {
        eventually("the admin token works on every node", || async {
            let (s, _) = api_as(p, admins[0], reqwest::Method::GET, "/v1/tokens", None).await;
            if s == 200 { Ok(()) } else { Err(s.to_string()) }
        })
        .await;
    }
    let (_, tokens) = api_as(&nodes[0], admins[0], reqwest::Method::GET, "/v1/tokens", None).await;
    assert_eq!(tokens.as_array().map(Vec::len), Some(1), "{tokens}");
}

const SERVER_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/services/server.py");

/// The bundle of app `svc`: the Python test service `py` on `/py/...`, one process in all,
/// scaled to zero a second or two after its last request.
fn service_bundle() -> Vec<u8> {
    service_bundle_with("min = 0, max = 1", "")
}

/// The Python service app with `scale` (quick to scale down) and `extra` tables.
fn service_bundle_with(scale: &str, extra: &str) -> Vec<u8> {
    let manifest = format!(
        "[app]\nname = \"svc\"\n\n[component.py]\ncommand = [\"python3\", \"server.py\"]\nreadiness = {{ path = \"/py/healthz\" }}\nscale = {{ {scale}, idle_timeout_s = 1, stable_window_s = 2, panic_window_s = 1 }}\n\n[[trigger.http]]\nroute = \"/py/...\"\ncomponent = \"py\"\n{extra}"
    );
    let code = std::fs::read(SERVER_PY).unwrap();
    let mut tree = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(code.len() as u64);
    h.set_mode(0o644);
    tree.append_data(&mut h, "server.py", &code[..]).unwrap();
    let trees = [("py".to_string(), tree.into_inner().unwrap())].into();
    nimbus_control::Bundle { manifest, trees, ..Default::default() }.pack()
}

/// `GET /py/hello` through a node: status, the process's boot id, and the node that forwarded
/// it on (`x-nimbus-node`, absent when the node served it itself).
async fn hello(p: &Platform) -> Result<(u16, String, Option<String>), String> {
    let resp = client().get(p.url("/py/hello")).send().await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let node = resp.headers().get("x-nimbus-node").map(|v| v.to_str().unwrap().to_string());
    let body = resp.text().await.map_err(|e| e.to_string())?;
    let boot = body.split_whitespace().find_map(|w| w.strip_prefix("boot=")).unwrap_or_default().to_string();
    Ok((status, boot, node))
}

/// The spans of trace `id` a node keeps.
async fn trace_spans(p: &Platform, admin: &str, id: &str) -> Result<Vec<Value>, String> {
    let (s, trace) = api_as(p, admin, reqwest::Method::GET, &format!("/v1/traces/{id}"), None).await;
    if s == 200 { Ok(trace["spans"].as_array().unwrap().clone()) } else { Err(format!("{s} {trace}")) }
}

/// Until every node answers from the same one process, which runs on one node: that node.
async fn the_host(nodes: &[&Platform]) -> (String, String) {
    let found = std::sync::Mutex::new(None);
    eventually("one process serves every node", || {
        let found = &found;
        async move {
            let mut boots = std::collections::BTreeSet::new();
            let mut forwarders = std::collections::BTreeSet::new();
            let mut local = 0;
            for p in nodes {
                let (status, boot, node) = hello(p).await?;
                if status != 200 {
                    return Err(format!("{status} from {}", p.gateway));
                }
                boots.insert(boot);
                match node {
                    Some(n) => _ = forwarders.insert(n),
                    None => local += 1,
                }
            }
            if boots.len() == 1 && forwarders.len() == 1 && local == 1 {
                *found.lock().unwrap() =
                    Some((forwarders.into_iter().next().unwrap(), boots.into_iter().next().unwrap()));
                Ok(())
            } else {
                Err(format!("boots {boots:?}, forwarded to {forwarders:?}, {local} served locally"))
            }
        }
    })
    .await;
    found.into_inner().unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_runs_on_the_node_the_scheduler_picks_every_node_forwards_to_it_scales_to_zero_and_moves_when_that_node_dies()
 {
    let mut c = Cluster::start();
    let (s, body) = c.deploy(0, service_bundle(), "").await;
    assert_eq!(s, 201, "{body}");

    // One process in the cluster (`scale.max = 1`): every node's requests reach it, two of them
    // forwarding over the transport to the node it runs on.
    let all: Vec<&Platform> = c.nodes.iter().collect();
    let (host, boot) = the_host(&all).await;
    let host_index = NAMES.iter().position(|n| *n == host).unwrap();
    eprintln!("the service runs on {host}");
    eventually("nodes list shows where the service runs", || async {
        let list = nodes_list(&c.nodes[0], &c.admin)?;
        let placed: Vec<&str> = list
            .iter()
            .filter(|n| n["services"].as_array().unwrap().iter().any(|s| s["name"].as_str().unwrap().ends_with("/py")))
            .map(|n| n["name"].as_str().unwrap())
            .collect();
        if placed == [host.as_str()] { Ok(()) } else { Err(format!("{list:?}")) }
    })
    .await;
    let list = nodes_list(&c.nodes[0], &c.admin).unwrap();
    let peer = list.iter().find(|n| n["name"] == host).unwrap()["peer"].as_str().unwrap().to_string();
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");

    // The trace goes on across the hop: the host's server span is a child of the forwarding
    // node's client span.
    let via = &c.nodes[(host_index + 1) % 3];
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let sent = client()
        .get(via.url("/py/hello"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.headers()["x-nimbus-node"], host.as_str());
    let hop = std::sync::Mutex::new(String::new());
    eventually("the forwarding node's client span", || async {
        let spans = trace_spans(via, &c.admin, trace_id).await?;
        let client = spans.iter().find(|s| s["kind"] == "client").ok_or(format!("{spans:?}"))?;
        *hop.lock().unwrap() = client["span_id"].as_str().unwrap().to_string();
        Ok(())
    })
    .await;
    let hop = hop.into_inner().unwrap();
    eventually("the host's server span continues the trace", || async {
        let spans = trace_spans(&c.nodes[host_index], &c.admin, trace_id).await?;
        let continued = spans.iter().any(|s| s["kind"] == "server" && s["parent_span_id"] == hop.as_str());
        if continued { Ok(()) } else { Err(format!("no server span under {hop}: {spans:?}")) }
    })
    .await;

    // A client cannot turn the hop into something else (an actor call or a workflow wake-up of
    // another app): the headers nodes read from each other are dropped from what it sends.
    let sneaky = client()
        .get(via.url("/py/headers"))
        .header("x-nimbus-wake-run", "shop")
        .header("x-nimbus-forward-actor", "tally/x")
        .header("x-nimbus-forward", "other/x/py")
        .header("x-nimbus-deadline-ms", "1")
        .send()
        .await
        .unwrap();
    assert_eq!((sneaky.status().as_u16(), &sneaky.headers()["x-nimbus-node"]), (200, &host.parse().unwrap()));
    let names = sneaky.text().await.unwrap();
    assert!(
        !names.contains("x-nimbus-forward") && !names.contains("x-nimbus-wake") && !names.contains("deadline"),
        "{names}"
    );

    // Scale to zero and back across nodes: idle, its node stops the process; a request through
    // another node starts one there again.
    let last_request_ms = now_ms();
    eventually("the service scales to zero on its node", || async {
        let list = nodes_list(&c.nodes[0], &c.admin)?;
        let node = list.iter().find(|n| n["name"] == host).unwrap();
        // A heartbeat measured after the last request, with no process.
        let fresh = node["heartbeat_at_ms"].as_u64().unwrap() as u128 > last_request_ms;
        if fresh && node["load"]["services"] == 0 { Ok(()) } else { Err(node.to_string()) }
    })
    .await;
    let (status, woke, node) = hello(via).await.unwrap();
    assert_eq!((status, node.as_deref()), (200, Some(host.as_str())));
    assert_ne!(woke, boot, "a new process, on the service's node");

    // The peer listener speaks mutual TLS only: plaintext is refused, and so is TLS without a
    // node certificate of the cluster CA — neither reaches the service.
    let plain = client().get(format!("http://{peer}/py/hello")).header("x-nimbus-forward", "svc/x/py").send().await;
    let plain = plain.unwrap();
    assert_eq!(plain.status(), 400);
    assert!(plain.text().await.unwrap().contains("speaks TLS"));
    let anonymous = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let refused = anonymous.get(format!("https://{peer}/py/hello")).header("x-nimbus-forward", "svc/x/py").send().await;
    assert!(refused.is_err(), "a client without a node certificate: {refused:?}");

    // kill -9 of that node while the other two serve requests: requests that cannot reach it
    // are served where they arrive, then the scheduler moves the service to a remaining node.
    let survivors: Vec<usize> = (0..3).filter(|i| *i != host_index).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for i in &survivors {
        let (gateway, stop) = (c.nodes[*i].url("/py/hello"), stop.clone());
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client().get(&gateway).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.nodes[host_index].kill9();
    let killed = Instant::now();
    let rest: Vec<&Platform> = survivors.iter().map(|i| &c.nodes[*i]).collect();
    let (moved_to, new_boot) = the_host(&rest).await;
    eprintln!("the service moved to {moved_to} {:?} after the kill", killed.elapsed());
    assert_ne!(new_boot, boot, "a new process");
    assert_ne!(moved_to, host);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for l in load {
        let (o, f) = l.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    eprintln!("under load through the kill: {ok} requests answered 200, {} failed: {failed:?}", failed.len());
    // GETs in flight on the killed node are sent again: none fails.
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 0);
}

/// App `shop`: the order saga as workflow `order` (public) and the KV fixture on `/...` reading
/// the bucket the saga's steps count their executions in.
fn saga_bundle() -> Vec<u8> {
    let manifest = "[app]\nname = \"shop\"\n\
         [component.order]\nsource = \"order.wasm\"\ngrants = { kv = [\"effects\"] }\n\
         [[trigger.workflow]]\nname = \"order\"\ncomponent = \"order\"\npublic = true\n\
         [component.kv]\nsource = \"kv.wasm\"\ngrants = { kv = [\"effects\"] }\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"kv\"\n";
    let read = |path| std::fs::read(path).unwrap();
    let artifacts =
        [("order".to_string(), read(nimbus_fixtures::WORKFLOW)), ("kv".to_string(), read(nimbus_fixtures::KV))].into();
    nimbus_control::Bundle { manifest: manifest.into(), artifacts, ..Default::default() }.pack()
}

#[tokio::test(flavor = "multi_thread")]
async fn workflow_runs_are_driven_by_one_node_each_and_a_killed_nodes_runs_finish_on_the_others() {
    let mut c = Cluster::start();
    let (s, body) = c.deploy(0, saga_bundle(), "").await;
    assert_eq!(s, 201, "{body}");
    for p in &c.nodes {
        eventually("the workflow is served", || async {
            let r = client().get(p.url("/workflows/order")).send().await.map_err(|e| e.to_string())?;
            if r.status() == 200 { Ok(()) } else { Err(r.status().to_string()) }
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // every scheduler has the full membership

    // 12 runs started through node A, each sleeping 3 s (durably) after its first step; node C
    // is killed while they sleep. The runs C drove go on, on A or B, once C is listed gone.
    let mut runs = Vec::new();
    for i in 0..12 {
        let r =
            client().post(c.nodes[0].url("/workflows/order")).body(format!("o{i};sleep=3000")).send().await.unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        let started: Value = r.json().await.unwrap();
        runs.push(started["run"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.nodes[2].kill9();
    let killed = Instant::now();
    for run in &runs {
        eventually(&format!("run {run} completes"), || async {
            let shown: Value = client()
                .get(c.nodes[1].url(&format!("/workflows/order/{run}")))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            if shown["status"] == "completed" { Ok(()) } else { Err(shown.to_string()) }
        })
        .await;
    }
    eprintln!("12 sleeping runs, one node killed: all completed {:?} after the kill", killed.elapsed());

    // Each step ran once: no two nodes drove a run at once.
    let listed = client().get(c.nodes[0].url("/list/effects")).send().await.unwrap().text().await.unwrap();
    let counters: Vec<&str> = listed.lines().filter(|k| k.starts_with("runs/")).collect();
    assert_eq!(counters.len(), 36, "three steps of each of 12 runs: {listed}");
    for key in counters {
        let count = client().get(c.nodes[0].url(&format!("/get/effects/{key}"))).send().await.unwrap();
        let count = count.text().await.unwrap();
        assert_eq!(count.trim(), "1", "{key} ran {count} times");
    }
}

/// The cluster CA is replaced in its three steps (`nimbus nodes rotate-ca`) while the two other
/// nodes forward a stream of requests to the node running a service: every request succeeds
/// and is served there, across the certificate renewal each step brings on every node (each
/// node's transport moving its requests to new connections).
#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_ca_rotates_under_forwarded_load_without_a_failed_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let c = Cluster::start();
    let (s, body) = c.deploy(0, service_bundle(), "").await;
    assert_eq!(s, 201, "{body}");
    let all: Vec<&Platform> = c.nodes.iter().collect();
    let (host, _) = the_host(&all).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    let host_index = NAMES.iter().position(|n| *n == host).unwrap();
    for (_, node) in c.nodes.iter().enumerate().filter(|(i, _)| *i != host_index) {
        for _ in 0..2 {
            let (url, stop) = (node.url("/py/hello"), stop.clone());
            load.push(tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let answer = match client().get(&url).send().await {
                        Ok(resp) => {
                            let node = resp.headers().get("x-nimbus-node").map(|v| v.to_str().unwrap().to_string());
                            (resp.status().as_u16(), node)
                        }
                        Err(e) => (0, Some(e.to_string())),
                    };
                    answers.push(answer);
                }
                answers
            }));
        }
    }

    let reloads = |p: &Platform| p.stderr().matches("cluster CA reloaded").count();
    for (done, step) in ["stage", "activate", "finish"].into_iter().enumerate() {
        let out =
            std::process::Command::new(common::NIMBUS).args(["nodes", "rotate-ca", &c.ca(), step]).output().unwrap();
        assert!(out.status.success(), "{step}: {}", String::from_utf8_lossy(&out.stderr));
        for node in &c.nodes {
            eventually(&format!("{} reads the {step} step", node.gateway), || async {
                let n = reloads(node);
                if n > done { Ok(()) } else { Err(format!("{n} reloads")) }
            })
            .await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for task in load {
        answers.extend(task.await.unwrap());
    }
    let failed: Vec<_> = answers.iter().filter(|a| **a != (200, Some(host.clone()))).collect();
    eprintln!("{} forwarded requests during the rotation, {} not answered 200 by {host}", answers.len(), failed.len());
    assert!(!answers.is_empty());
    assert!(failed.is_empty(), "{failed:?}");
}

/// `scale.min` is the cluster's, not each node's: a service on two nodes (`max = 2`,
/// `max_per_node = 1`) with `min = 1` keeps one idle process in the whole cluster, on the first
/// of its nodes.
#[tokio::test(flavor = "multi_thread")]
async fn a_services_min_is_kept_once_across_its_nodes() {
    let c = Cluster::start();
    let bundle = service_bundle_with("min = 1, max = 2", "[placement]\nmax_per_node = 1\n");
    let (s, body) = c.deploy(0, bundle, "").await;
    assert_eq!(s, 201, "{body}");
    let idle = || async {
        let list = nodes_list(&c.nodes[0], &c.admin)?;
        let runs =
            |n: &Value| n["services"].as_array().unwrap().iter().any(|s| s["name"].as_str().unwrap().ends_with("/py"));
        let placed = list.iter().filter(|n| runs(n)).count();
        let processes: u64 = list.iter().map(|n| n["load"]["services"].as_u64().unwrap()).sum();
        if placed == 2 && processes == 1 {
            Ok(())
        } else {
            Err(format!("{placed} nodes, {processes} processes: {list:?}"))
        }
    };
    eventually("two nodes run the service, one process idles in the cluster", idle).await;
    // Several heartbeats later, still one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    idle().await.unwrap();
    // And the service answers through every node.
    for node in &c.nodes {
        let (status, ..) = hello(node).await.unwrap();
        assert_eq!(status, 200);
    }
}

/// The service `py`'s processes on each node, by node name, from a heartbeat measured after
/// `since_ms` (Unix milliseconds).
fn processes_by_node(p: &Platform, admin: &str, since_ms: u128) -> Result<Vec<(String, u64)>, String> {
    let list = nodes_list(p, admin)?;
    let mut out = Vec::new();
    for n in &list {
        if (n["heartbeat_at_ms"].as_u64().unwrap() as u128) <= since_ms {
            return Err(format!("{} has not heartbeat since", n["name"]));
        }
        let services = n["services"].as_array().unwrap();
        let py = services.iter().find(|s| s["name"].as_str().unwrap().ends_with("/py"));
        out.push((n["name"].as_str().unwrap().to_string(), py.map_or(0, |s| s["processes"].as_u64().unwrap())));
    }
    Ok(out)
}

fn now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
}

/// The autoscaler's view of a service is the cluster's. Placed on two nodes (`max = 2`,
/// `max_per_node = 1`, `min = 0`), a quiet service runs one process wherever its requests
/// arrive: every node, the other of its two nodes too, sends them to the node with a ready
/// process and room, and a second process idles and stops. A burst beyond that process's
/// `target_concurrency` spills onto the second node. Idle, it scales to zero on both, and a
/// request through the node that runs neither brings one process back.
#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_service_runs_one_process_in_the_cluster_spills_over_under_load_and_scales_to_zero_everywhere() {
    let c = Cluster::start();
    let bundle = service_bundle_with("min = 0, max = 2, target_concurrency = 1", "[placement]\nmax_per_node = 1\n");
    let (s, body) = c.deploy(0, bundle, "").await;
    assert_eq!(s, 201, "{body}");
    let all: Vec<&Platform> = c.nodes.iter().collect();
    let (host, _) = the_host(&all).await;
    eprintln!("one process, on {host}, serves the requests of every node");
    let since = now_ms();
    eventually("one process in the cluster", || async {
        let by_node = processes_by_node(&c.nodes[0], &c.admin, since)?;
        let total: u64 = by_node.iter().map(|(_, n)| n).sum();
        if total == 1 { Ok(()) } else { Err(format!("{by_node:?}")) }
    })
    .await;

    // A burst through the node running neither: slow requests beyond the one process's
    // target concurrency go to the second node once the first says it has no room.
    let outside = {
        let list = nodes_list(&c.nodes[0], &c.admin).unwrap();
        let placed =
            |n: &Value| n["services"].as_array().unwrap().iter().any(|s| s["name"].as_str().unwrap().ends_with("/py"));
        let name = list.iter().find(|n| !placed(n)).unwrap()["name"].as_str().unwrap().to_string();
        NAMES.iter().position(|n| *n == name).unwrap()
    };
    let served = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut burst = Vec::new();
    for _ in 0..4 {
        let (url, served, stop) = (c.nodes[outside].url("/py/slow?ms=300"), served.clone(), stop.clone());
        burst.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let resp = client().get(&url).send().await.unwrap();
                assert_eq!(resp.status(), 200);
                let node = resp.headers().get("x-nimbus-node").map(|v| v.to_str().unwrap().to_string());
                served.lock().unwrap().insert(node.unwrap_or_default());
            }
        }));
    }
    eventually("the burst spills onto the second node", || async {
        let served = served.lock().unwrap().clone();
        if served.len() == 2 && !served.contains(NAMES[outside]) { Ok(()) } else { Err(format!("{served:?}")) }
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in burst {
        b.await.unwrap();
    }

    // Idle: no process anywhere; then one request through the outside node brings one back.
    let idle_since = now_ms();
    eventually("the service scales to zero on every node", || async {
        let by_node = processes_by_node(&c.nodes[0], &c.admin, idle_since)?;
        if by_node.iter().all(|(_, n)| *n == 0) { Ok(()) } else { Err(format!("{by_node:?}")) }
    })
    .await;
    let (status, _, node) = hello(&c.nodes[outside]).await.unwrap();
    assert_eq!(status, 200);
    assert!(node.is_some_and(|n| n != NAMES[outside]), "forwarded to a node of the service");
    the_host(&all).await;
}

/// An artifact that no revision uses any more leaves the cluster's artifact store once it has
/// been unused for `--artifact-grace`; the ones in use stay.
#[tokio::test(flavor = "multi_thread")]
async fn an_artifact_no_revision_uses_is_swept_from_the_clusters_store() {
    let c = Cluster::start_with(NatsServer::cluster(3), "3", &["--artifact-grace", "2s"]);
    let (s, body) = c.deploy(0, hello_bundle("gc", "/gc/...", "1"), "").await;
    assert_eq!(s, 201, "{body}");
    let first = body["revision"].as_str().unwrap().to_string();
    let (s, detail) = c.api(0, reqwest::Method::GET, &format!("/v1/apps/gc/revisions/{first}"), None).await;
    assert_eq!(s, 200, "{detail}");
    let unused = detail["artifacts"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let kv = format!(
        "[app]\nname = \"gc\"\n[component.web]\nsource = \"{}\"\ngrants = {{ kv = [\"x\"] }}\n[[trigger.http]]\nroute = \"/gc/...\"\ncomponent = \"web\"\n",
        nimbus_fixtures::KV
    );
    let (s, body) = c.deploy(1, bundle(kv, "web", nimbus_fixtures::KV), "").await;
    assert_eq!(s, 201, "{body}");
    let second = body["revision"].as_str().unwrap().to_string();
    let (s, detail) = c.api(1, reqwest::Method::GET, &format!("/v1/apps/gc/revisions/{second}"), None).await;
    assert_eq!(s, 200, "{detail}");
    let used = detail["artifacts"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    assert_ne!(used, unused);
    // (The KV component answers `/gc/...` with an error: its revision is what counts here.)
    eventually("the second revision is served", || answered_by(&c.nodes[2], "/gc/x", &second)).await;

    let client = async_nats::connect(c.nats[0].url()).await.unwrap();
    let artifacts = async_nats::jetstream::new(client).get_object_store("nimbus_artifacts").await.unwrap();
    assert!(!artifacts.info(&unused).await.unwrap().deleted, "the first revision's artifact is stored");
    let (s, body) = c.api(2, reqwest::Method::DELETE, &format!("/v1/apps/gc/revisions/{first}"), None).await;
    assert!(s < 300, "{s} {body}");
    let took = eventually("the unused artifact is swept", || async {
        match artifacts.info(&unused).await {
            Ok(info) if info.deleted => Ok(()),
            Err(e) if e.kind() == async_nats::jetstream::object_store::InfoErrorKind::NotFound => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eprintln!("the unused artifact was deleted {took:?} after its revision");
    assert!(!artifacts.info(&used).await.unwrap().deleted, "the artifact in use stays");
    // Nodes that never had the revision loaded still serve the one in use.
    for node in &c.nodes {
        eventually("the second revision is served", || answered_by(node, "/gc/x", &second)).await;
    }

    // The swept content deployed again is stored again, and every node — whose own copy went
    // with the sweep — fetches it and serves it.
    let (s, body) = c.deploy(2, hello_bundle("gc", "/gc/...", "1"), "").await;
    assert_eq!(s, 201, "{body}");
    let again = body["revision"].as_str().unwrap().to_string();
    assert!(!artifacts.info(&unused).await.unwrap().deleted, "stored again");
    for node in &c.nodes {
        wait_served(node, "/gc/x", &again).await;
    }
}

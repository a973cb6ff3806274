//! Metering end to end, through a real `nimbus up` and `nimbus server`: known workloads record
//! the usage they should (CPU of a busy guest, none of a sleeping one, the bytes of an outbound
//! download), reported by `nimbus cost` as JSON and CSV and by `/metrics`; `kill -9` loses none
//! of what was flushed; a budget's thresholds reach a webhook once each and its hard limit
//! throttles only its app with 429.
mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::platform::{Platform, hello_bundle};
use common::{App, client, ok};
use serde_json::Value;

/// Three copies of the kitchen guest, so that each workload's usage is its own component's; they
/// may call `origin`.
fn workloads(origin: &str) -> App {
    let component = |name: &str| {
        format!(
            "[component.{name}]\nsource = \"{}\"\ngrants = {{ outbound = [\"{origin}\"] }}\n\n[[trigger.http]]\nroute = \"/kitchen/{}\"\ncomponent = \"{name}\"\n\n",
            nimbus_fixtures::KITCHEN,
            match name {
                "busy" => "spin",
                "idle" => "sleep",
                _ => "outbound",
            }
        )
    };
    App::new(&format!(
        "[app]\nname = \"meter\"\nlabels = {{ tenant = \"acme\" }}\n\n{}{}{}",
        component("busy"),
        component("idle"),
        component("fetch")
    ))
}

/// Serves 1 MiB at `/mib` on loopback; its origin.
async fn mebibyte() -> String {
    let app = axum::Router::new().route("/mib", axum::routing::get(|| async { vec![b'm'; 1 << 20] }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// `nimbus cost ARGS --output json` of the `nimbus up` in `app`'s directory, polled until
/// `until` holds (usage is reported as of the last flush).
fn cost_until(app: &App, args: &[&str], until: impl Fn(&Value) -> bool) -> Value {
    let home = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut all = vec!["cost", "--output", "json"];
    all.extend_from_slice(args);
    loop {
        let report: Value = serde_json::from_str(&ok(app.cli(home.path(), &all))).unwrap();
        if until(&report) {
            return report;
        }
        assert!(Instant::now() < deadline, "the report never showed what was expected: {report:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn row<'a>(report: &'a Value, component: &str) -> &'a Value {
    report["rows"].as_array().unwrap().iter().find(|r| r["component"] == component).unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn known_workloads_record_the_expected_usage() {
    let origin = mebibyte().await;
    let app = workloads(&origin);
    let server = app.up(&["--meter-flush", "1s"]);
    let c = client();
    // 1,000 invocations busy for 10 ms each, two at a time.
    let busy = futures::future::join_all((0..2).map(|_| {
        let (c, url) = (c.clone(), server.url("/kitchen/spin?ms=10"));
        async move {
            for _ in 0..500 {
                assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
            }
        }
    }));
    busy.await;
    // 20 invocations asleep for 50 ms each: wall time, not CPU.
    for _ in 0..20 {
        assert_eq!(c.get(server.url("/kitchen/sleep?ms=50")).send().await.unwrap().status(), 200);
    }
    // One outbound download of 1 MiB.
    let resp = c.get(server.url(&format!("/kitchen/outbound?url={origin}/mib"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap().len() > 1 << 20);

    let report = cost_until(&app, &["--by", "tenant,component"], |r| {
        row(r, "busy")["usage"]["invocations"] == 1000
            && row(r, "idle")["usage"]["invocations"] == 20
            && row(r, "fetch")["usage"]["invocations"] == 1
    });
    let usage = |c: &str| row(&report, c)["usage"].clone();
    let (busy, idle, fetch) = (usage("busy"), usage("idle"), usage("fetch"));
    eprintln!("metered: busy {busy}\nidle {idle}\nfetch {fetch}");
    let cpu = busy["cpu_seconds"].as_f64().unwrap();
    // Poll time: the spins themselves, less the moments a yielding guest waited to run again.
    assert!((8.0..13.0).contains(&cpu), "1,000 × 10 ms busy records ≈ 10 s of CPU (-20 %/+30 %): {busy}");
    assert!(busy["wall_seconds"].as_f64().unwrap() >= 10.0, "{busy}");
    assert!(busy["memory_gib_seconds"].as_f64().unwrap() > 0.0, "{busy}");
    let (idle_cpu, idle_wall) = (idle["cpu_seconds"].as_f64().unwrap(), idle["wall_seconds"].as_f64().unwrap());
    assert!(idle_wall >= 1.0, "20 × 50 ms asleep is ≥ 1 s of wall time: {idle}");
    assert!(idle_cpu < 0.25 * idle_wall, "sleeping is not CPU: {idle}");
    let egress = fetch["egress_bytes"].as_u64().unwrap();
    assert!(((1 << 20)..(1 << 20) + (64 << 10)).contains(&egress), "a 1 MiB download records ≈ 1 MiB: {fetch}");
    assert_eq!(row(&report, "busy")["tenant"], "acme", "usage is attributed to the app's tenant label");
    let cost = &row(&report, "busy")["cost"];
    assert!(cost["total"].as_f64().unwrap() > 0.0 && report["currency"] == "USD", "{report:#}");

    // The same as CSV for a spreadsheet, and as OpenMetrics counters.
    let home = tempfile::tempdir().unwrap();
    let csv = ok(app.cli(home.path(), &["cost", "--by", "day,component", "--output", "csv"]));
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().starts_with("day,component,invocations,wall_seconds,cpu_seconds,"), "{csv}");
    let busy_line = lines.find(|l| l.split(',').nth(1) == Some("busy")).unwrap_or_else(|| panic!("{csv}"));
    assert_eq!(busy_line.split(',').nth(2), Some("1000"), "{csv}");
    let api: Value =
        serde_json::from_str(&std::fs::read_to_string(app.path().join(".nimbus/api.json")).unwrap()).unwrap();
    let metrics = c
        .get(format!("{}/metrics", api["url"].as_str().unwrap()))
        .bearer_auth(app.local_token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counter = metrics
        .lines()
        .find(|l| l.starts_with("nimbus_usage_invocations_total{") && l.contains("component=\"busy\""))
        .unwrap_or_else(|| panic!("no usage counter in /metrics:\n{metrics}"));
    assert!(counter.contains("tenant=\"acme\"") && counter.ends_with(" 1000"), "{counter}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_loses_nothing_that_was_flushed() {
    let app = App::new(&common::platform::hello_manifest("survivor", "/", "k9"));
    let server = app.up(&["--meter-flush", "1s"]);
    let c = client();
    for _ in 0..300 {
        assert_eq!(c.get(server.url("/")).send().await.unwrap().status(), 200);
    }
    // Flushed within a second; then killed without a chance to write anything more.
    let flushed = cost_until(&app, &[], |r| r["total"]["usage"]["invocations"] == 300);
    assert_eq!(flushed["rows"][0]["app"], "survivor");
    for _ in 0..50 {
        assert_eq!(c.get(server.url("/")).send().await.unwrap().status(), 200);
    }
    drop(server); // SIGKILL
    let _again = app.up(&["--meter-flush", "1s"]);
    let after = cost_until(&app, &[], |_| true);
    let n = after["total"]["usage"]["invocations"].as_u64().unwrap();
    assert!(
        (300..=350).contains(&n),
        "kill -9 loses at most what was recorded since the last flush (the last 50 requests): {n} of 350 kept"
    );
}

fn budget_events(got: &Mutex<Vec<Value>>) -> Vec<u64> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "dev.nimbus.budget.threshold")
        .map(|e| e["data"]["threshold_percent"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_alerts_once_per_threshold_and_its_hard_limit_throttles_only_its_app() {
    let dir = tempfile::tempdir().unwrap();
    // Each invocation costs 0.10 USD: ten of `shop`'s spend its 1.00 USD.
    let cost = dir.path().join("cost.toml");
    std::fs::write(
        &cost,
        "[prices]\ncurrency = \"USD\"\nper_million_invocations = 100000.0\n\n\
         [[budget]]\napp = \"shop\"\nmonthly = 1.0\nalert_at = [50, 100]\nthrottle = true\n",
    )
    .unwrap();
    let (hook, got) = common::webhook_receiver().await;
    let data = dir.path().join("data");
    let p = Platform::start(
        &data,
        &["--cost-config", cost.to_str().unwrap(), "--meter-flush", "1s", "--alert-webhook", &hook],
    );
    let admin = p.admin.clone().unwrap();
    for (name, route) in [("shop", "/shop"), ("blog", "/blog")] {
        let (status, body) = p.deploy(&admin, hello_bundle(name, route, name)).await;
        assert_eq!(status, 201, "{body}");
    }
    let c = client();
    let get = |path: &str| c.get(p.url(path)).send();
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "{what} did not happen; events: {:?}", got.lock().unwrap());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for _ in 0..5 {
        assert_eq!(get("/shop").await.unwrap().status(), 200);
    }
    wait("the 50 % notification", &|| budget_events(&got) == [50]);
    for _ in 0..5 {
        assert_eq!(get("/shop").await.unwrap().status(), 200);
    }
    wait("the 100 % notification", &|| budget_events(&got) == [50, 100]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let resp = get("/shop").await.unwrap();
        if resp.status() == 429 {
            break resp.text().await.unwrap();
        }
        assert!(Instant::now() < deadline, "the hard limit never throttled `shop`");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        refused.contains("budget_exhausted") && refused.contains("app shop reached its monthly budget"),
        "{refused}"
    );
    for _ in 0..5 {
        assert_eq!(get("/blog").await.unwrap().status(), 200, "another app is not throttled");
    }
    let event = got.lock().unwrap().iter().find(|e| e["data"]["threshold_percent"] == 100).cloned().unwrap();
    assert_eq!(event["subject"], "app shop");
    assert_eq!(event["data"]["throttled"], true, "{event}");
    // Later flushes do not notify again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(budget_events(&got), [50, 100]);
    let budgets: Value = serde_json::from_str(&p.admin_cli(&["cost", "--budgets", "--output", "json"])).unwrap();
    let shop = &budgets["budgets"][0];
    assert_eq!((shop["budget"].as_str(), shop["throttled"].as_bool()), (Some("app shop"), Some(true)), "{budgets}");
    // The refused requests were not metered: ten invocations of `shop`, whatever was refused.
    let report: Value =
        serde_json::from_str(&p.admin_cli(&["cost", "--all", "--by", "app", "--output", "json"])).unwrap();
    let shop = report["rows"].as_array().unwrap().iter().find(|r| r["app"] == "shop").unwrap();
    assert_eq!(shop["usage"]["invocations"], 10, "{report:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_operations_and_storage_are_metered() {
    let app = App::new(&format!(
        "[app]\nname = \"store\"\n[component.carts]\nsource = \"{}\"\ngrants = {{ kv = [\"carts\"] }}\n\
         [[trigger.http]]\nroute = \"/set/...\"\ncomponent = \"carts\"\n[[trigger.http]]\nroute = \"/batch/...\"\ncomponent = \"carts\"\n",
        nimbus_fixtures::KV
    ));
    let server = app.up(&["--meter-flush", "1s"]);
    let c = client();
    // 1 MiB in 16 keys, then a batch of 2 writes and 3 reads.
    for i in 0..16 {
        let resp = c.put(server.url(&format!("/set/carts/k{i}"))).body(vec![b'v'; 64 << 10]).send().await.unwrap();
        assert_eq!(resp.status(), 204);
    }
    assert_eq!(c.post(server.url("/batch/carts")).send().await.unwrap().text().await.unwrap(), "a=1,b=2,-");
    let report = cost_until(&app, &["--by", "revision,component"], |r| {
        row(r, "carts")["usage"]["kv_operations"] == 21
            && row(r, "kv/carts")["usage"]["stored_gib_months"].as_f64().is_some_and(|m| m > 0.0)
    });
    let storage = row(&report, "kv/carts");
    assert_eq!(storage["revision"], "", "storage outlives revisions: {storage}");
    assert_eq!(storage["usage"]["invocations"], 0, "{storage}");
    // At most the seconds since the first write of 1 MiB and a little more (the store's own bytes).
    let held = storage["usage"]["stored_gib_months"].as_f64().unwrap() * 30.0 * 86_400.0 * 1024.0;
    assert!(held > 0.0 && held < 120.0, "MiB-seconds held: {held} ({storage})");
    assert!(storage["cost"]["storage"].as_f64().unwrap() > 0.0, "{storage}");
}

/// The tenant label decides whose budget an app's cost counts against: the app's own deployer may
/// not set or change it, an admin may.
#[tokio::test(flavor = "multi_thread")]
async fn deployers_may_not_choose_their_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::start(&dir.path().join("data"), &[]);
    let admin = p.admin.clone().unwrap();
    let bundle = |tenant: Option<&str>| {
        let mut manifest = common::platform::hello_manifest("blog", "/blog", "t");
        if let Some(t) = tenant {
            manifest = manifest.replacen("[app]\n", &format!("[app]\nlabels = {{ tenant = \"{t}\" }}\n"), 1);
        }
        let wasm = std::fs::read(nimbus_fixtures::HELLO).unwrap();
        nimbus_control::Bundle { manifest, artifacts: [("web".to_string(), wasm)].into(), ..Default::default() }.pack()
    };
    let (status, body) = p.deploy(&admin, bundle(None)).await;
    assert_eq!(status, 201, "{body}");
    let out =
        p.admin_cli(&["tokens", "create", "--name", "blogger", "--role", "deployer", "--app", "blog", "-o", "json"]);
    let deployer = serde_json::from_str::<Value>(&out).unwrap()["token"].as_str().unwrap().to_string();
    let (status, body) = p.deploy(&deployer, bundle(Some("acme"))).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("may not change the tenant of app `blog` (none -> acme)"), "{body}");
    let (status, body) = p.deploy(&admin, bundle(Some("acme"))).await;
    assert_eq!(status, 201, "an admin may: {body}");
    // Nor may the deployer take the app out from under the tenant's budget; redeploying under the
    // same tenant is fine.
    let (status, body) = p.deploy(&deployer, bundle(None)).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = p.deploy(&deployer, bundle(Some("acme"))).await;
    assert!(status == 200 || status == 201, "{status} {body}");
}

/// Over its hard limit, an app's workflow starts are refused with 429, and the work that can wait
/// waits: a run its topic starts neither runs nor fails, and no invocation is metered.
#[tokio::test(flavor = "multi_thread")]
async fn over_the_hard_limit_workflows_wait_instead_of_failing() {
    let app = App::new(&format!(
        "[app]\nname = \"shop\"\n[component.order]\nsource = \"{}\"\ngrants = {{ kv = [\"effects\"] }}\n\
         [[trigger.workflow]]\nname = \"order\"\ncomponent = \"order\"\ntopic = \"orders\"\npublic = true\n",
        nimbus_fixtures::WORKFLOW
    ));
    let cost = app.path().join("cost.toml");
    std::fs::write(
        &cost,
        "[prices]\ncurrency = \"USD\"\nper_million_invocations = 100000.0\n\
         [[budget]]\napp = \"shop\"\nmonthly = 0.2\nthrottle = true\n",
    )
    .unwrap();
    let server = app.up(&["--cost-config", cost.to_str().unwrap(), "--meter-flush", "1s"]);
    let c = client();
    let start = || c.post(server.url("/workflows/order")).body("r1;pure").send();
    assert_eq!(start().await.unwrap().status(), 202);
    let home = tempfile::tempdir().unwrap();
    let budgets =
        || -> Value { serde_json::from_str(&ok(app.cli(home.path(), &["cost", "--budgets", "-o", "json"]))).unwrap() };
    let deadline = Instant::now() + Duration::from_secs(30);
    while budgets()["budgets"][0]["throttled"] != true {
        assert!(Instant::now() < deadline, "the budget never closed: {}", budgets());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = start().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.text().await.unwrap().contains("budget_exhausted"));
    let before = cost_until(&app, &[], |_| true)["total"]["usage"]["invocations"].as_u64().unwrap();
    let resp = c
        .post(server.url("/events/orders"))
        .bearer_auth(app.local_token())
        .header("ce-id", "e1")
        .header("ce-source", "/test")
        .header("ce-type", "order.placed")
        .header("ce-specversion", "1.0")
        .body("e1;pure")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let runs: Value = c.get(server.url("/workflows/order")).send().await.unwrap().json().await.unwrap();
    let runs = runs["runs"].as_array().unwrap();
    assert!(runs.iter().all(|r| r["status"] != "failed"), "nothing failed for the budget: {runs:#?}");
    let after = cost_until(&app, &[], |_| true)["total"]["usage"]["invocations"].as_u64().unwrap();
    assert_eq!(after, before, "nothing ran while the gate was closed");
}

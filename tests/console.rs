//! The web console in a real browser: `nimbus server` with an app of two revisions, traffic,
//! a slow request, logs, dead letters, (raised while the browser test runs) an alert and the
//! app's metered usage against a budget; then
//! `tests/console/console.mjs` drives Debian's Chromium through `playwright-core` (installed by
//! `scripts/test.sh`) against `/console/` and checks every page against the API. Screenshots land
//! in `TARGET/console-screenshots`.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::client;
use common::platform::Platform;

const CHROMIUM: &str = "/usr/bin/chromium";

/// The browser-test directory, failing (not skipping) when its tools are missing.
fn browser_tools() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    let chromium = std::env::var("NIMBUS_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
    assert!(
        Path::new(&chromium).exists(),
        "the console's browser test needs Chromium at {chromium}: `apt-get install -y chromium` (scripts/test.sh does), or set NIMBUS_CHROMIUM"
    );
    assert!(
        dir.join("node_modules/playwright-core/package.json").exists(),
        "the console's browser test needs playwright-core: `npm ci --prefix tests/console` (scripts/test.sh does)"
    );
    dir
}

/// `target/console-screenshots` (or under `CARGO_TARGET_DIR`).
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Four components: the kitchen fixture on `/kitchen/...` (sleeps, logs); the kitchen fixture
/// again as `flaky`, on the exact routes `/kitchen/env` and `/kitchen/panic` (which traps: a 500),
/// which the browser test loads steadily and then fails to raise an `error_rate` alert; the events
/// fixture consuming `orders`, which fails events of type `fail` (twice, then they are dead
/// letters); and the order saga as workflow `order`, whose steps write their effects to KV bucket
/// `effects`.
fn bundle(version: &str) -> Vec<u8> {
    let manifest = format!(
        r#"[app]
name = "shop"
version = "{version}"

[component.kitchen]
source = "{kitchen}"
env = {{ MARKER = "{version}" }}

[component.fn]
source = "{events}"
grants = {{ publish = ["handled"] }}

[[trigger.http]]
route = "/kitchen/..."
component = "kitchen"

[component.flaky]
source = "{kitchen}"

[[trigger.http]]
route = "/kitchen/env"
component = "flaky"

[[trigger.http]]
route = "/kitchen/panic"
component = "flaky"

[[trigger.topic]]
topic = "orders"
component = "fn"
public = true
retry = {{ max_attempts = 2, backoff_ms = 10, max_backoff_ms = 20 }}

[component.order]
source = "{workflow}"
grants = {{ kv = ["effects"] }}

[[trigger.workflow]]
name = "order"
component = "order"
public = true
"#,
        kitchen = nimbus_fixtures::KITCHEN,
        events = nimbus_fixtures::EVENTS,
        workflow = nimbus_fixtures::WORKFLOW,
    );
    let artifacts = [
        ("kitchen".to_string(), std::fs::read(nimbus_fixtures::KITCHEN).unwrap()),
        ("flaky".to_string(), std::fs::read(nimbus_fixtures::KITCHEN).unwrap()),
        ("fn".to_string(), std::fs::read(nimbus_fixtures::EVENTS).unwrap()),
        ("order".to_string(), std::fs::read(nimbus_fixtures::WORKFLOW).unwrap()),
    ];
    nimbus_control::Bundle { manifest, artifacts: artifacts.into(), ..Default::default() }.pack()
}

async fn get_json(p: &Platform, token: &str, path: &str) -> serde_json::Value {
    let resp = client().get(p.api_url(path)).bearer_auth(token).send().await.unwrap();
    assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_works_in_a_browser() {
    let tools = browser_tools();
    let data = tempfile::tempdir().unwrap();
    // One point of metrics a second, so that alerting warms up (20 points) and opens an anomaly
    // (3 points) within the browser test; usage flushed every second, costed against a budget
    // of the app so small that its thresholds are reached (not throttled: requests still pass).
    let config = tempfile::tempdir().unwrap();
    let cost = config.path().join("cost.toml");
    std::fs::write(
        &cost,
        "[prices]\ncurrency = \"USD\"\nper_million_invocations = 0.20\n\n[[budget]]\napp = \"shop\"\nmonthly = 0.000001\nalert_at = [50, 100]\n",
    )
    .unwrap();
    let p = Platform::start(
        data.path(),
        &["--metrics-step", "1s", "--meter-flush", "1s", "--cost-config", cost.to_str().unwrap()],
    );
    assert!(p.banner.contains(&format!("Console:     {}/console/", p.api)), "{}", p.banner);
    let admin = p.admin.clone().unwrap();

    // The assets, with their headers, without a browser.
    let resp = client().get(p.api_url("/console")).send().await.unwrap();
    assert_eq!(resp.url().path(), "/console/", "/console redirects to /console/");
    assert!(resp.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert_eq!(client().get(p.api_url("/console/nope.js")).send().await.unwrap().status(), 404);

    // Two revisions (the second takes all traffic).
    for version in ["v1", "v2"] {
        let (status, body) = p.deploy(&admin, bundle(version)).await;
        assert_eq!(status, 201, "{body}");
    }
    let created =
        p.admin_cli(&["tokens", "create", "--name", "console-viewer", "--role", "viewer", "--output", "json"]);
    let viewer: serde_json::Value = serde_json::from_str(&created).unwrap();
    let viewer = viewer["token"].as_str().unwrap().to_string();

    // A slow request (for the trace explorer) and dead letters (for the DLQ page).
    let slow = client().get(p.url("/kitchen/sleep?ms=400")).send().await.unwrap();
    assert_eq!(slow.status(), 200);
    for id in ["bad-1", "bad-2"] {
        let resp = client()
            .post(p.url("/events/orders"))
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-source", "/console-test")
            .header("ce-type", "fail")
            .header("content-type", "application/json")
            .body(r#"{"note":"<img src=x onerror=alert(1)>"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = get_json(&p, &admin, "/v1/apps/shop/topics/orders.dlq/events").await;
        if page["events"].as_array().unwrap().len() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no dead letters: {page}\n{}", p.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A workflow run (its steps write to the `effects` bucket), finished.
    let started: serde_json::Value =
        client().post(p.url("/workflows/order")).body("o1").send().await.unwrap().json().await.unwrap();
    let run = started["run"].as_str().unwrap_or_else(|| panic!("no run: {started}")).to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = get_json(&p, &admin, &format!("/v1/apps/shop/workflows/order/runs/{run}")).await;
        if shown["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "the run did not complete: {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let shots = screenshot_dir();
    let started = Instant::now();
    let out = Command::new("node")
        .arg(tools.join("console.mjs"))
        .env("CONSOLE_URL", p.api_url("/console/"))
        .env("API_URL", &p.api)
        .env("GATEWAY_URL", &p.gateway)
        .env("ADMIN_TOKEN", &admin)
        .env("VIEWER_TOKEN", &viewer)
        .env("APP", "shop")
        .env("CHROMIUM", std::env::var("NIMBUS_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into()))
        .env("SCREENSHOT_DIR", &shots)
        .output()
        .expect("node runs (scripts/test.sh installs Node.js)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed ({:?}):\n{stdout}\n{stderr}\nserver log:\n{}",
        out.status,
        p.stderr()
    );
    println!("{stdout}browser test took {:?}; screenshots in {}", started.elapsed(), shots.display());
    assert!(shots.join("phone-apps.png").exists());
}

/// `nimbus up` serves the console on its local API: the banner names it, `/v1/apps` lists the
/// one app (for the local token only), and the data pages work in the browser.
#[tokio::test(flavor = "multi_thread")]
async fn nimbus_up_serves_the_console() {
    let tools = browser_tools();
    let app = common::App::new(&common::fixtures_manifest("", ""));
    let server = app.up(&[]);
    let api: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(app.path().join(".nimbus/api.json")).unwrap()).unwrap();
    let (url, token) = (api["url"].as_str().unwrap(), api["token"].as_str().unwrap());
    assert!(server.banner.contains(&format!("Console: {url}/console/")), "{}", server.banner);

    let page = client().get(format!("{url}/console/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let apps = client().get(format!("{url}/v1/apps")).send().await.unwrap();
    assert_eq!(apps.status(), 401, "the app list needs the local token");
    let apps: serde_json::Value =
        client().get(format!("{url}/v1/apps")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    assert_eq!((apps[0]["name"].as_str(), apps[0]["revisions"].as_u64()), (Some("fixtures"), Some(0)), "{apps}");
    // A page elsewhere cannot read it (the local guard still applies).
    let foreign = client()
        .get(format!("{url}/v1/apps"))
        .bearer_auth(token)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);

    let out = Command::new("node")
        .arg(tools.join("console.mjs"))
        .env("MODE", "up")
        .env("CONSOLE_URL", format!("{url}/console/"))
        .env("API_URL", url)
        .env("GATEWAY_URL", &server.base)
        .env("ADMIN_TOKEN", token)
        .env("VIEWER_TOKEN", "-")
        .env("APP", "fixtures")
        .env("CHROMIUM", std::env::var("NIMBUS_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into()))
        .env("SCREENSHOT_DIR", screenshot_dir())
        .output()
        .expect("node runs (scripts/test.sh installs Node.js)");
    assert!(
        out.status.success(),
        "the browser test under nimbus up failed ({:?}):\n{}\n{}\nlog:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.stderr()
    );
}

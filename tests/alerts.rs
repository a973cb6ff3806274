//! Operations intelligence end to end, through the public interfaces of a real `nimbus up`: a
//! latency fault injected into one component of a running app (a function calling a service)
//! raises alerts whose root-cause ranking names the service, not its caller; the alerts reach a
//! webhook receiver started by the test as CloudEvents, firing and resolved, and a topic of the
//! app (`--alert-topic`); a silence keeps the
//! next alerts from being notified while they are still recorded; and the CLI shows them.
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{App, client, ok};
use serde_json::Value;

/// A service answering after the delay (ms) in the file `fault` next to it.
const SERVICE: &str = r#"import os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
FAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fault")
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        try:
            ms = int(open(FAULT).read().strip() or 0)
        except (OSError, ValueError):
            ms = 0
        time.sleep(ms / 1000)
        body = b"ok\n"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// `front` (a function, on `/kitchen/...`) calls the service `api` (on `/api/...` too).
fn shop() -> App {
    let app = App::new(&format!(
        r#"[app]
name = "shop"

[component.front]
source = "{kitchen}"
grants = {{ invoke = ["api"], publish = ["alerts"] }}

[component.api]
command = ["python3", "api.py"]
readiness = {{ path = "/api/healthz" }}

[[trigger.http]]
route = "/kitchen/..."
component = "front"

[[trigger.http]]
route = "/api/..."
component = "api"

[[slo]]
route = "/kitchen/..."
p99_ms = 2000
"#,
        kitchen = nimbus_fixtures::KITCHEN
    ));
    std::fs::write(app.path().join("api.py"), SERVICE).unwrap();
    std::fs::write(app.path().join("fault"), "0").unwrap();
    app
}

/// Four clients calling `front` (which calls `api`) until `stop` is set.
fn load(base: &str, stop: Arc<std::sync::atomic::AtomicBool>) {
    for _ in 0..4 {
        let (url, stop) = (format!("{base}/kitchen/outbound?url=http://api.internal/work"), stop.clone());
        tokio::spawn(async move {
            let c = client();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = c.get(&url).send().await.and_then(|r| r.error_for_status());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
}

struct LocalApi {
    url: String,
    token: String,
}

impl LocalApi {
    fn of(app: &App) -> Self {
        let text = std::fs::read_to_string(app.path().join(".nimbus/api.json")).unwrap();
        let api: Value = serde_json::from_str(&text).unwrap();
        Self { url: api["url"].as_str().unwrap().into(), token: api["token"].as_str().unwrap().into() }
    }

    async fn alerts(&self, state: &str) -> Vec<Value> {
        let url = format!("{}/v1/alerts?state={state}", self.url);
        let resp = client().get(url).bearer_auth(&self.token).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<Value>().await.unwrap()["alerts"].as_array().unwrap().clone()
    }

    /// Waits (up to 2 minutes) until an alert satisfies `pred`.
    async fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let all = self.alerts("all").await;
            if let Some(a) = all.iter().find(|a| pred(a)) {
                return a.clone();
            }
            assert!(Instant::now() < deadline, "no alert {what} within 2 minutes; alerts: {all:#?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn events_of(got: &Mutex<Vec<Value>>, kind: &str) -> Vec<Value> {
    got.lock().unwrap().iter().filter(|e| e["type"] == kind).cloned().collect()
}

fn ids_in(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .flat_map(|e| e["data"]["alerts"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_latency_fault_is_detected_ranked_notified_and_silenced() {
    let (hook, got) = common::webhook_receiver().await;
    let app = shop();
    let server = app.up(&["--metrics-step", "1s", "--alert-webhook", &hook, "--alert-topic", "alerts"]);
    let api = LocalApi::of(&app);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    load(&server.base, stop.clone());

    // A baseline of fault-free load: nothing fires.
    tokio::time::sleep(Duration::from_secs(35)).await;
    let early = api.alerts("all").await;
    assert!(
        early.iter().all(|a| a["signal"] != "latency_p95"),
        "no latency alert without a fault: {early:#?}\n{}",
        server.stderr()
    );

    // The service slows down by 300 ms: the caller's latency anomaly is explained by the service.
    std::fs::write(app.path().join("fault"), "300").unwrap();
    let injected = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let front = api
        .wait_for("on front's latency, ranked", |a| {
            a["component"] == "front" && a["signal"] == "latency_p95" && !a["suspects"].as_array().unwrap().is_empty()
        })
        .await;
    assert_eq!(front["kind"], "anomaly");
    assert_eq!(front["suspects"][0]["component"], "api", "the service is the first suspect: {front:#}");
    let evidence = front["suspects"][0]["evidence"].to_string();
    assert!(evidence.contains("own time per request through front"), "{front:#}");
    assert!(!front["suspects"][0]["traces"].as_array().unwrap().is_empty(), "example traces: {front:#}");
    assert!(front["started_at"].as_u64().unwrap() + 5_000 >= injected, "began with the fault: {front:#}");
    assert!(front["value"].as_f64().unwrap() > front["baseline"].as_f64().unwrap() * 2.0, "{front:#}");
    // With the series it was judged on: the baseline's points, then the fault's.
    let series: Vec<f64> = front["series"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).collect();
    assert!(series.len() >= 20, "{front:#}");
    assert!(series.last().unwrap() > &(front["baseline"].as_f64().unwrap() * 2.0), "{series:?}");
    assert!(series[..10].iter().all(|v| *v < 100.0), "fault-free at first: {series:?}");
    let id = front["id"].as_str().unwrap().to_string();
    let one = client().get(format!("{}/v1/alerts/{id}", api.url)).bearer_auth(&api.token).send().await.unwrap();
    assert_eq!(one.json::<Value>().await.unwrap()["id"], id.as_str());

    // It reached the webhook as a CloudEvent.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ids_in(&events_of(&got, "dev.nimbus.alert.firing")).contains(&id) {
        assert!(Instant::now() < deadline, "the webhook got no firing event for {id}: {:#?}", got.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let firing = events_of(&got, "dev.nimbus.alert.firing");
    let event = firing.iter().find(|e| ids_in(std::slice::from_ref(e)).contains(&id)).unwrap();
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["subject"], "shop");
    assert_eq!(event["data"]["group"], "shop");
    // And to the topic of `--alert-topic`, as the same CloudEvent.
    let read = format!("{}/v1/apps/shop/topics/alerts/events?from=0&limit=100", api.url);
    let page: Value = client().get(read).bearer_auth(&api.token).send().await.unwrap().json().await.unwrap();
    let on_topic: Vec<Value> = page["events"].as_array().unwrap().iter().map(|e| e["event"].clone()).collect();
    assert!(ids_in(&on_topic).contains(&id), "the topic has the notification: {page:#}");
    assert!(on_topic.iter().all(|e| e["type"].as_str().unwrap().starts_with("dev.nimbus.alert.")), "{page:#}");

    // The CLI shows it with its suspects.
    let home = tempfile::tempdir().unwrap();
    let listed = ok(app.cli(home.path(), &["alerts", "list", "--all"]));
    assert!(listed.contains(&id), "{listed}");
    let shown = ok(app.cli(home.path(), &["alerts", "show", &id]));
    assert!(shown.contains("1. api"), "{shown}");

    // The fault ends: the alert resolves and the webhook is told.
    std::fs::write(app.path().join("fault"), "0").unwrap();
    api.wait_for("resolved", |a| a["id"] == id.as_str() && a["state"] == "resolved").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ids_in(&events_of(&got, "dev.nimbus.alert.resolved")).contains(&id) {
        assert!(Instant::now() < deadline, "no resolved event for {id}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A silence of no time, or of another app than the one served, is refused; one for the app is
    // kept.
    let silence = |app: &str| format!("{}/v1/apps/{app}/silences", api.url);
    let body = serde_json::json!({ "duration_s": 0 });
    let resp = client().post(silence("shop")).bearer_auth(&api.token).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let body = serde_json::json!({ "duration_s": 60 });
    let resp = client().post(silence("bank")).bearer_auth(&api.token).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = client().post(silence("shop")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let silenced = ok(app.cli(home.path(), &["alerts", "silence", "--for", "10m", "--comment", "drill"]));
    assert!(silenced.starts_with("silence "), "{silenced}");
    assert!(ok(app.cli(home.path(), &["alerts", "silences"])).contains("app=shop"));

    // The same fault again: alerts are recorded, silenced, and not notified.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let before: Vec<String> = api.alerts("all").await.iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
    std::fs::write(app.path().join("fault"), "300").unwrap();
    let again = api
        .wait_for("again, silenced", |a| {
            a["component"] == "front"
                && a["signal"] == "latency_p95"
                && !before.contains(&a["id"].as_str().unwrap().to_string())
        })
        .await;
    assert_eq!(again["silenced"], true, "{again:#}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let notified = ids_in(&got.lock().unwrap());
    assert!(!notified.iter().any(|n| n == again["id"].as_str().unwrap()), "a silenced alert was notified");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}

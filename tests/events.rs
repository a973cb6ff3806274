//! Events end to end through `nimbus up`: the CloudEvents ingress, a topic trigger to a wasm
//! function that publishes (grants.publish), a topic trigger to a service, dead letters, cron,
//! and `kill -9` of the node while publishing and consuming at full speed.
mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{App, client, ok};

/// The recorder service writes its record file on the host, which the service sandbox hides:
/// these tests run services unsandboxed (the sandbox is tested in tests/sandbox.rs).
const UNSANDBOXED: &[&str] = &["--unsandboxed-services"];
const RECORDER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/events/recorder.py");

/// `orders` → the `events` function, which forwards to `handled` → the recorder service;
/// failures go to `orders.dlq` → the recorder too; a cron trigger every second → the recorder.
fn app(record: &Path, cron: bool) -> App {
    let cron = if cron { "[[trigger.cron]]\nschedule = \"* * * * * *\"\ncomponent = \"recorder\"\n" } else { "" };
    App::new(&format!(
        r#"[app]
name = "shop"

[component.fn]
source = "{events}"
grants = {{ publish = ["handled"] }}
limits = {{ timeout_ms = 2000 }}

[component.recorder]
command = ["python3", "{RECORDER}"]
env = {{ RECORD_FILE = "{record}" }}
readiness = {{ path = "/" }}

[[trigger.topic]]
topic = "orders"
component = "fn"
public = true
retry = {{ max_attempts = 3, backoff_ms = 10, max_backoff_ms = 50 }}

[[trigger.topic]]
topic = "handled"
component = "recorder"
path = "/handled"

[[trigger.topic]]
topic = "orders.dlq"
component = "recorder"

{cron}"#,
        events = nimbus_fixtures::EVENTS,
        record = record.display()
    ))
}

fn records(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').map(str::to_string).collect())
        .collect()
}

fn wait_for(path: &Path, what: &str, pred: impl Fn(&[Vec<String>]) -> bool) -> Vec<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = records(path);
        if pred(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; records: {r:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn publish(base: &str, topic: &str, id: &str, ty: &str) -> reqwest::Response {
    client()
        .post(format!("{base}/events/{topic}"))
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/test")
        .header("ce-type", ty)
        .header("ce-target", "handled")
        .header("content-type", "text/plain")
        .body("payload")
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn events_flow_from_ingress_through_a_function_to_a_service() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.txt");
    let app = app(&record, false);
    let server = app.up(UNSANDBOXED);
    assert!(server.banner.contains("topic orders (group fn)"), "{}", server.banner);
    assert!(server.banner.contains("POST http://"), "{}", server.banner);

    // Binary mode, with a trace context that reaches the service.
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = client()
        .post(server.url("/events/orders"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "o-1")
        .header("ce-source", "/test")
        .header("ce-type", "forward")
        .header("ce-target", "handled")
        .header("traceparent", trace)
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let ack: serde_json::Value = resp.json().await.unwrap();
    assert_eq!((ack["topic"].as_str(), ack["duplicate"].as_bool()), (Some("orders"), Some(false)));
    // Structured mode.
    let structured = serde_json::json!({"specversion": "1.0", "id": "o-2", "source": "/test", "type": "forward", "target": "handled", "data": {"n": 2}});
    let resp = client()
        .post(server.url("/events/orders"))
        .header("content-type", "application/cloudevents+json")
        .body(structured.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    // A re-publish of o-1 is a duplicate: acknowledged, not delivered twice.
    let again = publish(&server.base, "orders", "o-1", "forward").await;
    assert_eq!(again.json::<serde_json::Value>().await.unwrap()["duplicate"], true);

    let r = wait_for(&record, "both forwarded events", |r| r.iter().filter(|l| l[0] == "forwarded").count() >= 2);
    let forwarded: Vec<_> = r.iter().filter(|l| l[0] == "forwarded").collect();
    assert_eq!(forwarded.len(), 2, "{r:?}");
    // The trace went along: same trace id, the service's parent is the span that delivered to it.
    let trace_id = trace.split('-').nth(1).unwrap();
    assert!(
        forwarded.iter().any(|l| l[1] == "fwd-o-1" && l[3].split('-').nth(1) == Some(trace_id) && l[3] != trace),
        "the trace context went along: {r:?}"
    );
    assert!(forwarded.iter().any(|l| l[1] == "fwd-o-2"));

    // A poison event: 3 attempts, then the dead-letter topic (delivered to the recorder).
    assert_eq!(publish(&server.base, "orders", "bad-1", "fail").await.status(), 202);
    let r = wait_for(&record, "the dead letter", |r| r.iter().any(|l| l[1] == "bad-1"));
    let dead = r.iter().find(|l| l[1] == "bad-1").unwrap();
    assert_eq!((dead[0].as_str(), dead[2].as_str()), ("fail", "failed"), "{r:?}");
    let log = server.wait_for_log("moved to the dead-letter topic");
    assert!(log.contains("attempts=3"), "{log}");
    // Rejected by the function: no retries at all.
    assert_eq!(publish(&server.base, "orders", "bad-2", "reject").await.status(), 202);
    let r = wait_for(&record, "the rejected event", |r| r.iter().any(|l| l[1] == "bad-2"));
    assert_eq!(r.iter().find(|l| l[1] == "bad-2").unwrap()[2], "rejected");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_events_get_a_clear_error_and_are_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.txt");
    let app = app(&record, false);
    let server = app.up(UNSANDBOXED);
    let c = client();
    let not_ce = c.post(server.url("/events/orders")).body("hello").send().await.unwrap();
    assert_eq!(not_ce.status(), 400);
    assert!(not_ce.text().await.unwrap().contains("ce-specversion"));
    let bad_json = c
        .post(server.url("/events/orders"))
        .header("content-type", "application/cloudevents+json")
        .body("{\"specversion\":")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), 400);
    let no_source = c
        .post(server.url("/events/orders"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "x")
        .header("ce-type", "t")
        .send()
        .await
        .unwrap();
    assert_eq!(no_source.status(), 400);
    // A topic that is not public (here: one that does not exist) needs the token; with it, an
    // unknown topic is a 404 naming the app's topics.
    let unknown = publish(&server.base, "nope", "1", "ok").await;
    assert_eq!(unknown.status(), 401);
    let unknown = c
        .post(server.url("/events/nope"))
        .bearer_auth(app.local_token())
        .header("ce-specversion", "1.0")
        .header("ce-id", "1")
        .header("ce-source", "/t")
        .header("ce-type", "ok")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(unknown.text().await.unwrap().contains("`orders`"));
    assert_eq!(c.get(server.url("/events/orders")).send().await.unwrap().status(), 405);
    // An event announced larger than the limit is refused before its body is read (sent raw: a
    // client still writing the body could see the connection close before it reads the answer).
    let huge = common::send_raw(
        &server.base,
        format!(
            "POST /events/orders HTTP/1.1\r\nHost: x\r\nce-specversion: 1.0\r\nce-id: big\r\nce-source: /t\r\nce-type: ok\r\nContent-Length: {}\r\n\r\n",
            2 << 20
        )
        .as_bytes(),
    )
    .await;
    assert!(huge.starts_with("HTTP/1.1 413"), "{huge}");
    // Nothing of the above was delivered.
    assert_eq!(publish(&server.base, "orders", "good", "forward").await.status(), 202);
    let r = wait_for(&record, "the good event", |r| !r.is_empty());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(records(&record).len(), 1, "{r:?}");
}

/// A service's answer decides a delivery by its status; a body that never ends (streamed without
/// end, or announced and never sent) must not hold the delivery or be buffered whole. One event
/// at a time per trigger: the second event of each topic arrives only once the first's delivery
/// is over.
#[tokio::test(flavor = "multi_thread")]
async fn a_service_answer_whose_body_never_ends_does_not_hold_the_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.txt");
    let service = |name: &str, status: u16, body: &str| {
        format!(
            "[component.{name}]\ncommand = [\"python3\", \"{RECORDER}\"]\nenv = {{ RECORD_FILE = \"{}\", STATUS = \"{status}\", BODY = \"{body}\" }}\nreadiness = {{ path = \"/\" }}\n",
            record.display()
        )
    };
    let trigger = |topic: &str, component: &str| {
        format!(
            "[[trigger.topic]]\ntopic = \"{topic}\"\ncomponent = \"{component}\"\npublic = true\nconcurrency = 1\nretry = {{ max_attempts = 2, backoff_ms = 10, max_backoff_ms = 10 }}\n"
        )
    };
    let app = App::new(&format!(
        "[app]\nname = \"answers\"\n{}{}{}{}",
        service("endless", 200, "endless"),
        service("stalled", 503, "stall"),
        trigger("streams", "endless"),
        trigger("stalls", "stalled"),
    ));
    let server = app.up(UNSANDBOXED);
    for (topic, id) in [("streams", "s-1"), ("streams", "s-2"), ("stalls", "t-1"), ("stalls", "t-2")] {
        assert_eq!(publish(&server.base, topic, id, "answer").await.status(), 202);
    }
    // s-1 was acknowledged (its 200 decided it) and s-2 followed; t-1 failed twice (the 503
    // decided each attempt), was dead-lettered, and t-2 followed.
    let r = wait_for(&record, "every event's deliveries", |r| {
        let n = |id: &str| r.iter().filter(|l| l[1] == id).count();
        n("s-2") >= 1 && n("t-2") >= 2
    });
    let n = |id: &str| r.iter().filter(|l| l[1] == id).count();
    assert_eq!((n("s-1"), n("t-1")), (1, 2), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cron_fires_once_per_tick() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.txt");
    let app = app(&record, true);
    let server = app.up(UNSANDBOXED);
    assert!(server.banner.contains("cron * * * * * * (UTC)"), "{}", server.banner);
    let r = wait_for(&record, "three ticks", |r| r.iter().filter(|l| l[0] == "dev.nimbus.cron.tick").count() >= 3);
    let ticks: Vec<&String> = r.iter().filter(|l| l[0] == "dev.nimbus.cron.tick").map(|l| &l[1]).collect();
    let unique: HashSet<_> = ticks.iter().collect();
    assert_eq!(unique.len(), ticks.len(), "each tick once: {ticks:?}");
}

#[test]
fn a_trigger_on_a_function_without_an_event_handler_is_refused() {
    let app = App::new(&format!(
        "[app]\nname = \"x\"\n[component.hello]\nsource = \"{}\"\n[[trigger.topic]]\ntopic = \"orders\"\ncomponent = \"hello\"\n",
        nimbus_fixtures::HELLO
    ));
    let out = app.run(&["up", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("trigger.topic[0].component") && err.contains("nimbus:events/handler"), "{err}");
}

/// Publishers and consumers at full speed, `kill -9` of the node, restart: every acknowledged
/// event is delivered at least once (0 lost); duplicates are counted and reported.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.txt");
    let app = app(&record, false);
    let mut server = app.up(UNSANDBOXED);
    let base = server.base.clone();
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut publishers = Vec::new();
    for p in 0..8 {
        let (acked, stop, base) = (acked.clone(), stop.clone(), base.clone());
        publishers.push(tokio::spawn(async move {
            let c = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let id = format!("p{p}-{i}");
                let sent = c
                    .post(format!("{base}/events/orders"))
                    .header("ce-specversion", "1.0")
                    .header("ce-id", &id)
                    .header("ce-source", "/load")
                    .header("ce-type", "forward")
                    .header("ce-target", "handled")
                    .body(vec![b'x'; 1024])
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 202 => {
                        acked.lock().unwrap().insert(id);
                    }
                    Ok(_) | Err(_) => return, // the node is gone
                }
            }
        }));
    }
    // Let it run until deliveries are flowing, then SIGKILL the node mid-stream.
    wait_for(&record, "deliveries under load", |r| r.len() >= 300);
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(10));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in publishers {
        p.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let before = records(&record).len();
    assert!(
        acked.len() > before,
        "the kill happened while events were still queued ({} acked, {before} delivered)",
        acked.len()
    );

    let _server = app.up(UNSANDBOXED);
    let r = wait_for(&record, "every acknowledged event after the restart", |r| {
        let seen: HashSet<&str> = r.iter().filter_map(|l| l[1].strip_prefix("fwd-")).collect();
        acked.iter().all(|id| seen.contains(id.as_str()))
    });
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for l in &r {
        *counts.entry(l[1].as_str()).or_default() += 1;
    }
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "kill -9 of nimbus up (embedded bus): {} acknowledged, 0 lost, {before} delivered before the kill, {duplicates} delivered more than once",
        acked.len()
    );
}

/// `nimbus events` against the `nimbus up` of the current directory.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_publishes_tails_lists_and_replays_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.txt");
    let app = app(&record, false);
    let server = app.up(UNSANDBOXED);
    assert!(server.banner.contains("Local API: http://127.0.0.1:"), "{}", server.banner);
    let home = dir.path();
    let out =
        ok(app.cli(home, &["events", "publish", "orders", "--type", "fail", "--id", "cli-1", "--data", "{\"n\":1}"]));
    assert!(out.starts_with("published cli-1 to orders (seq "), "{out}");
    let again = ok(app.cli(home, &["events", "publish", "orders", "--type", "fail", "--id", "cli-1"]));
    assert!(again.starts_with("duplicate of event cli-1"), "{again}");

    let list = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let page: serde_json::Value =
                serde_json::from_str(&ok(app.cli(home, &["events", "dlq", "list", "orders", "--output", "json"])))
                    .unwrap();
            if page["events"].as_array().unwrap().len() >= n {
                return page;
            }
            assert!(Instant::now() < deadline, "no {n} dead letters: {page}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let page = list(1);
    let dead = &page["events"][0]["event"];
    assert_eq!(
        (dead["id"].as_str(), dead["nimbuserrorcode"].as_str(), dead["nimbusattempts"].as_i64()),
        (Some("cli-1"), Some("failed"), Some(3))
    );
    let text = ok(app.cli(home, &["events", "dlq", "list", "orders"]));
    assert!(text.contains("cli-1") && text.contains("attempts=3") && text.contains("function:fn"), "{text}");

    let tail = ok(app.cli(home, &["events", "tail", "orders", "--all", "--no-follow"]));
    assert!(tail.contains("cli-1") && tail.contains(" fail ") && tail.contains("{\"n\":1}"), "{tail}");
    let json_tail = ok(app.cli(home, &["events", "tail", "orders", "--all", "--no-follow", "--output", "json"]));
    let first: serde_json::Value = serde_json::from_str(json_tail.lines().next().unwrap()).unwrap();
    assert_eq!(first["event"]["id"], "cli-1");

    // Replay while the handler still fails: delivered again, dead-lettered again.
    let replayed = ok(app.cli(home, &["events", "dlq", "replay", "orders"]));
    assert_eq!(replayed.trim(), "replayed 1 dead letter(s) from orders.dlq");
    list(2);
    assert_eq!(
        ok(app.cli(home, &["events", "dlq", "replay", "orders"])).trim(),
        "replayed 1 dead letter(s) from orders.dlq"
    );

    // The API wants the token of .nimbus/api.json.
    let api: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(app.path().join(".nimbus/api.json")).unwrap()).unwrap();
    let url = format!("{}/v1/apps/shop/topics/orders/events", api["url"].as_str().unwrap());
    assert_eq!(client().get(&url).send().await.unwrap().status(), 401);
    assert_eq!(client().get(&url).bearer_auth("nbl_wrong").send().await.unwrap().status(), 401);
    assert_eq!(client().get(&url).bearer_auth(api["token"].as_str().unwrap()).send().await.unwrap().status(), 200);
    // `nimbus up` has the data of its one app only.
    let other = url.replace("/apps/shop/", "/apps/other/");
    assert_eq!(client().get(&other).bearer_auth(api["token"].as_str().unwrap()).send().await.unwrap().status(), 404);
    let bad = app.cli(home, &["events", "publish", "Bad!"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lowercase"), "{}", String::from_utf8_lossy(&bad.stderr));
}

/// `nimbus server`: a deployed app's topic triggers run on the revision with the most traffic,
/// events come in through the gateway and are read through the control API.
#[tokio::test(flavor = "multi_thread")]
async fn a_deployed_app_consumes_its_topics_on_a_server() {
    let data = tempfile::tempdir().unwrap();
    let platform = common::platform::Platform::start(data.path(), UNSANDBOXED);
    let app = App::new(&format!(
        "[app]\nname = \"shop\"\n[component.fn]\nsource = \"{}\"\ngrants = {{ publish = [\"handled\"] }}\n[[trigger.topic]]\ntopic = \"orders\"\ncomponent = \"fn\"\npublic = true\n",
        nimbus_fixtures::EVENTS
    ));
    let deployed = platform.admin_cli(&["deploy", app.path().to_str().unwrap()]);
    assert!(deployed.contains("shop"), "{deployed}");
    let resp = publish(&platform.gateway, "orders", "s-1", "forward").await;
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tail = platform.admin_cli(&["events", "tail", "--app", "shop", "handled", "--all", "--no-follow"]);
        if tail.contains("fwd-s-1") {
            break;
        }
        assert!(Instant::now() < deadline, "the event was not handled: {}", platform.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Topics belong to their app: a token limited to the app reads them, to another app not.
    let created = platform.admin_cli(&[
        "tokens",
        "create",
        "--name",
        "shop-viewer",
        "--role",
        "viewer",
        "--app",
        "shop",
        "--output",
        "json",
    ]);
    let scoped: serde_json::Value = serde_json::from_str(&created).unwrap();
    let out =
        platform.cli(scoped["token"].as_str(), &["events", "tail", "--app", "shop", "handled", "--all", "--no-follow"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("fwd-s-1"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = platform
        .cli(scoped["token"].as_str(), &["events", "tail", "--app", "other", "handled", "--all", "--no-follow"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("may not touch app `other`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn under_up_a_topic_that_is_not_public_takes_only_the_local_token() {
    let app = App::new(&format!(
        "[app]\nname = \"shop\"\n[component.fn]\nsource = \"{}\"\ngrants = {{ publish = [\"handled\"] }}\n\
         [[trigger.topic]]\ntopic = \"orders\"\ncomponent = \"fn\"\n\
         [[trigger.topic]]\ntopic = \"open\"\ncomponent = \"fn\"\npublic = true\n",
        nimbus_fixtures::EVENTS
    ));
    let server = app.up(&[]);
    let send = |topic: &str, id: &str, token: Option<String>| {
        let mut req = client()
            .post(server.url(&format!("/events/{topic}")))
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-source", "/test")
            .header("ce-type", "ok");
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        async move {
            let resp = req.send().await.unwrap();
            let auth = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
            (resp.status().as_u16(), auth, resp.text().await.unwrap())
        }
    };
    assert_eq!(send("open", "o-1", None).await.0, 202);
    let (status, auth, body) = send("orders", "a-1", None).await;
    assert_eq!((status, auth.as_deref()), (401, Some("Bearer")), "{body}");
    assert!(body.contains("public = true"), "{body}");
    assert_eq!(send("orders", "a-2", Some("nbl_guessed".into())).await.0, 401);
    assert_eq!(send("orders", "a-3", Some(app.local_token())).await.0, 202);
    // Only the event sent with the token is in the topic.
    let home = tempfile::tempdir().unwrap();
    let stored = ok(app.cli(home.path(), &["events", "tail", "orders", "--all", "--no-follow"]));
    assert!(stored.contains("a-3") && !stored.contains("a-1") && !stored.contains("a-2"), "{stored}");
}

/// The gateway's own endpoints, as `openapi/nimbus-v1.json` documents them (tag `gateway`):
/// every documented operation is called on a running gateway and answers with one of its
/// documented statuses, errors in the documented shape.
#[tokio::test(flavor = "multi_thread")]
async fn the_gateways_endpoints_answer_as_the_openapi_document_says() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir.path().join("record.txt"), false);
    let server = app.up(UNSANDBOXED);
    let doc: serde_json::Value =
        serde_json::from_str(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/nimbus-v1.json"))).unwrap();
    let mut untested: HashSet<(String, String)> = HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == "gateway")) {
                untested.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(untested.len() >= 8, "the gateway's operations are documented: {untested:?}");
    let c = client();
    type Headers = &'static [(&'static str, &'static str)];
    let cases: &[(&str, &str, &str, Headers)] = &[
        ("GET", "/healthz", "/healthz", &[]),
        (
            "POST",
            "/events/{topic}",
            "/events/orders",
            &[("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "/t"), ("ce-type", "t")],
        ),
        ("POST", "/events/{topic}", "/events/orders", &[("ce-specversion", "1.0")]),
        ("POST", "/events/{topic}", "/events/nope", &[]),
        ("POST", "/actors/{type}/{key}/{method}", "/actors/cart/1/add", &[]),
        ("POST", "/workflows/{name}", "/workflows/order", &[]),
        ("GET", "/workflows/{name}", "/workflows/order", &[]),
        ("GET", "/workflows/{name}/{run}", "/workflows/order/r1", &[]),
        ("POST", "/workflows/{name}/{run}/signals/{signal}", "/workflows/order/r1/signals/paid", &[]),
        ("POST", "/workflows/{name}/{run}/cancel", "/workflows/order/r1/cancel", &[]),
    ];
    for (method, template, path, headers) in cases {
        let op = &doc["paths"][template][method.to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not documented");
        let mut req = c.request(method.parse().unwrap(), server.url(path)).body("{}");
        for (k, v) in *headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16().to_string();
        assert!(
            op["responses"][&status].is_object(),
            "{method} {path} answered {status}, not documented: {}",
            op["responses"]
        );
        if resp.status().as_u16() >= 400 {
            let body: serde_json::Value = resp.json().await.unwrap();
            for field in ["error", "status", "request_id"] {
                assert!(!body[field].is_null(), "{method} {path}: {field} missing from {body}");
            }
        }
        untested.remove(&(method.to_string(), template.to_string()));
    }
    assert!(untested.is_empty(), "documented but not called here: {untested:?}");
}

//! Durable workflows end to end through `nimbus up`: the order saga fixture (reserve → charge →
//! ship, undone by release and refund) run, retried, compensated, cancelled, signalled, put to
//! sleep across `kill -9`, replayed against changed behaviour, and refused bad input.
mod common;

use std::time::{Duration, Instant};

use common::{App, client, ok};
use serde_json::Value;

/// The manifest of [`app`], its version `version` (a different revision for each).
fn manifest(extra: &str, version: &str) -> String {
    format!(
        "[app]\nname = \"shop\"\nversion = \"{version}\"\n\
         [component.order]\nsource = \"{}\"\ngrants = {{ kv = [\"effects\"] }}\n{extra}\
         [[trigger.workflow]]\nname = \"order\"\ncomponent = \"order\"\npublic = true\n\
         [component.kv]\nsource = \"{}\"\ngrants = {{ kv = [\"effects\"] }}\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"kv\"\n",
        nimbus_fixtures::WORKFLOW,
        nimbus_fixtures::KV
    )
}

/// The saga as workflow `order` (public, so the tests need no token) and the KV fixture on `/...`
/// reading the bucket its steps write their effects to; `extra` goes into the saga's component.
fn app(extra: &str) -> App {
    App::new(&manifest(extra, "1"))
}

async fn start(base: &str, input: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = client().post(format!("{base}/workflows/order")).body(input.to_string());
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn show(base: &str, run: &str) -> Value {
    client().get(format!("{base}/workflows/order/{run}")).send().await.unwrap().json().await.unwrap()
}

/// Polls the run until `done` says so (at most 30 s).
async fn until(base: &str, run: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = show(base, run).await;
        if done(&shown) {
            return shown;
        }
        assert!(Instant::now() < deadline, "run {run} never got there: {shown:#}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn status_is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["status"] == status
}

fn finished(v: &Value) -> bool {
    matches!(v["status"].as_str(), Some("completed" | "failed" | "cancelled"))
}

/// The keys of bucket `effects` starting with `prefix`.
async fn effects(base: &str, prefix: &str) -> Vec<String> {
    let text = client().get(format!("{base}/list/effects")).send().await.unwrap().text().await.unwrap();
    text.lines().filter(|k| k.starts_with(prefix)).map(str::to_string).collect()
}

fn kinds(shown: &Value) -> Vec<String> {
    shown["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {}", e["kind"].as_str().unwrap(), e["name"].as_str().unwrap_or("")).trim().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saga_runs_its_steps_once_retrying_a_flaky_one_and_journals_now_and_random() {
    let app = app("");
    let server = app.up(&[]);
    assert!(server.banner.contains("/workflows/order") && server.banner.contains("(workflow)"), "{}", server.banner);
    let (status, started) = start(&server.base, "o1;now;flaky-charge", None).await;
    assert_eq!(status, 202, "{started}");
    let run = started["run"].as_str().unwrap().to_string();
    let done = until(&server.base, &run, finished).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert!(done["output"].as_str().unwrap().starts_with("done o1 now="), "{done:#}");
    assert_eq!(kinds(&done), ["now", "random", "step reserve", "step charge", "step ship"]);
    let timeline = done["timeline"].as_array().unwrap();
    assert_eq!(timeline[3]["retries"], 2, "charge failed twice, then succeeded: {done:#}");
    assert_eq!(timeline[2]["compensate"], "release");
    // The journaled `now` is what the output says (a replay would return the same).
    let now = timeline[0]["payload"].as_str().unwrap();
    assert!(done["output"].as_str().unwrap().contains(&format!("now={now} ")), "{done:#}");
    // Each step's effect once, keyed by its idempotency key (run/position).
    let mut applied = effects(&server.base, &format!("effect/{run}/")).await;
    applied.sort();
    assert_eq!(applied, [2, 3, 4].map(|p| format!("effect/{run}/{p}")));
    assert!(effects(&server.base, "undo/").await.is_empty(), "nothing was undone");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_step_undoes_the_done_ones_newest_first_and_the_cli_shows_it() {
    let app = app("");
    let server = app.up(&[]);
    let home = tempfile::tempdir().unwrap();
    let run = ok(app.cli(home.path(), &["workflows", "start", "order", "--data", "o2;fail-ship"])).trim().to_string();
    let done = until(&server.base, &run, finished).await;
    assert_eq!(done["status"], "failed", "{done:#}");
    assert!(done["error"].as_str().unwrap().contains("ship failed: ship refused"), "{done:#}");
    assert_eq!(
        kinds(&done),
        ["step reserve", "step charge", "step ship", "compensation refund", "compensation release"],
        "refund (of charge) before release (of reserve)"
    );
    assert_eq!(done["timeline"][2]["retries"], Value::Null, "a step error that is not retryable is not retried");
    assert_eq!(effects(&server.base, "undo/").await.len(), 2);
    let shown = ok(app.cli(home.path(), &["workflows", "show", "order", &run]));
    for needle in
        ["status    failed", "step ship", "failed: ship refused", "compensation refund", "compensated step #2"]
    {
        assert!(shown.contains(needle), "`{needle}` in:\n{shown}");
    }
    let listed = ok(app.cli(home.path(), &["workflows", "list", "order", "--status", "failed"]));
    assert!(listed.contains(&run) && listed.contains("local"), "{listed}");
    let unfinished = ok(app.cli(home.path(), &["workflows", "runs", "order"]));
    assert!(!unfinished.contains(&run), "{unfinished}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_durable_sleep_and_a_signal_wait_survive_kill_9() {
    let app = app("");
    let mut server = app.up(&[]);
    let (_, started) = start(&server.base, "o3;sleep=2500;signal", None).await;
    let run = started["run"].as_str().unwrap().to_string();
    let waiting = until(&server.base, &run, status_is("waiting")).await;
    assert_eq!(kinds(&waiting), ["step reserve", "sleep"], "{waiting:#}");
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(10));
    {
        // An unfinished run whose record this build cannot read (a disk fault, a newer format)
        // is skipped: it does not stop the others from resuming.
        use nimbus_state::KvStore as _;
        let kv = nimbus_state::Embedded::open(&app.path().join(".nimbus/state.redb")).unwrap();
        let journal = nimbus_state::Bucket::new("shop", "workflows").unwrap();
        kv.set(&journal, "a/zzzz", "".into(), None).await.unwrap();
        kv.set(&journal, "r/zzzz", "garbage".into(), None).await.unwrap();
    }
    let server = app.up(&[]);
    // The timer fires in the new process, then the run waits for the signal.
    let waiting = until(&server.base, &run, |v| {
        v["status"] == "waiting" && kinds(v).last().map(String::as_str) == Some("await-signal approve")
    })
    .await;
    assert_eq!(kinds(&waiting), ["step reserve", "sleep", "step charge", "await-signal approve"]);
    // Path segments are %-decoded: `appr%6Fve` is `approve`.
    let resp = client()
        .post(server.url(&format!("/workflows/order/{run}/signals/appr%6Fve")))
        .body("yes")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let done = until(&server.base, &run, finished).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["output"], "done o3 approved=yes");
    let listed: Value = client().get(server.url("/workflows/order")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["runs"].as_array().unwrap().len(), 1, "the unreadable run is left out: {listed:#}");
    // Every step ran to its effect once, though the process died in the middle.
    assert_eq!(effects(&server.base, &format!("effect/{run}/")).await.len(), 3);
    // A finished run takes no more signals.
    let resp = client().post(server.url(&format!("/workflows/order/{run}/signals/approve"))).send().await.unwrap();
    assert_eq!(resp.status(), 409);
    assert!(resp.text().await.unwrap().contains("completed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_wait_times_out_and_a_cancelled_run_is_compensated() {
    let app = app("");
    let server = app.up(&[]);
    let (_, timed) = start(&server.base, "o4;signal;signal-timeout=1500", None).await;
    let (_, waits) = start(&server.base, "o5;signal", None).await;
    let waits = waits["run"].as_str().unwrap().to_string();
    let done = until(&server.base, timed["run"].as_str().unwrap(), finished).await;
    assert_eq!(done["status"], "failed");
    assert!(done["error"].as_str().unwrap().contains("not approved in time"), "{done:#}");
    until(&server.base, &waits, status_is("waiting")).await;
    let signal = |name: &str, body: Vec<u8>| {
        client().post(server.url(&format!("/workflows/order/{waits}/signals/{name}"))).body(body).send()
    };
    assert_eq!(signal("appr%00ve", Vec::new()).await.unwrap().status(), 400, "a control character in a name");
    assert_eq!(signal(&"n".repeat(200), Vec::new()).await.unwrap().status(), 400, "a name over 128 bytes");
    assert_eq!(signal("other", vec![b'x'; 70 * 1024]).await.unwrap().status(), 413, "a payload over 64 KiB");
    let resp = client().post(server.url(&format!("/workflows/order/{waits}/cancel"))).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let done = until(&server.base, &waits, finished).await;
    assert_eq!(done["status"], "cancelled", "{done:#}");
    assert_eq!(kinds(&done)[3..], ["compensation refund", "compensation release"]);
    let resp = client().post(server.url(&format!("/workflows/order/{waits}/cancel"))).send().await.unwrap();
    assert_eq!(resp.status(), 409, "a finished run cannot be cancelled again");
}

#[tokio::test(flavor = "multi_thread")]
async fn starting_twice_with_one_idempotency_key_starts_one_run() {
    let app = app("");
    let server = app.up(&[]);
    let (first, a) = start(&server.base, "o6", Some("order-6")).await;
    let (second, b) = start(&server.base, "o6-again", Some("order-6")).await;
    assert_eq!((first, second), (202, 200));
    assert_eq!(a["run"], b["run"], "the second start answers the first run");
    until(&server.base, a["run"].as_str().unwrap(), finished).await;
    let listed: Value = client().get(server.url("/workflows/order")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["runs"].as_array().unwrap().len(), 1, "{listed:#}");
    // Racing starts with one key and different inputs: one run, on the input of the start that
    // got 202 (a loser never stores its own input over the winner's).
    for i in 0..10 {
        let key = format!("race-{i}");
        let (input_a, input_b) = (format!("a{i};pure"), format!("b{i};pure"));
        let (a, b) = tokio::join!(start(&server.base, &input_a, Some(&key)), start(&server.base, &input_b, Some(&key)));
        assert_eq!(a.1["run"], b.1["run"]);
        let winner = if a.0 == 202 { "a" } else { "b" };
        assert_eq!([a.0, b.0].iter().filter(|s| **s == 202).count(), 1, "{a:?} {b:?}");
        let done = until(&server.base, a.1["run"].as_str().unwrap(), finished).await;
        assert_eq!(done["output"], format!("done {winner}{i}"), "{done:#}");
    }
    // The journal's bucket cannot be written through the data API (that would forge history).
    let api: Value =
        serde_json::from_str(&std::fs::read_to_string(app.path().join(".nimbus/api.json")).unwrap()).unwrap();
    let forged = client()
        .put(format!("{}/v1/apps/shop/kv/workflows/keys/j%2Fx%2F000000", api["url"].as_str().unwrap()))
        .bearer_auth(app.local_token())
        .header("content-type", "application/octet-stream")
        .body("forged")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    // Bad requests get precise answers and start nothing.
    // An unknown workflow is not public: who may not write the app's data learns nothing.
    let resp = client().post(server.url("/workflows/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client().post(server.url("/workflows/nope")).bearer_auth(app.local_token()).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("no workflow `nope`"));
    let resp = client().get(server.url("/workflows/order/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp =
        client().post(server.url("/workflows/order")).header("idempotency-key", "x".repeat(300)).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = client().post(server.url("/workflows/order")).body(vec![b'x'; 600 * 1024]).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    let resp = client().delete(server.url("/workflows/order")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
}

#[tokio::test(flavor = "multi_thread")]
async fn trapping_and_looping_steps_are_retried_then_fail_and_a_huge_result_is_refused() {
    let app = app("limits = { timeout_ms = 400 }\n");
    let server = app.up(&[]);
    let mut runs = Vec::new();
    // The last one's undo steps answer more than a journal entry holds (their input is a step's
    // output, which is the 524,275-byte id): they still count as done, and the run ends.
    let huge = format!("{};fail-ship", "F".repeat(524_275));
    for input in ["o7;trap-reserve", "o8;loop-charge", "o9;big-reserve", huge.as_str()] {
        runs.push(start(&server.base, input, None).await.1["run"].as_str().unwrap().to_string());
    }
    let trapped = until(&server.base, &runs[0], finished).await;
    assert_eq!(trapped["status"], "failed");
    assert!(trapped["error"].as_str().unwrap().contains("reserve failed"), "{trapped:#}");
    assert_eq!(trapped["timeline"][0]["retries"], 2, "a trap is retried: {trapped:#}");
    let looped = until(&server.base, &runs[1], finished).await;
    assert_eq!(looped["status"], "failed");
    assert!(looped["error"].as_str().unwrap().contains("charge failed"), "{looped:#}");
    assert!(looped["error"].as_str().unwrap().contains("time"), "stopped by its timeout: {looped:#}");
    assert_eq!(kinds(&looped), ["step reserve", "step charge", "compensation release"]);
    let big = until(&server.base, &runs[2], finished).await;
    assert_eq!(big["status"], "failed");
    assert!(big["error"].as_str().unwrap().contains("over the journal's limit"), "{big:#}");
    let undone = until(&server.base, &runs[3], finished).await;
    assert_eq!(undone["status"], "failed", "{}", undone["error"]);
    assert!(undone["error"].as_str().unwrap().ends_with("ship failed: ship refused"), "{}", undone["error"]);
    assert_eq!(kinds(&undone)[3..], ["compensation refund", "compensation release"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_that_asks_for_another_step_fails_the_run_precisely() {
    let app = app("");
    let server = app.up(&[]);
    let (_, started) = start(&server.base, "o10;kvswitch;sleep=2000", None).await;
    let run = started["run"].as_str().unwrap().to_string();
    until(&server.base, &run, status_is("waiting")).await;
    // What `run` reads changes while it sleeps: its replay takes another path.
    let resp = client().put(server.url("/set/effects/variant")).body("2").send().await.unwrap();
    assert!(resp.status().is_success());
    let done = until(&server.base, &run, finished).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(
        done["error"], "non-deterministic replay at step 1: expected step `reserve`, got step `reserve-v2`",
        "{done:#}"
    );
    assert_eq!(kinds(&done), ["step reserve", "sleep"], "the journal is left as it was");
}

/// A workflow's topic starts a run per event (one per event id, however often it is delivered)
/// and its schedule one per tick.
#[tokio::test(flavor = "multi_thread")]
async fn events_and_cron_ticks_start_runs() {
    let app = App::new(&format!(
        "[app]\nname = \"shop\"\n[component.order]\nsource = \"{}\"\ngrants = {{ kv = [\"effects\"] }}\n\
         [[trigger.workflow]]\nname = \"order\"\ncomponent = \"order\"\ntopic = \"orders\"\npublic = true\n\
         [[trigger.workflow]]\nname = \"nightly\"\ncomponent = \"order\"\nschedule = \"* * * * * *\"\npublic = true\n",
        nimbus_fixtures::WORKFLOW
    ));
    let server = app.up(&[]);
    assert!(server.banner.contains("topic orders (starts runs)"), "{}", server.banner);
    let token = app.local_token();
    for id in ["e1", "e1", "e2"] {
        let resp = client()
            .post(server.url("/events/orders"))
            .bearer_auth(&token)
            .header("ce-id", id)
            .header("ce-source", "/test")
            .header("ce-type", "order.placed")
            .header("ce-specversion", "1.0")
            .body(format!("{id};pure"))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let (orders, ticks) = loop {
        let list = |name: &str| {
            let url = server.url(&format!("/workflows/{name}"));
            async move {
                client().get(url).send().await.unwrap().json::<Value>().await.unwrap()["runs"]
                    .as_array()
                    .unwrap()
                    .clone()
            }
        };
        let (orders, ticks) = (list("order").await, list("nightly").await);
        if orders.len() >= 2 && orders.iter().all(finished) && ticks.iter().filter(|r| finished(r)).count() >= 2 {
            break (orders, ticks);
        }
        assert!(Instant::now() < deadline, "{orders:#?} {ticks:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut outputs: Vec<&str> = orders.iter().map(|r| r["output"].as_str().unwrap()).collect();
    outputs.sort();
    assert_eq!(outputs, ["done e1", "done e2"], "one run per event id");
    let tick = ticks.iter().find(|r| r["status"] == "completed").unwrap();
    assert!(tick["output"].as_str().unwrap().starts_with("done 20"), "the tick's time is the input: {tick:#}");
}

/// Finished runs are deleted once their workflow's `retention_s` has passed, journal, signals and
/// idempotency key with them (the key starts a new run then); unfinished ones stay.
#[tokio::test(flavor = "multi_thread")]
async fn finished_runs_are_deleted_after_their_retention() {
    let app = app("");
    let manifest = std::fs::read_to_string(app.path().join("nimbus.toml")).unwrap();
    let manifest = manifest
        .replace("component = \"order\"\npublic = true\n", "component = \"order\"\npublic = true\nretention_s = 2\n");
    std::fs::write(app.path().join("nimbus.toml"), manifest).unwrap();
    let server = app.up(&[]);
    let (_, done) = start(&server.base, "old;pure", Some("k-old")).await;
    let (_, waiting) = start(&server.base, "live;pure;signal", None).await;
    let (done, waiting) = (done["run"].as_str().unwrap().to_string(), waiting["run"].as_str().unwrap().to_string());
    until(&server.base, &done, finished).await;
    until(&server.base, &waiting, status_is("waiting")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client().get(server.url(&format!("/workflows/order/{done}"))).send().await.unwrap().status() != 404 {
        assert!(Instant::now() < deadline, "the finished run was never deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(show(&server.base, &waiting).await["status"], "waiting", "an unfinished run stays");
    let (status, again) = start(&server.base, "new;pure", Some("k-old")).await;
    assert_eq!(status, 202, "the deleted run's key starts a new run");
    assert_ne!(again["run"], done.as_str());
}

/// A workflow reaches what its grants allow and nothing else: a call to a component it may
/// invoke is answered (and journaled), one to another is refused; without `grants.kv` it does
/// not load at all.
#[tokio::test(flavor = "multi_thread")]
async fn a_workflow_reaches_only_what_it_was_granted() {
    let app = App::new(&format!(
        "[app]\nname = \"shop\"\n\
         [component.order]\nsource = \"{}\"\ngrants = {{ kv = [\"effects\"], invoke = [\"hello\"] }}\n\
         [[trigger.workflow]]\nname = \"order\"\ncomponent = \"order\"\npublic = true\n\
         [component.hello]\nsource = \"{}\"\n[component.kv]\nsource = \"{}\"\ngrants = {{ kv = [\"effects\"] }}\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"kv\"\n",
        nimbus_fixtures::WORKFLOW,
        nimbus_fixtures::HELLO,
        nimbus_fixtures::KV
    ));
    let server = app.up(&[]);
    let (_, granted) = start(&server.base, "g1;call=hello", None).await;
    let (_, denied) = start(&server.base, "g2;call=kv", None).await;
    let granted = until(&server.base, granted["run"].as_str().unwrap(), finished).await;
    assert_eq!(granted["output"], "done g1 called=Hello from Nimbus!", "{granted:#}");
    assert_eq!(kinds(&granted)[0], "call hello");
    let denied = until(&server.base, denied["run"].as_str().unwrap(), finished).await;
    assert_eq!(denied["output"], "done g2 call-error=`kv` is not in grants.invoke", "{denied:#}");
    drop(server);
    let ungranted = App::new(&format!(
        "[app]\nname = \"shop\"\n[component.order]\nsource = \"{}\"\n\
         [[trigger.workflow]]\nname = \"order\"\ncomponent = \"order\"\n",
        nimbus_fixtures::WORKFLOW
    ));
    let out = ungranted.run(&["up", "--listen", "127.0.0.1:0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("grants.kv"), "{err}");
}

/// The crash test: 200 runs started at once, each sleeping durably for 0.3 to 3.3 s between
/// its steps, the node SIGKILLed every second until every run is finished. Every run finishes,
/// every step's effect is applied once per idempotency key, and the failing runs are compensated
/// exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn runs_finish_with_effects_applied_once_while_the_node_is_killed_again_and_again() {
    const RUNS: usize = 200;
    let app = app("");
    let mut server = app.up(&[]);
    // Every tenth run's ship step fails (it is compensated).
    let starts: Vec<_> = (0..RUNS)
        .map(|i| {
            let fail = if i % 10 == 9 { ";fail-ship" } else { "" };
            let input = format!("c{i};sleep={}{fail}", 300 + (i * 137) % 3000);
            let base = server.base.clone();
            tokio::spawn(async move { start(&base, &input, Some(&format!("crash-{i}"))).await })
        })
        .collect();
    for s in starts {
        let (status, run) = s.await.unwrap();
        assert_eq!(status, 202, "{run}");
    }
    let mut kills = 0;
    let finished_runs = loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let listed: Value = client().get(server.url("/workflows/order")).send().await.unwrap().json().await.unwrap();
        let runs = listed["runs"].as_array().unwrap().clone();
        assert_eq!(runs.len(), RUNS, "every start was acknowledged, so every run exists");
        if runs.iter().all(finished) {
            break runs;
        }
        assert!(kills < 60, "runs still unfinished after {kills} kills");
        server.signal("KILL");
        server.wait_exit(Duration::from_secs(10));
        kills += 1;
        server = app.up(&[]);
    };
    assert!(kills >= 2, "the node was killed while runs were in flight ({kills})");
    let failed: Vec<&Value> = finished_runs.iter().filter(|r| r["status"] == "failed").collect();
    assert_eq!(failed.len(), RUNS / 10, "exactly the runs whose ship step fails failed: {failed:#?}");
    assert!(finished_runs.iter().all(|r| r["status"] == "completed" || r["status"] == "failed"));
    let applied = effects(&server.base, "effect/").await;
    assert_eq!(applied.len(), 3 * (RUNS - RUNS / 10) + 2 * (RUNS / 10), "each effect applied once per key");
    let undone = effects(&server.base, "undo/").await;
    assert_eq!(undone.len(), 2 * (RUNS / 10), "every failed run compensated: release and refund, once each");
    for r in failed {
        let shown = show(&server.base, r["run"].as_str().unwrap()).await;
        let compensations = kinds(&shown).iter().filter(|k| k.starts_with("compensation")).count();
        assert_eq!(compensations, 2, "{shown:#}");
    }
    // How often a step ran again because the node died between running it and journaling it.
    let mut executions = 0;
    for key in effects(&server.base, "runs/").await {
        let n = client().get(server.url(&format!("/get/effects/{key}"))).send().await.unwrap().text().await.unwrap();
        executions += n.trim().parse::<u64>().unwrap();
    }
    eprintln!(
        "crash test: {RUNS} runs x 3 steps, {kills} kill -9s; {executions} step executions for {} step positions, \
         every effect applied once",
        applied.len() + RUNS / 10
    );
}

/// On a server, a run stays on the revision that started it: after traffic moves to a new
/// revision, across `kill -9`, and its revision cannot be deleted until the run is over.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_stays_pinned_to_its_revision_which_cannot_be_deleted_while_it_runs() {
    let data = tempfile::tempdir().unwrap();
    let mut p = common::platform::Platform::start(data.path(), &[]);
    let admin = p.admin.clone().unwrap();
    let deploy = |p: &common::platform::Platform, version: &str| {
        let app = App::new(&manifest("", version));
        let out = p.admin_cli(&["deploy", app.path().to_str().unwrap(), "--output", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["revision"].as_str().unwrap().to_string()
    };
    let first = deploy(&p, "1");
    let (status, started) = start(&p.gateway, "p1;signal", None).await;
    assert_eq!(status, 202, "{started}");
    let run = started["run"].as_str().unwrap().to_string();
    assert_eq!(started["revision"], first.as_str());
    until(&p.gateway, &run, status_is("waiting")).await;
    let second = deploy(&p, "2");
    assert_ne!(first, second);
    // What still runs on the old code.
    let runs = ok(p.cli(Some(&admin), &["workflows", "runs", "order", "--app", "shop", "--revision", &first]));
    assert!(runs.contains(&run), "{runs}");
    let out = p.cli(Some(&admin), &["revisions", "delete", "shop", &first]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unfinished workflow run") && err.contains(&run), "{err}");
    p.kill9();
    let p = common::platform::Platform::start(data.path(), &[]);
    let resp =
        client().post(p.url(&format!("/workflows/order/{run}/signals/approve"))).body("ok").send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let done = until(&p.gateway, &run, finished).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["revision"], first.as_str(), "it finished on the revision that started it");
    let fresh = start(&p.gateway, "p2", None).await.1;
    assert_eq!(fresh["revision"], second.as_str(), "new runs start on the revision with the traffic");
    let out = p.cli(Some(&admin), &["revisions", "delete", "shop", &first]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

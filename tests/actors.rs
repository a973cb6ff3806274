//! Actors end to end through `nimbus up`: one activation per key, state committed before the
//! answer, writes of a failed or trapped invocation dropped, passivation, the CLI, and `kill -9`.
mod common;

use std::time::Duration;

use common::{App, client, ok};

fn app() -> App {
    app_with("")
}

/// The app, with `counter_extra` lines in the counter's component table.
fn app_with(counter_extra: &str) -> App {
    App::new(&format!(
        "[app]\nname = \"actors\"\n[component.counter]\nsource = \"{}\"\n{counter_extra}[[trigger.actor]]\ntype = \"counter\"\ncomponent = \"counter\"\nidle_timeout_s = 1\npublic = true\n\
         [component.caller]\nsource = \"{}\"\ngrants = {{ actors = [\"counter\"] }}\n[[trigger.http]]\nroute = \"/call/...\"\ncomponent = \"caller\"\n",
        nimbus_fixtures::COUNTER,
        nimbus_fixtures::CALLER
    ))
}

async fn call(base: &str, key: &str, method: &str) -> (u16, String) {
    let r = client().post(format!("{base}/actors/counter/{key}/{method}")).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_activation_per_key_and_no_lost_update() {
    let app = app();
    let server = app.up(&[]);
    assert!(server.banner.contains("/actors/counter/KEY/METHOD -> counter (actor)"), "{}", server.banner);
    let base = server.base.clone();
    let hot: Vec<_> = (0..100)
        .map(|_| {
            tokio::spawn({
                let base = base.clone();
                async move { call(&base, "hot", "incr").await }
            })
        })
        .collect();
    let spread: Vec<_> = (0..100)
        .map(|i| {
            tokio::spawn({
                let base = base.clone();
                async move { call(&base, &format!("k{}", i % 10), "incr").await }
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in hot {
        let (status, n) = t.await.unwrap();
        assert_eq!(status, 200);
        seen.push(n.parse::<u32>().unwrap());
    }
    seen.sort();
    assert_eq!(seen, (1..=100).collect::<Vec<_>>(), "100 concurrent increments on one key: each saw its own value");
    for t in spread {
        assert_eq!(t.await.unwrap().0, 200);
    }
    assert_eq!(call(&base, "hot", "get").await, (200, "100".into()));
    for k in 0..10 {
        assert_eq!(call(&base, &format!("k{k}"), "get").await, (200, "10".into()));
    }
    // Passivated after 1 s idle: the state comes back from the store.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(call(&base, "hot", "incr").await, (200, "101".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_and_trapped_invocations_roll_back() {
    let app = app();
    let server = app.up(&[]);
    let base = server.base.clone();
    assert_eq!(call(&base, "a", "incr").await.0, 200);
    let (status, body) = call(&base, "a", "fail").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("counter a refused"), "{body}");
    assert_eq!(call(&base, "a", "get").await, (200, "1".into()), "the failed call's write was dropped");
    assert_eq!(call(&base, "a", "trap").await.0, 500);
    assert_eq!(call(&base, "a", "get").await, (200, "1".into()), "the trapped call's write was dropped");
    assert_eq!(call(&base, "a", "nope").await.0, 422);
    // An unknown type is not told apart from one that is not public; with the token, it is a 404.
    let unknown = client().post(server.url("/actors/ghost/a/get")).send().await.unwrap();
    assert_eq!(unknown.status(), 401);
    let unknown = client().post(server.url("/actors/ghost/a/get")).bearer_auth(app.local_token()).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(client().get(server.url("/actors/counter/a/get")).send().await.unwrap().status(), 405);
    // Keys may hold anything, percent-encoded in the path.
    assert_eq!(call(&base, "user%2F7%20%C3%A9", "incr").await, (200, "1".into()));

    // From a function with grants.actors: the same actor, one activation.
    let via = |path: &'static str| {
        let url = server.url(path);
        async move {
            let r = client().post(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(via("/call/counter/a/incr").await, (200, "2".into()));
    let (status, body) = via("/call/ghost/a/incr").await;
    assert_eq!(status, 500);
    assert!(body.contains("not in grants.actors"), "{body}");
    assert_eq!(via("/call/counter/a/fail").await.0, 500);

    let home = tempfile::tempdir().unwrap();
    assert_eq!(ok(app.cli(home.path(), &["actors", "call", "counter", "a", "incr"])), "3");
    assert_eq!(ok(app.cli(home.path(), &["actors", "state", "counter", "a"])), "count = 3\n");
    assert_eq!(ok(app.cli(home.path(), &["actors", "state", "counter", "user/7 é"])), "count = 1\n");
}

/// The output gate: a client never saw success for a write that is not on disk.
#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_invocations_survive_kill_9() {
    let app = app();
    let mut server = app.up(&[]);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let base = server.base.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                loop {
                    match client().post(format!("{base}/actors/counter/hot/incr")).send().await {
                        Ok(r) if r.status() == 200 => n += 1,
                        _ => return n,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(10));
    let mut acked = 0;
    for t in tasks {
        acked += t.await.unwrap();
    }
    assert!(acked > 20, "invocations ran before the kill ({acked})");
    let server = app.up(&[]);
    let stored: u64 = call(&server.base, "hot", "get").await.1.parse().unwrap();
    // Nothing acknowledged is lost; at most the 8 calls in flight at the kill (one per client)
    // were committed without their answer arriving.
    assert!(stored >= acked && stored <= acked + 8, "stored {stored}, acknowledged {acked}");
    eprintln!("kill -9 under 8 clients on one actor: {acked} acknowledged, {stored} committed, 0 lost");
}

#[tokio::test]
async fn an_actor_call_whose_input_stalls_gets_408_within_the_time_limit() {
    let app = app_with("limits = { timeout_ms = 500 }\n");
    let server = app.up(&[]);
    let answer = common::stalled_post(&server.base, "/actors/counter/slow/incr").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("actor call's input did not arrive within 500ms"), "{answer}");
    // Nothing was invoked, and calls whose input arrives are served.
    assert_eq!(call(&server.base, "slow", "incr").await, (200, "1".into()));
    // A call to an unknown type is answered without waiting for its input (before, it waited
    // 30 s for the input and answered 408): refused, as it is not a public type.
    let answer = common::stalled_post(&server.base, "/actors/nope/slow/incr").await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("`nope`"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn under_up_an_actor_type_that_is_not_public_takes_only_the_local_token() {
    let app = App::new(&format!(
        "[app]\nname = \"actors\"\n[component.counter]\nsource = \"{}\"\n[[trigger.actor]]\ntype = \"counter\"\ncomponent = \"counter\"\n",
        nimbus_fixtures::COUNTER,
    ));
    let server = app.up(&[]);
    let r = client().post(server.url("/actors/counter/a/incr")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body = r.text().await.unwrap();
    assert!(body.contains("actor type `counter` of app `actors` is not public"), "{body}");
    let r = client().post(server.url("/actors/counter/a/incr")).bearer_auth("nbl_guessed").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client().post(server.url("/actors/counter/a/incr")).bearer_auth(app.local_token()).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (200, "1".to_string()));
    // The CLI sends the token of the `nimbus up` in its directory.
    let home = tempfile::tempdir().unwrap();
    assert_eq!(ok(app.cli(home.path(), &["actors", "call", "counter", "a", "incr"])), "2");
}

/// An app whose only trigger is an actor, named `name`.
fn actor_only(name: &str) -> App {
    App::new(&format!(
        "[app]\nname = \"{name}\"\n[component.counter]\nsource = \"{}\"\n[[trigger.actor]]\ntype = \"counter\"\ncomponent = \"counter\"\n",
        nimbus_fixtures::COUNTER
    ))
}

/// `POST {base}/actors/counter/{key}/incr` with `host` and `token`: status and answer.
async fn incr(base: &str, host: Option<&str>, token: &str, key: &str) -> (u16, String) {
    let mut req = client().post(format!("{base}/actors/counter/{key}/incr")).bearer_auth(token);
    if let Some(host) = host {
        req = req.header("host", host);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The same actor-only app answers its actors under `nimbus up` and on `nimbus server` (bound to
/// a host, and on every host): both assemble it through the app host, and the server routes an
/// app's `/actors/` to it like its HTTP routes.
#[tokio::test(flavor = "multi_thread")]
async fn an_actor_only_app_is_served_by_up_and_by_the_server() {
    let app = actor_only("solo");
    let up = app.up(&[]);
    assert_eq!(incr(&up.base, None, &app.local_token(), "k").await, (200, "1".into()));
    let refused = incr(&up.base, None, "wrong", "k").await.0;
    assert!(refused == 401 || refused == 403, "not public: the token is checked ({refused})");
    drop(up);

    let data = tempfile::tempdir().unwrap();
    let platform = common::platform::Platform::start(data.path(), &[]);
    let admin = platform.admin.clone().unwrap();
    platform.admin_cli(&["deploy", app.path().to_str().unwrap(), "--host", "solo.test"]);
    let base = platform.gateway.as_str();
    assert_eq!(incr(base, Some("solo.test"), &admin, "k").await, (200, "1".into()));
    assert_eq!(incr(base, Some("solo.test"), &admin, "k").await, (200, "2".into()));
    assert_eq!(incr(base, Some("elsewhere.test"), &admin, "k").await.0, 404, "bound to its host");

    let anywhere = actor_only("anywhere");
    platform.admin_cli(&["deploy", anywhere.path().to_str().unwrap()]);
    assert_eq!(incr(base, Some("elsewhere.test"), &admin, "k").await, (200, "1".into()));
    assert_eq!(incr(base, Some("solo.test"), &admin, "k").await, (200, "3".into()), "the bound app keeps its host");
}

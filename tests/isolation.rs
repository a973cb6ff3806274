//! Apps on one `nimbus server` never share data: two apps granting the same bucket and topic
//! names get their own, the control API and the CLI address data per app (`--app`), and a token
//! limited to an app reaches exactly that app's data.
mod common;

use std::time::{Duration, Instant};

use common::platform::Platform;
use common::{App, client};

/// An app with the KV fixture on every path and the events fixture on topic `orders`
/// (forwarding to `handled`), both granted the same names in every app.
fn app(name: &str) -> App {
    App::new(&format!(
        "[app]\nname = \"{name}\"\n\
         [component.store]\nsource = \"{kv}\"\ngrants = {{ kv = [\"carts\"] }}\n\
         [component.fn]\nsource = \"{events}\"\ngrants = {{ publish = [\"handled\"] }}\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"store\"\n\
         [[trigger.topic]]\ntopic = \"orders\"\ncomponent = \"fn\"\npublic = true\n",
        kv = nimbus_fixtures::KV,
        events = nimbus_fixtures::EVENTS
    ))
}

async fn publish(platform: &Platform, host: &str, id: &str) {
    let resp = client()
        .post(platform.url("/events/orders"))
        .header("host", host)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/test")
        .header("ce-type", "forward")
        .header("ce-target", "handled")
        .header("content-type", "text/plain")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
}

/// The events of `topic` in `app`, as the CLI prints them.
fn tail(platform: &Platform, app: &str, topic: &str) -> String {
    platform.admin_cli(&["events", "tail", "--app", app, topic, "--all", "--no-follow"])
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_granting_the_same_names_never_share_buckets_or_topics() {
    let data = tempfile::tempdir().unwrap();
    let platform = Platform::start(data.path(), &[]);
    let (shop, other) = (app("shop"), app("other"));
    platform.admin_cli(&["deploy", shop.path().to_str().unwrap(), "--host", "shop.test"]);
    platform.admin_cli(&["deploy", other.path().to_str().unwrap(), "--host", "other.test"]);
    let c = client();

    // KV: the other app's `carts` is its own.
    let put = c.put(platform.url("/set/carts/u1")).header("host", "shop.test").body("shop's").send().await.unwrap();
    assert_eq!(put.status(), 204);
    let got = c.get(platform.url("/get/carts/u1")).header("host", "other.test").send().await.unwrap();
    assert_eq!((got.status().as_u16(), got.text().await.unwrap()), (404, "absent".to_string()));
    let put = c.put(platform.url("/set/carts/u1")).header("host", "other.test").body("other's").send().await.unwrap();
    assert_eq!(put.status(), 204);
    let got = c.get(platform.url("/get/carts/u1")).header("host", "shop.test").send().await.unwrap();
    assert_eq!(got.text().await.unwrap(), "shop's", "not overwritten by the other app");
    assert_eq!(platform.admin_cli(&["kv", "get", "--app", "shop", "carts", "u1"]), "shop's");
    assert_eq!(platform.admin_cli(&["kv", "get", "--app", "other", "carts", "u1"]), "other's");
    let no_app = platform.cli(platform.admin.as_deref(), &["kv", "get", "carts", "u1"]);
    assert!(!no_app.status.success());
    assert!(stderr(&no_app).contains("--app"), "{}", stderr(&no_app));

    // Topics: an event published to one app's `orders` reaches that app's trigger only, and
    // what the function publishes to `handled` lands in its own app's `handled`.
    publish(&platform, "shop.test", "s-1").await;
    publish(&platform, "other.test", "o-1").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(tail(&platform, "shop", "handled").contains("fwd-s-1")
        && tail(&platform, "other", "handled").contains("fwd-o-1"))
    {
        assert!(Instant::now() < deadline, "the events were not handled: {}", platform.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (shop_handled, other_handled) = (tail(&platform, "shop", "handled"), tail(&platform, "other", "handled"));
    assert!(!shop_handled.contains("fwd-o-1"), "{shop_handled}");
    assert!(!other_handled.contains("fwd-s-1"), "{other_handled}");
    let other_orders = tail(&platform, "other", "orders");
    assert!(other_orders.contains("o-1") && !other_orders.contains("s-1"), "{other_orders}");

    // A token limited to `shop` uses exactly shop's data.
    let created = platform.admin_cli(&[
        "tokens",
        "create",
        "--name",
        "shop-deployer",
        "--role",
        "deployer",
        "--app",
        "shop",
        "--output",
        "json",
    ]);
    let scoped: serde_json::Value = serde_json::from_str(&created).unwrap();
    let token = scoped["token"].as_str();
    let out = platform.cli(token, &["kv", "get", "--app", "shop", "carts", "u1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "shop's", "{}", stderr(&out));
    let out = platform.cli(token, &["kv", "set", "--app", "shop", "carts", "u2", "v"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = platform.cli(token, &["events", "tail", "--app", "shop", "handled", "--all", "--no-follow"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("fwd-s-1"), "{}", stderr(&out));
    for args in [
        &["kv", "get", "--app", "other", "carts", "u1"][..],
        &["kv", "set", "--app", "other", "carts", "u1", "overwritten"],
        &["kv", "list", "--app", "other", "carts"],
        &["events", "tail", "--app", "other", "handled", "--all", "--no-follow"],
        &["events", "publish", "--app", "other", "orders"],
    ] {
        let out = platform.cli(token, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains("may not touch app `other`"), "{args:?}: {}", stderr(&out));
    }
    let url = platform.api_url("/v1/apps/other/kv/carts/keys/u1");
    let resp = c.get(&url).bearer_auth(token.unwrap()).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(platform.admin_cli(&["kv", "get", "--app", "other", "carts", "u1"]), "other's");
    // Telemetry belongs to every app: still refused to an app-scoped token.
    let resp = c.get(platform.api_url("/v1/traces")).bearer_auth(token.unwrap()).send().await.unwrap();
    assert_eq!(resp.status(), 403);
}

/// A `nimbus up` state store written by a version before buckets were scoped per app (built
/// through the store's API with unscoped buckets, as that version named them): on the first
/// start its buckets become the app's, also the actor state of the old shared `actors` bucket.
#[tokio::test(flavor = "multi_thread")]
async fn nimbus_up_moves_the_old_layout_to_its_app() {
    let app = App::new(&format!(
        "[app]\nname = \"kvapp\"\n[component.store]\nsource = \"{}\"\ngrants = {{ kv = [\"carts\"] }}\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"store\"\n",
        nimbus_fixtures::KV
    ));
    let data = app.path().join(".nimbus");
    std::fs::create_dir_all(&data).unwrap();
    {
        use nimbus_state::KvStore as _;
        let kv = nimbus_state::Embedded::open(&data.join("state.redb")).unwrap();
        let old = nimbus_state::Bucket::unscoped("carts");
        kv.set(&old, "u1", "from the old version".into(), None).await.unwrap();
    }
    for start in ["first", "second"] {
        let server = app.up(&[]);
        let got = client().get(server.url("/get/carts/u1")).send().await.unwrap();
        assert_eq!(got.text().await.unwrap(), "from the old version", "{start} start");
    }
}

fn kv_app(name: &str, grants: &str, extra: &str) -> App {
    App::new(&format!(
        "[app]\nname = \"{name}\"\n[component.store]\nsource = \"{}\"\ngrants = {{ kv = [{grants}] }}\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"store\"\n{extra}",
        nimbus_fixtures::KV
    ))
}

fn deploy(platform: &Platform, app: &App, host: &str) -> std::process::Output {
    platform.cli(platform.admin.as_deref(), &["deploy", app.path().to_str().unwrap(), "--host", host])
}

/// `[export]` shares a bucket with the apps it names, and nothing else: an app it does not name
/// is refused at deploy, and the owner cannot stop exporting while an app uses the bucket.
#[tokio::test(flavor = "multi_thread")]
async fn an_export_shares_a_bucket_with_the_named_apps_only() {
    let data = tempfile::tempdir().unwrap();
    let platform = Platform::start(data.path(), &[]);
    let billing = kv_app("billing", "\"shop/carts\"", "");
    // Before `shop` exports `carts`, naming it is refused.
    let early = deploy(&platform, &billing, "billing.test");
    assert!(!early.status.success());
    assert!(stderr(&early).contains("app `shop` does not export bucket `carts` to `billing`"), "{}", stderr(&early));
    let shop = kv_app("shop", "\"carts\"", "[export]\nkv = { carts = [\"billing\"] }\n");
    assert!(deploy(&platform, &shop, "shop.test").status.success());
    assert!(deploy(&platform, &billing, "billing.test").status.success(), "{}", platform.stderr());
    let c = client();
    let put = c.put(platform.url("/set/carts/u1")).header("host", "shop.test").body("shop's").send().await.unwrap();
    assert_eq!(put.status(), 204);
    let got = c.get(platform.url("/get/shop%2Fcarts/u1")).header("host", "billing.test").send().await.unwrap();
    assert_eq!(got.text().await.unwrap(), "shop's", "billing reads shop's exported bucket");
    let put = c
        .put(platform.url("/set/shop%2Fcarts/u2"))
        .header("host", "billing.test")
        .body("billing's")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    assert_eq!(platform.admin_cli(&["kv", "get", "--app", "shop", "carts", "u2"]), "billing's");
    // Its own `carts` is still its own.
    let got = c.get(platform.url("/get/carts/u1")).header("host", "billing.test").send().await.unwrap();
    assert_eq!(got.text().await.unwrap(), "access-denied", "billing has no grant of its own `carts`");
    // A third app is not named by the export.
    let third = kv_app("third", "\"shop/carts\"", "");
    let refused = deploy(&platform, &third, "third.test");
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("does not export bucket `carts` to `third`"), "{}", stderr(&refused));
    // `shop` cannot drop the export while billing uses it.
    let dropped = kv_app("shop", "\"carts\"", "[export]\nkv = { carts = [\"other\"] }\n");
    let refused = deploy(&platform, &dropped, "shop.test");
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("app `billing` uses bucket `carts` of `shop`"), "{}", stderr(&refused));
}

/// An app with a topic and an actor type that are not public, and a topic that is.
fn guarded_app(name: &str) -> App {
    App::new(&format!(
        "[app]\nname = \"{name}\"\n\
         [component.store]\nsource = \"{kv}\"\ngrants = {{ kv = [\"carts\"] }}\n\
         [component.fn]\nsource = \"{events}\"\ngrants = {{ publish = [\"handled\"] }}\n\
         [component.counter]\nsource = \"{counter}\"\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"store\"\n\
         [[trigger.topic]]\ntopic = \"orders\"\ncomponent = \"fn\"\n\
         [[trigger.topic]]\ntopic = \"open\"\ncomponent = \"fn\"\npublic = true\n\
         [[trigger.actor]]\ntype = \"counter\"\ncomponent = \"counter\"\n",
        kv = nimbus_fixtures::KV,
        events = nimbus_fixtures::EVENTS,
        counter = nimbus_fixtures::COUNTER,
    ))
}

/// `POST /events/TOPIC` on `host` with `token`: the status and body.
async fn publish_as(platform: &Platform, host: &str, topic: &str, id: &str, token: Option<&str>) -> (u16, String) {
    let mut req = client()
        .post(platform.url(&format!("/events/{topic}")))
        .header("host", host)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/test")
        .header("ce-type", "ok")
        .body("payload");
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// `POST /actors/counter/k/incr` on `host` with `token`: the status and body.
async fn call_as(platform: &Platform, host: &str, token: Option<&str>) -> (u16, String) {
    let mut req = client().post(platform.url("/actors/counter/k/incr")).header("host", host);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn only_public_topics_and_actors_take_anonymous_calls_from_outside() {
    let data = tempfile::tempdir().unwrap();
    let platform = Platform::start(data.path(), &[]);
    let shop = guarded_app("shop");
    let deployed =
        platform.cli(platform.admin.as_deref(), &["deploy", shop.path().to_str().unwrap(), "--host", "shop.test"]);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    let token = |role: &str, app: &str| {
        let out = platform.admin_cli(&["tokens", "create", "--name", role, "--role", role, "--app", app, "-o", "json"]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["token"].as_str().unwrap().to_string()
    };
    let (viewer, other_deployer, deployer) =
        (token("viewer", "shop"), token("deployer", "other"), token("deployer", "shop"));
    let admin = platform.admin.clone().unwrap();

    // Anonymous: the public topic takes the event; the others say what is needed.
    assert_eq!(publish_as(&platform, "shop.test", "open", "open-1", None).await.0, 202);
    let (status, body) = publish_as(&platform, "shop.test", "orders", "anonymous", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("topic `orders` of app `shop` is not public") && body.contains("public = true"), "{body}");
    let (status, body) = call_as(&platform, "shop.test", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("actor type `counter` of app `shop` is not public"), "{body}");
    // A topic that does not exist is not told apart from one that is not public.
    assert_eq!(publish_as(&platform, "shop.test", "nope", "nope", None).await.0, 401);

    // A token that is unknown, may only read, or belongs to another app: refused.
    // The deployer's token with its last character changed (never to itself).
    let last = if deployer.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &deployer[..deployer.len() - 1]);
    assert_eq!(publish_as(&platform, "shop.test", "orders", "forged", Some(&forged)).await.0, 401);
    for token in [&viewer, &other_deployer] {
        let (status, body) = publish_as(&platform, "shop.test", "orders", "refused", Some(token)).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(call_as(&platform, "shop.test", Some(token)).await.0, 403);
    }
    // A deployer of the app and an admin: accepted.
    assert_eq!(publish_as(&platform, "shop.test", "orders", "by-deployer", Some(&deployer)).await.0, 202);
    assert_eq!(publish_as(&platform, "shop.test", "orders", "by-admin", Some(&admin)).await.0, 202);
    assert_eq!(call_as(&platform, "shop.test", Some(&deployer)).await, (200, "1".to_string()));
    assert_eq!(call_as(&platform, "shop.test", Some(&admin)).await, (200, "2".to_string()));
    // What was refused changed nothing: only the accepted events are stored.
    let stored = tail(&platform, "shop", "orders");
    assert!(stored.contains("by-deployer") && stored.contains("by-admin"), "{stored}");
    for refused in ["anonymous", "forged", "refused"] {
        assert!(!stored.contains(refused), "{stored}");
    }
}

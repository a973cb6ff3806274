//! Component-to-component calls (`grants.invoke`) through the public interfaces: a function
//! calls another function and a service at `http://NAME.internal/` in-process, a sandboxed
//! service calls a function through its egress proxy, each callee learns the caller's workload
//! identity (which no client can forge), every call is a traced child span, a call without the
//! grant is refused, a cycle is stopped at the depth limit with a clear error, a grant naming a
//! component that cannot serve it is refused at load, and on `nimbus server` a component of
//! another app is reachable only when that app exports it (checked at deploy both ways).
mod common;

use std::time::{Duration, Instant};

use common::platform::Platform;
use common::{App, client, ok};

const SERVER_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/services/server.py");

/// `web` (granted `api`, `py`, `ping`) on `/kitchen/...`; `api` and `nosy` (no routes);
/// `ping` and `pong`, granted each other; the Python service `py` (granted `api`) on `/py/...`.
fn shop() -> App {
    let app = App::new(&format!(
        r#"[app]
name = "shop"

[component.web]
source = "{kitchen}"
grants = {{ invoke = ["api", "py", "ping"] }}

[component.api]
source = "{kitchen}"

[component.nosy]
source = "{kitchen}"

[component.ping]
source = "{kitchen}"
grants = {{ invoke = ["pong"] }}

[component.pong]
source = "{kitchen}"
grants = {{ invoke = ["ping"] }}

[component.py]
command = ["python3", "server.py"]
grants = {{ invoke = ["api"] }}
readiness = {{ path = "/py/healthz" }}

[[trigger.http]]
route = "/kitchen/..."
component = "web"

[[trigger.http]]
route = "/py/..."
component = "py"
"#,
        kitchen = nimbus_fixtures::KITCHEN
    ));
    std::fs::copy(SERVER_PY, app.path().join("server.py")).unwrap();
    app
}

async fn get(url: String) -> (u16, String, Option<String>) {
    let resp = client().get(url).send().await.unwrap();
    let trace = resp.headers().get("traceresponse").map(|v| v.to_str().unwrap().split('-').nth(1).unwrap().to_string());
    (resp.status().as_u16(), resp.text().await.unwrap(), trace)
}

const WEB: &str = "spiffe://nimbus.local/app/shop/component/web";

#[tokio::test(flavor = "multi_thread")]
async fn components_call_each_other_with_their_identity_and_only_as_granted() {
    let app = shop();
    let server = app.up(&[]);

    // Function → function, in-process: the callee sees who called and how deep.
    let (status, body, trace) = get(server.url("/kitchen/outbound?url=http://api.internal/kitchen/echo")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("upstream status 200"), "{body}");
    assert!(body.contains(&format!("x-nimbus-caller: {WEB}")), "{body}");
    assert!(body.contains("x-nimbus-invoke-depth: 1"), "{body}");

    // The call is a client span of the caller, continued by a server span of the callee.
    let home = tempfile::tempdir().unwrap();
    let trace = trace.expect("traced");
    let spans = common::stored_spans_until(&app, home.path(), &trace, "lacks the call", |spans| {
        spans.iter().any(|s| s["name"] == "invoke api" && s["kind"] == "server")
    });
    let client_span = spans.iter().find(|s| s["name"] == "invoke api" && s["kind"] == "client").expect("client span");
    let server_span = spans.iter().find(|s| s["name"] == "invoke api" && s["kind"] == "server").unwrap();
    assert_eq!(server_span["parent_span_id"], client_span["span_id"], "{spans:#?}");
    assert_eq!(server_span["attributes"]["nimbus.caller.id"], WEB);
    assert_eq!(server_span["attributes"]["nimbus.workload.id"], "spiffe://nimbus.local/app/shop/component/api");
    let callee_execute = spans
        .iter()
        .find(|s| s["name"] == "execute" && s["parent_span_id"] == server_span["span_id"])
        .expect("the callee's execute span is a child of the call");
    assert_eq!(callee_execute["attributes"]["nimbus.component"], "api");

    // Function → service: the service gets the identity in a header.
    let (status, body, _) = get(server.url("/kitchen/outbound?url=http://py.internal/py/caller")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("caller={WEB} depth=1")), "{body}");

    // A client cannot claim to be a component.
    let resp = client()
        .get(server.url("/py/caller"))
        .header("x-nimbus-caller", "spiffe://nimbus.local/app/shop/component/api")
        .header("x-nimbus-invoke-depth", "7")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "caller=None depth=None\n");
    // Nor with `_` for `-`, which CGI-style readers take for the same name.
    let resp = client()
        .get(server.url("/kitchen/echo"))
        .header("x_nimbus_caller", "spiffe://nimbus.local/app/shop/component/api")
        .header("x-nimbus_invoke-depth", "7")
        .header("x-kept", "yes")
        .send()
        .await
        .unwrap();
    let echoed = resp.text().await.unwrap();
    assert!(echoed.contains("x-kept: yes") && !echoed.contains("nimbus"), "{echoed}");

    // Not granted: refused in the guest, and said so in the log.
    let (status, body, _) = get(server.url("/kitchen/outbound?url=http://nosy.internal/kitchen/echo")).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");
    server.wait_for_log("`nosy` is not in grants.invoke");
    let (status, body, _) = get(server.url("/kitchen/outbound?url=http://nobody.internal/kitchen/echo")).await;
    assert!(status == 502 && body.contains("HttpRequestDenied"), "{body}");

    // Service → function through the egress proxy, as the service.
    let (status, body, _) = get(server.url("/py/call?url=http://api.internal/kitchen/echo")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("upstream status 200"), "{body}");
    assert!(body.contains("x-nimbus-caller: spiffe://nimbus.local/app/shop/component/py"), "{body}");
    let (_, body, _) = get(server.url("/py/call?url=http://nosy.internal/kitchen/echo")).await;
    assert!(body.contains("upstream status 403") && body.contains("not in this service's grants.invoke"), "{body}");

    // A service opening 500 connections to its egress proxy and holding them does not use up
    // Nimbus's open files: past the proxy's cap (256) they wait in the kernel's queue (or are not
    // taken); the node keeps serving.
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", server.child.id())).unwrap().count();
    let before = fds();
    let (_, body, _) = get(server.url("/py/flood-proxy?n=500")).await;
    assert!(body.starts_with("holding "), "{body}");
    assert!(fds() < before + 300, "{} open files with 500 proxy connections held (from {before})", fds());
    assert_eq!(get(server.url("/healthz")).await.0, 200);
    assert_eq!(get(server.url("/kitchen/echo")).await.0, 200);
    assert_eq!(get(server.url("/py/flood-proxy?n=0")).await.1, "holding 0\n");

    // A cycle ping → pong → ping ... stops at the depth limit with a clear error.
    let (status, body, _) = get(server.url("/kitchen/bounce?via=ping&back=pong")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.matches(": 200\n").count(), 8, "eight calls deep answered, the ninth refused: {body}");
    assert!(body.contains(": 508\n") && body.contains("calls deep (the limit is 8)"), "{body}");
}

#[test]
fn a_grant_that_cannot_be_served_is_refused_at_load() {
    let missing = App::new(&format!(
        "[app]\nname = \"a\"\n[component.web]\nsource = \"{}\"\ngrants = {{ invoke = [\"billing\"] }}\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"web\"\n",
        nimbus_fixtures::KITCHEN
    ));
    let err = refused(&missing);
    assert!(err.contains("component.web.grants.invoke[0]") && err.contains("no component named `billing`"), "{err}");

    let actor_only = App::new(&format!(
        "[app]\nname = \"a\"\n[component.web]\nsource = \"{}\"\ngrants = {{ invoke = [\"counter\"] }}\n\
         [component.counter]\nsource = \"{}\"\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"web\"\n\
         [[trigger.actor]]\ntype = \"counter\"\ncomponent = \"counter\"\n",
        nimbus_fixtures::KITCHEN,
        nimbus_fixtures::COUNTER
    ));
    let err = refused(&actor_only);
    assert!(err.contains("`counter` does not serve HTTP"), "{err}");
}

/// What `nimbus up` says when it refuses to serve `app` (failing if it serves it).
fn refused(app: &App) -> String {
    let mut child = std::process::Command::new(common::NIMBUS)
        .args(["up", "--listen", "127.0.0.1:0", "--cache-dir"])
        .arg(app.cache_dir())
        .current_dir(app.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = common::collect_lines(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("nimbus up served an app it should refuse: {}", stderr.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!child.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(100));
    stderr.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn another_apps_component_is_reachable_only_when_exported() {
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &["--trust-domain", "prod.example.com"]);
    let token = p.admin.clone().unwrap();
    let pay = |export: &str| {
        App::new(&format!(
            "[app]\nname = \"pay\"\n{export}\n[component.billing]\nsource = \"{}\"\n",
            nimbus_fixtures::KITCHEN
        ))
    };
    let shop = App::new(&format!(
        "[app]\nname = \"shop\"\n[component.web]\nsource = \"{}\"\ngrants = {{ invoke = [\"pay/billing\"] }}\n\
         [[trigger.http]]\nroute = \"/kitchen/...\"\ncomponent = \"web\"\n",
        nimbus_fixtures::KITCHEN
    ));
    let deploy = |app: &App| p.cli(Some(&token), &["deploy", app.path().to_str().unwrap()]);
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    ok(deploy(&pay("")));
    // Not exported: the deploy of the caller is refused, naming the export to add.
    let refused = deploy(&shop);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("does not export component `billing` to `shop`"), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("[export] components = { billing = [\"shop\"] }"), "{}", stderr(&refused));

    ok(deploy(&pay("[export]\ncomponents = { billing = [\"shop\"] }\n")));
    ok(deploy(&shop));
    let url = p.url("/kitchen/outbound?url=http://billing.pay.internal/kitchen/echo");
    let (status, body, _) = get(url.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("upstream status 200"), "{body}");
    assert!(body.contains("x-nimbus-caller: spiffe://prod.example.com/app/shop/component/web"), "{body}");

    // While shop calls it, pay cannot stop exporting it.
    let refused = deploy(&pay(""));
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("app `shop` uses component `billing` of `pay`"), "{}", stderr(&refused));
    let (_, body, _) = get(url).await;
    assert!(body.contains("upstream status 200"), "still served: {body}");
}

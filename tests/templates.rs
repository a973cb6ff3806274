//! `nimbus new` → `nimbus build` → `nimbus up` → a request, for every template. The JS and Python
//! templates also prove that components from componentize-js and componentize-py (which import
//! `wasi:cli`, `wasi:filesystem` and more besides `wasi:http`) run unchanged.
//!
//! The toolchains are installed by `scripts/test.sh` (the README's test command); a missing one
//! fails the test with what to install.
mod common;

use std::process::Command;

use common::NIMBUS;

fn nimbus(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(NIMBUS).args(args).current_dir(dir).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "nimbus {args:?} failed:\n{text}");
    text
}

async fn new_build_up(template: &str, language: &str) {
    let work = tempfile::tempdir().unwrap();
    let name = format!("my-{template}");
    let created = nimbus(work.path(), &["new", template, &name]);
    assert!(created.contains("nimbus build"), "{created}");
    assert!(created.contains("Toolchain: "), "says what to install: {created}");
    let app_dir = work.path().join(&name);
    assert!(app_dir.join(".gitignore").exists());
    nimbus(&app_dir, &["build"]);
    let scratch = common::App::new("# unused\n");
    let server = scratch.up_dir(&app_dir, &[]);
    let resp = common::client().get(server.url("/some/path?x=1")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.text().await.unwrap(), format!("Hello from {name} ({language})! path=/some/path?x=1\n"));
}

#[tokio::test]
async fn http_rust() {
    new_build_up("http-rust", "Rust").await;
}

#[tokio::test]
async fn http_python() {
    new_build_up("http-python", "Python").await;
}

#[tokio::test]
async fn http_js() {
    new_build_up("http-js", "JavaScript").await;
}

#[tokio::test]
async fn http_c() {
    new_build_up("http-c", "C").await;
}

#[tokio::test]
async fn http_go() {
    new_build_up("http-go", "Go").await;
}

/// A workflow template: an order saga that completes, and one whose charge fails and is undone.
async fn new_build_workflow(template: &str) {
    let work = tempfile::tempdir().unwrap();
    nimbus(work.path(), &["new", template, "orders"]);
    let app_dir = work.path().join("orders");
    assert!(app_dir.join("wit/workflow.wit").exists());
    nimbus(&app_dir, &["build"]);
    let scratch = common::App::new("# unused\n");
    let server = scratch.up_dir(&app_dir, &[]);
    assert!(server.banner.contains("/workflows/orders"), "{}", server.banner);
    let start = |input: &str| nimbus(&app_dir, &["workflows", "start", "orders", "--data", input]).trim().to_string();
    let (good, bad) = (start("o-1"), start("o-2-fail-charge"));
    for (run, status, needle) in [
        (good, "completed", "order o-1 done: reserved stock for o-1, charged o-1, shipped o-1"),
        (bad, "failed", "compensation release"),
    ] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let shown = loop {
            let shown = nimbus(&app_dir, &["workflows", "show", "orders", &run]);
            if shown.contains(&format!("status    {status}")) {
                break shown;
            }
            assert!(std::time::Instant::now() < deadline, "{shown}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        assert!(shown.contains(needle), "{shown}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn workflow_rust() {
    new_build_workflow("workflow-rust").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn workflow_python() {
    new_build_workflow("workflow-python").await;
}

/// A service template (the service examples of every language): `nimbus new`, `nimbus build`,
/// `nimbus up`, a request through the gateway, a clean stop.
async fn new_build_up_service(template: &str, language: &str) {
    let work = tempfile::tempdir().unwrap();
    let name = format!("my-{template}");
    nimbus(work.path(), &["new", template, &name]);
    let app_dir = work.path().join(&name);
    assert!(app_dir.join(".gitignore").exists());
    nimbus(&app_dir, &["build"]);
    let scratch = common::App::new("# unused\n");
    let mut server = scratch.up_dir(&app_dir, &[]);
    assert!(server.banner.contains("service, ready in"), "{}", server.banner);
    let resp = common::client().get(server.url("/some/path?x=1")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.text().await.unwrap(), format!("Hello from {name} ({language})! path=/some/path?x=1\n"));
    // The template handles SIGTERM: Nimbus and the service stop cleanly.
    server.signal("TERM");
    assert_eq!(server.wait_exit(std::time::Duration::from_secs(30)), Some(0));
    server.wait_for_log("service instance stopped");
}

#[tokio::test(flavor = "multi_thread")]
async fn service_python() {
    new_build_up_service("service-python", "Python").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn service_node() {
    new_build_up_service("service-node", "Node.js").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn service_go() {
    new_build_up_service("service-go", "Go").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn service_java() {
    new_build_up_service("service-java", "Java").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn service_rust() {
    new_build_up_service("service-rust", "Rust").await;
}

#[test]
fn listing_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let list = nimbus(dir.path(), &["templates", "list"]);
    for t in [
        "http-rust",
        "http-python",
        "http-js",
        "http-c",
        "http-go",
        "service-python",
        "service-node",
        "service-go",
        "service-java",
        "service-rust",
        "workflow-python",
        "workflow-rust",
    ] {
        assert!(list.contains(t), "{list}");
    }
    let fail = |args: &[&str], expect: &str| {
        let out = Command::new(NIMBUS).args(args).current_dir(dir.path()).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{err}");
    };
    fail(
        &["new", "http-cobol", "x"],
        "no template named `http-cobol`; available: http-c, http-go, http-js, http-python, http-rust, service-go, service-java, service-node, service-python, service-rust, workflow-python, workflow-rust",
    );
    fail(&["new", "http-rust", "Bad Name"], "cannot be an app name");
    nimbus(dir.path(), &["new", "http-rust", "taken"]);
    fail(&["new", "http-rust", "taken"], "already exists");
}

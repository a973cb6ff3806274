//! `nimbus new` → `nimbus build` → `nimbus up` → a request, for every template. The JS and Python
//! templates also prove that components from componentize-js and componentize-py (which import
//! `wasi:cli`, `wasi:filesystem` and more besides `wasi:http`) run unchanged; the C and Go ones,
//! preview1 reactor modules adapted into components, that a function counts in KV through
//! `wasi:keyvalue`.
//!
//! The toolchains are installed by `scripts/test.sh` (the README's test command); a missing one
//! fails the test with what to install.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::NIMBUS;

fn nimbus(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(NIMBUS).args(args).current_dir(dir).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "nimbus {args:?} failed:\n{text}");
    text
}

/// `nimbus new TEMPLATE my-TEMPLATE` and `nimbus build`: the directory holding the app, the
/// app's directory and its name. A function template says what toolchain to install.
fn new_build(template: &str) -> (tempfile::TempDir, PathBuf, String) {
    let work = tempfile::tempdir().unwrap();
    let name = format!("my-{template}");
    let created = nimbus(work.path(), &["new", template, &name]);
    assert!(created.contains("nimbus build"), "{created}");
    if template.starts_with("http-") {
        assert!(created.contains("Toolchain: "), "says what to install: {created}");
    }
    let app_dir = work.path().join(&name);
    assert!(app_dir.join(".gitignore").exists());
    nimbus(&app_dir, &["build"]);
    (work, app_dir, name)
}

/// `GET /some/path?x=1` answers 200 in plain text with `Hello from NAME (LANGUAGE)! path=...` and
/// then `tail`.
async fn assert_hello(server: &common::Server, name: &str, language: &str, tail: &str) {
    let resp = common::client().get(server.url("/some/path?x=1")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.text().await.unwrap(), format!("Hello from {name} ({language})! path=/some/path?x=1{tail}\n"));
}

async fn new_build_up(template: &str, language: &str) {
    let (_work, app_dir, name) = new_build(template);
    let scratch = common::App::new("# unused\n");
    let server = scratch.up_dir(&app_dir, &[]);
    assert_hello(&server, &name, language, "").await;
}

/// The C and Go templates are `wasi:http` components that count their requests in the KV bucket
/// `default` through `wasi:keyvalue`: each answer carries the count, and `nimbus kv` reads it.
async fn new_build_up_counting(template: &str, language: &str) {
    let (_work, app_dir, name) = new_build(template);
    let scratch = common::App::new("# unused\n");
    let server = scratch.up_dir(&app_dir, &[]);
    assert!(server.banner.contains("wasi:http component"), "{}", server.banner);
    assert_hello(&server, &name, language, " hits=1").await;
    assert_hello(&server, &name, language, " hits=2").await;
    assert_eq!(nimbus(&app_dir, &["kv", "get", "default", "hits"]), "2");
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

#[tokio::test(flavor = "multi_thread")]
async fn http_c() {
    new_build_up_counting("http-c", "C").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_go() {
    new_build_up_counting("http-go", "Go").await;
}

/// The C and Go templates ship the bindings `wit-bindgen` generates for the WIT that `nimbus new`
/// writes beside them, so that building an app needs no wit-bindgen: generated again here (with
/// the wit-bindgen `scripts/test.sh` installs), they must be unchanged. After a WIT or
/// wit-bindgen change, `NIMBUS_UPDATE_BINDINGS=1 cargo test --test templates bindings` writes
/// them into the templates.
#[test]
fn bindings_match_the_templates_wit() {
    let update = std::env::var_os("NIMBUS_UPDATE_BINDINGS").is_some();
    // wit-bindgen formats Go with `gofmt`, which sits beside `go` in GOROOT.
    let goroot = Command::new("go").args(["env", "GOROOT"]).output().expect("`go` is installed (scripts/test.sh)");
    let path = format!("{}/bin:{}", String::from_utf8_lossy(&goroot.stdout).trim(), std::env::var("PATH").unwrap());
    for (template, generator) in [("http-c", "c"), ("http-go", "go")] {
        let work = tempfile::tempdir().unwrap();
        nimbus(work.path(), &["new", template, "app"]);
        let app_dir = work.path().join("app");
        let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/nimbus-cli/templates").join(template);
        let mut args = vec![generator, "wit", "--world", "app"];
        args.extend(if update { vec!["--out-dir", out_dir.to_str().unwrap()] } else { vec!["--check"] });
        let out = Command::new("wit-bindgen")
            .args(&args)
            .current_dir(&app_dir)
            .env("PATH", &path)
            .output()
            .expect("wit-bindgen is installed (scripts/test.sh: cargo install --locked wit-bindgen-cli)");
        assert!(
            out.status.success(),
            "the {template} template's bindings differ from what `wit-bindgen {generator}` makes of its WIT; \
             regenerate them with NIMBUS_UPDATE_BINDINGS=1 cargo test --test templates bindings:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
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
    let (_work, app_dir, name) = new_build(template);
    let scratch = common::App::new("# unused\n");
    let mut server = scratch.up_dir(&app_dir, &[]);
    assert!(server.banner.contains("service, ready in"), "{}", server.banner);
    assert_hello(&server, &name, language, "").await;
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

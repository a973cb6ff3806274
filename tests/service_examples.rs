//! The service examples, one per language, built and served by `nimbus up --build` as a user
//! would: each answers on its route through the gateway and stops cleanly.
mod common;

use std::path::Path;
use std::time::Duration;

async fn serves(language: &str) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/services").join(language);
    let scratch = common::App::new("# unused\n");
    let mut server = scratch.up_dir(&example, &["--build"]);
    assert!(server.banner.contains("-> api (service, ready in"), "{}", server.banner);
    let resp = common::client().get(server.url("/orders/42")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["language"], language);
    assert_eq!(body["path"], "/orders/42");
    server.wait_for_log(&format!("{language} service on port"));
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(30)), Some(0));
    server.wait_for_log("service instance stopped");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_service() {
    serves("python").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_service() {
    serves("node").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn go_service() {
    serves("go").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn java_service() {
    serves("java").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_service() {
    serves("rust").await;
}

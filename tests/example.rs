//! The README's first command: `nimbus up --build examples/hello` builds and serves the example.
mod common;

use std::path::Path;

#[tokio::test]
async fn example_app_builds_and_serves() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello");
    // Serve the checked-in example (not a copy) as the README does, on a free port; the temporary
    // app only lends its compile-cache directory.
    let scratch = common::App::new("# unused\n");
    let server = scratch.up_dir(&example, &["--build"]);
    let resp = common::client().get(server.url("/hello/Ada")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "Hello, Ada!\n");
    let resp = common::client().delete(server.url("/hello")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
}

//! Components from other toolchains run unchanged: a Python component (componentize-py) and a
//! JavaScript component (componentize-js), both importing `wasi:cli`, `wasi:filesystem` and more
//! besides `wasi:http`, are built from source here and served by `nimbus up`.
//!
//! The toolchains are installed by `scripts/test.sh` (the README's test command); when one is
//! missing the test fails and says what to install.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn guests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests")
}

fn run(cmd: &mut Command, install: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}); install it with: {install}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

fn app_for(wasm: &Path) -> common::App {
    common::App::new(&format!(
        "[app]\nname = \"lang\"\n[component.fn]\nsource = \"{}\"\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"fn\"\n",
        wasm.display()
    ))
}

#[tokio::test]
async fn python_component_from_componentize_py() {
    let work = tempfile::tempdir().unwrap();
    std::fs::copy(guests().join("python/app.py"), work.path().join("app.py")).unwrap();
    let wit = guests().join("wit");
    let install = "pip install componentize-py==0.25.1";
    run(
        Command::new("componentize-py")
            .arg("-d")
            .arg(&wit)
            .args(["-w", "app", "bindings", "."])
            .current_dir(work.path()),
        install,
    );
    run(
        Command::new("componentize-py")
            .arg("-d")
            .arg(&wit)
            .args(["-w", "app", "componentize", "app", "-o", "app.wasm"])
            .current_dir(work.path()),
        install,
    );
    let app = app_for(&work.path().join("app.wasm"));
    let server = app.up(&[]);
    let resp = common::client().get(server.url("/py?x=1")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.text().await.unwrap(), "Hello from Python on Nimbus! path=/py?x=1\n");
}

#[tokio::test]
async fn javascript_component_from_componentize_js() {
    let work = tempfile::tempdir().unwrap();
    // The engine bundled with componentize-js exports wasi:http@0.2.10: give it that WIT.
    let wit = work.path().join("wit");
    copy_dir(&guests().join("wit/deps"), &wit.join("deps"));
    for entry in std::fs::read_dir(wit.join("deps")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text
            .replace("@0.2.12", "@0.2.10")
            .replace("version = 0.2.12", "version = 0.2.10")
            .replace("version = 0.2.11", "version = 0.2.10");
        std::fs::write(path, text).unwrap();
    }
    std::fs::write(
        wit.join("world.wit"),
        "package nimbus:fixtures;\n\nworld app {\n  include wasi:http/proxy@0.2.10;\n}\n",
    )
    .unwrap();
    let componentize = guests().join("js/node_modules/.bin/componentize-js");
    run(
        Command::new(&componentize)
            .arg(guests().join("js/app.js"))
            .arg("--wit")
            .arg(&wit)
            .args(["--world-name", "app", "-o"])
            .arg(work.path().join("app.wasm")),
        "npm ci --prefix tests/guests/js",
    );
    let app = app_for(&work.path().join("app.wasm"));
    let server = app.up(&[]);
    let resp = common::client().get(server.url("/js?x=1")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.text().await.unwrap(), "Hello from JavaScript on Nimbus! path=/js?x=1\n");
}

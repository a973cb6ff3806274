//! The command line's behaviour on bad input and its other commands.
mod common;

use common::{App, NIMBUS, fixtures_manifest};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nimbus up` must fail at start-up, with `expect` in its error, and serve nothing.
fn up_fails(manifest: &str, expect: &[&str]) -> String {
    let app = App::new(manifest);
    let out = app.run(&["up", ".", "--listen", "127.0.0.1:0", "--no-cache"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "nimbus up should fail:\n{err}");
    assert!(!stdout(&out).contains("Serving"), "nothing may be served:\n{}", stdout(&out));
    for e in expect {
        assert!(err.contains(e), "expected `{e}` in:\n{err}");
    }
    err
}

#[test]
fn invalid_manifest_is_reported_with_file_line_and_field() {
    let manifest = fixtures_manifest("", "").replace("[component.wagi]\n", "[component.wagi]\ntimeout = 5\n");
    let line = manifest.lines().position(|l| l == "timeout = 5").unwrap() + 1;
    up_fails(
        &manifest,
        &[&format!("nimbus.toml:{line}:1: error in `component.wagi.timeout`"), "unknown field `timeout`", "help:"],
    );
    up_fails(
        "[app]\nname = \"x\"\n[component.a]\nsource = \"a.wasm\"\n[[trigger.http]]\nroute = \"/a\"\ncomponent = \"b\"\n",
        &["nimbus.toml:7:1: error in `trigger.http[0].component`", "no component named `b`", "use one of `a`"],
    );
    up_fails("not toml at all [", &["nimbus.toml:1:"]);
}

#[test]
fn missing_wasm_file_says_to_build() {
    let manifest = fixtures_manifest("", "").replace(nimbus_fixtures::HELLO, "target/missing.wasm");
    up_fails(&manifest, &["error in `component.hello.source`", "missing.wasm", "nimbus build", "nothing is served"]);
}

#[test]
fn files_that_are_not_functions_are_refused() {
    let manifest = fixtures_manifest("", "").replace(nimbus_fixtures::HELLO, nimbus_fixtures::NOT_WASM);
    up_fails(&manifest, &["neither a WebAssembly component nor a core module", "component.hello.source"]);
    let manifest = fixtures_manifest("", "").replace(nimbus_fixtures::WAGI, nimbus_fixtures::NO_START);
    up_fails(&manifest, &["without a `_start` export"]);
    let manifest = fixtures_manifest("", "").replace(nimbus_fixtures::WAGI, nimbus_fixtures::BAD_IMPORT);
    up_fails(&manifest, &["evil", "launch_missiles"]);
    let manifest = fixtures_manifest("", "");
    up_fails_with_args(&manifest, &["--max-module-mb", "0"], &["more than the 0 bytes a function may be"]);
    up_fails_with_args(
        &manifest,
        &["--compile-timeout", "0"],
        &["took longer than 0ns to compile", "--compile-timeout"],
    );
}

fn up_fails_with_args(manifest: &str, args: &[&str], expect: &[&str]) {
    let app = App::new(manifest);
    let mut all = vec!["up", ".", "--listen", "127.0.0.1:0", "--no-cache"];
    all.extend_from_slice(args);
    let out = app.run(&all);
    assert!(!out.status.success());
    for e in expect {
        assert!(stderr(&out).contains(e), "expected `{e}` in:\n{}", stderr(&out));
    }
}

#[test]
fn busy_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let app = App::new(&fixtures_manifest("", ""));
    let out = std::process::Command::new(NIMBUS)
        .args(["up", ".", "--no-cache"])
        .env("NIMBUS_LISTEN", &addr)
        .current_dir(app.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains(&format!("cannot listen on {addr}")), "{}", stderr(&out));
}

#[test]
fn build_runs_commands_and_explains_failures() {
    let ok = App::new(&format!(
        "[app]\nname = \"b\"\n[component.a]\nsource = \"out.wasm\"\nbuild = {{ command = \"cp {} out.wasm\" }}\n",
        nimbus_fixtures::HELLO
    ));
    let out = ok.run(&["build"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("[1/1] a: built out.wasm"), "{}", stdout(&out));
    assert!(ok.path().join("out.wasm").exists());

    let missing_tool = App::new(
        "[app]\nname = \"b\"\n[component.a]\nsource = \"out.wasm\"\nbuild = { command = \"no-such-compiler --release\" }\n",
    );
    let out = missing_tool.run(&["build"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("nimbus.toml:5:11: error in `component.a.build.command`"), "{err}");
    assert!(err.contains("was not found (see the shell message above): install it"), "{err}");

    let no_output =
        App::new("[app]\nname = \"b\"\n[component.a]\nsource = \"out.wasm\"\nbuild = { command = \"true\" }\n");
    let out = no_output.run(&["build"]);
    assert!(stderr(&out).contains("succeeded but"), "{}", stderr(&out));

    let out = ok.run(&["build", "-c", "nope"]);
    assert!(stderr(&out).contains("no component named `nope`"));
}

#[test]
fn schema_and_help() {
    let out = std::process::Command::new(NIMBUS).arg("schema").output().unwrap();
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["title"], "Manifest");
    for args in [&["--help"][..], &["up", "--help"], &["build", "--help"], &["schema", "--help"]] {
        let out = std::process::Command::new(NIMBUS).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(stdout(&out).contains("Usage: nimbus"), "{args:?}");
    }
    let help = stdout(&std::process::Command::new(NIMBUS).args(["up", "--help"]).output().unwrap());
    assert!(help.contains("NIMBUS_LISTEN"), "flags document their env vars:\n{help}");
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    use std::io::Read;
    let mut child = std::process::Command::new(common::NIMBUS)
        .arg("doctor")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read nothing and close the pipe, as `nimbus doctor | head -0` would.
    drop(child.stdout.take());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert!(status.success() || status.code() == Some(141), "{status:?}");
}

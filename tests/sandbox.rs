//! The service sandbox attacked from inside: a Python service (tests/services/attacker.py) under
//! a real `nimbus server` or `nimbus up` tries to reach the host. Every attempt here succeeds
//! without the sandbox (`--unsandboxed-services`), so each assertion fails if it is removed.
mod common;

use std::time::{Duration, Instant};

use common::platform::Platform;
use common::{App, client};

const ATTACKER_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/services/attacker.py");
const SERVER_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/services/server.py");

/// An app dir with one service `name` running `script` under `/name/...`.
fn service_app(name: &str, script: &str, component: &str) -> App {
    let file = std::path::Path::new(script).file_name().unwrap().to_str().unwrap();
    let app = App::new(&format!(
        "[app]\nname = \"{name}\"\n\n[component.svc]\ncommand = [\"python3\", \"{file}\", \"{name}-tag\"]\n\
         readiness = {{ path = \"/{name}/healthz\" }}\n{component}\n\n[[trigger.http]]\nroute = \"/{name}/...\"\ncomponent = \"svc\"\n"
    ));
    std::fs::copy(script, app.path().join(file)).unwrap();
    app
}

/// A loopback HTTP server answering `text` to anything; returns its port.
async fn origin(text: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}", text.len());
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

async fn ask(base: &str, path: &str) -> String {
    client().get(format!("{base}{path}")).send().await.unwrap().text().await.unwrap()
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_sees_only_its_tree_and_reaches_only_its_granted_origins() {
    let granted = origin("granted origin").await;
    let other = origin("other origin").await;
    let data = tempfile::tempdir().unwrap();
    let p = Platform::start(data.path(), &[]);
    let victim = service_app("victim", SERVER_PY, "env = { PREFIX = \"/victim\", MARKER = \"victim-secret\" }");
    let attacker =
        service_app("attacker", ATTACKER_PY, &format!("grants = {{ outbound = [\"http://127.0.0.1:{granted}\"] }}"));
    p.admin_cli(&["deploy", victim.path().to_str().unwrap()]);
    p.admin_cli(&["deploy", attacker.path().to_str().unwrap()]);
    assert_eq!(ask(&p.gateway, "/victim/env?name=MARKER").await, "victim-secret");
    let a = |path: String| {
        let base = p.gateway.clone();
        async move { ask(&base, &format!("/attacker{path}")).await }
    };

    // An unprivileged user with no capabilities.
    let id = a("/id".into()).await;
    assert!(id.starts_with("uid=65534 gid=65534 "), "{id}");
    assert!(id.contains("CapEff:=0000000000000000") && id.contains("NoNewPrivs:=1"), "{id}");

    // Not the data dir, another app's tree, the server user's home, /etc/shadow.
    let control = data.path().join("control.redb");
    assert!(control.exists());
    let victim_tree = find(data.path(), "server.py").expect("the victim's tree is in the data dir");
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    for path in [control.to_str().unwrap(), victim_tree.to_str().unwrap(), "/etc/shadow"] {
        let got = a(format!("/read?path={path}")).await;
        assert!(got.starts_with("denied"), "read {path}: {got}");
    }
    for dir in [home.as_str(), data.path().to_str().unwrap()] {
        let got = a(format!("/list?path={dir}")).await;
        assert!(got.starts_with("denied"), "list {dir}: {got}");
    }
    // Its own tree is there, read-only; /tmp is its scratch.
    assert!(a("/read?path=attacker.py".into()).await.starts_with("ok "));
    let got = a("/write?path=attacker.py".into()).await;
    assert!(got.starts_with("denied"), "write its tree: {got}");
    let got = a(format!("/write?path={}/pwned", data.path().display())).await;
    assert!(got.starts_with("denied"), "write the data dir: {got}");
    assert_eq!(a("/write?path=/tmp/scratch".into()).await, "ok /tmp/scratch");

    // No route to the control API, the gateway, another app's service or any loopback port.
    let victim_port: u16 = p
        .stderr()
        .lines()
        .find(|l| l.contains("service process started")) // the victim deployed first
        .and_then(|l| l.split("port=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .map(|n| n.parse().unwrap())
        .unwrap_or_else(|| panic!("{}", p.stderr()));
    for port in [port_of(&p.api), port_of(&p.gateway), granted, other] {
        let got = a(format!("/connect?port={port}")).await;
        assert!(got.starts_with("denied"), "connect to {port}: {got}");
    }
    let got = a(format!("/connect?port={victim_port}")).await;
    assert!(!got.contains("victim-secret"), "reached the other app's service: {got}");

    // Outbound only through the egress proxy, only to granted origins.
    assert_eq!(a(format!("/fetch?url=http://127.0.0.1:{granted}/x")).await, "ok granted origin");
    let got = a(format!("/fetch?url=http://127.0.0.1:{other}/x")).await;
    assert!(got.starts_with("denied") && got.contains("403"), "{got}");
    let got = a(format!("/fetch?url=http://127.0.0.1:{}/v1/apps", port_of(&p.api))).await;
    assert!(got.starts_with("denied") && got.contains("403"), "{got}");
}

fn find(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if path.is_dir()
            && let Some(found) = find(&path, name)
        {
            return Some(found);
        }
    }
    None
}

/// Live processes (not zombies) whose command line contains `tag`.
fn processes_tagged(tag: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            !zombie && String::from_utf8_lossy(&cmdline).contains(tag)
        })
        .count()
}

fn wait_until(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_service_process_outlives_a_killed_server_or_a_stop_it_ignores() {
    // kill -9 of `nimbus up`: the service and the child it started die with it.
    let app = service_app("stubborn", ATTACKER_PY, "env = { IGNORE_TERM = \"1\" }\nshutdown_grace_s = 1");
    let mut server = app.up(&[]);
    let tag = "stubborn-tag";
    wait_until("the service and its child run", Duration::from_secs(20), || processes_tagged(tag) >= 2);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    wait_until("a service process outlived its killed nimbus", Duration::from_secs(20), || processes_tagged(tag) == 0);

    // kill -9 of `nimbus server`, five times: nothing accumulates.
    let data = tempfile::tempdir().unwrap();
    let mut p = Platform::start(data.path(), &[]);
    let admin = p.admin.clone();
    p.admin_cli(&["deploy", app.path().to_str().unwrap()]);
    for _ in 0..5 {
        wait_until("the service runs", Duration::from_secs(20), || processes_tagged(tag) >= 2);
        p.kill9();
        wait_until("a service process outlived its killed server", Duration::from_secs(20), || {
            processes_tagged(tag) == 0
        });
        p = Platform::start(data.path(), &[]);
        p.admin = admin.clone();
        assert_eq!(ask(&p.gateway, "/stubborn/healthz").await, "ok");
    }

    // A stop reaches a service that ignores SIGTERM: grace, then SIGKILL of all of it.
    p.admin_cli(&["apps", "delete", "stubborn"]);
    wait_until("a service that ignores SIGTERM survived its stop", Duration::from_secs(30), || {
        processes_tagged(tag) == 0
    });
    assert!(p.stderr().contains("ignored SIGTERM"), "{}", p.stderr());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_flooding_its_output_leaves_the_server_log_bounded() {
    let app = service_app("noisy", ATTACKER_PY, "");
    let server = app.up(&[]);
    assert_eq!(ask(&server.base, "/noisy/flood?mb=64").await, "flooded");
    // Once the budget allows lines again, the flood is summarised, not shown.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server.stderr().contains("after-the-flood") {
        assert!(Instant::now() < deadline, "the server log never showed the service again");
        ask(&server.base, "/noisy/say?text=after-the-flood").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = server.stderr();
    assert!(log.contains("of output not shown here"), "{}", &log[log.len().saturating_sub(2000)..]);
    assert!(log.len() < 8 << 20, "64 MiB of service output made the server log {} bytes", log.len());
    assert!(server.stdout().len() < 1 << 20, "the server's stdout has {} bytes", server.stdout().len());
}

/// A tree the sandbox's user may not read (here: a `chmod 700` app directory, as `mktemp -d` or
/// `umask 077` make) is refused with the reason and the fix, not with a crash loop that only says
/// "exit status 1". Applies where services drop to `nobody`, i.e. when Nimbus runs as root.
#[test]
fn a_tree_the_sandboxs_user_cannot_read_is_refused_with_what_to_do() {
    use std::os::unix::fs::PermissionsExt;
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return; // not root: services run as this user, who can read their own tree
    }
    let app = service_app("closed", SERVER_PY, "");
    std::fs::set_permissions(app.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = app.run(&["up", ".", "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not readable by the sandbox's user (`nobody`; mode 700)") && err.contains("chmod o+rx"),
        "{err}"
    );
}

/// The server's data dir lets the sandbox's user through to the services' trees and their
/// certificate files and nothing else: the stores are the server user's alone.
#[test]
fn the_data_dir_is_private_but_for_the_services_trees() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let _p = Platform::start(data.path(), &[]);
    let mode = |name: &str| std::fs::metadata(data.path().join(name)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(""), 0o711);
    for store in ["control.redb", "state.redb", "bus.redb"] {
        assert_eq!(mode(store), 0o600, "{store}");
    }
    assert_eq!(mode("uploads"), 0o700);
    assert_eq!(mode("services"), 0o755);
    assert_eq!(mode("identity"), 0o711, "passable to services' certificate files");
    assert_eq!(mode("identity/ca"), 0o700, "the identity CA's key is the server's alone");
}

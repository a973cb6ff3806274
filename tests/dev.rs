//! `nimbus dev`: edits to a Rust template's source and to its manifest are rebuilt and swapped in
//! while a load generator runs, without one failed request; a build that fails or a manifest that
//! does not validate prints its error and the last good revision keeps serving.
mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::NIMBUS;

/// What the load generator saw.
#[derive(Default)]
struct Seen {
    ok: u64,
    failures: Vec<String>,
    /// The newest body per revision header.
    last: Option<(String, String)>,
}

/// Sends GET `url` from `clients` loops until `stop`, recording each answer.
fn load(
    url: String,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<std::sync::Mutex<Seen>>, Vec<tokio::task::JoinHandle<()>>) {
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let tasks = (0..clients)
        .map(|_| {
            let (url, stop, seen) = (url.clone(), stop.clone(), seen.clone());
            tokio::spawn(async move {
                let client = common::client();
                while !stop.load(Ordering::Relaxed) {
                    let answer = match client.get(&url).send().await {
                        Ok(resp) => {
                            let status = resp.status();
                            let revision = resp
                                .headers()
                                .get("x-nimbus-revision")
                                .map(|v| v.to_str().unwrap_or_default().to_string())
                                .unwrap_or_default();
                            match resp.text().await {
                                Ok(body) if status == 200 => Ok((revision, body)),
                                Ok(body) => Err(format!("{status}: {body}")),
                                Err(e) => Err(format!("{status}, body broke off: {e}")),
                            }
                        }
                        Err(e) => Err(format!("request failed: {e}")),
                    };
                    let mut seen = seen.lock().unwrap();
                    match answer {
                        Ok(last) => {
                            seen.ok += 1;
                            seen.last = Some(last);
                        }
                        Err(e) => seen.failures.push(e),
                    }
                }
            })
        })
        .collect();
    (seen, tasks)
}

/// Waits until the load generator's latest answer contains `needle`; returns its revision.
async fn until_body(seen: &std::sync::Mutex<Seen>, needle: &str, server: &common::Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some((revision, body)) = seen.lock().unwrap().last.clone()
            && body.contains(needle)
        {
            return revision;
        }
        assert!(
            Instant::now() < deadline,
            "no answer with `{needle}`\nstdout:\n{}\nstderr:\n{}",
            server.stdout(),
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `nimbus dev` printed `needle` on stdout.
async fn until_printed(server: &common::Server, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let out = server.stdout();
        if out.contains(needle) {
            return out;
        }
        assert!(Instant::now() < deadline, "never printed `{needle}`\nstdout:\n{out}\nstderr:\n{}", server.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} has no `{from}`:\n{text}", file.display());
    std::fs::write(file, text.replace(from, to)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edits_are_rebuilt_and_swapped_in_without_a_failed_request() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(NIMBUS).args(["new", "http-rust", "greet"]).current_dir(work.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = work.path().join("greet");
    let (source, manifest) = (dir.join("src/lib.rs"), dir.join("nimbus.toml"));
    let scratch = common::App::new("# unused\n");
    let server = scratch.dev_dir(&dir, &[]);
    assert!(server.banner.contains("-> greet (wasi:http component"), "{}", server.banner);

    let stop = Arc::new(AtomicBool::new(false));
    let (seen, clients) = load(server.url("/x"), 4, stop.clone());
    assert_eq!(until_body(&seen, "Hello from greet", &server).await, "dev-1");

    // A source edit: rebuilt, swapped in.
    edit(&source, "Hello from", "Edited from");
    assert_eq!(until_body(&seen, "Edited from greet", &server).await, "dev-2");
    until_printed(&server, "✓ dev-2 serving").await;

    // A syntax error: the compiler's error is shown, the last good revision keeps answering.
    edit(&source, "let text = format!", "let text = format!!");
    let out = until_printed(&server, "still serving dev-2").await;
    assert!(out.contains("the build of `greet` failed"), "{out}");
    until_stderr(&server, "src/lib.rs:").await;
    let answered = seen.lock().unwrap().ok;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (revision, body) = seen.lock().unwrap().last.clone().unwrap();
    assert!(seen.lock().unwrap().ok > answered, "requests are still answered");
    assert_eq!((revision.as_str(), body.starts_with("Edited from")), ("dev-2", true), "{body}");

    // The fix serves.
    edit(&source, "let text = format!!(\"Edited from", "let text = format!(\"Fixed from");
    assert_eq!(until_body(&seen, "Fixed from greet", &server).await, "dev-3");

    // A manifest that does not validate: the error points at the line, nothing changes.
    let good = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, good.replace("component = \"greet\"", "component = \"nobody\"")).unwrap();
    let out = until_printed(&server, "still serving dev-3").await;
    assert!(out.contains("nimbus.toml:"), "{out}");

    // A manifest edit adding a route to a second component: applied without a rebuild.
    let added = format!(
        "{good}\n[component.fixture]\nsource = \"{}\"\n\n[[trigger.http]]\nroute = \"/fixture/...\"\ncomponent = \"fixture\"\n",
        nimbus_fixtures::HELLO
    );
    std::fs::write(&manifest, added).unwrap();
    until_printed(&server, "✓ dev-4 serving").await;
    let resp = common::client().get(server.url("/fixture/x")).send().await.unwrap();
    assert_eq!(resp.headers()["x-nimbus-revision"], "dev-4");
    assert_eq!(resp.text().await.unwrap(), "Hello from Nimbus!\n");
    assert!(until_printed(&server, "/fixture/...").await.contains("-> fixture"));

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let seen = seen.lock().unwrap();
    assert!(seen.ok > 100, "the load generator ran ({} answers)", seen.ok);
    assert!(
        seen.failures.is_empty(),
        "{} failed requests during the swaps: {:?}",
        seen.failures.len(),
        &seen.failures[..seen.failures.len().min(5)]
    );
}

/// Waits until `nimbus dev` wrote `needle` on stderr (where the build's compiler writes).
async fn until_stderr(server: &common::Server, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server.stderr().contains(needle) {
        assert!(Instant::now() < deadline, "no `{needle}` on stderr:\n{}", server.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Python service watched by the files of its directory.
const SERVICE_PY: &str = r#"import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
VERSION = "one"
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"service {VERSION} pid {os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edited_service_restarts_behind_the_swap_without_a_failed_request() {
    let app = common::App::new(
        "[app]\nname = \"svc\"\n\n[component.py]\ncommand = [\"python3\", \"svc.py\"]\n\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"py\"\n",
    );
    std::fs::write(app.path().join("svc.py"), SERVICE_PY).unwrap();
    let server = app.dev_dir(app.path(), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let (seen, clients) = load(server.url("/"), 4, stop.clone());
    until_body(&seen, "service one", &server).await;
    edit(&app.path().join("svc.py"), "VERSION = \"one\"", "VERSION = \"two\"");
    assert_eq!(until_body(&seen, "service two", &server).await, "dev-2");
    // The old revision's process drained and stopped.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.stderr().contains("service instance stopped") {
        assert!(Instant::now() < deadline, "the old service was not stopped:\n{}", server.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let seen = seen.lock().unwrap();
    assert!(seen.last.as_ref().unwrap().1.starts_with("service two"));
    assert!(
        seen.failures.is_empty(),
        "{} failed requests during the swap: {:?}",
        seen.failures.len(),
        &seen.failures[..seen.failures.len().min(5)]
    );
}

#[test]
fn a_first_build_that_fails_waits_for_the_fix() {
    use std::io::BufRead;
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(NIMBUS).args(["new", "http-rust", "greet"]).current_dir(work.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = work.path().join("greet");
    edit(&dir.join("src/lib.rs"), "let text = format!", "let text = format!!");
    let mut child = Command::new(NIMBUS)
        .args(["dev", "--listen", "127.0.0.1:0", "--cache-dir"])
        .arg(work.path().join("cache"))
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
    let mut seen = String::new();
    for line in lines.by_ref() {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("nothing is served yet") {
            break;
        }
        assert!(!line.starts_with("Serving app"), "served a broken app:\n{seen}");
    }
    assert!(seen.contains("the build of `greet` failed"), "{seen}");
    edit(&dir.join("src/lib.rs"), "let text = format!!", "let text = format!");
    let served = lines.find(|l| l.starts_with("Serving app"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(served.is_some(), "never served after the fix:\n{seen}");
}

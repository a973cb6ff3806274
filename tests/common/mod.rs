//! Helpers for end-to-end tests: write an app directory, run the real `nimbus` binary on a free
//! loopback port, and talk to it over HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const NIMBUS: &str = env!("CARGO_BIN_EXE_nimbus");

/// An app directory holding `nimbus.toml`.
pub struct App {
    pub dir: tempfile::TempDir,
}

impl App {
    pub fn new(manifest: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nimbus.toml"), manifest).unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join(".cache")
    }

    /// The token of the `nimbus up` serving this directory (from `.nimbus/api.json`).
    pub fn local_token(&self) -> String {
        self.local_api().1
    }

    /// The URL and token of the local control API of the `nimbus up` serving this directory.
    pub fn local_api(&self) -> (String, String) {
        let text = std::fs::read_to_string(self.path().join(".nimbus/api.json")).unwrap();
        let api: serde_json::Value = serde_json::from_str(&text).unwrap();
        (api["url"].as_str().unwrap().to_string(), api["token"].as_str().unwrap().to_string())
    }

    /// Runs `nimbus ARGS` in the app directory with `HOME` at `home` and no server configured
    /// (so `nimbus events`/`nimbus kv` find the `nimbus up` of this directory).
    pub fn cli(&self, home: &Path, args: &[&str]) -> std::process::Output {
        Command::new(NIMBUS)
            .args(args)
            .current_dir(self.path())
            .env_remove("NIMBUS_SERVER")
            .env_remove("NIMBUS_TOKEN")
            .env("HOME", home)
            .output()
            .unwrap()
    }

    /// Runs `nimbus ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(NIMBUS).args(args).current_dir(self.path()).env("NIMBUS_LOG", "info").output().unwrap()
    }

    /// Starts `nimbus up` on a free port and waits until it serves.
    pub fn up(&self, extra: &[&str]) -> Server {
        self.up_dir(self.path(), extra)
    }

    /// Starts `nimbus up` on a free port with `env` set, and waits until it serves.
    pub fn up_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Server {
        self.start_up(self.path(), extra, env)
    }

    /// Starts `nimbus up APP_DIR` with this app's cache directory.
    pub fn up_dir(&self, app_dir: &Path, extra: &[&str]) -> Server {
        self.start_up(app_dir, extra, &[])
    }

    /// Starts `nimbus dev APP_DIR` with this app's cache directory and waits until it serves.
    pub fn dev_dir(&self, app_dir: &Path, extra: &[&str]) -> Server {
        self.start("dev", app_dir, extra, &[])
    }

    fn start_up(&self, app_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        self.start("up", app_dir, extra, env)
    }

    fn start(&self, command: &str, app_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(NIMBUS)
            .arg(command)
            .arg(app_dir)
            .args(["--listen", "127.0.0.1:0", "--cache-dir"])
            .arg(self.cache_dir())
            .args(extra)
            .envs(env.iter().copied())
            .env("NIMBUS_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = collect_lines(child.stderr.take().unwrap());
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut banner = String::new();
        let mut addr = None;
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                let _ = child.wait();
                panic!(
                    "nimbus {command} exited before serving\nstdout:\n{banner}\nstderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
            banner.push_str(&line);
            for scheme in ["http", "https"] {
                if let Some(rest) = line.split(&format!(" on {scheme}://")).nth(1) {
                    addr = Some(format!("{scheme}://{}", rest.trim()));
                }
            }
            if line.starts_with("Health check:") {
                break;
            }
        }
        let stdout = Arc::new(Mutex::new(String::new()));
        let sink = stdout.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Server { child, base: addr.unwrap(), banner, stderr, stdout }
    }
}

/// A running `nimbus up`.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub banner: String,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle` (logs are written asynchronously).
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_line(|l| l.contains(needle));
        self.stderr()
    }

    /// Waits until a log line satisfies `pred` and returns that line.
    pub fn wait_for_line(&self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.stderr();
            if let Some(line) = log.lines().find(|l| pred(l)) {
                return line.to_string();
            }
            assert!(Instant::now() < deadline, "no log line matched:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "nimbus did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `nimbus ARGS` with `HOME` at `home` and no server, token or CA from the environment (so
/// only flags and the config file `nimbus login` writes there count).
pub fn nimbus_at_home(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(NIMBUS)
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("NIMBUS_SERVER")
        .env_remove("NIMBUS_TOKEN")
        .env_remove("NIMBUS_CACERT")
        .output()
        .unwrap()
}

/// The stdout of a successful command; panics with its output otherwise.
pub fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Sends `bytes` on a new connection and returns whatever the server answers before it closes
/// the connection (at most 20 s, then panics).
pub async fn send_raw(base: &str, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
    conn.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a connection that sent {:?} was still open after 20 s", String::from_utf8_lossy(bytes));
    String::from_utf8_lossy(&answer).into_owned()
}

/// POSTs `path` announcing a 100-byte body, sends 10 bytes of it and stops; returns the answer.
pub async fn stalled_post(base: &str, path: &str) -> String {
    send_raw(base, format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten.!").as_bytes()).await
}

/// A manifest serving the hello, kitchen and WAGI fixtures; `kitchen_limits` goes into the
/// kitchen component's `limits` table and `kitchen_extra` after it.
pub fn fixtures_manifest(kitchen_limits: &str, kitchen_extra: &str) -> String {
    format!(
        r#"[app]
name = "fixtures"

[component.hello]
source = "{hello}"

[component.kitchen]
source = "{kitchen}"
limits = {{ {kitchen_limits} }}
env = {{ GREETING = "hi" }}
{kitchen_extra}

[component.wagi]
source = "{wagi}"
limits = {{ timeout_ms = 1000 }}

[[trigger.http]]
route = "/..."
component = "hello"

[[trigger.http]]
route = "/kitchen/..."
component = "kitchen"

[[trigger.http]]
route = "/wagi/..."
component = "wagi"
methods = ["GET", "POST"]
"#,
        hello = nimbus_fixtures::HELLO,
        kitchen = nimbus_fixtures::KITCHEN,
        wagi = nimbus_fixtures::WAGI,
    )
}
pub mod platform;

/// Collects a child's output lines in the background.
pub fn collect_lines(from: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    text
}

/// The spans of a stored trace once `done` holds for them (asking for 20 s, else failing with
/// `what`): traces that go on after the response, through the bus, arrive in parts.
pub fn stored_spans_until(
    app: &App,
    home: &std::path::Path,
    trace: &str,
    what: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = app.cli(home, &["traces", "show", trace, "-o", "json"]);
        if out.status.success() {
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let spans = json["spans"].as_array().unwrap().clone();
            if done(&spans) {
                return spans;
            }
        }
        assert!(Instant::now() < deadline, "trace {trace} {what}: {out:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A webhook on a free loopback port (`http://ADDR/hook`) keeping each CloudEvent POSTed to it
/// (structured mode, `application/cloudevents+json`, which it asserts) as JSON.
pub async fn webhook_receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let keep = keep.clone();
            async move {
                assert_eq!(headers["content-type"], "application/cloudevents+json");
                keep.lock().unwrap().push(serde_json::from_str(&body).unwrap());
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

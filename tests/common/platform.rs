//! `nimbus server` as a child process: its data directory, its two addresses, its first admin
//! token, the CLI pointed at it, and a hard kill.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::NIMBUS;

/// A running `nimbus server`.
pub struct Platform {
    pub child: Child,
    pub data: PathBuf,
    /// `http://ADDR` of the gateway.
    pub gateway: String,
    /// `http://ADDR` of the control API.
    pub api: String,
    /// The admin token printed on first start (`None` on later starts).
    pub admin: Option<String>,
    pub banner: String,
    stderr: Arc<Mutex<String>>,
}

impl Platform {
    /// Starts a server on free loopback ports with its data (and compile cache) under `data`.
    pub fn start(data: &Path, extra: &[&str]) -> Self {
        Self::try_start(data, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Platform::start`], returning the output if the server exits before it is ready.
    pub fn try_start(data: &Path, extra: &[&str]) -> Result<Self, String> {
        Self::launch(Command::new(NIMBUS), data, extra)
    }

    /// Like [`Platform::start`], with the server's limit on open files (soft and hard) at `n`.
    pub fn start_with_open_files(data: &Path, extra: &[&str], n: u64) -> Self {
        let mut prlimit = Command::new("prlimit");
        prlimit.arg(format!("--nofile={n}:{n}")).arg("--").arg(NIMBUS);
        Self::launch(prlimit, data, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    fn launch(mut command: Command, data: &Path, extra: &[&str]) -> Result<Self, String> {
        let mut child = command
            .arg("server")
            .args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .arg("--cache-dir")
            .arg(data.join("cache"))
            .args(extra)
            .env("NIMBUS_LOG", "info")
            .env_remove("NIMBUS_TOKEN")
            .env_remove("NIMBUS_SERVER")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = super::collect_lines(child.stderr.take().unwrap());
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let (mut banner, mut gateway, mut api, mut admin) = (String::new(), None, None, None);
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                let _ = child.wait();
                // Let the stderr reader finish.
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!("nimbus server exited\nstdout:\n{banner}\nstderr:\n{}", stderr.lock().unwrap()));
            }
            banner.push_str(&line);
            let word = |prefix: &str| {
                line.trim().strip_prefix(prefix).map(|r| r.split_whitespace().next().unwrap().to_string())
            };
            if let Some(url) = word("Apps:") {
                gateway = Some(url);
            } else if let Some(url) = word("Control API:") {
                api = Some(url.trim_end_matches("/v1").to_string());
            } else if line.trim().starts_with("nbt_") {
                admin = Some(line.trim().to_string());
            } else if line.starts_with("Ready") {
                break;
            }
        }
        std::thread::spawn(move || for _ in out.lines().map_while(Result::ok) {});
        Ok(Self {
            child,
            data: data.to_path_buf(),
            gateway: gateway.unwrap(),
            api: api.unwrap(),
            admin,
            banner,
            stderr,
        })
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (up to 30 s) until a line of the server's log contains every one of `needles`.
    pub fn wait_for_log(&self, needles: &[&str]) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.stderr();
            if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_string();
            }
            assert!(std::time::Instant::now() < deadline, "no log line has {needles:?}:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    /// Runs the CLI against this server with `token` (no config file is read).
    pub fn cli(&self, token: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new(NIMBUS);
        cmd.args(args).env("NIMBUS_SERVER", &self.api).env("HOME", &self.data).env_remove("XDG_CONFIG_HOME");
        match token {
            Some(t) => cmd.env("NIMBUS_TOKEN", t),
            None => cmd.env_remove("NIMBUS_TOKEN"),
        };
        cmd.output().unwrap()
    }

    /// Runs the CLI with the admin token and asserts success; returns stdout.
    pub fn admin_cli(&self, args: &[&str]) -> String {
        let out = self.cli(self.admin.as_deref(), args);
        assert!(out.status.success(), "nimbus {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Uploads a deploy bundle with `token`: the status and the JSON answer.
    pub async fn deploy(&self, token: &str, bundle: Vec<u8>) -> (u16, serde_json::Value) {
        let resp = super::client()
            .post(self.api_url("/v1/deployments"))
            .bearer_auth(token)
            .header("content-type", nimbus_control::BUNDLE_CONTENT_TYPE)
            .body(bundle)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An app directory whose one component is the hello fixture on `route`; `marker` goes into
/// its env so that each marker is different content, hence a different revision.
pub fn hello_app(name: &str, route: &str, marker: &str) -> super::App {
    super::App::new(&hello_manifest(name, route, marker))
}

pub fn hello_manifest(name: &str, route: &str, marker: &str) -> String {
    format!(
        r#"[app]
name = "{name}"
version = "{marker}"

[component.web]
source = "{hello}"
env = {{ MARKER = "{marker}" }}

[[trigger.http]]
route = "{route}"
component = "web"
"#,
        hello = nimbus_fixtures::HELLO
    )
}

/// The bundle of `hello_manifest`, as `nimbus deploy` uploads it.
pub fn hello_bundle(name: &str, route: &str, marker: &str) -> Vec<u8> {
    let manifest = hello_manifest(name, route, marker);
    let wasm = std::fs::read(nimbus_fixtures::HELLO).unwrap();
    nimbus_control::Bundle { manifest, artifacts: [("web".to_string(), wasm)].into(), ..Default::default() }.pack()
}

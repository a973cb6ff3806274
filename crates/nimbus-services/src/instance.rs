//! One process of a service: started with `$PORT` in its own process group, its output logged
//! line by line, its exit observed, and stopped with SIGTERM then SIGKILL after the grace period.
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use nimbus_observe::ComponentTelemetry;
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use crate::sandbox::Confinement;
use crate::spec::ServiceSpec;

/// Longest line of service output logged as one record; longer ones are split.
const MAX_LINE: usize = 16 << 10;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A running process of a service.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) id: u64,
    pub(crate) port: u16,
    pid: Option<Pid>,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) ready: AtomicBool,
    exit: watch::Receiver<Option<ExitStatus>>,
    confinement: Confinement,
    memory_mb: u32,
    /// Kept-alive connections to it.
    pub(crate) connections: crate::proxy::Connections,
}

impl Instance {
    /// Starts a process of `spec` on a free loopback port.
    pub(crate) fn spawn(spec: &ServiceSpec) -> Result<Arc<Self>, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let program = spec.command.first().ok_or("empty command")?;
        let confinement = Confinement::new(&spec.name, id, spec.limits)?;
        // The process joins its cgroups (or sets its rlimits) itself, then becomes the service.
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!("{}exec {}\"$@\"", confinement.prologue, crate::sandbox::exec_prefix()))
            .arg("nimbus-service")
            .args(&spec.command)
            .current_dir(&spec.workdir)
            .env_clear()
            .envs(std::env::var_os("PATH").map(|p| ("PATH", p)))
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so stopping it stops whatever it started too.
            .process_group(0)
            .kill_on_drop(true);
        if !spec.workdir.is_dir() {
            return Err(format!("cannot start `{program}`: its workdir {} is not a directory", spec.workdir.display()));
        }
        find_program(program, &spec.workdir)?;
        let mut child =
            spawn(cmd).map_err(|e| format!("cannot start `{program}` in {}: {e}", spec.workdir.display()))?;
        let pid = child.id().and_then(|p| Pid::from_raw(p as i32));
        let mut logs = Vec::new();
        for (stream, name) in [(child.stdout.take().map(boxed), "stdout"), (child.stderr.take().map(boxed), "stderr")] {
            if let Some(stream) = stream {
                logs.push(tokio::spawn(log_lines(stream, spec.telemetry.clone(), id, name)));
            }
        }
        let (tx, exit) = watch::channel(None);
        tokio::spawn(async move {
            let status = child.wait().await;
            // Its last words are logged before its exit is reported (bounded: a child it left
            // behind may hold the pipes open).
            let _ = tokio::time::timeout(Duration::from_secs(1), futures::future::join_all(logs)).await;
            let _ = tx.send(Some(status.unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(-1))));
        });
        tracing::info!(component = %spec.name, instance = id, port, "service process started");
        Ok(Arc::new(Self {
            id,
            port,
            pid,
            in_flight: AtomicUsize::new(0),
            ready: AtomicBool::new(false),
            exit,
            confinement,
            memory_mb: spec.limits.memory_mb,
            connections: crate::proxy::Connections::default(),
        }))
    }

    /// Resident memory of the process, in bytes (`None` once it is gone).
    pub(crate) fn resident_bytes(&self) -> Option<u64> {
        let statm = std::fs::read_to_string(format!("/proc/{}/statm", self.pid?.as_raw_nonzero())).ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * rustix::param::page_size() as u64)
    }

    /// The exit status, once the process has exited.
    pub(crate) fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// Resolves when the process exits.
    pub(crate) async fn exited(&self) -> ExitStatus {
        let mut rx = self.exit.clone();
        let status = rx.wait_for(Option::is_some).await.map(|s| s.unwrap_or_default());
        status.unwrap_or_default()
    }

    /// SIGTERM to its process group, SIGKILL after `grace` if it is still there.
    pub(crate) async fn terminate(&self, grace: Duration) -> ExitStatus {
        self.ready.store(false, Ordering::Release);
        self.connections.close_idle();
        if self.exit_status().is_none() {
            self.signal(Signal::TERM);
            if tokio::time::timeout(grace, self.exited()).await.is_err() {
                tracing::warn!(instance = self.id, ?grace, "service process ignored SIGTERM; killing it");
                self.signal(Signal::KILL);
            }
        }
        let status = self.exited().await;
        // Children it left behind in its group, or in its cgroups, go too.
        self.signal(Signal::KILL);
        self.confinement.kill_remaining();
        status
    }

    /// Why the process ended, in words: its status, and whether its memory limit killed it.
    pub(crate) fn describe_exit(&self, status: ExitStatus) -> String {
        if self.confinement.oom_killed() {
            format!("process killed by its memory limit ({} MiB; {status})", self.memory_mb)
        } else {
            format!("process exited ({status})")
        }
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid {
            let _ = kill_process_group(pid, signal);
        }
    }
}

type SpawnJob = (
    tokio::process::Command,
    tokio::runtime::Handle,
    std::sync::mpsc::SyncSender<std::io::Result<tokio::process::Child>>,
);

/// Starts a process from one thread that lives as long as Nimbus. A service's parent-death
/// signal (see `sandbox.rs`) fires when the *thread* that started it exits; tokio may retire
/// worker threads into its blocking pool, where idle threads exit, so processes are never
/// started from those.
fn spawn(cmd: tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<SpawnJob>>> =
        std::sync::OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("nimbus-spawner".into())
            .spawn(move || {
                for (mut cmd, handle, reply) in rx {
                    let _runtime = handle.enter();
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("a thread to start services from");
        std::sync::Mutex::new(tx)
    });
    let (reply, result) = std::sync::mpsc::sync_channel(1);
    let job = (cmd, tokio::runtime::Handle::current(), reply);
    spawner.lock().expect("spawner").send(job).map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    result.recv().map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

/// Checks that `program` can be found the way `exec` will look for it, to say so clearly.
fn find_program(program: &str, workdir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &std::path::Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    let found = if program.contains('/') {
        executable(&workdir.join(program))
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(program))))
    };
    if found {
        Ok(())
    } else if program.contains('/') {
        Err(format!("cannot start `{program}`: no executable file at {}", workdir.join(program).display()))
    } else {
        Err(format!("cannot start `{program}`: not found in PATH; install it or give its full path"))
    }
}

fn boxed(r: impl AsyncRead + Send + Unpin + 'static) -> Box<dyn AsyncRead + Send + Unpin> {
    Box::new(r)
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Logs a stream line by line with the component and instance (to the process log and the log
/// store); very long lines are split.
async fn log_lines(
    mut stream: Box<dyn AsyncRead + Send + Unpin>,
    telemetry: Arc<ComponentTelemetry>,
    instance: u64,
    name: &'static str,
) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let emit = |line: &[u8]| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        tracing::info!(target: "nimbus::service", component = %telemetry.component, instance, stream = name, "{text}");
        telemetry.keep(None, None, name, "info", text);
    };
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            emit(&buf[..pos]);
            buf.drain(..=pos);
        }
        if buf.len() >= MAX_LINE {
            emit(&buf);
            buf.clear();
        }
    }
    if !buf.is_empty() {
        emit(&buf);
    }
}

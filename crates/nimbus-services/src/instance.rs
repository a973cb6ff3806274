//! One process of a service: started with `$PORT` in its own process group (and, unless opted
//! out, in the sandbox of `jail.rs`), its output kept line by line in the log store, its exit
//! observed, and stopped with SIGTERM then SIGKILL after the grace period.
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::AsyncRead;
use tokio::sync::watch;

use crate::jail;
use crate::netns::{Dial, NetNs};
use crate::sandbox::Confinement;
use crate::spec::ServiceSpec;

/// `$PORT` of a sandboxed process (its network namespace is its own).
const SANDBOX_PORT: u16 = 8080;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A running process of a service.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) id: u64,
    pub(crate) port: u16,
    /// How to connect to it.
    pub(crate) dial: Dial,
    pid: Option<Pid>,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) ready: AtomicBool,
    exit: watch::Receiver<Option<ExitStatus>>,
    confinement: Confinement,
    /// Its network namespace and egress proxy, while it runs sandboxed.
    sandbox: Option<Sandbox>,
    memory_mb: u32,
    /// Kept-alive connections to it.
    pub(crate) connections: crate::proxy::Connections,
}

impl Instance {
    /// Starts a process of `spec`: in the sandbox (see `jail.rs`) on `$PORT` 8080 of its own
    /// network namespace, or, unsandboxed, on a free port of the host's loopback.
    pub(crate) async fn spawn(
        spec: &ServiceSpec,
        identity: Option<&crate::identity::Mounted>,
    ) -> Result<Arc<Self>, String> {
        let program = spec.command.first().ok_or("empty command")?;
        let sandboxed = !jail::unsandboxed();
        if sandboxed && let Some(why) = jail::unavailable() {
            return Err(format!(
                "cannot sandbox `{program}`: {why}. Run `nimbus doctor`; on a trusted single-user machine, \
                 --unsandboxed-services runs services without the sandbox"
            ));
        }
        if sandboxed && let Some(why) = jail::unreachable_tree(&spec.root) {
            return Err(why);
        }
        let port = if sandboxed { SANDBOX_PORT } else { free_port().map_err(|e| format!("no free port: {e}"))? };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let confinement = Confinement::new(&spec.name, id, spec.limits)?;
        let prefix = if sandboxed {
            jail::prefix(&spec.root, &spec.workdir, identity.map(|i| i.path()))
        } else {
            crate::sandbox::exec_prefix()
        };
        // The process joins its cgroups (or sets its rlimits) itself, then becomes the service;
        // in the sandbox, bwrap waits for a byte on descriptor 3 (its stdin until then).
        let exec = if sandboxed { "exec \"$@\" 3<&0 </dev/null" } else { "exec \"$@\"" };
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!("{}{exec}", confinement.prologue))
            .arg("nimbus-service")
            .args(&prefix)
            .args(&spec.command)
            .current_dir(&spec.workdir)
            .env_clear()
            .envs(std::env::var_os("PATH").map(|p| ("PATH", p)))
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .envs(spec.secrets.iter().map(|(k, v)| (k, v.expose())))
            .env("PORT", port.to_string())
            .stdin(if sandboxed { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so stopping it stops whatever it started too.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(identity) = identity {
            let dir = if sandboxed { Path::new(crate::IDENTITY_MOUNT) } else { identity.path() };
            cmd.env("NIMBUS_IDENTITY_DIR", dir).env("NIMBUS_WORKLOAD_ID", identity.id.as_str());
        }
        if sandboxed && crate::egress::needed(spec) {
            let proxy = format!("http://127.0.0.1:{}", crate::egress::EGRESS_PORT);
            cmd.envs(["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"].map(|k| (k, proxy.as_str())));
        }
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
                logs.push(tokio::spawn(crate::output::log_lines(stream, spec.telemetry.clone(), id, name)));
            }
        }
        let (dial, sandbox) = if sandboxed {
            let sandbox = Sandbox::enter(&mut child, spec).await?;
            (Dial::inside(port, sandbox.ns.clone()), Some(sandbox))
        } else {
            (Dial::host(port), None)
        };
        let (tx, exit) = watch::channel(None);
        tokio::spawn(async move {
            let status = child.wait().await;
            // Its last words are logged before its exit is reported (bounded: a child it left
            // behind may hold the pipes open).
            let _ = tokio::time::timeout(Duration::from_secs(1), futures::future::join_all(logs)).await;
            let _ = tx.send(Some(status.unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(-1))));
        });
        tracing::info!(component = %spec.name, instance = id, port, sandboxed, "service process started");
        Ok(Arc::new(Self {
            id,
            port,
            dial,
            pid,
            in_flight: AtomicUsize::new(0),
            ready: AtomicBool::new(false),
            exit,
            confinement,
            sandbox,
            memory_mb: spec.limits.memory_mb,
            connections: crate::proxy::Connections::default(),
        }))
    }

    /// Memory of the instance, in bytes: its memory cgroup's usage where it has one (everything
    /// in the sandbox), else the resident memory of the process (`None` once it is gone).
    pub(crate) fn resident_bytes(&self) -> Option<u64> {
        if self.exit_status().is_some() {
            return None;
        }
        if let Some(bytes) = self.confinement.memory_bytes() {
            return Some(bytes);
        }
        let statm = std::fs::read_to_string(format!("/proc/{}/statm", self.pid?.as_raw_nonzero())).ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * rustix::param::page_size() as u64)
    }

    /// CPU time (user and system) used so far by the processes of the instance's process group
    /// that are still running (a process that exited takes its last share with it).
    pub(crate) fn cpu_time(&self) -> Duration {
        let Some(pid) = self.pid else { return Duration::ZERO };
        let ticks: u64 = process_group(pid)
            .into_iter()
            .filter_map(|member| {
                let stat = std::fs::read_to_string(format!("/proc/{}/stat", member.as_raw_nonzero())).ok()?;
                // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
                let rest = stat.rsplit_once(')')?.1;
                let mut fields = rest.split_whitespace().skip(11);
                Some(fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?)
            })
            .sum();
        let per_second = rustix::param::clock_ticks_per_second().max(1);
        Duration::from_micros(ticks.saturating_mul(1_000_000) / per_second)
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
    /// Waits until the process has no request in flight (or has exited), at most `within`.
    pub(crate) async fn drain(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.in_flight.load(Ordering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
            && self.exit_status().is_none()
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) async fn terminate(&self, grace: Duration) -> ExitStatus {
        self.ready.store(false, Ordering::Release);
        self.connections.close_idle();
        if self.exit_status().is_none() {
            self.sigterm();
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

    /// SIGTERM to the service and whatever it started. In the sandbox, not to bwrap itself
    /// (which would die at once and take the sandbox with it, no grace given) nor, in effect,
    /// to the sandbox's init (an init ignores signals it has no handler for).
    fn sigterm(&self) {
        let Some(pid) = self.pid else { return };
        if self.sandbox.is_none() {
            return self.signal(Signal::TERM);
        }
        for member in process_group(pid).into_iter().filter(|m| *m != pid) {
            let _ = rustix::process::kill_process(member, Signal::TERM);
        }
    }
}

/// The processes of process group `pgid`, from `/proc`.
fn process_group(pgid: Pid) -> Vec<Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the command's closing parenthesis: state, ppid, pgrp.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            rest.split_whitespace().nth(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid.as_raw_nonzero().get())
        })
        .filter_map(Pid::from_raw)
        .collect()
}

/// A sandboxed process's network namespace, and its egress proxy (stopped when dropped).
#[derive(Debug)]
struct Sandbox {
    ns: Arc<NetNs>,
    egress: Option<tokio::task::JoinHandle<()>>,
}

impl Sandbox {
    /// Finds the namespace bwrap made (its child's), starts the egress proxy in it if the service
    /// has outbound grants, then lets bwrap run the service.
    async fn enter(child: &mut tokio::process::Child, spec: &ServiceSpec) -> Result<Self, String> {
        let bwrap = child.id().ok_or("the sandbox exited at once")?;
        let deadline = tokio::time::Instant::now() + SANDBOX_START;
        let ns = loop {
            let children = std::fs::read_to_string(format!("/proc/{bwrap}/task/{bwrap}/children")).unwrap_or_default();
            if let Some(init) = children.split_whitespace().next().and_then(|p| p.parse().ok())
                && let Ok(Some(ns)) = NetNs::of(init)
            {
                break Arc::new(ns);
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("the sandbox exited at once ({status}); its output is in the log"));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("the sandbox was not set up within {SANDBOX_START:?}"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let egress = if !crate::egress::needed(spec) {
            None
        } else {
            let listener = ns
                .listen(crate::egress::EGRESS_PORT)
                .map_err(|e| format!("cannot start the egress proxy in the sandbox: {e}"))?;
            Some(crate::egress::serve(listener, crate::egress::Egress::of(spec)))
        };
        let mut go = child.stdin.take().ok_or("the sandbox's start signal is gone")?;
        tokio::io::AsyncWriteExt::write_all(&mut go, b"x")
            .await
            .map_err(|e| format!("cannot start the service in its sandbox: {e}"))?;
        Ok(Self { ns, egress })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(egress) = &self.egress {
            egress.abort();
        }
    }
}

/// How long bwrap may take to create the sandbox's namespaces.
const SANDBOX_START: Duration = Duration::from_secs(10);

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

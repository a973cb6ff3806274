//! Resource isolation of service processes, applied where the host allows it and reported where
//! it does not. Each instance gets its own cgroup — v2 (`memory.max`, `memory.swap.max`,
//! `pids.max`, `cpu.max`) or, on hosts with the v1 hierarchies, `memory`, `pids` and `cpu`
//! groups — joined by the process itself before it `exec`s the service (a `sh` prologue), so
//! nothing runs outside its limits even for a moment. Without writable cgroups, `ulimit`
//! (address space, processes) is the fallback. The sandbox proper (user, mount, pid and network
//! namespaces) is [`crate::jail`]'s. Secrets and descriptors are never inherited: the
//! environment is cleared (see `instance.rs`) and Rust opens every descriptor close-on-exec.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Limits of one service instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory in MiB.
    pub memory_mb: u32,
    /// Processes and threads.
    pub pids: u32,
    /// CPU in thousandths of a core, if limited.
    pub cpu_millis: Option<u32>,
}

/// The isolation layers this host offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    /// A cgroup v2 hierarchy with the memory, pids and cpu controllers delegated to Nimbus.
    CgroupV2(PathBuf),
    /// Cgroup v1 hierarchies for memory, pids and cpu.
    CgroupV1 {
        /// `.../memory/nimbus`.
        memory: PathBuf,
        /// `.../pids/nimbus`.
        pids: PathBuf,
        /// `.../cpu/nimbus`, if that controller is mounted.
        cpu: Option<PathBuf>,
    },
    /// No writable cgroups: `ulimit` only (address space and processes per user; weaker).
    Rlimits,
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CgroupV2(p) => write!(f, "cgroup v2 at {} (memory, pids, cpu)", p.display()),
            Self::CgroupV1 { memory, cpu, .. } => write!(
                f,
                "cgroup v1 at {} (memory, pids{})",
                memory.parent().and_then(Path::parent).unwrap_or(memory).display(),
                if cpu.is_some() { ", cpu" } else { "" }
            ),
            Self::Rlimits => f.write_str("rlimits only (no writable cgroup hierarchy)"),
        }
    }
}

const ROOT: &str = "/sys/fs/cgroup";

/// `setpriv` (util-linux) makes the service die with Nimbus even when Nimbus is killed with
/// SIGKILL and cannot stop it: no orphaned process keeps a port or memory.
const DIE_WITH_PARENT: &[&str] = &["setpriv", "--pdeathsig", "SIGKILL", "--"];

fn works(command: &[&str]) -> bool {
    std::process::Command::new(command[0])
        .args(&command[1..])
        .arg("true")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether service processes die with Nimbus (`setpriv --pdeathsig` works here).
pub fn die_with_parent() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| works(DIE_WITH_PARENT))
}

/// What an unsandboxed process `exec`s before the service's own command: the parent-death
/// signal, where available.
pub(crate) fn exec_prefix() -> Vec<String> {
    if die_with_parent() { DIE_WITH_PARENT.iter().map(|w| (*w).to_string()).collect() } else { Vec::new() }
}

/// The layer in use, detected once per process.
pub fn layer() -> &'static Layer {
    static LAYER: OnceLock<Layer> = OnceLock::new();
    LAYER.get_or_init(|| detect(Path::new(ROOT)))
}

fn detect(root: &Path) -> Layer {
    if let Some(v2) = v2(root) {
        return Layer::CgroupV2(v2);
    }
    let group = |ctrl: &str| {
        let dir = root.join(ctrl).join("nimbus");
        (std::fs::create_dir_all(&dir).is_ok() && dir.join("cgroup.procs").exists()).then_some(dir)
    };
    match (group("memory"), group("pids")) {
        (Some(memory), Some(pids)) => Layer::CgroupV1 { memory, pids, cpu: group("cpu") },
        _ => Layer::Rlimits,
    }
}

/// A v2 group `nimbus` under the root with the controllers enabled for its children.
fn v2(root: &Path) -> Option<PathBuf> {
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).ok()?;
    if !["memory", "pids", "cpu"].iter().all(|c| controllers.split_whitespace().any(|x| x == *c)) {
        return None;
    }
    let dir = root.join("nimbus");
    std::fs::write(root.join("cgroup.subtree_control"), "+memory +pids +cpu").ok()?;
    std::fs::create_dir_all(&dir).ok()?;
    std::fs::write(dir.join("cgroup.subtree_control"), "+memory +pids +cpu").ok()?;
    Some(dir)
}

/// The cgroups of one instance, removed when dropped (after its processes are gone).
#[derive(Debug)]
pub(crate) struct Confinement {
    groups: Vec<PathBuf>,
    /// Shell prologue run by the process before it `exec`s the service.
    pub(crate) prologue: String,
}

impl Confinement {
    /// Creates the instance's groups with their limits.
    pub(crate) fn new(name: &str, instance: u64, limits: Limits) -> Result<Self, String> {
        let leaf = format!("{name}-{}-{instance}", std::process::id());
        let memory = u64::from(limits.memory_mb) << 20;
        let write = |dir: &Path, file: &str, value: String| {
            std::fs::write(dir.join(file), &value)
                .map_err(|e| format!("cannot set {file} = {value} in {}: {e}", dir.display()))
        };
        let mkdir = |parent: &Path| {
            let dir = parent.join(&leaf);
            std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create cgroup {}: {e}", dir.display()))?;
            Ok::<_, String>(dir)
        };
        let groups = match layer() {
            Layer::CgroupV2(base) => {
                let dir = mkdir(base)?;
                write(&dir, "memory.max", memory.to_string())?;
                let _ = write(&dir, "memory.swap.max", "0".into());
                write(&dir, "pids.max", limits.pids.to_string())?;
                if let Some(m) = limits.cpu_millis {
                    write(&dir, "cpu.max", format!("{} 100000", u64::from(m) * 100))?;
                }
                vec![dir]
            }
            Layer::CgroupV1 { memory: m, pids: p, cpu } => {
                let mem = mkdir(m)?;
                write(&mem, "memory.limit_in_bytes", memory.to_string())?;
                // Swap must not stretch the limit (where memsw accounting exists).
                let _ = write(&mem, "memory.memsw.limit_in_bytes", memory.to_string());
                let pids = mkdir(p)?;
                write(&pids, "pids.max", limits.pids.to_string())?;
                let mut groups = vec![mem, pids];
                if let (Some(cpu), Some(millis)) = (cpu, limits.cpu_millis) {
                    let dir = mkdir(cpu)?;
                    write(&dir, "cpu.cfs_period_us", "100000".into())?;
                    write(&dir, "cpu.cfs_quota_us", (u64::from(millis) * 100).to_string())?;
                    groups.push(dir);
                }
                groups
            }
            Layer::Rlimits => {
                let kib = u64::from(limits.memory_mb) << 10;
                let prologue = format!("ulimit -v {kib} && ulimit -u {} && ", limits.pids);
                return Ok(Self { groups: Vec::new(), prologue });
            }
        };
        let prologue = groups.iter().map(|g| format!("echo $$ > '{}/cgroup.procs' && ", g.display())).collect();
        Ok(Self { groups, prologue })
    }

    /// Whether the kernel killed a process of this instance for exceeding its memory.
    pub(crate) fn oom_killed(&self) -> bool {
        self.groups.iter().any(|g| {
            let events = std::fs::read_to_string(g.join("memory.events"))
                .or_else(|_| std::fs::read_to_string(g.join("memory.oom_control")))
                .unwrap_or_default();
            events.lines().any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim() != "0"))
        })
    }

    /// Memory charged to the instance's memory group, if it has one.
    pub(crate) fn memory_bytes(&self) -> Option<u64> {
        self.groups.iter().find_map(|g| {
            let text = std::fs::read_to_string(g.join("memory.current"))
                .or_else(|_| std::fs::read_to_string(g.join("memory.usage_in_bytes")))
                .ok()?;
            text.trim().parse().ok()
        })
    }

    /// Kills whatever still runs in the groups (processes that left the process group).
    pub(crate) fn kill_remaining(&self) {
        for group in &self.groups {
            let procs = std::fs::read_to_string(group.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
    }
}

impl Drop for Confinement {
    fn drop(&mut self) {
        for group in &self.groups {
            // Emptied by then; a group with a lingering zombie is removed on a later start.
            let _ = std::fs::remove_dir(group);
        }
    }
}

//! `nimbus doctor`: what this host offers Nimbus — the isolation layers for services, the wasm
//! instance allocator, and the toolchains the templates build with.
use nimbus_services::jail;
use nimbus_services::sandbox::{self, Layer};

pub(crate) fn run() -> anyhow::Result<()> {
    println!("Service isolation on this host:");
    let layer = sandbox::layer();
    let (memory, pids, cpu) = match layer {
        Layer::CgroupV2(_) => ("yes (memory.max, swap off)", "yes (pids.max)", "yes (cpu.max)"),
        Layer::CgroupV1 { cpu, .. } => (
            "yes (memory.limit_in_bytes)",
            "yes (pids.max)",
            if cpu.is_some() { "yes (cpu.cfs_quota_us)" } else { "no: the cpu controller is not mounted" },
        ),
        Layer::Rlimits => (
            "weak: ulimit -v (address space; breaks runtimes that reserve much, like the JVM)",
            "weak: ulimit -u (per user, not per service)",
            "no",
        ),
    };
    println!("  cgroups              {layer}");
    println!("    memory             {memory}");
    println!("    processes          {pids}");
    println!("    cpu                {cpu}");
    println!("  clean environment    yes (only PORT, PATH and the manifest's env)");
    println!(
        "  file descriptors     stdin /dev/null, stdout/stderr piped to the log; Nimbus opens all others close-on-exec"
    );
    println!("  process group        yes (stop and kill reach everything a service starts)");
    let dies = if sandbox::die_with_parent() {
        "yes (setpriv --pdeathsig, bwrap --die-with-parent: no orphans even after kill -9 of nimbus)"
    } else {
        "no: util-linux `setpriv` is missing; a killed nimbus can leave service processes behind"
    };
    println!("  dies with Nimbus     {dies}");
    println!();
    println!("Service sandbox (bubblewrap; off only with --unsandboxed-services):");
    match jail::unavailable() {
        None => {
            let user = if jail::drops_to_nobody() {
                format!("yes (uid {}, no groups, no capabilities, no_new_privs)", jail::SERVICE_UID)
            } else {
                "partly: the server's own unprivileged user (no capabilities, no_new_privs)".to_string()
            };
            println!("  user                 {user}");
            println!(
                "  mount                yes (own root: its tree and /usr, /lib*, /bin, /etc read-only, secrets hidden; /tmp scratch)"
            );
            println!("  pid                  yes (own pid namespace under an init; dies with it)");
            println!("  net                  yes (own namespace, loopback only; the gateway connects inside)");
            println!("  egress               yes (HTTP(S) proxy in the namespace allowing only grants.outbound)");
        }
        Some(why) => {
            for layer in ["user", "mount", "pid", "net", "egress"] {
                println!("  {layer:<20} MISSING: {why}");
            }
            println!(
                "  => services do not start here unless --unsandboxed-services says this is a trusted single-user machine"
            );
        }
    }
    println!();
    println!("Toolchains (for `nimbus new` templates and service examples):");
    for (tool, args) in [
        ("cargo", &["--version"][..]),
        ("python3", &["--version"]),
        ("node", &["--version"]),
        ("java", &["-version"]),
        ("go", &["version"]),
        ("clang-14", &["--version"]),
        ("wasm-tools", &["--version"]),
    ] {
        let out = std::process::Command::new(tool).args(args).output();
        let line = match out {
            Ok(o) if o.status.success() => {
                let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
                String::from_utf8_lossy(&text).lines().next().unwrap_or("").trim().to_string()
            }
            _ => "not found".to_string(),
        };
        println!("  {tool:<20} {line}");
    }
    Ok(())
}

/// Applies `--unsandboxed-services` before any service starts, and says on the log when the
/// sandbox is off or unavailable.
pub(crate) fn services_sandbox(unsandboxed: bool) {
    if unsandboxed {
        jail::run_unsandboxed();
        tracing::warn!(
            "services run WITHOUT their sandbox (--unsandboxed-services): as this user, with the host's files and network"
        );
    } else if let Some(why) = jail::unavailable() {
        tracing::warn!("services cannot be sandboxed on this host and will not start: {why}; see `nimbus doctor`");
    }
}

/// Warns at start if the sandbox's user cannot reach `trees`, where a server unpacks the
/// services it is deployed (e.g. a data dir under `/root`): every such service would fail.
pub(crate) fn services_trees(trees: &std::path::Path) {
    if !jail::unsandboxed()
        && let Some(why) = std::fs::create_dir_all(trees).ok().and_then(|()| jail::unreachable_tree(trees))
    {
        tracing::warn!("deployed services will not start: {why}");
    }
}

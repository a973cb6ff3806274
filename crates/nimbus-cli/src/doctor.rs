//! `nimbus doctor`: what this host offers Nimbus — the isolation layers for services, the wasm
//! instance allocator, and the toolchains the templates build with.
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
    println!("  resource limits      {layer}");
    println!("    memory             {memory}");
    println!("    processes          {pids}");
    println!("    cpu                {cpu}");
    println!("  clean environment    yes (only PORT, PATH and the manifest's env)");
    println!(
        "  file descriptors     stdin /dev/null, stdout/stderr piped to the log; Nimbus opens all others close-on-exec"
    );
    println!("  process group        yes (stop and kill reach everything a service starts)");
    println!(
        "  dies with Nimbus     {}",
        if sandbox::die_with_parent() {
            "yes (setpriv --pdeathsig: no orphans even after kill -9 of nimbus)"
        } else {
            "no: util-linux `setpriv` is missing; a killed nimbus can leave service processes behind"
        }
    );
    println!(
        "  user/pid/mount ns    {}",
        if sandbox::namespaces() {
            "yes (unshare: own user, pid and mount namespaces, own /proc)"
        } else {
            "no: util-linux `unshare` is missing or the host forbids user namespaces"
        }
    );
    println!();
    println!("Toolchains (for `nimbus new` templates and service examples):");
    for (tool, args) in [
        ("cargo", &["--version"][..]),
        ("python3", &["--version"]),
        ("node", &["--version"]),
        ("java", &["-version"]),
        ("go", &["version"]),
        ("clang-14", &["--version"]),
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

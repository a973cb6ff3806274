//! The sandbox every service process runs in unless the operator opts out
//! ([`run_unsandboxed`], `--unsandboxed-services`): bubblewrap started by util-linux `setpriv`.
//!
//! - **User**: `setpriv` drops to `nobody` (when Nimbus runs as root; else it stays the server's
//!   unprivileged user) with no supplementary groups, no capabilities and `no_new_privs`, and sets
//!   the parent-death signal; bwrap adds its own user namespace (no nested ones allowed).
//! - **Mount**: a fresh root with only the system runtime read-only (`/usr`, `/bin`, `/sbin`,
//!   `/lib*`, `/etc` minus its secrets), its own `/proc` and `/dev`, a private `tmpfs` on `/tmp`
//!   (also `$HOME` and `$TMPDIR`), and the app's own tree read-only at `/app`. The data dir,
//!   the compile cache, other apps' trees and the server user's home are simply not there.
//! - **Pid**: its own pid namespace under bwrap's init, so the service is not PID 1 (it gets
//!   SIGTERM like anywhere else) and everything in it dies with that init.
//! - **Network**: its own namespace with only loopback; Nimbus connects to `$PORT` from inside it
//!   (see `netns.rs`) and serves its only way out, the egress proxy of `egress.rs`.
//! - **Lifetime**: `setpriv --pdeathsig` and bwrap's `--die-with-parent`: killing Nimbus, even
//!   with SIGKILL, kills the sandbox and with it every process of the service.
use std::path::Path;
use std::sync::OnceLock;

/// The user a sandboxed service runs as when Nimbus runs as root (`nobody`).
pub const SERVICE_UID: u32 = 65534;

static UNSANDBOXED: OnceLock<bool> = OnceLock::new();

/// Runs services without the sandbox, as the server's user with the host's filesystem and
/// network: for a trusted single-user machine only. Call once, before any service starts.
pub fn run_unsandboxed() {
    let _ = UNSANDBOXED.set(true);
}

/// Whether services run without the sandbox ([`run_unsandboxed`]).
pub fn unsandboxed() -> bool {
    UNSANDBOXED.get().copied().unwrap_or(false)
}

/// Why this host cannot sandbox services, or `None` when it can (tried once: bwrap with user,
/// pid, mount and network namespaces as the sandbox's user).
pub fn unavailable() -> Option<&'static str> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| {
        let out = std::process::Command::new("setpriv")
            .args(setpriv())
            .args(["bwrap", "--unshare-all", "--die-with-parent", "--disable-userns", "--unshare-user"])
            .args(["--ro-bind", "/", "/", "--", "true"])
            .stdin(std::process::Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "bubblewrap cannot create the sandbox's namespaces here: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Some(format!("util-linux `setpriv` cannot run ({e}); install util-linux and bubblewrap")),
        }
    })
    .as_deref()
}

/// Whether sandboxed services run as [`SERVICE_UID`] (Nimbus runs as root) rather than as the
/// server's own unprivileged user.
pub fn drops_to_nobody() -> bool {
    rustix::process::geteuid().is_root()
}

/// Why the sandbox's user cannot reach the service's tree `root`, if it cannot. bwrap mounts the
/// tree after `setpriv` dropped to `nobody`, so the tree must be readable and searchable by
/// others, and every directory above it searchable: a tree made with `umask 077` or `mktemp -d`,
/// or a data dir under a home only its owner may enter (`/root`), would otherwise fail the
/// service with only "permission denied" in its own output.
pub fn unreachable_tree(root: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    if !drops_to_nobody() {
        return None;
    }
    let root = std::fs::canonicalize(root).ok()?;
    let mode = |dir: &Path| std::fs::metadata(dir).map(|m| m.permissions().mode()).unwrap_or(0);
    let fix = "or, on a trusted single-user machine, run with --unsandboxed-services";
    if mode(&root) & 0o005 != 0o005 {
        return Some(format!(
            "the service's directory {} is not readable by the sandbox's user (`nobody`; mode {:o}): `chmod o+rx` it (and `o+r` its files), {fix}",
            root.display(),
            mode(&root) & 0o777
        ));
    }
    let closed = root.ancestors().skip(1).find(|dir| mode(dir) & 0o001 == 0)?;
    Some(format!(
        "the sandbox's user (`nobody`) cannot reach {}: {} (mode {:o}) is not searchable by others; `chmod o+x` it, keep the app (or the server's --data-dir) under a directory others may enter, {fix}",
        root.display(),
        closed.display(),
        mode(closed) & 0o777
    ))
}

/// `setpriv`'s arguments: the parent-death signal, and the drop to [`SERVICE_UID`] when root.
fn setpriv() -> Vec<String> {
    let mut args = vec!["--pdeathsig".into(), "SIGKILL".into(), "--no-new-privs".into()];
    if drops_to_nobody() {
        args.extend([format!("--reuid={SERVICE_UID}"), format!("--regid={SERVICE_UID}"), "--clear-groups".into()]);
    }
    args.push("--".into());
    args
}

/// Where a service's tree is mounted in its sandbox.
pub const APP: &str = "/app";

/// Files of `/etc` that hold secrets: hidden behind `/dev/null`.
const SECRETS: &[&str] = &["/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers"];
/// Directories of `/etc` that hold secrets: hidden behind an empty `tmpfs`.
const SECRET_DIRS: &[&str] = &["/etc/ssl/private", "/etc/sudoers.d", "/etc/ssh"];

/// The words the sandboxed process `exec`s before the service's command: `setpriv`, then bwrap
/// with the app's tree `root` read-only, starting in `workdir`, and waiting for a byte on
/// descriptor 3 before it runs the service (Nimbus sends it once the egress proxy listens).
pub(crate) fn prefix(root: &Path, workdir: &Path, identity: Option<&Path>) -> Vec<String> {
    let mut w: Vec<String> = vec!["setpriv".into()];
    w.extend(setpriv());
    w.extend(
        [
            "bwrap",
            "--unshare-user",
            "--disable-userns",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-net",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--hostname",
            "nimbus-service",
            "--ro-bind",
            "/usr",
            "/usr",
            "--ro-bind",
            "/etc",
            "/etc",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
        ]
        .map(String::from),
    );
    for dir in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        match std::fs::read_link(dir) {
            Ok(target) => w.extend(["--symlink".into(), target.display().to_string(), dir.into()]),
            Err(_) if Path::new(dir).is_dir() => w.extend(["--ro-bind".into(), dir.into(), dir.into()]),
            Err(_) => {}
        }
    }
    for file in SECRETS.iter().filter(|f| Path::new(f).exists()) {
        w.extend(["--ro-bind".into(), "/dev/null".into(), (*file).into()]);
    }
    for dir in SECRET_DIRS.iter().filter(|d| Path::new(d).is_dir()) {
        w.extend(["--tmpfs".into(), (*dir).into()]);
    }
    // The tree is mounted at `/app`: not even the path of the data dir is visible.
    let absolute = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (root, workdir) = (absolute(root), absolute(workdir));
    let inside = Path::new(APP).join(workdir.strip_prefix(&root).unwrap_or(Path::new("")));
    w.extend(["--ro-bind".into(), root.display().to_string(), APP.into()]);
    w.extend(["--chdir".into(), inside.display().to_string()]);
    if root.join(".nimbus").is_dir() {
        // `nimbus up`'s data dir next to the manifest: its state and API token.
        w.extend(["--tmpfs".into(), format!("{APP}/.nimbus")]);
    }
    if let Some(dir) = identity {
        // Its certificate files, renewed in place (see `identity`).
        w.extend(["--ro-bind".into(), dir.display().to_string(), crate::IDENTITY_MOUNT.into()]);
    }
    w.extend(["--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp", "--block-fd", "3", "--"].map(String::from));
    w
}

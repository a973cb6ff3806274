//! A service's workload identity as files: a short-lived certificate of its SPIFFE ID, its key
//! (readable by the service's user alone) and the identity CA's root (`svid.pem`, `svid_key.pem`,
//! `bundle.pem`), written to a directory of this service's own when it starts, renewed at half its lifetime, and removed
//! when it stops. A sandboxed process sees the directory read-only at [`IDENTITY_MOUNT`]; every
//! process finds it in `$NIMBUS_IDENTITY_DIR` and its ID in `$NIMBUS_WORKLOAD_ID`. A renewed
//! file replaces the old one whole (written beside it, renamed), so a reader never sees half of
//! one; a process reloads it when it likes (the old certificate stays valid until it expires).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nimbus_security::identity::{WorkloadCerts, WorkloadId};
use tokio::sync::watch;

/// Where a sandboxed process finds its identity files.
pub const IDENTITY_MOUNT: &str = "/run/nimbus/identity";

/// How soon a failed renewal is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// The identity a service runs as, and the node's issuer of its certificates.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Its SPIFFE ID.
    pub id: WorkloadId,
    /// Issues its certificates.
    pub certs: Arc<WorkloadCerts>,
    /// The directory under which each started service gets a private directory of its own.
    pub base: PathBuf,
}

/// A running service's identity directory, kept fresh until the service stops.
#[derive(Debug)]
pub(crate) struct Mounted {
    dir: tempfile::TempDir,
    pub(crate) id: WorkloadId,
}

impl Mounted {
    /// Creates the directory with a first certificate, and renews it until `stop` turns true.
    pub(crate) fn start(identity: &Identity, name: &str, mut stop: watch::Receiver<bool>) -> Result<Self, String> {
        let failed = |e: &dyn std::fmt::Display| format!("cannot give service `{name}` its identity certificate: {e}");
        // Nimbus's own directories, which the service's user may pass through but neither list nor
        // change: it cannot swap a file, and another process of that user cannot find the key
        // (under an unlisted directory, a name of 16 random characters). Only the key is its own.
        let mode = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(|e| failed(&e))
        };
        std::fs::create_dir_all(&identity.base).map_err(|e| failed(&e))?;
        mode(&identity.base, 0o711)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .rand_bytes(16)
            .tempdir_in(&identity.base)
            .map_err(|e| failed(&e))?;
        mode(dir.path(), 0o711)?;
        let owner = owner();
        identity.certs.renew(&identity.id, dir.path(), owner).map_err(|e| failed(&e))?;
        let (certs, id, path) = (identity.certs.clone(), identity.id.clone(), dir.path().to_path_buf());
        let every = (certs.ttl() / 2).max(Duration::from_secs(1));
        let component = name.to_string();
        tokio::spawn(async move {
            let mut wait = every;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                wait = match certs.renew(&id, &path, owner) {
                    Ok(()) => every,
                    Err(e) => {
                        tracing::warn!(%component, error = %e, "cannot renew the service's identity certificate; retrying");
                        RETRY
                    }
                };
            }
        });
        Ok(Self { dir, id: identity.id.clone() })
    }

    /// The directory on the host.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Who owns the files: the sandbox's user when Nimbus runs as root, else Nimbus's own user.
fn owner() -> Option<(u32, u32)> {
    (crate::jail::drops_to_nobody() && !crate::jail::unsandboxed())
        .then_some((crate::jail::SERVICE_UID, crate::jail::SERVICE_UID))
}

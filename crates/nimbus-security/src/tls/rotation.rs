//! The cluster CA's directory and how its CA is replaced without dropping a request between
//! nodes. The directory holds the CA that signs the nodes' certificates (`ca.pem`, `ca.key`)
//! and, during a rotation, the next CA (`next.pem`, `next.key`) or the previous one's
//! certificate (`previous.pem`). Every node trusts all the certificates present and re-reads the
//! directory while it runs ([`super::peer::PeerTls::reload`]), so the operator rotates in three
//! steps, giving every node the directory after each one and waiting until all have read it:
//!
//! 1. [`Rotation::Stage`] creates the next CA: every node trusts it too, none signs with it;
//! 2. [`Rotation::Activate`] makes it the CA (the old certificate stays trusted as
//!    `previous.pem`): each node renews its certificate from the new CA at once — the others
//!    already trust it;
//! 3. [`Rotation::Finish`] removes the previous certificate: the old CA is trusted no more.
//!
//! The files are flat, so the directory is also a Kubernetes Secret (`--from-file=DIR`).
use std::path::Path;

use super::TlsError;
use super::ca::{CA_CERT, CA_KEY, LocalCa};

/// The next CA's certificate, trusted by every node from the first step.
pub const NEXT_CERT: &str = "next.pem";
/// The next CA's key.
pub const NEXT_KEY: &str = "next.key";
/// The previous CA's certificate, trusted until the last step.
pub const PREVIOUS_CERT: &str = "previous.pem";

/// A step of a rotation of the cluster CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Create the next CA beside the current one.
    Stage,
    /// Make the next CA the one that signs; the current one's certificate stays trusted.
    Activate,
    /// Stop trusting the previous CA.
    Finish,
}

/// Why a rotation step cannot be taken; nothing was changed.
fn refused(why: String) -> TlsError {
    TlsError::Rotation(why)
}

/// Takes `step` in the cluster CA directory `dir`.
pub fn rotate(dir: &Path, step: Rotation) -> Result<(), TlsError> {
    let has = |name: &str| dir.join(name).exists();
    if !has(CA_CERT) || !has(CA_KEY) {
        return Err(refused(format!("{} holds no cluster CA ({CA_CERT} and {CA_KEY})", dir.display())));
    }
    match step {
        Rotation::Stage => {
            if has(NEXT_CERT) {
                return Err(refused(format!("{} already holds a next CA; activate it", dir.display())));
            }
            if has(PREVIOUS_CERT) {
                return Err(refused(format!("the last rotation is not finished ({PREVIOUS_CERT} is still trusted)")));
            }
            let staging = dir.join(".next");
            let _ = std::fs::remove_dir_all(&staging);
            LocalCa::open_or_create(&staging)?;
            // The key first: the next certificate's presence means both are complete.
            rename(&staging.join(CA_KEY), &dir.join(NEXT_KEY))?;
            rename(&staging.join(CA_CERT), &dir.join(NEXT_CERT))?;
            let _ = std::fs::remove_dir_all(&staging);
        }
        Rotation::Activate => {
            // Interrupted after the key's rename: the certificate's is what is left to do.
            let interrupted = has(NEXT_CERT) && !has(NEXT_KEY) && has(PREVIOUS_CERT);
            if !interrupted {
                if !has(NEXT_CERT) || !has(NEXT_KEY) {
                    return Err(refused(format!("{} holds no next CA; stage one first", dir.display())));
                }
                let previous = dir.join(PREVIOUS_CERT);
                std::fs::copy(dir.join(CA_CERT), &previous)
                    .map_err(|source| TlsError::Write { path: previous, source })?;
                // A node reading between the renames finds the next key beside the old
                // certificate and the next one: what it signs verifies against the next
                // certificate, which every node trusts since the stage step.
                rename(&dir.join(NEXT_KEY), &dir.join(CA_KEY))?;
            }
            rename(&dir.join(NEXT_CERT), &dir.join(CA_CERT))?;
        }
        Rotation::Finish => {
            if has(NEXT_CERT) {
                return Err(refused(format!("{} holds a next CA that is not active yet; activate it", dir.display())));
            }
            let previous = dir.join(PREVIOUS_CERT);
            if previous.exists() {
                std::fs::remove_file(&previous).map_err(|source| TlsError::Write { path: previous, source })?;
            }
        }
    }
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<(), TlsError> {
    std::fs::rename(from, to).map_err(|source| TlsError::Write { path: to.into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_stages_activates_and_finishes_in_order_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca");
        assert!(rotate(&path, Rotation::Stage).is_err(), "no CA yet");
        let first = LocalCa::open_or_create(&path).unwrap().cert_pem().to_string();
        assert!(rotate(&path, Rotation::Activate).is_err(), "nothing staged");

        rotate(&path, Rotation::Stage).unwrap();
        let next = std::fs::read_to_string(path.join(NEXT_CERT)).unwrap();
        assert_ne!(next, first);
        assert!(rotate(&path, Rotation::Stage).is_err(), "one next CA at a time");
        assert!(rotate(&path, Rotation::Finish).is_err(), "finish before activate");

        rotate(&path, Rotation::Activate).unwrap();
        assert_eq!(LocalCa::open(&path).unwrap().cert_pem(), next, "the next CA signs now");
        assert_eq!(std::fs::read_to_string(path.join(PREVIOUS_CERT)).unwrap(), first, "the old one is trusted");
        assert!(!path.join(NEXT_CERT).exists() && !path.join(NEXT_KEY).exists());
        assert!(rotate(&path, Rotation::Stage).is_err(), "finish the rotation first");

        rotate(&path, Rotation::Finish).unwrap();
        assert!(!path.join(PREVIOUS_CERT).exists());
        assert!(!path.join(".next").exists());
    }

    #[test]
    fn an_activation_interrupted_between_its_renames_is_completed_by_running_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca");
        LocalCa::open_or_create(&path).unwrap();
        rotate(&path, Rotation::Stage).unwrap();
        let next = std::fs::read_to_string(path.join(NEXT_CERT)).unwrap();
        // What a crash after the key's rename leaves.
        std::fs::copy(path.join(CA_CERT), path.join(PREVIOUS_CERT)).unwrap();
        std::fs::rename(path.join(NEXT_KEY), path.join(CA_KEY)).unwrap();
        rotate(&path, Rotation::Activate).unwrap();
        assert_eq!(LocalCa::open(&path).unwrap().cert_pem(), next);
        assert!(!path.join(NEXT_CERT).exists());
        rotate(&path, Rotation::Finish).unwrap();
    }
}

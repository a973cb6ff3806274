//! Where an app's components come from: files next to its manifest (`nimbus up`) or a deployed
//! revision's bundle (`nimbus server`). The two differ only in how bytes and directories are
//! found and in the hints their errors carry.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use nimbus_manifest::{Component, LoadedManifest};
use nimbus_wasm::LoadError;

/// Where an app's functions and services are.
#[derive(Debug)]
pub enum Components<'a> {
    /// Each function's `source` file and each service's directory are relative to the
    /// manifest (`nimbus up`).
    Files,
    /// A deployed revision: each function's bytes, and the directory each service's files were
    /// unpacked to (or why they could not be).
    Bundle {
        /// The revision id (names the functions in errors and logs).
        revision: &'a str,
        /// Function name → .wasm bytes.
        artifacts: &'a BTreeMap<String, Vec<u8>>,
        /// Service name → its unpacked directory.
        service_dirs: &'a HashMap<String, Result<PathBuf, String>>,
    },
}

/// A function's bytes in memory, or the file to read them from.
pub(crate) enum Wasm {
    File(PathBuf),
    Bytes { label: PathBuf, bytes: Vec<u8> },
}

impl Components<'_> {
    /// The revision these components are: a deployed revision's id, `local` for files.
    pub(crate) fn revision(&self) -> &str {
        match self {
            Self::Files => "local",
            Self::Bundle { revision, .. } => revision,
        }
    }

    /// Where function `name` is; `None` if a bundle lacks it (the deploy checked it does not).
    pub(crate) fn wasm(&self, loaded: &LoadedManifest, name: &str, c: &Component) -> Option<Wasm> {
        match self {
            Self::Files => Some(Wasm::File(loaded.resolve(c.source()?))),
            Self::Bundle { revision, artifacts, .. } => Some(Wasm::Bytes {
                label: PathBuf::from(format!("{}/{revision}/{name}.wasm", loaded.manifest.app.name)),
                bytes: artifacts.get(name)?.clone(),
            }),
        }
    }

    /// The directory service `name` runs in.
    pub(crate) fn service_dir<'d>(&'d self, loaded: &'d LoadedManifest, name: &str) -> Result<&'d Path, String> {
        match self {
            Self::Files => Ok(loaded.dir()),
            Self::Bundle { service_dirs, .. } => match service_dirs.get(name) {
                Some(Ok(dir)) => Ok(dir),
                Some(Err(e)) => Err(e.clone()),
                None => Err(format!("service `{name}` has no files in the bundle")),
            },
        }
    }

    /// A service's error as its deployer should see it: on a server, paths inside its
    /// directory become relative to the service's tree and the directory itself a name.
    pub(crate) fn service_error(&self, message: String, dir: &Path) -> String {
        match self {
            Self::Files => message,
            Self::Bundle { .. } => {
                let dir = dir.display().to_string();
                message.replace(&format!("{dir}/"), "").replace(&dir, "the service's directory")
            }
        }
    }

    /// What to do about a service that did not become ready.
    pub(crate) fn service_hint(&self) -> &'static str {
        match self {
            Self::Files => {
                "check the command and its output above; a service must listen on 127.0.0.1:$PORT and pass its readiness probe"
            }
            Self::Bundle { .. } => {
                "the service must listen on 127.0.0.1:$PORT and pass its readiness probe; see the server log for its output"
            }
        }
    }

    /// What to do about a function that does not load (a missing grant or a bad one is said by
    /// the error itself, wherever the component came from).
    pub(crate) fn load_hint(&self, e: &LoadError) -> String {
        match (self, e) {
            (_, LoadError::Link { .. }) | (Self::Files, _) => e.hint(),
            (Self::Bundle { .. }, _) => {
                "build a wasi:http component or a WASI preview1 command, importing only WASI".into()
            }
        }
    }
}

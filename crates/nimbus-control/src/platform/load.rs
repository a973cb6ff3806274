//! Loading a stored or deployed revision: its components' grants checked against the policies,
//! its bundle's service trees unpacked (once per content
//! digest), then the app host assembles it (the same [`nimbus_host::AppHost::assemble`] that
//! `nimbus up` calls); and removing the trees of deleted artifacts.
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nimbus_gateway::LiveRevision;
use nimbus_host::{AssembleError, Components, Revision};
use nimbus_manifest::{LoadedManifest, Manifest, RoutePattern};
use nimbus_services::Service;

use super::Platform;
use crate::bundle::{Bundle, digest};
use crate::error::ControlError;

/// A revision, loaded: its functions compiled, its services started and ready.
pub(super) struct Load {
    pub(super) manifest: Arc<Manifest>,
    pub(super) version: Option<String>,
    pub(super) routes: BTreeSet<RoutePattern>,
    pub(super) live: LiveRevision,
    pub(super) services: Vec<Arc<Service>>,
}

impl Platform {
    /// Assembles a bundle's revision (whose manifest, parsed once, is `loaded`) through the app
    /// host. Service trees are unpacked (once per content digest) under `services_dir`; services
    /// are started and must become ready.
    pub(super) async fn load(&self, loaded: &LoadedManifest, bundle: &Bundle, id: &str) -> Result<Load, ControlError> {
        self.authorizer.check_manifest(&loaded.manifest)?;
        let service_dirs: HashMap<String, Result<PathBuf, String>> =
            bundle.trees.iter().map(|(name, tree)| (name.clone(), unpack_tree(&self.services_dir, tree))).collect();
        let from = Components::Bundle { revision: id, artifacts: &bundle.artifacts, service_dirs: &service_dirs };
        let revision = self.host.assemble(loaded, from).await.map_err(|e| {
            let message = match e {
                AssembleError::Secrets(_) => "a granted secret is not set; nothing was deployed",
                AssembleError::Handlers(_) => "a trigger has no handler; nothing was deployed",
                AssembleError::Functions(_) | AssembleError::Services(_) => {
                    "a component does not load; nothing was deployed"
                }
            };
            ControlError::Invalid { message: message.into(), details: e.into_problems() }
        })?;
        let Revision { manifest, gateway, services, .. } = revision;
        Ok(Load {
            version: manifest.app.version.clone(),
            routes: http_routes(&manifest),
            manifest,
            live: LiveRevision::new(id, gateway),
            services,
        })
    }

    /// Removes the unpacked service trees of deleted artifacts (their processes are stopping).
    pub(super) fn remove_trees(&self, digests: &[String]) {
        for d in digests {
            let dir = self.services_dir.join(d.trim_start_matches("sha256:"));
            if dir.is_dir() {
                let dir = dir.clone();
                tokio::spawn(async move {
                    // Give stopping processes their grace period before their files go.
                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                    let _ = std::fs::remove_dir_all(dir);
                });
            }
        }
    }
}

/// The routes of a manifest's HTTP triggers.
pub(super) fn http_routes(m: &Manifest) -> BTreeSet<RoutePattern> {
    m.trigger.http.iter().map(|t| t.route.clone()).collect()
}

/// Unpacks a service's tree into `services_dir/DIGEST` unless it is there already; the directory
/// appears whole or not at all (unpacked beside it, then renamed).
fn unpack_tree(services_dir: &Path, tree: &[u8]) -> Result<PathBuf, String> {
    let dir = services_dir.join(digest(tree).trim_start_matches("sha256:"));
    if dir.is_dir() {
        return Ok(dir);
    }
    let tmp = services_dir.join(format!(".unpack-{}-{}", std::process::id(), fastrand_suffix()));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create the service's directory on the server: {e}"))?;
    let result = tar::Archive::new(tree).unpack(&tmp).map_err(|e| format!("the service's files do not unpack: {e}"));
    if let Err(e) = result.and_then(|()| std::fs::rename(&tmp, &dir).map_err(|e| e.to_string())) {
        let _ = std::fs::remove_dir_all(&tmp);
        if !dir.is_dir() {
            return Err(e);
        }
    }
    Ok(dir)
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

pub(crate) fn parse_manifest(text: &str) -> Result<LoadedManifest, ControlError> {
    LoadedManifest::parse(text.to_string(), Path::new(nimbus_manifest::MANIFEST_FILE).to_path_buf()).map_err(|e| {
        ControlError::Invalid {
            message: "the manifest is invalid; nothing was deployed".into(),
            details: e.diagnostics().iter().map(ToString::to_string).collect(),
        }
    })
}

//! Revision retention and loading on demand. Only revisions with traffic or a tag are loaded
//! (components compiled, services running); the others are kept as their stored record and
//! loaded again when traffic or a tag moves to them. Each app keeps at most `keep_inactive`
//! revisions without traffic or a tag (the newest ones); older ones are deleted with the
//! artifacts no remaining revision uses.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{AppState, Loaded, Pinned, Platform, blocking, http_routes, parse_manifest, unused_blobs};
use crate::bundle::Bundle;
use crate::error::ControlError;
use crate::model::Traffic;
use crate::store::{RevisionRecord, StoreError};

impl Platform {
    /// Checks every deploy's dependencies from now on (once; later calls are ignored).
    pub fn set_supply_chain(&self, chain: crate::SupplyChain) {
        if self.supply.set(chain).is_err() {
            tracing::warn!("the supply-chain check was already set; the first one stays");
        }
    }

    /// Keeps at most `keep` revisions without traffic or a tag per app (the newest), deleting
    /// older ones now and after every deploy.
    pub async fn set_retention(&self, keep: usize) -> Result<(), ControlError> {
        self.keep_inactive.store(keep, Ordering::Relaxed);
        let mut apps = self.apps.lock().await;
        let names: Vec<String> = apps.keys().cloned().collect();
        for app in names {
            let pinned = self.pinned(&apps[&app]).await?;
            self.prune(&mut apps, &app, None, &pinned)?;
        }
        self.publish(&apps).await;
        Ok(())
    }

    /// Deletes the app's revisions without traffic or a tag beyond the newest `keep_inactive`,
    /// sparing `spare` (a revision just deployed) and the revisions of unfinished workflow runs
    /// (`pinned`); the caller publishes.
    pub(super) fn prune(
        &self,
        apps: &mut BTreeMap<String, AppState>,
        app: &str,
        spare: Option<&str>,
        pinned: &Pinned,
    ) -> Result<(), ControlError> {
        let keep = self.keep_inactive.load(Ordering::Relaxed);
        let Some(state) = apps.get(app) else { return Ok(()) };
        let mut inactive: Vec<&Loaded> = state
            .revisions
            .values()
            .filter(|r| !state.record.traffic.serves(&r.record.id) && !pinned.contains_key(&r.record.id))
            .collect();
        if inactive.len() <= keep {
            return Ok(());
        }
        inactive.sort_by_key(|r| std::cmp::Reverse(r.record.seq));
        let gone: Vec<String> =
            inactive[keep..].iter().map(|r| r.record.id.clone()).filter(|id| Some(id.as_str()) != spare).collect();
        let pairs: Vec<(&str, &str)> = gone.iter().map(|id| (app, id.as_str())).collect();
        let unused = unused_blobs(apps, &pairs);
        let seen = blocking(|| self.store.delete_revisions(&state.record, &gone, false, &unused))?;
        let state = apps.get_mut(app).expect("checked above");
        state.record.seen = seen;
        for id in &gone {
            if let Some(r) = state.revisions.remove(id) {
                nimbus_host::stop_in_background(r.services);
            }
        }
        self.remove_trees(&unused);
        tracing::info!(app, pruned = gone.len(), keep, "old revisions without traffic or a tag deleted");
        Ok(())
    }

    /// The unfinished workflow runs of the app per revision they are pinned to; such a revision
    /// stays loaded (its runs replay on its code) and is not deleted.
    pub(super) async fn pinned(&self, state: &AppState) -> Result<Pinned, ControlError> {
        if state.revisions.values().all(|r| r.manifest.trigger.workflow.is_empty())
            || !self.holds_journal(&state.record.name)
        {
            return Ok(Pinned::new());
        }
        self.host.pinned_revisions(&state.record.name).await.map_err(|e| ControlError::Unavailable {
            message: "the workflow journal cannot be read; nothing was changed".into(),
            source: Some(nimbus_observe::cause(e)),
        })
    }

    /// Loads the app's revisions that `traffic` sends requests to and that are not loaded yet.
    pub(super) async fn activate(&self, state: &mut AppState, traffic: &Traffic) -> Result<(), ControlError> {
        for id in traffic.served() {
            if let Some(rev) = state.revisions.get_mut(id)
                && rev.live.is_none()
            {
                let loaded = self.load_stored(rev.record.clone()).await?;
                if loaded.live.is_some() {
                    tracing::info!(app = %rev.record.app, revision = id, "revision loaded: it has traffic or a tag");
                }
                *rev = loaded;
            }
        }
        Ok(())
    }

    /// Loads a stored revision: its artifacts from the store, compiled, its services started —
    /// unless its `[placement]` keeps it off this node: then only its record is known here.
    pub(super) async fn load_stored(&self, record: RevisionRecord) -> Result<Loaded, ControlError> {
        let loaded = parse_manifest(&record.manifest)?;
        if !self.admits(&loaded.manifest) {
            tracing::info!(app = %record.app, revision = %record.id, requires = %loaded.manifest.placement.describe(),
                "revision not loaded: its placement excludes this node");
            return Loaded::unloaded(record);
        }
        let services: BTreeSet<&String> =
            loaded.manifest.component.iter().filter(|(_, c)| c.command.is_some()).map(|(n, _)| n).collect();
        let mut bundle = Bundle { manifest: record.manifest.clone(), ..Bundle::default() };
        for a in &record.artifacts {
            let bytes = self
                .store
                .blob(&a.digest, &record.artifact_tags)?
                .ok_or_else(|| StoreError::Missing { digest: a.digest.clone() })?;
            let map = if services.contains(&a.component) { &mut bundle.trees } else { &mut bundle.artifacts };
            map.insert(a.component.clone(), bytes);
        }
        let l = self.load(&loaded, &bundle, &record.id).await?;
        Ok(Loaded {
            record,
            manifest: l.manifest,
            version: l.version,
            routes: l.routes,
            live: Some(Arc::new(l.live)),
            services: l.services,
        })
    }
}

/// Unloads the app's revisions that receive no traffic, have no tag and run no unfinished
/// workflow (`pinned`): requests in flight finish on them, their services stop.
pub(super) fn deactivate(state: &mut AppState, pinned: &Pinned) {
    let traffic = &state.record.traffic;
    let idle =
        |r: &&mut Loaded| r.live.is_some() && !traffic.serves(&r.record.id) && !pinned.contains_key(&r.record.id);
    for rev in state.revisions.values_mut().filter(idle) {
        rev.live = None;
        nimbus_host::stop_in_background(std::mem::take(&mut rev.services));
        tracing::info!(app = %rev.record.app, revision = %rev.record.id, "revision unloaded: no traffic or tag");
    }
}

impl Loaded {
    /// A stored revision that is not loaded: its manifest and routes only.
    pub(super) fn unloaded(record: RevisionRecord) -> Result<Self, ControlError> {
        let manifest = parse_manifest(&record.manifest)?.manifest;
        Ok(Self {
            version: manifest.app.version.clone(),
            routes: http_routes(&manifest),
            manifest: Arc::new(manifest),
            live: None,
            services: Vec::new(),
            record,
        })
    }
}

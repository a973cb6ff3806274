//! Convergence in cluster mode: the records another node (or this one) changed in the
//! cluster's store are applied here — new revisions known, traffic moved, revisions loaded and
//! unloaded, deleted ones and apps dropped — and the routing table published, so every node
//! serves what the cluster says within the time it takes the change to reach it.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{AppState, Loaded, Pinned, Platform, blocking, retention};
use crate::error::ControlError;
use crate::store::Key;

impl Platform {
    /// Applies the changed records reported by the node's replica until it stops; `vault`
    /// reopens its data keys when another node created or rotated them.
    pub async fn converge(self: Arc<Self>, vault: Arc<crate::Vault>, mut changes: mpsc::UnboundedReceiver<Key>) {
        while let Some(first) = changes.recv().await {
            let mut apps = BTreeSet::new();
            let mut keys = false;
            let mut note = |key: Key| match key.deployed_app() {
                Some(app) => drop(apps.insert(app.to_string())),
                None => keys |= key == Key::SecretKeys,
            };
            note(first);
            while let Ok(key) = changes.try_recv() {
                note(key);
            }
            if keys && let Err(e) = tokio::task::block_in_place(|| vault.reload()) {
                tracing::error!(error = %e, "cannot open the secrets' data keys another node changed");
            }
            for app in apps {
                if let Err(e) = self.reconcile(&app).await {
                    tracing::error!(app, error = %e, "cannot apply the app's changes from the cluster; retried on its next change");
                }
            }
        }
    }

    /// Makes the app's state here what the store says.
    async fn reconcile(&self, name: &str) -> Result<(), ControlError> {
        let mut apps = self.apps.lock().await;
        let (record, stored) = blocking(|| Ok((self.store.app(name)?, self.store.revisions_of(name)?)))?;
        let Some(record) = record else {
            if let Some(gone) = apps.remove(name) {
                nimbus_host::stop_in_background(gone.revisions.into_values().flat_map(|r| r.services).collect());
                tracing::info!(app = name, "app deleted through another node");
                self.publish(&apps).await;
            }
            return Ok(());
        };
        let state = apps
            .entry(name.to_string())
            .or_insert_with(|| AppState { record: record.clone(), revisions: BTreeMap::new() });
        let ids: BTreeSet<&str> = stored.iter().map(|r| r.id.as_str()).collect();
        let removed: Vec<String> = state.revisions.keys().filter(|id| !ids.contains(id.as_str())).cloned().collect();
        for id in removed {
            if let Some(gone) = state.revisions.remove(&id) {
                nimbus_host::stop_in_background(gone.services);
            }
        }
        for rev in stored {
            if !state.revisions.contains_key(&rev.id) {
                let id = rev.id.clone();
                match Loaded::unloaded(rev) {
                    Ok(l) => drop(state.revisions.insert(id, l)),
                    Err(e) => tracing::error!(app = name, revision = %id, error = %e, "revision does not parse here"),
                }
            }
        }
        state.record = record;
        // The app's data is kept as its served revisions say before anything reads it.
        self.residency.pin(name, state.placements());
        let pinned = self.pinned(state).await.unwrap_or_else(|e| {
            tracing::error!(app = name, error = %e, "cannot read the unfinished workflow runs; no revision is unloaded");
            state.revisions.keys().map(|id| (id.clone(), Vec::new())).collect::<Pinned>()
        });
        let traffic = state.record.traffic.clone();
        let activated = self.activate(state, &traffic).await;
        retention::deactivate(state, &pinned);
        self.publish(&apps).await;
        activated
    }
}

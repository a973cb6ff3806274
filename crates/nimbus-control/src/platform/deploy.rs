//! Deploys and deletions: a bundle becomes a stored, loaded revision (or finds the identical
//! one) with the hosts, tag and traffic its options ask for; revisions and apps are deleted
//! with the artifacts nothing else uses.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nimbus_host::{StopOnDrop, stop_in_background};
use nimbus_manifest::{LoadedManifest, RoutePattern};

use super::checks::{check_artifacts, check_host, check_tag};
use super::load::{Load, parse_manifest};
use super::{AppState, Loaded, Platform, blocking, claimed_routes, get, now, retention, retry_conflicts};
use crate::auth::Principal;
use crate::bundle::{Bundle, digest};
use crate::error::ControlError;
use crate::model::{ArtifactInfo, DeployResult, Traffic};
use crate::ownership::Claim;
use crate::store::{AppRecord, DeployWrite, RevisionRecord, StoreError};
use nimbus_security::policy::Action;

/// Options of one deploy.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// Bind the app to these hosts (replacing earlier ones); `None` keeps the current binding.
    pub hosts: Option<Vec<String>>,
    /// Point this tag at the new revision.
    pub tag: Option<String>,
    /// Send all traffic to the new revision. The first revision of an app always gets it all.
    pub promote: bool,
    /// Take the hosts and requests this deploy claims from the apps that have them (admins
    /// only; the rules are in the crate's `ownership` module).
    pub take_over: bool,
    /// The registry artifact the bundle was pulled from, digest-pinned
    /// (`oci://REGISTRY/REPOSITORY@sha256:HEX`), recorded on a new revision.
    pub source: Option<String>,
}

impl Platform {
    /// Creates a revision from a bundle (or finds the identical one) and applies the options.
    pub async fn deploy(
        &self,
        bundle: Bundle,
        options: DeployOptions,
        principal: &Principal,
    ) -> Result<DeployResult, ControlError> {
        // An attempt that stored the revision and lost the race for the app's record created it.
        let stored = AtomicBool::new(false);
        let mut result = retry_conflicts(|| self.deploy_once(&bundle, &options, principal, &stored)).await?;
        result.created |= stored.load(Ordering::Relaxed);
        Ok(result)
    }

    async fn deploy_once(
        &self,
        bundle: &Bundle,
        options: &DeployOptions,
        principal: &Principal,
        stored: &AtomicBool,
    ) -> Result<DeployResult, ControlError> {
        let loaded = self.check_deploy(bundle, options, principal).await?;
        let supply = match self.supply.get() {
            Some(chain) => Some(tokio::task::block_in_place(|| chain.check(&loaded.manifest, bundle))?),
            None => None,
        };
        // Its data is kept as it says before any of it runs (and `publish` settles it after).
        self.residency.add(&loaded.manifest.app.name, &loaded.manifest.placement);
        let app_name = loaded.manifest.app.name.clone();
        let id = bundle.revision_id();
        let known = self.apps.lock().await.get(&app_name).is_some_and(|a| a.revisions.contains_key(&id));
        // Compiling can take seconds: do it before taking the lock that serializes changes.
        let fresh = if known { None } else { Some(self.load(&loaded, bundle, &id).await?) };

        let mut apps = self.apps.lock().await;
        let now = now();
        let existing = apps.get(&app_name);
        let created = existing.is_none_or(|a| !a.revisions.contains_key(&id));
        let mut record = existing.map(|a| a.record.clone()).unwrap_or_else(|| AppRecord {
            name: app_name.clone(),
            hosts: Vec::new(),
            traffic: Traffic::default(),
            history: Vec::new(),
            created_at: now,
            updated_at: now,
            seen: None,
        });
        if let Some(hosts) = &options.hosts {
            record.hosts = hosts.iter().map(|h| h.to_ascii_lowercase()).collect::<BTreeSet<_>>().into_iter().collect();
        }
        let mut claimed: BTreeSet<RoutePattern> =
            existing.map(|a| a.revisions.values().flat_map(Loaded::claimed).collect()).unwrap_or_default();
        let new_loaded = match fresh {
            Some(l) if created => {
                let Load { manifest, version, routes: rev_routes, live, services } = l;
                claimed.extend(claimed_routes(&rev_routes, &manifest));
                let seq = existing.and_then(|a| a.revisions.values().map(|r| r.record.seq).max()).map_or(0, |s| s + 1);
                let mut record = revision_record(bundle, &id, &app_name, now, seq);
                record.supply = supply;
                record.source.clone_from(&options.source);
                // A pinned app's artifacts go to the cluster's artifact store of this node's
                // region (see `Residency`); the others to the shared one.
                record.artifact_tags = manifest.placement.storage_tags(self.residency.labels()).unwrap_or_default();
                Some(Loaded { record, manifest, version, routes: rev_routes, live: Some(Arc::new(live)), services })
            }
            Some(l) => {
                stop_in_background(l.services);
                None
            }
            None => None,
        };
        // Until the deploy is stored, its freshly started services go again on any error.
        let guard = StopOnDrop(new_loaded.as_ref().map(|l| l.services.clone()).unwrap_or_default());
        let current: Vec<Claim> = apps.values().map(AppState::claim).collect();
        let proposed =
            Claim { name: app_name.clone(), hosts: record.hosts.clone(), routes: claimed.into_iter().collect() };
        let moved = crate::ownership::admit(&current, &proposed, options.take_over)?;
        let others = taken_over(&apps, moved, &app_name, now);

        let mut traffic = record.traffic.clone();
        if let Some(tag) = &options.tag {
            traffic.tags.insert(tag.clone(), id.clone());
        }
        if options.promote || traffic.targets.is_empty() {
            traffic = Traffic::all_to(&id, traffic.tags);
        }
        record.change_traffic(traffic, now);
        record.updated_at = now;
        if let Some(state) = apps.get_mut(&app_name) {
            // A redeploy of known content may send traffic or a tag to an unloaded revision.
            self.activate(state, &record.traffic).await?;
        }

        let blobs: Vec<(String, &[u8])> = if new_loaded.is_some() {
            bundle.artifacts.values().chain(bundle.trees.values()).map(|b| (digest(b), b.as_slice())).collect()
        } else {
            Vec::new()
        };
        let write = DeployWrite {
            app: &record,
            revision: new_loaded.as_ref().map(|l| &l.record),
            blobs: blobs.iter().map(|(d, b)| (d.as_str(), *b)).collect(),
            others: &others,
        };
        let written = blocking(|| self.store.deploy(&write));
        if write.revision.is_some() && matches!(written, Err(ControlError::Store(StoreError::Conflict { .. }))) {
            stored.store(true, Ordering::Relaxed);
        }
        let revisions = written?;
        guard.disarm();
        for mut other in others {
            other.seen = revisions.get(&other.name).copied();
            if let Some(state) = apps.get_mut(&other.name) {
                state.record = other;
            }
        }
        record.seen = revisions.get(&app_name).copied();

        let state = apps
            .entry(app_name.clone())
            .or_insert_with(|| AppState { record: record.clone(), revisions: BTreeMap::new() });
        state.record = record;
        if let Some(l) = new_loaded {
            state.revisions.insert(id.clone(), l);
        }
        let pinned = match self.pinned(state).await {
            Ok(pinned) => pinned,
            Err(e) => {
                // Unknown: keep every revision loaded and stored rather than strand a run.
                tracing::error!(app = %app_name, error = %e, "cannot read the unfinished workflow runs; no revision is unloaded or pruned");
                state.revisions.keys().map(|id| (id.clone(), Vec::new())).collect()
            }
        };
        retention::deactivate(state, &pinned);
        let traffic = state.record.traffic.clone();
        if let Err(e) = self.prune(&mut apps, &app_name, Some(&id), &pinned) {
            tracing::error!(app = %app_name, error = %e, "cannot delete old revisions; they are kept");
        }
        self.publish(&apps).await;
        tracing::info!(app = %app_name, revision = %id, created, "deployed");
        Ok(DeployResult { app: app_name, revision: id, created, traffic })
    }

    /// The checks of a deploy before anything is loaded; the bundle's manifest, parsed.
    async fn check_deploy(
        &self,
        bundle: &Bundle,
        options: &DeployOptions,
        principal: &Principal,
    ) -> Result<LoadedManifest, ControlError> {
        let loaded = parse_manifest(&bundle.manifest)?;
        principal.check(Action::Deploy, Some(&loaded.manifest.app.name))?;
        if !self.admits(&loaded.manifest) {
            // Data residency: the bundle goes no further than this check on such a node.
            let (what, requires) =
                (format!("app `{}`", loaded.manifest.app.name), loaded.manifest.placement.describe());
            return Err(ControlError::Misdirected { what, requires });
        }
        check_artifacts(&loaded, bundle)?;
        {
            let apps = self.apps.lock().await;
            super::sharing::check(&apps, &loaded.manifest)?;
            let app = &loaded.manifest.app;
            let newest = apps.get(&app.name).and_then(|a| a.revisions.values().max_by_key(|r| r.record.seq));
            let tenant = newest.map_or("", |r| r.manifest.app.tenant());
            if app.tenant() != tenant {
                crate::ownership::may_change_tenant(principal, &app.name, tenant, app.tenant())?;
            }
        }
        if let Some(hosts) = &options.hosts {
            hosts.iter().try_for_each(|h| check_host(h))?;
        }
        if let Some(tag) = &options.tag {
            check_tag(tag)?;
        }
        if options.take_over {
            crate::ownership::may_take_over(principal)?;
        }
        Ok(loaded)
    }

    /// Deletes a revision that receives no traffic and has no tag.
    pub async fn delete_revision(&self, app: &str, id: &str) -> Result<(), ControlError> {
        retry_conflicts(|| self.delete_revision_once(app, id)).await
    }

    async fn delete_revision_once(&self, app: &str, id: &str) -> Result<(), ControlError> {
        let mut apps = self.apps.lock().await;
        let state = get(&apps, app)?;
        state.revision(id)?;
        let traffic = &state.record.traffic;
        if traffic.percent_of(id) > 0 || !traffic.tags_of(id).is_empty() {
            return Err(ControlError::conflict(
                format!(
                    "revision `{id}` of app `{app}` receives traffic ({}%, tags [{}]); it cannot be deleted",
                    traffic.percent_of(id),
                    traffic.tags_of(id).join(", ")
                ),
                format!("move its traffic and tags to another revision first: `nimbus traffic {app} OTHER=100`"),
            ));
        }
        if let Some(runs) = self.pinned(state).await?.get(id) {
            return Err(still_running(app, &format!("revision `{id}` of app `{app}`"), runs));
        }
        let unused = unused_blobs(&apps, &[(app, id)]);
        let seen = blocking(|| self.store.delete_revisions(&state.record, &[id.to_string()], false, &unused))?;
        let state = apps.get_mut(app).expect("checked above");
        state.record.seen = seen;
        if let Some(gone) = state.revisions.remove(id) {
            stop_in_background(gone.services);
        }
        self.remove_trees(&unused);
        self.publish(&apps).await;
        tracing::info!(app, revision = id, "revision deleted");
        Ok(())
    }

    /// Deletes an app with all its revisions; its routes stop being served at once.
    pub async fn delete_app(&self, app: &str) -> Result<(), ControlError> {
        retry_conflicts(|| self.delete_app_once(app)).await
    }

    async fn delete_app_once(&self, app: &str) -> Result<(), ControlError> {
        let mut apps = self.apps.lock().await;
        let state = get(&apps, app)?;
        let runs: Vec<String> = self.pinned(state).await?.into_values().flatten().collect();
        if !runs.is_empty() {
            return Err(still_running(app, &format!("app `{app}`"), &runs));
        }
        let ids: Vec<String> = state.revisions.keys().cloned().collect();
        let pairs: Vec<(&str, &str)> = ids.iter().map(|id| (app, id.as_str())).collect();
        let unused = unused_blobs(&apps, &pairs);
        blocking(|| self.store.delete_revisions(&state.record, &ids, true, &unused))?;
        if let Some(gone) = apps.remove(app) {
            stop_in_background(gone.revisions.into_values().flat_map(|r| r.services).collect());
        }
        self.remove_trees(&unused);
        self.publish(&apps).await;
        tracing::info!(app, "app deleted");
        Ok(())
    }
}

/// The refusal to delete what unfinished workflow runs still replay on.
fn still_running(app: &str, what: &str, runs: &[String]) -> ControlError {
    let shown: Vec<&str> = runs.iter().take(10).map(String::as_str).collect();
    let more = if runs.len() > shown.len() { format!(" and {} more", runs.len() - shown.len()) } else { String::new() };
    ControlError::conflict(
        format!(
            "{what} has {} unfinished workflow run(s) pinned to it ({}{more}); it cannot be deleted while they run",
            runs.len(),
            shown.join(", ")
        ),
        format!(
            "wait until they finish, or cancel them: `nimbus workflows cancel NAME RUN` (see `nimbus workflows runs NAME --gateway ...` of app `{app}`)"
        ),
    )
}

/// The stored record of a new revision `id` of `app` from its bundle.
fn revision_record(bundle: &Bundle, id: &str, app: &str, now: u64, seq: u64) -> RevisionRecord {
    RevisionRecord {
        id: id.to_string(),
        app: app.to_string(),
        created_at: now,
        seq,
        manifest: bundle.manifest.clone(),
        artifacts: bundle
            .artifacts
            .iter()
            .chain(&bundle.trees)
            .map(|(c, bytes)| ArtifactInfo { component: c.clone(), digest: digest(bytes), size: bytes.len() as u64 })
            .collect(),
        artifact_tags: Vec::new(),
        supply: None,
        source: None,
    }
}

/// The records of the apps whose hosts a deploy of `to` takes over, with the hosts they keep.
fn taken_over(
    apps: &BTreeMap<String, AppState>,
    moved: Vec<(String, Vec<String>)>,
    to: &str,
    now: u64,
) -> Vec<AppRecord> {
    moved
        .into_iter()
        .map(|(name, hosts)| {
            let mut other = apps[&name].record.clone();
            tracing::warn!(app = %name, to = %to, from = ?other.hosts, keeps = ?hosts, "hosts taken over");
            other.hosts = hosts;
            other.updated_at = now;
            other
        })
        .collect()
}

/// Digests used only by the revisions being deleted.
pub(super) fn unused_blobs(apps: &BTreeMap<String, AppState>, deleted: &[(&str, &str)]) -> Vec<String> {
    let mut kept = BTreeSet::new();
    let mut candidates = BTreeSet::new();
    for (name, app) in apps {
        for (id, rev) in &app.revisions {
            let target = if deleted.contains(&(name.as_str(), id.as_str())) { &mut candidates } else { &mut kept };
            target.extend(rev.record.artifacts.iter().map(|a| a.digest.clone()));
        }
    }
    candidates.difference(&kept).cloned().collect()
}

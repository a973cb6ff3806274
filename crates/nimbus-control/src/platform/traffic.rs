//! Where requests and event triggers go: the routing table published to the ingress, each
//! app's event triggers pointed at its primary revision, and changes of an app's traffic
//! (split, tags, rollback), checked before they are stored.
use std::collections::{BTreeMap, BTreeSet};

use nimbus_gateway::{AppTable, LiveApp};

use super::{AppState, Loaded, Platform, blocking, get, now, retention, retry_conflicts};
use crate::error::ControlError;
use crate::model::Traffic;
use crate::ownership::Claim;
use crate::store::AppRecord;

impl Platform {
    /// Publishes the routing table, then points each app's event triggers at its primary
    /// revision.
    pub(super) async fn publish(&self, apps: &BTreeMap<String, AppState>) {
        self.publish_routes(apps);
        self.retarget_triggers(apps).await;
        self.tell_alerting(apps);
    }

    /// Tells the node's alerting which revision serves each app (its objectives, limits, and what
    /// a deploy changed).
    fn tell_alerting(&self, apps: &BTreeMap<String, AppState>) {
        let Some(insight) = self.host.env().observer.insight() else { return };
        for (name, app) in apps {
            let best = app.record.traffic.targets.iter().filter(|t| t.percent > 0).max_by_key(|t| t.percent);
            let Some(rev) = best.and_then(|t| app.revisions.get(&t.revision)) else {
                insight.forget(name);
                continue;
            };
            let digests = rev.record.artifacts.iter().map(|a| (a.component.clone(), a.digest.clone())).collect();
            insight.deployed(nimbus_host::deployed(&rev.manifest, &rev.record.id, &digests));
        }
    }

    async fn retarget_triggers(&self, apps: &BTreeMap<String, AppState>) {
        let mut running = self.triggers.lock().await;
        let primaries: BTreeMap<&str, &Loaded> = apps
            .iter()
            .filter_map(|(name, app)| {
                let best = app.record.traffic.targets.iter().filter(|t| t.percent > 0).max_by_key(|t| t.percent)?;
                Some((name.as_str(), app.revisions.get(&best.revision)?))
            })
            .collect();
        let stale: Vec<String> = running
            .iter()
            .filter(|(app, (rev, _))| primaries.get(app.as_str()).is_none_or(|p| p.record.id != *rev))
            .map(|(app, _)| app.clone())
            .collect();
        for app in stale {
            if let Some((_, triggers)) = running.remove(&app) {
                triggers.stop().await;
            }
        }
        for (app, rev) in primaries {
            if running.contains_key(app) {
                continue;
            }
            let Some(live) = &rev.live else { continue };
            match self.host.start_triggers(&rev.manifest, &live.gateway).await {
                Ok(t) => {
                    if !t.info.is_empty() {
                        tracing::info!(app, revision = %rev.record.id, triggers = t.info.len(), "event triggers deliver to this revision");
                    }
                    running.insert(app.to_string(), (rev.record.id.clone(), t));
                }
                Err(e) => {
                    tracing::error!(app, revision = %rev.record.id, error = %e, "cannot start the event triggers")
                }
            }
        }
    }

    fn publish_routes(&self, apps: &BTreeMap<String, AppState>) {
        self.residency.pin_all(apps.values().map(|app| (app.record.name.as_str(), app.placements())));
        let live = apps.values().map(|app| {
            let traffic = &app.record.traffic;
            let live_of = |id: &str| app.revisions.get(id).and_then(|r| r.live.clone());
            let Claim { name, hosts, routes } = app.claim();
            let elsewhere = app.main().filter(|r| !self.admits(&r.manifest)).map(|r| r.manifest.placement.describe());
            LiveApp {
                elsewhere,
                name,
                hosts,
                routes,
                split: traffic
                    .targets
                    .iter()
                    .filter(|t| t.percent > 0)
                    .filter_map(|t| Some((live_of(&t.revision)?, t.percent)))
                    .collect(),
                tags: traffic.tags.iter().filter_map(|(tag, id)| Some((tag.clone(), live_of(id)?))).collect(),
            }
        });
        self.ingress.publish(AppTable::new(live));
    }

    /// Replaces an app's traffic split and tags.
    pub async fn set_traffic(&self, app: &str, traffic: Traffic) -> Result<Traffic, ControlError> {
        retry_conflicts(|| async {
            let mut apps = self.apps.lock().await;
            let state = get(&apps, app)?;
            let traffic = check_traffic(state, traffic.clone())?;
            let mut record = state.record.clone();
            record.change_traffic(traffic, now());
            self.commit_app(&mut apps, record).await
        })
        .await
    }

    /// Restores the traffic in effect before the last change, or sends it all to `to`.
    pub async fn rollback(&self, app: &str, to: Option<&str>) -> Result<Traffic, ControlError> {
        retry_conflicts(|| self.rollback_once(app, to)).await
    }

    async fn rollback_once(&self, app: &str, to: Option<&str>) -> Result<Traffic, ControlError> {
        let mut apps = self.apps.lock().await;
        let state = get(&apps, app)?;
        let mut record = state.record.clone();
        match to {
            Some(id) => {
                state.revision(id)?;
                record.change_traffic(Traffic::all_to(id, record.traffic.tags.clone()), now());
            }
            None => {
                // Undo: pop earlier settings until one whose revisions all still exist.
                let previous = std::iter::from_fn(|| record.history.pop())
                    .find(|t| t.targets.iter().all(|x| state.revisions.contains_key(&x.revision)))
                    .ok_or_else(|| {
                        ControlError::conflict(
                            format!("app `{app}` has no earlier traffic setting to roll back to"),
                            format!("name a revision: `nimbus rollback {app} --to REVISION`"),
                        )
                    })?;
                let tags = previous.tags.into_iter().filter(|(_, id)| state.revisions.contains_key(id)).collect();
                record.traffic = Traffic { targets: previous.targets, tags };
                record.updated_at = now();
            }
        }
        self.commit_app(&mut apps, record).await
    }

    /// Stores an app's new traffic, loading the revisions it sends requests to first and
    /// unloading the ones it no longer does after.
    async fn commit_app(
        &self,
        apps: &mut BTreeMap<String, AppState>,
        mut record: AppRecord,
    ) -> Result<Traffic, ControlError> {
        let state = apps.get_mut(&record.name).expect("checked by the caller");
        let pinned = self.pinned(state).await?;
        self.activate(state, &record.traffic).await?;
        record.seen = blocking(|| self.store.put_app(&record))?;
        state.record = record;
        retention::deactivate(state, &pinned);
        let traffic = state.record.traffic.clone();
        tracing::info!(app = %state.record.name, ?traffic, "traffic changed");
        self.publish(apps).await;
        Ok(traffic)
    }
}

fn check_traffic(state: &AppState, traffic: Traffic) -> Result<Traffic, ControlError> {
    let app = &state.record.name;
    let bad = |m: String| {
        ControlError::bad_request(
            m,
            format!("e.g. `nimbus traffic {app} REV_A=90 REV_B=10`; see `nimbus revisions list {app}`"),
        )
    };
    if traffic.targets.is_empty() {
        return Err(bad("traffic needs at least one revision".into()));
    }
    let mut seen = BTreeSet::new();
    let mut sum = 0u32;
    for t in &traffic.targets {
        state.revision(&t.revision)?;
        if !seen.insert(&t.revision) {
            return Err(bad(format!("revision `{}` is listed twice", t.revision)));
        }
        if t.percent > 100 {
            return Err(bad(format!("revision `{}` gets {}%, more than 100", t.revision, t.percent)));
        }
        sum += u32::from(t.percent);
    }
    if sum != 100 {
        return Err(bad(format!("percentages add up to {sum}, not 100")));
    }
    for (tag, id) in &traffic.tags {
        super::checks::check_tag(tag)?;
        state.revision(id)?;
    }
    let targets = traffic.targets.into_iter().filter(|t| t.percent > 0).collect();
    Ok(Traffic { targets, tags: traffic.tags })
}

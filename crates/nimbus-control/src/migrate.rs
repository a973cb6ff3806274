//! Moving state written before buckets were scoped per app to the apps that own it, on the
//! first start of `nimbus server` after the upgrade ([`nimbus_state::migrate`] records that it
//! ran). A bucket goes to every app whose current revisions (those with traffic or a tag) grant
//! it (`grants.kv`) or watch it (`[[trigger.kv]]`); a key `TYPE/KEY` of the old shared `actors`
//! bucket goes to the apps serving actor type `TYPE`. A bucket two apps used is copied to each
//! (from then on the copies are separate); keys no app owns stay in the old bucket.
use std::collections::{BTreeMap, BTreeSet};

use nimbus_manifest::Manifest;
use nimbus_state::{KvError, KvStore, Moved};

use crate::store::{Store, StoreError};

/// Why the move failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The control store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state store failed.
    #[error(transparent)]
    Kv(#[from] KvError),
}

/// Moves the old layout's buckets in `kv` to the apps of `store` (once; nothing on later starts).
pub async fn migrate_state(store: &Store, kv: &dyn KvStore) -> Result<Vec<Moved>, MigrateError> {
    if nimbus_state::layout(kv).await? >= nimbus_state::LAYOUT {
        return Ok(Vec::new());
    }
    let revisions = store.revisions()?;
    let mut manifests: Vec<Manifest> = Vec::new();
    for app in store.apps()? {
        let current: BTreeSet<&String> =
            app.traffic.targets.iter().map(|t| &t.revision).chain(app.traffic.tags.values()).collect();
        for r in revisions.iter().filter(|r| r.app == app.name && current.contains(&r.id)) {
            match nimbus_manifest::LoadedManifest::parse(r.manifest.clone(), nimbus_manifest::MANIFEST_FILE.into()) {
                Ok(l) => manifests.push(l.manifest),
                Err(e) => {
                    tracing::warn!(app = %app.name, revision = %r.id, error = %e, "a stored manifest does not parse; its app gets no old state")
                }
            }
        }
    }
    let owners = Owners::new(&manifests);
    Ok(nimbus_state::migrate(kv, &|bucket: &str, key: &str| owners.of(bucket, key)).await?)
}

/// Who owned which name in the old layout.
struct Owners {
    buckets: BTreeMap<String, BTreeSet<String>>,
    actor_types: BTreeMap<String, BTreeSet<String>>,
}

impl Owners {
    fn new(manifests: &[Manifest]) -> Self {
        let mut buckets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut actor_types: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for m in manifests {
            let app = &m.app.name;
            let granted = m.component.values().flat_map(|c| c.grants.kv.iter());
            for bucket in granted.chain(m.trigger.kv.iter().map(|t| &t.bucket)) {
                buckets.entry(bucket.clone()).or_default().insert(app.clone());
            }
            for t in &m.trigger.actor {
                actor_types.entry(t.actor_type.clone()).or_default().insert(app.clone());
            }
        }
        Self { buckets, actor_types }
    }

    fn of(&self, bucket: &str, key: &str) -> Vec<String> {
        let apps = if bucket == nimbus_actors::ACTORS_BUCKET {
            key.split_once('/').and_then(|(ty, _)| self.actor_types.get(ty))
        } else {
            self.buckets.get(bucket)
        };
        apps.map(|a| a.iter().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::Owners;

    fn manifest(text: &str) -> nimbus_manifest::Manifest {
        nimbus_manifest::LoadedManifest::parse(text.to_string(), "nimbus.toml".into()).unwrap().manifest
    }

    #[test]
    fn owners_follow_grants_kv_triggers_and_actor_types() {
        let shop = manifest(
            "[app]\nname = \"shop\"\n[component.a]\nsource = \"a.wasm\"\ngrants = { kv = [\"carts\"] }\n\
             [[trigger.actor]]\ntype = \"counter\"\ncomponent = \"a\"\n",
        );
        let billing = manifest(
            "[app]\nname = \"billing\"\n[component.b]\nsource = \"b.wasm\"\ngrants = { kv = [\"carts\"] }\n\
             [[trigger.kv]]\nbucket = \"invoices\"\ncomponent = \"b\"\n",
        );
        let owners = Owners::new(&[shop, billing]);
        assert_eq!(owners.of("carts", "u1"), ["billing", "shop"], "a bucket two apps used goes to both");
        assert_eq!(owners.of("invoices", "k"), ["billing"]);
        assert_eq!(owners.of("actors", "counter/a"), ["shop"]);
        assert!(owners.of("actors", "cart/a").is_empty(), "no app serves the type");
        assert!(owners.of("sessions", "k").is_empty());
    }
}

//! Moving buckets written before names were scoped per app (layout 1: a bucket per name, shared
//! by every app) to the apps that own them (layout 2). The layout is recorded in the store
//! itself, so the move runs once; a move cut short (a crash) resumes on the next start, since
//! each key is written to its new buckets before it leaves the old one.
use std::collections::BTreeMap;

use crate::{Bucket, KvError, KvStore};

/// The layout this version writes: every bucket stored under a name that carries its app.
pub const LAYOUT: u64 = 2;
/// Where the layout is recorded: a storage name no bucket of either layout can have (it is not
/// lower-case, and has no app mark).
const META: &str = "NIMBUS_META";
const LAYOUT_KEY: &str = "layout";

/// What [`migrate`] did with one old bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The old bucket.
    pub bucket: String,
    /// Keys moved, by the app they went to (a key shared by several apps is copied to each).
    pub keys: BTreeMap<String, usize>,
    /// Keys no app owns: left in the old bucket.
    pub left: usize,
}

/// The layout recorded in `kv` (1 for a store written before it was recorded).
pub async fn layout(kv: &dyn KvStore) -> Result<u64, KvError> {
    Ok(match kv.get(&Bucket::unscoped(META), LAYOUT_KEY).await? {
        Some(e) => crate::kv::parse_int(LAYOUT_KEY, &e.value)? as u64,
        None => 1,
    })
}

/// Moves every bucket of the old layout to its owners, unless the store has the current layout
/// already; then records it. `owners(bucket, key)` names the apps that get the key (none: it
/// stays where it is). Returns what was moved (nothing on later starts).
pub async fn migrate(
    kv: &dyn KvStore,
    owners: &(dyn Fn(&str, &str) -> Vec<String> + Send + Sync),
) -> Result<Vec<Moved>, KvError> {
    if layout(kv).await? >= LAYOUT {
        return Ok(Vec::new());
    }
    let mut report = Vec::new();
    for name in kv.bucket_names().await? {
        if nimbus_manifest::check_bucket_name(&name).is_err() {
            continue; // a bucket of the new layout, or the layout record
        }
        let old = Bucket::unscoped(&name);
        let mut moved = Moved { bucket: name.clone(), keys: BTreeMap::new(), left: 0 };
        let mut cursor: Option<String> = None;
        loop {
            let page = kv.list(&old, "", cursor.as_deref(), 1000).await?;
            for key in &page.keys {
                let Some(entry) = kv.get(&old, key).await? else { continue };
                let apps = owners(&name, key);
                if apps.is_empty() {
                    moved.left += 1;
                    continue;
                }
                for app in apps {
                    kv.set(&Bucket::new(&app, &name)?, key, entry.value.clone(), None).await?;
                    *moved.keys.entry(app).or_default() += 1;
                }
                kv.delete(&old, key).await?;
            }
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        tracing::info!(bucket = %name, moved = ?moved.keys, left = moved.left, "moved a bucket of the old layout to its apps");
        report.push(moved);
    }
    kv.set(&Bucket::unscoped(META), LAYOUT_KEY, LAYOUT.to_string().into(), None).await?;
    Ok(report)
}

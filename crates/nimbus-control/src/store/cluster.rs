//! The cluster's copy of the control store on NATS JetStream: the KV bucket `nimbus_control`
//! holds every record (each change a compare-and-set on the key's revision, or a create for
//! content-addressed revisions) and the object store `nimbus_artifacts` the artifacts by
//! digest. JetStream's own RAFT replicates both across the NATS servers (`replicas`); nothing
//! here is a consensus of its own. A pinned app's artifacts go to an object store of their own
//! placed with JetStream tags (`nimbus_artifacts_<tags>`, see [`nimbus_manifest::Residency`]),
//! so they are stored only on the NATS servers of the app's region.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use async_nats::jetstream::{self, object_store, stream::Placement, stream::StorageType};
use futures::TryStreamExt;
use tokio::io::AsyncReadExt;

use super::StoreError;
use super::keys::{Change, Guard};
use crate::bundle::digest;

/// The KV bucket of the control records.
pub const CONTROL_BUCKET: &str = "nimbus_control";
/// The object store of the artifacts.
pub const ARTIFACTS_BUCKET: &str = "nimbus_artifacts";

/// What the bucket holds for a key after a write.
pub(super) struct Written {
    /// The key's revision.
    pub(super) revision: u64,
    /// The value the bucket kept, when not the one written (the same content stored first by
    /// another node, with its own times).
    pub(super) kept: Option<Vec<u8>>,
}

impl Written {
    fn new(revision: u64) -> Self {
        Self { revision, kept: None }
    }
}

/// The control records and artifacts of a cluster, on NATS JetStream (a clone is another
/// handle to the same).
#[derive(Clone)]
pub struct ClusterStore {
    js: jetstream::Context,
    pub(super) kv: kv::Store,
    objects: object_store::ObjectStore,
    replicas: usize,
    /// The artifact stores of pinned apps, by placement tags.
    placed: Arc<Mutex<HashMap<Vec<String>, object_store::ObjectStore>>>,
    /// How long unused artifacts are kept (see `sweep`), seconds: an artifact a deploy finds
    /// older than half that is stored again, so that no sweep takes it while the deploy refers
    /// to it.
    grace_s: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStore").finish_non_exhaustive()
    }
}

pub(crate) fn failed(what: &'static str) -> impl FnOnce(async_nats::Error) -> StoreError {
    move |e| StoreError::Cluster { what, source: nimbus_observe::cause(e) }
}

/// The KV bucket `config` names, created with `config` if there is none yet (`creating`
/// says what, for the error).
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    config: kv::Config,
    creating: &'static str,
) -> Result<kv::Store, StoreError> {
    match js.get_key_value(config.bucket.as_str()).await {
        Ok(kv) => Ok(kv),
        Err(_) => js.create_key_value(config).await.map_err(|e| failed(creating)(e.into())),
    }
}

impl ClusterStore {
    /// Opens (or creates) the bucket and the object store on the NATS servers of `client`,
    /// each kept on `replicas` servers.
    pub async fn open(client: async_nats::Client, replicas: usize) -> Result<Self, StoreError> {
        let js = jetstream::new(client);
        let config = kv::Config {
            bucket: CONTROL_BUCKET.into(),
            description: "Nimbus control records: apps, revisions, tokens, secrets".into(),
            history: 1,
            storage: StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        let kv = open_bucket(&js, config, "creating the control bucket").await?;
        let objects = open_objects(&js, ARTIFACTS_BUCKET, replicas, None).await?;
        let grace_s = Arc::new(std::sync::atomic::AtomicU64::new(3600));
        Ok(Self { js, kv, objects, replicas, placed: Arc::default(), grace_s })
    }

    /// The artifact store placed with `tags` (the shared one for none), opened or created.
    async fn objects(&self, tags: &[String]) -> Result<object_store::ObjectStore, StoreError> {
        if tags.is_empty() {
            return Ok(self.objects.clone());
        }
        if let Some(o) = self.placed.lock().expect("artifact stores").get(tags) {
            return Ok(o.clone());
        }
        let placement = Placement { cluster: None, tags: tags.to_vec() };
        let objects = open_objects(&self.js, &placed_name(tags), self.replicas, Some(placement)).await?;
        self.placed.lock().expect("artifact stores").insert(tags.to_vec(), objects.clone());
        Ok(objects)
    }

    /// Writes one change given the revision of its key this node last saw; what the bucket
    /// holds after it (`None`: a delete of a record never seen, nothing to write).
    pub(super) async fn write(&self, change: &Change, seen: Option<u64>) -> Result<Option<Written>, StoreError> {
        let key = change.key.cluster();
        let conflict = || StoreError::Conflict { key: key.clone() };
        match (&change.value, change.guard, seen) {
            (Some(value), Guard::Identical, _) => match self.kv.create(&key, value.clone().into()).await {
                Ok(revision) => Ok(Some(Written::new(revision))),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                    // Another node stored the same content first: keep its record (its time).
                    let entry = self.kv.entry(&key).await.map_err(|e| failed("reading a record")(e.into()))?;
                    Ok(entry.map(|e| Written { revision: e.revision, kept: Some(e.value.to_vec()) }))
                }
                Err(e) => Err(failed("writing a record")(e.into())),
            },
            (Some(value), Guard::Current | Guard::Expect(_), None) => {
                match self.kv.create(&key, value.clone().into()).await {
                    Ok(revision) => Ok(Some(Written::new(revision))),
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists || lost_race(&e) => Err(conflict()),
                    Err(e) => Err(failed("writing a record")(e.into())),
                }
            }
            (Some(value), Guard::Current | Guard::Expect(_), Some(seen)) => {
                match self.kv.update(&key, value.clone().into(), seen).await {
                    Ok(revision) => Ok(Some(Written::new(revision))),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision || lost_race(&e) => Err(conflict()),
                    Err(e) => Err(failed("writing a record")(e.into())),
                }
            }
            (None, _, None) => Ok(None),
            (None, _, Some(seen)) => {
                // A delete marker published by hand, to learn its revision (the client's
                // delete does not say it) and to expect the revision this node saw.
                let mut headers = HeaderMap::new();
                headers.insert("KV-Operation", "DEL");
                headers.insert("Nats-Expected-Last-Subject-Sequence", seen.to_string().as_str());
                let ack = self
                    .js
                    .publish_with_headers(format!("$KV.{CONTROL_BUCKET}.{key}"), headers, Default::default())
                    .await
                    .map_err(|e| failed("deleting a record")(e.into()))?
                    .await;
                match ack {
                    Ok(ack) => Ok(Some(Written::new(ack.sequence))),
                    Err(e) if e.kind() == PublishErrorKind::WrongLastSequence || lost_race(&e) => Err(conflict()),
                    Err(e) => Err(failed("deleting a record")(e.into())),
                }
            }
        }
    }

    /// Stores an artifact under its digest in the artifact store placed with `tags`, unless it
    /// is there already.
    pub(super) async fn put_blob(&self, digest: &str, bytes: &[u8], tags: &[String]) -> Result<(), StoreError> {
        let name = object_name(digest);
        let objects = self.objects(tags).await?;
        // A swept artifact's record stays, marked deleted: store it again; and one stored long
        // ago too, so that its age tells the sweep it is in use.
        let fresh = self.grace_s.load(std::sync::atomic::Ordering::Relaxed) / 2;
        if objects.info(&name).await.is_ok_and(|info| !info.deleted && age_s(&info) < fresh) {
            return Ok(());
        }
        let mut reader = bytes;
        objects.put(name.as_str(), &mut reader).await.map_err(|e| failed("storing an artifact")(e.into()))?;
        Ok(())
    }

    /// An artifact by digest from the artifact store placed with `tags`, checked against it;
    /// `None` if the cluster does not have it.
    pub(super) async fn blob(&self, wanted: &str, tags: &[String]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut object = match self.objects(tags).await?.get(object_name(wanted)).await {
            Ok(o) => o,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(failed("reading an artifact")(e.into())),
        };
        let mut bytes = Vec::new();
        tokio::time::timeout(Duration::from_secs(300), object.read_to_end(&mut bytes))
            .await
            .map_err(|e| failed("reading an artifact")(e.into()))?
            .map_err(|e| failed("reading an artifact")(e.into()))?;
        if digest(&bytes) != wanted {
            return Err(StoreError::Missing { digest: wanted.to_string() });
        }
        Ok(Some(bytes))
    }
}

impl ClusterStore {
    /// Every artifact store: the shared one and those of pinned apps.
    async fn artifact_stores(&self) -> Result<Vec<object_store::ObjectStore>, StoreError> {
        let names: Vec<String> =
            self.js.stream_names().try_collect().await.map_err(|e| failed("listing the artifact stores")(e.into()))?;
        let mut stores = Vec::new();
        for bucket in names.iter().filter_map(|n| n.strip_prefix("OBJ_")).filter(|b| b.starts_with(ARTIFACTS_BUCKET)) {
            match self.js.get_object_store(bucket).await {
                Ok(store) => stores.push(store),
                Err(e) => return Err(failed("opening an artifact store")(e.into())),
            }
        }
        Ok(stores)
    }

    /// How long unused artifacts are kept: a deploy stores again the artifacts older than half
    /// that it finds.
    pub(super) fn set_grace(&self, grace: Duration) {
        self.grace_s.store(grace.as_secs(), std::sync::atomic::Ordering::Relaxed);
    }

    /// The artifacts stored at least `age` ago, by digest, with the artifact stores holding them.
    pub(super) async fn artifacts(
        &self,
        age: Duration,
    ) -> Result<HashMap<String, Vec<object_store::ObjectStore>>, StoreError> {
        let mut digests: HashMap<String, Vec<object_store::ObjectStore>> = HashMap::new();
        for store in self.artifact_stores().await? {
            let mut list = store.list().await.map_err(|e| failed("listing artifacts")(e.into()))?;
            while let Some(info) = list.try_next().await.map_err(|e| failed("listing artifacts")(e.into()))? {
                if !info.deleted && age_s(&info) >= age.as_secs() {
                    digests.entry(format!("sha256:{}", info.name)).or_default().push(store.clone());
                }
            }
        }
        Ok(digests)
    }

    /// Deletes an artifact from `stores` (those [`ClusterStore::artifacts`] found it in).
    pub(super) async fn delete_artifact(
        &self,
        digest: &str,
        stores: &[object_store::ObjectStore],
    ) -> Result<(), StoreError> {
        let name = object_name(digest);
        for store in stores {
            match store.delete(&name).await {
                Ok(()) => {}
                Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => {}
                Err(e) => return Err(failed("deleting an artifact")(e.into())),
            }
        }
        Ok(())
    }
}

/// Whether a write failed because the key's last revision was not the one expected. Servers
/// since 2.11 answer an expected-last-subject-sequence mismatch with error code 10164, which
/// the client does not classify as such (only the older 10071).
fn lost_race(e: &(dyn std::error::Error + 'static)) -> bool {
    const WRONG_LAST_SEQUENCE: [u64; 2] = [10071, 10164];
    std::iter::successors(Some(e), |e| e.source())
        .any(|e| e.downcast_ref::<jetstream::Error>().is_some_and(|e| WRONG_LAST_SEQUENCE.contains(&e.error_code().0)))
}

/// How long ago an artifact was stored, seconds (an unknown time is long ago).
fn age_s(info: &object_store::ObjectInfo) -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let stored_at = info.modified.map_or(0, |m| u64::try_from(m.unix_timestamp()).unwrap_or(0));
    now.saturating_sub(stored_at)
}

/// The object store `name`, created (on `replicas` servers, with `placement`) if there is none.
async fn open_objects(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
    placement: Option<Placement>,
) -> Result<object_store::ObjectStore, StoreError> {
    if let Ok(o) = js.get_object_store(name).await {
        return Ok(o);
    }
    js.create_object_store(object_store::Config {
        bucket: name.into(),
        description: Some("Nimbus artifacts by digest".into()),
        storage: StorageType::File,
        num_replicas: replicas,
        placement,
        ..Default::default()
    })
    .await
    .map_err(|e| failed("creating the artifact store")(e.into()))
}

/// `nimbus_artifacts_region-eu-west_1a2b3c4d` for the tags `region:eu-west`: readable, and
/// unique by a hash of the tags.
fn placed_name(tags: &[String]) -> String {
    let joined = tags.join(",");
    let readable: String =
        joined.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    let hash = digest(joined.as_bytes());
    format!("{ARTIFACTS_BUCKET}_{readable}_{}", &hash.trim_start_matches("sha256:")[..8])
}

fn object_name(digest: &str) -> String {
    digest.trim_start_matches("sha256:").to_string()
}

/// Runs a cluster call from the store's synchronous API (the control plane calls it from the
/// runtime's worker threads, off the async tasks' path with `block_in_place`).
pub(super) fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

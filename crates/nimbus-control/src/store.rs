//! The embedded control store (redb): apps, revisions, content-addressed artifacts, token
//! hashes, sealed secrets (`secrets.rs`) and the policies an admin set, each change one ACID transaction made durable (fsync) before it returns, so whatever
//! the API acknowledged survives `kill -9` and nothing half-written is ever visible.
use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::model::{ArtifactInfo, TokenInfo, Traffic};

const APPS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("apps");
const REVISIONS: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("revisions");
const BLOBS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("blobs");
const TOKENS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("tokens");
/// One row, `policies`: the [`PolicyRecord`].
const POLICIES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("policies");

mod cluster;
mod keys;
mod replica;
mod secrets;
mod sweep;
pub use cluster::ClusterStore;
pub(crate) use cluster::{failed, open_bucket};
pub use keys::Key;
use keys::{Change, Guard};
pub use secrets::SecretRecord;
pub use sweep::sweep_artifacts;

/// How many earlier traffic settings an app keeps for rollback.
pub const HISTORY: usize = 50;

/// The store failed; the change it was making did not happen. What caused it is the
/// `source()`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's file cannot be opened.
    #[error("cannot open the control store {}; check the data dir's permissions and free space, and that no other nimbus server uses it", path.display())]
    Open {
        /// The store's file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: redb::DatabaseError,
    },
    /// Reading or writing failed (disk full, I/O error).
    #[error("the control store failed")]
    Io(#[source] redb::Error),
    /// A stored record does not decode.
    #[error("a record of the control store is corrupt; restore the data dir from a backup")]
    Corrupt(#[source] serde_json::Error),
    /// The cluster's store (NATS JetStream) failed or cannot be reached; nothing was changed
    /// unless the cause says the write may have happened.
    #[error(
        "the cluster's control store failed while {what}; check that the NATS servers are up and reachable, then retry"
    )]
    Cluster {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: nimbus_observe::Cause,
    },
    /// Another node changed the record since this node last saw it; nothing was written.
    #[error("`{key}` was changed through another node at the same time; nothing was changed")]
    Conflict {
        /// The record's key in the cluster.
        key: String,
    },
    /// Another running node holds this node name.
    #[error(
        "node name `{name}` is held by another running node of the cluster; give this node another --node-name, or stop the other one and wait for its timeout"
    )]
    NameTaken {
        /// The name.
        name: String,
    },
    /// A revision's artifact is not in the store.
    #[error("artifact {digest} of a stored revision is missing; restore the data dir from a backup")]
    Missing {
        /// The artifact's digest.
        digest: String,
    },
}

fn err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Io(e.into())
}

/// An app as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppRecord {
    /// Name.
    pub name: String,
    /// Bound hosts.
    pub hosts: Vec<String>,
    /// Current traffic.
    pub traffic: Traffic,
    /// Earlier traffic settings, oldest first, for rollback.
    pub history: Vec<Traffic>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds.
    pub updated_at: u64,
    /// In a cluster, the revision of the record this one was read at or written as (`None`:
    /// one node, or a new app). A change made from it is a compare-and-set on it, so it never
    /// overwrites a change this node had not applied yet.
    #[serde(skip)]
    pub seen: Option<u64>,
}

impl AppRecord {
    /// Sets new traffic, remembering the current one for rollback.
    pub fn change_traffic(&mut self, traffic: Traffic, now: u64) {
        if traffic == self.traffic {
            return;
        }
        let previous = std::mem::replace(&mut self.traffic, traffic);
        if !previous.targets.is_empty() {
            self.history.push(previous);
            if self.history.len() > HISTORY {
                self.history.remove(0);
            }
        }
        self.updated_at = now;
    }
}

/// A revision as stored; the artifacts themselves live in the blob table by digest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevisionRecord {
    /// Content-derived id.
    pub id: String,
    /// App name.
    pub app: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Order of creation within the app (revisions stored before it existed have 0).
    #[serde(default)]
    pub seq: u64,
    /// The manifest text.
    pub manifest: String,
    /// Artifacts by component.
    pub artifacts: Vec<ArtifactInfo>,
    /// In a cluster, the JetStream placement tags of the artifact store holding the artifacts:
    /// a pinned app's are kept on NATS servers of its region (empty: the shared store).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifact_tags: Vec<String>,
    /// What the supply-chain check found at deploy (absent: not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supply: Option<crate::SupplyReport>,
    /// The registry artifact it was deployed from, digest-pinned (absent: a bundle upload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A token as stored: its description and the SHA-256 of its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Description.
    pub info: TokenInfo,
    /// Hex SHA-256 of the secret part.
    pub secret_sha256: String,
}

/// The Cedar policies an admin set, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// The policies' text.
    pub text: String,
    /// Unix seconds.
    pub updated_at: u64,
    /// The token that set them.
    pub updated_by: String,
}

/// One deploy, written in a single transaction.
#[derive(Debug)]
pub struct DeployWrite<'a> {
    /// The app after the deploy.
    pub app: &'a AppRecord,
    /// The new revision, if the content was new.
    pub revision: Option<&'a RevisionRecord>,
    /// Artifacts by digest (already stored ones are skipped).
    pub blobs: Vec<(&'a str, &'a [u8])>,
    /// Other apps the deploy changed (hosts it took over).
    pub others: &'a [AppRecord],
}

/// The control store.
#[derive(Debug)]
pub struct Store {
    db: Database,
    /// In cluster mode, the records' copy every node shares; this store is then the node's
    /// replica of it.
    cluster: Option<ClusterStore>,
    /// Bumped whenever the policies record changes, through this node or (replicated) another.
    policies_changed: std::sync::atomic::AtomicU64,
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|source| StoreError::Open { path: path.to_path_buf(), source })?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(APPS).map_err(err)?;
        tx.open_table(REVISIONS).map_err(err)?;
        tx.open_table(BLOBS).map_err(err)?;
        tx.open_table(TOKENS).map_err(err)?;
        tx.open_table(POLICIES).map_err(err)?;
        tx.open_table(secrets::SECRETS).map_err(err)?;
        tx.open_table(secrets::SECRET_KEYS).map_err(err)?;
        tx.open_table(replica::SEEN).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Self { db, cluster: None, policies_changed: Default::default() })
    }

    /// Every app.
    pub fn apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(APPS).map_err(err)?;
        let apps: Vec<AppRecord> =
            table.iter().map_err(err)?.map(|row| decode(row.map_err(err)?.1.value())).collect::<Result<_, _>>()?;
        apps.into_iter().map(|app| self.with_seen(&tx, app)).collect()
    }

    /// An app.
    pub fn app(&self, name: &str) -> Result<Option<AppRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(APPS).map_err(err)?;
        let app: Option<AppRecord> = table.get(name).map_err(err)?.map(|v| decode(v.value())).transpose()?;
        app.map(|app| self.with_seen(&tx, app)).transpose()
    }

    /// `app` with the revision this node's replica has of it (read in the same transaction).
    fn with_seen(&self, tx: &redb::ReadTransaction, mut app: AppRecord) -> Result<AppRecord, StoreError> {
        if self.cluster.is_some() {
            app.seen = replica::seen_in(tx, &Key::App(app.name.clone()))?;
        }
        Ok(app)
    }

    /// The revisions of an app.
    pub fn revisions_of(&self, app: &str) -> Result<Vec<RevisionRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(REVISIONS).map_err(err)?;
        let mut out = Vec::new();
        for row in table.range((app, "")..).map_err(err)? {
            let (key, value) = row.map_err(err)?;
            if key.value().0 != app {
                break;
            }
            out.push(decode(value.value())?);
        }
        Ok(out)
    }

    /// Revision `id` of `app`.
    pub fn revision(&self, app: &str, id: &str) -> Result<Option<RevisionRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(REVISIONS).map_err(err)?;
        table.get((app, id)).map_err(err)?.map(|v| decode(v.value())).transpose()
    }

    /// Every revision of every app.
    pub fn revisions(&self) -> Result<Vec<RevisionRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(REVISIONS).map_err(err)?;
        table.iter().map_err(err)?.map(|row| decode(row.map_err(err)?.1.value())).collect()
    }

    /// An artifact by digest: from this node's copy, else (in a cluster) fetched from the
    /// cluster's artifact store with placement `tags` (a revision's `artifact_tags`), checked
    /// against its digest and kept here.
    pub fn blob(&self, digest: &str, tags: &[String]) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(BLOBS).map_err(err)?;
        if let Some(v) = table.get(digest).map_err(err)? {
            return Ok(Some(v.value().to_vec()));
        }
        let Some(cluster) = &self.cluster else { return Ok(None) };
        let Some(bytes) = cluster::block(cluster.blob(digest, tags))? else { return Ok(None) };
        self.cache_blobs(&[(digest, &bytes)])?;
        Ok(Some(bytes))
    }

    /// Removes this node's copies of the artifacts not in `keep`.
    fn forget_blobs_but(&self, keep: &std::collections::HashSet<String>) -> Result<(), StoreError> {
        let unused: Vec<String> = {
            let tx = self.db.begin_read().map_err(err)?;
            let table = tx.open_table(BLOBS).map_err(err)?;
            let mut unused = Vec::new();
            for row in table.iter().map_err(err)? {
                let digest = row.map_err(err)?.0.value().to_string();
                if !keep.contains(&digest) {
                    unused.push(digest);
                }
            }
            unused
        };
        if unused.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(err)?;
        remove_blobs(&tx, &unused)?;
        tx.commit().map_err(err)
    }

    /// Keeps artifacts on this node.
    fn cache_blobs(&self, blobs: &[(&str, &[u8])]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        insert_blobs(&tx, blobs)?;
        tx.commit().map_err(err)
    }

    /// Writes a deploy: artifacts, revision and app, all or nothing on one node. In a cluster
    /// the artifacts are stored first, then the revision (content-addressed), the apps whose
    /// hosts it took and the app, each a compare-and-set; the apps' new revisions by name.
    pub fn deploy(&self, write: &DeployWrite<'_>) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut changes = Vec::new();
        if let Some(rev) = write.revision {
            changes.push(Change {
                key: Key::Revision(rev.app.clone(), rev.id.clone()),
                value: Some(encode(rev)),
                guard: Guard::Identical,
            });
        }
        for app in write.others.iter().chain([write.app]) {
            changes.push(Change::app(app));
        }
        let revisions = match &self.cluster {
            Some(cluster) => {
                let tags = write.revision.map(|r| r.artifact_tags.as_slice()).unwrap_or_default();
                for (digest, bytes) in &write.blobs {
                    cluster::block(cluster.put_blob(digest, bytes, tags))?;
                }
                self.cache_blobs(&write.blobs)?;
                self.commit(changes)?
            }
            None => self.commit_local(changes, &write.blobs, &[]).map(|()| Vec::new())?,
        };
        Ok(revisions
            .into_iter()
            .filter_map(|(key, revision)| match (key, revision) {
                (Key::App(name), Some(revision)) => Some((name, revision)),
                _ => None,
            })
            .collect())
    }

    /// Replaces an app record (traffic changes); its new revision in a cluster.
    pub fn put_app(&self, app: &AppRecord) -> Result<Option<u64>, StoreError> {
        Ok(self.commit(vec![Change::app(app)])?.pop().and_then(|(_, r)| r))
    }

    /// Deletes revisions of an app and the artifacts no other revision uses, with the app's
    /// record `app` (or, with `delete_app`, the app itself and its secrets), all or nothing on
    /// one node; in a cluster the app record first (compare-and-set on the revision `app` was
    /// read at), and the artifacts stay in the cluster's store (another node may be deploying
    /// them again). The app record's new revision in a cluster.
    pub fn delete_revisions(
        &self,
        app: &AppRecord,
        ids: &[String],
        delete_app: bool,
        unused_blobs: &[String],
    ) -> Result<Option<u64>, StoreError> {
        let app_name = app.name.as_str();
        let mut first = Change::app(app);
        if delete_app {
            first.value = None;
        }
        let mut changes = vec![first];
        changes.extend(ids.iter().map(|id| Change::delete(Key::Revision(app_name.to_string(), id.clone()))));
        if delete_app {
            let secrets = self.secrets(app_name)?;
            changes
                .extend(secrets.into_iter().map(|(name, _)| Change::delete(Key::Secret(app_name.to_string(), name))));
        }
        if self.cluster.is_some() {
            let revision = self.commit(changes)?.into_iter().next().and_then(|(_, r)| r);
            let tx = self.db.begin_write().map_err(err)?;
            remove_blobs(&tx, unused_blobs)?;
            tx.commit().map_err(err)?;
            return Ok(revision);
        }
        self.commit_local(changes, &[], unused_blobs).map(|()| None)
    }

    /// Every token.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(TOKENS).map_err(err)?;
        table.iter().map_err(err)?.map(|row| decode(row.map_err(err)?.1.value())).collect()
    }

    /// A token by id.
    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(TOKENS).map_err(err)?;
        table.get(id).map_err(err)?.map(|v| decode(v.value())).transpose()
    }

    /// Stores a new token; in a cluster refused ([`StoreError::Conflict`]) if its id is taken.
    pub fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        // A new token: refused if the id exists, even one this node has not seen yet (two nodes
        // minting the first admin token at once).
        let mut change = Change::put(Key::Token(token.info.id.clone()), token);
        change.guard = Guard::Expect(None);
        self.commit(vec![change]).map(drop)
    }

    /// Records that token `id` was used at `now`, if it still exists (a revoked token is not
    /// brought back: in a cluster the write expects the record this node has).
    pub fn touch_token(&self, id: &str, now: u64) -> Result<(), StoreError> {
        let Some(mut record) = self.token(id)? else { return Ok(()) };
        record.info.last_used_at = Some(now);
        self.commit(vec![Change::put(Key::Token(id.to_string()), &record)]).map(drop)
    }

    /// Deletes a token; whether it existed.
    pub fn delete_token(&self, id: &str) -> Result<bool, StoreError> {
        if self.token(id)?.is_none() {
            return Ok(false);
        }
        self.commit(vec![Change::delete(Key::Token(id.to_string()))])?;
        Ok(true)
    }

    /// The policies an admin set, if any.
    pub fn policies(&self) -> Result<Option<PolicyRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(POLICIES).map_err(err)?;
        table.get("policies").map_err(err)?.map(|v| decode(v.value())).transpose()
    }

    /// Stores the policies; in a cluster refused ([`StoreError::Conflict`]) if another node set
    /// some since this node last saw them.
    pub fn set_policies(&self, record: &PolicyRecord) -> Result<(), StoreError> {
        self.commit(vec![Change::put(Key::Policies, record)]).map(drop)
    }

    /// A number that changes whenever the policies record does.
    pub fn policies_generation(&self) -> u64 {
        self.policies_changed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Notes that the records `keys` changed (the policies' readers then read them again).
    fn changed<'a>(&self, mut keys: impl Iterator<Item = &'a Key>) {
        if keys.any(|k| *k == Key::Policies) {
            self.policies_changed.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// Applies changes: on one node in one transaction; in a cluster each written to the
    /// cluster's bucket in order (expecting the revision its guard names), then to this node's
    /// copy. Each key with its new revision in the cluster's bucket (none on one node).
    pub(crate) fn commit(&self, changes: Vec<Change>) -> Result<Vec<(Key, Option<u64>)>, StoreError> {
        let Some(cluster) = &self.cluster else {
            let keys = changes.iter().map(|c| (c.key.clone(), None)).collect();
            return self.commit_local(changes, &[], &[]).map(|()| keys);
        };
        let mut written = Vec::with_capacity(changes.len());
        for change in changes {
            let expected = match change.guard {
                Guard::Expect(revision) => revision,
                Guard::Current | Guard::Identical => self.seen(&change.key)?,
            };
            let revision = cluster::block(cluster.write(&change, expected))?;
            written.push((change, revision));
        }
        let entries = written.iter().map(|(c, w)| {
            let value = w.as_ref().and_then(|w| w.kept.as_deref()).or(c.value.as_deref());
            (c.key.clone(), value, w.as_ref().map(|w| w.revision))
        });
        self.apply_replicated(entries)?;
        Ok(written.into_iter().map(|(c, w)| (c.key, w.map(|w| w.revision))).collect())
    }

    /// Applies changes, stores and removes artifacts in one transaction of this node's store.
    fn commit_local(&self, changes: Vec<Change>, blobs: &[(&str, &[u8])], unused: &[String]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        insert_blobs(&tx, blobs)?;
        remove_blobs(&tx, unused)?;
        for change in &changes {
            keys::apply(&tx, &change.key, change.value.as_deref())?;
        }
        tx.commit().map_err(err)?;
        self.changed(changes.iter().map(|c| &c.key));
        Ok(())
    }
}

/// Stores the artifacts `tx` does not have yet (each is content-addressed: one present is the same).
fn insert_blobs(tx: &redb::WriteTransaction, blobs: &[(&str, &[u8])]) -> Result<(), StoreError> {
    let mut table = tx.open_table(BLOBS).map_err(err)?;
    for (digest, bytes) in blobs {
        if table.get(*digest).map_err(err)?.is_none() {
            table.insert(*digest, *bytes).map_err(err)?;
        }
    }
    Ok(())
}

fn remove_blobs(tx: &redb::WriteTransaction, digests: &[String]) -> Result<(), StoreError> {
    let mut table = tx.open_table(BLOBS).map_err(err)?;
    for digest in digests {
        table.remove(digest.as_str()).map_err(err)?;
    }
    Ok(())
}

fn encode(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(StoreError::Corrupt)
}

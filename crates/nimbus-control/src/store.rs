//! The embedded control store (redb): apps, revisions, content-addressed artifacts, token
//! hashes and sealed secrets (`secrets.rs`), each change one ACID transaction made durable (fsync) before it returns, so whatever
//! the API acknowledged survives `kill -9` and nothing half-written is ever visible.
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::model::{ArtifactInfo, TokenInfo, Traffic};

const APPS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("apps");
const REVISIONS: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("revisions");
const BLOBS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("blobs");
const TOKENS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("tokens");

mod secrets;
pub use secrets::SecretRecord;

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
}

/// A token as stored: its description and the SHA-256 of its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Description.
    pub info: TokenInfo,
    /// Hex SHA-256 of the secret part.
    pub secret_sha256: String,
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
        tx.open_table(secrets::SECRETS).map_err(err)?;
        tx.open_table(secrets::SECRET_KEYS).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Self { db })
    }

    /// Every app.
    pub fn apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(APPS).map_err(err)?;
        table.iter().map_err(err)?.map(|row| decode(row.map_err(err)?.1.value())).collect()
    }

    /// Every revision of every app.
    pub fn revisions(&self) -> Result<Vec<RevisionRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(REVISIONS).map_err(err)?;
        table.iter().map_err(err)?.map(|row| decode(row.map_err(err)?.1.value())).collect()
    }

    /// An artifact by digest.
    pub fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(BLOBS).map_err(err)?;
        Ok(table.get(digest).map_err(err)?.map(|v| v.value().to_vec()))
    }

    /// Writes a deploy: artifacts, revision and app, all or nothing.
    pub fn deploy(&self, write: &DeployWrite<'_>) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut blobs = tx.open_table(BLOBS).map_err(err)?;
            for (digest, bytes) in &write.blobs {
                if blobs.get(*digest).map_err(err)?.is_none() {
                    blobs.insert(*digest, *bytes).map_err(err)?;
                }
            }
            if let Some(rev) = write.revision {
                tx.open_table(REVISIONS)
                    .map_err(err)?
                    .insert((rev.app.as_str(), rev.id.as_str()), &*encode(rev))
                    .map_err(err)?;
            }
            let mut apps = tx.open_table(APPS).map_err(err)?;
            for app in write.others.iter().chain([write.app]) {
                apps.insert(app.name.as_str(), &*encode(app)).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Replaces an app record (traffic changes).
    pub fn put_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        tx.open_table(APPS).map_err(err)?.insert(app.name.as_str(), &*encode(app)).map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Deletes revisions of an app and the artifacts no other revision uses, with the app's new
    /// record (or the app itself and its secrets when `app` is `None`), all or nothing.
    pub fn delete_revisions(
        &self,
        app_name: &str,
        ids: &[String],
        app: Option<&AppRecord>,
        unused_blobs: &[String],
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut revisions = tx.open_table(REVISIONS).map_err(err)?;
            for id in ids {
                revisions.remove((app_name, id.as_str())).map_err(err)?;
            }
            let mut blobs = tx.open_table(BLOBS).map_err(err)?;
            for digest in unused_blobs {
                blobs.remove(digest.as_str()).map_err(err)?;
            }
            let mut apps = tx.open_table(APPS).map_err(err)?;
            match app {
                Some(app) => apps.insert(app_name, &*encode(app)).map(drop).map_err(err)?,
                None => {
                    apps.remove(app_name).map(drop).map_err(err)?;
                    secrets::delete_all(&tx, app_name)?;
                }
            }
        }
        tx.commit().map_err(err)
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

    /// Stores a token.
    pub fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        tx.open_table(TOKENS).map_err(err)?.insert(token.info.id.as_str(), &*encode(token)).map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Records that token `id` was used at `now`, if it still exists (a revoked token is not
    /// brought back).
    pub fn touch_token(&self, id: &str, now: u64) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut table = tx.open_table(TOKENS).map_err(err)?;
            let current = table.get(id).map_err(err)?.map(|v| decode::<TokenRecord>(v.value())).transpose()?;
            if let Some(mut record) = current {
                record.info.last_used_at = Some(now);
                table.insert(id, &*encode(&record)).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Deletes a token; whether it existed.
    pub fn delete_token(&self, id: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        let existed = tx.open_table(TOKENS).map_err(err)?.remove(id).map_err(err)?.is_some();
        tx.commit().map_err(err)?;
        Ok(existed)
    }
}

fn encode(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(StoreError::Corrupt)
}

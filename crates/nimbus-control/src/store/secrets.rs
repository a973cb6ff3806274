//! Secrets in the control store: each app's sealed values and the wrapped data keys, never a
//! plaintext value (the [`crate::Vault`] seals and opens them).
use nimbus_security::secrets::{Sealed, WrappedKey};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::keys::{Change, Guard, Key};
use super::{Store, StoreError, decode, encode, err};

pub(super) const SECRETS: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("secrets");
pub(super) const SECRET_KEYS: TableDefinition<'_, u32, &[u8]> = TableDefinition::new("secret_keys");

/// A secret as stored: its sealed value and when it was set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretRecord {
    /// The value, sealed under a data key.
    pub sealed: Sealed,
    /// Unix seconds.
    pub updated_at: u64,
}

impl Store {
    /// The wrapped data keys.
    pub fn secret_keys(&self) -> Result<Vec<WrappedKey>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(SECRET_KEYS).map_err(err)?;
        table.iter().map_err(err)?.map(|row| decode(row.map_err(err)?.1.value())).collect()
    }

    /// Replaces every wrapped data key (after a rotation).
    pub fn put_secret_keys(&self, keys: &[WrappedKey]) -> Result<(), StoreError> {
        self.commit(vec![Change::put(Key::SecretKeys, &keys)]).map(drop)
    }

    /// Secret `name` of `app`.
    pub fn secret(&self, app: &str, name: &str) -> Result<Option<SecretRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(SECRETS).map_err(err)?;
        table.get((app, name)).map_err(err)?.map(|v| decode(v.value())).transpose()
    }

    /// The secrets of `app` by name.
    pub fn secrets(&self, app: &str) -> Result<Vec<(String, SecretRecord)>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(SECRETS).map_err(err)?;
        let rows = table.range((app, "")..).map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let (key, value) = row.map_err(err)?;
            let (owner, name) = key.value();
            if owner != app {
                break;
            }
            out.push((name.to_string(), decode(value.value())?));
        }
        Ok(out)
    }

    /// Stores a secret, with the keyring's wrapped keys when they changed (its first data key),
    /// all or nothing.
    pub fn put_secret(
        &self,
        app: &str,
        name: &str,
        record: &SecretRecord,
        keys: Option<&[WrappedKey]>,
    ) -> Result<(), StoreError> {
        // The first data key is only ever created, never written over: a node that did not see
        // another's first key yet must not replace it (the secrets sealed with it would no
        // longer open); it loses the race, reads that key and seals with it.
        let first = keys.map(|k| Change { guard: Guard::Expect(None), ..Change::put(Key::SecretKeys, &k) });
        let mut changes: Vec<Change> = first.into_iter().collect();
        changes.push(Change::put(Key::Secret(app.to_string(), name.to_string()), record));
        self.commit(changes).map(drop)
    }

    /// Deletes a secret; whether it existed.
    pub fn delete_secret(&self, app: &str, name: &str) -> Result<bool, StoreError> {
        if self.secret(app, name)?.is_none() {
            return Ok(false);
        }
        self.commit(vec![Change::delete(Key::Secret(app.to_string(), name.to_string()))])?;
        Ok(true)
    }
}

/// Replaces the wrapped data keys in transaction `tx`.
pub(super) fn write_keys(tx: &redb::WriteTransaction, keys: &[WrappedKey]) -> Result<(), StoreError> {
    let mut table = tx.open_table(SECRET_KEYS).map_err(err)?;
    table.retain(|_, _| false).map_err(err)?;
    for key in keys {
        table.insert(key.id, &*encode(key)).map_err(err)?;
    }
    Ok(())
}

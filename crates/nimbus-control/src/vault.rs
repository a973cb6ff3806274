//! The server's secrets: values sealed in the control store ([`nimbus_security::secrets`]),
//! opened with the master key given at start. Values are write-only through the API (listing
//! shows names and times), read by the app host and the runtime through [`SecretSource`], and
//! never logged. Without a master key the server runs, but refuses to store secrets (and
//! refuses to start if some are already stored); with the wrong one it refuses to start.
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use nimbus_manifest::SecretName;
use nimbus_security::secrets::{Keyring, MASTER_KEY_ENV, MasterKey, SecretSource, SecretValue, SecretsError};

use crate::error::ControlError;
use crate::model::{RotatedKeys, SecretInfo};
use crate::store::{SecretRecord, Store};

/// The largest secret value, in bytes.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Where the master key comes from: a private file (read again by a rotation, so a new key can
/// be put in place without a restart) or the environment.
#[derive(Debug, Clone)]
pub enum MasterKeySource {
    /// A file of 64 hex characters, mode 0600.
    File(PathBuf),
    /// [`MASTER_KEY_ENV`].
    Env,
}

impl MasterKeySource {
    fn load(&self) -> Result<MasterKey, SecretsError> {
        match self {
            Self::File(path) => MasterKey::from_file(path),
            Self::Env => {
                let text = zeroize::Zeroizing::new(std::env::var(MASTER_KEY_ENV).unwrap_or_default());
                MasterKey::from_hex(&text, MASTER_KEY_ENV)
            }
        }
    }
}

/// The secrets of every app on this server.
#[derive(Debug)]
pub struct Vault {
    store: Arc<Store>,
    master: Option<MasterKeySource>,
    keyring: RwLock<Keyring>,
}

impl Vault {
    /// Opens the stored data keys with the master key from `master`. Fails, so that nothing is
    /// served half-configured, when the key is wrong or missing while secrets are stored.
    pub fn open(store: Arc<Store>, master: Option<MasterKeySource>) -> Result<Self, ControlError> {
        let vault = Self { store, master, keyring: RwLock::default() };
        vault.reload()?;
        Ok(vault)
    }

    /// Sets secret `name` of `app`. In a cluster, when another node wrote the secret or created
    /// the first data key meanwhile, the keys it stored are read and the write is made again
    /// (like every other record's, a few times with backoff) before answering `409`. It blocks:
    /// call it off the async workers.
    pub fn set(&self, app: &str, name: &SecretName, value: SecretValue) -> Result<SecretInfo, ControlError> {
        let mut wait = std::time::Duration::from_millis(10);
        for _ in 0..crate::platform::CONFLICT_RETRIES {
            match self.set_once(app, name, &value) {
                Err(ControlError::Store(crate::StoreError::Conflict { key })) => {
                    tracing::debug!(%key, "another node wrote first; reading its keys and trying again");
                    if let Err(e) = self.reload() {
                        tracing::debug!(error = %e, "cannot read the data keys again yet");
                    }
                    let wait_now = wait + wait.mul_f64(fastrand::f64());
                    std::thread::sleep(wait_now);
                    wait *= 2;
                }
                other => return other,
            }
        }
        self.set_once(app, name, &value)
    }

    fn set_once(&self, app: &str, name: &SecretName, value: &SecretValue) -> Result<SecretInfo, ControlError> {
        let mut keyring = self.keyring.write().expect("keyring lock");
        // The first secret ever creates the first data key, stored in the same transaction; only
        // then is the master key needed (the keyring holds the data keys already opened).
        let first = if keyring.is_empty() { Some(keyring.rotated(&self.master()?)?) } else { None };
        let sealing = first.as_ref().map_or(&*keyring, |(k, _)| k);
        let sealed = sealing.seal(&context(app, name.as_str()), value)?.expect("a keyring with a data key");
        let record = SecretRecord { sealed, updated_at: crate::platform::now() };
        self.store.put_secret(app, name.as_str(), &record, first.as_ref().map(|(_, w)| w.as_slice()))?;
        if let Some((new, _)) = first {
            *keyring = new;
        }
        Ok(SecretInfo { name: name.to_string(), updated_at: record.updated_at })
    }

    /// The secrets of `app`, without values.
    pub fn list(&self, app: &str) -> Result<Vec<SecretInfo>, ControlError> {
        Ok(self
            .store
            .secrets(app)?
            .into_iter()
            .map(|(name, r)| SecretInfo { name, updated_at: r.updated_at })
            .collect())
    }

    /// Deletes secret `name` of `app`.
    pub fn remove(&self, app: &str, name: &str) -> Result<(), ControlError> {
        if self.store.delete_secret(app, name)? {
            Ok(())
        } else {
            Err(ControlError::NotFound(format!("app `{app}` has no secret `{name}`")))
        }
    }

    /// Reads the master key again (a new one may have been put in its file), adds a data key
    /// that seals from now on, and re-wraps every data key under the master key, in one
    /// transaction. Values stay as they are and readable; nothing stops serving.
    pub fn rotate(&self) -> Result<RotatedKeys, ControlError> {
        let master = self.master()?;
        let mut keyring = self.keyring.write().expect("keyring lock");
        let (new, wrapped) = keyring.rotated(&master)?;
        self.store.put_secret_keys(&wrapped)?;
        *keyring = new;
        Ok(RotatedKeys {
            data_key: wrapped.iter().map(|w| w.id).max().unwrap_or_default(),
            data_keys: wrapped.len(),
            master_key: master.fingerprint().to_string(),
        })
    }

    /// Opens the stored data keys again (another node of the cluster created or rotated
    /// them).
    pub fn reload(&self) -> Result<(), ControlError> {
        let wrapped = self.store.secret_keys()?;
        let keyring = match &self.master {
            Some(source) => Keyring::open(&source.load()?, &wrapped)?,
            None if wrapped.is_empty() => Keyring::default(),
            None => return Err(SecretsError::NoMasterKey.into()),
        };
        *self.keyring.write().expect("keyring lock") = keyring;
        Ok(())
    }

    fn master(&self) -> Result<MasterKey, SecretsError> {
        self.master.as_ref().ok_or(SecretsError::NoMasterKey)?.load()
    }
}

impl SecretSource for Vault {
    fn get(&self, app: &str, name: &str) -> Result<Option<SecretValue>, SecretsError> {
        let record = self.store.secret(app, name).map_err(|e| SecretsError::Unavailable(Box::new(e)))?;
        let Some(record) = record else { return Ok(None) };
        self.keyring.read().expect("keyring lock").unseal(&context(app, name), &record.sealed).map(Some)
    }

    fn how_to_set(&self, app: &str, name: &str) -> String {
        format!("set it with `nimbus secrets set --app {app} {name}` (the value from stdin), then deploy again")
    }
}

/// What a value is bound to: it opens only as this app's secret of this name.
fn context(app: &str, name: &str) -> String {
    format!("{app}/{name}")
}

//! Data keys and sealed values, and their stored (versioned) forms.
use std::collections::BTreeMap;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{MasterKey, SecretValue, SecretsError};

/// The format version of [`WrappedKey`] and [`Sealed`] records.
const VERSION: u32 = 1;

/// A data key as stored: sealed under the master key whose fingerprint it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// Format version (1).
    pub version: u32,
    /// The key's number; values name the key they were sealed under.
    pub id: u32,
    /// Fingerprint of the master key it is wrapped under.
    pub master: String,
    /// The nonce, hex.
    pub nonce: String,
    /// The sealed key and its tag, hex.
    pub sealed: String,
}

/// A secret value as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Format version (1).
    pub version: u32,
    /// The data key it is sealed under.
    pub key: u32,
    /// The nonce, hex.
    pub nonce: String,
    /// The sealed value and its tag, hex.
    pub sealed: String,
}

struct DataKey {
    raw: Zeroizing<[u8; 32]>,
    aead: LessSafeKey,
}

impl DataKey {
    fn new(raw: Zeroizing<[u8; 32]>) -> Self {
        let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, raw.as_slice()).expect("a 32-byte key"));
        Self { raw, aead }
    }
}

/// The data keys, opened with the master key. The newest seals new values; every one opens the
/// values sealed under it.
#[derive(Default)]
pub struct Keyring {
    keys: BTreeMap<u32, DataKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("keys", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

impl Keyring {
    /// Opens the stored data keys with `master`. Fails, before anything is served, on a master
    /// key other than the one they were wrapped under.
    pub fn open(master: &MasterKey, wrapped: &[WrappedKey]) -> Result<Self, SecretsError> {
        let mut keys = BTreeMap::new();
        for w in wrapped {
            if w.version != VERSION {
                return Err(SecretsError::Version { what: "a data key", version: w.version });
            }
            if w.master != master.fingerprint() {
                return Err(SecretsError::WrongMasterKey {
                    given: master.fingerprint().to_string(),
                    expected: w.master.clone(),
                });
            }
            let what = || SecretsError::Tampered { what: format!("data key {}", w.id) };
            let plain = Zeroizing::new(open(master.aead(), &key_context(w.id), &w.nonce, &w.sealed).ok_or_else(what)?);
            let raw: [u8; 32] = plain.as_slice().try_into().map_err(|_| what())?;
            keys.insert(w.id, DataKey::new(Zeroizing::new(raw)));
        }
        Ok(Self { keys })
    }

    /// Whether it has no data key yet (nothing was ever sealed).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// This keyring plus a new data key that seals from now on, and every key wrapped under
    /// `master` (to store in place of the old wrapped keys, in one transaction with whatever is
    /// sealed next). `master` may be a new master key: values sealed before stay readable.
    pub fn rotated(&self, master: &MasterKey) -> Result<(Self, Vec<WrappedKey>), SecretsError> {
        let mut keys: BTreeMap<u32, DataKey> =
            self.keys.iter().map(|(id, k)| (*id, DataKey::new(k.raw.clone()))).collect();
        let id = keys.keys().next_back().map_or(1, |last| last + 1);
        keys.insert(id, DataKey::new(random::<32>()?));
        let wrapped = keys
            .iter()
            .map(|(id, k)| {
                let (nonce, sealed) = seal(master.aead(), &key_context(*id), k.raw.as_slice())?;
                Ok(WrappedKey { version: VERSION, id: *id, master: master.fingerprint().to_string(), nonce, sealed })
            })
            .collect::<Result<_, SecretsError>>()?;
        Ok((Self { keys }, wrapped))
    }

    /// Seals `value` under the newest data key, bound to `context` (who owns it and its name):
    /// it opens only with the same context. `None` if the keyring has no data key yet.
    pub fn seal(&self, context: &str, value: &SecretValue) -> Result<Option<Sealed>, SecretsError> {
        let Some((id, key)) = self.keys.iter().next_back() else { return Ok(None) };
        let (nonce, sealed) = seal(&key.aead, context.as_bytes(), value.expose().as_bytes())?;
        Ok(Some(Sealed { version: VERSION, key: *id, nonce, sealed }))
    }

    /// Opens a value sealed with `context`.
    pub fn unseal(&self, context: &str, sealed: &Sealed) -> Result<SecretValue, SecretsError> {
        if sealed.version != VERSION {
            return Err(SecretsError::Version { what: "a sealed secret", version: sealed.version });
        }
        let key = self.keys.get(&sealed.key).ok_or(SecretsError::UnknownDataKey(sealed.key))?;
        let plain = open(&key.aead, context.as_bytes(), &sealed.nonce, &sealed.sealed)
            .ok_or_else(|| SecretsError::Tampered { what: "secret value".into() })?;
        String::from_utf8(plain).map(SecretValue::new).map_err(|e| {
            drop(Zeroizing::new(e.into_bytes()));
            SecretsError::NotText
        })
    }
}

fn key_context(id: u32) -> Vec<u8> {
    format!("nimbus data key {id}").into_bytes()
}

/// `N` bytes from the system's random source.
pub(super) fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, SecretsError> {
    let mut bytes = Zeroizing::new([0u8; N]);
    ring::rand::SystemRandom::new().fill(bytes.as_mut_slice()).map_err(|_| SecretsError::Random)?;
    Ok(bytes)
}

/// Seals `plain` with a fresh random nonce: (nonce, sealed) as hex.
fn seal(key: &LessSafeKey, aad: &[u8], plain: &[u8]) -> Result<(String, String), SecretsError> {
    let nonce = random::<NONCE_LEN>()?;
    let mut buf = plain.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), &mut buf)
        .map_err(|_| SecretsError::Random)?;
    Ok((hex::encode(nonce.as_slice()), hex::encode(buf)))
}

/// Opens a hex (nonce, sealed) pair; `None` if it does not open.
fn open(key: &LessSafeKey, aad: &[u8], nonce: &str, sealed: &str) -> Option<Vec<u8>> {
    let nonce: [u8; NONCE_LEN] = hex::decode(nonce).ok()?.try_into().ok()?;
    let mut buf = hex::decode(sealed).ok()?;
    let len = key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf).ok()?.len();
    buf.truncate(len);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> MasterKey {
        MasterKey::from_hex(&MasterKey::generate_hex().unwrap(), "test").unwrap()
    }

    fn value(s: &str) -> SecretValue {
        SecretValue::new(s.into())
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_context_and_never_shows_its_plaintext() {
        let m = master();
        let (ring, _) = Keyring::default().rotated(&m).unwrap();
        let sealed = ring.seal("shop/stripe-key", &value("sk_live_canary")).unwrap().unwrap();
        assert!(!serde_json::to_string(&sealed).unwrap().contains("canary"));
        assert!(!sealed.sealed.contains(&hex::encode("sk_live_canary")));
        assert_eq!(ring.unseal("shop/stripe-key", &sealed).unwrap().expose(), "sk_live_canary");
        assert!(matches!(ring.unseal("other/stripe-key", &sealed), Err(SecretsError::Tampered { .. })));
        let mut flipped = sealed.clone();
        flipped.sealed.replace_range(0..2, if &flipped.sealed[0..2] == "00" { "01" } else { "00" });
        assert!(matches!(ring.unseal("shop/stripe-key", &flipped), Err(SecretsError::Tampered { .. })));
        assert_eq!(format!("{:?} {}", value("x"), value("x")), "[redacted] [redacted]");
    }

    #[test]
    fn rotation_under_a_new_master_key_keeps_old_values_readable_and_the_old_key_is_refused() {
        let old = master();
        let (ring, wrapped) = Keyring::default().rotated(&old).unwrap();
        let before = ring.seal("a/x", &value("one")).unwrap().unwrap();
        let new = master();
        let (rotated, rewrapped) = Keyring::open(&old, &wrapped).unwrap().rotated(&new).unwrap();
        let after = rotated.seal("a/y", &value("two")).unwrap().unwrap();
        assert_ne!(before.key, after.key, "new values are sealed under the new data key");
        let reopened = Keyring::open(&new, &rewrapped).unwrap();
        assert_eq!(reopened.unseal("a/x", &before).unwrap().expose(), "one");
        assert_eq!(reopened.unseal("a/y", &after).unwrap().expose(), "two");
        match Keyring::open(&old, &rewrapped) {
            Err(SecretsError::WrongMasterKey { given, expected }) => {
                assert_eq!((given.as_str(), expected.as_str()), (old.fingerprint(), new.fingerprint()));
            }
            other => panic!("the old master key must be refused, got {other:?}"),
        }
    }

    #[test]
    fn master_keys_must_be_64_hex_characters_in_a_private_file() {
        assert!(matches!(MasterKey::from_hex("abc", "env"), Err(SecretsError::MasterKeyFormat { .. })));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        std::fs::write(&path, format!("{}\n", *MasterKey::generate_hex().unwrap())).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = MasterKey::from_file(&path).unwrap_err();
            assert!(err.to_string().contains("chmod 600"), "{err}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(MasterKey::from_file(&path).unwrap().fingerprint().len(), 16);
    }
}

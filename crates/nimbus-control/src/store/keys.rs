//! Every record of the control store under one name: the key a record has in the cluster's
//! JetStream KV bucket (`app.NAME`, `rev.APP.ID`, `token.ID`, `secret.APP.HEXNAME`,
//! `secret-keys`, `policies`) and the redb table row it is on each node. A change is a record put or
//! deleted with the guard that makes it safe when several nodes write at once.
use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::{APPS, POLICIES, REVISIONS, StoreError, TOKENS, decode, encode, err, secrets};

/// A record of the control store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// An app (its hosts and traffic).
    App(String),
    /// A revision of an app.
    Revision(String, String),
    /// An API token.
    Token(String),
    /// A sealed secret of an app.
    Secret(String, String),
    /// The wrapped data keys of the secrets.
    SecretKeys,
    /// The policies an admin set.
    Policies,
}

impl Key {
    /// The key in the cluster's KV bucket. App names, revision and token ids only use the
    /// bucket's key characters; secret names are hex-encoded.
    pub(crate) fn cluster(&self) -> String {
        match self {
            Self::App(name) => format!("app.{name}"),
            Self::Revision(app, id) => format!("rev.{app}.{id}"),
            Self::Token(id) => format!("token.{id}"),
            Self::Secret(app, name) => format!("secret.{app}.{}", hex::encode(name)),
            Self::SecretKeys => "secret-keys".into(),
            Self::Policies => "policies".into(),
        }
    }

    /// The record a cluster key names; `None` for a key this version does not know.
    pub(crate) fn parse(key: &str) -> Option<Self> {
        let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let (kind, rest) = key.split_once('.').unwrap_or((key, ""));
        match kind {
            "app" if plain(rest) => Some(Self::App(rest.into())),
            "rev" => rest
                .split_once('.')
                .filter(|(a, i)| plain(a) && plain(i))
                .map(|(a, i)| Self::Revision(a.into(), i.into())),
            "token" if plain(rest) => Some(Self::Token(rest.into())),
            "secret" => {
                let (app, name) = rest.split_once('.').filter(|(a, _)| plain(a))?;
                let name = String::from_utf8(hex::decode(name).ok()?).ok()?;
                Some(Self::Secret(app.into(), name))
            }
            "secret-keys" if rest.is_empty() => Some(Self::SecretKeys),
            "policies" if rest.is_empty() => Some(Self::Policies),
            _ => None,
        }
    }

    /// The app a record belongs to (apps and revisions: the deployed state).
    pub fn deployed_app(&self) -> Option<&str> {
        match self {
            Self::App(app) | Self::Revision(app, _) => Some(app),
            _ => None,
        }
    }
}

/// What makes a change safe when another node writes the same record at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guard {
    /// The record must still be what this node last saw (compare-and-set on its KV revision);
    /// otherwise the change is refused with [`StoreError::Conflict`].
    Current,
    /// The record must be at this revision (`None`: absent) — the one the caller's copy was
    /// read at, which may be older than what this node has since applied.
    Expect(Option<u64>),
    /// Content-addressed: if the record exists it holds the same content, so it is kept.
    Identical,
}

/// One record put (`value`) or deleted (`None`).
#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) key: Key,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) guard: Guard,
}

impl Change {
    pub(crate) fn put(key: Key, value: &impl serde::Serialize) -> Self {
        Self { key, value: Some(encode(value)), guard: Guard::Current }
    }

    /// An app record, expected at the revision it was read at.
    pub(crate) fn app(app: &super::AppRecord) -> Self {
        Self { key: Key::App(app.name.clone()), value: Some(encode(app)), guard: Guard::Expect(app.seen) }
    }

    pub(crate) fn delete(key: Key) -> Self {
        Self { key, value: None, guard: Guard::Current }
    }
}

/// Writes (or removes) the row of `key` in `tx`.
pub(crate) fn apply(tx: &WriteTransaction, key: &Key, value: Option<&[u8]>) -> Result<(), StoreError> {
    match (key, value) {
        (Key::App(name), Some(v)) => tx.open_table(APPS).map_err(err)?.insert(name.as_str(), v).map(drop),
        (Key::App(name), None) => tx.open_table(APPS).map_err(err)?.remove(name.as_str()).map(drop),
        (Key::Revision(app, id), Some(v)) => {
            tx.open_table(REVISIONS).map_err(err)?.insert((app.as_str(), id.as_str()), v).map(drop)
        }
        (Key::Revision(app, id), None) => {
            tx.open_table(REVISIONS).map_err(err)?.remove((app.as_str(), id.as_str())).map(drop)
        }
        (Key::Token(id), Some(v)) => tx.open_table(TOKENS).map_err(err)?.insert(id.as_str(), v).map(drop),
        (Key::Token(id), None) => tx.open_table(TOKENS).map_err(err)?.remove(id.as_str()).map(drop),
        (Key::Secret(app, name), Some(v)) => {
            tx.open_table(secrets::SECRETS).map_err(err)?.insert((app.as_str(), name.as_str()), v).map(drop)
        }
        (Key::Secret(app, name), None) => {
            tx.open_table(secrets::SECRETS).map_err(err)?.remove((app.as_str(), name.as_str())).map(drop)
        }
        (Key::Policies, Some(v)) => tx.open_table(POLICIES).map_err(err)?.insert("policies", v).map(drop),
        (Key::Policies, None) => tx.open_table(POLICIES).map_err(err)?.remove("policies").map(drop),
        (Key::SecretKeys, v) => {
            let keys: Vec<nimbus_security::secrets::WrappedKey> = v.map(decode).transpose()?.unwrap_or_default();
            return secrets::write_keys(tx, &keys);
        }
    }
    .map_err(err)
}

/// Every record stored on this node (for the replica's resynchronisation).
pub(crate) fn all(tx: &WriteTransaction) -> Result<Vec<Key>, StoreError> {
    let mut keys = Vec::new();
    for row in tx.open_table(APPS).map_err(err)?.iter().map_err(err)? {
        keys.push(Key::App(row.map_err(err)?.0.value().to_string()));
    }
    for row in tx.open_table(REVISIONS).map_err(err)?.iter().map_err(err)? {
        let row = row.map_err(err)?;
        let (app, id) = row.0.value();
        keys.push(Key::Revision(app.to_string(), id.to_string()));
    }
    for row in tx.open_table(TOKENS).map_err(err)?.iter().map_err(err)? {
        keys.push(Key::Token(row.map_err(err)?.0.value().to_string()));
    }
    for row in tx.open_table(secrets::SECRETS).map_err(err)?.iter().map_err(err)? {
        let row = row.map_err(err)?;
        let (app, name) = row.0.value();
        keys.push(Key::Secret(app.to_string(), name.to_string()));
    }
    if !tx.open_table(POLICIES).map_err(err)?.is_empty().map_err(err)? {
        keys.push(Key::Policies);
    }
    if !tx.open_table(secrets::SECRET_KEYS).map_err(err)?.is_empty().map_err(err)? {
        keys.push(Key::SecretKeys);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::Key;

    #[test]
    fn cluster_keys_round_trip_and_unknown_ones_are_refused() {
        for key in [
            Key::App("shop".into()),
            Key::Revision("shop".into(), "0a1b2c".into()),
            Key::Token("abc123".into()),
            Key::Secret("shop".into(), "DB.PASSWORD/x ü".into()),
            Key::SecretKeys,
        ] {
            assert_eq!(Key::parse(&key.cluster()), Some(key.clone()), "{key:?}");
        }
        for bad in ["", "app.", "app.a.b", "rev.shop", "secret.shop.zz", "node.a", "secret-keys.x"] {
            assert_eq!(Key::parse(bad), None, "{bad}");
        }
    }
}

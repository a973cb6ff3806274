//! Topic and consumer-group names: one grammar for both backends, so a name valid on a laptop
//! is valid on JetStream too. Both belong to one app: backends store them under
//! [`Topic::storage_name`] / [`Group::storage_name`], which carry the app
//! (`nimbus_manifest::scoped_name`), so two apps' `orders` never meet.
use std::fmt;

use crate::BusError;

/// The longest topic or group name.
pub use nimbus_manifest::MAX_TOPIC_NAME_LEN as MAX_NAME_LEN;

/// A topic of one app; its name is lowercase ASCII letters, digits, `-`, `_` and `.` (not first
/// or last, no `..`), at most [`MAX_NAME_LEN`] bytes; e.g. `orders`, `orders.dlq`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Scoped);

/// A consumer group of one app: a name like a topic name, without `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Group(Scoped);

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Scoped {
    storage: String,
    app_len: usize,
}

impl Scoped {
    fn new(app: &str, name: &str, dots: bool) -> Result<Self, BusError> {
        nimbus_manifest::check_app_name(app).map_err(|_| BusError::InvalidName {
            name: app.to_string(),
            why: "app names are 1 to 63 lower-case letters, digits, `-` or `_`",
        })?;
        nimbus_manifest::check_topic_name(name, dots)
            .map_err(|why| BusError::InvalidName { name: name.to_string(), why })?;
        Ok(Self { storage: nimbus_manifest::scoped_name(app, name), app_len: app.len() })
    }

    fn from_storage_name(stored: &str, dots: bool) -> Result<Self, BusError> {
        let (app, name) = nimbus_manifest::split_scoped(stored).ok_or_else(|| BusError::InvalidName {
            name: stored.to_string(),
            why: "stored without its app (written by an older Nimbus)",
        })?;
        Self::new(app, name, dots)
    }

    fn app(&self) -> &str {
        &self.storage[..self.app_len]
    }

    fn name(&self) -> &str {
        &self.storage[self.app_len + nimbus_manifest::SCOPE_MARK.len()..]
    }
}

impl Topic {
    /// Validates the app and the topic name.
    pub fn new(app: &str, name: &str) -> Result<Self, BusError> {
        Scoped::new(app, name, true).map(Self)
    }

    /// The topic a storage name stands for (what [`Topic::storage_name`] returned).
    pub fn from_storage_name(stored: &str) -> Result<Self, BusError> {
        Scoped::from_storage_name(stored, true).map(Self)
    }

    /// Another topic of the same app.
    pub fn sibling(&self, name: &str) -> Result<Self, BusError> {
        Self::new(self.0.app(), name)
    }

    /// The app the topic belongs to.
    pub fn app(&self) -> &str {
        self.0.app()
    }

    /// The topic's name, as its app knows it.
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// The name backends store it under: unique across apps, `[A-Za-z0-9_.-]` only.
    pub fn storage_name(&self) -> &str {
        &self.0.storage
    }
}

impl Group {
    /// Validates the app and the group name.
    pub fn new(app: &str, name: &str) -> Result<Self, BusError> {
        Scoped::new(app, name, false).map(Self)
    }

    /// The group a storage name stands for (what [`Group::storage_name`] returned).
    pub fn from_storage_name(stored: &str) -> Result<Self, BusError> {
        Scoped::from_storage_name(stored, false).map(Self)
    }

    /// The app the group belongs to.
    pub fn app(&self) -> &str {
        self.0.app()
    }

    /// The group's name, as its app knows it.
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// The name backends store it under: unique across apps, `[A-Za-z0-9_-]` only.
    pub fn storage_name(&self) -> &str {
        &self.0.storage
    }
}

impl fmt::Display for Topic {
    /// `APP/TOPIC`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app(), self.name())
    }
}

impl fmt::Display for Group {
    /// `APP/GROUP`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app(), self.name())
    }
}

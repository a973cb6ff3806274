//! Topic and consumer-group names: one grammar for both backends, so a name valid on a laptop
//! is valid on JetStream too.
use std::fmt;

use crate::BusError;

/// The longest topic or group name.
pub use nimbus_manifest::MAX_TOPIC_NAME_LEN as MAX_NAME_LEN;

/// A validated topic name: lowercase ASCII letters, digits, `-`, `_` and `.` (not first or last,
/// no `..`), at most [`MAX_NAME_LEN`] bytes; e.g. `orders`, `orders.dlq`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

/// A validated consumer-group name: like a topic name, without `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Group(String);

fn check(name: &str, dots: bool) -> Result<(), BusError> {
    nimbus_manifest::check_topic_name(name, dots).map_err(|why| BusError::InvalidName { name: name.to_string(), why })
}

impl Topic {
    /// Validates a topic name.
    pub fn new(name: &str) -> Result<Self, BusError> {
        check(name, true)?;
        Ok(Self(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Group {
    /// Validates a group name.
    pub fn new(name: &str) -> Result<Self, BusError> {
        check(name, false)?;
        Ok(Self(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

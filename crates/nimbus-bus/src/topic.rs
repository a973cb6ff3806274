//! Topic and consumer-group names: one grammar for both backends, so a name valid on a laptop
//! is valid on JetStream too.
use std::fmt;

use crate::BusError;

/// The longest topic or group name.
pub const MAX_NAME_LEN: usize = 100;

/// A validated topic name: lowercase ASCII letters, digits, `-`, `_` and `.` (not first or last,
/// no `..`), at most [`MAX_NAME_LEN`] bytes; e.g. `orders`, `orders.dlq`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

/// A validated consumer-group name: like a topic name, without `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Group(String);

fn check(name: &str, dots: bool) -> Result<(), BusError> {
    let bad = |why| Err(BusError::InvalidName { name: name.to_string(), why });
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 100 bytes");
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || (dots && c == '.');
    if !name.chars().all(allowed) {
        return bad(if dots {
            "use lowercase letters, digits, `-`, `_` and `.`"
        } else {
            "use lowercase letters, digits, `-` and `_`"
        });
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) || name.ends_with('.') || name.contains("..") {
        return bad("must start with a letter or digit, and not end with `.` or contain `..`");
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["orders", "orders.dlq", "a", "o-1_x.y"] {
            assert!(Topic::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Orders", ".a", "a.", "a..b", "a b", "a/b", "a*", "a>", "-a", "ü"] {
            assert!(Topic::new(bad).is_err(), "{bad}");
        }
        assert!(Topic::new(&"a".repeat(101)).is_err());
        assert!(Group::new("billing").is_ok());
        assert!(Group::new("bill.ing").is_err());
    }
}

//! Secret names: what `grants.secrets` lists and `nimbus secrets set` names.
use std::fmt;

/// The longest secret name.
pub const MAX_SECRET_NAME_LEN: usize = 64;

/// A secret's name: lowercase letters, digits, `-` and `_`, starting with a letter, at most 64
/// bytes. A function reads it under this name (`wasi:config/store.get("stripe-key")`); a service
/// gets it as the environment variable [`SecretName::env_name`] (`STRIPE_KEY`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretName(String);

crate::value::string_value!(SecretName, "name secrets like `stripe-key` or `db_password`", |n| n.0.clone());

impl SecretName {
    /// Checks a name, or says what is wrong with it.
    pub fn parse(name: &str) -> Result<Self, String> {
        let ok = !name.is_empty()
            && name.len() <= MAX_SECRET_NAME_LEN
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(name.to_string()))
        } else {
            Err(format!(
                "secret name `{name}` must be 1 to 64 lowercase letters, digits, `-` and `_`, starting with a letter"
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The environment variable a service reads it from: upper case, `-` as `_`.
    pub fn env_name(&self) -> String {
        self.0.to_ascii_uppercase().replace('-', "_")
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_their_environment_variables() {
        assert_eq!(SecretName::parse("stripe-key").unwrap().env_name(), "STRIPE_KEY");
        for bad in ["", "Stripe", "1key", "-a", "a b", "a.b", "ü", &"a".repeat(65)] {
            assert!(SecretName::parse(bad).is_err(), "{bad}");
        }
    }
}
